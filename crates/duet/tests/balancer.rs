//! `duet run` as a plain TCP load balancer on one machine: no VRRP, loopback only, no root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend answering its name; returns its address and a handle that stops it when dropped.
fn backend(name: &'static str) -> (SocketAddr, std::sync::mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        loop {
            if !matches!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)) {
                return; // listener dropped: connections are refused from now on
            }
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(name.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, tx)
}

fn ask(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `duet run` with a `[node]` on free loopback ports (state in `dir`, no guardian) and
/// `balancer`, a `[[balancer]]` section in which `@BIND@` stands for its listen address.
/// Returns the daemon, its admin address and the balancer's address.
fn run_duet(dir: &std::path::Path, balancer: &str) -> (Daemon, SocketAddr, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("duet.toml");
    write_config(dir, admin, &balancer.replace("@BIND@", &bind.to_string()));
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["run", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (daemon, admin, bind)
}

/// Writes `dir/duet.toml`: a `[node]` with the admin address, an operator token file
/// (`dir/token`, holding [`TOKEN`]) and no guardian, then `rest`.
fn write_config(dir: &std::path::Path, admin: SocketAddr, rest: &str) {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("duet.toml"),
        format!(
            "[node]\nname = \"lb\"\nadmin = \"{admin}\"\nstate_dir = \"{}\"\nguardian = false\noperator_token_file = \"{}\"\n\n{rest}",
            dir.join("state").display(),
            dir.join("token").display(),
        ),
    )
    .unwrap();
}

const TOKEN: &str = "test-operator-token-0123456789";

/// `POST path` on the admin API with `token`; returns (status code, body).
fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string(),
    )
}

/// Answers over `tries` fresh connections.
fn answers(bind: SocketAddr, tries: usize) -> std::collections::BTreeSet<String> {
    (0..tries).filter_map(|_| ask(bind)).collect()
}

/// Waits (10 s at most) until every answer over 10 connections is in `want`, and all of
/// `want` appear.
fn wait_answers(bind: SocketAddr, want: &[&str]) -> bool {
    let want: std::collections::BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if answers(bind, 10) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn duet_run_reloads_balancers_in_place_and_drains_backends_through_the_admin_api() {
    let dir = std::env::temp_dir().join(format!("duet-lbr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ((a, _sa), (b, _sb), (c, _sc)) = (backend("a"), backend("b"), backend("c"));
    let section = |backends: &[SocketAddr]| {
        let list: Vec<String> = backends
            .iter()
            .map(|x| format!("{{ address = \"{x}\" }}"))
            .collect();
        format!(
            "[[balancer]]\nname = \"app\"\nbind = \"@BIND@\"\nmode = \"tcp\"\nbackends = [{}]\n",
            list.join(", ")
        )
    };
    let (daemon, admin, bind) = run_duet(&dir, &section(&[a, b]));
    assert!(
        wait_answers(bind, &["a", "b"]),
        "balancer never served a and b"
    );

    // POSTs need the operator token.
    let drain_a = format!("/v1/balancers/app/backends/{a}/drain");
    assert_eq!(post(admin, &drain_a, None).0, 401);
    assert_eq!(post(admin, &drain_a, Some("wrong-token-0123456789")).0, 401);
    let (code, body) = post(admin, &drain_a, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert_eq!(answers(bind, 20), ["b".to_string()].into(), "a is drained");
    let status = |admin: SocketAddr| -> duet_admin::Status {
        let out = Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["status", "--json", "--admin", &admin.to_string()])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let s = status(admin);
    assert!(s.balancers[0].backends[0].draining, "{s:?}");
    let (code, body) = post(
        admin,
        "/v1/balancers/app/backends/10.9.9.9:1/drain",
        Some(TOKEN),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no backend 10.9.9.9:1"), "{body}");
    let (code, _) = post(
        admin,
        &format!("/v1/balancers/app/backends/{a}/enable"),
        Some(TOKEN),
    );
    assert_eq!(code, 200);
    assert!(wait_answers(bind, &["a", "b"]), "a is back");

    // SIGHUP with a new backend list: applied in place, on the same listener.
    let config = std::fs::read_to_string(dir.join("duet.toml")).unwrap();
    let swap = |from: &[SocketAddr], to: &[SocketAddr]| {
        let bound = |list: &[SocketAddr]| section(list).replace("@BIND@", &bind.to_string());
        let text = std::fs::read_to_string(dir.join("duet.toml")).unwrap();
        std::fs::write(
            dir.join("duet.toml"),
            text.replace(&bound(from), &bound(to)),
        )
        .unwrap();
    };
    assert!(config.contains(&format!("\"{b}\" }}]")));
    swap(&[a, b], &[c]);
    duet_sys::process::send_signal(daemon.0.id(), duet_sys::process::SIGHUP, false).unwrap();
    assert!(
        wait_answers(bind, &["c"]),
        "SIGHUP did not move the balancer to c"
    );

    // POST /v1/reload does the same and says how it went.
    swap(&[c], &[a]);
    let (code, body) = post(admin, "/v1/reload", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(wait_answers(bind, &["a"]));
    // A broken file is refused with its location, and the balancer keeps serving.
    let good = std::fs::read_to_string(dir.join("duet.toml")).unwrap();
    std::fs::write(
        dir.join("duet.toml"),
        good.replace("mode = \"tcp\"", "mode = \"udp\""),
    )
    .unwrap();
    let (code, body) = post(admin, "/v1/reload", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("duet.toml:"), "{body}");
    assert_eq!(answers(bind, 5), ["a".to_string()].into());
    let s = status(admin);
    assert_eq!(s.balancers[0].client_errors, 0, "{s:?}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn duet_run_serves_a_tcp_balancer_and_survives_a_dead_backend() {
    let dir = std::env::temp_dir().join(format!("duet-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, stop_a) = backend("a");
    let (b, _stop_b) = backend("b");
    let (mut daemon, admin, bind) = run_duet(
        &dir,
        &format!(
            "[[balancer]]\nname = \"app\"\nbind = \"@BIND@\"\nmode = \"tcp\"\nbackends = [{{ address = \"{a}\" }}, {{ address = \"{b}\" }}]\n"
        ),
    );
    let exe = env!("CARGO_BIN_EXE_duet");
    let start = Instant::now();
    while ask(bind).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "balancer never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(ask(bind).unwrap());
    }
    assert_eq!(seen.len(), 2, "both backends serve: {seen:?}");

    drop(stop_a);
    let _ = TcpStream::connect(a); // wake its accept loop so it notices
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..30 {
        assert_eq!(
            ask(bind).as_deref(),
            Some("b"),
            "a dead backend must cost no client error"
        );
    }
    // The status shows it: backend a down after its failed connects, no client errors.
    std::thread::sleep(Duration::from_millis(1200));
    let out = Command::new(exe)
        .args(["status", "--json", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let status: duet_admin::Status = serde_json::from_slice(&out.stdout).unwrap();
    let bal = &status.balancers[0];
    assert_eq!(bal.client_errors, 0);
    assert!(!bal.backends[0].up, "{bal:?}");
    assert!(bal.backends[0].connect_errors >= 3, "{bal:?}");
    let table = Command::new(exe)
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("balancer app (tcp on"), "{table}");
    assert!(table.contains(&format!("{a}  default  down")), "{table}");

    duet_sys::process::send_signal(daemon.0.id(), duet_sys::process::SIGTERM, false).unwrap();
    assert!(daemon.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn duet_run_serves_http_with_forwarding_headers() {
    let dir = std::env::temp_dir().join(format!("duet-lbh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An HTTP backend that answers with the X-Forwarded-For it received.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let xff = head
                .lines()
                .find_map(|l| l.strip_prefix("x-forwarded-for: "))
                .unwrap_or("")
                .to_string();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xff}",
                xff.len()
            );
        }
    });
    let (_daemon, _admin, bind) = run_duet(
        &dir,
        &format!(
            "[[balancer]]\nname = \"web\"\nbind = \"@BIND@\"\nbackends = [{{ address = \"{backend}\" }}]\nmax_header_bytes = 2048\naccess_log = \"{}\"\n",
            dir.join("access.log").display()
        ),
    );
    let start = Instant::now();
    let answer = loop {
        let got = TcpStream::connect(bind).ok().and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        });
        if let Some(a) = got.filter(|a| !a.is_empty()) {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "http balancer never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n127.0.0.1"), "{answer}");

    // max_header_bytes = 2048: a 3000-byte head is refused with 431.
    let mut s = TcpStream::connect(bind).unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(3000)
    );
    s.write_all(big.as_bytes()).unwrap();
    let mut refused = String::new();
    let _ = s.read_to_string(&mut refused);
    assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");

    // The access log has a JSON line for the answered request.
    let log = dir.join("access.log");
    let line = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(&log).ok().filter(|t| !t.is_empty())
        })
        .expect("access log written");
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["backend"], backend.to_string());
    assert_eq!(entry["balancer"], "web");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A webhook receiver: answers its first request 500 (duet must try again) and the others
/// 200; sends each body received.
fn webhook_receiver() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, c) in l.incoming().flatten().enumerate() {
            let mut r = std::io::BufReader::new(c);
            let mut len = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let status = if n == 0 { "500 Busy" } else { "200 OK" };
            let _ = write!(
                r.get_mut(),
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if n > 0 {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            }
        }
    });
    (addr, rx)
}

/// An SMTP sink: accepts every mail and sends its DATA.
fn smtp_sink() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = std::io::BufReader::new(c);
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            let _ = w.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            while !data.ends_with("\r\n.\r\n") {
                                line.clear();
                                if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0
                                {
                                    return;
                                }
                                data.push_str(&line);
                            }
                            let _ = tx.send(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = w.write_all(reply);
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn alerts_reach_a_webhook_and_a_mailbox_deduplicated_and_retried() {
    let dir = std::env::temp_dir().join(format!("duet-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (hook, hooks) = webhook_receiver();
    let (smtp, mails) = smtp_sink();
    let (_daemon, admin, _bind) = run_duet(
        &dir,
        &format!(
            "[[balancer]]\nname = \"web\"\nbind = \"@BIND@\"\nbackends = [{{ address = \"{backend_addr}\" }}]\n\n[alerts]\nwebhook = {{ url = \"http://{hook}/duet\", timeout = \"2s\" }}\nemail = {{ smtp = \"{smtp}\", from = \"duet@lb.example\", to = [\"ops@example.com\"] }}\non = [\"backend\"]\ndedupe = \"60s\"\n"
        ),
    );
    let path = format!("/v1/balancers/web/backends/{backend_addr}");
    let start = Instant::now();
    while TcpStream::connect(admin).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "duet did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(post(admin, &format!("{path}/drain"), Some(TOKEN)).0, 200);
    // Drained, enabled, drained again: the second "draining" is a repeat within the window.
    assert_eq!(post(admin, &format!("{path}/enable"), Some(TOKEN)).0, 200);
    assert_eq!(post(admin, &format!("{path}/drain"), Some(TOKEN)).0, 200);
    let wait = Duration::from_secs(15);
    let first: serde_json::Value =
        serde_json::from_str(&hooks.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(first["node"], "lb");
    assert_eq!(first["event"]["type"], "backend");
    assert_eq!(first["event"]["state"], "draining");
    assert_eq!(first["severity"], "info");
    let second: serde_json::Value =
        serde_json::from_str(&hooks.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(second["event"]["state"], "up");
    assert!(
        hooks.recv_timeout(Duration::from_secs(3)).is_err(),
        "the repeated 'draining' was sent again"
    );
    let mail = mails.recv_timeout(wait).unwrap();
    assert!(
        mail.contains(&format!(
            "Subject: [duet lb] info: web: backend {backend_addr} is draining"
        )),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mails.recv_timeout(wait).is_ok(), "the 'up' mail");
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
}
