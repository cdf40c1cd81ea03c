//! The reference proxy for side-by-side tests: HAProxy from Debian, started for real with the
//! same backends. Missing HAProxy skips the comparison, unless `DUET_REQUIRE_TOOLS=1` (CI), where
//! it fails the test.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running HAProxy; killed on drop.
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether HAProxy is installed; without it, fails under `DUET_REQUIRE_TOOLS=1` and says so
/// otherwise.
pub fn haproxy_available() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("DUET_REQUIRE_TOOLS").is_none(),
            "haproxy is required (DUET_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("haproxy not installed: comparing with duet alone");
        if let Some(path) = std::env::var_os("DUET_SKIP_LOG") {
            let line = "hostile: the HAProxy comparison (haproxy not installed)\n";
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        }
    }
    found
}

/// Options that differ between cases.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `timeout client` and `timeout http-request`.
    pub client_timeout: Duration,
    /// `timeout server`.
    pub server_timeout: Duration,
    /// `retries` and `option redispatch`.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            client_timeout: Duration::from_secs(5),
            server_timeout: Duration::from_secs(5),
            retries: 1,
        }
    }
}

/// A port for HAProxy below the kernel's ephemeral range (32768 and up), where every port-0
/// bind of the tests' backends and proxies lands: a port picked there by binding port 0 and
/// letting it go could be taken by another test's backend before HAProxy binds it, and the
/// case would then talk to that backend directly. Each port is checked free before use.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    loop {
        // base + 2 699 < 32 768 for every base.
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2_700;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts HAProxy in HTTP mode, one thread, round robin over `backends`, keep-alive both ways
/// with `http-reuse safe` (its default), and waits until it accepts.
pub fn start(backends: &[SocketAddr], opts: Options) -> Haproxy {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("duet-haproxy-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server s{i} {b}\n"))
        .collect();
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let config = format!(
        "global\n    nbthread 1\n    maxconn 1000\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client {c}\n    timeout http-request {c}\n    timeout server {s}\n    retries {r}\n    option redispatch\n    http-reuse safe\n\
         frontend f\n    bind {addr}\n    option forwardfor\n    default_backend b\n\
         backend b\n    balance roundrobin\n{servers}",
        c = ms(opts.client_timeout),
        s = ms(opts.server_timeout),
        r = opts.retries,
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever answers must be this HAProxy, not another listener on the port.
    assert!(
        child.try_wait().unwrap().is_none(),
        "haproxy exited at start (its port {port} taken?)"
    );
    Haproxy { addr, child, dir }
}
