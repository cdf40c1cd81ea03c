//! PostgreSQL failover in network namespaces, with real servers: two nodes bootstrap from
//! empty data directories, a witness keeps the lease and the record, a writer on a client
//! host records every acknowledged commit through the write VIP. After each fault, every
//! acknowledged row must be on the new primary, and there are never two writable primaries.
//! The lab itself is `duet::labdb` (shared with `cargo xtask bench db`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use duet::lab;
use duet::labdb::{Authority, DbPair, drain, first_ack_after, unix_now, wait_acks};

/// A started pair (synchronous when `sync` is `on`/`strict`) whose writer already has 50
/// acknowledged commits: the pair, the primary's index, the writer and its lines so far.
fn writing(
    tag: &str,
    sync: &str,
) -> Option<(
    DbPair,
    usize,
    std::sync::mpsc::Receiver<duet::labpg::WriteLine>,
    Vec<duet::labpg::WriteLine>,
)> {
    let mut c = Cluster::start(tag, sync)?;
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
    Some((c, primary, rx, lines))
}

/// The pair, or `None` (and a recorded skip) without root or PostgreSQL.
struct Cluster;

impl Cluster {
    fn start(tag: &str, sync: &str) -> Option<DbPair> {
        Cluster::start_with(tag, sync, Authority::Witness)
    }

    fn start_with(tag: &str, sync: &str, authority: Authority) -> Option<DbPair> {
        if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
            lab::skip("PostgreSQL 15 is not installed", "DUET_REQUIRE_TOOLS");
            return None;
        }
        if authority == Authority::Etcd && !lab::have_program("etcd") {
            lab::skip(
                "etcd is not installed (apt-get install etcd-server)",
                "DUET_REQUIRE_TOOLS",
            );
            return None;
        }
        let lab = common::lab(tag)?;
        Some(DbPair::start_with(lab, common::exe(), sync, authority))
    }
}

#[test]
fn bootstrap_then_a_killed_primary_node_loses_no_acknowledged_write_and_rejoins() {
    let Some(mut c) = Cluster::start("dbk", "on") else {
        return;
    };
    // Bootstrap from empty directories: one initdb, one clone, synchronous, recorded.
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let logs = c.logs();
    assert!(logs.contains("bootstrapping a new cluster"), "{logs}");
    assert!(logs.contains("cloned from"), "{logs}");

    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 100, Duration::from_secs(30)),
        "the writer got no acknowledgements through the write VIP: {:?}\n{}",
        lines.last(),
        c.logs()
    );

    // Kill -9 every process on the primary's node.
    let killed_at = unix_now();
    c.kill_node(primary);
    assert!(
        wait_acks(&rx, &mut lines, killed_at, 100, Duration::from_secs(30)),
        "no writes after the failover: {:?}\n{}",
        lines.last(),
        c.logs()
    );
    let gap = first_ack_after(&lines, killed_at).unwrap();
    eprintln!("node kill -9 -> first acknowledged write: {gap:.2} s");
    assert!(gap < 10.0, "failover took {gap:.1} s");
    let db = c.db_now(replica);
    assert_eq!(db.role, "primary");
    assert_eq!(db.timeline, 2, "promoted onto a new timeline");

    // Every acknowledged row is on the new primary.
    drain(&rx, &mut lines);
    let acked: BTreeSet<u64> = lines.iter().filter_map(|l| l.id).collect();
    let rows = c.rows(replica);
    let lost: Vec<&u64> = acked.difference(&rows).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows missing on the new primary: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    eprintln!(
        "audit: {} acknowledged rows, all on the new primary",
        acked.len()
    );

    // The old primary comes back and rejoins as a replica by itself (pg_rewind).
    let back = Instant::now();
    c.restart(primary);
    assert!(
        c.wait_streaming(primary, 2, Duration::from_secs(60)),
        "the old primary did not rejoin\n{}",
        c.logs()
    );
    eprintln!(
        "old primary rejoined in {:.2} s",
        back.elapsed().as_secs_f64()
    );
    assert!(
        c.nodes[primary].log_text().contains("rewinding onto"),
        "{}",
        c.logs()
    );
    let old = c.db_now(primary);
    assert!(!old.writable);
}

#[test]
fn a_killed_postmaster_is_restarted_in_place_without_failover() {
    let Some((c, primary, rx, mut lines)) = writing("dbp", "on") else {
        return;
    };
    let t = unix_now();
    let _ =
        duet_sys::process::send_signal(c.postmaster(primary), duet_sys::process::SIGKILL, false);
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "no writes after the postmaster's crash: {:?}\n{}",
        lines.last(),
        c.logs()
    );
    let gap = first_ack_after(&lines, t).unwrap();
    eprintln!("postmaster kill -9 -> first acknowledged write: {gap:.2} s");
    if gap > 1.0 {
        // Slower than usual (0.2 s): say where the time went.
        eprintln!("{}", c.logs());
    }
    assert!(gap < 5.0, "writes were back only after {gap:.1} s");
    // No failover: the same node is primary on the same timeline, and the replica was never
    // promoted. (One look at a loaded node can find the server busy, "starting": ask again.)
    let mut db = None;
    let same = lab::wait_for(Duration::from_secs(10), || {
        db = c.db(primary);
        db.as_ref()
            .is_some_and(|d| d.role == "primary" && d.timeline == 1)
    });
    assert!(same.is_some(), "{db:#?}\n{}", c.logs());
    let replica = c.db_now(1 - primary);
    assert_eq!(replica.role, "replica", "{replica:#?}\n{}", c.logs());
    assert!(
        !c.nodes[1 - primary]
            .log_text()
            .contains("promoting this replica"),
        "{}",
        c.logs()
    );
    assert!(
        c.nodes[primary]
            .log_text()
            .contains("restarting the primary in place")
    );
    drain(&rx, &mut lines);
    c.audit(&lines, primary);
}

#[test]
fn a_dead_replica_relaxes_sync_after_the_record_and_is_not_promotable_afterwards() {
    let Some((mut c, primary, rx, mut lines)) = writing("dbr", "on") else {
        return;
    };
    let replica = 1 - primary;
    let t = unix_now();
    c.kill_node(replica);
    assert!(
        wait_acks(&rx, &mut lines, t, 100, Duration::from_secs(30)),
        "writes did not go on without the replica: {:?}\n{}",
        lines.last(),
        c.logs()
    );
    eprintln!(
        "replica kill -9 -> writes go on after {:.2} s",
        first_ack_after(&lines, t + 0.05).unwrap_or(f64::NAN)
    );
    let db = c.db_now(primary);
    assert!(
        db.record
            .as_deref()
            .is_some_and(|r| r.contains("standby none")),
        "the record says no synchronous standby before commits stop waiting: {db:#?}"
    );
    let log = c.nodes[primary].log_text();
    let recorded = log
        .find("synchronous standby none (term")
        .expect("recorded");
    let relaxed = log.rfind("commits do not wait").expect("relaxed");
    assert!(recorded < relaxed, "recorded first, relaxed after:\n{log}");
    drain(&rx, &mut lines);
    c.audit(&lines, primary);

    // The primary dies as well; the old replica comes back alone: it may lack commits.
    c.kill_node(primary);
    c.restart(replica);
    let refused = lab::wait_for(Duration::from_secs(20), || {
        c.db(replica).is_some_and(|d| {
            d.refusal
                .as_deref()
                .is_some_and(|r| r.contains("names no node as the synchronous standby"))
        })
    });
    assert!(refused.is_some(), "{:#?}\n{}", c.db(replica), c.logs());
    std::thread::sleep(Duration::from_secs(3));
    let db = c.db_now(replica);
    assert_ne!(
        db.role, "primary",
        "a replica that may lack commits was promoted"
    );
    assert!(!db.writable);
}

#[test]
fn strict_blocks_writes_while_the_replica_is_away() {
    let Some((mut c, primary, rx, mut lines)) = writing("dbs", "strict") else {
        return;
    };
    let replica = 1 - primary;
    c.kill_node(replica);
    let t = unix_now();
    std::thread::sleep(Duration::from_secs(5));
    drain(&rx, &mut lines);
    let during = lines
        .iter()
        .filter(|l| l.id.is_some() && l.t > t + 0.2)
        .count();
    assert_eq!(during, 0, "commits were acknowledged without the standby");
    let back = unix_now();
    c.restart(replica);
    assert!(
        wait_acks(&rx, &mut lines, back, 50, Duration::from_secs(60)),
        "writes did not resume with the standby back\n{}",
        c.logs()
    );
    drain(&rx, &mut lines);
    c.audit(&lines, primary);
    c.audit(&lines, replica);
}

#[test]
fn a_primary_cut_from_the_network_is_fenced_before_the_replica_takes_over() {
    let Some((c, primary, rx, mut lines)) = writing("dbc", "on") else {
        return;
    };
    let replica = 1 - primary;
    let t = unix_now();
    let host = c.nodes[primary].host.clone();
    c.lab.set_link(&host, false).unwrap();
    c.lab.set_direct_link(&host, false).unwrap();
    c.never_two_writable(Duration::from_secs(6));
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "no writes after the cut\n{}",
        c.logs()
    );
    eprintln!(
        "primary cut off -> first acknowledged write: {:.2} s",
        first_ack_after(&lines, t).unwrap()
    );
    assert!(
        c.nodes[primary].log_text().contains("fencing the primary"),
        "{}",
        c.logs()
    );
    // Back on the network: it rejoins as a replica of the new primary.
    c.lab.set_link(&host, true).unwrap();
    c.lab.set_direct_link(&host, true).unwrap();
    assert!(
        c.wait_streaming(primary, 2, Duration::from_secs(60)),
        "{}",
        c.logs()
    );
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
}

#[test]
fn a_frozen_primary_node_never_writes_again_as_primary() {
    let Some((c, primary, rx, mut lines)) = writing("dbz", "on") else {
        return;
    };
    let replica = 1 - primary;
    let t = unix_now();
    c.signal_node(primary, duet_sys::process::SIGSTOP);
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "no writes while the primary's node is frozen\n{}",
        c.logs()
    );
    // Frozen for longer than the lease (2 s), then thawed.
    std::thread::sleep(Duration::from_secs(2));
    c.signal_node(primary, duet_sys::process::SIGCONT);
    c.never_two_writable(Duration::from_secs(5));
    assert!(
        c.wait_streaming(primary, 2, Duration::from_secs(60)),
        "{}",
        c.logs()
    );
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
}

#[test]
fn a_switchover_both_ways_loses_no_acknowledged_write() {
    let Some((c, mut primary, rx, mut lines)) = writing("dbw", "on") else {
        return;
    };
    for round in 0..2 {
        let to = 1 - primary;
        let t = unix_now();
        let out = c
            .lab
            .command(&c.nodes[primary].host, &c.exe)
            .args(["switchover", "-c"])
            .arg(&c.nodes[primary].config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "round {round}: {said}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        assert!(said.contains("done in"), "{said}");
        assert!(
            wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
            "round {round}: no writes after the switchover\n{}",
            c.logs()
        );
        let gap = first_ack_after(&lines, t).unwrap();
        eprintln!(
            "switchover {} -> {}: writes back after {gap:.2} s",
            c.nodes[primary].host.name, c.nodes[to].host.name,
        );
        assert!(gap < 10.0, "round {round}: {gap:.1} s\n{}", c.logs());
        let (new, old) = (c.db_now(to), c.db_now(primary));
        assert_eq!(new.role, "primary");
        assert!(old.role == "replica" && !old.writable, "{old:#?}");
        drain(&rx, &mut lines);
        c.audit(&lines, to);
        primary = to;
    }
    // A switchover asked of a standby is refused with a clear message.
    let out = c
        .lab
        .command(&c.nodes[1 - primary].host, &c.exe)
        .args(["switchover", "-c"])
        .arg(&c.nodes[1 - primary].config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not run the writable primary"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn db_reinit_clones_a_standby_again_and_keeps_the_old_directory() {
    let Some((c, primary, rx, mut lines)) = writing("dbi", "on") else {
        return;
    };
    let replica = 1 - primary;
    let node = &c.nodes[replica];
    let out = c
        .lab
        .command(&node.host, &c.exe)
        .args(["db", "reinit", "-c"])
        .arg(&node.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aside = node.config.parent().unwrap().join("pgdata.duet-old");
    let back = lab::wait_for(Duration::from_secs(60), || {
        aside.join("PG_VERSION").exists()
            && c.nodes[replica].log_text().matches("cloned from").count() >= 2
            && c.db(replica)
                .is_some_and(|d| d.role == "replica" && d.streaming && d.progress.is_none())
    });
    assert!(back.is_some(), "{}", c.logs());
    // The primary refuses it.
    let node = &c.nodes[primary];
    let out = c
        .lab
        .command(&node.host, &c.exe)
        .args(["db", "reinit", "-c"])
        .arg(&node.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let refused = lab::wait_for(Duration::from_secs(10), || {
        c.nodes[primary].log_text().contains("reinit asked")
    });
    assert!(refused.is_some());
    assert!(wait_acks(
        &rx,
        &mut lines,
        unix_now(),
        20,
        Duration::from_secs(30)
    ));
    assert_eq!(c.db_now(primary).role, "primary");
    drain(&rx, &mut lines);
    c.audit(&lines, primary);
    c.audit(&lines, replica);
}

#[test]
fn an_old_primary_whose_wal_is_gone_is_cloned_again_not_left_stuck() {
    let Some((mut c, primary, rx, mut lines)) = writing("dbg", "on") else {
        return;
    };
    let replica = 1 - primary;
    let t = unix_now();
    c.kill_node(primary);
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
    // The old primary's WAL is lost (a disk replaced, a careless cleanup): neither crash
    // recovery nor pg_rewind can use it.
    let data = c.nodes[primary].config.parent().unwrap().join("pgdata");
    for e in std::fs::read_dir(data.join("pg_wal")).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    c.restart(primary);
    assert!(
        c.wait_streaming(primary, 2, Duration::from_secs(90)),
        "the old primary was left stuck\n{}",
        c.logs()
    );
    assert!(
        data.with_file_name("pgdata.duet-old")
            .join("PG_VERSION")
            .exists(),
        "the old data directory is kept aside"
    );
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
}

#[test]
fn with_etcd_the_record_lives_in_etcd_and_failover_and_fencing_lose_nothing() {
    let Some(mut c) = Cluster::start_with("dbe", "on", Authority::Etcd) else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let names: Vec<String> = c.nodes.iter().map(|n| n.host.name.clone()).collect();
    let name = |i: usize| names[i].clone();
    // The record is in etcd, as the primary wrote it: it names the synchronous standby.
    let rec = c.etcd_record().expect("a record in etcd");
    assert_eq!(rec["primary"], name(primary).as_str(), "{rec}");
    assert_eq!(rec["standby"], name(replica).as_str(), "{rec}");
    let term: u64 = rec["term"].as_str().unwrap().parse().unwrap();

    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
    // Kill -9 of the primary's node: the standby the etcd record names is promoted.
    let t = unix_now();
    c.kill_node(primary);
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "no writes after the failover\n{}",
        c.logs()
    );
    eprintln!(
        "etcd: node kill -9 -> first acknowledged write: {:.2} s",
        first_ack_after(&lines, t).unwrap()
    );
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
    let rec = c.etcd_record().expect("a record in etcd");
    assert_eq!(rec["primary"], name(replica).as_str(), "{rec}");
    let new_term: u64 = rec["term"].as_str().unwrap().parse().unwrap();
    assert!(new_term > term, "the term rises: {term} then {new_term}");

    // The old primary rejoins; then the new primary is cut from the network (and from
    // etcd): it fences itself before etcd's lease passes, and the old primary takes over.
    c.restart(primary);
    c.wait_pair(Duration::from_secs(60), true);
    let rec = c.etcd_record().expect("a record in etcd");
    assert_eq!(rec["standby"], name(primary).as_str(), "{rec}");
    let t = unix_now();
    let host = c.nodes[replica].host.clone();
    c.lab.set_link(&host, false).unwrap();
    c.lab.set_direct_link(&host, false).unwrap();
    c.never_two_writable(Duration::from_secs(6));
    assert!(
        wait_acks(&rx, &mut lines, t, 50, Duration::from_secs(30)),
        "no writes after the cut\n{}",
        c.logs()
    );
    assert!(
        c.nodes[replica].log_text().contains("fencing the primary"),
        "{}",
        c.logs()
    );
    drain(&rx, &mut lines);
    c.audit(&lines, primary);
    let rec = c.etcd_record().expect("a record in etcd");
    assert_eq!(rec["primary"], name(primary).as_str(), "{rec}");
}
