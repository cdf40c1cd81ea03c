//! `[[service]]` groups with real processes in namespaces: alpha and beta share a directory
//! (the "shared storage", bind-mounted by a `mount` service in each node's own mount
//! namespace) and run an `exec` app after it that marks `running.NODE` there. A watcher
//! checks, all along, that the app never runs on both nodes at once. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Node, Pair, pair_with};
use duet::lab::wait_for;

const S: fn(u64) -> Duration = Duration::from_secs;

/// The app: `app.sh start|stop|check NODE`. It needs the storage mounted; `crash.NODE` in the
/// lab directory makes its check fail, `stop-fails.NODE` its stop.
const APP: &str = r#"#!/bin/sh
lab="$(dirname "$0")"
mnt="$lab/mnt"
case "$1" in
start) mountpoint -q "$mnt" || { echo "storage not mounted" >&2; exit 1; }
       touch "$mnt/running.$2" ;;
stop)  [ -e "$lab/stop-fails.$2" ] && { echo "refuses to stop" >&2; exit 1; }
       rm -f "$mnt/running.$2" ;;
check) [ -e "$mnt/running.$2" ] && [ ! -e "$lab/crash.$2" ] ;;
esac
"#;

fn services(lab: &Path, node: &str) -> String {
    format!(
        r#"
[[service]]
name = "storage"
follows = "web"
kind = "mount"
device = "{shared}"
mountpoint = "{mnt}"
fstype = "none"
options = "bind"
interval = "500ms"

[[service]]
name = "app"
follows = "web"
kind = "exec"
start = ["{app}", "start", "{node}"]
stop = ["{app}", "stop", "{node}"]
monitor = ["{app}", "check", "{node}"]
interval = "500ms"
timeout = "5s"
restarts = 2
after = ["storage"]
"#,
        shared = lab.join("shared").display(),
        mnt = lab.join("mnt").display(),
        app = lab.join("app.sh").display(),
    )
}

/// The pair of `common::cluster` (heartbeats on two links, a witness) with the services.
fn services_pair(tag: &str) -> Option<Pair> {
    pair_with_services(tag, services)
}

/// An app that follows the cluster's leadership, not a VRRP instance.
fn leader_app(lab: &Path, node: &str) -> String {
    format!(
        r#"
[[service]]
name = "app"
follows = "cluster"
kind = "exec"
start = ["/bin/sh", "-c", "touch {shared}/running.{node}"]
stop = ["/bin/sh", "-c", "rm -f {shared}/running.{node}"]
monitor = ["/bin/sh", "-c", "test -e {shared}/running.{node}"]
interval = "500ms"
"#,
        shared = lab.join("shared").display(),
    )
}

fn pair_with_services(tag: &str, services: fn(&Path, &str) -> String) -> Option<Pair> {
    pair_with(tag, &format!("{}:8080", common::VIP), |lab, a, b| {
        let w = lab.add_host("witness", 20).unwrap();
        lab.add_direct_link(a, b).unwrap();
        let key = lab.cluster_key().unwrap();
        lab.start_witness(&common::exe(), &w, &key).unwrap();
        let dir = lab.dir().to_path_buf();
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        std::fs::write(dir.join("app.sh"), APP).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(dir.join("app.sh")).unwrap().permissions(),
            0o755,
        );
        let mut perm = std::fs::metadata(dir.join("app.sh")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(dir.join("app.sh"), perm).unwrap();
        let token = dir.join("operator.token");
        std::fs::write(&token, "an operator token of enough length\n").unwrap();
        let line = format!(
            "state_dir = \"@STATE@\"\noperator_token_file = \"{}\"",
            token.display()
        );
        let (ac, bc) = common::configs("100ms", "");
        let witness = duet::lab::witness_config(20);
        let cfg = |c: String, me: u8, peer: u8, name: &str| {
            c.replace("state_dir = \"@STATE@\"", &line)
                + &duet::lab::heartbeat_config(me, peer, &key, &witness)
                + &services(&dir, name)
        };
        (cfg(ac, 2, 3, "alpha"), cfg(bc, 3, 2, "beta"))
    })
}

/// Watches the shared directory every 5 ms: counts the moments both nodes ran the app.
struct Watcher {
    stop: Arc<AtomicBool>,
    overlaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(shared: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let overlaps = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), overlaps.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if shared.join("running.alpha").exists() && shared.join("running.beta").exists() {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Watcher {
            stop,
            overlaps,
            thread: Some(thread),
        }
    }

    fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::Relaxed)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn running(p: &Pair, n: Node) -> Vec<String> {
    p.status(n)
        .map(|s| {
            s.services
                .iter()
                .filter(|v| v.state == "running")
                .map(|v| v.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn cli(p: &Pair, n: Node, args: &[&str]) -> std::process::Output {
    p.lab
        .command(&p.node(n).host, &p.exe)
        .args(args)
        .args(["--admin", "127.0.0.1:9900", "--token-file"])
        .arg(p.lab.dir().join("operator.token"))
        .output()
        .unwrap()
}

#[test]
fn services_follow_the_master_restart_in_place_step_down_and_never_run_twice() {
    let Some(p) = services_pair("sv") else {
        return;
    };
    let dir = p.lab.dir().to_path_buf();
    let shared = dir.join("shared");
    let watcher = Watcher::start(shared.clone());

    // alpha is master: storage then app run there, not on beta.
    let up = wait_for(S(10), || running(&p, Node::Alpha) == ["storage", "app"]);
    assert!(up.is_some(), "{:?}\n{}", p.status(Node::Alpha), p.logs());
    assert!(shared.join("running.alpha").exists());
    assert!(running(&p, Node::Beta).is_empty());

    // The app crashes once: restarted in place (storage untouched), still on alpha.
    std::fs::write(dir.join("crash.alpha"), "").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(dir.join("crash.alpha")).unwrap();
    let events = p.alpha.events(&p.lab, &p.exe);
    let again = wait_for(S(10), || {
        p.alpha
            .events(&p.lab, &p.exe)
            .iter()
            .any(|e| matches!(&e.kind, duet_admin::EventKind::Service { service, state, .. } if service == "app" && state == "restarting"))
            && running(&p, Node::Alpha) == ["storage", "app"]
    });
    assert!(again.is_some(), "{events:#?}\n{}", p.logs());
    assert!(
        !p.alpha.events(&p.lab, &p.exe).iter().any(|e| matches!(&e.kind, duet_admin::EventKind::Service { service, state, .. } if service == "storage" && state == "stopped")),
        "the storage the app needs was not restarted"
    );
    assert_eq!(p.state(Node::Alpha).as_deref(), Some("MASTER"));

    // It keeps crashing: after two failed restarts alpha steps down (FAULT), stops its
    // services, and beta takes over and starts them once alpha said they stopped.
    std::fs::write(dir.join("crash.alpha"), "").unwrap();
    let moved = wait_for(S(20), || running(&p, Node::Beta) == ["storage", "app"]);
    assert!(moved.is_some(), "{:?}\n{}", p.status(Node::Beta), p.logs());
    let alpha = p.status(Node::Alpha).unwrap();
    assert_eq!(alpha.vrrp[0].state, "FAULT", "{alpha:?}");
    assert!(
        alpha
            .services
            .iter()
            .all(|v| v.state == "stopped" && v.stepped_down.is_some()),
        "{:?}",
        alpha.services
    );
    assert!(shared.join("running.beta").exists() && !shared.join("running.alpha").exists());
    let text = cli(&p, Node::Alpha, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("STEPPED DOWN: web is not master here: app:"),
        "{text}"
    );
    assert!(
        text.contains("after fixing it: duet service reset app"),
        "{text}"
    );

    // Fixed, and reset: alpha leaves FAULT, preempts (150 > 100), and the services move back.
    std::fs::remove_file(dir.join("crash.alpha")).unwrap();
    let out = cli(&p, Node::Alpha, &["service", "reset", "app"]);
    assert!(out.status.success(), "{out:?}");
    let back = wait_for(S(20), || running(&p, Node::Alpha) == ["storage", "app"]);
    assert!(back.is_some(), "{:?}\n{}", p.status(Node::Alpha), p.logs());
    assert!(running(&p, Node::Beta).is_empty());

    // A stop that fails holds the peer off: alpha hands over, its app refuses to stop, and
    // beta (MASTER now) waits; once the stop works on retry, beta starts.
    std::fs::write(dir.join("stop-fails.alpha"), "").unwrap();
    let out = cli(&p, Node::Alpha, &["switchover"]);
    assert!(out.status.success(), "{out:?}");
    let waiting = wait_for(S(10), || {
        p.status(Node::Beta).is_some_and(|s| {
            s.vrrp[0].state == "MASTER" && s.services.iter().all(|v| v.waiting_for_peer)
        })
    });
    assert!(
        waiting.is_some(),
        "{:?}\n{}",
        p.status(Node::Beta),
        p.logs()
    );
    std::thread::sleep(S(2));
    assert!(
        running(&p, Node::Beta).is_empty(),
        "beta started while alpha still held it"
    );
    assert!(!shared.join("running.beta").exists());
    let alpha = p.status(Node::Alpha).unwrap();
    assert!(
        alpha
            .services
            .iter()
            .any(|v| v.name == "app" && v.state == "stop failed"),
        "{:?}",
        alpha.services
    );
    std::fs::remove_file(dir.join("stop-fails.alpha")).unwrap();
    let moved = wait_for(S(10), || running(&p, Node::Beta) == ["storage", "app"]);
    assert!(moved.is_some(), "{:?}\n{}", p.status(Node::Beta), p.logs());

    // beta's daemon is killed -9: its guardian stops the app at once (it must not run on a
    // node whose daemon is gone), and alpha starts it once beta's lease has run out.
    p.signal(Node::Beta, duet_sys::process::SIGKILL, false);
    let stopped = wait_for(S(5), || !shared.join("running.beta").exists());
    assert!(
        stopped.is_some(),
        "the guardian did not stop beta's app\n{}",
        p.logs()
    );
    let back = wait_for(S(15), || running(&p, Node::Alpha) == ["storage", "app"]);
    assert!(back.is_some(), "{:?}\n{}", p.status(Node::Alpha), p.logs());

    // Never both, at any moment.
    assert_eq!(watcher.overlaps(), 0, "the app ran on both nodes at once");
}

#[test]
fn a_service_that_follows_the_cluster_runs_on_the_one_leader_and_moves_when_it_dies() {
    let Some(p) = pair_with_services("sc", leader_app) else {
        return;
    };
    let shared = p.lab.dir().join("shared");
    let watcher = Watcher::start(shared.clone());
    let one = wait_for(S(15), || {
        running(&p, Node::Alpha).len() + running(&p, Node::Beta).len() == 1
    });
    assert!(
        one.is_some(),
        "{:?}\n{:?}\n{}",
        p.status(Node::Alpha),
        p.status(Node::Beta),
        p.logs()
    );
    std::thread::sleep(S(2));
    let (leader, other, other_name) = if running(&p, Node::Alpha) == ["app"] {
        (Node::Alpha, Node::Beta, "beta")
    } else {
        (Node::Beta, Node::Alpha, "alpha")
    };
    assert!(running(&p, other).is_empty(), "one leader only");
    // The leader's daemon dies: its guardian stops the app, the other node leads and runs it.
    p.signal(leader, duet_sys::process::SIGKILL, false);
    let moved = wait_for(S(15), || running(&p, other) == ["app"]);
    assert!(moved.is_some(), "{:?}\n{}", p.status(other), p.logs());
    assert!(shared.join(format!("running.{other_name}")).exists());
    assert_eq!(watcher.overlaps(), 0, "the app ran on both nodes at once");
}

#[test]
fn without_vrrp_a_cluster_service_has_a_leadership_of_its_own() {
    let Some(mut lab) = common::lab("sn") else {
        return;
    };
    let exe = common::exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let b = lab.add_host("beta", 3).unwrap();
    let w = lab.add_host("witness", 20).unwrap();
    lab.add_direct_link(&a, &b).unwrap();
    let key = lab.cluster_key().unwrap();
    lab.start_witness(&exe, &w, &key).unwrap();
    let dir = lab.dir().to_path_buf();
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    let config = |name: &str, me: u8, peer: u8| {
        format!(
            "[node]\nname = \"{name}\"\nadmin = \"127.0.0.1:9900\"\nstate_dir = \"@STATE@\"\n{}{}",
            duet::lab::heartbeat_config(me, peer, &key, &duet::lab::witness_config(20)),
            leader_app(&dir, name)
        )
    };
    let mut alpha = duet::lab::DuetNode::new(&lab, &a, &config("alpha", 2, 3)).unwrap();
    let mut beta = duet::lab::DuetNode::new(&lab, &b, &config("beta", 3, 2)).unwrap();
    alpha.start(&mut lab, &exe).unwrap();
    beta.start(&mut lab, &exe).unwrap();
    let watcher = Watcher::start(dir.join("shared"));
    let runs = |n: &duet::lab::DuetNode| {
        n.status(&lab, &exe)
            .is_some_and(|s| s.services.iter().any(|v| v.state == "running"))
    };
    let logs = || format!("{}\n{}", alpha.log_text(), beta.log_text());
    let one = wait_for(S(15), || runs(&alpha) != runs(&beta));
    assert!(one.is_some(), "{}", logs());
    std::thread::sleep(S(2));
    assert!(
        runs(&alpha) != runs(&beta),
        "one leader, and it stays: {}",
        logs()
    );
    let (leader, other) = if runs(&alpha) {
        (&alpha, &beta)
    } else {
        (&beta, &alpha)
    };
    duet_sys::process::send_signal(leader.pid.unwrap(), duet_sys::process::SIGKILL, false).unwrap();
    let moved = wait_for(S(15), || runs(other));
    assert!(moved.is_some(), "{}", logs());
    assert_eq!(watcher.overlaps(), 0, "the app ran on both nodes at once");
}
