//! The control plane tried as an operator's bad day would: a node without CAP_NET_ADMIN, a
//! stranger on the LAN forging adverts. Real daemons in network namespaces; needs root.

mod common;

use std::time::Duration;

use common::{VIP, configs, exe, lab};
use duet::lab::{DuetNode, wait_for};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn a_node_without_cap_net_admin_is_fault_not_master_and_the_peer_serves() {
    let Some(mut lab) = lab("nocap") else {
        return;
    };
    let exe = exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let b = lab.add_host("beta", 3).unwrap();
    let client = lab.add_host("client", 10).unwrap();
    lab.start_responders(&exe, &[&a, &b]).unwrap();
    // alpha has the higher priority but cannot add addresses (as in a container or a unit
    // without the capability); it keeps CAP_NET_RAW, so it could advertise.
    let (alpha_cfg, beta_cfg) = configs("100ms", "");
    let mut alpha = DuetNode::new(&lab, &a, &alpha_cfg).unwrap();
    alpha.wrapper = ["setpriv", "--bounding-set=-net_admin", "--"]
        .map(String::from)
        .to_vec();
    let mut beta = DuetNode::new(&lab, &b, &beta_cfg).unwrap();
    beta.start(&mut lab, &exe).unwrap();
    alpha.start(&mut lab, &exe).unwrap();
    let probe = lab.probe(&exe, &client, &format!("{VIP}:8080")).unwrap();
    let logs = || {
        format!(
            "--- alpha:\n{}\n--- beta:\n{}",
            alpha.log_text(),
            beta.log_text()
        )
    };
    let state = |n: &DuetNode| n.state(&lab, &exe);
    let settled = wait_for(S(10), || {
        state(&alpha).as_deref() == Some("FAULT") && state(&beta).as_deref() == Some("MASTER")
    });
    assert!(
        settled.is_some(),
        "alpha not FAULT with beta MASTER\n{}",
        logs()
    );
    // Truthful status: FAULT with the reason, nothing held, never MASTER.
    let s = alpha.status(&lab, &exe).unwrap();
    let v = &s.vrrp[0];
    assert!(
        v.fault
            .as_deref()
            .is_some_and(|f| f.contains("CAP_NET_ADMIN")),
        "{v:?}"
    );
    assert!(v.vips_held.is_empty(), "{v:?}");
    assert_eq!(v.counters.became_master, 0, "{v:?}");
    assert!(!lab.has_address(&a, VIP.parse().unwrap()));
    assert!(
        alpha
            .log_text()
            .contains("missing CAP_NET_ADMIN: VIPs cannot be added"),
        "{}",
        logs()
    );
    // The client is served by beta, and alpha stays out: still FAULT a few retries later.
    let mut from_beta = false;
    let deadline = std::time::Instant::now() + S(5);
    while std::time::Instant::now() < deadline && !from_beta {
        if let Ok(line) = probe.recv_timeout(Duration::from_millis(200)) {
            from_beta = line.node.as_deref() == Some("beta");
        }
    }
    assert!(
        from_beta,
        "the client never reached the VIP on beta\n{}",
        logs()
    );
    std::thread::sleep(S(3));
    assert_eq!(state(&alpha).as_deref(), Some("FAULT"), "{}", logs());
    assert_eq!(state(&beta).as_deref(), Some("MASTER"), "{}", logs());
}

/// Python that multicasts valid VRRPv3 adverts for VRID 51 with priority 254 (IPv4 checksum over
/// the pseudo-header, as keepalived and duet send) from the host it runs on, every 50 ms for
/// `seconds`.
fn forger(src: &str, seconds: u32) -> String {
    format!(
        r#"
import socket, struct, time
src = "{src}"
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
body = bytes([0x31, 51, 254, 1, 0, 10, 0, 0]) + socket.inet_aton("10.99.0.100")
pseudo = socket.inet_aton(src) + socket.inet_aton("224.0.0.18") + struct.pack("!BBH", 0, 112, len(body))
c = csum(pseudo + body)
pkt = body[:6] + struct.pack("!H", c) + body[8:]
end = time.time() + {seconds}
while time.time() < end:
    s.sendto(pkt, ("224.0.0.18", 0))
    time.sleep(0.05)
"#
    )
}

/// Starts the forger on the pair's client (10.99.0.10).
fn forge(p: &common::Pair, seconds: u32) -> std::process::Child {
    p.lab
        .command(&p.client, "python3")
        .args(["-c", &forger("10.99.0.10", seconds)])
        .spawn()
        .unwrap()
}

#[test]
fn without_a_heartbeat_a_forged_advert_is_obeyed_as_keepalived_does() {
    // The documented risk of plain VRRP (RFC 9568 has no authentication), and the proof that
    // the forger's adverts are valid: the master steps down to the stranger's priority 254.
    let (a, b) = configs("100ms", "");
    let Some(p) = common::pair("forge0", &a, &b, &format!("{VIP}:8080")) else {
        return;
    };
    let mut f = forge(&p, 3);
    let stepped = wait_for(S(3), || {
        p.state(common::Node::Alpha).as_deref() == Some("BACKUP")
    });
    let _ = f.wait();
    assert!(
        stepped.is_some(),
        "the forged advert was not obeyed: is it valid?\n{}",
        p.logs()
    );
}

#[test]
fn with_a_heartbeat_a_strangers_adverts_neither_take_nor_steal_the_vip() {
    let Some(p) = common::cluster("forge1", "", false) else {
        return;
    };
    let mut f = forge(&p, 3);
    // For the whole forgery: alpha stays MASTER and keeps answering on the VIP.
    let start = std::time::Instant::now();
    while start.elapsed() < S(3) {
        assert_eq!(
            p.state(common::Node::Alpha).as_deref(),
            Some("MASTER"),
            "{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = f.wait();
    assert!(p.wait_answer("alpha", S(2)).is_some(), "{}", p.logs());
    let s = p.status(common::Node::Alpha).unwrap();
    let dropped = s.vrrp[0]
        .counters
        .dropped
        .get("stranger")
        .copied()
        .unwrap_or(0);
    assert!(dropped >= 20, "only {dropped} stranger adverts counted");
    let beta = p.status(common::Node::Beta).unwrap();
    assert_eq!(beta.vrrp[0].state, "BACKUP");
    // Logged once per source (per minute), not per packet.
    let lines = p
        .alpha
        .log_text()
        .matches("dropped VRRP packet from 10.99.0.10: sender is not a cluster peer")
        .count();
    assert_eq!(lines, 1, "{}", p.logs());
}

#[test]
fn a_witness_that_cannot_write_tells_the_nodes_why_once() {
    let witness = duet::lab::witness_config(20);
    let Some(p) = common::cluster("wfail", &witness, true) else {
        return;
    };
    let lease_held = wait_for(S(10), || {
        p.status(common::Node::Alpha)
            .and_then(|s| s.cluster?.lease)
            .is_some_and(|l| l.valid)
    });
    assert!(
        lease_held.is_some(),
        "alpha never held the lease\n{}",
        p.logs()
    );
    // The witness's state file becomes unwritable (a directory where the file must be
    // renamed to): its next grant cannot be made durable.
    let state = p.lab.dir().join("witness.state");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let degraded = wait_for(S(5), || {
        p.status(common::Node::Alpha)
            .and_then(|s| s.cluster?.lease?.problem)
            .is_some_and(|why| why.contains("cannot write its state file"))
    });
    assert!(
        degraded.is_some(),
        "alpha's status never showed the witness's problem\n{}",
        p.logs()
    );
    // Logged once per change on both sides, however many renewals were refused.
    std::thread::sleep(S(2));
    let alpha_lines = p
        .alpha
        .log_text()
        .matches("cluster degraded: the witness cannot grant")
        .count();
    assert_eq!(alpha_lines, 1, "{}", p.logs());
    let witness_log = std::fs::read_to_string(p.lab.dir().join("witness.log")).unwrap();
    assert_eq!(
        witness_log
            .matches("refusing every lease until it can")
            .count(),
        1,
        "{witness_log}"
    );
    // Writable again: the nodes say so, and the lease comes back.
    std::fs::remove_dir(&state).unwrap();
    let healed = wait_for(S(5), || {
        p.status(common::Node::Alpha)
            .and_then(|s| s.cluster?.lease)
            .is_some_and(|l| l.problem.is_none() && l.valid)
    });
    assert!(healed.is_some(), "{}", p.logs());
    assert!(
        p.alpha
            .log_text()
            .contains("the witness can grant leases again")
    );
}

/// VmRSS of `pid` in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    duet_sys::process::rss_kib(pid).unwrap_or(0)
}

#[test]
fn a_flood_at_the_vrrp_and_heartbeat_ports_stalls_nothing() {
    // Both nodes also run a balancer, which the client loads throughout.
    let balancer = "\n[[balancer]]\nname = \"web\"\nbind = \"0.0.0.0:8081\"\nmode = \"http\"\nbackends = [{ address = \"10.99.0.2:8080\" }, { address = \"10.99.0.3:8080\" }]\n";
    let Some(mut p) = common::cluster("flood", balancer, false) else {
        return;
    };
    let exe = exe();
    let seconds = 20u64;
    let loads: Vec<_> = (0..3)
        .map(|_| {
            p.lab
                .probe_with(&exe, &p.client, "10.99.0.2:8081", "0ms", "500ms")
                .unwrap()
        })
        .collect();
    let watch = advert_watch(&p, &exe, seconds + 1);
    let alpha_pid = p.alpha.pid.unwrap();
    let rss_before = rss_kib(alpha_pid);
    let flood = p
        .lab
        .command(&p.client, &exe)
        .args([
            "lab-flood",
            "--from",
            "10.99.0.10",
            "--udp",
            "10.99.0.2:7946",
            "--vrid",
            "51",
            "--pps",
            "50000",
            "--seconds",
        ])
        .arg(seconds.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Throughout: alpha MASTER, beta BACKUP.
    let start = std::time::Instant::now();
    let mut rss_peak = rss_before;
    while start.elapsed() < S(seconds) {
        assert_eq!(
            p.state(common::Node::Alpha).as_deref(),
            Some("MASTER"),
            "spurious failover during the flood\n{}",
            p.logs()
        );
        assert_eq!(
            p.state(common::Node::Beta).as_deref(),
            Some("BACKUP"),
            "{}",
            p.logs()
        );
        rss_peak = rss_peak.max(rss_kib(alpha_pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let flood_out = flood.wait_with_output().unwrap();
    let watch_out = watch.wait_with_output().unwrap();
    let flood: serde_json::Value = serde_json::from_slice(&flood_out.stdout).unwrap();
    let intervals: serde_json::Value = serde_json::from_slice(&watch_out.stdout).unwrap();
    let served: usize = loads
        .iter()
        .map(|rx| rx.try_iter().filter(|l| l.node.is_some()).count())
        .sum();
    let status = p.status(common::Node::Alpha).unwrap();
    let rate = flood["sent"].as_f64().unwrap() / flood["seconds"].as_f64().unwrap();
    eprintln!(
        "flood: {rate:.0} packets/s for {seconds} s; advert intervals at beta: {intervals}; alpha RSS {rss_before} KiB before, {rss_peak} KiB at most; {served} proxied requests; inputs dropped {}; stranger adverts {}",
        status.inputs_dropped,
        status.vrrp[0]
            .counters
            .dropped
            .get("stranger")
            .copied()
            .unwrap_or(0)
    );
    // The flood is paced at 50 000 packets/s; on this shared 2-core machine the flooder, the
    // nodes and the proxied load compete for the CPU and it once reached only 38 000. This
    // checks the test's own tool: below half the pace the run proves too little.
    assert!(
        rate >= 25_000.0,
        "the flood reached only {rate:.0} packets/s (paced at 50 000): too weak to prove anything"
    );
    // Generous bounds a stall would break (the master-down interval is ~360 ms). The loop
    // before this change sent no advert at all for the whole flood: its inputs always won.
    let count = intervals["count"].as_u64().unwrap_or(0);
    assert!(
        count >= seconds * 9,
        "only {count} advert intervals reached beta in {seconds} s"
    );
    let max = intervals["max_ms"].as_f64().unwrap_or(f64::INFINITY);
    assert!(max < 250.0, "an advert interval at beta reached {max} ms");
    assert!(
        rss_peak < rss_before + 30 * 1024,
        "alpha grew from {rss_before} to {rss_peak} KiB"
    );
    assert!(served > 1000, "the proxy load stalled: {served} requests");
}

/// A Python client in a lab host: opens an event stream on `admin` and never reads it, then
/// drains and enables `backend` as fast as it can for `seconds` with the operator token in
/// `token_file`, over one kept-alive connection; prints how many calls it made.
const EVENT_FLOOD: &str = r#"
import http.client, json, socket, sys, time
admin, token_file, backend, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
host, port = admin.split(':')
token = open(token_file).read().strip()
stuck = socket.socket()
stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
stuck.connect((host, int(port)))
stuck.sendall(b'GET /v1/events HTTP/1.1\r\nHost: ' + host.encode() + b'\r\nAccept: text/event-stream\r\n\r\n')
c = http.client.HTTPConnection(host, int(port))
h = {'Authorization': 'Bearer ' + token, 'Content-Length': '0'}
n, ok, end = 0, 0, time.time() + seconds
while time.time() < end:
    verb = 'drain' if n % 2 == 0 else 'enable'
    c.request('POST', '/v1/balancers/web/backends/' + backend + '/' + verb, headers=h)
    r = c.getresponse(); r.read()
    n += 1; ok += r.status == 200
print(json.dumps({'calls': n, 'ok': ok}))
"#;

#[test]
fn an_event_flood_with_a_stuck_stream_delays_no_advert() {
    let balancer = "\n[[balancer]]\nname = \"web\"\nbind = \"0.0.0.0:8081\"\nmode = \"http\"\nbackends = [{ address = \"10.99.0.2:8080\" }, { address = \"10.99.0.3:8080\" }]\n";
    let Some(p) = common::cluster("evflood", balancer, false) else {
        return;
    };
    let exe = exe();
    let seconds = 10u64;
    let watch = advert_watch(&p, &exe, seconds + 1);
    // Alpha's kernel may buffer up to 4 MB for the stuck stream before duet notices it is
    // stuck; a smaller send buffer in this lab host makes that happen within the flood.
    let out = p
        .lab
        .command(&p.alpha.host, "sysctl")
        .args(["-w", "net.ipv4.tcp_wmem=4096 16384 65536"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Every call makes two events (the operator's and the backend's) and an audit line.
    let token = p.lab.dir().join("operator.token");
    let flood = p
        .lab
        .command(&p.alpha.host, "python3")
        .args(["-c", EVENT_FLOOD, "127.0.0.1:9900"])
        .arg(&token)
        .args(["10.99.0.3:8080", &seconds.to_string()])
        .output()
        .unwrap();
    assert!(flood.status.success(), "{flood:?}");
    let calls: serde_json::Value = serde_json::from_slice(&flood.stdout).unwrap();
    let intervals: serde_json::Value =
        serde_json::from_slice(&watch.wait_with_output().unwrap().stdout).unwrap();
    let status = p.status(common::Node::Alpha).unwrap();
    let events = p.alpha.events(&p.lab, &exe);
    let last = events.last().map_or(0, |e| e.seq);
    eprintln!(
        "event flood: {calls} in {seconds} s, {last} events on alpha; advert intervals at beta: {intervals}"
    );
    let n = calls["calls"].as_u64().unwrap();
    assert_eq!(calls["ok"].as_u64(), Some(n), "every call succeeded");
    assert!(
        n >= 500,
        "only {n} calls: too weak a flood to prove anything"
    );
    assert!(last >= 2 * n, "{last} events for {n} calls");
    // The stuck stream lost events, counted; the control loop went on.
    let text = metrics_text(&p);
    let dropped = text
        .lines()
        .find_map(|l| l.strip_prefix("duet_events_dropped_total{consumer=\"sse\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "the stuck stream lost nothing?\n{text}");
    assert_eq!(status.vrrp[0].state, "MASTER");
    assert_eq!(p.state(common::Node::Beta).as_deref(), Some("BACKUP"));
    // Generous bounds a stalled loop breaks (the master-down interval is ~360 ms).
    let count = intervals["count"].as_u64().unwrap_or(0);
    assert!(
        count >= seconds * 9,
        "only {count} advert intervals in {seconds} s"
    );
    let max = intervals["max_ms"].as_f64().unwrap_or(f64::INFINITY);
    assert!(max < 250.0, "an advert interval at beta reached {max} ms");
}

/// Alpha's `/metrics`, read inside its namespace.
fn metrics_text(p: &common::Pair) -> String {
    let out = p
        .lab
        .command(&p.alpha.host, "python3")
        .args([
            "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9900/metrics').read().decode())",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `duet lab-vrrp-watch` on beta for `seconds`: the intervals of alpha's adverts, as JSON on
/// its stdout.
fn advert_watch(p: &common::Pair, exe: &std::path::Path, seconds: u64) -> std::process::Child {
    p.lab
        .command(&p.beta.host, exe)
        .args([
            "lab-vrrp-watch",
            "--src",
            "10.99.0.2",
            "--on",
            "10.99.0.3",
            "--seconds",
        ])
        .arg(seconds.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
