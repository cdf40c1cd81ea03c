//! VIP failover time, duet vs keepalived, in one namespace lab.
//!
//! Both nodes run the same implementation (keepalived pair or duet pair), priorities 150/100, the
//! same advert interval. A client polls `http://VIP:8080/` every 2 ms (10 ms timeout) and each
//! node's responder answers with its name. Time = from the fault to the first answer that comes
//! from the new master (the old node may still answer after a kill, from a stale ARP entry).
//! Runs alternate between the implementations so machine noise hits both alike.
//!
//! `--heartbeat` runs the split-brain suite instead: keepalived next to duet with heartbeats
//! every 50 ms × 5 misses (250 ms) on the LAN and a direct cable, at the same detection budget
//! (both advertise every 70 ms: VRRP's master-down interval is then 253 ms), in two duet
//! set-ups: `available` without a witness (keepalived's trade) and a witness with the default
//! lease and VIP lifetime (the shortest allowed). For duet it also reports
//! when the backup detected the death (its log line "silent on every heartbeat link").

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duet::lab::{
    DuetNode, Host, KeepalivedNode, Lab, heartbeat_config, vrrp_config, wait_for, witness_config,
};
use duet::labtools::ProbeLine;
use duet_sys::process::{SIGKILL, SIGTERM};

const VIP: &str = "10.99.0.100";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Keepalived,
    Duet,
    /// duet with `[heartbeat]` (50 ms × 5, two links).
    DuetHeartbeat(Guard),
}

/// What guards a heartbeat pair against split brain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// No witness, `two_node_policy = "available"`.
    Available,
    /// A witness, lease 2 s, VIP lifetime 1 s (the defaults, and the shortest allowed: kernel
    /// lifetimes are whole seconds and the lease must be at least twice as long).
    Witness,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Keepalived => "keepalived",
            Impl::Duet => "duet",
            Impl::DuetHeartbeat(Guard::Available) => "duet, heartbeat, available",
            Impl::DuetHeartbeat(Guard::Witness) => {
                "duet, heartbeat + witness (lease 2 s, VIP lifetime 1 s)"
            }
        }
    }

    /// The `[heartbeat]` section's extra lines.
    fn cluster(self) -> Option<String> {
        match self {
            Impl::DuetHeartbeat(Guard::Available) => Some("two_node_policy = \"available\"".into()),
            Impl::DuetHeartbeat(Guard::Witness) => Some(witness_config(20)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// SIGKILL to every process of the master's daemon (keepalived's parent and children; duet's
    /// daemon and guardian): nothing can say goodbye.
    KillGroup,
    /// SIGKILL to the process that runs VRRP (keepalived's VRRP child; duet's daemon, whose
    /// guardian survives).
    KillVrrp,
    /// The master's cable goes dead (switch port down).
    LinkDown,
    /// SIGTERM: priority 0.
    Graceful,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::KillGroup => "kill -9, all daemon processes",
            Mode::KillVrrp => "kill -9, VRRP process only",
            Mode::LinkDown => "master link down",
            Mode::Graceful => "graceful stop (SIGTERM)",
        }
    }
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "kill-group" => Some(Mode::KillGroup),
            "kill-vrrp" => Some(Mode::KillVrrp),
            "link-down" => Some(Mode::LinkDown),
            "graceful" => Some(Mode::Graceful),
            _ => None,
        }
    }
}

struct Sample {
    /// `None` when the old master won again before the backup took over (keepalived respawns a
    /// killed VRRP child, which may win the election again).
    takeover: Option<Duration>,
    vip_left: bool,
    /// duet with heartbeats: when the backup logged that the master is silent on every link.
    detected: Option<Duration>,
}

struct Rig {
    lab: Lab,
    exe: PathBuf,
    alpha: Host,
    beta: Host,
    probe: Receiver<ProbeLine>,
    key: PathBuf,
}

pub fn main(args: &[&str]) -> i32 {
    // 20 runs: with the fault at a random point of a 100 ms cycle, 10 leave the median ±10 ms.
    let mut runs = 20usize;
    let mut interval = "100ms".to_string();
    let mut modes = vec![
        Mode::KillGroup,
        Mode::KillVrrp,
        Mode::LinkDown,
        Mode::Graceful,
    ];
    let mut impls = vec![Impl::Keepalived, Impl::Duet];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--heartbeat" => {
                impls = vec![
                    Impl::Keepalived,
                    Impl::DuetHeartbeat(Guard::Available),
                    Impl::DuetHeartbeat(Guard::Witness),
                ];
                interval = "70ms".into();
                modes = vec![Mode::KillGroup, Mode::LinkDown, Mode::Graceful];
                runs = runs.min(10);
            }
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--interval" => interval = it.next().map(|s| s.to_string()).unwrap_or(interval),
            "--modes" => {
                modes = it
                    .next()
                    .map(|m| m.split(',').filter_map(Mode::parse).collect())
                    .unwrap_or(modes)
            }
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    match bench(runs, &interval, &modes, &impls) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench failover: {e}");
            1
        }
    }
}

fn bench(runs: usize, interval: &str, modes: &[Mode], impls: &[Impl]) -> Result<(), String> {
    duet::lab::can_build_labs()?;
    crate::ensure_packages(&[("keepalived", "keepalived")])?;
    let exe = crate::build_duet()?;
    let mut rig = rig(&exe)?;
    let mut results = Vec::new();
    for &mode in modes {
        let mut per: Vec<Vec<Sample>> = impls.iter().map(|_| Vec::new()).collect();
        for run in 0..runs {
            for (i, &imp) in impls.iter().enumerate() {
                // Golden-ratio steps cover [0, 1) evenly whatever the number of runs.
                let phase = (run as f64 * 0.618_033_988_7).fract();
                let s = run_once(&mut rig, imp, mode, interval, phase)
                    .map_err(|e| format!("{} run {run} {imp:?}: {e}", mode.label()))?;
                let time = match s.takeover {
                    Some(t) => format!("{:>7.1} ms", t.as_secs_f64() * 1000.0),
                    None => "old master won again".to_string(),
                };
                let detected = s.detected.map_or(String::new(), |t| {
                    format!("  (detected {:.1} ms)", t.as_secs_f64() * 1000.0)
                });
                eprintln!(
                    "{:<32} run {run:>2} {:<10} {time}{detected}{}",
                    mode.label(),
                    imp.label(),
                    if s.vip_left {
                        "  (VIP left on old master)"
                    } else {
                        ""
                    }
                );
                per[i].push(s);
            }
        }
        results.push((mode, per));
    }
    if impls.len() == 2 {
        let pairs: Vec<_> = results
            .into_iter()
            .map(|(m, mut per)| {
                let d = per.pop().unwrap_or_default();
                let k = per.pop().unwrap_or_default();
                (m, k, d)
            })
            .collect();
        print_table(runs, interval, &pairs);
    } else {
        print_heartbeat_table(runs, interval, impls, &results);
    }
    Ok(())
}

fn rig(exe: &Path) -> Result<Rig, String> {
    let e = |e: std::io::Error| e.to_string();
    let mut lab = Lab::new("bf").map_err(e)?;
    let alpha = lab.add_host("alpha", 2).map_err(e)?;
    let beta = lab.add_host("beta", 3).map_err(e)?;
    let client = lab.add_host("client", 10).map_err(e)?;
    // For the heartbeat suite: a direct cable and a witness (unused by the other runs).
    let witness = lab.add_host("witness", 20).map_err(e)?;
    lab.add_direct_link(&alpha, &beta).map_err(e)?;
    let key = lab.cluster_key().map_err(e)?;
    lab.start_witness(exe, &witness, &key).map_err(e)?;
    lab.start_responders(exe, &[&alpha, &beta]).map_err(e)?;
    let probe = lab
        .probe_with(exe, &client, &format!("{VIP}:8080"), "2ms", "10ms")
        .map_err(e)?;
    Ok(Rig {
        lab,
        exe: exe.to_path_buf(),
        alpha,
        beta,
        probe,
        key,
    })
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Waits for an answer from `node` probed at or after `since` (epoch seconds).
fn answer_from(
    probe: &Receiver<ProbeLine>,
    node: &str,
    since: f64,
    limit: Duration,
) -> Option<f64> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(l) = probe.recv_timeout(Duration::from_millis(50))
            && l.t >= since
            && l.node.as_deref() == Some(node)
        {
            return Some(l.t);
        }
    }
    None
}

fn run_once(
    rig: &mut Rig,
    imp: Impl,
    mode: Mode,
    interval: &str,
    phase: f64,
) -> Result<Sample, String> {
    let e = |e: std::io::Error| e.to_string();
    // Start backup first, then master, as an operator would.
    let mut beta_log = None;
    let (alpha_pid, vrrp_pid_file, beta_pid) = match imp {
        Impl::Keepalived => {
            let mut b = KeepalivedNode::new(&rig.lab, &rig.beta, 100, interval, None).map_err(e)?;
            let mut a =
                KeepalivedNode::new(&rig.lab, &rig.alpha, 150, interval, None).map_err(e)?;
            let bp = b.start(&mut rig.lab).map_err(e)?;
            let ap = a.start(&mut rig.lab).map_err(e)?;
            let vrrp_pid = a.config.parent().map(|d| d.join("v.pid"));
            (ap, vrrp_pid, bp)
        }
        Impl::Duet | Impl::DuetHeartbeat(_) => {
            let config = |name: &str, prio: u8, me: u8, peer: u8| {
                let base = vrrp_config(name, prio, interval, "");
                match imp.cluster() {
                    Some(extra) => base + &heartbeat_config(me, peer, &rig.key, &extra),
                    None => base,
                }
            };
            let mut b =
                DuetNode::new(&rig.lab, &rig.beta, &config("beta", 100, 3, 2)).map_err(e)?;
            let mut a =
                DuetNode::new(&rig.lab, &rig.alpha, &config("alpha", 150, 2, 3)).map_err(e)?;
            beta_log = Some(b.log.clone());
            let bp = b.start(&mut rig.lab, &rig.exe).map_err(e)?;
            let ap = a.start(&mut rig.lab, &rig.exe).map_err(e)?;
            (ap, None, bp)
        }
    };
    let settle = now_epoch();
    answer_from(&rig.probe, "alpha", settle, Duration::from_secs(15))
        .ok_or("alpha never answered on the VIP")?;
    // Steady state: alpha answered, beta has heard several adverts. `phase` (a fraction of the
    // advert interval, spread evenly over the runs and the same for both tools in a run) puts the
    // fault at a different point of the advert cycle each run: the takeover time depends on it
    // by up to one interval, so pairing it keeps that spread out of the comparison.
    let interval_ms = duet_time::parse_duration(interval)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(100.0);
    std::thread::sleep(Duration::from_secs_f64(
        (500.0 + phase * interval_ms) / 1000.0,
    ));
    while rig.probe.try_recv().is_ok() {}

    let t0 = now_epoch();
    match mode {
        Mode::KillGroup => duet_sys::process::send_signal(alpha_pid, SIGKILL, true).map_err(e)?,
        Mode::KillVrrp => {
            let pid = match &vrrp_pid_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|err| format!("keepalived VRRP pid file: {err}"))?
                    .trim()
                    .parse()
                    .map_err(|_| "bad pid file")?,
                None => alpha_pid,
            };
            duet_sys::process::send_signal(pid, SIGKILL, false).map_err(e)?
        }
        Mode::LinkDown => rig.lab.set_link(&rig.alpha, false).map_err(e)?,
        Mode::Graceful => duet_sys::process::send_signal(alpha_pid, SIGTERM, false).map_err(e)?,
    }
    let t1 = answer_from(&rig.probe, "beta", t0, Duration::from_secs(15));
    let detected = match (imp, &beta_log) {
        (Impl::DuetHeartbeat(_), Some(log)) => {
            // The log is flushed line by line; give the last line a moment.
            std::thread::sleep(Duration::from_millis(100));
            silent_since(log, t0).map(|t| Duration::from_secs_f64((t - t0).max(0.0)))
        }
        _ => None,
    };
    let rewon = t1.is_none() && mode == Mode::KillVrrp && imp == Impl::Keepalived;
    if t1.is_none() && !rewon {
        return Err("beta never answered after the fault".into());
    }
    // Is the VIP still configured on the old master 3 s after the fault?
    let wait = (t0 + 3.0 - now_epoch()).max(0.0);
    std::thread::sleep(Duration::from_secs_f64(wait));
    let vip: IpAddr = VIP.parse().expect("VIP");
    // (When the old master won again, the VIP is rightly on it.)
    let vip_left = !rewon && rig.lab.has_address(&rig.alpha, vip);

    // Clean up for the next run.
    for pid in [alpha_pid, beta_pid] {
        let _ = duet_sys::process::send_signal(pid, SIGKILL, true);
        rig.lab.reap(pid);
    }
    rig.lab.set_link(&rig.alpha, true).map_err(e)?;
    for h in [&rig.alpha, &rig.beta] {
        if rig.lab.has_address(h, vip) {
            let _ = duet::lab::run(
                "ip",
                &[
                    "-n",
                    &h.ns,
                    "addr",
                    "del",
                    &format!("{VIP}/24"),
                    "dev",
                    "eth0",
                ],
            );
        }
    }
    let _ = wait_for(Duration::from_secs(2), || {
        !rig.lab.has_address(&rig.alpha, vip) && !rig.lab.has_address(&rig.beta, vip)
    });
    Ok(Sample {
        takeover: t1.map(|t1| Duration::from_secs_f64((t1 - t0).max(0.0))),
        vip_left,
        detected,
    })
}

/// The first "silent on every heartbeat link" line in `log` stamped at or after `since`
/// (epoch seconds), as epoch seconds.
fn silent_since(log: &Path, since: f64) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains("silent on every heartbeat link"))
        .filter_map(|l| parse_stamp(l.split_whitespace().next()?))
        .find(|&t| t >= since)
}

/// `2026-11-25T20:36:53.248090Z` (tracing's UTC stamp) as epoch seconds.
fn parse_stamp(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// Sorts `v` and returns (min, median, max), or `None` when empty.
pub(crate) fn min_median_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

fn stats(samples: &[Sample]) -> Option<(f64, f64, f64)> {
    min_median_max(
        samples
            .iter()
            .filter_map(|s| s.takeover.map(|t| t.as_secs_f64()))
            .collect(),
    )
}

/// Runs of one index share the fault phase, so their difference is free of the phase spread;
/// the median of those differences is the sharpest single number for "which is faster".
fn paired_difference(k: &[Sample], d: &[Sample]) -> String {
    let diffs = k
        .iter()
        .zip(d)
        .filter_map(|(k, d)| Some(d.takeover?.as_secs_f64() - k.takeover?.as_secs_f64()))
        .collect();
    match min_median_max(diffs) {
        Some((_, median, _)) => format!("{:+.1} ms", median * 1000.0),
        None => "n/a".into(),
    }
}

fn print_table(runs: usize, interval: &str, results: &[(Mode, Vec<Sample>, Vec<Sample>)]) {
    let date = crate::utc_now();
    let machine = crate::machine();
    let kernel = crate::shell("uname -sr");
    let keepalived = crate::shell("keepalived --version 2>&1 | head -1");
    println!("\n### VIP failover, {date}");
    println!();
    println!(
        "Machine: {machine}, {kernel}. {keepalived}. Advert interval {interval}, {runs} runs per mode and tool, runs alternating."
    );
    println!(
        "Time from the fault to the first client answer from the new master (seconds, min / median / max)."
    );
    println!();
    println!(
        "| fault | keepalived | duet | duet ÷ keepalived (median) | median of paired differences, duet − keepalived | VIP left on old master after 3 s (keepalived / duet) |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, k, d) in results {
        let cell = |s: &[Sample]| match stats(s) {
            Some((min, med, max)) => {
                let rewon = s.iter().filter(|x| x.takeover.is_none()).count();
                let note = if rewon > 0 {
                    format!(" ({rewon}× old master won again)")
                } else {
                    String::new()
                };
                format!("{min:.3} / {med:.3} / {max:.3}{note}")
            }
            None => "no takeover".into(),
        };
        let ratio = match (stats(k), stats(d)) {
            (Some((_, km, _)), Some((_, dm, _))) => format!("{:.2}", dm / km),
            _ => "n/a".into(),
        };
        let left = |s: &[Sample]| s.iter().filter(|x| x.vip_left).count();
        println!(
            "| {} | {} | {} | {ratio} | {} | {}/{} / {}/{} |",
            mode.label(),
            cell(k),
            cell(d),
            paired_difference(k, d),
            left(k),
            k.len(),
            left(d),
            d.len()
        );
    }
}

fn print_heartbeat_table(
    runs: usize,
    interval: &str,
    impls: &[Impl],
    results: &[(Mode, Vec<Vec<Sample>>)],
) {
    let date = crate::utc_now();
    let machine = crate::machine();
    let keepalived = crate::shell("keepalived --version 2>&1 | head -1");
    println!("\n### Detection and takeover with heartbeats, {date}");
    println!();
    println!(
        "Machine: {machine}. {keepalived}. VRRPv3 every {interval} for both (master-down 253 ms); duet heartbeats every 50 ms x 5 misses (250 ms) on the LAN and a direct cable. {runs} runs per fault and set-up, alternating. Seconds from the fault, min / median / max: detection = the backup logs the master silent on every link; takeover = first client answer from the backup."
    );
    println!();
    println!(
        "| fault | set-up | detection | takeover | ÷ keepalived (median takeover) | VIP left on old master after 3 s |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, per) in results {
        let base = stats(&per[0]).map(|(_, m, _)| m);
        for (imp, samples) in impls.iter().zip(per) {
            let takeover = match stats(samples) {
                Some((min, med, max)) => format!("{min:.3} / {med:.3} / {max:.3}"),
                None => "no takeover".into(),
            };
            let detection = min_median_max(
                samples
                    .iter()
                    .filter_map(|s| s.detected.map(|d| d.as_secs_f64()))
                    .collect(),
            )
            .map_or("–".into(), |(a, b, c)| {
                format!("{a:.3} / {b:.3} / {c:.3}")
            });
            let ratio = match (base, stats(samples)) {
                (Some(k), Some((_, m, _))) => format!("{:.2}", m / k),
                _ => "n/a".into(),
            };
            let left = samples.iter().filter(|x| x.vip_left).count();
            println!(
                "| {} | {} | {detection} | {takeover} | {ratio} | {left}/{} |",
                mode.label(),
                imp.label(),
                samples.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stamps_parse_to_epoch_seconds() {
        // date -u -d 2026-11-25T20:36:53Z +%s
        let t = super::parse_stamp("2026-11-25T20:36:53.250000Z").unwrap();
        assert!((t - 1_795_639_013.25).abs() < 1e-6, "{t}");
        assert_eq!(
            super::parse_stamp("2000-03-01T00:00:00Z"),
            Some(951_868_800.0)
        );
    }
}
