//! `cargo xtask bench db`: database failover timings in the namespace lab, with a writer that
//! records every acknowledged commit through the write VIP.
//!
//! One lab, one pair, many faults in a row (the pair bootstraps once): node kill -9 (every
//! process of the primary's node) → first acknowledged write, then the old primary's rejoin;
//! postmaster kill -9 → writes back; switchover → writes back. After each fault every
//! acknowledged row must be on the primary. `--audit N` runs N node-kill failovers in a row
//! and checks the audit after each (the 50-failover audit).
//!
//! `--patroni` runs the node-kill fault on duet and, in the same run and the same kind of lab,
//! on Patroni 4 + etcd at its defaults and at its fastest allowed settings.

use std::time::{Duration, Instant};

use duet::labdb::{DbPair, drain, first_ack_after, unix_now, wait_acks};
use duet::labpg::WriteLine;

pub fn main(args: &[&str]) -> i32 {
    let mut runs = 10usize;
    let mut audit = 0usize;
    let mut patroni = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--audit" => audit = it.next().and_then(|v| v.parse().ok()).unwrap_or(50),
            "--patroni" => patroni = true,
            other => {
                eprintln!("unknown argument {other} (--runs N, --audit N)");
                return 2;
            }
        }
    }
    if patroni {
        return match compare(runs) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench db --patroni: {e}");
                1
            }
        };
    }
    match bench(runs, audit) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench db: {e}");
            1
        }
    }
}

struct Rig {
    pair: DbPair,
    rx: std::sync::mpsc::Receiver<WriteLine>,
    lines: Vec<WriteLine>,
    primary: usize,
}

impl Rig {
    /// A bootstrapped synchronous pair whose writer already has 50 acknowledgements.
    fn start(exe: std::path::PathBuf) -> Result<Rig, String> {
        let lab = duet::lab::Lab::new("bdb").map_err(|e| e.to_string())?;
        let mut pair = DbPair::start(lab, exe, "on");
        let primary = pair.wait_pair(Duration::from_secs(90), true);
        let rx = pair.writer();
        let mut rig = Rig {
            pair,
            rx,
            lines: Vec::new(),
            primary,
        };
        if !wait_acks(&rig.rx, &mut rig.lines, 0.0, 50, Duration::from_secs(30)) {
            return Err(format!(
                "the writer got no acknowledgements\n{}",
                rig.pair.logs()
            ));
        }
        Ok(rig)
    }

    /// Waits for `n` acknowledgements after `t`; the seconds from `t` to the first one after
    /// the outage.
    fn writes_back(&mut self, t: f64, what: &str) -> Result<f64, String> {
        if !wait_acks(&self.rx, &mut self.lines, t, 20, Duration::from_secs(60)) {
            return Err(format!(
                "{what}: no writes within 60 s\n{}",
                self.pair.logs()
            ));
        }
        first_ack_after(&self.lines, t).ok_or_else(|| format!("{what}: no acknowledgement"))
    }

    fn audit(&mut self) -> usize {
        drain(&self.rx, &mut self.lines);
        self.pair.audit(&self.lines, self.primary)
    }

    fn primary_now(&self) -> Result<usize, String> {
        (0..2)
            .find(|&i| {
                self.pair
                    .db(i)
                    .is_some_and(|d| d.role == "primary" && d.writable)
            })
            .ok_or_else(|| "no writable primary".to_string())
    }

    /// The last `pg_promote` duration duet logged on node `i`.
    fn last_promote_ms(&self, i: usize) -> Option<f64> {
        let log = self.pair.nodes[i].log_text();
        let line = log.lines().rev().find(|l| l.contains("(pg_promote)"))?;
        let ms = line.split("promoted in ").nth(1)?.split(' ').next()?;
        ms.parse().ok()
    }

    /// kill -9 of every process on the primary's node: (first write, pg_promote, rejoin).
    fn node_kill(&mut self) -> Result<(f64, f64, f64), String> {
        let old = self.primary;
        let t = unix_now();
        self.pair.kill_node(old);
        let failover = self.writes_back(t, "node kill")?;
        self.primary = self.primary_now()?;
        let promote = self.last_promote_ms(self.primary).unwrap_or(f64::NAN) / 1000.0;
        let back = Instant::now();
        let exe = self.pair.exe.clone();
        self.pair.nodes[old]
            .start(&mut self.pair.lab, &exe)
            .map_err(|e| e.to_string())?;
        let rejoined = duet::lab::wait_for(Duration::from_secs(60), || {
            self.pair
                .db(old)
                .is_some_and(|d| d.role == "replica" && d.streaming)
        });
        if rejoined.is_none() {
            return Err(format!(
                "the old primary did not rejoin\n{}",
                self.pair.logs()
            ));
        }
        let rejoin = back.elapsed().as_secs_f64();
        // Back to synchronous before the next fault: otherwise the next one measures relaxing.
        self.pair.wait_pair(Duration::from_secs(60), true);
        Ok((failover, promote, rejoin))
    }

    fn postmaster_kill(&mut self) -> Result<f64, String> {
        let t = unix_now();
        let pid = self.pair.postmaster(self.primary);
        let _ = duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, false);
        let back = self.writes_back(t, "postmaster kill")?;
        self.primary = self.primary_now()?;
        self.pair.wait_pair(Duration::from_secs(60), true);
        Ok(back)
    }

    fn switchover(&mut self) -> Result<f64, String> {
        let t = unix_now();
        let node = &self.pair.nodes[self.primary];
        let out = self
            .pair
            .lab
            .command(&node.host, &self.pair.exe)
            .args(["switchover", "--no-wait", "-c"])
            .arg(&node.config)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        let to = 1 - self.primary;
        let done = duet::lab::wait_for(Duration::from_secs(60), || {
            self.pair
                .db(to)
                .is_some_and(|d| d.role == "primary" && d.writable)
        });
        if done.is_none() {
            return Err(format!("switchover did not finish\n{}", self.pair.logs()));
        }
        let back = self.writes_back(t, "switchover")?;
        self.primary = to;
        self.pair.wait_pair(Duration::from_secs(60), true);
        Ok(back)
    }
}

fn bench(runs: usize, audit: usize) -> Result<(), String> {
    duet::lab::can_build_labs()?;
    let exe = crate::build_duet()?;
    run_faults(Rig::start(exe)?, runs, audit)
}

/// Runs the faults on a started pair.
fn run_faults(mut rig: Rig, runs: usize, audit: usize) -> Result<(), String> {
    println!(
        "# cargo xtask bench db: {} ({})",
        crate::utc_now(),
        crate::machine()
    );
    println!(
        "# synchronous = on, witness lease 2s, heartbeat 50ms x 5, writer every 10 ms through the write VIP"
    );
    if audit > 0 {
        for i in 0..audit {
            let (f, _, _) = rig.node_kill()?;
            let n = rig.audit();
            println!(
                "failover {:>2}: first write after {f:.2} s; {n} acknowledged rows, all on the primary",
                i + 1
            );
        }
        println!(
            "audit: {audit} consecutive failovers, {} acknowledged rows, 0 lost",
            rig.audit()
        );
        return Ok(());
    }
    let mut kill = Vec::new();
    let mut promote = Vec::new();
    let mut rejoin = Vec::new();
    let mut crash = Vec::new();
    let mut switch = Vec::new();
    for i in 0..runs {
        let (f, p, r) = rig.node_kill()?;
        kill.push(f);
        promote.push(p);
        rejoin.push(r);
        crash.push(rig.postmaster_kill()?);
        switch.push(rig.switchover()?);
        eprintln!(
            "run {:>2}: node kill {f:.2} s (pg_promote {p:.3} s, rejoin {r:.2} s), postmaster {:.2} s, switchover {:.2} s",
            i + 1,
            crash[i],
            switch[i]
        );
    }
    let rows = rig.audit();
    println!();
    println!("| fault ({runs} runs) | min | median | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("node kill -9 → first acknowledged write", &kill),
        ("raw `pg_promote` (inside the above)", &promote),
        ("postmaster kill -9 → writes back", &crash),
        ("switchover → writes back", &switch),
        ("old primary restarted → streaming again (rejoin)", &rejoin),
    ] {
        let (lo, med, hi) =
            crate::failover::min_median_max(v.clone()).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        println!("| {name} | {lo:.2} s | {med:.2} s | {hi:.2} s |");
    }
    println!();
    println!(
        "audit: {rows} acknowledged rows over {} faults, all on the final primary",
        runs * 3
    );
    Ok(())
}

/// duet against Patroni (defaults, and fastest allowed), node kill -9, `runs` each.
fn compare(runs: usize) -> Result<(), String> {
    duet::lab::can_build_labs()?;
    crate::patroni::ensure()?;
    let exe = crate::build_duet()?;
    let mut rig = Rig::start(exe.clone())?;
    let mut duet_kill = Vec::new();
    let mut duet_rejoin = Vec::new();
    for i in 0..runs {
        let (f, _, r) = rig.node_kill()?;
        eprintln!(
            "duet: run {:>2}: node kill {f:.2} s, rejoin {r:.2} s",
            i + 1
        );
        duet_kill.push(f);
        duet_rejoin.push(r);
    }
    let rows = rig.audit();
    drop(rig);
    let defaults = crate::patroni::Timing {
        ttl: 30,
        loop_wait: 10,
        retry_timeout: 10,
    };
    let fastest = crate::patroni::Timing {
        ttl: 20,
        loop_wait: 1,
        retry_timeout: 3,
    };
    let pd = crate::patroni::node_kills(&exe, defaults, runs)?;
    let pf = crate::patroni::node_kills(&exe, fastest, runs)?;
    println!(
        "# cargo xtask bench db --patroni: {} ({})",
        crate::utc_now(),
        crate::machine()
    );
    println!(
        "# node kill -9 (every process of the primary's node) -> first acknowledged write; synchronous; {runs} runs each"
    );
    println!();
    println!("| system | min | median | max | rejoin median |");
    println!("|---|---|---|---|---|");
    let med = |v: &[f64]| {
        crate::failover::min_median_max(v.to_vec()).unwrap_or((f64::NAN, f64::NAN, f64::NAN))
    };
    let (lo, m, hi) = med(&duet_kill);
    let duet_median = m;
    println!(
        "| duet (witness lease 2 s) | {lo:.2} s | {m:.2} s | {hi:.2} s | {:.2} s |",
        med(&duet_rejoin).1
    );
    for (name, v) in [
        (
            "Patroni 4 + etcd, defaults (ttl 30, loop_wait 10, retry 10)",
            &pd,
        ),
        (
            "Patroni 4 + etcd, fastest (ttl 20, loop_wait 1, retry 3)",
            &pf,
        ),
    ] {
        let kills: Vec<f64> = v.iter().map(|x| x.0).collect();
        let rejoins: Vec<f64> = v.iter().map(|x| x.1).collect();
        let (lo, m, hi) = med(&kills);
        println!(
            "| {name} | {lo:.2} s | {m:.2} s | {hi:.2} s | {:.2} s |",
            med(&rejoins).1
        );
        println!("|   ratio duet / this | | {:.2} | | |", duet_median / m);
    }
    println!();
    println!("duet audit: {rows} acknowledged rows, all on the final primary");
    Ok(())
}
