//! A throw-away network of namespaces: a switch (a Linux bridge in its own namespace) and hosts,
//! each with an `eth0` plugged into the switch. Used by `duet demo`, the namespace tests and the
//! benchmarks. Everything stays inside the namespaces: no traffic touches the host's interfaces.
//!
//! Addresses: host `n` gets `10.99.0.n/24` and `2001:db8:99::n/64` on `eth0`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name (`alpha`).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its IPv4 address on `eth0`.
    pub ipv4: Ipv4Addr,
    /// Its global IPv6 address on `eth0`.
    pub ipv6: Ipv6Addr,
    /// Host index (last octet).
    pub index: u8,
}

/// The lab; dropping it kills what it started and deletes its namespaces.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    switch: String,
    hosts: Vec<Host>,
    children: Vec<Child>,
    dir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Creates the switch. `tag` prefixes every namespace name so parallel labs do not collide.
    pub fn new(tag: &str) -> io::Result<Lab> {
        let tag = format!(
            "{tag}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("duet-lab-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let switch = format!("{tag}-sw");
        let lab = Lab {
            tag,
            switch: switch.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
            dir,
        };
        ip(&format!("netns add {switch}"))?;
        ip(&format!("-n {switch} link set lo up"))?;
        ip(&format!("-n {switch} link add br0 type bridge"))?;
        // No STP, no forwarding delay: ports forward at once.
        ip(&format!(
            "-n {switch} link set br0 type bridge stp_state 0 forward_delay 0"
        ))?;
        ip(&format!("-n {switch} link set br0 up"))?;
        Ok(lab)
    }

    /// Writes a cluster key (`[heartbeat] key_file`, the witness's) into the lab directory.
    pub fn cluster_key(&self) -> io::Result<PathBuf> {
        let key = self.dir.join("cluster.key");
        std::fs::write(&key, "a shared secret of enough bytes\n")?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(key)
    }

    /// A scratch directory that lives as long as the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a host with index `index` (its address's last byte).
    pub fn add_host(&mut self, name: &str, index: u8) -> io::Result<Host> {
        let ns = format!("{}-{name}", self.tag);
        ip(&format!("netns add {ns}"))?;
        // Addresses must be usable at once: no duplicate address detection in the lab.
        for key in ["default", "all"] {
            let _ = ip(&format!(
                "netns exec {ns} sysctl -qw net.ipv6.conf.{key}.accept_dad=0"
            ));
        }
        let (sw, port) = (&self.switch, format!("p-{name}"));
        ip(&format!(
            "-n {sw} link add {port} type veth peer name eth0 netns {ns}"
        ))?;
        ip(&format!("-n {sw} link set {port} master br0 up"))?;
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            ipv4: Ipv4Addr::new(10, 99, 0, index),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, u16::from(index)),
            index,
        };
        ip(&format!("-n {ns} link set lo up"))?;
        ip(&format!("-n {ns} addr add {}/24 dev eth0", host.ipv4))?;
        ip(&format!("-n {ns} addr add {}/64 dev eth0 nodad", host.ipv6))?;
        ip(&format!("-n {ns} link set eth0 up"))?;
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// A command that runs `program` inside `host`'s namespace, in its own process group.
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).arg(program);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    }

    /// Starts a long-running process in `host`; the lab kills it on drop. Returns its pid.
    pub fn spawn(&mut self, mut cmd: Command) -> io::Result<u32> {
        let child = cmd.stdin(Stdio::null()).spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts a long-running process that prints one JSON value per line (a probe, a
    /// writer); the values arrive on the receiver as they come, lines that do not parse are
    /// skipped. The lab kills it on drop.
    pub fn spawn_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &mut self,
        mut cmd: Command,
    ) -> io::Result<std::sync::mpsc::Receiver<T>> {
        use std::io::BufRead;
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        self.children.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Sends `signal` to every process in `host`'s namespace (a whole node killed or frozen).
    pub fn signal_host(&self, host: &Host, signal: i32) -> io::Result<()> {
        let out = Command::new("ip")
            .args(["netns", "pids", &host.ns])
            .output()?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                let _ = duet_sys::process::send_signal(pid, signal, false);
            }
        }
        Ok(())
    }

    /// Waits for a started child that exited (reaps it), if it is ours.
    pub fn reap(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.remove(i);
        child.wait().ok()
    }

    /// Starts `duet lab-probe` in `host` against `target` (`ip:port`, IPv6 in brackets), polling
    /// every 10 ms with a 40 ms timeout; returns its results as they come.
    pub fn probe(
        &mut self,
        exe: &Path,
        host: &Host,
        target: &str,
    ) -> io::Result<std::sync::mpsc::Receiver<crate::labtools::ProbeLine>> {
        self.probe_with(exe, host, target, "10ms", "40ms")
    }

    /// [`Lab::probe`] with a chosen poll interval and timeout.
    pub fn probe_with(
        &mut self,
        exe: &Path,
        host: &Host,
        target: &str,
        interval: &str,
        timeout: &str,
    ) -> io::Result<std::sync::mpsc::Receiver<crate::labtools::ProbeLine>> {
        let mut cmd = self.command(host, exe);
        cmd.args([
            "lab-probe",
            "--target",
            target,
            "--interval",
            interval,
            "--timeout",
            timeout,
        ]);
        self.spawn_json(cmd)
    }

    /// Starts an HTTP responder on port 8080 (IPv4 and IPv6) in each host, answering with the
    /// host's name: the client can then tell which node holds the VIP.
    pub fn start_responders(&mut self, exe: &Path, hosts: &[&Host]) -> io::Result<()> {
        for h in hosts {
            let mut cmd = self.command(h, exe);
            cmd.args(["lab-responder", "--listen", "[::]:8080", "--name", &h.name]);
            self.spawn(cmd)?;
        }
        Ok(())
    }

    /// Sets the switch side of `host`'s cable down or up: its `eth0` loses or regains carrier.
    pub fn set_link(&self, host: &Host, up: bool) -> io::Result<()> {
        let port = format!("p-{}", host.name);
        ip(&format!(
            "-n {} link set {} {}",
            self.switch,
            port,
            if up { "up" } else { "down" }
        ))
    }

    /// Cables `a` and `b` directly (a dedicated heartbeat network): interface `hb0` in each,
    /// addresses `192.168.99.<index>/24`.
    pub fn add_direct_link(&self, a: &Host, b: &Host) -> io::Result<()> {
        ip(&format!(
            "-n {} link add hb0 type veth peer name hb0 netns {}",
            a.ns, b.ns
        ))?;
        for h in [a, b] {
            ip(&format!(
                "-n {} addr add 192.168.99.{}/24 dev hb0",
                h.ns, h.index
            ))?;
            ip(&format!("-n {} link set hb0 up", h.ns))?;
        }
        Ok(())
    }

    /// Sets `host`'s end of the direct link down or up (both ends lose carrier).
    pub fn set_direct_link(&self, host: &Host, up: bool) -> io::Result<()> {
        ip(&format!(
            "-n {} link set hb0 {}",
            host.ns,
            if up { "up" } else { "down" }
        ))
    }

    /// Isolates `host`'s switch port: isolated ports cannot talk to each other but still reach
    /// every other port (so two isolated nodes are partitioned while clients and a witness
    /// reach both).
    pub fn isolate(&self, host: &Host, on: bool) -> io::Result<()> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.switch,
                "bridge",
                "link",
                "set",
                "dev",
                &format!("p-{}", host.name),
                "isolated",
                if on { "on" } else { "off" },
            ],
        )
    }

    /// Cuts (or restores) the LAN between `a` and `b` by isolating both switch ports; both
    /// still reach every other host.
    pub fn split_lan(&self, a: &Host, b: &Host, cut: bool) -> io::Result<()> {
        self.isolate(a, cut)?;
        self.isolate(b, cut)
    }

    /// A full partition between `a` and `b` (LAN split and the direct cable down), or its
    /// healing.
    pub fn partition(&self, a: &Host, b: &Host, cut: bool) -> io::Result<()> {
        self.split_lan(a, b, cut)?;
        self.set_direct_link(a, !cut)
    }

    /// Cuts `host` off from the hosts at `from` (or restores it) with nftables in its
    /// namespace: nothing in from them, nothing out to them; with `vrrp`, its VRRP adverts
    /// (multicast) are dropped too. Other hosts (clients) still reach it.
    pub fn cut_off(&self, host: &Host, from: &[IpAddr], vrrp: bool, cut: bool) -> io::Result<()> {
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &host.ns,
                "nft",
                "delete",
                "table",
                "inet",
                "duet_lab_cut",
            ],
        );
        if !cut {
            return Ok(());
        }
        let set: Vec<String> = from.iter().map(|a| a.to_string()).collect();
        let set = set.join(", ");
        let vrrp = if vrrp { "ip protocol vrrp drop\n" } else { "" };
        let rules = format!(
            "table inet duet_lab_cut {{\n\
             chain input {{\ntype filter hook input priority -10;\nip saddr {{ {set} }} drop\n}}\n\
             chain output {{\ntype filter hook output priority -10;\nip daddr {{ {set} }} drop\n{vrrp}}}\n\
             }}\n"
        );
        let file = self.dir.join(format!("cut-{}.nft", host.name));
        std::fs::write(&file, rules)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &host.ns,
                "nft",
                "-f",
                &file.display().to_string(),
            ],
        )
    }

    /// Starts a one-member etcd (Debian's `etcd-server`) on `host`: clients on
    /// `http://<host>:2379`, and on `https://<host>:2378` with `tls = (cert, key, client CA)`
    /// (with a client CA, TLS clients must present a certificate it signed). Its data and log
    /// live in the lab directory.
    pub fn start_etcd(
        &mut self,
        host: &Host,
        tls: Option<(&Path, &Path, Option<&Path>)>,
    ) -> io::Result<u32> {
        let ip = host.ipv4;
        let log = std::fs::File::create(self.dir.join("etcd.log"))?;
        let mut clients = format!("http://{ip}:2379");
        let mut cmd = self.command(host, "etcd");
        if let Some((cert, key, client_ca)) = tls {
            clients.push_str(&format!(",https://{ip}:2378"));
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
            if let Some(ca) = client_ca {
                cmd.arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(ca);
            }
        }
        cmd.args(["--name", "lab"])
            .arg("--data-dir")
            .arg(self.dir.join("etcd-data"))
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &format!("lab=http://{ip}:2380")])
            .stdout(log.try_clone()?)
            .stderr(log);
        self.spawn(cmd)
    }

    /// Addresses on `host`'s `eth0`.
    pub fn addresses(&self, host: &Host) -> io::Result<Vec<IpAddr>> {
        let out = output("ip", &["-n", &host.ns, "-o", "addr", "show", "dev", "eth0"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                f.find(|w| *w == "inet" || *w == "inet6")?;
                f.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    /// Whether `host` currently has `addr` on `eth0`.
    pub fn has_address(&self, host: &Host, addr: IpAddr) -> bool {
        self.addresses(host)
            .map(|a| a.contains(&addr))
            .unwrap_or(false)
    }

    /// Adds an address to `host`'s `eth0` (e.g. to simulate a VIP left by a crash).
    pub fn add_address(&self, host: &Host, addr_prefix: &str) -> io::Result<()> {
        ip(&format!(
            "-n {} addr add {} dev eth0 nodad",
            host.ns, addr_prefix
        ))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = duet_sys::process::send_signal(c.id(), duet_sys::process::SIGKILL, true);
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            let _ = ip(&format!("netns del {}", h.ns));
        }
        let _ = ip(&format!("netns del {}", self.switch));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `ip` with whitespace-separated arguments (lab names never contain spaces).
fn ip(args: &str) -> io::Result<()> {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

/// Runs a command to completion; a non-zero exit becomes an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = output(program, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn output(program: &str, args: &[&str]) -> io::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether this process may build labs: it must be root (in the initial user namespace, or in
/// one of its own as `duet demo` arranges). Any later failure to build a lab is an error, not a
/// reason to skip.
/// Says that a test cannot run here and why: it returns (the caller skips) unless the
/// environment variable `strict` is `1`, as `.ci/run` sets `DUET_REQUIRE_ROOT` and
/// `DUET_REQUIRE_TOOLS`; then the test fails. A skip is appended to the file named by
/// `DUET_SKIP_LOG`, so the run's closing line can count it.
pub fn skip(why: &str, strict: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    assert!(
        std::env::var(strict).as_deref() != Ok("1"),
        "{test}: {why}, and {strict}=1 forbids skipping"
    );
    eprintln!("skipping {test}: {why}");
    if let Some(path) = std::env::var_os("DUET_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

pub fn can_build_labs() -> Result<(), String> {
    if duet_sys::process::effective_uid() != 0 {
        return Err("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN".into());
    }
    Ok(())
}

/// A duet daemon running in a lab host.
#[derive(Debug, Clone)]
pub struct DuetNode {
    /// The host it runs on.
    pub host: Host,
    /// Its config file.
    pub config: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its pid (also its process group id), while running.
    pub pid: Option<u32>,
    /// Its admin API address (inside its namespace), as first configured.
    pub admin: std::net::SocketAddr,
    /// Extra environment for the daemon (test knobs such as `DUET_LINK_POLL_MS`).
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) the daemon runs under, e.g. `setpriv` to drop a
    /// capability; empty: none.
    pub wrapper: Vec<String>,
}

impl DuetNode {
    /// Writes `config` for `host` into the lab directory (state_dir is set per node).
    pub fn new(lab: &Lab, host: &Host, config: &str) -> io::Result<DuetNode> {
        let dir = lab.dir().join(&host.name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("duet.toml");
        let config = config.replace("@STATE@", &dir.join("state").display().to_string());
        let admin = duet_config::parse("lab", &config)
            .map(|c| c.node.admin)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::write(&path, config)?;
        Ok(DuetNode {
            host: host.clone(),
            config: path,
            log: dir.join("duet.log"),
            pid: None,
            admin,
            env: Vec::new(),
            wrapper: Vec::new(),
        })
    }

    /// Starts `duet run` (the binary at `exe`) in the node's namespace.
    pub fn start(&mut self, lab: &mut Lab, exe: &Path) -> io::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = lab.command(&self.host, program);
                cmd.args(args).arg(exe);
                cmd
            }
            None => lab.command(&self.host, exe),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .stdout(log.try_clone()?)
            .stderr(log);
        let pid = lab.spawn(cmd)?;
        self.pid = Some(pid);
        Ok(pid)
    }

    /// Its admin API status, via `duet status --json` inside its namespace.
    pub fn status(&self, lab: &Lab, exe: &Path) -> Option<duet_admin::Status> {
        let out = lab
            .command(&self.host, exe)
            .args(["status", "--json", "--admin"])
            .arg(self.admin.to_string())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Its kept events, oldest first, via `duet events --json` inside its namespace.
    pub fn events(&self, lab: &Lab, exe: &Path) -> Vec<duet_admin::Event> {
        let Ok(out) = lab
            .command(&self.host, exe)
            .args(["events", "--json", "--last", "1000", "--admin"])
            .arg(self.admin.to_string())
            .stderr(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// State of its first VRRP instance (`MASTER`, ...), if it answers.
    pub fn state(&self, lab: &Lab, exe: &Path) -> Option<String> {
        self.status(lab, exe)?.vrrp.first().map(|v| v.state.clone())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A two-node config in the lab's address plan: VIP 10.99.0.100/24 on eth0, VRID 51.
pub fn vrrp_config(name: &str, priority: u8, interval: &str, extra: &str) -> String {
    let version = if interval.ends_with("ms") { 3 } else { 2 };
    format!(
        r#"[node]
name = "{name}"
admin = "127.0.0.1:9900"
state_dir = "@STATE@"

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 51
priority = {priority}
version = {version}
advert_interval = "{interval}"
vips = ["10.99.0.100/24"]
{extra}
"#
    )
}

/// The `[heartbeat]` section for lab host `me` with one peer `peer` over two links: the LAN
/// (`10.99.0.x`) and the direct cable of [`Lab::add_direct_link`] (`192.168.99.x`), every
/// 50 ms; `extra` lines go inside the section (e.g. `two_node_policy`), or after it when they
/// start a table (e.g. `[witness]`).
pub fn heartbeat_config(me: u8, peer: u8, key: &Path, extra: &str) -> String {
    heartbeat_section(me, &[peer], &["10.99.0", "192.168.99"], key, extra)
}

/// The `[heartbeat]` section for lab host `me` in a mesh with `peers` over one link, the LAN,
/// every 50 ms; `extra` as in [`heartbeat_config`].
pub fn heartbeat_mesh_config(me: u8, peers: &[u8], key: &Path, extra: &str) -> String {
    heartbeat_section(me, peers, &["10.99.0"], key, extra)
}

/// `[heartbeat]` every 50 ms, 5 misses, with one link per network prefix (`"10.99.0"`): host
/// `me` and its `peers` by their last address byte, port 7946.
fn heartbeat_section(me: u8, peers: &[u8], nets: &[&str], key: &Path, extra: &str) -> String {
    let links: Vec<String> = nets
        .iter()
        .map(|net| {
            let peers: Vec<String> = peers
                .iter()
                .map(|p| format!("\"{net}.{p}:7946\""))
                .collect();
            format!(
                "  {{ local = \"{net}.{me}:7946\", peers = [{}] }},",
                peers.join(", ")
            )
        })
        .collect();
    format!(
        "\n[heartbeat]\ninterval = \"50ms\"\nmisses = 5\nkey_file = \"{}\"\nlinks = [\n{}\n]\n{extra}\n",
        key.display(),
        links.join("\n")
    )
}

/// The `[witness]` section for a witness at `10.99.0.<index>:7947` with a 2 s lease.
pub fn witness_config(index: u8) -> String {
    format!("\n[witness]\naddress = \"10.99.0.{index}:7947\"\nlease = \"2s\"\n")
}

impl Lab {
    /// Starts `duet witness` on `host` (port 7947, 2 s lease) with `key`; its log goes to
    /// `witness.log` in the lab directory.
    pub fn start_witness(&mut self, exe: &Path, host: &Host, key: &Path) -> io::Result<u32> {
        let log = std::fs::File::create(self.dir.join("witness.log"))?;
        let mut cmd = self.command(host, exe);
        cmd.arg("witness")
            .arg("--listen")
            .arg(format!("{}:7947", host.ipv4))
            .args(["--lease", "2s", "--key-file"])
            .arg(key)
            .arg("--state-file")
            .arg(self.dir.join("witness.state"))
            .stderr(log);
        self.spawn(cmd)
    }
}

/// A keepalived daemon (Debian package) in a lab host, for interop tests and benchmarks.
#[derive(Debug, Clone)]
pub struct KeepalivedNode {
    /// The host it runs on.
    pub host: Host,
    /// Its config file.
    pub config: PathBuf,
    /// Its log (console output).
    pub log: PathBuf,
    dir: PathBuf,
    /// Its pid (and process group), while running.
    pub pid: Option<u32>,
}

impl KeepalivedNode {
    /// Writes a keepalived config for the lab's VIP: `interval` like `"100ms"` (v3) or `"1s"`
    /// (v2), `unicast_peer` for unicast mode.
    pub fn new(
        lab: &Lab,
        host: &Host,
        priority: u8,
        interval: &str,
        unicast_peer: Option<Ipv4Addr>,
    ) -> io::Result<KeepalivedNode> {
        let dir = lab.dir().join(format!("{}-keepalived", host.name));
        std::fs::create_dir_all(&dir)?;
        let d = duet_time::parse_duration(interval)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let version = if d.subsec_nanos() == 0 { 2 } else { 3 };
        let advert = d.as_secs_f64();
        let unicast = unicast_peer
            .map(|p| {
                format!(
                    "    unicast_src_ip {}\n    unicast_peer {{\n        {p}\n    }}\n",
                    host.ipv4
                )
            })
            .unwrap_or_default();
        let config = format!(
            "global_defs {{\n    router_id {name}\n    vrrp_version {version}\n    script_user root\n}}\n\
             vrrp_instance web {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n\
             \x20   priority {priority}\n    advert_int {advert}\n{unicast}\
             \x20   virtual_ipaddress {{\n        10.99.0.100/24 dev eth0\n    }}\n}}\n",
            name = host.name
        );
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, config)?;
        Ok(KeepalivedNode {
            host: host.clone(),
            config: path,
            log: dir.join("keepalived.log"),
            dir,
            pid: None,
        })
    }

    /// Starts keepalived (VRRP only, foreground, own pid files) in the host's namespace.
    pub fn start(&mut self, lab: &mut Lab) -> io::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = lab.command(&self.host, "keepalived");
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--vrrp",
            "-f",
        ])
        .arg(&self.config)
        .arg("-p")
        .arg(self.dir.join("k.pid"))
        .arg("-r")
        .arg(self.dir.join("v.pid"))
        .arg("-c")
        .arg(self.dir.join("c.pid"))
        .stdout(log.try_clone()?)
        .stderr(log);
        let pid = lab.spawn(cmd)?;
        self.pid = Some(pid);
        Ok(pid)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log in which keepalived complains about a received packet.
    pub fn complaints(&self) -> Vec<String> {
        const PATTERNS: [&str; 8] = [
            "invalid",
            "Invalid",
            "wrong version",
            "mismatch",
            "bogus",
            "Discarding",
            "checksum",
            "TTL",
        ];
        self.log_text()
            .lines()
            .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
            .map(str::to_string)
            .collect()
    }
}

/// Whether a program is on PATH.
pub fn have_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs the shell script `body` as root in a throw-away root: a mount and a network namespace
/// of its own, where each of `overlays` (`"etc"`, `"usr"`, …) is an overlay on the host's (the
/// writes land below `scratch`), `/run` is empty, and `eth0` (10.0.0.11/24) and `eth1`
/// (192.168.100.11/24) exist, as the examples and imported configs expect. `body` marks its
/// steps with `step "what"`; returns whether it ran to the end, and everything it printed
/// (the last `== step` shown is the one that failed).
pub fn sandboxed(
    scratch: &Path,
    overlays: &[&str],
    body: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (bool, String) {
    let mut script = String::from(
        "set -eu\nstep() { echo \"== $*\"; }\nfor d in $OVERLAYS; do\n    mkdir -p \"$SCRATCH/$d.up\" \"$SCRATCH/$d.work\"\n    mount -t overlay overlay -o \"lowerdir=/$d,upperdir=$SCRATCH/$d.up,workdir=$SCRATCH/$d.work\" \"/$d\"\ndone\nmount -t tmpfs tmpfs /run\nip link set lo up\nip link add eth0 type veth peer name eth0-peer && ip addr add 10.0.0.11/24 dev eth0\nip link add eth1 type veth peer name eth1-peer && ip addr add 192.168.100.11/24 dev eth1\nfor l in eth0 eth0-peer eth1 eth1-peer; do ip link set \"$l\" up; done\n",
    );
    script.push_str(body);
    script.push_str("\nstep done\n");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(&script)
        .env("SCRATCH", scratch)
        .env("OVERLAYS", overlays.join(" "));
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success() && text.contains("== done"), text)
        }
        Err(e) => (false, format!("unshare: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parallel tests ask at the same moment; the answer must not depend on who asks first (an
    /// earlier version probed with a namespace named after the pid, so concurrent callers
    /// collided and tests skipped silently).
    #[test]
    fn heartbeat_sections_parse_to_the_links_they_describe() {
        let key = Path::new("/k");
        let parse = |hb: String| {
            let text = format!("[node]\nname = \"alpha\"\n{hb}");
            duet_config::parse("lab", &text).unwrap().heartbeat.unwrap()
        };
        let pair = parse(heartbeat_config(
            2,
            3,
            key,
            "two_node_policy = \"available\"",
        ));
        let links: Vec<(String, Vec<String>)> = pair
            .links
            .iter()
            .map(|l| {
                (
                    l.local.to_string(),
                    l.peers.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            links,
            [
                ("10.99.0.2:7946".into(), vec!["10.99.0.3:7946".to_string()]),
                (
                    "192.168.99.2:7946".into(),
                    vec!["192.168.99.3:7946".to_string()]
                ),
            ]
        );
        assert_eq!(pair.interval.0, Duration::from_millis(50));
        assert_eq!(pair.two_node_policy, duet_config::TwoNodePolicy::Available);
        let mesh = parse(heartbeat_mesh_config(2, &[3, 4], key, ""));
        assert_eq!(mesh.links.len(), 1);
        assert_eq!(mesh.links[0].peers.len(), 2);
        assert_eq!(mesh.links[0].peers[1].to_string(), "10.99.0.4:7946");
    }
}
