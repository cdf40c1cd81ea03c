//! A deterministic cluster of two or more nodes, optionally with a witness: VRRP, heartbeats
//! on two links, leases.
//!
//! Each node runs what the daemon runs, in the same order: a [`duet_vrrp::Instance`] and the
//! daemon's own cluster logic, a [`Member`], whose verdict becomes the instance's veto. The
//! witness runs the pure [`Witness`]. Messages go through the real codec
//! ([`duet_cluster::wire`]). Links: 0 is the business network (adverts, heartbeats, witness
//! traffic), 1 a dedicated heartbeat network. Faults: cuts per link and direction, loss per
//! link, node pause / resume (the VIP's kernel lifetime runs out while paused), crash
//! (everything killed; the VIP lives until its lifetime ends) and restart, witness crash and
//! restart (it restores its persisted promise).
//!
//! The simulator records, for the invariants: every moment two nodes have the VIP configured,
//! every lease granted (holder, term), and the longest time nobody served.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::time::Duration;

use duet_cluster::lease::{Answer, Promise, Witness};
use duet_cluster::member::{Member, MemberConfig, Via};
use duet_cluster::quorum::{Local, TwoNodePolicy, Verdict};
use duet_cluster::wire::{self, Body, InstanceReport, Key, Message, ReplayGuard};
use duet_time::Instant;
use duet_vrrp::{Action, Advert, ChecksumMode, Instance, InstanceConfig, State};

use crate::Rng;

/// Node names and priorities, in order (a cluster of *n* nodes takes the first *n*).
const NODES: [(&str, u8); 4] = [("alpha", 150), ("beta", 100), ("gamma", 80), ("delta", 60)];

/// Timing of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes (2 to 4).
    pub nodes: usize,
    /// VRRP advert interval (centiseconds).
    pub advert_centis: u16,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Misses before a link counts as down.
    pub misses: u32,
    /// Lease length, if a witness runs.
    pub lease: Option<Duration>,
    /// The witness plays an external coordinator (etcd): its lease alone decides, no votes.
    pub lease_decides: bool,
    /// The VIP's kernel lifetime.
    pub vip_lifetime: Duration,
    /// Without a witness.
    pub policy: TwoNodePolicy,
    /// One-way delay range.
    pub delay: (Duration, Duration),
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            nodes: 2,
            advert_centis: 10,
            heartbeat: Duration::from_millis(50),
            misses: 5,
            lease: Some(Duration::from_secs(2)),
            lease_decides: false,
            vip_lifetime: Duration::from_secs(1),
            policy: TwoNodePolicy::Safe,
            delay: (Duration::from_micros(50), Duration::from_millis(2)),
        }
    }
}

/// Process state of a node or the witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Running.
    Up,
    /// Frozen: nothing runs, packets are lost (a full socket buffer would keep a few; losing
    /// them is the harder case for the invariants).
    Paused,
    /// Killed.
    Down,
}

struct Node {
    address: IpAddr,
    cfg: InstanceConfig,
    inst: Instance,
    member: Member,
    process: Process,
    /// The business link (link 0) is up at this node.
    business_up: bool,
    /// The VIP is configured (by this process's last action), and until when it lives if the
    /// process no longer refreshes it.
    vip: bool,
    vip_expires: Option<Instant>,
}

struct WitnessProc {
    core: Witness,
    guard: ReplayGuard,
    promise: Option<Promise>,
    process: Process,
    seq: u64,
    boot: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: Instant,
    seq: u64,
    link: usize,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
    /// VRRP advert (true) or cluster message.
    vrrp: bool,
}

/// A lease the witness granted, for the invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// When.
    pub at: Instant,
    /// To whom.
    pub holder: usize,
    /// Under which term.
    pub term: u64,
}

/// The simulated cluster.
pub struct ClusterSim {
    now: Instant,
    rng: Rng,
    cfg: ClusterConfig,
    key: Key,
    nodes: Vec<Node>,
    witness: WitnessProc,
    in_flight: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    /// Cut (link, from, to) directions.
    cut: BTreeSet<(usize, usize, usize)>,
    /// Loss probability per link.
    loss: [f64; 2],
    /// Per (link, from, to): the latest arrival scheduled. A link delivers in order (a LAN
    /// does not reorder two hosts' frames); two links may.
    last_arrival: BTreeMap<(usize, usize, usize), Instant>,
    /// Total time during which two or more nodes had the VIP configured.
    pub both_vip: Duration,
    /// Total time during which two or more running nodes believed they held a valid lease.
    pub both_leases: Duration,
    /// Every grant.
    pub grants: Vec<GrantRecord>,
    /// Every transition and VIP change, for failure messages.
    pub trace: Vec<String>,
    /// The longest stretch without a serving node that has ended (reset it with
    /// [`ClusterSim::reset_outage`]).
    pub longest_outage: Duration,
    /// The longest time without any node holding the VIP since `outage_since` was last reset.
    outage_since: Option<Instant>,
}

impl std::fmt::Debug for ClusterSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSim")
            .field("now", &self.now)
            .finish()
    }
}

/// Node `n`'s cluster logic, as the daemon configures it (peers keyed by name).
fn member(cfg: &ClusterConfig, n: usize, boot: u64) -> Member {
    Member::new(
        MemberConfig {
            name: NODES[n].0.to_string(),
            peers: (0..cfg.nodes)
                .filter(|&m| m != n)
                .map(|m| NODES[m].0.to_string())
                .collect(),
            links: 2,
            interval: cfg.heartbeat,
            misses: cfg.misses,
            lease: cfg.lease,
            lease_decides: cfg.lease_decides,
            vip_lifetime: cfg.vip_lifetime,
            policy: cfg.policy,
            clock_window_ms: 30_000,
        },
        boot,
    )
}

/// What a node's heartbeat says of its instance, as the daemon's `reports` builds it.
fn report(inst: &Instance) -> InstanceReport {
    let master = inst.state() == State::Master;
    InstanceReport {
        vrid: 51,
        master,
        wants: !master && inst.wants_master(),
        priority: inst.effective_priority(),
    }
}

/// Node `from`'s index among node `to`'s peers.
fn peer_index(to: usize, from: usize) -> usize {
    if from < to { from } else { from - 1 }
}

impl ClusterSim {
    /// `cfg.nodes` nodes (priorities 150, 100, 80, 60) and, with `cfg.lease`, a witness;
    /// nothing started.
    pub fn new(seed: u64, cfg: ClusterConfig) -> ClusterSim {
        assert!((2..=NODES.len()).contains(&cfg.nodes), "2 to 4 nodes");
        let mut rng = Rng::new(seed);
        let key = Key::new(b"simulated cluster key, 32 bytes!").expect("key");
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let address = crate::Sim::node_address(i, false);
                let icfg = InstanceConfig {
                    name: "web".into(),
                    vrid: duet_vrrp::packet::Vrid::new(51).expect("vrid"),
                    version: duet_vrrp::packet::Version::V3,
                    priority: NODES[i].1,
                    advert_interval: duet_vrrp::packet::AdvertInterval::from_centis(
                        cfg.advert_centis,
                    )
                    .expect("interval"),
                    preempt: true,
                    preempt_delay: Duration::ZERO,
                    vips: vec!["10.0.0.100".parse().expect("vip")],
                    primary_address: address,
                };
                Node {
                    address,
                    inst: Instance::new(icfg.clone()),
                    cfg: icfg,
                    member: member(&cfg, i, rng.next_u64()),
                    process: Process::Down,
                    business_up: true,
                    vip: false,
                    vip_expires: None,
                }
            })
            .collect();
        let witness = WitnessProc {
            core: Witness::new(
                Instant::ZERO,
                cfg.lease.unwrap_or(Duration::from_secs(2)),
                None,
            ),
            guard: ReplayGuard::new(30_000),
            promise: None,
            process: if cfg.lease.is_some() {
                Process::Up
            } else {
                Process::Down
            },
            seq: 0,
            boot: rng.next_u64(),
        };
        ClusterSim {
            now: Instant::ZERO,
            rng,
            cfg,
            key,
            nodes,
            witness,
            in_flight: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            loss: [0.0; 2],
            last_arrival: BTreeMap::new(),
            both_vip: Duration::ZERO,
            both_leases: Duration::ZERO,
            grants: Vec::new(),
            trace: Vec::new(),
            longest_outage: Duration::ZERO,
            outage_since: Some(Instant::ZERO),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The random generator (for schedules).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// How many nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The witness's index in [`ClusterSim::set_cut`] (after the nodes).
    pub fn witness(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `n` has the VIP configured.
    pub fn has_vip(&self, n: usize) -> bool {
        self.nodes[n].vip
    }

    /// How many nodes have the VIP configured.
    pub fn vip_holders(&self) -> usize {
        self.nodes.iter().filter(|n| n.vip).count()
    }

    /// Node `n`'s VRRP state.
    pub fn state(&self, n: usize) -> State {
        self.nodes[n].inst.state()
    }

    /// Node `n`'s process.
    pub fn process(&self, n: usize) -> Process {
        self.nodes[n].process
    }

    /// Whether node `n` believes it holds a valid lease.
    pub fn lease_valid(&self, n: usize) -> bool {
        self.nodes[n]
            .member
            .lease()
            .is_some_and(|l| l.valid(self.now))
    }

    /// Starts (or restarts, with a new boot id) node `n`.
    pub fn start(&mut self, n: usize) {
        let boot = self.rng.next_u64();
        let node = &mut self.nodes[n];
        node.inst = Instance::new(node.cfg.clone());
        node.member = member(&self.cfg, n, boot);
        node.process = Process::Up;
        // A restart removes leftovers at once (the daemon's start-up cleanup).
        node.vip = false;
        node.vip_expires = None;
        node.inst.start(self.now);
        self.after(n);
    }

    /// Kills every process of node `n`: no goodbye; its VIP lives out its kernel lifetime.
    pub fn crash(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        if node.process == Process::Down {
            return;
        }
        // A paused node's VIP already counts down from the pause.
        if node.vip && node.vip_expires.is_none() {
            node.vip_expires = Some(now + self.cfg.vip_lifetime);
        }
        node.process = Process::Down;
    }

    /// Stops node `n` cleanly, as SIGTERM does: VRRP steps down (priority 0), the VIP goes, and
    /// the last heartbeat says goodbye.
    pub fn stop(&mut self, n: usize) {
        if self.nodes[n].process != Process::Up {
            return;
        }
        let now = self.now;
        let unix = self.unix_ms();
        self.nodes[n].inst.shutdown(now);
        self.after(n);
        let node = &mut self.nodes[n];
        node.member
            .goodbye(now, unix, &[report(&node.inst)], node.business_up);
        self.flush(n);
        self.nodes[n].process = Process::Down;
    }

    /// Node `n`'s business link goes down (or comes back): link 0 carries nothing to or from
    /// it (adverts, heartbeats, the witness), and its VRRP instance is in FAULT, as the daemon's
    /// interface tracking puts it.
    pub fn set_business_link(&mut self, n: usize, up: bool) {
        for m in (0..=self.nodes.len()).filter(|&m| m != n) {
            self.set_cut_both(0, n, m, !up);
        }
        let now = self.now;
        let node = &mut self.nodes[n];
        node.business_up = up;
        let fault = (!up).then(|| "interface eth0 is down".to_string());
        node.inst.set_tracking(
            now,
            duet_vrrp::TrackedHealth {
                fault,
                ..Default::default()
            },
        );
        self.tick(n);
    }

    /// Freezes node `n`.
    pub fn pause(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        if node.process == Process::Up {
            node.process = Process::Paused;
            if node.vip {
                node.vip_expires = Some(now + self.cfg.vip_lifetime);
            }
        }
    }

    /// Thaws node `n`: timers fire late, as in the daemon (the cluster check first).
    pub fn resume(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.process == Process::Paused {
            node.process = Process::Up;
            // The live process refreshes the VIP again (if its instance still thinks it is
            // MASTER; the cluster check in `tick` runs before the refresh, as in the daemon).
            self.tick(n);
        }
    }

    /// Kills the witness.
    pub fn crash_witness(&mut self) {
        self.witness.process = Process::Down;
    }

    /// Restarts the witness from its persisted promise.
    pub fn restart_witness(&mut self) {
        let Some(lease) = self.cfg.lease else {
            return;
        };
        self.witness.core = Witness::new(self.now, lease, self.witness.promise.as_ref());
        self.witness.guard = ReplayGuard::new(30_000);
        self.witness.boot = self.rng.next_u64();
        self.witness.seq = 0;
        self.witness.process = Process::Up;
    }

    /// Cuts (or restores) `link` in the direction `from` → `to` (node indexes, or
    /// [`ClusterSim::witness`]).
    pub fn set_cut(&mut self, link: usize, from: usize, to: usize, cut: bool) {
        if cut {
            self.cut.insert((link, from, to));
        } else {
            self.cut.remove(&(link, from, to));
        }
    }

    /// Cuts (or restores) `link` between `a` and `b`, both directions.
    pub fn set_cut_both(&mut self, link: usize, a: usize, b: usize, cut: bool) {
        self.set_cut(link, a, b, cut);
        self.set_cut(link, b, a, cut);
    }

    /// Cuts both links, both directions, between the nodes of `side` and the other nodes.
    pub fn isolate(&mut self, side: &[usize]) {
        for a in side.iter().copied() {
            for b in (0..self.nodes.len()).filter(|b| !side.contains(b)) {
                for l in 0..2 {
                    self.set_cut_both(l, a, b, true);
                }
            }
        }
    }

    /// Restores every link and removes loss.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.loss = [0.0; 2];
    }

    /// Loss probability on `link`.
    pub fn set_loss(&mut self, link: usize, p: f64) {
        self.loss[link] = p;
    }

    fn unix_ms(&self) -> u64 {
        // A fixed epoch: every process shares the simulated wall clock.
        1_700_000_000_000 + self.now.as_nanos() / 1_000_000
    }

    fn send(&mut self, link: usize, from: usize, to: usize, bytes: Vec<u8>, vrrp: bool) {
        if self.cut.contains(&(link, from, to)) || self.rng.chance(self.loss[link]) {
            return;
        }
        let (lo, hi) = self.cfg.delay;
        let delay = self.rng.range(lo.as_nanos() as u64, hi.as_nanos() as u64);
        let path = self.last_arrival.entry((link, from, to)).or_default();
        let at = (self.now + Duration::from_nanos(delay)).max(*path);
        *path = at;
        self.seq += 1;
        self.in_flight.push(Reverse(Packet {
            at,
            seq: self.seq,
            link,
            from,
            to,
            bytes,
            vrrp,
        }));
    }

    /// The daemon's timer pass for node `n`: cluster check and sends, then VRRP timers, then
    /// outputs.
    fn tick(&mut self, n: usize) {
        if self.nodes[n].process != Process::Up {
            return;
        }
        self.cluster_eval(n);
        let now = self.now;
        self.nodes[n].inst.handle_timeout(now);
        self.after(n);
    }

    /// The daemon's `cluster_eval`: the member's timers and sends, then its verdict as the
    /// instance's veto.
    fn cluster_eval(&mut self, n: usize) {
        let now = self.now;
        let unix = self.unix_ms();
        let node = &mut self.nodes[n];
        let report = report(&node.inst);
        let business_up = node.business_up;
        node.member.tick(now, unix, &[report], business_up);
        let local = Local {
            vrid: 51,
            priority: report.priority,
            master: report.master,
            business_up,
            lease_valid: false,
        };
        let veto = match node.member.verdict(now, local) {
            Verdict::Denied(why) => Some(why),
            _ => None,
        };
        node.inst.set_veto(now, veto);
        self.flush(n);
    }

    /// Sends what node `n`'s member queued, and keeps its events in the trace.
    fn flush(&mut self, n: usize) {
        let now = self.now;
        let witness = self.witness();
        while let Some(t) = self.nodes[n].member.poll_transmit() {
            let bytes = wire::encode(&t.msg, &self.key);
            match t.via {
                Via::Link(l) => {
                    for m in (0..self.nodes.len()).filter(|&m| m != n) {
                        self.send(l, n, m, bytes.clone(), false);
                    }
                }
                Via::Witness => self.send(0, n, witness, bytes, false),
            }
        }
        while let Some(e) = self.nodes[n].member.poll_event() {
            self.trace.push(format!("{now:?} {}: {e:?}", NODES[n].0));
        }
    }

    fn after(&mut self, n: usize) {
        let mut adverts = Vec::new();
        let now = self.now;
        {
            let node = &mut self.nodes[n];
            while let Some(a) = node.inst.poll_action() {
                self.trace.push(format!("{:?} {}: {a:?}", now, NODES[n].0));
                match a {
                    Action::AddVips => {
                        node.vip = true;
                        node.vip_expires = None;
                    }
                    Action::RemoveVips => {
                        node.vip = false;
                        node.vip_expires = None;
                    }
                    Action::Announce | Action::Transition { .. } => {}
                }
            }
            // The live daemon refreshes the VIP of a MASTER (and re-adds it if it expired while
            // the process was frozen).
            if node.inst.state() == State::Master {
                node.vip = true;
                node.vip_expires = None;
            }
            while let Some(a) = node.inst.poll_transmit() {
                let dst = duet_vrrp::Family::of(&node.address).multicast_group();
                adverts.push(a.to_bytes(node.address, dst, ChecksumMode::PseudoHeader));
            }
        }
        for bytes in adverts {
            for m in (0..self.nodes.len()).filter(|&m| m != n) {
                self.send(0, n, m, bytes.clone(), true);
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if p.to == self.witness() {
            return self.witness_receive(p);
        }
        if self.nodes[p.to].process != Process::Up {
            return;
        }
        let n = p.to;
        if p.vrrp {
            let from = self.nodes[p.from].address;
            let dst = duet_vrrp::Family::of(&from).multicast_group();
            let Ok((advert, _)) = Advert::parse(&p.bytes, from, dst) else {
                panic!("the simulator's own advert did not parse");
            };
            let _ = self.nodes[n].inst.handle_advert(now, from, &advert);
            self.after(n);
            return;
        }
        let unix = self.unix_ms();
        let Ok(msg) = wire::decode(&p.bytes, &self.key) else {
            panic!("the simulator's own message did not decode");
        };
        let (via, peer) = if p.from == self.witness() {
            (Via::Witness, None)
        } else {
            (Via::Link(p.link), Some(peer_index(n, p.from)))
        };
        // A refused message (a replay after a restart, say) changes nothing.
        let _ = self.nodes[n].member.receive(now, unix, via, peer, &msg);
        while let Some(_vrid) = self.nodes[n].member.poll_stepped_down() {
            self.nodes[n].inst.master_left(now);
        }
        self.tick(n);
    }

    fn witness_receive(&mut self, p: Packet) {
        if self.witness.process != Process::Up {
            return;
        }
        let now = self.now;
        let unix = self.unix_ms();
        let Ok(msg) = wire::decode(&p.bytes, &self.key) else {
            return;
        };
        if self.witness.guard.admit(&msg, unix).is_err() {
            return;
        }
        let Body::LeaseRequest {
            request,
            duration_ms,
        } = msg.body
        else {
            return;
        };
        let (answer, promise) = self.witness.core.request(
            now,
            &msg.sender,
            msg.term,
            Duration::from_millis(u64::from(duration_ms)),
        );
        if let Some(pr) = promise {
            self.witness.promise = Some(pr);
        }
        if let Answer::Granted { term, .. } = answer {
            let holder = NODES
                .iter()
                .position(|(name, _)| *name == msg.sender)
                .unwrap_or(usize::MAX);
            self.grants.push(GrantRecord {
                at: now,
                holder,
                term,
            });
        }
        let (term, body) = (answer.term(), answer.body(request));
        self.witness.seq += 1;
        let reply = Message {
            sender: "witness".into(),
            boot: self.witness.boot,
            seq: self.witness.seq,
            sent_ms: unix,
            term,
            body,
        };
        let bytes = wire::encode(&reply, &self.key);
        let witness = self.witness();
        self.send(0, witness, p.from, bytes, false);
    }

    fn due(node: &Node) -> Option<Instant> {
        if node.process != Process::Up {
            return None;
        }
        [node.inst.poll_timeout(), node.member.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn next_event(&self) -> Option<Instant> {
        let packet = self.in_flight.peek().map(|Reverse(p)| p.at);
        let timers = self.nodes.iter().filter_map(Self::due).min();
        let expiry = self.nodes.iter().filter_map(|n| n.vip_expires).min();
        [packet, timers, expiry].into_iter().flatten().min()
    }

    /// Runs `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(at) = self.next_event().filter(|&t| t <= until) {
            self.advance_to(at);
            self.step();
        }
        self.advance_to(until);
    }

    fn advance_to(&mut self, t: Instant) {
        let t = t.max(self.now);
        if self.vip_holders() >= 2 {
            self.both_vip += t.saturating_since(self.now);
        }
        // Validity is re-read at `now`; an expiry between events is itself an event (the
        // lease clients' poll_timeout), so this is exact for running nodes. A frozen or dead
        // node's own view does not matter: it acts on nothing.
        let held = self
            .nodes
            .iter()
            .filter(|n| {
                n.process == Process::Up && n.member.lease().is_some_and(|l| l.valid(self.now))
            })
            .count();
        if held >= 2 {
            self.both_leases += t.saturating_since(self.now);
        }
        self.now = t;
    }

    fn step(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            if n.vip_expires.is_some_and(|t| t <= now) {
                n.vip = false;
                n.vip_expires = None;
            }
        }
        while self.in_flight.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Reverse(p) = self.in_flight.pop().expect("peeked");
            self.deliver(p);
        }
        for n in 0..self.nodes.len() {
            if Self::due(&self.nodes[n]).is_some_and(|t| t <= now) {
                self.tick(n);
            }
        }
        self.track_outage();
    }

    fn track_outage(&mut self) {
        let served = self.nodes.iter().any(|n| n.vip && n.process == Process::Up);
        match (served, self.outage_since) {
            (true, Some(t)) => {
                self.longest_outage = self.longest_outage.max(self.now.saturating_since(t));
                self.outage_since = None;
            }
            (false, None) => self.outage_since = Some(self.now),
            _ => {}
        }
    }

    /// Forgets outages so far (e.g. the start-up).
    pub fn reset_outage(&mut self) {
        self.longest_outage = Duration::ZERO;
    }

    /// How long nobody has served, if nobody serves now.
    pub fn outage(&self) -> Option<Duration> {
        self.outage_since.map(|t| self.now.saturating_since(t))
    }
}
