//! A two-node PostgreSQL cluster in lab namespaces, for the database tests and `cargo xtask
//! bench db`: a witness, two duet nodes with `[database]` from empty data directories, a
//! client host with the lab writer (`duet lab-pg`) going through the write VIP. A harness:
//! helpers panic with the nodes' logs when the lab does not behave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::lab::{self, DuetNode, Host, Lab};
use crate::labpg::WriteLine;

/// The write VIP of the lab pair.
pub const WRITE_VIP: &str = "10.99.0.15";

/// Who keeps the lease and the database record, on lab host 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// `duet witness`.
    Witness,
    /// A one-member etcd (Debian's `etcd-server`), prefix [`ETCD_PREFIX`].
    Etcd,
}

/// The etcd prefix of the lab pair: the record is in `{ETCD_PREFIX}/db`.
pub const ETCD_PREFIX: &str = "/duet/lab";

/// The `[witness]` or `[coordination]` section (2 s lease either way).
fn authority_config(authority: Authority) -> String {
    match authority {
        Authority::Witness => lab::witness_config(3),
        Authority::Etcd => format!(
            "\n[coordination]\nbackend = \"etcd\"\nendpoints = [\"http://10.99.0.3:2379\"]\nprefix = \"{ETCD_PREFIX}\"\nlease = \"2s\"\n"
        ),
    }
}

/// A node's config: heartbeat over the LAN and a direct cable, the lease authority, the
/// database.
fn config(
    lab: &Lab,
    name: &str,
    (me, peer): (u8, u8),
    key: &Path,
    sync: &str,
    authority: Authority,
) -> String {
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
        witness = authority_config(authority),
        data = dir.join("pgdata").display(),
        secret = lab.dir().join("db.secret").display(),
        token = lab.dir().join("operator.token").display(),
    )
}

/// The pair, its witness and the client.
#[derive(Debug)]
pub struct DbPair {
    /// The lab.
    pub lab: Lab,
    /// alpha (index 0) and beta (1).
    pub nodes: Vec<DuetNode>,
    /// The client host.
    pub client: Host,
    /// The duet binary.
    pub exe: PathBuf,
}

impl DbPair {
    /// Builds the lab in `lab` and starts everything (`sync`: `database.synchronous`), with a
    /// witness.
    pub fn start(lab: Lab, exe: PathBuf, sync: &str) -> DbPair {
        DbPair::start_with(lab, exe, sync, Authority::Witness)
    }

    /// Builds the lab in `lab` and starts everything, with `authority` on host 3.
    pub fn start_with(mut lab: Lab, exe: PathBuf, sync: &str, authority: Authority) -> DbPair {
        let alpha = lab.add_host("alpha", 1).unwrap();
        let beta = lab.add_host("beta", 2).unwrap();
        let third = match authority {
            Authority::Witness => "witness",
            Authority::Etcd => "etcd",
        };
        let third = lab.add_host(third, 3).unwrap();
        let client = lab.add_host("client", 4).unwrap();
        lab.add_direct_link(&alpha, &beta).unwrap();
        let key = lab.cluster_key().unwrap();
        std::fs::write(lab.dir().join("db.secret"), "lab-password\n").unwrap();
        std::fs::write(
            lab.dir().join("operator.token"),
            "an operator token of enough length\n",
        )
        .unwrap();
        match authority {
            Authority::Witness => lab.start_witness(&exe, &third, &key).unwrap(),
            Authority::Etcd => lab.start_etcd(&third, None).unwrap(),
        };
        let node = |host: &Host, name: &str, addrs: (u8, u8)| {
            let text = config(&lab, name, addrs, &key, sync, authority);
            DuetNode::new(&lab, host, &text).unwrap()
        };
        let mut nodes = vec![node(&alpha, "alpha", (1, 2)), node(&beta, "beta", (2, 1))];
        for n in &mut nodes {
            n.start(&mut lab, &exe).unwrap();
        }
        DbPair {
            lab,
            nodes,
            client,
            exe,
        }
    }

    /// Node `i`'s database status, if it answers.
    pub fn db(&self, i: usize) -> Option<duet_admin::DatabaseStatus> {
        self.nodes[i].status(&self.lab, &self.exe)?.database
    }

    /// Node `i`'s database status, asked until it answers (a loaded machine can be slow).
    pub fn db_now(&self, i: usize) -> duet_admin::DatabaseStatus {
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
    pub fn wait_pair(&self, limit: Duration, sync: bool) -> usize {
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

    /// The nodes' logs, tails.
    pub fn logs(&self) -> String {
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
    pub fn writer(&mut self) -> Receiver<WriteLine> {
        let mut cmd = self.lab.command(&self.client, &self.exe);
        cmd.args(["lab-pg", "write", "--target"])
            .arg(format!("{WRITE_VIP}:5432"))
            .arg("--password-file")
            .arg(self.lab.dir().join("db.secret"))
            .args(["--interval", "10ms", "--timeout", "3s"])
            .stderr(Stdio::null());
        self.lab.spawn_json(cmd).expect("the lab writer starts")
    }

    /// The ids the server of node `i` holds.
    pub fn rows(&self, i: usize) -> BTreeSet<u64> {
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

    /// The database record as etcd keeps it (`{ETCD_PREFIX}/db`, read from the client host
    /// over etcd's JSON gateway with Python's standard library), `None` while there is none.
    pub fn etcd_record(&self) -> Option<serde_json::Value> {
        let script = format!(
            "import base64, json, urllib.request as u\n\
             key = base64.b64encode(b'{ETCD_PREFIX}/db').decode()\n\
             req = u.Request('http://10.99.0.3:2379/v3/kv/range', data=json.dumps({{'key': key}}).encode())\n\
             kvs = json.load(u.urlopen(req, timeout=5)).get('kvs')\n\
             print(base64.b64decode(kvs[0]['value']).decode() if kvs else '')\n"
        );
        let out = self
            .lab
            .command(&self.client, "python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "reading the record from etcd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.trim();
        (!text.is_empty()).then(|| {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("etcd holds {text:?}: {e}"))
        })
    }

    /// Starts node `i`'s duet again (after a kill).
    pub fn restart(&mut self, i: usize) {
        let exe = self.exe.clone();
        self.nodes[i].start(&mut self.lab, &exe).unwrap();
    }

    /// Whether node `i` streams as a replica on `timeline` within `limit`.
    pub fn wait_streaming(&self, i: usize, timeline: u32, limit: Duration) -> bool {
        lab::wait_for(limit, || {
            self.db(i)
                .is_some_and(|d| d.role == "replica" && d.streaming && d.timeline == timeline)
        })
        .is_some()
    }

    /// Kills every process in node `i`'s namespace (duet, its guardian, the postmaster and
    /// its children) with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        self.signal_node(i, duet_sys::process::SIGKILL);
        if let Some(pid) = self.nodes[i].pid.take() {
            self.lab.reap(pid);
        }
    }
}

/// Collects the writer's lines that arrived so far.
pub fn drain(rx: &Receiver<WriteLine>, into: &mut Vec<WriteLine>) {
    while let Ok(l) = rx.try_recv() {
        into.push(l);
    }
}

/// Waits until the writer acknowledged `n` more commits after time `after`.
pub fn wait_acks(
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

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wall clock, seconds since the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl DbPair {
    /// The postmaster's pid on node `i` (from its data directory).
    pub fn postmaster(&self, i: usize) -> u32 {
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
    pub fn signal_node(&self, i: usize, signal: i32) {
        self.lab
            .signal_host(&self.nodes[i].host, signal)
            .expect("ip netns pids");
    }

    /// Polls both nodes for `limit`, failing if both ever say their server is writable at
    /// the same look.
    pub fn never_two_writable(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let (a, b) = (self.db(0), self.db(1));
            let w = |d: &Option<duet_admin::DatabaseStatus>| d.as_ref().is_some_and(|d| d.writable);
            assert!(!(w(&a) && w(&b)), "two writable primaries: {a:#?} {b:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every acknowledged row is on node `i`.
    pub fn audit(&self, lines: &[WriteLine], i: usize) -> usize {
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
pub fn first_ack_after(lines: &[WriteLine], t: f64) -> Option<f64> {
    let outage = lines
        .iter()
        .find(|l| l.error.is_some() && l.t > t)
        .map_or(t, |l| l.t);
    lines
        .iter()
        .find(|l| l.id.is_some() && l.t > outage)
        .map(|l| l.t - t)
}
