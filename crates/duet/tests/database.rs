//! PostgreSQL failover in network namespaces, with real servers: two nodes bootstrap from
//! empty data directories, a witness keeps the lease and the record, a writer on a client
//! host records every acknowledged commit through the write VIP. After each fault, every
//! acknowledged row must be on the new primary, and there are never two writable primaries.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use duet::lab::{self, DuetNode, Host, Lab};
use duet::labpg::WriteLine;

const WRITE_VIP: &str = "10.99.0.15";

fn ready() -> bool {
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
        lab::skip("PostgreSQL 15 is not installed", "DUET_REQUIRE_TOOLS");
        return false;
    }
    true
}

/// A node's config: heartbeat over the LAN and a direct cable, the witness, the database.
fn config(lab: &Lab, name: &str, me: u8, peer: u8, key: &Path, sync: &str) -> String {
    let dir = lab.dir().join(name);
    format!(
        r#"[node]
name = "{name}"
admin = "127.0.0.1:9900"
state_dir = "@STATE@"
operator_token_file = "{token}"
{hb}{witness}
[database]
kind = "postgres"
listen = "10.99.0.{me}:5432"
data_dir = "{data}"
password_file = "{secret}"
allow = ["10.99.0.0/24"]
synchronous = "{sync}"
write_vip = {{ address = "{WRITE_VIP}/24", interface = "eth0" }}
parameters = {{ max_connections = "40", shared_buffers = "16MB" }}
"#,
        hb = lab::heartbeat_config(me, peer, key, ""),
        witness = lab::witness_config(3),
        data = dir.join("pgdata").display(),
        secret = lab.dir().join("db.secret").display(),
        token = lab.dir().join("operator.token").display(),
    )
}

struct Cluster {
    lab: Lab,
    nodes: Vec<DuetNode>,
    client: Host,
    exe: std::path::PathBuf,
}

impl Cluster {
    fn start(tag: &str, sync: &str) -> Option<Cluster> {
        if !ready() {
            return None;
        }
        let mut lab = common::lab(tag)?;
        let exe = common::exe();
        let alpha = lab.add_host("alpha", 1).unwrap();
        let beta = lab.add_host("beta", 2).unwrap();
        let witness = lab.add_host("witness", 3).unwrap();
        let client = lab.add_host("client", 4).unwrap();
        lab.add_direct_link(&alpha, &beta).unwrap();
        let key = lab.cluster_key().unwrap();
        std::fs::write(lab.dir().join("db.secret"), "lab-password\n").unwrap();
        std::fs::write(
            lab.dir().join("operator.token"),
            "an operator token of enough length\n",
        )
        .unwrap();
        lab.start_witness(&exe, &witness, &key).unwrap();
        let mut nodes = vec![
            DuetNode::new(&lab, &alpha, &config(&lab, "alpha", 1, 2, &key, sync)).unwrap(),
            DuetNode::new(&lab, &beta, &config(&lab, "beta", 2, 1, &key, sync)).unwrap(),
        ];
        for n in &mut nodes {
            n.start(&mut lab, &exe).unwrap();
        }
        Some(Cluster {
            lab,
            nodes,
            client,
            exe,
        })
    }

    fn db(&self, i: usize) -> Option<duet_admin::DatabaseStatus> {
        self.nodes[i].status(&self.lab, &self.exe)?.database
    }

    /// Node `i`'s database status, asked until it answers (a loaded machine can be slow).
    fn db_now(&self, i: usize) -> duet_admin::DatabaseStatus {
        let mut got = None;
        lab::wait_for(Duration::from_secs(10), || {
            got = self.db(i);
            got.is_some()
        });
        got.unwrap_or_else(|| {
            panic!(
                "{} does not answer\n{}",
                self.nodes[i].host.name,
                self.logs()
            )
        })
    }

    /// Waits until one node is a writable primary and the other streams from it, with the
    /// synchronous standby recorded when `sync`; returns the primary's index.
    fn wait_pair(&self, limit: Duration, sync: bool) -> usize {
        let mut last = (None, None);
        let found = lab::wait_for(limit, || {
            last = (self.db(0), self.db(1));
            let (Some(a), Some(b)) = &last else {
                return false;
            };
            let paired = |p: &duet_admin::DatabaseStatus, r: &duet_admin::DatabaseStatus| {
                p.role == "primary"
                    && p.writable
                    && r.role == "replica"
                    && r.streaming
                    && (!sync
                        || p.sync_standby.is_some()
                            && p.record
                                .as_deref()
                                .is_some_and(|x| !x.contains("standby none")))
            };
            paired(a, b) || paired(b, a)
        });
        assert!(
            found.is_some(),
            "no primary/replica pair within {limit:?}: {last:#?}\n{}",
            self.logs()
        );
        usize::from(last.1.as_ref().is_some_and(|b| b.role == "primary"))
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s += &format!("---- {} ----\n{}\n", n.host.name, tail(&n.log_text(), 60));
            let pg = n.config.parent().unwrap().join("state/pg/postgresql.log");
            s += &format!(
                "---- {} postgresql.log ----\n{}\n",
                n.host.name,
                tail(&std::fs::read_to_string(pg).unwrap_or_default(), 25)
            );
        }
        s
    }

    /// Starts the writer on the client host, through the write VIP.
    fn writer(&mut self) -> Receiver<WriteLine> {
        let mut cmd = self.lab.command(&self.client, &self.exe);
        cmd.args(["lab-pg", "write", "--target"])
            .arg(format!("{WRITE_VIP}:5432"))
            .arg("--password-file")
            .arg(self.lab.dir().join("db.secret"))
            .args(["--interval", "10ms", "--timeout", "3s"])
            .stderr(Stdio::null());
        let out = self.lab.spawn_piped(cmd).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(l) = serde_json::from_str(&line)
                    && tx.send(l).is_err()
                {
                    return;
                }
            }
        });
        rx
    }

    /// The ids the server of node `i` holds.
    fn rows(&self, i: usize) -> BTreeSet<u64> {
        let out = self
            .lab
            .command(&self.client, &self.exe)
            .args(["lab-pg", "read", "--target"])
            .arg(format!("{}:5432", self.nodes[i].host.ipv4))
            .arg("--password-file")
            .arg(self.lab.dir().join("db.secret"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reading {}: {}",
            self.nodes[i].host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in node `i`'s namespace (duet, its guardian, the postmaster and
    /// its children) with SIGKILL.
    fn kill_node(&mut self, i: usize) {
        let ns = &self.nodes[i].host.ns;
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                let _ = duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, false);
            }
        }
        if let Some(pid) = self.nodes[i].pid.take() {
            self.lab.reap(pid);
        }
    }
}

/// Collects the writer's lines that arrived so far.
fn drain(rx: &Receiver<WriteLine>, into: &mut Vec<WriteLine>) {
    while let Ok(l) = rx.try_recv() {
        into.push(l);
    }
}

/// Waits until the writer acknowledged `n` more commits after time `after`.
fn wait_acks(
    rx: &Receiver<WriteLine>,
    into: &mut Vec<WriteLine>,
    after: f64,
    n: usize,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        drain(rx, into);
        if into
            .iter()
            .filter(|l| l.id.is_some() && l.t > after)
            .count()
            >= n
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
    let exe = c.exe.clone();
    c.nodes[primary].start(&mut c.lab, &exe).unwrap();
    let rejoined = lab::wait_for(Duration::from_secs(60), || {
        c.db(primary)
            .is_some_and(|d| d.role == "replica" && d.streaming && d.timeline == 2)
    });
    assert!(
        rejoined.is_some(),
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

impl Cluster {
    /// The postmaster's pid on node `i` (from its data directory).
    fn postmaster(&self, i: usize) -> u32 {
        let pidfile = self.nodes[i]
            .config
            .parent()
            .unwrap()
            .join("pgdata/postmaster.pid");
        std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", pidfile.display()))
    }

    /// Sends `signal` to every process in node `i`'s namespace.
    fn signal_node(&self, i: usize, signal: i32) {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &self.nodes[i].host.ns])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                let _ = duet_sys::process::send_signal(pid, signal, false);
            }
        }
    }

    /// Polls both nodes for `limit`, failing if both ever say their server is writable at
    /// the same look.
    fn never_two_writable(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let (a, b) = (self.db(0), self.db(1));
            let w = |d: &Option<duet_admin::DatabaseStatus>| d.as_ref().is_some_and(|d| d.writable);
            assert!(!(w(&a) && w(&b)), "two writable primaries: {a:#?} {b:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every acknowledged row is on node `i`.
    fn audit(&self, lines: &[WriteLine], i: usize) -> usize {
        let acked: BTreeSet<u64> = lines.iter().filter_map(|l| l.id).collect();
        let rows = self.rows(i);
        let lost: Vec<&u64> = acked.difference(&rows).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged rows missing on {}: {:?}",
            lost.len(),
            self.nodes[i].host.name,
            &lost[..lost.len().min(20)]
        );
        acked.len()
    }
}

/// Seconds from `t` to the first acknowledged write after the outage the fault caused (the
/// first failed write after `t`); 0 when no write failed.
fn first_ack_after(lines: &[WriteLine], t: f64) -> Option<f64> {
    let outage = lines
        .iter()
        .find(|l| l.error.is_some() && l.t > t)
        .map_or(t, |l| l.t);
    lines
        .iter()
        .find(|l| l.id.is_some() && l.t > outage)
        .map(|l| l.t - t)
}

#[test]
fn a_killed_postmaster_is_restarted_in_place_without_failover() {
    let Some(mut c) = Cluster::start("dbp", "on") else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
    assert!(gap < 5.0, "writes were back only after {gap:.1} s");
    let db = c.db_now(primary);
    assert_eq!(
        (db.role.as_str(), db.timeline),
        ("primary", 1),
        "no failover\n{}",
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
    let Some(mut c) = Cluster::start("dbr", "on") else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
    let exe = c.exe.clone();
    c.nodes[replica].start(&mut c.lab, &exe).unwrap();
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
    let Some(mut c) = Cluster::start("dbs", "strict") else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
    let exe = c.exe.clone();
    c.nodes[replica].start(&mut c.lab, &exe).unwrap();
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
    let Some(mut c) = Cluster::start("dbc", "on") else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
    let rejoined = lab::wait_for(Duration::from_secs(60), || {
        c.db(primary)
            .is_some_and(|d| d.role == "replica" && d.streaming && d.timeline == 2)
    });
    assert!(rejoined.is_some(), "{}", c.logs());
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
}

#[test]
fn a_frozen_primary_node_never_writes_again_as_primary() {
    let Some(mut c) = Cluster::start("dbz", "on") else {
        return;
    };
    let primary = c.wait_pair(Duration::from_secs(60), true);
    let replica = 1 - primary;
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
    let rejoined = lab::wait_for(Duration::from_secs(60), || {
        c.db(primary)
            .is_some_and(|d| d.role == "replica" && d.streaming && d.timeline == 2)
    });
    assert!(rejoined.is_some(), "{}", c.logs());
    drain(&rx, &mut lines);
    c.audit(&lines, replica);
}

#[test]
fn a_switchover_both_ways_loses_no_acknowledged_write() {
    let Some(mut c) = Cluster::start("dbw", "on") else {
        return;
    };
    let mut primary = c.wait_pair(Duration::from_secs(60), true);
    let rx = c.writer();
    let mut lines = Vec::new();
    assert!(
        wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
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
