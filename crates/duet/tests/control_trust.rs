//! The control plane tried as an operator's bad day would: a node without CAP_NET_ADMIN, a
//! stranger on the LAN forging adverts. Real daemons in network namespaces; needs root.

mod common;

use std::time::Duration;

use common::{VIP, configs, exe, lab};
use duet::lab::{DuetNode, wait_for};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn a_node_without_cap_net_admin_is_fault_not_master_and_the_peer_serves() {
    let Some(mut lab) = lab("nocap") else {
        return;
    };
    let exe = exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let b = lab.add_host("beta", 3).unwrap();
    let client = lab.add_host("client", 10).unwrap();
    lab.start_responders(&exe, &[&a, &b]).unwrap();
    // alpha has the higher priority but cannot add addresses (as in a container or a unit
    // without the capability); it keeps CAP_NET_RAW, so it could advertise.
    let (alpha_cfg, beta_cfg) = configs("100ms", "");
    let mut alpha = DuetNode::new(&lab, &a, &alpha_cfg).unwrap();
    alpha.wrapper = ["setpriv", "--bounding-set=-net_admin", "--"]
        .map(String::from)
        .to_vec();
    let mut beta = DuetNode::new(&lab, &b, &beta_cfg).unwrap();
    beta.start(&mut lab, &exe).unwrap();
    alpha.start(&mut lab, &exe).unwrap();
    let probe = lab.probe(&exe, &client, &format!("{VIP}:8080")).unwrap();
    let logs = || {
        format!(
            "--- alpha:\n{}\n--- beta:\n{}",
            alpha.log_text(),
            beta.log_text()
        )
    };
    let state = |n: &DuetNode| n.state(&lab, &exe);
    let settled = wait_for(S(10), || {
        state(&alpha).as_deref() == Some("FAULT") && state(&beta).as_deref() == Some("MASTER")
    });
    assert!(
        settled.is_some(),
        "alpha not FAULT with beta MASTER\n{}",
        logs()
    );
    // Truthful status: FAULT with the reason, nothing held, never MASTER.
    let s = alpha.status(&lab, &exe).unwrap();
    let v = &s.vrrp[0];
    assert!(
        v.fault
            .as_deref()
            .is_some_and(|f| f.contains("CAP_NET_ADMIN")),
        "{v:?}"
    );
    assert!(v.vips_held.is_empty(), "{v:?}");
    assert_eq!(v.counters.became_master, 0, "{v:?}");
    assert!(!lab.has_address(&a, VIP.parse().unwrap()));
    assert!(
        alpha
            .log_text()
            .contains("missing CAP_NET_ADMIN: VIPs cannot be added"),
        "{}",
        logs()
    );
    // The client is served by beta, and alpha stays out: still FAULT a few retries later.
    let mut from_beta = false;
    let deadline = std::time::Instant::now() + S(5);
    while std::time::Instant::now() < deadline && !from_beta {
        if let Ok(line) = probe.recv_timeout(Duration::from_millis(200)) {
            from_beta = line.node.as_deref() == Some("beta");
        }
    }
    assert!(
        from_beta,
        "the client never reached the VIP on beta\n{}",
        logs()
    );
    std::thread::sleep(S(3));
    assert_eq!(state(&alpha).as_deref(), Some("FAULT"), "{}", logs());
    assert_eq!(state(&beta).as_deref(), Some("MASTER"), "{}", logs());
}
