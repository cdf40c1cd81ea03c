//! Hostile input, side by side with HAProxy: request smuggling and response desync shapes
//! (RFC 9112), framing headers named in `Connection`, non-idempotent requests on pooled
//! connections, `Expect: 100-continue` and other interim responses, client faults that must not
//! be blamed on backends, pipelining and byte-by-byte clients.
//!
//! Every case runs against duet and, when it is installed, against HAProxy 2.6 with the same
//! backends in the same run. Backends are [`strict`] backends: they read forgivingly (so a
//! smuggled request arrives as a request) and flag every forwarded head that two servers could
//! frame differently. duet must be safe in every case; HAProxy's verdicts are printed next to
//! duet's, and duet is never the weaker of the two.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_proxy::{BalancerSpec, Mode, Proxy};

mod common;

use common::reference;
use common::strict::{self, Answer, Prefer, Response, StrictBackend, read_responses, reply};

/// A proxy under test.
enum Proxied {
    Duet(Proxy),
    /// Kept to stop HAProxy when the target goes.
    Haproxy(#[allow(dead_code)] reference::Haproxy),
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    proxy: Proxied,
}

impl Target {
    fn duet(&self) -> Option<&Proxy> {
        match &self.proxy {
            Proxied::Duet(p) => Some(p),
            Proxied::Haproxy(_) => None,
        }
    }
}

/// How a case configures the proxies: duet's spec (already pointing at the backends) and the
/// HAProxy options.
#[derive(Clone, Copy)]
struct Setup {
    client_timeout: Duration,
    server_timeout: Duration,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            client_timeout: Duration::from_secs(2),
            server_timeout: Duration::from_secs(2),
        }
    }
}

fn duet_spec(backends: &[SocketAddr], setup: Setup) -> BalancerSpec {
    BalancerSpec {
        // One thread: a client's next request meets the backend connection its last one
        // pooled, as on a busy server.
        threads: 1,
        http_timeouts: duet_proxy::HttpTimeouts {
            idle: Duration::from_secs(5),
            client: setup.client_timeout,
            server: setup.server_timeout,
        },
        ..common::spec(Mode::Http, backends)
    }
}

/// duet, then HAProxy when installed, both in front of `backends`.
fn targets(backends: &[SocketAddr], setup: Setup) -> Vec<Target> {
    let p = Proxy::start(duet_spec(backends, setup)).unwrap();
    let mut all = vec![Target {
        name: "duet",
        addr: p.local_addr(),
        proxy: Proxied::Duet(p),
    }];
    if reference::haproxy_available() {
        let h = reference::start(
            backends,
            reference::Options {
                client_timeout: setup.client_timeout,
                server_timeout: setup.server_timeout,
                retries: 1,
            },
        );
        all.push(Target {
            name: "haproxy",
            addr: h.addr,
            proxy: Proxied::Haproxy(h),
        });
    }
    all
}

/// One row of a comparison: the case and each target's verdict.
struct Row {
    case: String,
    verdicts: Vec<(&'static str, Result<(), String>)>,
}

/// Prints the table and fails if duet was unsafe anywhere, or weaker than HAProxy.
fn judge(title: &str, rows: &[Row]) {
    eprintln!("\n{title}");
    let mut failures = Vec::new();
    for row in rows {
        let cells: Vec<String> = row
            .verdicts
            .iter()
            .map(|(name, v)| match v {
                Ok(()) => format!("{name}: safe"),
                Err(why) => format!("{name}: UNSAFE ({why})"),
            })
            .collect();
        eprintln!("  {:<44} {}", row.case, cells.join(" | "));
        for (name, v) in &row.verdicts {
            if *name == "duet"
                && let Err(why) = v
            {
                failures.push(format!("{}: {why}", row.case));
            }
        }
    }
    assert!(failures.is_empty(), "duet failed:\n{}", failures.join("\n"));
}

fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(bytes).unwrap();
    c
}

/// A fresh client's plain request for `target`; its answer must be the target itself.
fn next_request_is_answered(addr: SocketAddr, target: &str) -> Result<(), String> {
    let mut c = send(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    let got = read_responses(&mut c, 1, Duration::from_secs(3));
    match got.first() {
        Some(r) if r.status == 200 && r.text() == target => Ok(()),
        Some(r) => Err(format!(
            "the next client got {} {:?} instead of {target}",
            r.status,
            r.text()
        )),
        None => Err("the next client got no answer".into()),
    }
}

/// Every response a client read must have one framing and must not leave it hanging.
fn responses_are_clean(responses: &[Response]) -> Result<(), String> {
    for r in responses {
        if !r.ambiguous.is_empty() {
            return Err(format!("client got an ambiguous head: {:?}", r.ambiguous));
        }
        if r.hung {
            return Err("client got a body without framing on an open connection".into());
        }
        if r.text().contains("poison") {
            return Err(format!("client got {:?}", r.text()));
        }
    }
    Ok(())
}

const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Request shapes that desynchronise a proxy from its backend when either reads the framing
/// differently. Each hides `HIDDEN` where only a misreading finds a request.
fn request_shapes() -> Vec<(&'static str, String)> {
    let s = HIDDEN;
    let n = s.len();
    let chunk = format!("{n:x}\r\n{s}\r\n0\r\n\r\n");
    let hex_line = format!("{n:x}\r\n").len();
    let post = "POST / HTTP/1.1\r\nHost: x\r\n";
    let te_cl = |te: &str| format!("{post}Content-Length: {hex_line}\r\n{te}\r\n\r\n{chunk}");
    let te_only = |te: &str| format!("{post}{te}\r\n\r\n{chunk}");
    vec![
        (
            "CL.TE",
            format!(
                "{post}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}",
                5 + n
            ),
        ),
        ("TE.CL", te_cl("Transfer-Encoding: chunked")),
        (
            "two different Content-Length",
            format!("{post}Content-Length: 0\r\nContent-Length: {n}\r\n\r\n{s}"),
        ),
        (
            "Content-Length list 0, n",
            format!("{post}Content-Length: 0, {n}\r\n\r\n{s}"),
        ),
        (
            "Content-Length list n, n",
            format!("{post}Content-Length: {n}, {n}\r\n\r\n{s}"),
        ),
        (
            "Content-Length +n",
            format!("{post}Content-Length: +{n}\r\n\r\n{s}"),
        ),
        (
            "Content-Length space before colon",
            format!("{post}Content-Length : {n}\r\n\r\n{s}"),
        ),
        (
            "Connection: Content-Length",
            format!("{post}Connection: Content-Length\r\nContent-Length: {n}\r\n\r\n{s}"),
        ),
        (
            "Connection: close, Content-Length",
            format!("{post}Connection: close, Content-Length\r\nContent-Length: {n}\r\n\r\n{s}"),
        ),
        (
            "Connection: Transfer-Encoding",
            format!(
                "{post}Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
            ),
        ),
        (
            "Connection: Host",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n".to_string(),
        ),
        ("TE xchunked + CL", te_cl("Transfer-Encoding: xchunked")),
        ("TE xchunked", te_only("Transfer-Encoding: xchunked")),
        (
            "TE space before colon",
            te_cl("Transfer-Encoding : chunked"),
        ),
        ("TE tab before value", te_cl("Transfer-Encoding:\tchunked")),
        ("TE folded value", te_cl("Transfer-Encoding:\r\n chunked")),
        (
            "TE after a folded line",
            te_cl("X-A: a\r\n Transfer-Encoding: chunked"),
        ),
        (
            "TE chunked, identity",
            te_only("Transfer-Encoding: chunked, identity"),
        ),
        (
            "TE identity, chunked",
            te_only("Transfer-Encoding: identity, chunked"),
        ),
        (
            "TE twice",
            te_only("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
        ),
        ("TE quoted", te_only("Transfer-Encoding: \"chunked\"")),
        ("TE NUL", te_only("Transfer-Encoding: chunked\0")),
        (
            "TE in HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"),
        ),
        (
            "bare LF head",
            format!("POST / HTTP/1.1\nHost: x\nContent-Length: {n}\n\n{s}"),
        ),
        (
            "bare CR in a value",
            format!("{post}X-A: a\rContent-Length: 0\r\nContent-Length: {n}\r\n\r\n{s}"),
        ),
        (
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_string(),
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_string(),
        ),
        (
            "chunk size overflow",
            format!(
                "{post}Transfer-Encoding: chunked\r\n\r\n1000000000000000000000000000{n:x}\r\n{s}\r\n0\r\n\r\n"
            ),
        ),
        (
            "chunk size 0x",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n0x{n:x}\r\n{s}\r\n0\r\n\r\n"),
        ),
        (
            "chunk bare LF",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n{n:x}\n{s}\n0\n\n"),
        ),
        (
            "chunk size with space",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n {n:x}\r\n{s}\r\n0\r\n\r\n"),
        ),
        (
            "two Host",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_string(),
        ),
        (
            "absolute-form against Host",
            "GET http://a.example/abs HTTP/1.1\r\nHost: b.example\r\n\r\n".to_string(),
        ),
    ]
}

/// One request shape through one target to one backend kind: safe when the backend never read
/// the hidden request, never had to guess a framing, and the next client is answered right.
fn smuggle(shape: &str, prefer: Prefer) -> Vec<(&'static str, Result<(), String>)> {
    let backend = strict::echo(prefer);
    let raw = request_shapes()
        .into_iter()
        .find(|(name, _)| *name == shape)
        .unwrap()
        .1;
    let mut verdicts = Vec::new();
    for t in targets(&[backend.addr], Setup::default()) {
        let before = backend.record.seen.lock().unwrap().len();
        backend.record.ambiguous.lock().unwrap().clear();
        let mut c = send(t.addr, raw.as_bytes());
        let got = read_responses(&mut c, 2, Duration::from_millis(700));
        drop(c);
        let verdict = (|| {
            responses_are_clean(&got)?;
            next_request_is_answered(t.addr, "/next")?;
            // A request the backend read but the proxy never answered as one is a desync. (A
            // proxy may read the hidden bytes as the client's next pipelined request, as HAProxy
            // does after unfolding an obs-fold line: then it answers it, and both agree.)
            let seen = backend.record.seen.lock().unwrap()[before..].to_vec();
            let answered = got.iter().any(|r| r.text() == "/smuggled");
            if seen.iter().any(|s| s.target == "/smuggled") && !answered {
                return Err("the backend read a request the proxy never saw".into());
            }
            let ambiguous = backend.record.ambiguities();
            if !ambiguous.is_empty() {
                return Err(format!("forwarded {ambiguous:?}"));
            }
            Ok(())
        })();
        verdicts.push((t.name, verdict));
    }
    verdicts
}

#[test]
fn request_smuggling_shapes_never_reach_a_backend() {
    let shapes: Vec<&'static str> = request_shapes().into_iter().map(|(n, _)| n).collect();
    let rows: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = shapes
            .iter()
            .flat_map(|&shape| {
                [Prefer::Length, Prefer::Chunked].map(|prefer| {
                    let h = scope.spawn(move || smuggle(shape, prefer));
                    (format!("{shape} ({prefer:?} wins)"), h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|(case, h)| Row {
                case,
                verdicts: h.join().unwrap(),
            })
            .collect()
    });
    judge("request smuggling (backend kind in brackets)", &rows);
}

const POISON: &str = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison";

/// Response shapes a broken or hostile backend sends for `/evil` (and `HEAD /evil`); `true`:
/// the backend closes after it.
fn response_shapes() -> Vec<(&'static str, &'static str, String, bool)> {
    let p = POISON;
    let ok = "HTTP/1.1 200 OK\r\n";
    vec![
        (
            "CL+TE",
            "GET",
            format!("{ok}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{p}"),
            false,
        ),
        (
            "two different Content-Length",
            "GET",
            format!(
                "{ok}Content-Length: 2\r\nContent-Length: {}\r\n\r\nok{p}",
                2 + p.len()
            ),
            false,
        ),
        (
            "Content-Length list",
            "GET",
            format!("{ok}Content-Length: 2, 2\r\n\r\nok"),
            false,
        ),
        (
            "Connection: Content-Length",
            "GET",
            format!("{ok}Connection: Content-Length\r\nContent-Length: 2\r\n\r\nok"),
            false,
        ),
        (
            "Connection: Transfer-Encoding",
            "GET",
            format!(
                "{ok}Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            ),
            false,
        ),
        (
            "TE xchunked",
            "GET",
            format!("{ok}Transfer-Encoding: xchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n{p}"),
            false,
        ),
        (
            "TE chunked, identity",
            "GET",
            format!("{ok}Transfer-Encoding: chunked, identity\r\n\r\n2\r\nok\r\n0\r\n\r\n{p}"),
            false,
        ),
        (
            "chunk size overflow",
            "GET",
            format!(
                "{ok}Transfer-Encoding: chunked\r\n\r\n10000000000000000000000000002\r\nok\r\n0\r\n\r\n{p}"
            ),
            false,
        ),
        (
            "bare LF head",
            "GET",
            "HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_string(),
            false,
        ),
        (
            "obs-fold",
            "GET",
            format!("{ok}X-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
            false,
        ),
        (
            "NUL in a value",
            "GET",
            format!("{ok}X-A: a\0b\r\nContent-Length: 2\r\n\r\nok"),
            false,
        ),
        (
            "204 with a body",
            "GET",
            format!(
                "HTTP/1.1 204 No Content\r\nContent-Length: {}\r\n\r\n{p}",
                p.len()
            ),
            false,
        ),
        (
            "HEAD answered with a body",
            "HEAD",
            format!("{ok}Content-Length: {}\r\n\r\n{p}", p.len()),
            false,
        ),
        (
            "a second response behind the first",
            "GET",
            format!("{ok}Content-Length: 2\r\n\r\nok{p}"),
            false,
        ),
        (
            "body until close",
            "GET",
            format!("{ok}\r\nuntil close"),
            true,
        ),
    ]
}

fn desync(shape: &'static str) -> Vec<(&'static str, Result<(), String>)> {
    let (_, method, evil, close) = response_shapes()
        .into_iter()
        .find(|(n, ..)| *n == shape)
        .unwrap();
    let backend = strict::spawn(
        Prefer::Length,
        None,
        reply(move |n, seen| {
            if seen.target == "/evil" {
                Some(Answer {
                    bytes: evil.clone().into_bytes(),
                    close,
                })
            } else {
                strict::echo_target(n, seen)
            }
        }),
    );
    let mut verdicts = Vec::new();
    for t in targets(&[backend.addr], Setup::default()) {
        let verdict = (|| {
            let mut c = send(
                t.addr,
                format!("{method} /evil HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
            let got = read_responses(&mut c, 1, Duration::from_millis(1500));
            responses_are_clean(&got)?;
            // The same client's next request, if its connection is still open.
            if got.last().is_some_and(|r| !r.closed)
                && c.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                    .is_ok()
            {
                let again = read_responses(&mut c, 1, Duration::from_millis(1500));
                responses_are_clean(&again)?;
                if let Some(r) = again.first()
                    && r.status == 200
                    && r.text() != "/again"
                {
                    return Err(format!("the same client then got {:?}", r.text()));
                }
            }
            drop(c);
            // An unrelated client must get its own answer, not what the backend left behind.
            next_request_is_answered(t.addr, "/next")?;
            next_request_is_answered(t.addr, "/next")
        })();
        verdicts.push((t.name, verdict));
    }
    verdicts
}

#[test]
fn broken_backend_responses_never_reach_another_client() {
    let shapes: Vec<&'static str> = response_shapes().into_iter().map(|(n, ..)| n).collect();
    let rows: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = shapes
            .iter()
            .map(|&shape| (shape, scope.spawn(move || desync(shape))))
            .collect();
        handles
            .into_iter()
            .map(|(case, h)| Row {
                case: case.to_string(),
                verdicts: h.join().unwrap(),
            })
            .collect()
    });
    judge("response desync", &rows);
}

/// Runs `case` against every target in front of `backend` and judges the row.
fn compare(
    title: &str,
    backend: &StrictBackend,
    setup: Setup,
    case: impl Fn(&Target, &StrictBackend) -> Result<(), String>,
) {
    let verdicts = targets(&[backend.addr], setup)
        .iter()
        .map(|t| (t.name, case(t, backend)))
        .collect();
    judge(
        title,
        &[Row {
            case: title.to_string(),
            verdicts,
        }],
    );
}

#[test]
fn a_post_is_never_sent_twice() {
    // The backend answers a connection's first request, then reads the next one and closes
    // without an answer: a proxy that resends it on a new connection pays twice.
    let backend = strict::drops_second_request();
    compare(
        "POST on a pooled connection the backend drops",
        &backend,
        Setup::default(),
        |t, b| {
            let before = b.record.count("/pay");
            let mut c = send(t.addr, b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n");
            let warm = read_responses(&mut c, 1, Duration::from_secs(2));
            if warm.first().map(|r| r.status) != Some(200) {
                return Err(format!("warm-up failed: {warm:?}"));
            }
            c.write_all(b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n$$$")
                .unwrap();
            let _ = read_responses(&mut c, 1, Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(200));
            match b.record.count("/pay") - before {
                1 => Ok(()),
                n => Err(format!("the POST reached the backend {n} times")),
            }
        },
    );
}

#[test]
fn an_idempotent_request_on_a_dropped_pooled_connection_is_answered() {
    let backend = strict::drops_second_request();
    compare(
        "GET on a pooled connection the backend drops",
        &backend,
        Setup::default(),
        |t, _| {
            let mut c = send(t.addr, b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = read_responses(&mut c, 1, Duration::from_secs(2));
            c.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let got = read_responses(&mut c, 1, Duration::from_secs(2));
            match got.first() {
                Some(r) if r.status == 200 && r.text() == "/again" => Ok(()),
                other => Err(format!("got {other:?}")),
            }
        },
    );
}

/// Sends a head with `Expect: 100-continue`, waits up to a second for `100` (as curl does),
/// then the body; the final answer must echo it.
fn expect_continue(t: &Target) -> Result<(), String> {
    let mut c = send(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = read_responses(&mut c, 1, Duration::from_secs(1));
    if let Some(r) = interim.iter().find(|r| r.status >= 200) {
        return Err(format!("a final {} before the body was sent", r.status));
    }
    c.write_all(b"hello").unwrap();
    let got = read_responses(&mut c, 1, Duration::from_secs(3));
    responses_are_clean(&got)?;
    let Some(last) = got.iter().rfind(|r| r.status >= 200) else {
        return Err(format!("no final response after the body ({got:?})"));
    };
    if last.status != 200 || last.text() != "hello" {
        return Err(format!("final {} {:?}", last.status, last.text()));
    }
    // The connection still works.
    c.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let after = read_responses(&mut c, 1, Duration::from_secs(3));
    match after.iter().rfind(|r| r.status >= 200) {
        Some(r) if r.text() == "/after" => Ok(()),
        other => Err(format!("next request on the connection got {other:?}")),
    }
}

#[test]
fn expect_100_continue_works_whether_or_not_the_backend_sends_100() {
    let sends = strict::spawn(
        Prefer::Length,
        Some("HTTP/1.1 100 Continue\r\n\r\n"),
        reply(strict::echo_target),
    );
    compare(
        "Expect: 100-continue, backend sends 100",
        &sends,
        Setup::default(),
        |t, _| expect_continue(t),
    );
    let silent = strict::echo(Prefer::Length);
    compare(
        "Expect: 100-continue, backend sends no 100",
        &silent,
        Setup::default(),
        |t, _| expect_continue(t),
    );
}

#[test]
fn early_hints_are_relayed_and_the_final_response_follows() {
    let backend = strict::early_hints();
    compare("103 Early Hints", &backend, Setup::default(), |t, _| {
        let mut c = send(t.addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = read_responses(&mut c, 1, Duration::from_secs(2));
        responses_are_clean(&got)?;
        let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
        if statuses != [103, 200] || got[1].text() != "/page" {
            return Err(format!("got {statuses:?}"));
        }
        c.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let after = read_responses(&mut c, 1, Duration::from_secs(2));
        match after.iter().rfind(|r| r.status >= 200) {
            Some(r) if r.text() == "/after" => Ok(()),
            other => Err(format!("next request got {other:?}")),
        }
    });
}

#[test]
fn clients_that_stall_their_body_get_408_and_no_backend_is_blamed() {
    let backend = strict::echo(Prefer::Length);
    let setup = Setup {
        client_timeout: Duration::from_millis(400),
        ..Setup::default()
    };
    compare(
        "clients stall after announcing a body",
        &backend,
        setup,
        |t, _| {
            // More stalled clients than the passive-failure threshold (3).
            let stalled: Vec<TcpStream> = (0..5)
                .map(|_| {
                    send(
                        t.addr,
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
                    )
                })
                .collect();
            for mut c in stalled {
                let got = read_responses(&mut c, 1, Duration::from_secs(3));
                if let Some(r) = got.first()
                    && r.status != 408
                    && r.status != 400
                {
                    return Err(format!("a stalled client got {}", r.status));
                }
            }
            for i in 0..6 {
                next_request_is_answered(t.addr, &format!("/after{i}"))?;
            }
            if let Some(p) = t.duet() {
                let b = &p.backends()[0].backend;
                if !b.stats.up.load(Ordering::Relaxed) {
                    return Err("the backend was marked down for the clients' stalls".into());
                }
                let errors: u64 = duet_proxy::ErrorKind::ALL
                    .iter()
                    .map(|&k| b.stats.errors_of(k))
                    .sum();
                if errors != 0 {
                    return Err(format!("{errors} backend errors counted for client stalls"));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = strict::echo(Prefer::Length);
    compare(
        "three pipelined requests in one write",
        &backend,
        Setup::default(),
        |t, _| {
            let mut c = send(
            t.addr,
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n/2GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
            let got = read_responses(&mut c, 3, Duration::from_secs(2));
            responses_are_clean(&got)?;
            let bodies: Vec<String> = got.iter().map(Response::text).collect();
            if bodies != ["/1", "/2", "/3"] {
                return Err(format!("got {bodies:?}"));
            }
            Ok(())
        },
    );
}

#[test]
fn a_byte_by_byte_client_is_served() {
    let backend = strict::echo(Prefer::Length);
    compare(
        "a request sent one byte at a time",
        &backend,
        Setup::default(),
        |t, _| {
            let raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
            let mut c = TcpStream::connect(t.addr).unwrap();
            c.set_nodelay(true).unwrap();
            for b in raw {
                c.write_all(&[*b]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            let got = read_responses(&mut c, 1, Duration::from_secs(2));
            match got.first() {
                Some(r) if r.status == 200 && r.text() == "hello world" => Ok(()),
                other => Err(format!("got {other:?}")),
            }
        },
    );
}

/// Forwards `raw` through a fresh duet in front of a strict backend and returns what the
/// backend read.
fn forwarded(raw: &str, tune: impl FnOnce(&mut BalancerSpec, SocketAddr)) -> strict::Seen {
    let backend = strict::echo(Prefer::Length);
    let mut spec = duet_spec(&[backend.addr], Setup::default());
    tune(&mut spec, backend.addr);
    let p = Proxy::start(spec).unwrap();
    let mut c = send(p.local_addr(), raw.as_bytes());
    let got = read_responses(&mut c, 1, Duration::from_secs(2));
    assert_eq!(got.first().map(|r| r.status), Some(200), "{raw:?}: {got:?}");
    let seen = backend.record.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        backend.record.ambiguities().is_empty(),
        "{:?}",
        backend.record.ambiguities()
    );
    seen
}

#[test]
fn absolute_form_targets_are_routed_and_forwarded_by_their_authority() {
    let (default, other) = (strict::echo(Prefer::Length), strict::echo(Prefer::Length));
    let p = Proxy::start(BalancerSpec {
        routes: vec![duet_proxy::RouteSpec {
            host: Some("other.example".into()),
            path_prefix: "/".into(),
            backends: vec![other.addr.into()],
        }],
        ..duet_spec(&[default.addr], Setup::default())
    })
    .unwrap();
    // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
    let mut c = send(
        p.local_addr(),
        b"GET http://other.example/page?q=1 HTTP/1.1\r\nHost: www.example\r\n\r\n",
    );
    let got = read_responses(&mut c, 1, Duration::from_secs(2));
    assert_eq!(got[0].text(), "/page?q=1");
    assert!(
        default.record.targets().is_empty(),
        "{:?}",
        default.record.targets()
    );
    let seen = other
        .record
        .last("/page?q=1")
        .expect("routed by the authority");
    assert_eq!(seen.line, "GET /page?q=1 HTTP/1.1\r");
    assert_eq!(seen.values("host"), ["other.example"]);
    // Userinfo and unknown schemes are refused.
    for bad in [
        "GET http://u@other.example/ HTTP/1.1",
        "GET ftp://other.example/ HTTP/1.1",
    ] {
        let mut c = send(
            p.local_addr(),
            format!("{bad}\r\nHost: x\r\n\r\n").as_bytes(),
        );
        let got = read_responses(&mut c, 1, Duration::from_secs(2));
        assert_eq!(got.first().map(|r| r.status), Some(400), "{bad}");
    }
}

#[test]
fn framing_and_forwarding_headers_are_normalised() {
    // A list of one length becomes one length.
    let seen = forwarded(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        |_, _| {},
    );
    assert_eq!(seen.values("content-length"), ["3"]);
    assert_eq!(seen.body, b"abc");
    // Repeated X-Forwarded-For and Forwarded headers are one chain each, in order.
    let seen = forwarded(
        "GET /x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 198.51.100.2, 198.51.100.3\r\nForwarded: for=198.51.100.1\r\nForwarded: for=198.51.100.2\r\n\r\n",
        |_, _| {},
    );
    assert_eq!(
        seen.values("x-forwarded-for"),
        ["198.51.100.1, 198.51.100.2, 198.51.100.3, 127.0.0.1"]
    );
    assert_eq!(
        seen.values("forwarded"),
        ["for=198.51.100.1, for=198.51.100.2, for=127.0.0.1;proto=http"]
    );
    // An HTTP/1.0 request without Host is forwarded as HTTP/1.1 with the address it came to.
    let mut local = None;
    let seen = forwarded("GET /old HTTP/1.0\r\n\r\n", |_, _| {});
    for h in seen.values("host") {
        local = Some(h);
    }
    let host = local.expect("a Host was added");
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert_eq!(seen.line, "GET /old HTTP/1.1\r");
    // A `Connection` header naming the framing cannot take it away.
    let seen = forwarded(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Content-Length, Host\r\nContent-Length: 2\r\n\r\nok",
        |_, _| {},
    );
    assert_eq!(seen.values("content-length"), ["2"]);
    assert_eq!(seen.values("host"), ["x"]);
    assert_eq!(seen.body, b"ok");
}

#[test]
fn passive_checks_count_5xx_only_when_configured() {
    let backend = strict::spawn(
        Prefer::Length,
        None,
        reply(|_, _| Answer::keep("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")),
    );
    let run = |on_status: Vec<std::ops::RangeInclusive<u16>>| {
        let p = Proxy::start(BalancerSpec {
            passive_on_status: on_status,
            ..duet_spec(&[backend.addr], Setup::default())
        })
        .unwrap();
        for _ in 0..6 {
            let mut c = send(p.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = read_responses(&mut c, 1, Duration::from_secs(2));
        }
        let b = p.backends()[0].backend.clone();
        (
            b.stats.up.load(Ordering::Relaxed),
            b.stats.errors_of(duet_proxy::ErrorKind::ServerError),
        )
    };
    // Answers are answers: the backend stays in, and the 5xx are still counted for metrics.
    assert_eq!(run(Vec::new()), (true, 6));
    // With `passive.on_status`, three in a row take it out (the fourth request then gets 503
    // from duet itself, not the backend).
    let (up, _) = run(vec![500..=599]);
    assert!(!up, "on_status 500-599 must take the backend out");
}
