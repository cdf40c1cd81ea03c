//! HTTP/1.1 mode (first cut) against real backends on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duet_health::HealthPolicy;
use duet_proxy::{BackendSpec, BalancerSpec, Mode, Proxy};

mod common;

use common::Backend;
use common::h1::{backend, connect, roundtrip};

fn proxy(backends: &[&Backend]) -> Proxy {
    proxy_to(
        &backends.iter().map(|b| b.addr).collect::<Vec<_>>(),
        Default::default(),
    )
}

fn proxy_to(backends: &[SocketAddr], http_timeouts: duet_proxy::HttpTimeouts) -> Proxy {
    Proxy::start(BalancerSpec {
        http_timeouts,
        ..common::spec(Mode::Http, backends)
    })
    .unwrap()
}

#[test]
fn keep_alive_requests_alternate_backends_and_carry_forwarding_headers() {
    let (a, b) = (backend("a"), backend("b"));
    let p = proxy(&[&a, &b]);
    let mut c = connect(&p);
    let mut names = Vec::new();
    for _ in 0..4 {
        let (status, body) = roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        names.push(body);
    }
    names.sort();
    assert_eq!(names, ["a", "a", "b", "b"]);
    let (_, xff) = roundtrip(
        &mut c,
        "GET /xff HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\n\r\n",
    );
    assert_eq!(xff, "198.51.100.9, 127.0.0.1");
}

#[test]
fn bodies_stream_both_ways() {
    let a = backend("a");
    let p = proxy(&[&a]);
    let mut c = connect(&p);
    let (status, body) = roundtrip(
        &mut c,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "hello world")
    );
    let (_, body) = roundtrip(&mut c, "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(body, "a!");
    let (status, _) = roundtrip(&mut c, "GET /500 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 500 Oops");
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_closed() {
    let a = backend("a");
    let p = proxy(&[&a]);
    for (request, want) in [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "y".repeat(20_000)
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ] {
        let mut c = connect(&p);
        c.get_mut().write_all(request.as_bytes()).unwrap();
        let mut all = String::new();
        let _ = c.read_to_string(&mut all);
        assert!(all.starts_with(want), "{all:?}");
        assert!(all.contains("Connection: close"));
    }
}

#[test]
fn a_killed_backend_costs_no_client_error() {
    let (a, b) = (backend("a"), backend("b"));
    let p = proxy(&[&a, &b]);
    let mut c = connect(&p);
    for _ in 0..4 {
        roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    a.kill();
    // Pooled connections to `a` are now dead and new connects are refused: every request must
    // still be answered, by b.
    for _ in 0..40 {
        let mut c = connect(&p);
        let (status, body) = roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "b"));
    }
    assert_eq!(p.client_errors(), 0);
}

#[test]
fn a_slowloris_client_is_cut_at_the_client_timeout() {
    let a = backend("a");
    let timeouts = duet_proxy::HttpTimeouts {
        client: Duration::from_millis(300),
        ..Default::default()
    };
    let p = proxy_to(&[a.addr], timeouts);
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = std::time::Instant::now();
    // One byte every 100 ms: each read is quick, the head never completes.
    let mut cut = false;
    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(cut || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // Several times the 300 ms budget, far below the 4 s a trickle would otherwise take.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_garbage_answer_is_a_502_and_counts_against_the_backend() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut head = [0u8; 1024];
            let _ = c.read(&mut head);
            let _ = c.write_all(b"this is not HTTP\r\n\r\n");
        }
    });
    let p = proxy_to(&[addr], Default::default());
    for _ in 0..3 {
        let mut c = connect(&p);
        let (status, _) = roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 502 Bad Gateway");
    }
    // Three failures in a row: taken out, so the next client is told no backend is available.
    assert!(!p.backends()[0].backend.stats.up.load(Ordering::Relaxed));
    let mut c = connect(&p);
    let (status, _) = roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
}

#[test]
fn http_checks_follow_the_health_endpoint() {
    // /health answers 200 while `healthy`, 503 otherwise; everything else answers "ok".
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let status = if line.contains("/health") && !flag.load(Ordering::SeqCst) {
                "503 Down"
            } else {
                "200 OK"
            };
            let mut c = c;
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    let p = Proxy::start(BalancerSpec {
        health: HealthPolicy {
            rise: 2,
            fall: 2,
            ..HealthPolicy::default()
        },
        check: Some(duet_proxy::CheckSpec {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            path: Some("/health".into()),
            expect: (200, 399),
        }),
        threads: 1,
        ..common::spec(Mode::Http, &[addr])
    })
    .unwrap();
    let up = |want: bool| {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            p.backends()[0].backend.stats.up.load(Ordering::Relaxed) == want
        })
    };
    healthy.store(false, Ordering::SeqCst);
    assert!(up(false), "503 from /health never took the backend out");
    // It says why, until it is back.
    assert_eq!(
        p.backends()[0].backend.down_reason().as_deref(),
        Some("check failed: GET /health answered 503 (expected 200-399)")
    );
    healthy.store(true, Ordering::SeqCst);
    assert!(up(true), "200 from /health never brought it back");
    assert_eq!(p.backends()[0].backend.down_reason(), None);
}

#[test]
fn proxy_protocol_is_accepted_from_the_front_and_sent_to_backends() {
    // Accept: the client address for X-Forwarded-For comes from the PROXY header.
    let a = backend("a");
    let mut spec = BalancerSpec {
        health: HealthPolicy::default(),
        threads: 1,
        accept_proxy: true,
        ..common::spec(Mode::Http, &[a.addr])
    };
    let p = Proxy::start(spec.clone()).unwrap();
    let mut c = connect(&p);
    let (_, xff) = roundtrip(
        &mut c,
        "PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET /xff HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(xff, "203.0.113.9");
    let mut c = connect(&p);
    c.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    let _ = c.read_to_string(&mut rest);
    assert_eq!(rest, "", "a connection without a PROXY header is closed");

    // Send (tcp mode): the backend sees a v1 header naming the client, then the client's bytes.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let (mut header, mut data) = (String::new(), String::new());
            let _ = r.read_line(&mut header);
            let _ = r.read_line(&mut data);
            let mut c = c;
            let _ = write!(c, "{header}{data}");
        }
    });
    spec.mode = Mode::Tcp;
    spec.accept_proxy = false;
    spec.send_proxy = Some(duet_proxy::proxy_protocol::Version::V1);
    spec.backends = vec![BackendSpec::from(backend)];
    let p = Proxy::start(spec).unwrap();
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    let client_port = s.local_addr().unwrap().port();
    s.write_all(b"hello\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert_eq!(
        got,
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {}\r\nhello\n",
            p.local_addr().port()
        )
    );
}

/// Like `roundtrip` for Content-Length responses, also returning the `Set-Cookie` value.
fn roundtrip_cookie(conn: &mut BufReader<TcpStream>, request: &str) -> (String, Option<String>) {
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let (mut length, mut cookie) = (0usize, None);
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.strip_prefix("Set-Cookie: ") {
            cookie = v.split(';').next().map(str::to_string);
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    (String::from_utf8(body).unwrap(), cookie)
}

#[test]
fn sticky_cookies_keep_a_client_on_its_backend_until_it_goes() {
    let (a, b) = (backend("a"), backend("b"));
    let p = Proxy::start(BalancerSpec {
        threads: 1,
        sticky_cookie: Some("SRV".into()),
        ..common::spec(Mode::Http, &[a.addr, b.addr])
    })
    .unwrap();
    let mut c = connect(&p);
    let (first, cookie) = roundtrip_cookie(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let cookie = cookie.expect("a new client gets a sticky cookie");
    assert!(cookie.starts_with("SRV="), "{cookie}");
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; {cookie}\r\n\r\n");
    for _ in 0..10 {
        let (name, again) = roundtrip_cookie(&mut c, &request);
        assert_eq!(name, first, "round robin must not move a sticky client");
        assert_eq!(again, None, "no new cookie while the backend serves");
    }
    // Its backend goes away: the client is balanced again and gets a new cookie.
    if first == "a" {
        a.kill()
    } else {
        b.kill()
    }
    let mut c = connect(&p);
    let (name, moved) = roundtrip_cookie(&mut c, &request);
    assert_ne!(name, first);
    assert!(moved.is_some_and(|m| m != cookie));
}

/// Like nginx's `keepalive_timeout`: a connection idle for 100 ms is closed by the backend.
fn closes_idle(conn: TcpStream, name: &str, _stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        let mut line = String::new();
        loop {
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return, // idle too long (or closed): drop the connection
            }
            if line.ends_with("\r\n\r\n") {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn pooled_connections_the_backend_closed_while_idle_cost_nothing() {
    let b = common::spawn("b", closes_idle);
    let p = Proxy::start(BalancerSpec {
        threads: 1,
        ..common::spec(Mode::Http, &[b.addr])
    })
    .unwrap();
    // Fill the pool with a few connections, then let the backend close them all.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut c = connect(&p);
                roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            });
        }
    });
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = connect(&p);
        let (status, body) = roundtrip(&mut c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "b"));
    }
    let stats = &p.backends()[0].backend.stats;
    for kind in duet_proxy::ErrorKind::ALL {
        assert_eq!(
            stats.errors_of(kind),
            0,
            "{kind:?} counted against the backend"
        );
    }
    assert!(stats.up.load(Ordering::Relaxed));
}
