//! Patroni 4 + etcd in the namespace lab, for `cargo xtask bench db --patroni`: the same
//! PostgreSQL 15, the same writer (through libpq's `target_session_attrs=read-write` over both
//! nodes, as Patroni's clients without a VIP do), the same fault (kill -9 of every process on
//! the primary's node), timed the same way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use duet::lab::{Host, Lab};
use duet::labdb::{drain, first_ack_after, unix_now, wait_acks};
use duet::labpg::WriteLine;

const VENV: &str = "/opt/duet-patroni";

/// Patroni's loop settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
}

/// Installs Patroni (PyPI, in a venv the postgres user can read) and etcd if missing.
pub fn ensure() -> Result<(), String> {
    crate::ensure_packages(&[("etcd", "etcd-server"), ("curl", "curl")])?;
    if Path::new(VENV).join("bin/patroni").exists() {
        return Ok(());
    }
    let venv = || {
        Command::new("/usr/bin/python3")
            .args(["-m", "venv", VENV])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !venv() {
        // Debian splits venv out of python3.
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "python3-venv"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    let ok = (Path::new(VENV).join("bin/pip").exists() || venv())
        && Command::new(format!("{VENV}/bin/pip"))
            .args(["install", "-q", "patroni[etcd3]", "psycopg2-binary"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("could not install Patroni into /opt/duet-patroni (pip)".into())
    }
}

pub struct PatroniPair {
    pub lab: Lab,
    nodes: Vec<Host>,
    client: Host,
    dir: PathBuf,
    exe: PathBuf,
    timing: Timing,
}

impl PatroniPair {
    pub fn start(tag: &str, exe: PathBuf, timing: Timing) -> Result<PatroniPair, String> {
        let e = |e: std::io::Error| e.to_string();
        let mut lab = Lab::new(tag).map_err(e)?;
        let alpha = lab.add_host("alpha", 1).map_err(e)?;
        let beta = lab.add_host("beta", 2).map_err(e)?;
        let etcd = lab.add_host("etcd", 3).map_err(e)?;
        let client = lab.add_host("client", 4).map_err(e)?;
        lab.start_etcd(&etcd, None).map_err(e)?;
        let dir = lab.dir().to_path_buf();
        std::fs::write(dir.join("db.secret"), "lab-password\n").map_err(e)?;
        let mut pair = PatroniPair {
            lab,
            nodes: vec![alpha, beta],
            client,
            dir,
            exe,
            timing,
        };
        std::thread::sleep(Duration::from_secs(2));
        pair.start_node(0)?;
        if duet::lab::wait_for(Duration::from_secs(60), || {
            pair.role(0).as_deref() == Some("primary")
        })
        .is_none()
        {
            return Err(format!("patroni did not bootstrap alpha\n{}", pair.logs()));
        }
        pair.start_node(1)?;
        Ok(pair)
    }

    fn config(&self, i: usize) -> String {
        let h = &self.nodes[i];
        let dir = self.dir.join(&h.name);
        let Timing {
            ttl,
            loop_wait,
            retry_timeout,
        } = self.timing;
        format!(
            r#"scope: bench
name: {name}
log:
  level: INFO
restapi:
  listen: {ip}:8008
  connect_address: {ip}:8008
etcd3:
  hosts: 10.99.0.3:2379
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication replicator 10.99.0.0/24 scram-sha-256
    - host all all 10.99.0.0/24 scram-sha-256
postgresql:
  listen: {ip}:5432
  connect_address: {ip}:5432
  data_dir: {dir}/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: {dir}/pgpass
  authentication:
    superuser: {{username: postgres, password: lab-password}}
    replication: {{username: replicator, password: lab-password}}
    rewind: {{username: postgres, password: lab-password}}
  parameters:
    unix_socket_directories: {dir}
    max_connections: 40
    shared_buffers: 16MB
"#,
            name = h.name,
            ip = h.ipv4,
            dir = dir.display()
        )
    }

    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let h = self.nodes[i].clone();
        let dir = self.dir.join(&h.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pg = duet_db_user()?;
        let _ = std::process::Command::new("chown")
            .args([&format!("{pg}:{pg}"), &dir.display().to_string()])
            .status();
        let cfg = dir.join("patroni.yml");
        std::fs::write(&cfg, self.config(i)).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("patroni.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = self.lab.command(&h, "setpriv");
        cmd.args([
            &format!("--reuid={pg}"),
            &format!("--regid={pg}"),
            "--init-groups",
            "env",
            &format!("HOME={}", dir.display()),
            &format!("{VENV}/bin/patroni"),
        ])
        .arg(&cfg)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
        self.lab.spawn(cmd).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The role Patroni's REST API reports for node `i` (`primary`, `replica`, …).
    pub fn role(&self, i: usize) -> Option<String> {
        let out = self
            .lab
            .command(&self.client, "curl")
            .args(["-s", "-m", "1"])
            .arg(format!("http://{}:8008/patroni", self.nodes[i].ipv4))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let role = v.get("role")?.as_str()?;
        Some(if role == "master" { "primary" } else { role }.to_string())
    }

    /// Whether node `i` is the synchronous standby (Patroni's `GET /sync`).
    fn is_sync(&self, i: usize) -> bool {
        self.lab
            .command(&self.client, "curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1"])
            .arg(format!("http://{}:8008/sync", self.nodes[i].ipv4))
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    }

    pub fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.role(i).as_deref() == Some("primary"))
    }

    /// Waits until one node is primary and the other its synchronous standby.
    pub fn wait_pair(&self, limit: Duration) -> Result<usize, String> {
        let mut p = None;
        duet::lab::wait_for(limit, || {
            p = self.primary();
            p.is_some_and(|p| self.is_sync(1 - p))
        })
        .and(p)
        .ok_or_else(|| format!("no synchronous pair within {limit:?}\n{}", self.logs()))
    }

    pub fn writer(&mut self) -> std::sync::mpsc::Receiver<WriteLine> {
        let mut cmd = self.lab.command(&self.client, &self.exe);
        cmd.args(["lab-pg", "write", "--target"])
            .arg(format!(
                "{}:5432,{}:5432",
                self.nodes[0].ipv4, self.nodes[1].ipv4
            ))
            .arg("--password-file")
            .arg(self.dir.join("db.secret"))
            .args(["--interval", "10ms", "--timeout", "3s"])
            .stderr(std::process::Stdio::null());
        self.lab.spawn_json(cmd).expect("the lab writer starts")
    }

    fn kill_node(&mut self, i: usize) {
        let _ = self
            .lab
            .signal_host(&self.nodes[i], duet_sys::process::SIGKILL);
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|h| {
                let log = std::fs::read_to_string(self.dir.join(&h.name).join("patroni.log"))
                    .unwrap_or_default();
                format!("---- {} ----\n{}\n", h.name, duet::labdb::tail(&log, 20))
            })
            .collect()
    }
}

fn duet_db_user() -> Result<&'static str, String> {
    if std::fs::read_to_string("/etc/passwd").is_ok_and(|p| p.contains("\npostgres:")) {
        Ok("postgres")
    } else {
        Err("no postgres user: apt-get install postgresql-15".into())
    }
}

/// `runs` node kills on a Patroni pair with `timing`: (first acknowledged write, rejoin) per run.
pub fn node_kills(exe: &Path, timing: Timing, runs: usize) -> Result<Vec<(f64, f64)>, String> {
    let mut pair = PatroniPair::start("bpat", exe.to_path_buf(), timing)?;
    let mut primary = pair.wait_pair(Duration::from_secs(120))?;
    let rx = pair.writer();
    let mut lines = Vec::new();
    if !wait_acks(&rx, &mut lines, 0.0, 50, Duration::from_secs(60)) {
        return Err(format!(
            "the writer got no acknowledgements\n{}",
            pair.logs()
        ));
    }
    let mut out = Vec::new();
    for run in 0..runs {
        let t = unix_now();
        pair.kill_node(primary);
        if !wait_acks(&rx, &mut lines, t, 20, Duration::from_secs(120)) {
            return Err(format!("no writes 120 s after the kill\n{}", pair.logs()));
        }
        let failover = first_ack_after(&lines, t).unwrap_or(f64::NAN);
        let old = primary;
        primary = pair
            .primary()
            .ok_or_else(|| format!("no primary after the failover\n{}", pair.logs()))?;
        let back = std::time::Instant::now();
        pair.start_node(old)?;
        pair.wait_pair(Duration::from_secs(120))?;
        let rejoin = back.elapsed().as_secs_f64();
        drain(&rx, &mut lines);
        eprintln!(
            "patroni ttl {} loop_wait {}: run {:>2}: node kill {failover:.2} s, rejoin {rejoin:.2} s",
            timing.ttl,
            timing.loop_wait,
            run + 1
        );
        out.push((failover, rejoin));
    }
    Ok(out)
}
