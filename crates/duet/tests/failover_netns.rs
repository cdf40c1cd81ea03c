//! VIP failover with real daemons in network namespaces: two duet nodes and a client polling the
//! VIP over HTTP. Needs root; skips with a message otherwise.
//!
//! Time bounds are several times the expected value (advert 100 ms: takeover ≈ 0.35 s after a
//! silent master, ≈ 0.06 s after priority 0): they catch a broken mechanism, not a slow machine.

mod common;

use std::time::Duration;

use common::{Node, VIP, VIP6, configs, pair};
use duet_sys::process::{SIGCONT, SIGHUP, SIGKILL, SIGSTOP, SIGTERM};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn kill9_of_the_main_process_hands_over_and_the_guardian_removes_the_vip() {
    let (a, b) = configs("100ms", "");
    let Some(mut p) = pair("k9", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    p.signal(Node::Alpha, SIGKILL, false);
    let gone = p.wait_vip(Node::Alpha, VIP, false, S(5));
    assert!(
        gone.is_some_and(|d| d <= S(1)),
        "VIP left on alpha {gone:?}\n{}",
        p.logs()
    );
    let took = p.wait_answer("beta", S(5));
    assert!(
        took.is_some_and(|d| d <= S(2)),
        "beta answered after {took:?}\n{}",
        p.logs()
    );
    assert!(
        p.alpha
            .log_text()
            .contains("duet guardian: daemon exited without cleaning up"),
        "{}",
        p.logs()
    );
    // The restarted node preempts back (priority 150 > 100).
    let exe = p.exe.clone();
    p.lab.reap(p.alpha.pid.unwrap());
    p.alpha.start(&mut p.lab, &exe).unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
}

#[test]
fn kill9_of_every_duet_process_expires_the_vip_by_its_lifetime() {
    let (a, b) = configs("100ms", "");
    let Some(p) = pair("kg", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    // Daemon and guardian together: only the kernel lifetime can clean up now.
    p.signal(Node::Alpha, SIGKILL, true);
    let gone = p.wait_vip(Node::Alpha, VIP, false, S(10));
    assert!(
        gone.is_some_and(|d| d <= Duration::from_millis(2500)),
        "VIP gone after {gone:?}"
    );
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
}

#[test]
fn link_down_on_the_master_hands_over_and_link_up_preempts_back() {
    let (a, b) = configs("100ms", "");
    let Some(p) = pair("ld", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    p.lab.set_link(&p.alpha.host, false).unwrap();
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    // The master saw its own carrier go: FAULT, and the VIP is off the dead link.
    assert!(
        p.wait_vip(Node::Alpha, VIP, false, S(3)).is_some(),
        "{}",
        p.logs()
    );
    assert!(p.wait_state(Node::Alpha, "FAULT", S(3)), "{}", p.logs());
    p.lab.set_link(&p.alpha.host, true).unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    assert!(p.wait_state(Node::Beta, "BACKUP", S(3)), "{}", p.logs());
}

/// Link changes arrive as netlink notifications: with the fallback poll slowed to a minute,
/// the master still sees its carrier go at once (FAULT, VIP removed).
#[test]
fn a_carrier_loss_is_seen_through_notifications_not_the_poll() {
    let (a, b) = configs("100ms", "");
    let env = [("DUET_LINK_POLL_MS", "60000")];
    let target = format!("{VIP}:8080");
    let Some(p) = common::pair_with_env("ln", &target, &env, |_, _, _| (a, b)) else {
        return;
    };
    p.lab.set_link(&p.alpha.host, false).unwrap();
    assert!(p.wait_state(Node::Alpha, "FAULT", S(3)), "{}", p.logs());
    assert!(
        p.wait_vip(Node::Alpha, VIP, false, S(1)).is_some(),
        "{}",
        p.logs()
    );
    p.lab.set_link(&p.alpha.host, true).unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
}

#[test]
fn sigterm_sends_priority_zero_removes_the_vip_and_exits_0() {
    let (a, b) = configs("100ms", "");
    let Some(mut p) = pair("st", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    let before = p.status(Node::Beta).unwrap().vrrp[0]
        .counters
        .priority_zero_received;
    p.signal(Node::Alpha, SIGTERM, false);
    let took = p.wait_answer("beta", S(5));
    // Priority 0 lets beta take over after its skew time (~60 ms), not 3 intervals.
    assert!(
        took.is_some_and(|d| d <= S(1)),
        "beta after {took:?}\n{}",
        p.logs()
    );
    let status = p.lab.reap(p.alpha.pid.unwrap()).expect("alpha exited");
    assert!(
        status.success(),
        "alpha exit status {status:?}\n{}",
        p.logs()
    );
    assert!(!p.lab.has_address(&p.alpha.host, VIP.parse().unwrap()));
    let after = p.status(Node::Beta).unwrap().vrrp[0]
        .counters
        .priority_zero_received;
    assert!(after > before, "beta saw no priority-0 advert");
}

#[test]
fn sigstop_expires_the_vip_and_sigcont_converges_to_one_master() {
    let (a, b) = configs("100ms", "");
    let Some(p) = pair("ss", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    p.signal(Node::Alpha, SIGSTOP, true);
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    let gone = p.wait_vip(Node::Alpha, VIP, false, S(10));
    assert!(
        gone.is_some_and(|d| d <= Duration::from_millis(2500)),
        "VIP gone after {gone:?}"
    );
    p.signal(Node::Alpha, SIGCONT, true);
    // alpha resumes with the higher priority and takes the VIP back; exactly one node holds it.
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    assert!(
        p.alpha
            .log_text()
            .contains("re-announcing the VIPs of every MASTER"),
        "{}",
        p.logs()
    );
    let one = duet::lab::wait_for(S(5), || {
        p.state(Node::Beta).as_deref() == Some("BACKUP")
            && !p.lab.has_address(&p.beta.host, VIP.parse().unwrap())
    });
    assert!(one.is_some(), "{}", p.logs());
}

#[test]
fn unicast_peers_fail_over() {
    let a = duet::lab::vrrp_config("alpha", 150, "100ms", "unicast_peers = [\"10.99.0.3\"]");
    let b = duet::lab::vrrp_config("beta", 100, "100ms", "unicast_peers = [\"10.99.0.2\"]");
    let Some(p) = pair("uc", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    let beta = p.status(Node::Beta).unwrap();
    assert!(beta.vrrp[0].counters.adverts_received > 0);
    assert_eq!(beta.vrrp[0].master.as_deref(), Some("10.99.0.2"));
    p.signal(Node::Alpha, SIGKILL, true);
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
}

#[test]
fn failing_track_script_hands_over_and_recovery_takes_back() {
    let flag = std::env::temp_dir().join(format!("duet-track-{}", std::process::id()));
    std::fs::write(&flag, "ok").unwrap();
    let extra = "track_scripts = [\"app\"]";
    let script = format!(
        "\n[track_script.app]\ncommand = [\"test\", \"-f\", \"{}\"]\ninterval = \"100ms\"\nweight = -60\n",
        flag.display()
    );
    let a = duet::lab::vrrp_config("alpha", 150, "100ms", extra) + &script;
    let b = duet::lab::vrrp_config("beta", 100, "100ms", "");
    let Some(p) = pair("ts", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    std::fs::remove_file(&flag).unwrap();
    // 150 - 60 = 90 < 100: beta preempts.
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    let s = p.status(Node::Alpha).unwrap();
    assert_eq!(s.vrrp[0].effective_priority, 90);
    assert_eq!(s.vrrp[0].state, "BACKUP");
    std::fs::write(&flag, "ok").unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    let _ = std::fs::remove_file(&flag);
}

#[test]
fn ipv6_vip_fails_over() {
    let extra = "";
    let v6 = |name: &str, prio: u8| {
        duet::lab::vrrp_config(name, prio, "100ms", extra)
            .replace("10.99.0.100/24", &format!("{VIP6}/64"))
    };
    let Some(p) = pair(
        "v6",
        &v6("alpha", 150),
        &v6("beta", 100),
        &format!("[{VIP6}]:8080"),
    ) else {
        return;
    };
    let beta = p.status(Node::Beta).unwrap();
    // RFC 9568: IPv6 adverts come from the link-local address.
    assert!(
        beta.vrrp[0]
            .master
            .as_deref()
            .is_some_and(|m| m.starts_with("fe80:")),
        "{beta:?}"
    );
    p.signal(Node::Alpha, SIGKILL, false);
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    assert!(p.wait_vip(Node::Alpha, VIP6, false, S(2)).is_some());
}

#[test]
fn sighup_keeps_unchanged_instances_and_rejects_a_bad_config() {
    let (a, b) = configs("100ms", "");
    let Some(p) = pair("hup", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    let became = |p: &common::Pair| {
        p.status(Node::Alpha).unwrap().vrrp[0]
            .counters
            .became_master
    };
    let before = became(&p);
    p.signal(Node::Alpha, SIGHUP, false);
    assert!(duet::lab::wait_for(S(3), || p.alpha.log_text().contains("reloaded")).is_some());
    assert_eq!(became(&p), before, "unchanged instance flapped on reload");
    p.assert_state(Node::Alpha, "MASTER");

    std::fs::write(&p.alpha.config, "[node]\nname = \"alpha\"\nbogus = 1\n").unwrap();
    p.signal(Node::Alpha, SIGHUP, false);
    let rejected = duet::lab::wait_for(S(3), || {
        p.alpha
            .log_text()
            .contains("reload rejected, keeping the running config")
    });
    assert!(rejected.is_some(), "{}", p.logs());
    assert!(
        p.alpha.log_text().contains("unknown field `bogus`"),
        "{}",
        p.logs()
    );
    p.assert_state(Node::Alpha, "MASTER");
    assert!(p.wait_answer("alpha", S(2)).is_some());

    // A real change applies: priority 50 < 100, beta preempts.
    let lowered = duet::lab::vrrp_config("alpha", 50, "100ms", "").replace(
        "@STATE@",
        &p.lab.dir().join("alpha/state").display().to_string(),
    );
    std::fs::write(&p.alpha.config, lowered).unwrap();
    p.signal(Node::Alpha, SIGHUP, false);
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
}

#[test]
fn notify_hooks_run_in_order_one_at_a_time_and_a_stuck_hook_blocks_nothing() {
    let dir = std::env::temp_dir().join(format!("duet-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("calls");
    let script = dir.join("notify.sh");
    // Each call writes a begin and an end line around a short sleep: overlap would interleave them.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"begin $* old=$DUET_OLD_STATE seq=$DUET_EVENT_SEQ\" >> {o}.$DUET_NODE\nsleep 0.2\necho \"end $3\" >> {o}.$DUET_NODE\n",
            o = out.display()
        ),
    )
    .unwrap();
    let stuck = dir.join("stuck.sh");
    std::fs::write(&stuck, "#!/bin/sh\nsleep 100\n").unwrap();
    for f in [&script, &stuck] {
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(f)
            .status()
            .unwrap();
    }
    let extra = format!(
        "notify = \"{}\"\nnotify_master = \"{}\"\nnotify_timeout = \"1s\"",
        script.display(),
        stuck.display()
    );
    let (a, b) = configs("100ms", &extra);
    let Some(p) = pair("nt", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    p.signal(Node::Alpha, SIGTERM, false);
    assert!(
        p.wait_answer("beta", S(3)).is_some(),
        "a stuck notify_master must not delay VRRP"
    );
    std::thread::sleep(S(3));
    let calls = std::fs::read_to_string(out.with_extension("alpha")).unwrap_or_default();
    let lines: Vec<&str> = calls.lines().collect();
    // Pairs never interleave: begin/end alternate.
    for pair in lines.chunks(2) {
        assert!(
            pair[0].starts_with("begin") && pair.get(1).is_some_and(|l| l.starts_with("end")),
            "{calls}"
        );
    }
    let begins: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("begin"))
        .copied()
        .collect();
    let alpha_seq: Vec<&str> = begins
        .iter()
        .filter(|l| l.contains("INSTANCE web") && (l.ends_with("old=INIT") || l.contains("150")))
        .copied()
        .collect();
    assert!(
        alpha_seq
            .iter()
            .any(|l| l.starts_with("begin INSTANCE web BACKUP 150 old=INIT")),
        "{calls}"
    );
    // Each hook knows the number of the event it reports; they rise in transition order.
    let seqs: Vec<u64> = alpha_seq
        .iter()
        .filter_map(|l| l.rsplit_once("seq=")?.1.parse().ok())
        .collect();
    assert_eq!(seqs.len(), alpha_seq.len(), "{calls}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{calls}");
    let master = alpha_seq
        .iter()
        .position(|l| l.contains("MASTER 150 old=BACKUP"));
    let stop = alpha_seq
        .iter()
        .position(|l| l.contains("STOP 150 old=MASTER"));
    assert!(
        master.is_some() && stop.is_some() && master < stop,
        "{calls}"
    );
    assert!(
        p.alpha.log_text().contains("notify_master"),
        "timeout not logged\n{}",
        p.logs()
    );
    // Beta's event stream, in order: it started, became BACKUP, then MASTER, and its stuck
    // notify_master was killed after its timeout.
    let events = p.beta.events(&p.lab, &p.exe);
    let find = |what: &dyn Fn(&duet_admin::EventKind) -> bool| {
        events.iter().find(|e| what(&e.kind)).map(|e| e.seq)
    };
    use duet_admin::EventKind as K;
    let started = find(&|k| matches!(k, K::Daemon { state, .. } if state == "started"));
    let backup = find(&|k| matches!(k, K::Vrrp { to, .. } if to == "BACKUP"));
    let master =
        find(&|k| matches!(k, K::Vrrp { from, to, .. } if from == "BACKUP" && to == "MASTER"));
    let hook = find(
        &|k| matches!(k, K::Hook { hook, detail, .. } if hook == "notify_master" && detail.contains("killed")),
    );
    assert!(
        started.is_some() && started < backup && backup < master && master < hook,
        "{events:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vips_left_by_a_crashed_run_are_removed_on_start() {
    let Some(mut lab) = common::lab("lo") else {
        return;
    };
    let exe = common::exe();
    let h = lab.add_host("alpha", 2).unwrap();
    lab.add_address(&h, &format!("{VIP}/24")).unwrap();
    assert!(lab.has_address(&h, VIP.parse().unwrap()));
    // A lone backup that never becomes master within the check (long interval).
    let cfg = duet::lab::vrrp_config("alpha", 100, "10s", "");
    let mut node = duet::lab::DuetNode::new(&lab, &h, &cfg).unwrap();
    node.start(&mut lab, &exe).unwrap();
    let removed = duet::lab::wait_for(S(5), || !lab.has_address(&h, VIP.parse().unwrap()));
    assert!(removed.is_some(), "{}", node.log_text());
    assert!(node.log_text().contains("left behind by an earlier run"));
}

#[test]
fn malformed_packets_are_dropped_counted_and_change_nothing() {
    let (a, b) = configs("100ms", "");
    let Some(p) = pair("bad", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    // From the client: a v3 advert for VRID 51 with priority 255 but a broken checksum, one with
    // TTL 64, a truncated one and one with version 7. None may move the VIP.
    let py = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.99.0.10"))
good = bytes([0x31, 51, 255, 1, 0, 10, 0, 0, 10, 99, 0, 100])
def send(b, ttl=255):
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.sendto(b, ("224.0.0.18", 0))
send(bytes([0x31, 51, 255, 1, 0, 10, 0x12, 0x34, 10, 99, 0, 100]))
send(good, ttl=64)
send(good[:5])
send(bytes([0x71]) + good[1:])
"#;
    for _ in 0..3 {
        let st = p
            .lab
            .command(&p.client, "python3")
            .args(["-c", py])
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let s = p.status(Node::Alpha).unwrap();
    let d = &s.vrrp[0].counters.dropped;
    assert!(d.get("checksum").copied().unwrap_or(0) >= 3, "{d:?}");
    assert!(d.get("ttl").copied().unwrap_or(0) >= 3, "{d:?}");
    assert!(d.get("truncated").copied().unwrap_or(0) >= 3, "{d:?}");
    assert!(d.get("version").copied().unwrap_or(0) >= 3, "{d:?}");
    assert_eq!(s.vrrp[0].state, "MASTER");
    assert!(
        p.alpha
            .log_text()
            .contains("dropped VRRP packet from 10.99.0.10: bad checksum")
    );
    assert!(p.wait_answer("alpha", S(2)).is_some());
}

#[test]
fn message_only_checksum_mode_interoperates_with_pseudo_header_mode() {
    // alpha sends RFC-text (message-only) checksums, beta keepalived-style: both accept both.
    let a = duet::lab::vrrp_config("alpha", 150, "100ms", "v3_checksum = \"rfc\"");
    let b = duet::lab::vrrp_config("beta", 100, "100ms", "v3_checksum = \"pseudo-header\"");
    let Some(p) = pair("ck", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    let beta = p.status(Node::Beta).unwrap();
    assert!(beta.vrrp[0].counters.adverts_received > 0);
    assert!(
        beta.vrrp[0].counters.dropped.is_empty(),
        "{:?}",
        beta.vrrp[0].counters.dropped
    );
    p.signal(Node::Alpha, SIGTERM, false);
    assert!(p.wait_answer("beta", S(2)).is_some(), "{}", p.logs());
}

#[test]
fn track_file_and_track_interface_move_the_priority() {
    let file = std::env::temp_dir().join(format!("duet-weight-{}", std::process::id()));
    std::fs::write(&file, "0\n").unwrap();
    let extra = format!(
        "track_files = [{{ path = \"{}\", weight = -10 }}]\ntrack_interfaces = [{{ name = \"eth1\", weight = -60 }}]",
        file.display()
    );
    let a = duet::lab::vrrp_config("alpha", 150, "100ms", &extra);
    let (_, b) = configs("100ms", "");
    let Some(p) = pair_with_eth1("tf", &a, &b) else {
        return;
    };
    // File value 6 × weight -10 = -60: 150 - 60 = 90 < 100, beta preempts.
    std::fs::write(&file, "6\n").unwrap();
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    assert_eq!(
        p.status(Node::Alpha).unwrap().vrrp[0].effective_priority,
        90
    );
    std::fs::write(&file, "0\n").unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    // eth1 loses carrier: weight -60, beta preempts again; carrier back, alpha returns.
    duet::lab::run(
        "ip",
        &["-n", &p.alpha.host.ns, "link", "set", "eth1p", "down"],
    )
    .unwrap();
    assert!(p.wait_answer("beta", S(5)).is_some(), "{}", p.logs());
    let s = p.status(Node::Alpha).unwrap();
    assert_eq!(
        s.vrrp[0].trackers.get("interface eth1").map(String::as_str),
        Some("down")
    );
    duet::lab::run(
        "ip",
        &["-n", &p.alpha.host.ns, "link", "set", "eth1p", "up"],
    )
    .unwrap();
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    let _ = std::fs::remove_file(&file);
}

/// [`common::pair`], with a veth pair `eth1`/`eth1p` inside alpha's namespace created before
/// the daemons start.
fn pair_with_eth1(tag: &str, a: &str, b: &str) -> Option<common::Pair> {
    common::pair_with(tag, &format!("{VIP}:8080"), |_, alpha, _| {
        let ns = alpha.ns.as_str();
        for args in [
            vec![
                "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
            ],
            vec!["-n", ns, "link", "set", "eth1", "up"],
            vec!["-n", ns, "link", "set", "eth1p", "up"],
        ] {
            duet::lab::run("ip", &args).unwrap();
        }
        (a.to_string(), b.to_string())
    })
}

#[test]
fn accept_false_holds_the_vip_but_refuses_traffic_to_it() {
    if !duet::lab::have_program("nft") {
        duet::lab::skip(
            "nft is not installed (apt-get install nftables)",
            "DUET_REQUIRE_TOOLS",
        );
        return;
    }
    let Some(mut lab) = common::lab("acc") else {
        return;
    };
    let exe = common::exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let client = lab.add_host("client", 10).unwrap();
    lab.start_responders(&exe, &[&a]).unwrap();
    let cfg = duet::lab::vrrp_config("alpha", 150, "100ms", "accept = false");
    let mut alpha = duet::lab::DuetNode::new(&lab, &a, &cfg).unwrap();
    alpha.start(&mut lab, &exe).unwrap();
    let probe = lab.probe(&exe, &client, &format!("{VIP}:8080")).unwrap();
    let master = duet::lab::wait_for(S(5), || {
        alpha.state(&lab, &exe).as_deref() == Some("MASTER")
    });
    assert!(master.is_some(), "{}", alpha.log_text());
    assert!(lab.has_address(&a, VIP.parse().unwrap()));
    // Not one answer on the VIP, while the node's own address still answers.
    std::thread::sleep(Duration::from_millis(500));
    while probe.try_recv().is_ok() {}
    let mut answered = 0;
    let mut attempts = 0;
    let until = std::time::Instant::now() + S(1);
    while std::time::Instant::now() < until {
        if let Ok(l) = probe.recv_timeout(Duration::from_millis(100)) {
            attempts += 1;
            answered += usize::from(l.node.is_some());
        }
    }
    assert!(attempts > 5, "probe stalled");
    assert_eq!(answered, 0, "the VIP answered despite accept = false");
    let own = lab.probe(&exe, &client, "10.99.0.2:8080").unwrap();
    assert!(
        (0..50).any(|_| own
            .recv_timeout(Duration::from_millis(100))
            .is_ok_and(|l| l.node.is_some())),
        "the node's own address must still answer"
    );
    // SIGTERM removes the table.
    duet_sys::process::send_signal(alpha.pid.unwrap(), SIGTERM, false).unwrap();
    assert!(lab.reap(alpha.pid.unwrap()).is_some_and(|s| s.success()));
    let out = lab
        .command(&a, "nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("duet_accept"));
}

#[test]
fn an_operator_switchover_hands_the_vip_to_the_peer_which_keeps_it() {
    let dir = std::env::temp_dir().join(format!("duet-switch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("operator.token");
    std::fs::write(&token, "an operator token of enough length\n").unwrap();
    let line = format!(
        "state_dir = \"@STATE@\"\noperator_token_file = \"{}\"",
        token.display()
    );
    let (a, b) = configs("100ms", "");
    let (a, b) = (
        a.replace("state_dir = \"@STATE@\"", &line),
        b.replace("state_dir = \"@STATE@\"", &line),
    );
    let Some(p) = pair("sw", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    std::thread::sleep(S(1));
    let served = p.status(Node::Alpha).unwrap().vrrp[0].master_seconds;
    assert!(served > 0.5, "the availability counter: {served}");
    // Asked on alpha (priority 150, the master): beta (100) takes the VIP at once...
    let out = p
        .lab
        .command(&p.alpha.host, &p.exe)
        .args(["switchover", "--admin", "127.0.0.1:9900", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("handed over web"),
        "{out:?}"
    );
    let took = p.wait_answer("beta", S(3));
    assert!(took.is_some(), "beta did not take over\n{}", p.logs());
    // ...and keeps it although alpha's priority is higher and preempt is on.
    std::thread::sleep(S(3));
    assert_eq!(p.alpha.state(&p.lab, &p.exe).as_deref(), Some("BACKUP"));
    assert_eq!(p.beta.state(&p.lab, &p.exe).as_deref(), Some("MASTER"));
    assert!(p.wait_answer("beta", S(2)).is_some());
    // The handover is audited and is an event on alpha.
    let events = p.alpha.events(&p.lab, &p.exe);
    assert!(
        events.iter().any(|e| matches!(&e.kind,
            duet_admin::EventKind::Operator { who, action, ok: true, .. }
                if who == "operator" && action.contains("/v1/switchover"))),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(&e.kind,
            duet_admin::EventKind::Vrrp { to, reason, .. }
                if to == "BACKUP" && reason.contains("switchover"))),
        "{events:#?}"
    );
    // Beta dies: alpha takes over again (nobody else serves).
    p.signal(Node::Beta, SIGKILL, true);
    assert!(p.wait_answer("alpha", S(5)).is_some(), "{}", p.logs());
    let _ = std::fs::remove_dir_all(&dir);
}
