//! The database failover decisions under thousands of seeded fault schedules: never two nodes
//! holding the write VIP, never a node made writable without every acknowledged commit, and a
//! serving primary again after the faults heal.

use std::time::Duration;

use duet_dbfail::Mode;
use duet_sim::database::{DbSim, Process};

/// Bootstrapped pair, then `faults` random faults, then healing.
fn run(seed: u64, mode: Mode, faults: usize) -> (DbSim, Vec<String>) {
    run_with(DbSim::new(seed, mode), faults)
}

fn run_with(mut sim: DbSim, faults: usize) -> (DbSim, Vec<String>) {
    sim.run_for(Duration::from_secs(8));
    let mut log = Vec::new();
    for _ in 0..faults {
        let n = sim.rng().range(0, 1) as usize;
        let hold = Duration::from_millis(sim.rng().range(200, 4000));
        let what = sim.rng().range(0, 6);
        match what {
            0 => {
                sim.crash(n);
                sim.run_for(hold);
                sim.restart(n);
            }
            1 => {
                sim.kill_postmaster(n);
                sim.run_for(hold);
            }
            2 => {
                sim.pause(n);
                sim.run_for(hold);
                sim.resume(n);
            }
            3 => {
                sim.set_cut(n, 1 - n, true);
                sim.set_cut(n, 2, true);
                sim.run_for(hold);
                sim.set_cut(n, 1 - n, false);
                sim.set_cut(n, 2, false);
            }
            4 => {
                sim.set_cut(0, 1, true);
                sim.run_for(hold);
                sim.set_cut(0, 1, false);
            }
            5 => {
                sim.switchover(n);
                sim.run_for(hold);
            }
            _ => {
                sim.set_cut(n, 2, true);
                sim.run_for(hold);
                sim.set_cut(n, 2, false);
            }
        }
        log.push(format!("fault {what} on {n} for {hold:?}"));
        let settle = Duration::from_millis(sim.rng().range(0, 3000));
        sim.run_for(settle);
    }
    sim.heal();
    sim.run_for(Duration::from_secs(20));
    (sim, log)
}

fn check(seed: u64, sim: &DbSim, log: &[String]) {
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:?}\nfaults: {log:?}\ntrace (last 40): {:#?}",
        sim.violations,
        &sim.trace[sim.trace.len().saturating_sub(40)..]
    );
}

#[test]
fn a_pair_bootstraps_and_serves() {
    for seed in 0..50 {
        let mut sim = DbSim::new(seed, Mode::On);
        sim.run_for(Duration::from_secs(10));
        assert!(sim.serving().is_some(), "seed {seed}: {:#?}", sim.trace);
        assert!(
            !sim.acked.is_empty(),
            "seed {seed}: writes are acknowledged"
        );
        assert_eq!(
            sim.pg(0).system,
            sim.pg(1).system,
            "seed {seed}: one cluster"
        );
    }
}

#[test]
fn synchronous_faults_never_lose_an_acknowledged_commit_or_give_two_primaries() {
    for seed in std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(0..1000, |s: u64| s..s + 1)
    {
        let (sim, log) = run(seed, Mode::On, 4);
        check(seed, &sim, &log);
        assert!(
            sim.serving().is_some(),
            "seed {seed}: nobody serves 20 s after healing\nfaults: {log:?}\n{:#?}",
            &sim.trace[sim.trace.len().saturating_sub(60)..]
        );
        let p = sim.serving().unwrap();
        let have: std::collections::BTreeSet<u64> = sim.pg(p).wal.iter().map(|e| e.1).collect();
        assert!(
            sim.acked.iter().all(|id| have.contains(id)),
            "seed {seed}: the primary lacks acknowledged commits"
        );
        assert!((0..2).all(|n| sim.process(n) == Process::Up));
    }
}

#[test]
fn strict_faults_never_lose_an_acknowledged_commit() {
    for seed in 0..300 {
        let (sim, log) = run(10_000 + seed, Mode::Strict, 4);
        check(seed, &sim, &log);
    }
}

#[test]
fn asynchronous_faults_never_give_two_primaries() {
    for seed in 0..300 {
        let (sim, log) = run(20_000 + seed, Mode::Off, 4);
        check(seed, &sim, &log);
    }
}

#[test]
fn with_a_lease_that_alone_decides_etcd_style_faults_lose_nothing() {
    for seed in 0..300 {
        let (sim, log) = run_with(DbSim::with_authority(30_000 + seed, Mode::On, true), 4);
        check(seed, &sim, &log);
        assert!(
            sim.serving().is_some(),
            "seed {seed}: nobody serves 20 s after healing\nfaults: {log:?}\n{:#?}",
            &sim.trace[sim.trace.len().saturating_sub(60)..]
        );
    }
}

#[test]
fn a_killed_postmaster_is_restarted_in_place_never_failed_over() {
    for seed in 0..200 {
        let mut sim = DbSim::new(40_000 + seed, Mode::On);
        sim.run_for(Duration::from_secs(8));
        let Some(p) = sim.serving() else {
            panic!("seed {seed}: no primary after bootstrap: {:#?}", sim.trace);
        };
        let timeline = sim.pg(p).timeline;
        sim.kill_postmaster(p);
        sim.run_for(Duration::from_secs(5));
        let trace = &sim.trace[sim.trace.len().saturating_sub(30)..];
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:?}",
            sim.violations
        );
        assert_eq!(sim.serving(), Some(p), "seed {seed}: {trace:#?}");
        assert_eq!(sim.pg(p).timeline, timeline, "seed {seed}: {trace:#?}");
    }
}
