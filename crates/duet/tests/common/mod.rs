//! Shared fixture for the namespace tests: a lab with alpha (priority 150), beta (100) and a
//! client polling the VIP. Needs root (network namespaces); tests skip with a message otherwise.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use duet::lab::{DuetNode, Host, Lab, wait_for};
use duet::labtools::ProbeLine;

const S: fn(u64) -> Duration = Duration::from_secs;

pub const VIP: &str = "10.99.0.100";
pub const VIP6: &str = "2001:db8:99::100";

pub struct Pair {
    pub lab: Lab,
    pub exe: PathBuf,
    pub alpha: DuetNode,
    pub beta: DuetNode,
    pub client: Host,
    pub probe: Receiver<ProbeLine>,
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duet"))
}

/// `None` (with a message) when this process cannot build namespaces.
pub fn lab(tag: &str) -> Option<Lab> {
    if let Err(e) = duet::lab::can_build_labs() {
        duet::lab::skip(&format!("{e} (these tests need root)"), "DUET_REQUIRE_ROOT");
        return None;
    }
    Some(Lab::new(tag).expect("lab"))
}

/// Builds the pair with the given configs, starts responders and both daemons, waits until alpha
/// is MASTER and the client gets answers from it. `target` is what the client polls.
pub fn pair(tag: &str, alpha_cfg: &str, beta_cfg: &str, target: &str) -> Option<Pair> {
    pair_with(tag, target, |_, _, _| {
        (alpha_cfg.to_string(), beta_cfg.to_string())
    })
}

/// [`pair`], where `setup(lab, alpha, beta)` runs after the hosts exist and before the daemons
/// start (extra hosts, links, files) and returns alpha's and beta's configs.
pub fn pair_with(
    tag: &str,
    target: &str,
    setup: impl FnOnce(&mut Lab, &Host, &Host) -> (String, String),
) -> Option<Pair> {
    pair_with_env(tag, target, &[], setup)
}

/// [`pair_with`], both daemons started with the extra environment `env`.
pub fn pair_with_env(
    tag: &str,
    target: &str,
    env: &[(&str, &str)],
    setup: impl FnOnce(&mut Lab, &Host, &Host) -> (String, String),
) -> Option<Pair> {
    let mut lab = lab(tag)?;
    let exe = exe();
    let a = lab.add_host("alpha", 2).unwrap();
    let b = lab.add_host("beta", 3).unwrap();
    let client = lab.add_host("client", 10).unwrap();
    let (alpha_cfg, beta_cfg) = setup(&mut lab, &a, &b);
    lab.start_responders(&exe, &[&a, &b]).unwrap();
    let mut alpha = DuetNode::new(&lab, &a, &alpha_cfg).unwrap();
    let mut beta = DuetNode::new(&lab, &b, &beta_cfg).unwrap();
    for n in [&mut alpha, &mut beta] {
        n.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    beta.start(&mut lab, &exe).unwrap();
    alpha.start(&mut lab, &exe).unwrap();
    let probe = lab.probe(&exe, &client, target).unwrap();
    let p = Pair {
        lab,
        exe,
        alpha,
        beta,
        client,
        probe,
    };
    let ok = wait_for(Duration::from_secs(15), || {
        p.state(Node::Alpha).as_deref() == Some("MASTER")
            && p.state(Node::Beta).as_deref() == Some("BACKUP")
    });
    assert!(
        ok.is_some(),
        "alpha never became MASTER with beta BACKUP\nalpha log:\n{}\nbeta log:\n{}",
        p.alpha.log_text(),
        p.beta.log_text()
    );
    assert!(
        p.wait_answer("alpha", Duration::from_secs(10)).is_some(),
        "client never reached the VIP on alpha\n{}",
        p.alpha.log_text()
    );
    Some(p)
}

#[derive(Clone, Copy, Debug)]
pub enum Node {
    Alpha,
    Beta,
}

impl Pair {
    pub fn node(&self, n: Node) -> &DuetNode {
        match n {
            Node::Alpha => &self.alpha,
            Node::Beta => &self.beta,
        }
    }

    pub fn state(&self, n: Node) -> Option<String> {
        self.node(n).state(&self.lab, &self.exe)
    }

    /// Waits until node `n` reports `state` (the status is published a moment after a
    /// transition, so a client answer can arrive first).
    pub fn wait_state(&self, n: Node, state: &str, limit: Duration) -> bool {
        wait_for(limit, || self.state(n).as_deref() == Some(state)).is_some()
    }

    /// Asserts that node `n` reports `state` now, with both logs on failure.
    pub fn assert_state(&self, n: Node, state: &str) {
        assert_eq!(
            self.state(n).as_deref(),
            Some(state),
            "{n:?}\n{}",
            self.logs()
        );
    }

    pub fn status(&self, n: Node) -> Option<duet_admin::Status> {
        self.node(n).status(&self.lab, &self.exe)
    }

    /// Waits for the first client answer from `node` that arrives from now on.
    pub fn wait_answer(&self, node: &str, limit: Duration) -> Option<Duration> {
        while self.probe.try_recv().is_ok() {}
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(line) = self.probe.recv_timeout(Duration::from_millis(100))
                && line.node.as_deref() == Some(node)
            {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// Waits until `addr` is (or is not) configured on a node.
    pub fn wait_vip(
        &self,
        n: Node,
        addr: &str,
        present: bool,
        limit: Duration,
    ) -> Option<Duration> {
        let addr = addr.parse().unwrap();
        let host = &self.node(n).host;
        wait_for(limit, || self.lab.has_address(host, addr) == present)
    }

    pub fn signal(&self, n: Node, signal: i32, group: bool) {
        let pid = self.node(n).pid.expect("running");
        duet_sys::process::send_signal(pid, signal, group).unwrap();
    }

    pub fn logs(&self) -> String {
        format!(
            "--- alpha log:\n{}\n--- beta log:\n{}",
            self.alpha.log_text(),
            self.beta.log_text()
        )
    }
}

/// alpha/beta configs for the lab's address plan.
pub fn configs(interval: &str, extra: &str) -> (String, String) {
    (
        duet::lab::vrrp_config("alpha", 150, interval, extra),
        duet::lab::vrrp_config("beta", 100, interval, extra),
    )
}

/// alpha (150) and beta (100), VRRPv3 at 100 ms, heartbeats every 50 ms on two links (the LAN
/// and a direct cable), `extra` appended (e.g. `[witness]`). A witness host (10.99.0.20)
/// exists; `witness` starts `duet witness` on it.
pub fn cluster(tag: &str, extra: &str, witness: bool) -> Option<Pair> {
    let p = pair_with(tag, &format!("{VIP}:8080"), |lab, a, b| {
        let w = lab.add_host("witness", 20).unwrap();
        lab.add_direct_link(a, b).unwrap();
        let key = lab.cluster_key().unwrap();
        if witness {
            lab.start_witness(&exe(), &w, &key).unwrap();
        }
        let heartbeat = |me: u8, peer: u8| duet::lab::heartbeat_config(me, peer, &key, extra);
        // Operator actions need a token: `operator.token` in the lab directory.
        let token = lab.dir().join("operator.token");
        std::fs::write(&token, "an operator token of enough length\n").unwrap();
        let line = format!(
            "state_dir = \"@STATE@\"\noperator_token_file = \"{}\"",
            token.display()
        );
        let (ac, bc) = configs("100ms", "");
        let (ac, bc) = (
            ac.replace("state_dir = \"@STATE@\"", &line),
            bc.replace("state_dir = \"@STATE@\"", &line),
        );
        (ac + &heartbeat(2, 3), bc + &heartbeat(3, 2))
    })?;
    // Settled also means both heartbeat links carry heartbeats.
    let ok = wait_for(S(15), || {
        p.status(Node::Beta)
            .and_then(|s| s.cluster)
            .is_some_and(|c| c.peers.iter().all(|p| p.links == [true, true]))
    });
    assert!(
        ok.is_some(),
        "the heartbeat links never came up\n{}",
        p.logs()
    );
    Some(p)
}
