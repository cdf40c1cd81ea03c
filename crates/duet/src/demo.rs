//! `duet demo`: a live failover of the whole stack in a throw-away lab, no config and no sudo.
//!
//! The demo re-runs itself inside `unshare -r -n -m` (a user, network and mount namespace), mounts
//! a tmpfs on `/run` there so `ip netns` can work, and builds: a switch, two duet nodes (alpha,
//! priority 150 and beta, priority 100) with heartbeats on the LAN and a cable and a witness,
//! each with a tiny HTTP responder that names itself and a balancer on the VIP in front of two
//! app servers, a service that follows the VIP, and a client that polls the VIP and the balancer
//! every 10 ms. It kills alpha's daemon with SIGKILL, shows each layer move to beta and how long
//! it took, restarts alpha and shows it take everything back. When the demo ends, or on Ctrl-C,
//! its namespaces vanish with it: nothing touches the host's network.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::lab::{DuetNode, Lab, vrrp_config, wait_for};
use crate::labtools::ProbeLine;

const SANDBOX_ENV: &str = "DUET_DEMO_SANDBOX";
/// The PostgreSQL server the database part runs (Debian's `postgresql-15`).
const POSTGRES: &str = "/usr/lib/postgresql/15/bin/postgres";
const VIP: &str = "10.99.0.100";
/// Exit code of a demo that ran and failed (unshare itself exits 1 when it is refused).
const DEMO_FAILED: i32 = 3;

/// Runs the demo; returns the exit code.
pub fn run(interval: &str) -> i32 {
    if duet_time::parse_duration(interval).is_err() {
        eprintln!("duet demo: --advert-interval {interval:?} is not a duration such as \"100ms\"");
        return 2;
    }
    // As root with PostgreSQL 15, the demo runs in the host's namespace tools (labs are
    // network namespaces either way) and ends with the database pair: PostgreSQL refuses to
    // run as uid 0, which is all a rootless user namespace maps.
    let with_database = std::env::var_os(SANDBOX_ENV).is_none()
        && crate::lab::can_build_labs().is_ok()
        && std::path::Path::new(POSTGRES).exists();
    if std::env::var_os(SANDBOX_ENV).is_none() && !with_database {
        return enter_sandbox(interval);
    }
    if !with_database
        && let Err(e) = crate::lab::run("mount", &["-t", "tmpfs", "duet-demo", "/run"])
    {
        eprintln!("duet demo: cannot mount a private /run in the sandbox: {e}");
        return 1;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = stop.clone();
    let worker_flag = stop.clone();
    let interval = interval.to_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let code = match demo(&interval, &worker_stop).and_then(|()| {
            if with_database && !worker_stop.load(Ordering::SeqCst) {
                println!("\nthe database layer: a PostgreSQL pair, its primary's node killed\n");
                crate::demodb::demo(&worker_stop)
            } else {
                println!(
                    "\nthe database layer (a PostgreSQL pair failing over) needs root and PostgreSQL 15: sudo duet demo"
                );
                Ok(())
            }
        }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("\nduet demo: {e}");
                DEMO_FAILED
            }
        };
        let _ = done_tx.send(());
        code
    });
    // Wait for the demo or Ctrl-C; on Ctrl-C the worker sees `stop`, drops the lab and exits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let done = tokio::task::spawn_blocking(move || done_rx.recv());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: cleaning up the lab");
                worker_flag.store(true, Ordering::SeqCst);
            }
            _ = done => {}
        }
    });
    let code = worker.join().unwrap_or(1);
    if stop.load(Ordering::SeqCst) {
        130
    } else {
        code
    }
}

fn enter_sandbox(interval: &str) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("duet demo: cannot find my own executable: {e}");
            return 1;
        }
    };
    // Ctrl-C reaches both processes; the inner one cleans up, so this one keeps waiting for it.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet demo: {e}");
            return 1;
        }
    };
    let status = rt.block_on(async {
        let mut child = tokio::process::Command::new("unshare")
            .args(["-r", "-n", "-m", "--propagation", "private", "--"])
            .arg(&exe)
            .args(["demo", "--advert-interval", interval])
            .env(SANDBOX_ENV, "1")
            .spawn()?;
        loop {
            tokio::select! {
                status = child.wait() => return status,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    });
    match status {
        Ok(s) if s.success() => 0,
        Ok(s) => {
            if s.code() == Some(1) {
                eprintln!(
                    "duet demo needs unprivileged user namespaces (`unshare -r -n -m` must work) or root.\n\
                     If the line above says `unshare failed: Operation not permitted`, run `sudo duet demo`,\n\
                     or enable them: sysctl -w kernel.unprivileged_userns_clone=1 (Debian) /\n\
                     sysctl -w user.max_user_namespaces=15000."
                );
            }
            s.code().unwrap_or(1)
        }
        Err(e) => {
            eprintln!("duet demo: cannot run `unshare` (util-linux): {e}");
            1
        }
    }
}

struct Demo {
    lab: Lab,
    exe: PathBuf,
    alpha: DuetNode,
    beta: DuetNode,
    /// The client's view of the VIP (the node that answers on :8080).
    vip_rx: mpsc::Receiver<ProbeLine>,
    /// The client's view of the balancer on the VIP (the backend that answers on :80).
    lb_rx: mpsc::Receiver<ProbeLine>,
    start: Instant,
}

/// The node's config: the VIP, heartbeats on two links with a witness, a balancer on the VIP
/// in front of app1 and app2, and a service that follows the VIP (it marks `service.NODE` in
/// the lab directory while it runs).
fn node_config(
    lab: &Lab,
    key: &std::path::Path,
    name: &str,
    me: u8,
    peer: u8,
    interval: &str,
) -> String {
    let garp = "garp = { count = 3, interval = \"10ms\" }";
    let prio = if me == 2 { 150 } else { 100 };
    let mark = lab.dir().join(format!("service.{name}"));
    let mark = mark.display();
    format!(
        r#"{vrrp}{heartbeat}
[[balancer]]
name = "web"
bind = "{VIP}:80"
mode = "http"
backends = [{{ address = "10.99.0.21:8080" }}, {{ address = "10.99.0.22:8080" }}]
check = {{ path = "/", interval = "500ms", rise = 1, fall = 2 }}

[[service]]
name = "app"
follows = "web"
kind = "exec"
start = ["/bin/sh", "-c", "touch {mark}"]
stop = ["/bin/sh", "-c", "rm -f {mark}"]
monitor = ["/bin/sh", "-c", "test -e {mark}"]
interval = "500ms"
"#,
        vrrp = vrrp_config(name, prio, interval, garp),
        heartbeat = crate::lab::heartbeat_config(me, peer, key, &crate::lab::witness_config(20)),
    )
}

fn demo(interval: &str, stop: &AtomicBool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let e = |e: std::io::Error| e.to_string();
    println!(
        "duet demo: two nodes, one VIP, a balancer and a service, advert interval {interval}\n"
    );
    let mut lab = Lab::new("demo").map_err(e)?;
    let alpha_host = lab.add_host("alpha", 2).map_err(e)?;
    let beta_host = lab.add_host("beta", 3).map_err(e)?;
    let witness = lab.add_host("witness", 20).map_err(e)?;
    let app1 = lab.add_host("app1", 21).map_err(e)?;
    let app2 = lab.add_host("app2", 22).map_err(e)?;
    let client = lab.add_host("client", 10).map_err(e)?;
    lab.add_direct_link(&alpha_host, &beta_host).map_err(e)?;
    println!(
        "  lab      switch + alpha {} + beta {} (and a heartbeat cable) + witness {} + app1 {} + app2 {} + client {}",
        alpha_host.ipv4, beta_host.ipv4, witness.ipv4, app1.ipv4, app2.ipv4, client.ipv4
    );
    println!(
        "  VIP      {VIP}/24, VRRPv3, alpha priority 150, beta 100; heartbeats on two links, a witness"
    );
    println!(
        "  balancer http://{VIP}:80/ on both nodes -> app1, app2 (round robin, health checks)"
    );
    println!("  service  \"app\" runs only on the VIP's master\n");
    let key = lab.cluster_key().map_err(e)?;
    lab.start_witness(&exe, &witness, &key).map_err(e)?;
    lab.start_responders(&exe, &[&alpha_host, &beta_host, &app1, &app2])
        .map_err(e)?;
    let mut alpha = DuetNode::new(
        &lab,
        &alpha_host,
        &node_config(&lab, &key, "alpha", 2, 3, interval),
    )
    .map_err(e)?;
    let mut beta = DuetNode::new(
        &lab,
        &beta_host,
        &node_config(&lab, &key, "beta", 3, 2, interval),
    )
    .map_err(e)?;
    beta.start(&mut lab, &exe).map_err(e)?;
    alpha.start(&mut lab, &exe).map_err(e)?;
    let serving = |lab: &Lab, n: &str| lab.dir().join(format!("service.{n}")).exists();
    let up = wait_for(Duration::from_secs(15), || {
        stop.load(Ordering::SeqCst)
            || (alpha.state(&lab, &exe).as_deref() == Some("MASTER") && serving(&lab, "alpha"))
    });
    if up.is_none() {
        return Err(format!(
            "alpha did not become master with its service; its log:\n{}",
            alpha.log_text()
        ));
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    println!("  alpha is MASTER and runs the service; beta is BACKUP\n");
    let vip_rx = lab
        .probe(&exe, &client, &format!("{VIP}:8080"))
        .map_err(e)?;
    let lb_rx = lab.probe(&exe, &client, &format!("{VIP}:80")).map_err(e)?;
    let mut d = Demo {
        lab,
        exe,
        alpha,
        beta,
        vip_rx,
        lb_rx,
        start: Instant::now(),
    };
    println!(
        "  the client polls every 10 ms      VIP: █ alpha ▒ beta · none    balancer: 1 app1 2 app2 · none\n"
    );
    d.show(Duration::from_millis(1500), stop);

    let pid = d.alpha.pid.ok_or("alpha is not running")?;
    println!("  >>> kill -9 duet on alpha (pid {pid}): the master crashes");
    let killed = Instant::now();
    duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, false).map_err(e)?;
    let mut moved = Moved::default();
    d.show_until(Duration::from_secs(8), stop, &mut moved, "beta");
    d.show(Duration::from_millis(750), stop);
    let vip = VIP.parse().expect("VIP");
    let alpha_has_vip = d.lab.has_address(&d.alpha.host, vip);
    d.lab.reap(pid);
    let ms = |t: Option<Instant>| {
        t.map_or("did not move within 8 s".into(), |t| {
            format!("{:.0} ms", (t - killed).as_secs_f64() * 1000.0)
        })
    };
    println!(
        "\n  after the crash: alpha's guardian {} its VIP and said priority 0 at once; beta waited for\n  \
         alpha's witness lease to run out (so the two never serve together), then:\n    \
         VIP answers from beta        {}\n    \
         balancer answers via beta    {}\n    \
         service started on beta      {}\n",
        if alpha_has_vip {
            "did NOT remove (bug)"
        } else {
            "removed"
        },
        ms(moved.vip),
        ms(moved.lb),
        ms(moved.service),
    );
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }

    println!(
        "  >>> restart duet on alpha: it has the higher priority, so it takes everything back"
    );
    let restarted = Instant::now();
    d.alpha.start(&mut d.lab, &d.exe).map_err(e)?;
    let mut back = Moved::default();
    d.show_until(Duration::from_secs(8), stop, &mut back, "alpha");
    d.show(Duration::from_millis(750), stop);
    if let Some(t) = back.vip {
        println!(
            "\n  alpha answers again {:.0} ms after its restart; beta stopped the service first, then alpha started it\n",
            (t - restarted).as_secs_f64() * 1000.0
        );
    }
    for node in [&d.alpha, &d.beta] {
        let out = d
            .lab
            .command(&node.host, &d.exe)
            .args(["status", "-c"])
            .arg(&node.config)
            .output()
            .map_err(e)?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        println!();
    }
    println!("  done: the lab is being removed (namespaces vanish with the demo)");
    Ok(())
}

/// When each layer first showed the new master.
#[derive(Debug, Default)]
struct Moved {
    vip: Option<Instant>,
    lb: Option<Instant>,
    service: Option<Instant>,
}

impl Moved {
    fn all(&self) -> bool {
        self.vip.is_some() && self.lb.is_some() && self.service.is_some()
    }
}

impl Demo {
    /// Prints timeline rows for `d`.
    fn show(&mut self, d: Duration, stop: &AtomicBool) {
        self.show_until(d, stop, &mut Moved::default(), "");
    }

    /// Prints timeline rows (one per 250 ms) until every layer has moved to `to` (the VIP
    /// answers from it, the balancer answers while it holds the VIP, its service runs) or
    /// `limit` passes.
    fn show_until(&mut self, limit: Duration, stop: &AtomicBool, moved: &mut Moved, to: &str) {
        let until = Instant::now() + limit;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            let row_end = Instant::now() + Duration::from_millis(250);
            let mut vip_row = String::new();
            let mut lb_row = String::new();
            while let Some(left) = row_end.checked_duration_since(Instant::now()) {
                match self
                    .vip_rx
                    .recv_timeout(left.min(Duration::from_millis(20)))
                {
                    Ok(line) => {
                        vip_row.push(match line.node.as_deref() {
                            Some("alpha") => '█',
                            Some("beta") => '▒',
                            _ => '·',
                        });
                        if !to.is_empty() && line.node.as_deref() == Some(to) {
                            moved.vip.get_or_insert_with(Instant::now);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                while let Ok(line) = self.lb_rx.try_recv() {
                    lb_row.push(match line.node.as_deref() {
                        Some("app1") => '1',
                        Some("app2") => '2',
                        _ => '·',
                    });
                    if moved.vip.is_some() && line.node.is_some() {
                        moved.lb.get_or_insert_with(Instant::now);
                    }
                }
            }
            let runs = |n: &str| self.lab.dir().join(format!("service.{n}")).exists();
            let service = match (runs("alpha"), runs("beta")) {
                (true, false) => "alpha",
                (false, true) => "beta",
                (false, false) => "-",
                (true, true) => "BOTH (bug)",
            };
            if !to.is_empty() && service == to {
                moved.service.get_or_insert_with(Instant::now);
            }
            println!(
                "  {:>6.2}s  {vip_row:<25}  {lb_row:<25}  service: {service}",
                self.start.elapsed().as_secs_f64()
            );
            if !to.is_empty() && moved.all() {
                return;
            }
        }
    }
}
