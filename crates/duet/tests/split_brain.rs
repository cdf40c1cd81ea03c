//! Split-brain safety with real processes in namespaces: heartbeats over the business LAN and a
//! direct heartbeat cable, a witness on a third host, partitions made with bridge port
//! isolation and link downs. Needs root; skips otherwise.

mod common;

use std::time::{Duration, Instant};

use common::{Node, Pair, VIP, cluster};
use duet::lab::wait_for;

const S: fn(u64) -> Duration = Duration::from_secs;

/// Samples for `how_long` whether both nodes hold the VIP at once; returns the longest such
/// stretch seen.
fn both_hold(p: &Pair, how_long: Duration) -> Duration {
    let vip = VIP.parse().unwrap();
    let start = Instant::now();
    let (mut worst, mut since) = (Duration::ZERO, None::<Instant>);
    while start.elapsed() < how_long {
        let both = p.lab.has_address(&p.alpha.host, vip) && p.lab.has_address(&p.beta.host, vip);
        match (both, since) {
            (true, None) => since = Some(Instant::now()),
            (false, Some(t)) => {
                worst = worst.max(t.elapsed());
                since = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    worst.max(since.map_or(Duration::ZERO, |t| t.elapsed()))
}

fn veto(p: &Pair, n: Node) -> Option<String> {
    p.status(n)?.vrrp.first()?.veto.clone()
}

#[test]
fn a_silent_heartbeat_link_is_a_warning_and_lost_adverts_do_not_split_the_brain() {
    let Some(p) = cluster("hb", "", false) else {
        return;
    };
    // Both links' heartbeats are timed (echoed back): a round trip on veths within one host is
    // well under a millisecond; 20 ms would mean the echo's hold time is not taken off.
    let timed = wait_for(S(3), || {
        p.status(Node::Beta)
            .and_then(|s| s.cluster)
            .is_some_and(|c| c.peers[0].rtt_us.iter().all(Option::is_some))
    });
    let rtts = p
        .status(Node::Beta)
        .and_then(|s| s.cluster)
        .map(|c| c.peers[0].rtt_us.clone());
    assert!(
        timed.is_some(),
        "round trips never timed: {rtts:?}\n{}",
        p.logs()
    );
    assert!(
        rtts.iter()
            .flatten()
            .flatten()
            .all(|&us| us > 0 && us < 20_000),
        "{rtts:?}"
    );
    // The dedicated heartbeat cable goes down: a warning, no failover.
    p.lab.set_direct_link(&p.alpha.host, false).unwrap();
    let seen = wait_for(S(5), || {
        p.status(Node::Beta)
            .and_then(|s| s.cluster)
            .is_some_and(|c| {
                c.peers[0].links == [true, false]
                    && c.peers[0].alive
                    && c.peers[0].rtt_us[0].is_some()
                    && c.peers[0].rtt_us[1].is_none()
            })
    });
    assert!(
        seen.is_some(),
        "beta never saw link 1 go silent\n{}",
        p.logs()
    );
    assert_eq!(both_hold(&p, S(1)), Duration::ZERO);
    p.assert_state(Node::Alpha, "MASTER");
    p.assert_state(Node::Beta, "BACKUP");
    assert!(
        p.beta.log_text().contains(
            "heartbeat link 1 to alpha is silent (another link still carries heartbeats)"
        ),
        "{}",
        p.logs()
    );
    p.lab.set_direct_link(&p.alpha.host, true).unwrap();
    let back = wait_for(S(5), || {
        p.status(Node::Beta)
            .and_then(|s| s.cluster)
            .is_some_and(|c| c.peers[0].links == [true, true])
    });
    assert!(back.is_some(), "{}", p.logs());

    // Now adverts between the nodes are lost (their switch ports are isolated from each
    // other), while the heartbeat cable still works: beta hears alpha serving and stays BACKUP.
    // keepalived would make both masters here.
    p.lab.split_lan(&p.alpha.host, &p.beta.host, true).unwrap();
    assert_eq!(both_hold(&p, S(3)), Duration::ZERO, "{}", p.logs());
    p.assert_state(Node::Beta, "BACKUP");
    // beta voted for alpha (which serves) and keeps its promise.
    let why = veto(&p, Node::Beta).unwrap_or_default();
    assert!(
        why.contains("promised its vote to alpha"),
        "{why}\n{}",
        p.logs()
    );
    assert!(
        p.wait_answer("alpha", S(2)).is_some(),
        "clients still reach alpha"
    );
}

#[test]
fn with_a_witness_a_full_partition_leaves_one_master_and_a_dead_master_is_replaced() {
    let witness = duet::lab::witness_config(20);
    let Some(mut p) = cluster("wi", &witness, true) else {
        return;
    };
    // alpha, the master, holds the lease.
    let leased = wait_for(S(5), || {
        p.status(Node::Alpha)
            .and_then(|s| s.cluster?.lease)
            .is_some_and(|l| l.valid)
    });
    let wlog = std::fs::read_to_string(p.lab.dir().join("witness.log")).unwrap_or_default();
    assert!(
        leased.is_some(),
        "alpha never got the lease\n{}\n--- witness:\n{wlog}",
        p.logs()
    );

    // Full partition between the nodes; both still reach the witness and the client.
    p.lab.partition(&p.alpha.host, &p.beta.host, true).unwrap();
    assert_eq!(both_hold(&p, S(4)), Duration::ZERO, "{}", p.logs());
    p.assert_state(Node::Alpha, "MASTER");
    p.assert_state(Node::Beta, "BACKUP");
    let why = veto(&p, Node::Beta).unwrap_or_default();
    assert!(why.contains("witness lease"), "{why}\n{}", p.logs());

    // Heal, then kill every alpha process: beta takes over once alpha's lease has run out.
    p.lab.partition(&p.alpha.host, &p.beta.host, false).unwrap();
    let healed = wait_for(S(5), || {
        p.status(Node::Beta)
            .and_then(|s| s.cluster)
            .is_some_and(|c| c.peers[0].links == [true, true])
    });
    assert!(healed.is_some(), "{}", p.logs());
    let why = veto(&p, Node::Beta).unwrap_or_default();
    assert!(why.contains("promised its vote to alpha"), "{why}");
    p.signal(Node::Alpha, duet_sys::process::SIGKILL, true);
    p.alpha.pid = None;
    let took = p.wait_answer("beta", S(10));
    assert!(took.is_some(), "beta never took over\n{}", p.logs());
    p.assert_state(Node::Beta, "MASTER");
}

#[test]
fn a_dead_witness_does_not_disturb_a_healthy_pair() {
    let witness = duet::lab::witness_config(20);
    // No witness process at all: the pair hears itself, so it serves normally.
    let Some(p) = cluster("wd", &witness, false) else {
        return;
    };
    assert_eq!(both_hold(&p, S(3)), Duration::ZERO);
    p.assert_state(Node::Alpha, "MASTER");
    assert!(p.wait_answer("alpha", S(2)).is_some());
}

#[test]
fn without_a_witness_the_two_node_policy_decides_a_full_partition() {
    // safe (the default): beta last saw alpha serving and does not take over.
    let Some(p) = cluster("sf", "", false) else {
        return;
    };
    p.lab.partition(&p.alpha.host, &p.beta.host, true).unwrap();
    assert_eq!(both_hold(&p, S(3)), Duration::ZERO, "{}", p.logs());
    p.assert_state(Node::Beta, "BACKUP");
    drop(p);

    // available: keepalived's behaviour, both serve, and it is said loudly.
    let Some(p) = cluster("av", "two_node_policy = \"available\"", false) else {
        return;
    };
    p.lab.partition(&p.alpha.host, &p.beta.host, true).unwrap();
    assert!(p.wait_state(Node::Beta, "MASTER", S(5)), "{}", p.logs());
    assert!(
        p.beta.log_text().contains("without confirmation"),
        "{}",
        p.logs()
    );
}

#[test]
fn a_cleanly_stopped_master_hands_over() {
    // Its last heartbeat says it no longer serves nor asks for votes, and it gives the witness
    // lease back: beta need not wait for its promise or the lease to run out. Without that
    // goodbye, a backup under "safe" would never take over from a peer last seen serving.
    for (tag, witness) in [("cs", false), ("cw", true)] {
        let extra = if witness {
            duet::lab::witness_config(20)
        } else {
            String::new()
        };
        let Some(p) = cluster(tag, &extra, witness) else {
            return;
        };
        let stopped = Instant::now();
        p.signal(Node::Alpha, duet_sys::process::SIGTERM, false);
        let took = p.wait_answer("beta", S(5));
        assert!(
            took.is_some(),
            "witness {witness}: beta never took over\n{}",
            p.logs()
        );
        eprintln!(
            "witness {witness}: beta answered {:?} after SIGTERM",
            stopped.elapsed()
        );
    }
}

#[test]
fn maintenance_set_on_one_node_freezes_failover_on_both_until_it_is_lifted() {
    let Some(p) = cluster(
        "mtn",
        "\n[witness]\naddress = \"10.99.0.20:7947\"\nlease = \"2s\"\n",
        true,
    ) else {
        return;
    };
    assert!(p.wait_answer("alpha", S(10)).is_some(), "{}", p.logs());
    let token = p.lab.dir().join("operator.token");
    let maintenance = |n: Node, state: &str| {
        let node = match n {
            Node::Alpha => &p.alpha,
            Node::Beta => &p.beta,
        };
        let out = p
            .lab
            .command(&node.host, &p.exe)
            .args([
                "maintenance",
                state,
                "--admin",
                "127.0.0.1:9900",
                "--token-file",
            ])
            .arg(&token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    // Asked on beta, the backup; alpha hears it over the heartbeat.
    maintenance(Node::Beta, "on");
    let shown = wait_for(S(5), || {
        p.status(Node::Alpha)
            .is_some_and(|s| s.maintenance.is_some_and(|m| m.by == "operator"))
    });
    assert!(
        shown.is_some(),
        "alpha does not show maintenance\n{}",
        p.logs()
    );
    // The master dies: nobody takes the VIP over while maintenance is on.
    p.signal(Node::Alpha, duet_sys::process::SIGKILL, true);
    std::thread::sleep(S(4));
    assert_eq!(
        p.beta.state(&p.lab, &p.exe).as_deref(),
        Some("BACKUP"),
        "{}",
        p.logs()
    );
    let events = p.beta.events(&p.lab, &p.exe);
    assert!(
        events.iter().any(|e| matches!(&e.kind,
            duet_admin::EventKind::Maintenance { enabled: true, by } if by == "operator")),
        "{events:#?}"
    );
    // Lifted: beta takes over.
    maintenance(Node::Beta, "off");
    assert!(p.wait_answer("beta", S(10)).is_some(), "{}", p.logs());
}
