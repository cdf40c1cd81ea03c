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

#[test]
fn duet_run_serves_a_tcp_balancer_and_survives_a_dead_backend() {
    let dir = std::env::temp_dir().join(format!("duet-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, stop_a) = backend("a");
    let (b, _stop_b) = backend("b");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("duet.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
name = "lb"
admin = "{admin}"
state_dir = "{state}"
guardian = false

[[balancer]]
name = "app"
bind = "{bind}"
mode = "tcp"
backends = [{{ address = "{a}" }}, {{ address = "{b}" }}]
"#,
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_duet");
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut daemon = Daemon(
        Command::new(exe)
            .args(["run", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
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
    assert!(table.contains(&format!("{a}  down")), "{table}");

    duet_sys::process::send_signal(daemon.0.id(), duet_sys::process::SIGTERM, false).unwrap();
    assert!(daemon.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
