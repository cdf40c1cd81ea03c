//! The event stream over a real admin server: `GET /v1/events` as JSON and as Server-Sent
//! Events, resumed with `Last-Event-ID`, a gap said when events were forgotten, and a client
//! that never reads slowing nothing down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_admin::{EventKind, Published};

fn server() -> (Arc<Published>, SocketAddr) {
    let published = Arc::new(Published::default());
    let addr = duet_admin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        published.clone(),
        duet_admin::Options::read_only(),
    )
    .unwrap();
    (published, addr)
}

fn reload(n: u64) -> EventKind {
    EventKind::Reload {
        ok: true,
        message: format!("reload {n}"),
    }
}

/// Opens an event stream (after `last_id` if given) and returns its reader, past the head.
fn stream(addr: SocketAddr, last_id: Option<&str>) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let last = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{last}\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut head = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.contains("text/event-stream"), "{head}");
    r
}

/// The next SSE message (its `field: value` lines), skipping comments and chunk framing.
fn message(r: &mut BufReader<TcpStream>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some((k, v)) = l.split_once(": ") {
            if ["id", "event", "data", "retry"].contains(&k) {
                fields.push((k.to_string(), v.to_string()));
            }
        } else if let Some(v) = l.strip_prefix("retry:") {
            fields.push(("retry".into(), v.trim().into()));
        } else if l.is_empty() && !fields.is_empty() {
            return fields;
        }
    }
}

fn field<'a>(m: &'a [(String, String)], name: &str) -> &'a str {
    m.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

/// The next event message (past the `retry` hint and keep-alives).
fn event(r: &mut BufReader<TcpStream>) -> Vec<(String, String)> {
    loop {
        let m = message(r);
        if m.iter().any(|(k, _)| k == "event") {
            return m;
        }
    }
}

#[test]
fn a_stream_carries_new_events_and_resumes_after_the_last_id() {
    let (p, addr) = server();
    p.emit(reload(1));
    let mut r = stream(addr, None);
    // Without an id, only events from now on.
    p.emit(reload(2));
    p.emit(EventKind::Vrrp {
        instance: "web".into(),
        from: "BACKUP".into(),
        to: "MASTER".into(),
        reason: "master down".into(),
        priority: 150,
    });
    let m = event(&mut r);
    assert_eq!(field(&m, "event"), "reload");
    let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
    assert_eq!(data["seq"], 2);
    assert_eq!(data["message"], "reload 2");
    let second_id = field(&m, "id").to_string();
    let m = event(&mut r);
    assert_eq!(field(&m, "event"), "vrrp");
    let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
    assert_eq!(
        (data["seq"].as_u64(), data["to"].as_str()),
        (Some(3), Some("MASTER"))
    );
    drop(r);

    // The client went away after event 2; events happen meanwhile; it resumes.
    p.emit(reload(4));
    let mut r = stream(addr, Some(&second_id));
    for want in [3, 4] {
        let m = event(&mut r);
        let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
        assert_eq!(data["seq"], want, "{m:?}");
    }
    p.emit(reload(5));
    let m = event(&mut r);
    assert!(field(&m, "id").ends_with(".5"), "{m:?}");
}

#[test]
fn a_client_that_resumes_after_forgotten_events_is_told_the_gap() {
    let (p, addr) = server();
    p.emit(reload(1));
    let first = p.events().id(&p.events().last(1)[0]);
    for n in 2..=(duet_admin::events::KEEP as u64 + 200) {
        p.emit(reload(n));
    }
    let mut r = stream(addr, Some(&first));
    let m = event(&mut r);
    assert_eq!(field(&m, "event"), "gap");
    let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
    assert_eq!(data["missed"], 199, "events 2..=200 were forgotten");
    let m = event(&mut r);
    let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
    assert_eq!(data["seq"], 201);
    assert_eq!(p.events().drops().get("sse"), Some(&199));
    // An id from another run of the daemon: everything kept, the gap unknown (0).
    let mut r = stream(addr, Some("12.3"));
    let m = event(&mut r);
    assert_eq!(field(&m, "event"), "gap");
    assert_eq!(field(&m, "data"), r#"{"missed":0}"#);
}

#[test]
fn a_stream_that_is_never_read_costs_the_producer_nothing_and_loses_only_its_own_events() {
    let (p, addr) = server();
    // A client that opens a stream and never reads it.
    let mut stuck = TcpStream::connect(addr).unwrap();
    write!(
        stuck,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut reader = stream(addr, None);
    // A flood far beyond what the stuck client's socket buffers and the channel can hold.
    let t = Instant::now();
    let n = 200_000u64;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let one = Instant::now();
        p.emit(EventKind::Reload {
            ok: true,
            message: format!("{i:0>200}"),
        });
        slowest = slowest.max(one.elapsed());
    }
    let took = t.elapsed();
    eprintln!(
        "{n} events emitted in {took:?} (slowest {slowest:?}); drops {:?}",
        p.events().drops()
    );
    // Generous bounds a blocking producer breaks (it would wait for the stuck client forever).
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    // The stuck client fell behind and lost events; they are counted.
    let lost = || p.events().drops().get("sse").copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while lost() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lost() > 0, "{:?}", p.events().drops());
    // The reading client still gets events, in order, and the newest one in the end.
    let mut last = 0;
    loop {
        let m = event(&mut reader);
        if field(&m, "event") == "gap" {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(field(&m, "data")).unwrap();
        let seq = data["seq"].as_u64().unwrap();
        assert!(seq > last, "{seq} after {last}");
        last = seq;
        if seq == n {
            break;
        }
    }
    let mut sink = [0u8; 1];
    stuck.set_nonblocking(true).unwrap();
    let _ = stuck.read(&mut sink);
}

#[test]
fn the_kept_events_are_listed_as_json() {
    let (p, addr) = server();
    for n in 1..=5 {
        p.emit(reload(n));
    }
    let get = |path: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    };
    let (head, body) = get("/v1/events?after=2&limit=2");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(v["events"][0]["type"], "reload");
    let (head, body) = get("/v1/events?limit=0");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("limit=\\\"0\\\": write 1..=1000"), "{body}");
    let (head, _) = get("/v1/events?bogus=1");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
