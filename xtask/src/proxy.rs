//! `cargo xtask bench proxy`: duet's HTTP balancer next to HAProxy and nginx, in one run.
//!
//! Everything on loopback: two nginx processes as tiny backends (ports 18081/18082, keep-alive
//! effectively unlimited), each proxy in turn on port 18080 with the same two backends and
//! round robin, and `wrk -t1 -c64 -d10s` against it. Reports rps, p50/p99 latency and CPU time
//! per request (the proxy's user+system time over the run divided by the requests).
//!
//! Then each proxy again with the second backend killed (SIGKILL) 3 s into the run, counting the
//! client errors wrk sees. Not yet: tcp mode and RSS with 10 000 idle connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROXY_PORT: u16 = 18080;
const BACKENDS: [u16; 2] = [18081, 18082];

struct Run {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

pub fn main(args: &[&str]) -> i32 {
    let mut seconds = 10u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    match bench(seconds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench proxy: {e}");
            1
        }
    }
}

fn bench(seconds: u64) -> Result<(), String> {
    crate::ensure_packages(&[("wrk", "wrk"), ("haproxy", "haproxy"), ("nginx", "nginx")])?;
    let exe = crate::build_duet()?;
    let dir = std::env::temp_dir().join(format!("duet-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let backends = start_backends(&dir)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut runs = Vec::new();
    for name in PROXIES {
        let proxy = start_proxy(name, &dir, &exe)?;
        let before = cpu_ticks(proxy.0.id());
        let out = wrk(seconds)?;
        let after = cpu_ticks(proxy.0.id());
        drop(proxy);
        std::thread::sleep(Duration::from_millis(300));
        let (rps, p50_ms, p99_ms, requests) = parse_wrk(&out)?;
        let ticks_per_sec = 100.0; // USER_HZ on Linux
        let cpu_s = (after - before) as f64 / ticks_per_sec;
        runs.push(Run {
            name,
            rps,
            p50_ms,
            p99_ms,
            cpu_us_per_req: cpu_s * 1e6 / requests.max(1.0),
        });
        eprintln!("{name}: {rps:.0} rps");
    }
    drop(backends);
    std::thread::sleep(Duration::from_millis(300));

    // Backend death: the second backend is killed 3 s into the run; count client errors.
    let mut deaths = Vec::new();
    for name in PROXIES {
        let mut backends = start_backends(&dir)?;
        let proxy = start_proxy(name, &dir, &exe)?;
        let run = Command::new("wrk")
            .args(["-t1", "-c64", &format!("-d{seconds}s")])
            .arg(format!("http://127.0.0.1:{PROXY_PORT}/"))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("wrk: {e}"))?;
        std::thread::sleep(Duration::from_secs(3));
        drop(backends.pop()); // SIGKILL to the second backend
        let out = run.wait_with_output().map_err(|e| format!("wrk: {e}"))?;
        drop(proxy);
        drop(backends);
        std::thread::sleep(Duration::from_millis(300));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (requests, errors) = client_errors(&text);
        eprintln!("{name} with a backend killed: {errors} errors in {requests} requests");
        deaths.push((name, requests, errors));
    }
    print_table(seconds, &runs);
    println!();
    println!("Backend killed 3 s into a {seconds} s run:");
    println!();
    println!("| proxy | requests | client errors (non-2xx + socket errors) |");
    println!("|---|---|---|");
    for (name, requests, errors) in deaths {
        println!("| {name} | {requests} | {errors} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// (requests, errors) from wrk's output: non-2xx/3xx responses plus socket errors.
fn client_errors(out: &str) -> (u64, u64) {
    let mut requests = 0;
    let mut errors = 0;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, "requests", "in", ..] => requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (requests, errors)
}

const PROXIES: [&str; 3] = ["haproxy", "nginx", "duet"];

/// Starts proxy `name` on [`PROXY_PORT`], waits for it and warms it up for a second.
fn start_proxy(name: &str, dir: &Path, exe: &PathBuf) -> Result<Guard, String> {
    let child = match name {
        "haproxy" => start_haproxy(dir)?,
        "nginx" => start_nginx_proxy(dir)?,
        _ => start_duet(dir, exe)?,
    };
    let proxy = Guard(child);
    wait_port(PROXY_PORT)?;
    // Warm-up: fill pools and caches.
    wrk(1)?;
    Ok(proxy)
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = duet_sys::process::send_signal(self.0.id(), duet_sys::process::SIGKILL, true);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command) -> Result<Child, String> {
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

/// One nginx process per backend port, so one backend can be killed alone.
fn start_backends(dir: &Path) -> Result<Vec<Guard>, String> {
    let mut out = Vec::new();
    for p in BACKENDS {
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/b{p}.pid; error_log {d}/b{p}.err;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ server {{ listen 127.0.0.1:{p}; access_log off; keepalive_requests 1000000; location / {{ return 200 \"ok\"; }} }} }}\n",
            d = dir.display()
        );
        let path = dir.join(format!("b{p}.conf"));
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&path).arg("-p").arg(dir);
        out.push(Guard(spawn(cmd)?));
    }
    for p in BACKENDS {
        wait_port(p)?;
    }
    Ok(out)
}

fn start_haproxy(dir: &Path) -> Result<Child, String> {
    let servers: String = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server b{i} 127.0.0.1:{p}\n"))
        .collect();
    let conf = format!(
        "global\n    maxconn 8000\n    nbthread 2\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    http-reuse always\n    retries 3\n    option redispatch 1\n    retry-on all-retryable-errors\n\n\
         frontend f\n    bind 127.0.0.1:{PROXY_PORT}\n    default_backend b\n\nbackend b\n    balance roundrobin\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    spawn(cmd)
}

fn start_nginx_proxy(dir: &Path) -> Result<Child, String> {
    let servers: String = BACKENDS
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};"))
        .collect();
    let conf = format!(
        "daemon off; worker_processes 2; pid {d}/proxy.pid; error_log {d}/proxy.err;\n\
         events {{ worker_connections 8192; }}\n\
         http {{ access_log off; upstream b {{ {servers} keepalive 64; keepalive_requests 1000000; }}\n\
         server {{ listen 127.0.0.1:{PROXY_PORT}; keepalive_requests 1000000;\n\
         location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        d = dir.display()
    );
    let path = dir.join("proxy.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&path).arg("-p").arg(dir);
    spawn(cmd)
}

fn start_duet(dir: &Path, exe: &PathBuf) -> Result<Child, String> {
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    let conf = format!(
        "[node]\nname = \"bench\"\nadmin = \"127.0.0.1:18089\"\nstate_dir = \"{}\"\nguardian = false\n\n\
         [[balancer]]\nname = \"web\"\nbind = \"127.0.0.1:{PROXY_PORT}\"\nmode = \"http\"\nbackends = [{}]\n",
        dir.join("state").display(),
        backends.join(", ")
    );
    let path = dir.join("duet.toml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg("-c").arg(&path);
    spawn(cmd)
}

fn wait_port(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("nothing listens on port {port}"))
}

fn wrk(seconds: u64) -> Result<String, String> {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{PROXY_PORT}/"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}"));
    }
    Ok(text)
}

/// (rps, p50 ms, p99 ms, requests) from wrk's output.
fn parse_wrk(out: &str) -> Result<(f64, f64, f64, f64), String> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            _ => {}
        }
        if line.contains("Non-2xx") || line.contains("Socket errors") {
            eprintln!("wrk: {line}");
        }
    }
    match (rps, p50, p99, requests) {
        (Some(a), Some(b), Some(c), Some(d)) => Ok((a, b, c, d)),
        _ => Err(format!("could not read wrk's output:\n{out}")),
    }
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// User + system clock ticks of every process in `pgid`'s process group.
fn cpu_ticks(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) start after ") ".
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if f.len() > 12 && f[2].parse::<u32>().ok() == Some(pgid) {
            total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

fn print_table(seconds: u64, runs: &[Run]) {
    let shell = crate::shell;
    println!(
        "\n### HTTP proxy, {}",
        shell("date -u '+%Y-%m-%d %H:%M UTC'")
    );
    println!();
    println!(
        "Machine: {} cores, {}. {}; {}. wrk -t1 -c64 -d{seconds}s, two nginx backends, round robin, all on loopback.",
        shell("nproc"),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        shell("haproxy -v 2>&1 | head -1"),
        shell("nginx -v 2>&1")
    );
    println!();
    println!("| proxy | rps | p50 | p99 | CPU per request |");
    println!("|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} µs |",
            r.name, r.rps, r.p50_ms, r.p99_ms, r.cpu_us_per_req
        );
    }
    let get = |n: &str| runs.iter().find(|r| r.name == n);
    if let (Some(d), Some(h), Some(n)) = (get("duet"), get("haproxy"), get("nginx")) {
        println!();
        println!(
            "duet ÷ haproxy: rps {:.2}, p99 {:.2}, CPU/request {:.2}; duet ÷ nginx: rps {:.2}, p99 {:.2}, CPU/request {:.2}",
            d.rps / h.rps,
            d.p99_ms / h.p99_ms,
            d.cpu_us_per_req / h.cpu_us_per_req,
            d.rps / n.rps,
            d.p99_ms / n.p99_ms,
            d.cpu_us_per_req / n.cpu_us_per_req
        );
    }
}
