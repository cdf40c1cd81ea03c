//! `duet demo`, the README's first command, end to end: it builds its lab in network
//! namespaces (inside a user namespace of its own when not root), kills the master and shows
//! each layer move; as root with PostgreSQL 15 (as in CI) it ends with the database pair.
//! Needs `unshare -r` (unprivileged user namespaces) or root.

use std::time::{Duration, Instant};

#[test]
fn the_demo_shows_the_vip_the_balancer_and_the_service_move_and_come_back() {
    let probe = std::process::Command::new("unshare")
        .args(["-r", "-n", "-m", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        duet::lab::skip(
            "unshare -r -n -m is not allowed here (the demo needs user namespaces)",
            "DUET_REQUIRE_ROOT",
        );
        return;
    }
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duet"))
        .arg("demo")
        .output()
        .unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    for want in [
        "alpha is MASTER and runs the service; beta is BACKUP",
        ">>> kill -9 duet on alpha",
        "alpha's guardian removed its VIP",
        "VIP answers from beta",
        "balancer answers via beta",
        "service started on beta",
        "alpha answers again",
        "SERVICE  FOLLOWS  KIND  STATE",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    for bad in ["bug", "did not move", "did NOT"] {
        assert!(!text.contains(bad), "{bad:?} in\n{text}");
    }
    // Each layer moved within a few seconds (the witness lease is 2 s).
    for layer in ["VIP answers from beta", "service started on beta"] {
        let line = text.lines().find(|l| l.contains(layer)).unwrap();
        let ms: f64 = line
            .split_whitespace()
            .rev()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no time in {line:?}"));
        assert!(ms < 8_000.0, "{line}");
    }
    let database = duet::lab::can_build_labs().is_ok()
        && std::path::Path::new("/usr/lib/postgresql/15/bin/postgres").exists();
    if database {
        for want in [
            "the database layer: a PostgreSQL pair, its primary's node killed",
            "writes acknowledged again",
            "commits were acknowledged to the client; all",
            "rewound onto",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        let audit = text.lines().find(|l| l.starts_with("audit: ")).unwrap();
        let words: Vec<&str> = audit.split_whitespace().collect();
        assert_eq!(
            words[1], words[9],
            "every acknowledged commit survived: {audit}"
        );
    } else {
        assert!(
            text.contains("needs root and PostgreSQL 15: sudo duet demo"),
            "{text}"
        );
    }
    assert!(took < Duration::from_secs(180), "the demo took {took:?}");
}
