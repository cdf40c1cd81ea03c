//! `duet demo`: a live failover in a throw-away lab, no config and no sudo needed.
//!
//! The demo re-runs itself inside `unshare -r -n -m` (a user, network and mount namespace), mounts
//! a tmpfs on `/run` there so `ip netns` can work, and builds: a switch, two duet nodes (alpha,
//! priority 150 and beta, priority 100) each with a tiny HTTP responder that names itself, and a
//! client that polls the VIP every 10 ms. It kills alpha's daemon with SIGKILL, shows who answers
//! and how long the VIP was unreachable, restarts alpha and shows it take the VIP back. When the
//! demo ends, or on Ctrl-C, its namespaces vanish with it: nothing touches the host's network.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::lab::{DuetNode, Lab, vrrp_config, wait_for};
use crate::labtools::ProbeLine;

const SANDBOX_ENV: &str = "DUET_DEMO_SANDBOX";
const VIP: &str = "10.99.0.100";
/// Exit code of a demo that ran and failed (unshare itself exits 1 when it is refused).
const DEMO_FAILED: i32 = 3;

/// Runs the demo; returns the exit code.
pub fn run(interval: &str) -> i32 {
    if duet_time::parse_duration(interval).is_err() {
        eprintln!("duet demo: --advert-interval {interval:?} is not a duration such as \"100ms\"");
        return 2;
    }
    if std::env::var_os(SANDBOX_ENV).is_none() {
        return enter_sandbox(interval);
    }
    if let Err(e) = crate::lab::run("mount", &["-t", "tmpfs", "duet-demo", "/run"]) {
        eprintln!("duet demo: cannot mount a private /run in the sandbox: {e}");
        return 1;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = stop.clone();
    let worker_flag = stop.clone();
    let interval = interval.to_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let code = match demo(&interval, &worker_stop) {
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
    probe_rx: mpsc::Receiver<ProbeLine>,
    start: Instant,
}

fn demo(interval: &str, stop: &AtomicBool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let e = |e: std::io::Error| e.to_string();
    println!("duet demo: VIP failover between two nodes, advert interval {interval}\n");
    let mut lab = Lab::new("demo").map_err(e)?;
    let alpha_host = lab.add_host("alpha", 2).map_err(e)?;
    let beta_host = lab.add_host("beta", 3).map_err(e)?;
    let client = lab.add_host("client", 10).map_err(e)?;
    println!(
        "  lab     switch + alpha {} + beta {} + client {}",
        alpha_host.ipv4, beta_host.ipv4, client.ipv4
    );
    println!("  VIP     {VIP}/24, VRRPv3, alpha priority 150, beta priority 100, preempt on");
    lab.start_responders(&exe, &[&alpha_host, &beta_host])
        .map_err(e)?;
    let garp = "garp = { count = 3, interval = \"10ms\" }";
    let mut alpha = DuetNode::new(
        &lab,
        &alpha_host,
        &vrrp_config("alpha", 150, interval, garp),
    )
    .map_err(e)?;
    let mut beta =
        DuetNode::new(&lab, &beta_host, &vrrp_config("beta", 100, interval, garp)).map_err(e)?;
    beta.start(&mut lab, &exe).map_err(e)?;
    alpha.start(&mut lab, &exe).map_err(e)?;
    let up = wait_for(Duration::from_secs(10), || {
        stop.load(Ordering::SeqCst) || alpha.state(&lab, &exe).as_deref() == Some("MASTER")
    });
    if up.is_none() {
        return Err(format!(
            "alpha did not become master; its log:\n{}",
            alpha.log_text()
        ));
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    println!("  alpha is MASTER, beta is BACKUP\n");
    let probe_rx = lab
        .probe(&exe, &client, &format!("{VIP}:8080"))
        .map_err(e)?;
    let mut d = Demo {
        lab,
        exe,
        alpha,
        beta,
        probe_rx,
        start: Instant::now(),
    };
    println!("  client polls http://{VIP}:8080/ every 10 ms   █ alpha   ▒ beta   · no answer\n");
    d.show(Duration::from_millis(1500), stop);

    let pid = d.alpha.pid.ok_or("alpha is not running")?;
    println!("  >>> kill -9 duet on alpha (pid {pid}): the master crashes");
    let killed = Instant::now();
    duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, false).map_err(e)?;
    let mut first_beta = None;
    d.show_until(Duration::from_secs(5), stop, |line| {
        if line.node.as_deref() == Some("beta") && first_beta.is_none() {
            first_beta = Some(Instant::now());
        }
        first_beta.is_some()
    });
    d.show(Duration::from_millis(1000), stop);
    let vip = VIP.parse().expect("VIP");
    let alpha_has_vip = d.lab.has_address(&d.alpha.host, vip);
    d.lab.reap(pid);
    match first_beta {
        Some(t) => println!(
            "\n  beta answers {:.0} ms after the crash; alpha's guardian sent priority 0 and {}\n",
            (t - killed).as_secs_f64() * 1000.0,
            if alpha_has_vip {
                "the VIP is STILL on alpha (bug)"
            } else {
                "removed alpha's VIP"
            }
        ),
        None => println!("\n  beta did not take over within 5 s (see logs in the lab dir)\n"),
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }

    println!("  >>> restart duet on alpha: it has the higher priority, so it preempts");
    let restarted = Instant::now();
    d.alpha.start(&mut d.lab, &d.exe).map_err(e)?;
    let mut back = None;
    d.show_until(Duration::from_secs(5), stop, |line| {
        if line.node.as_deref() == Some("alpha") && back.is_none() {
            back = Some(Instant::now());
        }
        back.is_some()
    });
    d.show(Duration::from_millis(750), stop);
    if let Some(t) = back {
        println!(
            "\n  alpha answers again {:.0} ms after its restart (a full master down interval, as the RFC says)\n",
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

impl Demo {
    /// Prints timeline rows for `d`.
    fn show(&mut self, d: Duration, stop: &AtomicBool) {
        self.show_until(d, stop, |_| false);
    }

    /// Prints timeline rows (one per 250 ms) until `done` returns true for a probe line (the row
    /// in progress is completed first) or `limit` passes.
    fn show_until(
        &mut self,
        limit: Duration,
        stop: &AtomicBool,
        mut done: impl FnMut(&ProbeLine) -> bool,
    ) {
        let until = Instant::now() + limit;
        let mut finished = false;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            let row_end = Instant::now() + Duration::from_millis(250);
            let mut row = String::new();
            while let Some(left) = row_end.checked_duration_since(Instant::now()) {
                match self.probe_rx.recv_timeout(left) {
                    Ok(line) => {
                        row.push(match line.node.as_deref() {
                            Some("alpha") => '█',
                            Some("beta") => '▒',
                            _ => '·',
                        });
                        finished |= done(&line);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            println!("  {:>6.2}s  {row}", self.start.elapsed().as_secs_f64());
            if finished {
                return;
            }
        }
    }
}
