//! `cargo xtask chaos`: split-brain scenarios with real processes in namespaces.
//!
//! Each scenario builds a fresh lab: alpha (priority 150) and beta (100) with VRRPv3 at 100 ms,
//! heartbeats every 50 ms on the LAN and on a direct cable, a witness host (when the scenario
//! has one) and a client polling `http://VIP:8080/` every 10 ms. After the pair settles, the
//! fault is applied for `FAULT` (a pause lasts 10 s), then healed, and the lab runs on for
//! `AFTER`. `ip -ts monitor address` in both nodes records every VIP addition and removal with
//! its time, so the table's first column is exact, not sampled: the total time during which
//! both nodes had the VIP on an interface that is up. The second column is the share of the
//! client's probes (from the fault to the end) that got an answer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duet::lab::{DuetNode, Host, Lab, heartbeat_config, vrrp_config, wait_for, witness_config};
use duet_sys::process::{SIGCONT, SIGKILL, SIGSTOP};

const VIP: &str = "10.99.0.100";
const FAULT: Duration = Duration::from_secs(8);
const AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillMaster,
    PauseMaster,
    CutBusiness,
    CutHeartbeat,
    FullPartition,
    Loss,
}

struct Scenario {
    label: &'static str,
    fault: Fault,
    witness: bool,
    policy: &'static str,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario {
        label: "kill -9 of every master process",
        fault: Fault::KillMaster,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "SIGSTOP of the master for 10 s",
        fault: Fault::PauseMaster,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "business link cut between the nodes",
        fault: Fault::CutBusiness,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "heartbeat cable cut",
        fault: Fault::CutHeartbeat,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "full partition, witness",
        fault: Fault::FullPartition,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "full partition, no witness, safe",
        fault: Fault::FullPartition,
        witness: false,
        policy: "safe",
    },
    Scenario {
        label: "full partition, no witness, available",
        fault: Fault::FullPartition,
        witness: false,
        policy: "available",
    },
    Scenario {
        label: "30 % loss on the business link",
        fault: Fault::Loss,
        witness: true,
        policy: "safe",
    },
    Scenario {
        label: "kill -9 of every master process, no witness, available",
        fault: Fault::KillMaster,
        witness: false,
        policy: "available",
    },
];

pub fn main(args: &[&str]) -> i32 {
    if let Some(a) = args.first() {
        eprintln!("unknown argument {a}");
        return 2;
    }
    if let Err(e) = duet::lab::can_build_labs() {
        eprintln!("chaos: {e} (run as root)");
        return 1;
    }
    if let Err(e) = crate::ensure_packages(&[("nft", "nftables")]) {
        eprintln!("chaos: {e}");
        return 1;
    }
    let exe = match crate::build_duet() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chaos: {e}");
            return 1;
        }
    };
    let mut rows = Vec::new();
    for (i, s) in SCENARIOS.iter().enumerate() {
        eprintln!("scenario {}/{}: {}", i + 1, SCENARIOS.len(), s.label);
        match run(s, &exe, i) {
            Ok(r) => rows.push((s.label, r)),
            Err(e) => {
                eprintln!("chaos: {}: {e}", s.label);
                return 1;
            }
        }
    }
    println!("\n### Chaos, {} (cargo xtask chaos)\n", crate::utc_now());
    println!(
        "Two nodes (VRRPv3 100 ms; heartbeat 50 ms x 5 on the LAN and a direct cable; witness lease 2 s where named), fault for {} s (pause: 10 s), then {} s healed. Exact overlap from `ip monitor`; probes every 10 ms from the fault on.\n",
        FAULT.as_secs(),
        AFTER.as_secs()
    );
    println!(
        "| scenario | both nodes had the VIP | probes answered | longest time without an answer | serving at the end |"
    );
    println!("|---|---|---|---|---|");
    for (label, r) in rows {
        println!(
            "| {label} | {} ms | {:.1} % | {:.2} s | {} |",
            r.overlap.as_millis(),
            r.answered * 100.0,
            r.longest_gap.as_secs_f64(),
            r.serving
        );
    }
    0
}

struct Outcome {
    overlap: Duration,
    longest_gap: Duration,
    answered: f64,
    serving: String,
}

fn run(s: &Scenario, exe: &Path, n: usize) -> Result<Outcome, String> {
    let e = |e: std::io::Error| e.to_string();
    let mut lab = Lab::new(&format!("ch{n}")).map_err(e)?;
    let a = lab.add_host("alpha", 2).map_err(e)?;
    let b = lab.add_host("beta", 3).map_err(e)?;
    let client = lab.add_host("client", 10).map_err(e)?;
    let w = lab.add_host("witness", 20).map_err(e)?;
    lab.add_direct_link(&a, &b).map_err(e)?;
    let key = lab.cluster_key().map_err(e)?;
    if s.witness {
        lab.start_witness(exe, &w, &key).map_err(e)?;
    }
    lab.start_responders(exe, &[&a, &b]).map_err(e)?;
    let extra = format!(
        "two_node_policy = \"{}\"\n{}",
        s.policy,
        if s.witness {
            witness_config(20)
        } else {
            String::new()
        }
    );
    let config = |name: &str, prio: u8, me: u8, peer: u8| {
        vrrp_config(name, prio, "100ms", "") + &heartbeat_config(me, peer, &key, &extra)
    };
    let mut alpha = DuetNode::new(&lab, &a, &config("alpha", 150, 2, 3)).map_err(e)?;
    let mut beta = DuetNode::new(&lab, &b, &config("beta", 100, 3, 2)).map_err(e)?;
    beta.start(&mut lab, exe).map_err(e)?;
    alpha.start(&mut lab, exe).map_err(e)?;
    let settled = wait_for(Duration::from_secs(15), || {
        alpha.state(&lab, exe).as_deref() == Some("MASTER")
            && beta.state(&lab, exe).as_deref() == Some("BACKUP")
    });
    if settled.is_none() {
        return Err(format!("the pair never settled\n{}", alpha.log_text()));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Exact VIP history from the kernel, from now on.
    let monitors: Vec<(String, std::path::PathBuf)> = [&a, &b]
        .iter()
        .map(|h| monitor(&mut lab, h))
        .collect::<Result<_, _>>()?;
    let vip: std::net::IpAddr = VIP.parse().map_err(|_| "vip")?;
    let initial = [lab.has_address(&a, vip), lab.has_address(&b, vip)];
    let probe = lab.probe(exe, &client, &format!("{VIP}:8080")).map_err(e)?;
    std::thread::sleep(Duration::from_millis(500));
    while probe.try_recv().is_ok() {}
    let fault_at = now_s();
    let pid = alpha.pid.ok_or("alpha not running")?;
    let hold = match s.fault {
        Fault::PauseMaster => Duration::from_secs(10),
        _ => FAULT,
    };
    match s.fault {
        Fault::KillMaster => {
            duet_sys::process::send_signal(pid, SIGKILL, true).map_err(e)?;
        }
        Fault::PauseMaster => {
            duet_sys::process::send_signal(pid, SIGSTOP, true).map_err(e)?;
        }
        Fault::CutBusiness => lab.split_lan(&a, &b, true).map_err(e)?,
        Fault::CutHeartbeat => lab.set_direct_link(&a, false).map_err(e)?,
        Fault::FullPartition => lab.partition(&a, &b, true).map_err(e)?,
        Fault::Loss => {
            for h in [&a, &b] {
                lossy(h, true)?;
            }
        }
    }
    std::thread::sleep(hold);
    match s.fault {
        Fault::KillMaster => {}
        Fault::PauseMaster => {
            duet_sys::process::send_signal(pid, SIGCONT, true).map_err(e)?;
        }
        Fault::CutBusiness | Fault::CutHeartbeat | Fault::FullPartition => {
            lab.partition(&a, &b, false).map_err(e)?;
        }
        Fault::Loss => {
            for h in [&a, &b] {
                lossy(h, false)?;
            }
        }
    }
    std::thread::sleep(AFTER);
    let end_at = now_s();
    let (mut total, mut answered) = (0u64, 0u64);
    // The longest stretch without an answer (failed probes wait for their timeout, so the
    // share of probes answered understates outages).
    let (mut last_answer, mut longest_gap) = (fault_at, 0.0f64);
    while let Ok(line) = probe.try_recv() {
        if line.t >= fault_at && line.t <= end_at {
            total += 1;
            if line.node.is_some() {
                answered += 1;
                longest_gap = longest_gap.max(line.t - last_answer);
                last_answer = line.t;
            }
        }
    }
    longest_gap = longest_gap.max(end_at - last_answer);
    let serving: Vec<&str> = [(&a, "alpha"), (&b, "beta")]
        .iter()
        .filter(|(h, _)| lab.has_address(h, vip))
        .map(|(_, n)| *n)
        .collect();
    let histories: Vec<Vec<(f64, bool)>> = monitors
        .iter()
        .map(|(_, path)| parse_monitor(path))
        .collect();
    let overlap = overlap(initial, &histories, end_at);
    drop(lab);
    Ok(Outcome {
        overlap,
        longest_gap: Duration::from_secs_f64(longest_gap.max(0.0)),
        answered: if total == 0 {
            0.0
        } else {
            answered as f64 / total as f64
        },
        serving: if serving.is_empty() {
            "nobody".into()
        } else {
            serving.join(" and ")
        },
    })
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Starts `ip -ts monitor address` in `host`, writing to a file; returns (host, file).
fn monitor(lab: &mut Lab, host: &Host) -> Result<(String, std::path::PathBuf), String> {
    let path = lab.dir().join(format!("monitor-{}", host.name));
    let out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("ip");
    cmd.args(["-ts", "-n", &host.ns, "monitor", "address", "dev", "eth0"])
        .stdout(out)
        .stderr(Stdio::null());
    lab.spawn(cmd).map_err(|e| e.to_string())?;
    Ok((host.name.clone(), path))
}

/// (time, present) for every VIP event in a monitor file.
fn parse_monitor(path: &Path) -> Vec<(f64, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.contains(&format!(" {VIP}/")) {
            continue;
        }
        // "[2026-11-25T19:20:08.123456] Deleted 3: eth0 inet 10.99.0.100/24 ..."
        let Some(stamp) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
            continue;
        };
        let Some(t) = parse_stamp(stamp.0) else {
            continue;
        };
        out.push((t, !stamp.1.trim_start().starts_with("Deleted")));
    }
    out
}

/// `2026-11-25T19:20:08.123456` (local time, which is UTC here) → Unix seconds.
fn parse_stamp(s: &str) -> Option<f64> {
    let out = Command::new("date")
        .args(["-d", s, "+%s.%N"])
        .env("TZ", std::env::var("TZ").unwrap_or_default())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Total time both nodes had the VIP, from the initial states and both histories until `end`.
fn overlap(initial: [bool; 2], histories: &[Vec<(f64, bool)>], end: f64) -> Duration {
    let mut events: Vec<(f64, usize, bool)> = histories
        .iter()
        .enumerate()
        .flat_map(|(n, h)| h.iter().map(move |&(t, on)| (t, n, on)))
        .collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut state = initial;
    let mut since: Option<f64> = None;
    let mut total = 0.0;
    if state[0] && state[1] {
        since = Some(events.first().map_or(end, |e| e.0));
    }
    for (t, n, on) in events {
        state[n] = on;
        match (state[0] && state[1], since) {
            (true, None) => since = Some(t),
            (false, Some(s)) => {
                total += t - s;
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        total += end - s;
    }
    Duration::from_secs_f64(total.max(0.0))
}

/// 30 % random loss on `host`'s eth0 in both directions (nftables in its namespace).
fn lossy(host: &Host, on: bool) -> Result<(), String> {
    let rules = if on {
        "table inet chaos {\n chain in { type filter hook input priority 0; iifname \"eth0\" numgen random mod 100 < 30 drop; }\n chain out { type filter hook output priority 0; oifname \"eth0\" numgen random mod 100 < 30 drop; }\n}\n"
    } else {
        "delete table inet chaos\n"
    };
    let path = std::env::temp_dir().join(format!("duet-chaos-{}.nft", host.ns));
    std::fs::write(&path, rules).map_err(|e| e.to_string())?;
    let st = Command::new("ip")
        .args(["netns", "exec", &host.ns, "nft", "-f"])
        .arg(&path)
        .status()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    if st.success() {
        Ok(())
    } else {
        Err(format!("nft in {} failed", host.ns))
    }
}
