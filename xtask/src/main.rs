//! `cargo xtask bench failover`: duet against keepalived in the same namespace lab;
//! `cargo xtask deb`: the Debian package.
//!
//! Benchmarks are separate commands, not part of the test run: they take minutes and their
//! numbers belong in `docs/benchmarks.md`, not in assertions.

mod chaos;
mod db;
mod deb;
mod failover;
mod patroni;
mod proxy;

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bench", "failover", rest @ ..] => failover::main(rest),
        ["bench", "proxy", rest @ ..] => proxy::main(rest),
        ["bench", "db", rest @ ..] => db::main(rest),
        ["chaos", rest @ ..] => chaos::main(rest),
        ["deb", rest @ ..] => deb::main(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask bench failover [--runs N] [--interval 100ms] [--modes a,b]\n\
                 \n\
                 bench failover   VIP takeover time, duet vs keepalived, per fault mode\n\
                 bench proxy      HTTP rps, latency and CPU per request, duet vs haproxy and nginx (--seconds N --rounds N, --http-only)\n\
                 bench db         PostgreSQL failover: node kill, postmaster kill, switchover, rejoin (--runs N; --audit N failovers in a row)\n\
                 chaos            split-brain scenarios with real processes: VIP overlap and probes answered\n\
                 deb              the Debian package (needs cargo-deb): target/debian/duet_*.deb"
            );
            2
        }
    };
    std::process::exit(code);
}

/// Builds the release `duet` binary and returns its path.
pub fn build_duet() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "duet",
            "--bin",
            "duet",
        ])
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !st.success() {
        return Err("cargo build --release -p duet failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Ok(target.join("release/duet"))
}

/// Installs Debian packages that are missing (the benchmark needs the reference tools).
pub fn ensure_packages(pkgs: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs
        .iter()
        .filter(|(program, _)| !duet::lab::have_program(program))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("could not install {}", missing.join(" ")))
    }
}

/// The trimmed standard output of a shell command (for the machine line of benchmark tables);
/// empty when it fails.
/// Now, as benchmark tables are dated: `2026-11-25 21:37 UTC`.
pub fn utc_now() -> String {
    shell("date -u '+%Y-%m-%d %H:%M UTC'")
}

/// The machine for a table's header: `2 cores, AMD EPYC`.
pub fn machine() -> String {
    format!(
        "{} cores, {}",
        shell("nproc"),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    )
}

pub fn shell(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
