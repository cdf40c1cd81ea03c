//! Three nodes in one group, with real processes in namespaces: alpha (150), beta (100) and
//! gamma (80) on one LAN with a heartbeat mesh, and a client polling the VIP. Without a
//! coordinator a majority of votes decides; with `[coordination]` a real etcd (Debian's
//! `etcd-server`, started here) does. Partitions are nftables drops in a node's namespace.
//! Needs root; skips otherwise.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{VIP, exe};
use duet::lab::{DuetNode, Host, Lab};

const S: fn(u64) -> Duration = Duration::from_secs;
const NAMES: [(&str, u8, u8); 3] = [("alpha", 2, 150), ("beta", 3, 100), ("gamma", 4, 80)];

struct Trio {
    lab: Lab,
    nodes: Vec<DuetNode>,
    /// Longest stretch seen with two nodes holding the VIP (sampled every 20 ms).
    overlap: Duration,
    overlap_since: Option<Instant>,
}

impl Trio {
    /// Builds the hosts, lets `setup` add more (returns extra config per node index), starts
    /// the three daemons and waits for alpha MASTER, beta and gamma BACKUP.
    fn start(tag: &str, setup: impl FnOnce(&mut Lab, &Path) -> [String; 3]) -> Option<Trio> {
        let mut lab = common::lab(tag)?;
        let hosts: Vec<Host> = NAMES
            .iter()
            .map(|(name, index, _)| lab.add_host(name, *index).unwrap())
            .collect();
        let key = lab.cluster_key().unwrap();
        let extra = setup(&mut lab, &key);
        let mut nodes = Vec::new();
        for (i, (name, index, priority)) in NAMES.iter().enumerate() {
            let peers: Vec<u8> = NAMES.iter().map(|n| n.1).filter(|p| p != index).collect();
            let cfg = duet::lab::vrrp_config(name, *priority, "100ms", "")
                + &duet::lab::heartbeat_mesh_config(*index, &peers, &key, &extra[i]);
            nodes.push(DuetNode::new(&lab, &hosts[i], &cfg).unwrap());
        }
        for n in &mut nodes {
            n.start(&mut lab, &exe()).unwrap();
        }
        let mut t = Trio {
            lab,
            nodes,
            overlap: Duration::ZERO,
            overlap_since: None,
        };
        let ok = t.wait(S(20), |t| {
            t.state(0).as_deref() == Some("MASTER")
                && t.state(1).as_deref() == Some("BACKUP")
                && t.state(2).as_deref() == Some("BACKUP")
        });
        assert!(
            ok,
            "alpha never became MASTER with two BACKUPs\n{}",
            t.logs()
        );
        Some(t)
    }

    fn state(&self, n: usize) -> Option<String> {
        self.nodes[n].state(&self.lab, &exe())
    }

    fn status(&self, n: usize) -> Option<duet_admin::Status> {
        self.nodes[n].status(&self.lab, &exe())
    }

    /// Node `n`'s veto on its instance, if any.
    fn veto(&self, n: usize) -> Option<String> {
        self.status(n)?.vrrp.first()?.veto.clone()
    }

    /// Watches one more second, then asserts that no two nodes ever held the VIP at once.
    fn assert_never_two(&mut self) {
        self.wait(S(1), |_| false);
        assert_eq!(
            self.overlap,
            Duration::ZERO,
            "two nodes held the VIP at once\n{}",
            self.logs()
        );
    }

    fn holders(&self) -> Vec<usize> {
        let vip: IpAddr = VIP.parse().unwrap();
        (0..3)
            .filter(|&n| self.lab.has_address(&self.nodes[n].host, vip))
            .collect()
    }

    /// Waits until `cond` holds, sampling who holds the VIP meanwhile.
    fn wait(&mut self, limit: Duration, mut cond: impl FnMut(&Trio) -> bool) -> bool {
        let start = Instant::now();
        loop {
            let two = self.holders().len() >= 2;
            match (two, self.overlap_since) {
                (true, None) => self.overlap_since = Some(Instant::now()),
                (false, Some(t)) => {
                    self.overlap = self.overlap.max(t.elapsed());
                    self.overlap_since = None;
                }
                _ => {}
            }
            if cond(self) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ip(&self, n: usize) -> IpAddr {
        IpAddr::V4(self.nodes[n].host.ipv4)
    }

    /// Cuts node `n` off from the other two nodes (heartbeats and VRRP), or heals.
    fn isolate(&self, n: usize, cut: bool) {
        let others: Vec<IpAddr> = (0..3).filter(|&m| m != n).map(|m| self.ip(m)).collect();
        self.lab
            .cut_off(&self.nodes[n].host, &others, true, cut)
            .unwrap();
    }

    fn kill(&mut self, n: usize) {
        let pid = self.nodes[n].pid.take().expect("running");
        duet_sys::process::send_signal(pid, libc::SIGKILL, true).unwrap();
        self.lab.reap(pid);
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} log:\n{}\n", n.host.name, n.log_text()))
            .collect()
    }
}

#[test]
fn three_nodes_a_minority_master_steps_down_and_the_majority_takes_over() {
    let Some(mut t) = Trio::start("trio", |_, _| Default::default()) else {
        return;
    };
    // Alpha alone on its side: one vote of three. It must give the VIP up, and beta (the
    // highest priority of the majority) must take it once alpha's promise-holding voters are
    // free.
    t.isolate(0, true);
    let ok = t.wait(S(15), |t| t.holders() == [1]);
    assert!(
        ok,
        "the majority side never served alone: holders {:?}\n{}",
        t.holders(),
        t.logs()
    );
    let veto = t.veto(0);
    assert!(
        veto.as_deref().is_some_and(|v| v.contains("no majority")),
        "alpha's veto: {veto:?}"
    );
    // Healed: alpha preempts back through a handover.
    t.isolate(0, false);
    let ok = t.wait(S(15), |t| {
        t.holders() == [0] && t.state(0).as_deref() == Some("MASTER")
    });
    assert!(ok, "alpha never took back: {:?}\n{}", t.holders(), t.logs());
    t.assert_never_two();
}

/// A small PKI in `dir`: a CA, a server certificate for `ip` and a client certificate, both
/// signed by the CA. Returns the paths of ca.pem, server.pem/.key and client.pem/.key.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path, ip: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let write = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    };
    // etcd's JSON gateway reaches etcd's gRPC side with the server certificate as its client
    // certificate, so with client-cert-auth the server certificate serves both ways.
    let server = write(
        "server",
        vec![ip.to_string()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let client = write(
        "client",
        vec!["duet".into()],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pki {
        ca: ca_path,
        server,
        client,
    }
}

#[test]
fn with_etcd_leadership_follows_the_lease_and_terms_rise() {
    if !duet::lab::have_program("etcd") {
        duet::lab::skip(
            "etcd is not installed (apt-get install etcd-server)",
            "DUET_REQUIRE_TOOLS",
        );
        return;
    }
    const ETCD: &str = "10.99.0.20";
    let Some(mut t) = Trio::start("etcd", |lab, _key| {
        let host = lab.add_host("etcd", 20).unwrap();
        let pki = pki(lab.dir(), ETCD);
        let tls = (&pki.server.0, &pki.server.1, Some(pki.ca.as_path()));
        lab.start_etcd(&host, Some((tls.0, tls.1, tls.2))).unwrap();
        // Alpha and beta speak TLS to etcd with a client certificate (etcd requires one),
        // gamma plain HTTP: the same key either way.
        let tls = format!(
            "\n[coordination]\nbackend = \"etcd\"\nendpoints = [\"https://{ETCD}:2378\"]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nprefix = \"/duet/lab\"\n",
            pki.ca.display(),
            pki.client.0.display(),
            pki.client.1.display()
        );
        let plain = format!(
            "\n[coordination]\nbackend = \"etcd\"\nendpoints = [\"http://{ETCD}:2379\"]\nprefix = \"/duet/lab\"\n"
        );
        [tls.clone(), tls, plain]
    }) else {
        return;
    };
    let lease = |t: &Trio, n: usize| {
        t.status(n)
            .and_then(|s| s.cluster)
            .and_then(|c| c.lease)
            .filter(|l| l.valid)
            .map(|l| l.term)
    };
    let first = lease(&t, 0);
    assert!(
        first.is_some_and(|term| term > 0),
        "alpha is MASTER without the etcd lease\n{}",
        t.logs()
    );
    // The master is killed: its etcd lease runs out (3 s), then beta holds the key and the VIP.
    t.kill(0);
    let ok = t.wait(S(20), |t| {
        t.holders() == [1] && t.state(1).as_deref() == Some("MASTER")
    });
    assert!(ok, "beta never took over: {:?}\n{}", t.holders(), t.logs());
    let second = lease(&t, 1);
    assert!(
        second > first,
        "the term did not rise: {first:?} then {second:?}\n{}",
        t.logs()
    );
    // Beta loses etcd (but not its peers): it cannot renew, so it steps down before its lease
    // ends at etcd, and gamma takes the key once etcd expires it.
    t.lab
        .cut_off(&t.nodes[1].host, &[ETCD.parse().unwrap()], false, true)
        .unwrap();
    let ok = t.wait(S(20), |t| {
        t.holders() == [2] && t.state(2).as_deref() == Some("MASTER")
    });
    assert!(ok, "gamma never took over: {:?}\n{}", t.holders(), t.logs());
    let third = lease(&t, 2);
    assert!(third > second, "{second:?} then {third:?}");
    let veto = t.veto(1);
    assert!(veto.is_some(), "beta serves no more, so it has a veto");
    t.assert_never_two();
}
