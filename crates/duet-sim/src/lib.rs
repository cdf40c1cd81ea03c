//! A deterministic simulator for duet's VRRP core.
//!
//! Several nodes share one LAN. Each node runs one or more [`duet_vrrp::Instance`]s (with optional
//! sync groups). The simulator owns a virtual clock that jumps straight to the next event (a packet
//! arrival or an instance timer), a seeded random number generator for delay and loss, and the
//! faults a real network and real processes have: partitions, loss, crash (no goodbye), pause
//! (SIGSTOP: packets queue in the socket buffer, timers fire late on resume), restart and graceful
//! shutdown. Every advert goes through `emit` and `parse`, so the codec is exercised too.
//!
//! Nothing sleeps: a thousand seeds of a failover scenario run in well under a second.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod database;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use duet_time::Instant;
use duet_vrrp::{
    Action, Advert, ChecksumMode, Instance, InstanceConfig, Reason, State, SyncGroup, TrackedHealth,
};

/// A small, fast, seedable generator (SplitMix64); good enough for schedules, not for crypto.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// How the simulated LAN behaves.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Smallest one-way delay.
    pub delay_min: Duration,
    /// Largest one-way delay.
    pub delay_max: Duration,
    /// Probability that one copy of a packet is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            delay_min: Duration::from_micros(50),
            delay_max: Duration::from_micros(500),
            loss: 0.0,
        }
    }
}

/// Process state of a simulated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Running.
    Up,
    /// Killed without a goodbye (kill -9 of everything): its VIPs are gone with it.
    Crashed,
    /// Frozen (SIGSTOP): packets queue, timers wait.
    Paused,
    /// Stopped gracefully (SIGTERM).
    Stopped,
}

/// One recorded state change.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// When.
    pub at: Instant,
    /// Node index.
    pub node: usize,
    /// Instance index on the node.
    pub instance: usize,
    /// Old state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub reason: Reason,
}

#[derive(Debug)]
struct Node {
    address: IpAddr,
    configs: Vec<InstanceConfig>,
    group_members: Vec<(String, Vec<usize>)>,
    instances: Vec<Instance>,
    groups: Vec<SyncGroup>,
    status: NodeStatus,
    /// When the node was paused, while it is.
    paused_at: Option<Instant>,
    /// Packets that arrived while paused, in arrival order.
    backlog: VecDeque<(IpAddr, Vec<u8>)>,
    /// Which instances currently have their VIPs configured.
    vips_up: Vec<bool>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: IpAddr,
    bytes: Vec<u8>,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    now: Instant,
    rng: Rng,
    net: NetConfig,
    nodes: Vec<Node>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    cut: BTreeSet<(usize, usize)>,
    /// Latest scheduled arrival per (from, to): a LAN does not reorder one sender's packets.
    last_arrival: std::collections::BTreeMap<(usize, usize), Instant>,
    transitions: Vec<TransitionRecord>,
    checksum_mode: ChecksumMode,
    vip_lifetime: Duration,
}

impl Sim {
    /// An empty LAN.
    pub fn new(seed: u64, net: NetConfig) -> Sim {
        Sim {
            now: Instant::ZERO,
            rng: Rng::new(seed),
            net,
            nodes: Vec::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            last_arrival: Default::default(),
            transitions: Vec::new(),
            checksum_mode: ChecksumMode::PseudoHeader,
            vip_lifetime: Duration::from_secs(1),
        }
    }

    /// Sets the kernel lifetime of VIPs: a paused node's VIPs vanish this long after the pause,
    /// since nothing refreshes them (the live daemon does, as duet-sys does on Linux).
    pub fn set_vip_lifetime(&mut self, lifetime: Duration) {
        self.vip_lifetime = lifetime;
    }

    /// Sets how senders compute the v3 IPv4 checksum (receivers accept both).
    pub fn set_checksum_mode(&mut self, mode: ChecksumMode) {
        self.checksum_mode = mode;
    }

    /// The address node `index` gets: 10.0.0.(index+1), or fe80::(index+1) for IPv6.
    pub fn node_address(index: usize, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, index as u16 + 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1))
        }
    }

    /// Adds a node with the given instances (their `primary_address` must be the node's address)
    /// and sync groups (names and member indices). It stays down until [`Sim::start`].
    pub fn add_node(
        &mut self,
        address: IpAddr,
        configs: Vec<InstanceConfig>,
        groups: Vec<(String, Vec<usize>)>,
    ) -> usize {
        let n = configs.len();
        self.nodes.push(Node {
            address,
            instances: configs.iter().cloned().map(Instance::new).collect(),
            groups: groups
                .iter()
                .map(|(name, members)| SyncGroup::new(name.clone(), members.clone()))
                .collect(),
            configs,
            group_members: groups,
            status: NodeStatus::Stopped,
            paused_at: None,
            backlog: VecDeque::new(),
            vips_up: vec![false; n],
        });
        self.nodes.len() - 1
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The seeded generator, for tests that randomise their schedule.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node status.
    pub fn status(&self, node: usize) -> NodeStatus {
        self.nodes[node].status
    }

    /// An instance of a node.
    pub fn instance(&self, node: usize, instance: usize) -> &Instance {
        &self.nodes[node].instances[instance]
    }

    /// Whether the node currently has the instance's VIPs on its interface.
    pub fn holds_vips(&self, node: usize, instance: usize) -> bool {
        self.nodes[node].vips_up[instance]
    }

    /// Every transition so far.
    pub fn transitions(&self) -> &[TransitionRecord] {
        &self.transitions
    }

    /// Nodes that are up and MASTER for `instance`.
    pub fn masters(&self, instance: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| {
                self.nodes[n].status == NodeStatus::Up
                    && self.nodes[n].instances[instance].state() == State::Master
            })
            .collect()
    }

    /// Starts (or restarts after crash/stop) a node with fresh instances.
    pub fn start(&mut self, node: usize) {
        let now = self.now;
        let n = &mut self.nodes[node];
        n.instances = n.configs.iter().cloned().map(Instance::new).collect();
        n.groups = n
            .group_members
            .iter()
            .map(|(name, members)| SyncGroup::new(name.clone(), members.clone()))
            .collect();
        n.status = NodeStatus::Up;
        n.backlog.clear();
        n.vips_up.iter_mut().for_each(|v| *v = false);
        for inst in &mut n.instances {
            inst.start(now);
        }
        self.after_input(node);
    }

    /// kill -9: no priority 0, the VIPs vanish with the process (guardian / address lifetime).
    pub fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.status = NodeStatus::Crashed;
        n.backlog.clear();
        n.vips_up.iter_mut().for_each(|v| *v = false);
    }

    /// SIGSTOP.
    pub fn pause(&mut self, node: usize) {
        if self.nodes[node].status == NodeStatus::Up {
            self.nodes[node].status = NodeStatus::Paused;
            self.nodes[node].paused_at = Some(self.now);
        }
    }

    /// SIGCONT: queued packets are processed, then overdue timers fire.
    pub fn resume(&mut self, node: usize) {
        if self.nodes[node].status != NodeStatus::Paused {
            return;
        }
        self.nodes[node].status = NodeStatus::Up;
        self.nodes[node].paused_at = None;
        while let Some((from, bytes)) = self.nodes[node].backlog.pop_front() {
            self.deliver(node, from, &bytes);
        }
        self.fire_timers(node);
        // The live daemon refreshes (re-adds) the VIPs of every instance that is still master.
        let n = &mut self.nodes[node];
        for (i, inst) in n.instances.iter().enumerate() {
            n.vips_up[i] = inst.state() == State::Master;
        }
    }

    /// SIGTERM: masters send priority 0 and remove their VIPs.
    pub fn stop(&mut self, node: usize) {
        if self.nodes[node].status != NodeStatus::Up {
            return;
        }
        let now = self.now;
        for inst in &mut self.nodes[node].instances {
            inst.shutdown(now);
        }
        self.after_input(node);
        self.nodes[node].status = NodeStatus::Stopped;
    }

    /// Applies tracking results to one instance (e.g. a track script failing).
    pub fn set_tracking(&mut self, node: usize, instance: usize, health: TrackedHealth) {
        let now = self.now;
        self.nodes[node].instances[instance].set_tracking(now, health);
        self.after_input(node);
    }

    /// Cuts (or heals) the path between two nodes in both directions.
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        let key = (a.min(b), a.max(b));
        if cut {
            self.cut.insert(key);
        } else {
            self.cut.remove(&key);
        }
    }

    /// Changes loss and delay from now on.
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Runs until virtual time `until`, processing every event before it in order.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.next_event().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `cond` holds (checked after every event) or `limit` passes; returns whether it
    /// held.
    pub fn run_until_cond(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        if cond(self) {
            return true;
        }
        while let Some(at) = self.next_event().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            self.step();
            if cond(self) {
                return true;
            }
        }
        self.now = self.now.max(until);
        false
    }

    fn next_event(&self) -> Option<Instant> {
        let packet = self.in_flight.peek().map(|Reverse(p)| p.at);
        let timer = self
            .nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Up)
            .flat_map(|n| n.instances.iter().filter_map(Instance::poll_timeout))
            .min();
        let expiry = self
            .nodes
            .iter()
            .filter(|n| n.vips_up.iter().any(|&v| v))
            .filter_map(|n| n.paused_at.map(|at| at + self.vip_lifetime))
            .min();
        [packet, timer, expiry].into_iter().flatten().min()
    }

    fn step(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            if n.paused_at.is_some_and(|at| at + self.vip_lifetime <= now) {
                n.vips_up.iter_mut().for_each(|v| *v = false);
            }
        }
        while self.in_flight.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Reverse(p) = self.in_flight.pop().expect("peeked");
            match self.nodes[p.to].status {
                NodeStatus::Up => self.deliver(p.to, p.from, &p.bytes),
                NodeStatus::Paused => self.nodes[p.to].backlog.push_back((p.from, p.bytes)),
                NodeStatus::Crashed | NodeStatus::Stopped => {}
            }
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node].status == NodeStatus::Up {
                self.fire_timers(node);
            }
        }
    }

    fn fire_timers(&mut self, node: usize) {
        let now = self.now;
        let due = self.nodes[node]
            .instances
            .iter()
            .any(|i| i.poll_timeout().is_some_and(|t| t <= now));
        if !due {
            return;
        }
        for inst in &mut self.nodes[node].instances {
            inst.handle_timeout(now);
        }
        self.after_input(node);
    }

    fn deliver(&mut self, node: usize, from: IpAddr, bytes: &[u8]) {
        let now = self.now;
        let dst = duet_vrrp::Family::of(&from).multicast_group();
        let Ok((advert, _)) = Advert::parse(bytes, from, dst) else {
            panic!("simulator produced a packet its own parser rejects: {bytes:02x?}");
        };
        let n = &mut self.nodes[node];
        for inst in n.instances.iter_mut() {
            if inst.config().vrid == advert.vrid && inst.config().version == advert.version {
                let _ = inst.handle_advert(now, from, &advert);
            }
        }
        self.after_input(node);
    }

    /// Reconciles sync groups, then drains every output of the node's instances.
    fn after_input(&mut self, node: usize) {
        let now = self.now;
        let n = &mut self.nodes[node];
        for g in &mut n.groups {
            g.reconcile(now, &mut n.instances);
        }
        let src = n.address;
        let mut sends = Vec::new();
        for (i, inst) in n.instances.iter_mut().enumerate() {
            while let Some(action) = inst.poll_action() {
                match action {
                    Action::Transition { from, to, reason } => {
                        self.transitions.push(TransitionRecord {
                            at: now,
                            node,
                            instance: i,
                            from,
                            to,
                            reason,
                        })
                    }
                    Action::AddVips => n.vips_up[i] = true,
                    Action::RemoveVips => n.vips_up[i] = false,
                    Action::Announce => {}
                }
            }
            while let Some(advert) = inst.poll_transmit() {
                let dst = duet_vrrp::Family::of(&src).multicast_group();
                sends.push(advert.to_bytes(src, dst, self.checksum_mode));
            }
        }
        for bytes in sends {
            self.broadcast(node, src, bytes);
        }
    }

    fn broadcast(&mut self, from_node: usize, from: IpAddr, bytes: Vec<u8>) {
        for to in 0..self.nodes.len() {
            if to == from_node || self.cut.contains(&(from_node.min(to), from_node.max(to))) {
                continue;
            }
            if self.rng.chance(self.net.loss) {
                continue;
            }
            let delay = self.rng.range(
                self.net.delay_min.as_nanos() as u64,
                self.net.delay_max.as_nanos() as u64,
            );
            let last = self.last_arrival.entry((from_node, to)).or_default();
            let at = (self.now + Duration::from_nanos(delay)).max(*last);
            *last = at;
            self.seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at,
                seq: self.seq,
                to,
                from,
                bytes: bytes.clone(),
            }));
        }
    }
}
