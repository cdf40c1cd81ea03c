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
    let first = lines
        .iter()
        .find(|l| l.id.is_some() && l.t > killed_at)
        .unwrap()
        .t;
    eprintln!(
        "node kill -9 -> first acknowledged write: {:.2} s",
        first - killed_at
    );
    assert!(
        first - killed_at < 10.0,
        "failover took {:.1} s",
        first - killed_at
    );
    let db = c.db(replica).expect("the survivor answers");
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
    let old = c.db(primary).unwrap();
    assert!(!old.writable);
}
