//! Config drift between two real nodes in namespaces: beta's balancer has one backend more
//! than alpha's. Both see it (status, metrics, an event), `duet diff-config` shows the line
//! (its text came over the heartbeats), and a reload of beta with alpha's settings ends it.
//! Needs root.

mod common;

use std::time::Duration;

use common::{Node, Pair, pair_with};
use duet::lab::wait_for;

const S: fn(u64) -> Duration = Duration::from_secs;

fn balancer(backends: &str) -> String {
    format!(
        "\n[[balancer]]\nname = \"web\"\nbind = \"{}:80\"\nmode = \"http\"\nbackends = [{backends}]\n",
        common::VIP
    )
}

const ONE: &str = r#"{ address = "10.99.0.2:8080" }"#;
const TWO: &str = r#"{ address = "10.99.0.2:8080" }, { address = "10.99.0.3:8080" }"#;

fn drift_pair() -> Option<Pair> {
    pair_with("dr", &format!("{}:8080", common::VIP), |lab, a, b| {
        lab.add_direct_link(a, b).unwrap();
        let key = lab.cluster_key().unwrap();
        let (ac, bc) = common::configs("100ms", "");
        (
            ac + &duet::lab::heartbeat_config(2, 3, &key, "") + &balancer(ONE),
            bc + &duet::lab::heartbeat_config(3, 2, &key, "") + &balancer(TWO),
        )
    })
}

fn diff(p: &Pair, n: Node) -> std::process::Output {
    p.lab
        .command(&p.node(n).host, &p.exe)
        .args(["diff-config", "--admin", "127.0.0.1:9900"])
        .output()
        .unwrap()
}

fn differs(p: &Pair, n: Node) -> Option<bool> {
    Some(p.status(n)?.cluster?.peers.first()?.config_differs)
}

#[test]
fn a_peer_with_another_cluster_config_is_shown_diffed_and_clears_after_a_reload() {
    let Some(p) = drift_pair() else {
        return;
    };
    // Both see the drift.
    let seen = wait_for(S(10), || {
        differs(&p, Node::Alpha) == Some(true) && differs(&p, Node::Beta) == Some(true)
    });
    assert!(seen.is_some(), "{:?}\n{}", p.status(Node::Alpha), p.logs());
    let out = p
        .lab
        .command(&p.alpha.host, &p.exe)
        .args(["status", "--admin", "127.0.0.1:9900"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "CONFIG DRIFT: beta's cluster-wide config differs from this node's (duet diff-config --peer beta)"
        ),
        "{text}"
    );
    let events = p.alpha.events(&p.lab, &p.exe);
    assert!(
        events.iter().any(|e| matches!(&e.kind, duet_admin::EventKind::Config { peer, same: false } if peer == "beta")),
        "{events:#?}"
    );
    let metrics = p
        .lab
        .command(&p.alpha.host, "python3")
        .args([
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9900/metrics').read().decode())",
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("duet_cluster_config_drift{peer=\"beta\"} 1"),
        "{metrics}"
    );

    // The text comes in pieces over the heartbeats: diff-config shows beta's extra backend.
    let mut last = None;
    let shown = wait_for(S(10), || {
        let out = diff(&p, Node::Alpha);
        let ok = out.status.code() == Some(1);
        last = Some(out);
        ok
    });
    let out = last.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(shown.is_some(), "{out:?}");
    assert!(text.starts_with("--- alpha (this node, "), "{text}");
    assert!(text.contains("\n+++ beta ("), "{text}");
    assert!(
        text.contains("+ ") && text.contains("10.99.0.3:8080"),
        "{text}"
    );
    assert!(
        !text.contains("priority") && !text.contains("7946"),
        "per-node settings are left out:\n{text}"
    );

    // beta reloads with alpha's balancer: the drift ends on both, with an event.
    let cfg = std::fs::read_to_string(&p.beta.config).unwrap();
    std::fs::write(&p.beta.config, cfg.replace(TWO, ONE)).unwrap();
    p.signal(Node::Beta, duet_sys::process::SIGHUP, false);
    let cleared = wait_for(S(10), || {
        differs(&p, Node::Alpha) == Some(false) && differs(&p, Node::Beta) == Some(false)
    });
    assert!(
        cleared.is_some(),
        "{:?}\n{}",
        p.status(Node::Alpha),
        p.logs()
    );
    let out = diff(&p, Node::Alpha);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("alpha and beta agree on the cluster-wide config")
    );
    let events = p.alpha.events(&p.lab, &p.exe);
    assert!(
        events.iter().any(|e| matches!(&e.kind, duet_admin::EventKind::Config { peer, same: true } if peer == "beta")),
        "{events:#?}"
    );
}
