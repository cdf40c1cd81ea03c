//! Split-brain safety under thousands of seeded fault schedules: two nodes, two links, a
//! witness. Invariants: never both nodes with the VIP configured, never both holding a valid
//! lease, terms rise with every new lease holder; after the faults heal, exactly one node
//! serves within lease + detection time.

use std::time::Duration;

use duet_cluster::quorum::TwoNodePolicy;
use duet_sim::cluster::{ClusterConfig, ClusterSim, Process};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// Starts every node, in an order and with gaps (up to 500 ms) drawn from the seed, then runs
/// 3 s.
fn started(seed: u64, cfg: ClusterConfig) -> ClusterSim {
    let nodes = cfg.nodes;
    let mut sim = ClusterSim::new(seed, cfg);
    for k in 0..nodes {
        sim.start((k + seed as usize) % nodes);
        let gap = sim.rng().range(0, 500);
        sim.run_for(MS(gap));
    }
    sim.run_for(Duration::from_secs(3));
    sim
}

/// What guards a pair against split brain: a witness, or none under each policy.
const GUARDS: [(bool, TwoNodePolicy); 3] = [
    (true, TwoNodePolicy::Safe),
    (false, TwoNodePolicy::Safe),
    (false, TwoNodePolicy::Available),
];

/// Two nodes, with a witness (2 s lease) or without one under `policy`.
fn pair(witness: bool, policy: TwoNodePolicy) -> ClusterConfig {
    ClusterConfig {
        lease: witness.then_some(Duration::from_secs(2)),
        policy,
        ..ClusterConfig::default()
    }
}

/// Freezes `node` for 100 ms to `max_ms` (drawn from the seed), then thaws it.
fn pause(sim: &mut ClusterSim, node: usize, max_ms: u64) -> String {
    sim.pause(node);
    let d = sim.rng().range(100, max_ms);
    sim.run_for(MS(d));
    sim.resume(node);
    format!("pause {node} for {d} ms")
}

/// Kills `node` and starts it again 100 ms to `max_ms` later.
fn crash_and_restart(sim: &mut ClusterSim, node: usize, max_ms: u64) -> String {
    sim.crash(node);
    let d = sim.rng().range(100, max_ms);
    sim.run_for(MS(d));
    sim.start(node);
    format!("crash and restart {node} after {d} ms")
}

/// One random fault, applied now; returns a description for failure messages.
fn fault(sim: &mut ClusterSim) -> String {
    // `range` is inclusive.
    let node = sim.rng().range(0, 1) as usize;
    let link = sim.rng().range(0, 1) as usize;
    match sim.rng().range(0, 10) {
        0 => {
            sim.isolate(&[0]);
            "full partition".into()
        }
        1 => {
            sim.set_cut_both(link, 0, 1, true);
            format!("cut link {link}")
        }
        2 => {
            for l in 0..2 {
                sim.set_cut(l, node, 1 - node, true);
            }
            format!("asymmetric: {node} unheard")
        }
        3 => {
            let w = sim.witness();
            sim.set_cut_both(0, node, w, true);
            format!("{node} cut from the witness")
        }
        4 => {
            sim.set_loss(link, 0.3);
            format!("30 % loss on link {link}")
        }
        5 => pause(sim, node, 10_000),
        6 => crash_and_restart(sim, node, 5_000),
        7 => {
            sim.crash_witness();
            let d = sim.rng().range(100, 5_000);
            sim.run_for(MS(d));
            sim.restart_witness();
            format!("witness down {d} ms")
        }
        8 if sim.rng().chance(0.5) => {
            sim.stop(node);
            format!("stop {node} (SIGTERM)")
        }
        8 => {
            sim.crash(node);
            format!("crash {node}")
        }
        _ => {
            sim.heal();
            "heal".into()
        }
    }
}

fn check_terms(sim: &ClusterSim, log: &[String]) {
    for w in sim.grants.windows(2) {
        if w[1].holder != w[0].holder {
            assert!(
                w[1].term > w[0].term,
                "a new holder got term {} after {}: {log:?}",
                w[1].term,
                w[0].term
            );
        } else {
            assert!(w[1].term >= w[0].term, "{log:?}");
        }
    }
}

fn chaos(seed: u64, cfg: ClusterConfig) -> (ClusterSim, Vec<String>) {
    let mut sim = started(seed, cfg);
    let mut log = Vec::new();
    for _ in 0..6 {
        let at = sim.now();
        let what = fault(&mut sim);
        log.push(format!("{at:?}: {what}"));
        let d = sim.rng().range(50, 3_000);
        sim.run_for(MS(d));
    }
    (sim, log)
}

#[test]
fn steady_state_has_one_master() {
    let mut sim = started(1, ClusterConfig::default());
    sim.run_for(Duration::from_secs(5));
    assert!(sim.has_vip(0) && !sim.has_vip(1));
}

/// Heals every fault and restarts what is down; `serve_within` later exactly one node must
/// serve.
fn heal_and_check(sim: &mut ClusterSim, serve_within: Duration, what: &str) {
    sim.heal();
    sim.restart_witness();
    for n in 0..2 {
        if sim.process(n) != Process::Up {
            sim.start(n);
        }
    }
    sim.run_for(serve_within);
    let serving = (0..2).filter(|&n| sim.has_vip(n)).count();
    assert_eq!(serving, 1, "{what}: {serving} nodes serve after healing");
}

#[test]
fn with_a_witness_leases_never_overlap_terms_rise_and_service_returns() {
    for seed in 0..1000 {
        let (mut sim, log) = chaos(seed, ClusterConfig::default());
        assert_eq!(sim.both_leases, Duration::ZERO, "seed {seed}: {log:?}");
        check_terms(&sim, &log);
        // Lease (2 s) + detection (250 ms) + VRRP's timers, with room to spare.
        heal_and_check(
            &mut sim,
            Duration::from_secs(6),
            &format!("seed {seed}: {log:?}"),
        );
    }
}

#[test]
fn without_a_witness_both_policies_recover_after_healing() {
    for policy in [TwoNodePolicy::Safe, TwoNodePolicy::Available] {
        for seed in 0..300 {
            let (mut sim, log) = chaos(seed, pair(false, policy));
            heal_and_check(
                &mut sim,
                Duration::from_secs(4),
                &format!("{policy:?} seed {seed}: {log:?}"),
            );
        }
    }
}

/// The invariant: with a witness, never two nodes with the VIP, whatever the schedule
/// (`DUET_SIM_SEEDS=10000` for a longer run).
#[test]
fn with_a_witness_no_schedule_ever_gives_two_vips() {
    let seeds: u64 = std::env::var("DUET_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    for seed in 0..seeds {
        let (sim, log) = chaos(seed, ClusterConfig::default());
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}: {log:?}");
    }
}

/// Startups, a takeover after a crash and the preempting return of the old master: votes
/// serialize them, so the VIP is never on both nodes, not even for a network delay.
#[test]
fn handovers_and_startups_never_overlap() {
    for seed in 0..200 {
        let mut sim = started(seed, ClusterConfig::default());
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}: start");
        sim.crash(0);
        sim.run_for(Duration::from_secs(5));
        assert!(sim.has_vip(1), "seed {seed}: beta never took over");
        sim.start(0);
        sim.run_for(Duration::from_secs(3));
        assert!(
            sim.has_vip(0) && !sim.has_vip(1),
            "seed {seed}: alpha never took back"
        );
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}");
    }
}

#[test]
fn a_master_keeps_serving_through_a_partition_and_its_healing() {
    for (witness, policy) in GUARDS {
        for seed in 0..100 {
            let mut sim = started(seed, pair(witness, policy));
            sim.reset_outage();
            sim.isolate(&[0]);
            let d = sim.rng().range(100, 6_000);
            sim.run_for(MS(d));
            sim.heal();
            sim.run_for(Duration::from_secs(3));
            assert!(sim.has_vip(0), "witness {witness} {policy:?} seed {seed}");
            assert_eq!(
                sim.longest_outage,
                Duration::ZERO,
                "witness {witness} {policy:?} seed {seed}: alpha stopped serving (cut for {d} ms)\n{}",
                sim.trace.join("\n")
            );
            assert!(sim.outage().is_none());
        }
    }
}

/// One random fault among `sim.nodes()` nodes: a partition into two sides, a node cut off on
/// one link, loss, a pause, a crash and restart, a crash, or healing.
fn fault_n(sim: &mut ClusterSim) -> String {
    let n = sim.nodes() as u64;
    let node = sim.rng().range(0, n - 1) as usize;
    match sim.rng().range(0, 7) {
        0 | 1 => {
            let side: Vec<usize> = (0..sim.nodes()).filter(|_| sim.rng().chance(0.5)).collect();
            sim.isolate(&side);
            format!("partition {side:?}")
        }
        2 => {
            let link = sim.rng().range(0, 1) as usize;
            for m in (0..sim.nodes()).filter(|&m| m != node) {
                sim.set_cut_both(link, node, m, true);
            }
            format!("{node} cut off on link {link}")
        }
        3 => {
            sim.set_loss(0, 0.3);
            "30 % loss on link 0".into()
        }
        4 => pause(sim, node, 6_000),
        5 => crash_and_restart(sim, node, 4_000),
        6 => {
            sim.crash(node);
            format!("crash {node}")
        }
        _ => {
            sim.heal();
            "heal".into()
        }
    }
}

fn started_n(seed: u64, nodes: usize) -> ClusterSim {
    started(
        seed,
        ClusterConfig {
            nodes,
            lease: None,
            ..ClusterConfig::default()
        },
    )
}

/// `nodes` nodes under a coordinator (etcd's role, played by the witness logic, 3 s lease).
fn coordinated(nodes: usize) -> ClusterConfig {
    ClusterConfig {
        nodes,
        lease_decides: true,
        lease: Some(Duration::from_secs(3)),
        ..ClusterConfig::default()
    }
}

/// Three and four nodes without a witness: a majority of votes, so never two VIPs, whatever
/// the schedule; after healing, exactly one node serves.
#[test]
fn three_and_four_nodes_never_give_two_vips() {
    for nodes in [3, 4] {
        for seed in 0..400 {
            let mut sim = started_n(seed, nodes);
            let mut log = Vec::new();
            for _ in 0..6 {
                let at = sim.now();
                let what = fault_n(&mut sim);
                log.push(format!("{at:?}: {what}"));
                let d = sim.rng().range(50, 3_000);
                sim.run_for(MS(d));
            }
            assert_eq!(
                sim.both_vip,
                Duration::ZERO,
                "{nodes} nodes, seed {seed}: {log:?}"
            );
            sim.heal();
            for n in 0..nodes {
                if sim.process(n) != Process::Up {
                    sim.start(n);
                }
            }
            sim.run_for(Duration::from_secs(5));
            assert_eq!(
                sim.vip_holders(),
                1,
                "{nodes} nodes, seed {seed}, after healing: {log:?}"
            );
        }
    }
}

/// With a coordinator that alone decides (etcd's role, played by the witness logic: one
/// lease at a time, terms that rise), three and four nodes never give two VIPs, whatever the
/// schedule, including the coordinator's crashes; after healing exactly one node serves.
#[test]
fn with_a_coordinator_n_nodes_never_give_two_vips() {
    for nodes in [2, 3, 4] {
        for seed in 0..300 {
            let mut sim = started(seed, coordinated(nodes));
            assert_eq!(sim.vip_holders(), 1, "{nodes} nodes, seed {seed}: start");
            let mut log = Vec::new();
            for _ in 0..6 {
                let at = sim.now();
                let what = if sim.rng().chance(0.2) {
                    sim.crash_witness();
                    let d = sim.rng().range(100, 5_000);
                    sim.run_for(MS(d));
                    sim.restart_witness();
                    format!("coordinator down {d} ms")
                } else {
                    fault_n(&mut sim)
                };
                log.push(format!("{at:?}: {what}"));
                let d = sim.rng().range(50, 3_000);
                sim.run_for(MS(d));
            }
            assert_eq!(
                sim.both_vip,
                Duration::ZERO,
                "{nodes} nodes, seed {seed}: {log:?}"
            );
            assert_eq!(
                sim.both_leases,
                Duration::ZERO,
                "{nodes} nodes, seed {seed}: {log:?}"
            );
            check_terms(&sim, &log);
            sim.heal();
            sim.restart_witness();
            for n in 0..nodes {
                if sim.process(n) != Process::Up {
                    sim.start(n);
                }
            }
            // Lease (3 s) + detection + VRRP timers, with room to spare.
            sim.run_for(Duration::from_secs(8));
            assert_eq!(
                sim.vip_holders(),
                1,
                "{nodes} nodes, seed {seed}, after healing: {log:?}"
            );
        }
    }
}

/// A node that cannot reach the coordinator does not make the master yield to it, however
/// high its priority: the master would give the lease up for nobody, take it back, and flap.
#[test]
fn with_a_coordinator_a_node_cut_from_it_does_not_make_the_master_flap() {
    for seed in 0..50 {
        let mut sim = started(seed, coordinated(3));
        let w = sim.witness();
        // Beta (priority 100) loses the coordinator; alpha (150) dies: gamma (80) must serve,
        // steadily, although beta outranks it and wants to.
        sim.set_cut_both(0, 1, w, true);
        sim.crash(0);
        sim.run_for(Duration::from_secs(8));
        assert!(sim.has_vip(2), "seed {seed}: gamma does not serve");
        sim.reset_outage();
        sim.run_for(Duration::from_secs(5));
        assert!(
            sim.longest_outage.is_zero() && sim.outage().is_none() && sim.has_vip(2),
            "seed {seed}: gamma flapped ({:?} without a master)",
            sim.longest_outage
        );
    }
}

/// The side with a majority serves within detection + the promise time; the minority side
/// never does.
#[test]
fn with_three_nodes_the_majority_side_takes_over() {
    for seed in 0..100 {
        let mut sim = started_n(seed, 3);
        assert!(sim.has_vip(0), "seed {seed}: alpha (priority 150) serves");
        sim.reset_outage();
        // Alpha alone on one side: it must step down (no majority); beta (the next priority)
        // takes over once the promise it gave alpha ends.
        sim.isolate(&[0]);
        sim.run_for(Duration::from_secs(5));
        assert!(!sim.has_vip(0), "seed {seed}: the minority still serves");
        assert!(sim.has_vip(1), "seed {seed}: the majority does not serve");
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}");
        // Promises last 2 s (twice the 1 s VIP lifetime); detection 250 ms; room to spare.
        assert!(
            sim.longest_outage < Duration::from_millis(3_500),
            "seed {seed}: {:?} without a master",
            sim.longest_outage
        );
        // Healed: alpha preempts back, one master throughout.
        sim.heal();
        sim.run_for(Duration::from_secs(6));
        assert!(sim.has_vip(0) && sim.vip_holders() == 1, "seed {seed}");
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}");
    }
}

/// During a full partition the master lives on the witness lease alone; a lost renewal (10 %
/// loss towards the witness) must be retried in time, not cost an outage.
#[test]
fn a_partitioned_master_rides_out_lost_lease_renewals() {
    for seed in 0..50 {
        let mut sim = started(seed, ClusterConfig::default());
        sim.isolate(&[0]);
        sim.set_loss(0, 0.1);
        sim.run_for(Duration::from_secs(1));
        sim.reset_outage();
        sim.run_for(Duration::from_secs(10));
        assert!(
            sim.has_vip(0) && sim.longest_outage.is_zero() && sim.outage().is_none(),
            "seed {seed}: alpha stopped serving ({:?})",
            sim.longest_outage
        );
        assert_eq!(sim.both_vip, Duration::ZERO, "seed {seed}");
    }
}

/// A master whose business link dies goes to FAULT and says so over the heartbeat cable: the
/// backup takes over after its skew time (61 ms at priority 100 and 100 ms adverts), not after
/// the whole master-down interval (360 ms).
#[test]
fn a_master_whose_business_link_dies_hands_over_within_the_skew_time() {
    for witness in [true, false] {
        for seed in 0..50 {
            let mut sim = started(seed, pair(witness, TwoNodePolicy::Safe));
            // The cable goes dead; the daemon notices a moment later (it polls links every
            // 100 ms), by which time nothing sent before is still in flight.
            let w = sim.witness();
            for m in [1, w] {
                sim.set_cut_both(0, 0, m, true);
            }
            let notice = sim.rng().range(5, 100);
            sim.run_for(MS(notice));
            sim.reset_outage();
            sim.set_business_link(0, false);
            sim.run_for(Duration::from_secs(1));
            assert!(
                sim.has_vip(1) && !sim.has_vip(0),
                "witness {witness} seed {seed}"
            );
            assert!(
                sim.longest_outage < MS(150),
                "witness {witness} seed {seed}: {:?} without a master",
                sim.longest_outage
            );
            assert_eq!(sim.both_vip, Duration::ZERO);
            // Back: alpha preempts through a handover.
            sim.set_business_link(0, true);
            sim.run_for(Duration::from_secs(3));
            assert!(
                sim.has_vip(0) && !sim.has_vip(1),
                "witness {witness} seed {seed}"
            );
            assert_eq!(sim.both_vip, Duration::ZERO);
        }
    }
}

/// A clean stop says goodbye: the backup takes over within VRRP's skew time, with or without a
/// witness, under either policy, and never with two VIPs.
#[test]
fn a_clean_stop_hands_over_at_once() {
    for (witness, policy) in GUARDS {
        for seed in 0..50 {
            let mut sim = started(seed, pair(witness, policy));
            sim.reset_outage();
            sim.stop(0);
            sim.run_for(Duration::from_secs(1));
            assert!(sim.has_vip(1), "witness {witness} {policy:?} seed {seed}");
            assert!(
                sim.longest_outage < MS(150),
                "witness {witness} {policy:?} seed {seed}: {:?} without a master",
                sim.longest_outage
            );
            assert_eq!(sim.both_vip, Duration::ZERO);
        }
    }
}

/// A seed replays exactly: the same schedule, trace and outcome every time, which is what makes
/// a failing seed worth reporting. `SEED=n cargo test -p duet-sim --test cluster
/// a_seed_replays_exactly -- --nocapture` prints that seed's fault log and trace.
#[test]
fn a_seed_replays_exactly() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (first, log) = chaos(seed, ClusterConfig::default());
    let (again, log_again) = chaos(seed, ClusterConfig::default());
    assert_eq!(log, log_again);
    assert_eq!(first.trace, again.trace);
    assert_eq!(first.both_vip, again.both_vip);
    assert!(!first.trace.is_empty());
    if std::env::var_os("SEED").is_some() {
        println!("{log:?}");
        for t in &first.trace {
            println!("{t}");
        }
        println!("both_vip {:?}", first.both_vip);
    }
}

/// A node that crashes and restarts forgets the votes it gave. The master it voted for may have
/// died a moment earlier, its VIP still alive for its kernel lifetime: the restarted node must
/// not take over before any promise it may have given could have run out.
#[test]
fn a_restarted_voter_waits_out_the_promises_it_may_have_given() {
    for witness in [true, false] {
        for seed in 0..50 {
            let mut sim = started(seed, pair(witness, TwoNodePolicy::Safe));
            assert!(sim.has_vip(0), "seed {seed}");
            sim.crash(0);
            sim.crash(1);
            sim.run_for(MS(10));
            sim.start(1);
            sim.run_for(Duration::from_secs(5));
            assert_eq!(
                sim.both_vip,
                Duration::ZERO,
                "witness {witness} seed {seed}\n{}",
                sim.trace.join("\n")
            );
        }
    }
}
