//! `duet demo --database`: a PostgreSQL failover in a throw-away namespace lab, seen by a
//! client that writes through the write VIP.
//!
//! Needs root (the servers run as the `postgres` user, which a rootless user namespace cannot
//! map) and PostgreSQL 15 from Debian. It builds a switch, two duet nodes that bootstrap a
//! pair from empty data directories, a witness and a client; kills every process on the
//! primary's node; shows the writer's view until writes are acknowledged again; checks that
//! every acknowledged commit is on the new primary; restarts the old node and shows it rejoin.
//! The namespaces are deleted when the demo ends or on Ctrl-C.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::{Lab, wait_for};
use crate::labdb::{DbPair, WRITE_VIP, drain, unix_now, wait_acks};
use crate::labpg::WriteLine;

/// Runs the database demo; returns the exit code.
pub fn run() -> i32 {
    if let Err(e) = crate::lab::can_build_labs() {
        eprintln!(
            "duet demo --database: {e}\n(it needs root: the PostgreSQL servers run as the postgres user)"
        );
        return 1;
    }
    if !std::path::Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        eprintln!(
            "duet demo --database: PostgreSQL 15 is not installed (apt-get install postgresql-15)"
        );
        return 1;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let code = match demo(&flag) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("\nduet demo --database: {e}");
                3
            }
        };
        let _ = done_tx.send(());
        code
    });
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    rt.block_on(async {
        let done = tokio::task::spawn_blocking(move || done_rx.recv());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: cleaning up the lab");
                stop.store(true, Ordering::SeqCst);
            }
            _ = done => {}
        }
    });
    worker.join().unwrap_or(1)
}

/// The database part: also the last act of `duet demo` when it runs as root.
pub(crate) fn demo(stop: &AtomicBool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("my own executable: {e}"))?;
    println!("building a lab: a switch, nodes alpha and beta, a witness, a client");
    let lab = Lab::new("demodb").map_err(|e| format!("lab: {e}"))?;
    let mut pair = DbPair::start(lab, exe, "on");
    println!("both nodes start with empty data directories; the first to lead runs initdb…");
    let t = Instant::now();
    let primary = pair.wait_pair(Duration::from_secs(90), true);
    let standby = 1 - primary;
    let (p, s) = (
        pair.nodes[primary].host.name.clone(),
        pair.nodes[standby].host.name.clone(),
    );
    println!(
        "{:.1} s: {p} is primary (initdb), {s} cloned it and streams; synchronous standby {s}, recorded at the witness",
        t.elapsed().as_secs_f64()
    );
    let rx = pair.writer();
    let mut lines: Vec<WriteLine> = Vec::new();
    if !wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)) {
        return Err("the writer got no acknowledgement through the write VIP".into());
    }
    println!("a client writes a row every 10 ms through the write VIP {WRITE_VIP}:5432");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        drain(&rx, &mut lines);
        println!(
            "  {} commits acknowledged",
            lines.iter().filter(|l| l.id.is_some()).count()
        );
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    println!("\nkill -9 of every process on {p} (duet, the guardian, PostgreSQL)");
    let killed = unix_now();
    pair.kill_node(primary);
    let mut said_failing = false;
    let back = loop {
        std::thread::sleep(Duration::from_millis(50));
        drain(&rx, &mut lines);
        let after: Vec<&WriteLine> = lines.iter().filter(|l| l.t > killed).collect();
        if !said_failing && let Some(e) = after.iter().find_map(|l| l.error.as_ref()) {
            println!("  +{:.2} s  writes fail: {e}", unix_now() - killed);
            said_failing = true;
        }
        if said_failing && let Some(gap) = crate::labdb::first_ack_after(&lines, killed) {
            break gap;
        }
        if unix_now() - killed > 30.0 || stop.load(Ordering::SeqCst) {
            return Err(format!("no writes 30 s after the kill\n{}", pair.logs()));
        }
    };
    let db = pair.db_now(standby);
    println!(
        "  +{back:.2} s  writes acknowledged again: {s} is primary (timeline {}){}",
        db.timeline,
        db.last_promotion
            .as_deref()
            .map_or(String::new(), |p| format!("; promoted {p}"))
    );
    std::thread::sleep(Duration::from_millis(500));
    drain(&rx, &mut lines);
    let acked: BTreeSet<u64> = lines.iter().filter_map(|l| l.id).collect();
    let n = pair.audit(&lines, standby);
    println!(
        "audit: {n} commits were acknowledged to the client; all {} are on {s}",
        acked.len()
    );
    println!("\nrestarting duet on {p}: it must come back as a replica, never as a primary");
    let t = Instant::now();
    let exe = pair.exe.clone();
    pair.nodes[primary]
        .start(&mut pair.lab, &exe)
        .map_err(|e| e.to_string())?;
    let rejoined = wait_for(Duration::from_secs(60), || {
        pair.db(primary)
            .is_some_and(|d| d.role == "replica" && d.streaming)
    });
    if rejoined.is_none() {
        return Err(format!("{p} did not rejoin\n{}", pair.logs()));
    }
    println!(
        "  {:.1} s: {p} rewound onto {s}'s timeline and streams from it",
        t.elapsed().as_secs_f64()
    );
    println!("\ndone; the lab is removed. Try `cargo xtask bench db` for the numbers.");
    Ok(())
}
