//! Seeded failover scenarios with RFC 9568 invariants.
//!
//! Every seed draws a cluster (2–4 nodes, IPv4 or IPv6, v2 or v3, intervals from 10 ms to 1 s,
//! priorities, preempt), a network (delay up to a tenth of the interval) and a start order, then
//! checks:
//! - after settling, exactly one MASTER among the running nodes, and only it holds the VIPs;
//! - with preempt, that master is the highest priority;
//! - after the master goes silent (crash or SIGSTOP), a backup takes over no earlier than 2 and
//!   no later than 3 intervals + skew (+ the network delay) later;
//! - after a graceful stop (priority 0), a backup takes over within its skew time (+ delay);
//! - a restarted higher-priority node preempts back if and only if preempt is on.

use std::net::IpAddr;
use std::time::Duration;

use duet_sim::{NetConfig, NodeStatus, Rng, Sim};
use duet_vrrp::{AdvertInterval, InstanceConfig, State, TrackedHealth, Version, Vrid};

const SEEDS: u64 = 1000;

#[derive(Debug, Clone)]
struct Cluster {
    version: Version,
    interval: Duration,
    ipv6: bool,
    priorities: Vec<u8>,
    preempt: bool,
    delay_max: Duration,
}

impl Cluster {
    /// A fixed VRRPv3 IPv4 cluster at 100 ms with a fast LAN, for the scenario tests.
    fn lan(priorities: &[u8], preempt: bool) -> Cluster {
        Cluster {
            version: Version::V3,
            interval: Duration::from_millis(100),
            ipv6: false,
            priorities: priorities.to_vec(),
            preempt,
            delay_max: Duration::from_millis(2),
        }
    }

    fn draw(rng: &mut Rng) -> Cluster {
        let n = rng.range(2, 4) as usize;
        let v2 = rng.chance(0.15);
        let ipv6 = !v2 && rng.chance(0.3);
        let interval = if v2 {
            Duration::from_secs(1)
        } else {
            *rng.pick(&[
                Duration::from_millis(10),
                Duration::from_millis(50),
                Duration::from_millis(100),
                Duration::from_secs(1),
            ])
        };
        let mut priorities = Vec::new();
        while priorities.len() < n {
            let p = rng.range(1, 254) as u8;
            if !priorities.contains(&p) {
                priorities.push(p);
            }
        }
        Cluster {
            version: if v2 { Version::V2 } else { Version::V3 },
            interval,
            ipv6,
            priorities,
            preempt: rng.chance(0.7),
            delay_max: interval / 10,
        }
    }

    fn config(&self, node: usize) -> InstanceConfig {
        let vip: IpAddr = if self.ipv6 {
            "2001:db8::100".parse().unwrap()
        } else {
            "10.0.0.100".parse().unwrap()
        };
        InstanceConfig {
            name: "web".into(),
            vrid: Vrid::new(51).unwrap(),
            version: self.version,
            priority: self.priorities[node],
            advert_interval: AdvertInterval::from_duration(self.interval, self.version).unwrap(),
            preempt: self.preempt,
            preempt_delay: Duration::ZERO,
            vips: vec![vip],
            primary_address: Sim::node_address(node, self.ipv6),
        }
    }

    /// 3 × interval + skew for a node of priority `p`, computed from the RFC formulas.
    fn master_down(&self, p: u8) -> Duration {
        let skew = match self.version {
            Version::V2 => Duration::from_micros((256 - u64::from(p)) * 1_000_000 / 256),
            Version::V3 => {
                let centis = self.interval.as_millis() as u64 / 10;
                Duration::from_millis((256 - u64::from(p)) * centis / 256 * 10)
            }
        };
        self.interval * 3 + skew
    }

    /// Long enough for any election to finish and for a paused node's VIPs to expire (the
    /// simulator's default 1 s kernel lifetime).
    fn settle_time(&self) -> Duration {
        (self.master_down(1) * 3 + self.interval * 4).max(Duration::from_millis(1500))
    }

    fn build(&self, seed: u64) -> Sim {
        let mut sim = Sim::new(
            seed,
            NetConfig {
                delay_min: Duration::from_micros(20),
                delay_max: self.delay_max,
                loss: 0.0,
            },
        );
        for node in 0..self.priorities.len() {
            sim.add_node(
                Sim::node_address(node, self.ipv6),
                vec![self.config(node)],
                vec![],
            );
        }
        sim
    }
}

/// Exactly one running master, it alone holds the VIPs; returns it.
fn sole_master(sim: &Sim, ctx: &str) -> usize {
    let masters = sim.masters(0);
    assert_eq!(masters.len(), 1, "{ctx}: masters {masters:?}");
    for n in 0..sim.len() {
        let up = sim.status(n) == NodeStatus::Up;
        assert_eq!(
            sim.holds_vips(n, 0),
            up && n == masters[0],
            "{ctx}: node {n} VIPs"
        );
    }
    masters[0]
}

fn highest_running(sim: &Sim, c: &Cluster) -> usize {
    (0..sim.len())
        .filter(|&n| sim.status(n) == NodeStatus::Up)
        .max_by_key(|&n| c.priorities[n])
        .unwrap()
}

fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed.wrapping_mul(7919));
    let c = Cluster::draw(&mut rng);
    let ctx = format!("seed {seed} {c:?}");
    let mut sim = c.build(seed);

    // Staggered start, up to one interval apart.
    let mut order: Vec<usize> = (0..c.priorities.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.range(0, i as u64) as usize);
    }
    for &n in &order {
        sim.start(n);
        sim.run_for(Duration::from_nanos(
            rng.range(0, c.interval.as_nanos() as u64),
        ));
    }
    sim.run_for(c.settle_time());
    let master = sole_master(&sim, &format!("{ctx}: after start"));
    if c.preempt {
        assert_eq!(master, highest_running(&sim, &c), "{ctx}: preempt winner");
    }

    // The master goes silent: crash or SIGSTOP.
    let paused = rng.chance(0.3);
    sim.run_for(Duration::from_nanos(
        rng.range(0, c.interval.as_nanos() as u64),
    ));
    let fault_at = sim.now();
    if paused {
        sim.pause(master);
    } else {
        sim.crash(master);
    }
    let took_over = sim.run_until_cond(c.settle_time(), |s| !s.masters(0).is_empty());
    assert!(took_over, "{ctx}: nobody took over");
    let new_master = sim.masters(0)[0];
    let elapsed = sim.now() - fault_at;
    let upper = c.master_down(c.priorities[new_master]) + c.delay_max;
    let lower = c.interval * 2;
    assert!(
        elapsed >= lower && elapsed <= upper,
        "{ctx}: takeover after {elapsed:?}, expected {lower:?}..={upper:?}"
    );
    sim.run_for(c.settle_time());
    let master2 = sole_master(&sim, &format!("{ctx}: after silence"));
    if c.preempt {
        assert_eq!(master2, highest_running(&sim, &c));
    }

    // The old master returns.
    if paused {
        sim.resume(master);
    } else {
        sim.start(master);
    }
    sim.run_for(c.settle_time());
    let master3 = sole_master(&sim, &format!("{ctx}: after return"));
    if c.preempt {
        assert_eq!(master3, highest_running(&sim, &c), "{ctx}: preempt back");
    } else if !paused {
        // A restarted node starts as backup and, without preempt, stays backup.
        assert_eq!(
            master3, master2,
            "{ctx}: nopreempt must keep the current master"
        );
    }

    // Graceful stop of the master: priority 0 hands over within the skew time.
    let stop_at = sim.now();
    sim.stop(master3);
    let took_over = sim.run_until_cond(c.settle_time(), |s| !s.masters(0).is_empty());
    assert!(took_over, "{ctx}: nobody took over after stop");
    let elapsed = sim.now() - stop_at;
    let upper = c.interval + c.delay_max * 2;
    assert!(
        elapsed <= upper,
        "{ctx}: takeover after graceful stop took {elapsed:?} > {upper:?}"
    );
    sim.run_for(c.settle_time());
    sole_master(&sim, &format!("{ctx}: after stop"));
}

#[test]
fn failover_invariants_hold_for_many_seeds() {
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}

#[test]
fn message_only_checksum_peers_interoperate() {
    let c = Cluster::lan(&[200, 100], true);
    let mut sim = c.build(1);
    sim.set_checksum_mode(duet_vrrp::ChecksumMode::MessageOnly);
    sim.start(0);
    sim.start(1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sole_master(&sim, "rfc checksum"), 0);
    assert_eq!(sim.instance(1, 0).stats().dropped.iter().sum::<u64>(), 0);
}

#[test]
fn lossy_network_converges_once_loss_stops() {
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let c = Cluster::draw(&mut rng);
        let mut sim = c.build(seed);
        sim.set_net(NetConfig {
            delay_min: Duration::from_micros(20),
            delay_max: c.delay_max,
            loss: 0.5,
        });
        for n in 0..c.priorities.len() {
            sim.start(n);
        }
        sim.run_for(c.settle_time() * 2);
        sim.set_net(NetConfig {
            delay_min: Duration::from_micros(20),
            delay_max: c.delay_max,
            loss: 0.0,
        });
        sim.run_for(c.settle_time());
        let m = sole_master(&sim, &format!("seed {seed} lossy {c:?}"));
        if c.preempt {
            assert_eq!(m, highest_running(&sim, &c));
        }
    }
}

#[test]
fn partition_gives_two_masters_and_healing_gives_one() {
    // Without a witness VRRP cannot tell a dead peer from a cut path: both sides take the VIP.
    // The split-brain work adds quorum on top; this pins down the plain VRRP behaviour.
    let c = Cluster::lan(&[200, 100], false);
    let mut sim = c.build(7);
    sim.start(0);
    sim.start(1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sole_master(&sim, "before cut"), 0);
    sim.set_cut(0, 1, true);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.masters(0), vec![0, 1]);
    sim.set_cut(0, 1, false);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sole_master(&sim, "after heal"), 0);
}

#[test]
fn tracking_fault_and_weight_hand_over() {
    let c = Cluster::lan(&[150, 140], true);
    let mut sim = c.build(3);
    sim.start(0);
    sim.start(1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sole_master(&sim, "start"), 0);

    // A failing script with weight -30 drops the master to 120 < 140: the backup preempts.
    let at = sim.now();
    sim.set_tracking(
        0,
        0,
        TrackedHealth {
            fault: None,
            delta: -30,
        },
    );
    assert!(sim.run_until_cond(Duration::from_secs(2), |s| s.masters(0) == vec![1]));
    assert!(sim.now() - at <= c.master_down(140) + Duration::from_millis(10));
    assert_eq!(sim.instance(0, 0).state(), State::Backup);
    assert_eq!(sim.instance(0, 0).effective_priority(), 120);

    // Recovery: 150 > 140 again, the original master preempts back.
    sim.set_tracking(0, 0, TrackedHealth::default());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sole_master(&sim, "recovered"), 0);

    // Weight 0 failure = FAULT: priority 0 goes out, the backup takes over within its skew.
    let at = sim.now();
    sim.set_tracking(
        0,
        0,
        TrackedHealth {
            fault: Some("script web_up down".into()),
            delta: 0,
        },
    );
    assert_eq!(sim.instance(0, 0).state(), State::Fault);
    assert!(!sim.holds_vips(0, 0));
    assert!(sim.run_until_cond(Duration::from_secs(2), |s| s.masters(0) == vec![1]));
    assert!(
        sim.now() - at <= c.interval,
        "fault handover took {:?}",
        sim.now() - at
    );
}

#[test]
fn sync_group_members_fail_over_together() {
    let mk = |node: usize, vrid: u8, prio: u8, name: &str| InstanceConfig {
        name: name.into(),
        vrid: Vrid::new(vrid).unwrap(),
        version: Version::V3,
        priority: prio,
        advert_interval: AdvertInterval::from_centis(10).unwrap(),
        preempt: true,
        preempt_delay: Duration::ZERO,
        vips: vec![format!("10.0.{vrid}.100").parse().unwrap()],
        primary_address: Sim::node_address(node, false),
    };
    let mut sim = Sim::new(5, NetConfig::default());
    for (node, prio) in [(0usize, 200u8), (1, 100)] {
        sim.add_node(
            Sim::node_address(node, false),
            vec![mk(node, 1, prio, "public"), mk(node, 2, prio, "private")],
            vec![("edge".to_string(), vec![0, 1])],
        );
    }
    sim.start(0);
    sim.start(1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.masters(0), vec![0]);
    assert_eq!(sim.masters(1), vec![0]);

    // Only the public side's tracking fails; the private VIP must follow it.
    sim.set_tracking(
        0,
        0,
        TrackedHealth {
            fault: Some("interface eth0 down".into()),
            delta: 0,
        },
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.masters(0), vec![1]);
    assert_eq!(sim.masters(1), vec![1]);
    assert_eq!(sim.instance(0, 1).state(), State::Fault);

    sim.set_tracking(0, 0, TrackedHealth::default());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.masters(0), vec![0]);
    assert_eq!(sim.masters(1), vec![0]);
}

#[test]
fn address_owner_takes_over_at_once_and_ignores_weights() {
    let c = Cluster::lan(&[255, 200], true);
    let mut sim = c.build(9);
    sim.start(1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sole_master(&sim, "backup alone"), 1);
    sim.start(0);
    // The owner goes straight to MASTER on start (RFC 9568 §6.4.1), no master down wait.
    assert_eq!(sim.instance(0, 0).state(), State::Master);
    sim.set_tracking(
        0,
        0,
        TrackedHealth {
            fault: None,
            delta: -100,
        },
    );
    assert_eq!(sim.instance(0, 0).effective_priority(), 255);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sole_master(&sim, "owner"), 0);
}

#[test]
fn preempt_delay_postpones_preemption() {
    let c = Cluster::lan(&[200, 100], true);
    let delay = Duration::from_secs(3);
    let mut sim = Sim::new(11, NetConfig::default());
    for node in 0..2 {
        let mut cfg = c.config(node);
        cfg.preempt_delay = delay;
        sim.add_node(Sim::node_address(node, false), vec![cfg], vec![]);
    }
    sim.start(1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.masters(0), vec![1]);
    let at = sim.now();
    sim.start(0);
    assert!(sim.run_until_cond(Duration::from_secs(10), |s| s.masters(0) == vec![0]));
    let waited = sim.now() - at;
    assert!(
        // The first advert discarded after the delay is up to one interval later; the master
        // down timer then runs out from the last accepted one.
        waited >= delay
            && waited <= delay + c.interval + c.master_down(200) + Duration::from_millis(10),
        "preempted after {waited:?}"
    );
}
