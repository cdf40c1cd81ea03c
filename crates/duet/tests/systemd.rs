//! `duet run` under systemd's `Type=notify` protocol, with a socket of the test's own in
//! place of systemd's: READY once running, a STATUS line, WATCHDOG at half the timeout,
//! RELOADING/READY around SIGHUP, STOPPING on SIGTERM, and no WATCHDOG while the control
//! loop is stalled. No root needed. The unit file itself
//! is checked by `systemd-analyze verify` after the .deb is installed (tests/package.rs).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Every notification until `until` (or the sender exits), with when it came.
fn collect(sock: &UnixDatagram, until: Instant) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    got
}

fn wait_for(sock: &UnixDatagram, what: &str, limit: Duration) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = m == what;
            got.push((Instant::now(), m));
            if done {
                return got;
            }
        }
    }
    panic!("no {what:?} within {limit:?}; got {got:?}");
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_feeds_the_watchdog_and_says_when_it_reloads_and_stops() {
    let dir = std::env::temp_dir().join(format!("duet-systemd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("duet.toml");
    let text = format!(
        "[node]\nname = \"alpha\"\nadmin = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\nguardian = false\n",
        dir.join("state").display()
    );
    std::fs::write(&config, &text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        // WatchdogSec=400ms: fed every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(&sock, "READY=1", Duration::from_secs(10));
    assert!(
        started.iter().all(|(_, m)| !m.starts_with("WATCHDOG")),
        "fed before ready: {started:?}"
    );
    // Two seconds of running: about ten feeds (generous bounds: a real bug is none, or a
    // feed per loop turn), and the status line.
    let t0 = Instant::now();
    let got = collect(&sock, t0 + Duration::from_secs(2));
    let feeds = got.iter().filter(|(_, m)| m == "WATCHDOG=1").count();
    assert!((4..=30).contains(&feeds), "{feeds} feeds in 2 s: {got:?}");
    assert!(
        started
            .iter()
            .chain(&got)
            .any(|(_, m)| m == "STATUS=running"),
        "{started:?} {got:?}"
    );
    // The longest gap between feeds stays under the timeout.
    let times: Vec<Instant> = std::iter::once(t0)
        .chain(
            got.iter()
                .filter(|(_, m)| m == "WATCHDOG=1")
                .map(|(t, _)| *t),
        )
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < Duration::from_millis(400), "a gap of {gap:?}");

    // SIGHUP: reloading, then ready again (the file is unchanged, so the reload applies).
    duet_sys::process::send_signal(child.id(), duet_sys::process::SIGHUP, false).unwrap();
    let reload = wait_for(&sock, "READY=1", Duration::from_secs(5));
    assert!(reload.iter().any(|(_, m)| m == "RELOADING=1"), "{reload:?}");

    // A stalled control loop stops feeding the watchdog while the rest of the process runs:
    // the config becomes a FIFO, so the next reload blocks the loop in its read until the
    // test writes the file.
    std::fs::remove_file(&config).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap();
    assert!(made.success());
    duet_sys::process::send_signal(child.id(), duet_sys::process::SIGHUP, false).unwrap();
    wait_for(&sock, "RELOADING=1", Duration::from_secs(5));
    let stalled = collect(&sock, Instant::now() + Duration::from_secs(1));
    assert!(
        stalled.iter().all(|(_, m)| m != "WATCHDOG=1"),
        "fed while the loop was stalled: {stalled:?}"
    );
    // Meanwhile the admin API (its own thread) still answers.
    let answer = std::process::Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["status", "--json", "--admin", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(answer.status.success(), "{answer:?}");
    std::fs::write(&config, &text).unwrap();
    let resumed = wait_for(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(resumed.iter().any(|(_, m)| m == "READY=1"), "{resumed:?}");

    // SIGTERM: stopping, and a clean exit.
    duet_sys::process::send_signal(child.id(), duet_sys::process::SIGTERM, false).unwrap();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(5));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
