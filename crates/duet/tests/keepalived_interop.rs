//! duet and keepalived (the Debian package) in one VRRP group, in namespaces: each takes over
//! from the other, and neither complains about the other's adverts. VRRPv2 at 1 s and VRRPv3 at
//! 100 ms (keepalived 2.2.7 computes the v3 checksum with the pseudo-header; duet's message-only
//! mode is covered duet ↔ duet and by the golden vectors).
//!
//! Needs root and keepalived; skips with a message when either is missing, unless
//! `DUET_REQUIRE_TOOLS=1` (set by the project's test command), where a missing tool fails.

mod common;

use std::time::Duration;

use common::{VIP, exe};
use duet::lab::{DuetNode, KeepalivedNode, have_program, vrrp_config, wait_for};
use duet_sys::process::{SIGKILL, SIGTERM};

fn keepalived_available() -> bool {
    if have_program("keepalived") {
        return true;
    }
    duet::lab::skip(
        "keepalived is not installed (apt-get install keepalived)",
        "DUET_REQUIRE_TOOLS",
    );
    false
}

fn interop(interval: &str, tag: &str) {
    let Some(mut lab) = common::lab(tag) else {
        return;
    };
    if !keepalived_available() {
        return;
    }
    let exe = exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let b = lab.add_host("beta", 3).unwrap();
    let client = lab.add_host("client", 10).unwrap();
    lab.start_responders(&exe, &[&a, &b]).unwrap();
    let probe = lab.probe(&exe, &client, &format!("{VIP}:8080")).unwrap();
    let wait_answer = |node: &str, limit: Duration| {
        while probe.try_recv().is_ok() {}
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(l) = probe.recv_timeout(Duration::from_millis(100))
                && l.node.as_deref() == Some(node)
            {
                return true;
            }
        }
        false
    };
    // v2 takes 3 × 1 s + skew to notice a dead master; allow several times that.
    let limit = if interval == "1s" {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(5)
    };

    let mut duet = DuetNode::new(&lab, &a, &vrrp_config("alpha", 150, interval, "")).unwrap();
    let mut keepalived = KeepalivedNode::new(&lab, &b, 100, interval, None).unwrap();
    keepalived.start(&mut lab).unwrap();
    duet.start(&mut lab, &exe).unwrap();
    let ctx = |d: &DuetNode, k: &KeepalivedNode| {
        format!(
            "--- duet:\n{}\n--- keepalived:\n{}",
            d.log_text(),
            k.log_text()
        )
    };
    assert!(
        wait_answer("alpha", limit),
        "duet never became master\n{}",
        ctx(&duet, &keepalived)
    );

    // 1. duet crashes (daemon and guardian): keepalived takes over.
    duet_sys::process::send_signal(duet.pid.unwrap(), SIGKILL, true).unwrap();
    lab.reap(duet.pid.unwrap());
    assert!(
        wait_answer("beta", limit),
        "keepalived did not take over\n{}",
        ctx(&duet, &keepalived)
    );

    // 2. duet returns with the higher priority: keepalived steps down to it.
    duet.start(&mut lab, &exe).unwrap();
    assert!(
        wait_answer("alpha", limit),
        "duet did not preempt keepalived\n{}",
        ctx(&duet, &keepalived)
    );
    let ok = wait_for(limit, || {
        duet.state(&lab, &exe).as_deref() == Some("MASTER")
    });
    assert!(ok.is_some());

    // 3. duet stops gracefully: keepalived honours its priority-0 advert.
    duet_sys::process::send_signal(duet.pid.unwrap(), SIGTERM, false).unwrap();
    lab.reap(duet.pid.unwrap());
    assert!(
        wait_answer("beta", limit),
        "keepalived ignored duet's goodbye\n{}",
        ctx(&duet, &keepalived)
    );

    // 4. duet rejoins as the lower priority and takes over when keepalived crashes.
    let low = vrrp_config("alpha", 50, interval, "").replace(
        "@STATE@",
        &lab.dir().join("alpha/state").display().to_string(),
    );
    std::fs::write(&duet.config, low).unwrap();
    duet.start(&mut lab, &exe).unwrap();
    let backup = wait_for(limit, || {
        duet.state(&lab, &exe).as_deref() == Some("BACKUP")
    });
    assert!(backup.is_some(), "{}", ctx(&duet, &keepalived));
    std::thread::sleep(Duration::from_secs(1));
    let st = duet.status(&lab, &exe).unwrap();
    assert_eq!(
        st.vrrp[0].state, "BACKUP",
        "duet must not preempt a higher keepalived"
    );
    assert_eq!(st.vrrp[0].master.as_deref(), Some("10.99.0.3"));
    duet_sys::process::send_signal(keepalived.pid.unwrap(), SIGKILL, true).unwrap();
    assert!(
        wait_answer("alpha", limit),
        "duet did not take over from keepalived\n{}",
        ctx(&duet, &keepalived)
    );

    // Neither side complained about the other's packets.
    let complaints = keepalived.complaints();
    assert!(
        complaints.is_empty(),
        "keepalived complained:\n{}",
        complaints.join("\n")
    );
    let st = duet.status(&lab, &exe).unwrap();
    assert!(
        st.vrrp[0].counters.dropped.is_empty(),
        "duet dropped keepalived adverts: {:?}\n{}",
        st.vrrp[0].counters.dropped,
        ctx(&duet, &keepalived)
    );
    assert!(
        !duet.log_text().contains("dropped VRRP packet"),
        "{}",
        duet.log_text()
    );
}

#[test]
fn keepalived_and_duet_interoperate_v3_100ms() {
    interop("100ms", "kv3");
}

#[test]
fn keepalived_and_duet_interoperate_v2_1s() {
    interop("1s", "kv2");
}
