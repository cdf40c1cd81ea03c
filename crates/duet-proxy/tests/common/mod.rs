//! Backends for the proxy tests: loopback listeners that can be killed (their port then
//! refuses connections, as a crashed server's would).
#![allow(dead_code)]

pub mod h1;
pub mod reference;
pub mod strict;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A running backend.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

/// Starts a backend that runs `handle(connection, name, stop)` on a thread per connection.
pub fn spawn(name: &'static str, handle: fn(TcpStream, &'static str, &AtomicBool)) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                return; // drops the listener: the port refuses from now on
            }
            let Ok(conn) = conn else { continue };
            let flag = flag.clone();
            std::thread::spawn(move || handle(conn, name, &flag));
        }
    });
    Backend { addr, stop }
}

impl Backend {
    /// Stops accepting and lets open connections end at their next request.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The balancer the tests start from: loopback, round robin, weight 1 each, passive checks
/// only, one retry, two threads. Tests override what they exercise with struct update syntax.
pub fn spec(mode: duet_proxy::Mode, backends: &[SocketAddr]) -> duet_proxy::BalancerSpec {
    duet_proxy::BalancerSpec {
        name: "test".into(),
        mode,
        http_timeouts: Default::default(),
        bind: "127.0.0.1:0".parse().unwrap(),
        algorithm: duet_health::Algorithm::RoundRobin,
        backends: backends
            .iter()
            .map(|&address| duet_proxy::BackendSpec::from(address))
            .collect(),
        hash_key: Default::default(),
        routes: Vec::new(),
        queue: Default::default(),
        tls: None,
        health: duet_health::HealthPolicy {
            active_checks: false,
            ..duet_health::HealthPolicy::default()
        },
        passive_on_status: Vec::new(),
        check: None,
        connect_timeout: Duration::from_secs(1),
        retries: 1,
        threads: 2,
        accept_proxy: false,
        send_proxy: None,
        sticky_cookie: None,
        limits: Default::default(),
        access_log: None,
    }
}
