//! `cargo xtask bench proxy`: duet's HTTP balancer next to HAProxy and nginx, in one run.
//!
//! Everything on loopback: two nginx processes as tiny backends (ports 18081/18082, keep-alive
//! effectively unlimited) and every proxy at once, each on its own port with the same two
//! backends and round robin. Then many short rounds (`--rounds 10 --seconds 3` by default) of
//! `wrk -t1 -c64` against each proxy in turn, so that the machine's drift hits them alike. Reports,
//! per proxy, the median and spread over rounds of CPU time per request (the proxy's
//! user+system time over a round divided by its requests: the steadiest figure on a shared
//! machine), rps and p50/p99 latency, and the median of the per-round ratios.
//!
//! Then each proxy again with the second backend killed (SIGKILL) 3 s into the run, counting the
//! client errors wrk sees; then tcp mode (HAProxy `mode tcp` and duet `mode = "tcp"`, the same
//! wrk load passing through at layer 4); then the resident memory of each HTTP proxy holding
//! 10 000 idle keep-alive client connections, each of which made one request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The port of the single proxy of the memory and backend-death runs.
const PROXY_PORT: u16 = 18080;
const BACKENDS: [u16; 2] = [18081, 18082];

/// Each proxy's port during the interleaved rounds.
fn round_port(name: &str, mode: Mode) -> u16 {
    let base = if mode == Mode::Http { 18090 } else { 18095 };
    base + PROXIES.iter().position(|p| *p == name).unwrap_or(0) as u16
}

/// HTTP or TCP proxying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http,
    Tcp,
}

struct Run {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
}

pub fn main(args: &[&str]) -> i32 {
    let mut seconds = 3u64;
    let mut rounds = 10usize;
    let mut http_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(rounds)
                    .max(1)
            }
            "--http-only" => http_only = true,
            other => {
                eprintln!("unknown argument {other}");
                return 2;
            }
        }
    }
    match bench(seconds, rounds, http_only) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench proxy: {e}");
            1
        }
    }
}

fn bench(seconds: u64, rounds: usize, http_only: bool) -> Result<(), String> {
    crate::ensure_packages(&[("wrk", "wrk"), ("haproxy", "haproxy"), ("nginx", "nginx")])?;
    // The same room for every proxy (and for the 10 000 client sockets of the memory run):
    // 65536 open files where the hard limit may be raised, else the hard limit.
    let fd_limit = match duet_sys::process::set_fd_limit(65536) {
        Ok(()) => 65536,
        Err(_) => {
            let n = duet_sys::process::raise_fd_limit().map_err(|e| e.to_string())?;
            eprintln!("open files limited to {n} (the hard limit cannot be raised here)");
            n
        }
    };
    // HAProxy reserves two descriptors per connection and refuses to start when maxconn does
    // not fit the limit, so the memory run holds what it can (10 000 when the limit allows).
    let idle_clients = IDLE_CLIENTS.min((fd_limit.saturating_sub(512) / 2) as usize);
    HAPROXY_MAXCONN.store(idle_clients + 128, std::sync::atomic::Ordering::Relaxed);
    let exe = crate::build_duet()?;
    // Another listener on these ports would take some of the load (SO_REUSEPORT) and make the
    // numbers meaningless.
    let ports = PROXIES
        .iter()
        .flat_map(|n| [round_port(n, Mode::Http), round_port(n, Mode::Tcp)])
        .chain([PROXY_PORT, BACKENDS[0], BACKENDS[1]]);
    for port in ports {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Err(format!(
                "something already listens on 127.0.0.1:{port}; stop it first"
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("duet-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let backends = start_backends(&dir)?;
    std::thread::sleep(Duration::from_millis(300));
    // Every proxy runs for the whole measurement; short rounds alternate them, so that the
    // machine's slow drifts hit all of them alike. The tables show medians over rounds, their
    // spread, and the median of the per-round ratios.
    let http_rounds = interleaved(&PROXIES, Mode::Http, &dir, &exe, seconds, rounds)?;
    if http_only {
        print_header(seconds, rounds);
        print_runs(&http_rounds);
        println!();
        print_ratios(&http_rounds, "haproxy");
        print_ratios(&http_rounds, "nginx");
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let tcp_rounds = interleaved(&["haproxy", "duet"], Mode::Tcp, &dir, &exe, seconds, rounds)?;
    let mut memory = Vec::new();
    for name in PROXIES {
        memory.push(idle_memory(name, &dir, &exe, idle_clients)?);
    }
    drop(backends);
    std::thread::sleep(Duration::from_millis(300));

    // Backend death: the second backend is killed 3 s into the run; count client errors.
    let mut deaths = Vec::new();
    for name in PROXIES {
        let mut backends = start_backends(&dir)?;
        let proxy = start_proxy(name, Mode::Http, &dir, &exe, PROXY_PORT)?;
        let run = Command::new("wrk")
            .args(["-t1", "-c64", &format!("-d{DEATH_RUN_SECONDS}s")])
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
    print_header(seconds, rounds);
    print_runs(&http_rounds);
    println!();
    print_ratios(&http_rounds, "haproxy");
    print_ratios(&http_rounds, "nginx");
    println!();
    println!("tcp mode (layer 4), same load, medians over {rounds} rounds (lowest–highest):");
    println!();
    print_runs(&tcp_rounds);
    println!();
    print_ratios(&tcp_rounds, "haproxy");
    println!();
    println!(
        "Resident memory with {idle_clients} idle keep-alive client connections (each made one request){}:",
        if idle_clients < IDLE_CLIENTS {
            format!(
                "; {IDLE_CLIENTS} do not fit HAProxy's two descriptors per connection under this machine's open-file limit of {fd_limit}"
            )
        } else {
            String::new()
        }
    );
    println!();
    println!("| proxy | RSS before | RSS with the connections | per connection |");
    println!("|---|---|---|---|");
    for (name, before, with) in &memory {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
            *before as f64 / 1024.0,
            *with as f64 / 1024.0,
            with.saturating_sub(*before) as f64 / idle_clients as f64
        );
    }
    let rss = |n: &str| memory.iter().find(|m| m.0 == n).map(|m| m.2 as f64);
    if let (Some(d), Some(h), Some(n)) = (rss("duet"), rss("haproxy"), rss("nginx")) {
        println!();
        println!(
            "duet ÷ haproxy RSS {:.2}; duet ÷ nginx RSS {:.2}",
            d / h,
            d / n
        );
    }
    println!();
    println!("Backend killed 3 s into a {DEATH_RUN_SECONDS} s run:");
    println!();
    println!("| proxy | requests | client errors (non-2xx + socket errors) |");
    println!("|---|---|---|");
    for (name, requests, errors) in deaths {
        println!("| {name} | {requests} | {errors} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Starts every proxy of `names` in `mode` on its own port, then runs `rounds` rounds, each a
/// wrk run of `seconds` against every proxy in turn.
fn interleaved(
    names: &[&'static str],
    mode: Mode,
    dir: &Path,
    exe: &PathBuf,
    seconds: u64,
    rounds: usize,
) -> Result<Vec<Vec<Run>>, String> {
    let mut proxies = Vec::new();
    for name in names {
        proxies.push((
            *name,
            start_proxy(name, mode, dir, exe, round_port(name, mode))?,
        ));
    }
    let mut all = Vec::new();
    for round in 1..=rounds {
        let mut runs = Vec::new();
        for (name, proxy) in &proxies {
            runs.push(measure(name, proxy, round_port(name, mode), seconds)?);
        }
        let line: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {:.0} rps {:.1} µs", r.name, r.rps, r.cpu_us_per_req))
            .collect();
        eprintln!("{mode:?} round {round} of {rounds}: {}", line.join(", "));
        all.push(runs);
    }
    Ok(all)
}

/// One wrk run through the running proxy `name`, with the proxy's CPU time over it.
fn measure(name: &'static str, proxy: &Guard, port: u16, seconds: u64) -> Result<Run, String> {
    let before = cpu_ticks(proxy.0.id());
    let out = wrk(port, seconds)?;
    let after = cpu_ticks(proxy.0.id());
    let (rps, p50_ms, p99_ms, requests) = parse_wrk(&out)?;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_s = (after - before) as f64 / ticks_per_sec;
    Ok(Run {
        name,
        rps,
        p50_ms,
        p99_ms,
        cpu_us_per_req: cpu_s * 1e6 / requests.max(1.0),
    })
}

/// The backend-death run: one backend is killed 3 s into it.
const DEATH_RUN_SECONDS: u64 = 10;

/// Idle connections of the memory run, when the open-file limit allows.
const IDLE_CLIENTS: usize = 10_000;

/// HAProxy's `maxconn`, set from the open-file limit at the start of the run.
static HAPROXY_MAXCONN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(8000);

/// RSS in KiB of proxy `name` (HTTP mode) before and while it holds `clients` idle keep-alive
/// connections, each of which made one request.
fn idle_memory(
    name: &'static str,
    dir: &Path,
    exe: &PathBuf,
    clients: usize,
) -> Result<(&'static str, u64, u64), String> {
    use std::io::{Read, Write};
    let proxy = start_proxy(name, Mode::Http, dir, exe, PROXY_PORT)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(proxy.0.id());
    let count = clients;
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", PROXY_PORT))
            .map_err(|e| format!("{name}: client {i}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| format!("{name}: client {i}: {e}"))?;
        // The response ends with the backend's two-byte body "ok".
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"ok") {
            let n = c
                .read(&mut buf)
                .map_err(|e| format!("{name}: client {i}: {e}"))?;
            if n == 0 {
                return Err(format!("{name}: client {i}: closed"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        clients.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let with = rss_kib(proxy.0.id());
    eprintln!("{name}: RSS {before} KiB, {with} KiB with {count} idle connections");
    drop(clients);
    drop(proxy);
    std::thread::sleep(Duration::from_millis(300));
    Ok((name, before, with))
}

/// Resident memory (KiB) of every process in `pgid`'s process group.
fn rss_kib(pgid: u32) -> u64 {
    group_stats(pgid)
        .iter()
        .map(|pid| duet_sys::process::rss_kib(*pid).unwrap_or(0))
        .sum()
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

/// Starts proxy `name` on `port`, waits for it and warms it up for a second.
fn start_proxy(
    name: &str,
    mode: Mode,
    dir: &Path,
    exe: &PathBuf,
    port: u16,
) -> Result<Guard, String> {
    let dir = dir.join(format!("{name}-{port}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let child = match name {
        "haproxy" => start_haproxy(&dir, mode, port)?,
        "nginx" => start_nginx_proxy(&dir, port)?,
        _ => start_duet(&dir, exe, mode, port)?,
    };
    let mut proxy = Guard(child);
    wait_port(port)?;
    if let Ok(Some(status)) = proxy.0.try_wait() {
        return Err(format!("{name} exited at start ({status})"));
    }
    // Warm-up: fill pools and caches.
    wrk(port, 1)?;
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

fn start_haproxy(dir: &Path, mode: Mode, port: u16) -> Result<Child, String> {
    let servers: String = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server b{i} 127.0.0.1:{p}\n"))
        .collect();
    let conf = format!(
        "global\n    maxconn {maxconn}\n    nbthread 2\n\ndefaults\n    mode {m}\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n{http}\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\nbackend b\n    balance roundrobin\n{servers}",
        maxconn = HAPROXY_MAXCONN.load(std::sync::atomic::Ordering::Relaxed),
        m = if mode == Mode::Tcp { "tcp" } else { "http" },
        http = if mode == Mode::Tcp {
            ""
        } else {
            "    http-reuse always\n    retries 3\n    option redispatch 1\n    retry-on all-retryable-errors\n"
        },
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    spawn(cmd)
}

fn start_nginx_proxy(dir: &Path, port: u16) -> Result<Child, String> {
    let servers: String = BACKENDS
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};"))
        .collect();
    let conf = format!(
        "daemon off; worker_processes 2; worker_rlimit_nofile 65536; pid {d}/proxy.pid; error_log {d}/proxy.err;\n\
         events {{ worker_connections 30000; }}\n\
         http {{ access_log off; upstream b {{ {servers} keepalive 64; keepalive_requests 1000000; }}\n\
         server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n\
         location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        d = dir.display()
    );
    let path = dir.join("proxy.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&path).arg("-p").arg(dir);
    spawn(cmd)
}

fn start_duet(dir: &Path, exe: &PathBuf, mode: Mode, port: u16) -> Result<Child, String> {
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|p| format!("{{ address = \"127.0.0.1:{p}\" }}"))
        .collect();
    let conf = format!(
        "[node]\nname = \"bench\"\nadmin = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\nguardian = false\n\n\
         [[balancer]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nmode = \"{}\"\nbackends = [{}]\n",
        port + 1000,
        dir.join("state").display(),
        if mode == Mode::Tcp { "tcp" } else { "http" },
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

fn wrk(port: u16, seconds: u64) -> Result<String, String> {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/"))
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
    group_stats(pgid)
        .iter()
        .filter_map(|pid| {
            let f = stat_fields(*pid)?;
            // f[0] is field 3 (state): utime is field 14, stime 15.
            Some(f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0))
        })
        .sum()
}

/// The pids of `pgid`'s process group.
fn group_stats(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // f[2] is field 5, the process group.
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f[2].parse::<u32>().ok() == Some(pgid)))
        .collect()
}

/// `/proc/PID/stat` from field 3 on (after the command name, which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    (f.len() > 12).then_some(f)
}

fn print_header(seconds: u64, rounds: usize) {
    let shell = crate::shell;
    println!("\n### HTTP proxy, {}", crate::utc_now());
    println!();
    println!(
        "Machine: {}. {}; {}. wrk -t1 -c64 -d{seconds}s, two nginx backends, round robin, all on loopback; every proxy runs throughout and each of {rounds} rounds loads every proxy once in turn. Medians over rounds (lowest–highest).",
        crate::machine(),
        shell("haproxy -v 2>&1 | head -1"),
        shell("nginx -v 2>&1")
    );
    println!();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median and the spread (lowest and highest) of `v`.
fn spread(v: Vec<f64>) -> (f64, f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v), lo, hi)
}

/// One column of proxy `name` over the rounds.
fn column(rounds: &[Vec<Run>], name: &str, f: fn(&Run) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .flat_map(|r| r.iter().filter(|x| x.name == name).map(f))
        .collect()
}

/// duet ÷ `other`: the median over rounds of each round's ratio, with the lowest and highest.
fn print_ratios(rounds: &[Vec<Run>], other: &str) {
    let ratio = |f: fn(&Run) -> f64| {
        spread(
            rounds
                .iter()
                .filter_map(|r| {
                    let d = r.iter().find(|x| x.name == "duet")?;
                    let o = r.iter().find(|x| x.name == other)?;
                    Some(f(d) / f(o))
                })
                .collect(),
        )
    };
    let show = |(m, lo, hi): (f64, f64, f64)| format!("**{m:.2}** ({lo:.2}–{hi:.2})");
    println!(
        "duet ÷ {other}, median of per-round ratios (lowest–highest): CPU/request {}, rps {}, p99 {}",
        show(ratio(|r| r.cpu_us_per_req)),
        show(ratio(|r| r.rps)),
        show(ratio(|r| r.p99_ms)),
    );
}

/// Per proxy: medians over rounds, with the lowest and highest round, CPU per request first.
fn print_runs(rounds: &[Vec<Run>]) {
    let names: Vec<&'static str> = rounds
        .first()
        .map_or(Vec::new(), |r| r.iter().map(|x| x.name).collect());
    println!("| proxy | CPU per request | rps | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for name in names {
        let (cpu, cpu_lo, cpu_hi) = spread(column(rounds, name, |r| r.cpu_us_per_req));
        let (rps, rps_lo, rps_hi) = spread(column(rounds, name, |r| r.rps));
        let p50 = median(column(rounds, name, |r| r.p50_ms));
        let (p99, p99_lo, p99_hi) = spread(column(rounds, name, |r| r.p99_ms));
        println!(
            "| {name} | {cpu:.1} µs ({cpu_lo:.1}–{cpu_hi:.1}) | {rps:.0} ({rps_lo:.0}–{rps_hi:.0}) | {p50:.2} ms | {p99:.2} ms ({p99_lo:.2}–{p99_hi:.2}) |"
        );
    }
}
