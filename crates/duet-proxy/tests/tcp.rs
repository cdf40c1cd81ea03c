//! TCP mode against real backends on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_health::{Algorithm, HealthPolicy};
use duet_proxy::{BalancerSpec, CheckSpec, Proxy};

mod common;

use common::Backend;

/// A backend that answers every connection with its name and closes it.
fn backend(name: &'static str) -> Backend {
    common::spawn(name, |mut c, name, _| {
        let _ = c.write_all(name.as_bytes());
    })
}

fn spec(backends: &[&Backend], weights: &[u32], algorithm: Algorithm) -> BalancerSpec {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut spec = common::spec(duet_proxy::Mode::Tcp, &addrs);
    spec.algorithm = algorithm;
    for (b, &w) in spec.backends.iter_mut().zip(weights) {
        b.weight = w;
    }
    spec
}

fn ask(proxy: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(proxy).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

#[test]
fn weighted_round_robin_spreads_connections_by_weight() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let proxy = Proxy::start(spec(&[&a, &b, &c], &[1, 1, 2], Algorithm::RoundRobin)).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..400 {
        *counts.entry(ask(proxy.local_addr()).unwrap()).or_insert(0) += 1;
    }
    // Two worker threads each run their own smooth round robin: per thread the split is
    // exact, so the total is within a couple of connections of 100/100/200.
    for (name, want) in [("a", 100), ("b", 100), ("c", 200)] {
        let got = counts[name];
        assert!((want - 4..=want + 4).contains(&got), "{counts:?}");
    }
}

#[test]
fn a_dead_backend_costs_no_client_error() {
    let (a, b) = (backend("a"), backend("b"));
    let proxy = Proxy::start(spec(&[&a, &b], &[1, 1], Algorithm::RoundRobin)).unwrap();
    assert!(ask(proxy.local_addr()).is_some());
    a.kill();
    for _ in 0..50 {
        assert_eq!(ask(proxy.local_addr()).as_deref(), Some("b"));
    }
    assert_eq!(proxy.client_errors(), 0);
    let dead = &proxy.backends()[0].backend;
    assert!(dead.stats.errors_of(duet_proxy::ErrorKind::Connect) >= 3);
    // Three failed connects in a row took it out (passive check): it is no longer tried.
    assert!(!dead.stats.up.load(Ordering::Relaxed));
}

#[test]
fn active_checks_take_a_backend_out_and_back() {
    let (a, b) = (backend("a"), backend("b"));
    let mut s = spec(&[&a, &b], &[1, 1], Algorithm::RoundRobin);
    s.health = HealthPolicy {
        rise: 2,
        fall: 2,
        ..HealthPolicy::default()
    };
    s.check = Some(CheckSpec {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        path: None,
        expect: (200, 399),
    });
    let proxy = Proxy::start(s).unwrap();
    a.kill();
    let down = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !proxy.backends()[0].backend.stats.up.load(Ordering::Relaxed)
    });
    assert!(down, "the check never marked the dead backend down");
    let why = proxy.backends()[0]
        .backend
        .down_reason()
        .unwrap_or_default();
    assert!(
        why.starts_with("check failed: connect: Connection refused"),
        "{why}"
    );
    // A new listener on the same port brings it back after `rise` passing checks.
    let revived = TcpListener::bind(a.addr).unwrap();
    std::thread::spawn(move || {
        for mut c in revived.incoming().flatten() {
            let _ = c.write_all(b"a2");
        }
    });
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        proxy.backends()[0].backend.stats.up.load(Ordering::Relaxed)
    });
    assert!(up, "the check never brought the backend back");
}

#[test]
fn source_hashing_keeps_a_client_on_one_backend() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let proxy = Proxy::start(spec(&[&a, &b, &c], &[1, 1, 1], Algorithm::Hash)).unwrap();
    let first = ask(proxy.local_addr()).unwrap();
    for _ in 0..30 {
        assert_eq!(ask(proxy.local_addr()).unwrap(), first);
    }
}
