//! Routes, hashing, per-backend limits with the queue, PROXY headers in http mode, reload,
//! drain and stop, and WebSocket pass-through — against real backends on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_proxy::{BackendSpec, BalancerSpec, HashKey, Mode, Proxy, QueueSpec, RouteSpec};

mod common;

use common::h1::{backend, connect, exchange, roundtrip};

fn spec(backends: &[SocketAddr]) -> BalancerSpec {
    common::spec(Mode::Http, backends)
}

fn get(p: &Proxy, path: &str, host: &str) -> (String, String) {
    let mut c = connect(p);
    roundtrip(
        &mut c,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn routes_send_hosts_and_path_prefixes_to_their_pools() {
    let (web, api, wild) = (backend("web"), backend("api"), backend("wild"));
    let p = Proxy::start(BalancerSpec {
        routes: vec![
            RouteSpec {
                host: Some("api.example.com".into()),
                path_prefix: "/v1/".into(),
                backends: vec![api.addr.into()],
            },
            RouteSpec {
                host: Some("*.example.org".into()),
                path_prefix: "/".into(),
                backends: vec![wild.addr.into()],
            },
        ],
        ..spec(&[web.addr])
    })
    .unwrap();
    let body = |path: &str, host: &str| get(&p, path, host).1;
    assert_eq!(body("/v1/users", "api.example.com"), "api");
    assert_eq!(body("/v1/users", "API.example.com:8080"), "api");
    assert_eq!(
        body("/v2/users", "api.example.com"),
        "web",
        "path must match"
    );
    assert_eq!(
        body("/v1/users", "www.example.com"),
        "web",
        "host must match"
    );
    assert_eq!(body("/", "a.example.org"), "wild");
    assert_eq!(body("/", "example.org"), "web", "*. needs a label below");
    // Absolute-form targets route by their path too.
    assert_eq!(
        body("http://api.example.com/v1/x", "api.example.com"),
        "api"
    );
    // Each pool shows up in the status with its route.
    let pools: Vec<(String, SocketAddr)> = p
        .backends()
        .iter()
        .map(|v| (v.pool.clone(), v.backend.address))
        .collect();
    assert_eq!(
        pools,
        [
            ("default".to_string(), web.addr),
            ("api.example.com/v1/".to_string(), api.addr),
            ("*.example.org/".to_string(), wild.addr),
        ]
    );
}

#[test]
fn uri_and_header_hashing_keep_a_key_on_one_backend() {
    let backends: Vec<common::Backend> = ["a", "b", "c"].into_iter().map(backend).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let uri = Proxy::start(BalancerSpec {
        algorithm: duet_health::Algorithm::Hash,
        hash_key: HashKey::Uri,
        ..spec(&addrs)
    })
    .unwrap();
    let mut by_path = std::collections::BTreeMap::new();
    for i in 0..30 {
        let path = format!("/item/{i}");
        let first = get(&uri, &format!("{path}?v=1"), "x").1;
        // The same path (any query) lands on the same backend every time.
        for q in 2..4 {
            assert_eq!(get(&uri, &format!("{path}?v={q}"), "x").1, first, "{path}");
        }
        by_path.insert(path, first);
    }
    let used: std::collections::BTreeSet<&String> = by_path.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 paths spread over all backends: {by_path:?}"
    );

    let header = Proxy::start(BalancerSpec {
        algorithm: duet_health::Algorithm::Hash,
        hash_key: HashKey::Header("X-User".into()),
        ..spec(&addrs)
    })
    .unwrap();
    let mut c = connect(&header);
    let mut users = std::collections::BTreeSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace"] {
        let ask = |path: &str, c: &mut BufReader<TcpStream>| {
            roundtrip(
                c,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-User: {user}\r\n\r\n"),
            )
            .1
        };
        let first = ask("/a", &mut c);
        assert_eq!(ask("/b", &mut c), first, "{user} moved");
        assert_eq!(ask("/c", &mut c), first, "{user} moved");
        users.insert(first);
    }
    assert!(users.len() >= 2, "users spread: {users:?}");
}

/// In-flight requests on the slow backend named "limited", and the most seen at once (tests
/// run in parallel: other slow backends do not count).
static SLOW_NOW: AtomicUsize = AtomicUsize::new(0);
static SLOW_MAX: AtomicUsize = AtomicUsize::new(0);

/// Answers every request after 200 ms; the one named "limited" counts concurrent requests.
fn slow(conn: TcpStream, name: &str, _stop: &AtomicBool) {
    let counted = name == "limited";
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        loop {
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.ends_with("\r\n\r\n") {
                break;
            }
        }
        if counted {
            let now = SLOW_NOW.fetch_add(1, Ordering::SeqCst) + 1;
            SLOW_MAX.fetch_max(now, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(200));
        if counted {
            SLOW_NOW.fetch_sub(1, Ordering::SeqCst);
        }
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            .is_err()
        {
            return;
        }
    }
}

/// Polls `cond` every 5 ms for up to `limit`; whether it became true.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to 5 s) until a request holds a slot on backend `i` of `p`: the event a test
/// must see before it acts "while a request is in flight", instead of a sleep.
fn holds_a_slot(p: &Proxy, i: usize) -> bool {
    until(Duration::from_secs(5), || {
        p.backends()[i].backend.stats.active.load(Ordering::SeqCst) > 0
    })
}

#[test]
fn maxconn_queues_requests_and_a_full_queue_answers_503() {
    let b = common::spawn("limited", slow);
    let limited = |queue: QueueSpec| {
        Proxy::start(BalancerSpec {
            backends: vec![BackendSpec {
                maxconn: 1,
                ..b.addr.into()
            }],
            queue,
            ..spec(&[])
        })
        .unwrap()
    };
    // Four clients at once, one slot, a queue for all: everyone is served, one at a time.
    let p = limited(QueueSpec {
        size: 10,
        timeout: Duration::from_secs(10),
    });
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| get(&p, "/", "x").1)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers, ["slow"; 4]);
    assert_eq!(SLOW_MAX.load(Ordering::SeqCst), 1, "maxconn 1 was exceeded");
    // The slot is freed when the proxy's task finishes, just after the client has its
    // answer: wait for it (a leaked slot never comes back).
    let freed = until(Duration::from_secs(1), || {
        p.backends()[0].backend.stats.active.load(Ordering::SeqCst) == 0
    });
    assert!(freed, "a maxconn slot was never given back");

    // No queue: while one request holds the slot, the next is refused at once.
    let p = limited(QueueSpec {
        size: 0,
        timeout: Duration::from_secs(10),
    });
    std::thread::scope(|s| {
        let first = s.spawn(|| get(&p, "/", "x"));
        assert!(holds_a_slot(&p, 0), "the first request never took the slot");
        let (status, body) = get(&p, "/", "x");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("connection limit"), "{body}");
        assert_eq!(first.join().unwrap().1, "slow");
    });
    // A queue that times out also answers 503.
    let p = limited(QueueSpec {
        size: 10,
        timeout: Duration::from_millis(50),
    });
    std::thread::scope(|s| {
        let first = s.spawn(|| get(&p, "/", "x"));
        assert!(holds_a_slot(&p, 0), "the first request never took the slot");
        assert_eq!(get(&p, "/", "x").0, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(first.join().unwrap().1, "slow");
    });
}

/// Headers received per backend connection, in order: the PROXY line, if any, and the
/// request lines.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

fn recording_backend(seen: Seen) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let index = {
                    let mut s = seen.lock().unwrap();
                    s.push(Vec::new());
                    s.len() - 1
                };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        continue;
                    }
                    if line.starts_with("PROXY ") || line.starts_with("GET ") {
                        seen.lock().unwrap()[index].push(line.trim_end().to_string());
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn http_mode_sends_a_proxy_header_once_per_backend_connection_and_never_shares_it() {
    let seen: Seen = Arc::default();
    let addr = recording_backend(seen.clone());
    let p = Proxy::start(BalancerSpec {
        send_proxy: Some(duet_proxy::proxy_protocol::Version::V1),
        ..spec(&[addr])
    })
    .unwrap();
    // Two clients, two keep-alive requests each.
    for _ in 0..2 {
        let mut c = connect(&p);
        for path in ["/1", "/2"] {
            let (status, _) = roundtrip(&mut c, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(status, "HTTP/1.1 200 OK");
        }
    }
    // The backend records a request before it answers it, so everything is in by now.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one backend connection per client: {seen:?}");
    for conn in &seen {
        assert_eq!(conn.len(), 3, "{seen:?}");
        assert!(
            conn[0].starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
            "{seen:?}"
        );
        assert_eq!(&conn[1..], ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]);
    }
}

/// Runs keep-alive clients until `stop`; returns (requests, failures).
fn load(p: &Proxy, stop: &AtomicBool, clients: usize) -> (usize, usize) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut bad) = (0, 0);
                    let mut c = connect(p);
                    while !stop.load(Ordering::SeqCst) {
                        let r = exchange(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        if r.status == "HTTP/1.1 200 OK" {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
    })
}

#[test]
fn reload_swaps_backends_under_load_without_a_failed_request() {
    let (a, b) = (backend("a"), backend("b"));
    let p = Proxy::start(spec(&[a.addr])).unwrap();
    let stop = AtomicBool::new(false);
    let (served, failed) = std::thread::scope(|s| {
        let running = s.spawn(|| load(&p, &stop, 4));
        std::thread::sleep(Duration::from_millis(200));
        // Move everything to b, then back to both, several times while requests flow.
        for round in 0..6 {
            let to = if round % 2 == 0 {
                vec![b.addr]
            } else {
                vec![a.addr, b.addr]
            };
            p.reload(spec(&to)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        p.reload(spec(&[b.addr])).unwrap();
        // Requests after the last reload go to b only, on connections opened before it too.
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        running.join().unwrap()
    });
    assert!(served > 100, "{served} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {served} requests failed during reloads"
    );
    let mut c = connect(&p);
    for _ in 0..4 {
        assert_eq!(
            roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").1,
            "b"
        );
    }
    // A change that needs new listeners is reported, and the running one keeps going.
    let moved = BalancerSpec {
        bind: "127.0.0.1:0".parse().unwrap(),
        mode: Mode::Tcp,
        ..spec(&[a.addr])
    };
    assert_eq!(p.reload(moved), Err(duet_proxy::ReloadError::NeedsRestart));
    assert_eq!(get(&p, "/", "x").1, "b");
}

#[test]
fn a_drained_backend_finishes_in_flight_takes_nothing_new_and_comes_back() {
    let (a, s) = (backend("a"), common::spawn("slow", slow));
    // One thread: one round robin, so two requests in a row reach both backends.
    let p = Proxy::start(BalancerSpec {
        threads: 1,
        ..spec(&[a.addr, s.addr])
    })
    .unwrap();
    std::thread::scope(|scope| {
        // Put a request in flight on the slow backend, then drain it.
        let slow_request = scope.spawn(|| {
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(get(&p, "/", "x").1);
            }
            got
        });
        assert!(holds_a_slot(&p, 1), "no request reached the slow backend");
        p.set_draining(s.addr, true).unwrap();
        let answers = slow_request.join().unwrap();
        assert!(answers.contains(&"slow".to_string()), "{answers:?}");
    });
    // Drained: every new request goes to a.
    for _ in 0..6 {
        assert_eq!(get(&p, "/", "x").1, "a");
    }
    let view = &p.backends()[1];
    assert!(view.backend.draining());
    assert!(!view.backend.stats.up.load(Ordering::SeqCst));
    assert!(
        p.set_draining("127.0.0.1:1".parse().unwrap(), true)
            .is_err()
    );
    p.set_draining(s.addr, false).unwrap();
    let names: std::collections::BTreeSet<String> = (0..6).map(|_| get(&p, "/", "x").1).collect();
    assert_eq!(names.len(), 2, "enabled again: {names:?}");
}

#[test]
fn stop_closes_idle_connections_and_lets_a_request_in_flight_finish() {
    let s = common::spawn("slow", slow);
    let p = Proxy::start(spec(&[s.addr])).unwrap();
    let mut idle = connect(&p);
    assert_eq!(
        roundtrip(&mut idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").1,
        "slow"
    );
    std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| get(&p, "/", "x"));
        assert!(holds_a_slot(&p, 0), "the request never reached the backend");
        p.stop();
        assert_eq!(in_flight.join().unwrap().1, "slow");
    });
    // The idle keep-alive connection was closed, and nobody is accepted any more.
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    std::thread::sleep(Duration::from_millis(100));
    let refused = TcpStream::connect(p.local_addr())
        .map(|mut c| {
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 1];
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            matches!(c.read(&mut buf), Ok(0) | Err(_))
        })
        .unwrap_or(true);
    assert!(refused, "a stopped balancer still answered");
    assert_eq!(p.open_connections(), 0);
}

/// A WebSocket echo server (RFC 6455): handshake, then every text frame comes back.
fn websocket_echo(conn: TcpStream, _name: &str, _stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let mut key = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("sec-websocket-key:") {
            key = line[line.len() - v.len()..].trim().to_string();
        }
        if line == "\r\n" {
            break;
        }
    }
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    );
    conn.write_all(answer.as_bytes()).unwrap();
    while let Some(payload) = read_frame(&mut reader) {
        let mut frame = vec![0x81, payload.len() as u8];
        frame.extend_from_slice(&payload);
        if conn.write_all(&frame).is_err() {
            return;
        }
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
        .digest()
        .bytes();
    base64(&digest)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one small frame (payload < 126 bytes), unmasking it.
fn read_frame(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).ok()?;
    let masked = head[1] & 0x80 != 0;
    let len = usize::from(head[1] & 0x7f);
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some(payload)
}

#[test]
fn a_websocket_echo_works_through_the_proxy() {
    let ws = common::spawn("ws", websocket_echo);
    let p = Proxy::start(spec(&[ws.addr])).unwrap();
    let mut c = connect(&p);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let r = exchange(
        &mut c,
        &format!(
            "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    assert_eq!(r.status, "HTTP/1.1 101 Switching Protocols");
    // RFC 6455's own example key and answer.
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    for text in ["hello", "through duet", "third"] {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        c.get_mut().write_all(&frame).unwrap();
        assert_eq!(read_frame(&mut c).unwrap(), text.as_bytes());
    }
}
