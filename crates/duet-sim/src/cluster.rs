//! A deterministic two-node cluster with a witness: VRRP, heartbeats on two links, leases.
//!
//! Each node runs what the daemon runs, in the same order: a [`duet_vrrp::Instance`], a
//! [`Liveness`] over two links, a [`LeaseClient`] and the [`quorum::verdict`] turned into a
//! veto. The witness runs the pure [`Witness`]. Messages go through the real codec
//! ([`duet_cluster::wire`]) and replay guards. Links: 0 is the business network (adverts,
//! heartbeats, witness traffic), 1 a dedicated heartbeat cable. Faults: cuts per link and
//! direction, loss per link, node pause / resume (the VIP's kernel lifetime runs out while
//! paused), crash (everything killed; the VIP lives until its lifetime ends) and restart,
//! witness crash and restart (it restores its persisted promise).
//!
//! The simulator records, for the invariants: every moment two nodes have the VIP configured,
//! every lease granted (holder, term, interval), and every MASTER period.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::time::Duration;

use duet_cluster::lease::{Answer, LeaseClient, Promise, Witness};
use duet_cluster::liveness::Liveness;
use duet_cluster::quorum::{self, Ballot, Local, Rules, TwoNodePolicy};
use duet_cluster::votes::{Votes, may_grant};
use duet_cluster::wire::{self, Body, Grant, Heartbeat, InstanceReport, Key, Message, ReplayGuard};
use duet_time::Instant;
use duet_vrrp::{Action, Advert, ChecksumMode, Instance, InstanceConfig, State};

use crate::Rng;

/// The witness's index in message routing.
pub const WITNESS: usize = 2;

/// Timing of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// VRRP advert interval (centiseconds).
    pub advert_centis: u16,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Misses before a link counts as down.
    pub misses: u32,
    /// Lease length, if a witness runs.
    pub lease: Option<Duration>,
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
            advert_centis: 10,
            heartbeat: Duration::from_millis(50),
            misses: 5,
            lease: Some(Duration::from_secs(2)),
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
    name: String,
    address: IpAddr,
    cfg: InstanceConfig,
    inst: Instance,
    live: Liveness,
    lease: Option<LeaseClient>,
    votes: Votes,
    guards: [ReplayGuard; 2],
    witness_guard: ReplayGuard,
    boot: u64,
    seq: u64,
    next_beat: Instant,
    process: Process,
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
    /// Total time during which both nodes had the VIP configured.
    pub both_vip: Duration,
    /// Total time during which both nodes believed they held a valid lease.
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

/// Votes last as long as the witness lease, or twice the VIP lifetime (at least 2 s) without a
/// witness: always longer than a frozen or killed node's VIP lives.
fn votes_for(cfg: &ClusterConfig) -> Votes {
    let d = cfg
        .lease
        .unwrap_or((cfg.vip_lifetime * 2).max(Duration::from_secs(2)));
    Votes::new(1, d, (d / 20).max(Duration::from_millis(20)))
}

fn ms(d: Duration) -> u32 {
    d.as_millis() as u32
}

impl ClusterSim {
    /// Two nodes (priority 150 and 100) and, with `cfg.lease`, a witness; nothing started.
    pub fn new(seed: u64, cfg: ClusterConfig) -> ClusterSim {
        let mut rng = Rng::new(seed);
        let key = Key::new(b"simulated cluster key, 32 bytes!").expect("key");
        let nodes = [(150u8, "alpha"), (100, "beta")]
            .into_iter()
            .enumerate()
            .map(|(i, (priority, name))| {
                let address = crate::Sim::node_address(i, false);
                let icfg = InstanceConfig {
                    name: "web".into(),
                    vrid: duet_vrrp::packet::Vrid::new(51).expect("vrid"),
                    version: duet_vrrp::packet::Version::V3,
                    priority,
                    advert_interval: duet_vrrp::packet::AdvertInterval::from_centis(
                        cfg.advert_centis,
                    )
                    .expect("interval"),
                    preempt: true,
                    preempt_delay: Duration::ZERO,
                    vips: vec!["10.0.0.100".parse().expect("vip")],
                    primary_address: address,
                };
                let peer = if i == 0 { "beta" } else { "alpha" };
                Node {
                    name: name.to_string(),
                    address,
                    inst: Instance::new(icfg.clone()),
                    cfg: icfg,
                    live: Liveness::new(2, &[peer.to_string()], cfg.heartbeat, cfg.misses),
                    lease: cfg
                        .lease
                        .map(|l| LeaseClient::new(l, (l / 20).max(Duration::from_millis(20)))),
                    votes: votes_for(&cfg),
                    guards: [ReplayGuard::new(30_000), ReplayGuard::new(30_000)],
                    witness_guard: ReplayGuard::new(30_000),
                    boot: rng.next_u64(),
                    seq: 0,
                    next_beat: Instant::ZERO,
                    process: Process::Down,
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

    /// Whether node `n` has the VIP configured.
    pub fn has_vip(&self, n: usize) -> bool {
        self.nodes[n].vip
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
            .lease
            .as_ref()
            .is_some_and(|l| l.valid(self.now))
    }

    /// Starts (or restarts, with a new boot id) node `n`.
    pub fn start(&mut self, n: usize) {
        let boot = self.rng.next_u64();
        let cfg = self.cfg.clone();
        let node = &mut self.nodes[n];
        node.inst = Instance::new(node.cfg.clone());
        let peer = if n == 0 { "beta" } else { "alpha" };
        node.live = Liveness::new(2, &[peer.to_string()], cfg.heartbeat, cfg.misses);
        node.lease = cfg
            .lease
            .map(|l| LeaseClient::new(l, (l / 20).max(Duration::from_millis(20))));
        node.votes = votes_for(&cfg);
        node.guards = [ReplayGuard::new(30_000), ReplayGuard::new(30_000)];
        node.witness_guard = ReplayGuard::new(30_000);
        node.boot = boot;
        node.seq = 0;
        node.next_beat = self.now;
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
        if self.cfg.lease.is_none() {
            return;
        }
        let lease = self.cfg.lease.unwrap_or_default();
        self.witness.core = Witness::new(self.now, lease, self.witness.promise.as_ref());
        self.witness.guard = ReplayGuard::new(30_000);
        self.witness.boot = self.rng.next_u64();
        self.witness.seq = 0;
        self.witness.process = Process::Up;
    }

    /// Cuts (or restores) `link` in the direction `from` → `to` (nodes 0, 1, [`WITNESS`]).
    pub fn set_cut(&mut self, link: usize, from: usize, to: usize, cut: bool) {
        if cut {
            self.cut.insert((link, from, to));
        } else {
            self.cut.remove(&(link, from, to));
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
        self.seq += 1;
        self.in_flight.push(Reverse(Packet {
            at: self.now + Duration::from_nanos(delay),
            seq: self.seq,
            link,
            from,
            to,
            bytes,
            vrrp,
        }));
    }

    fn message(&mut self, n: usize, term: u64, body: Body) -> Vec<u8> {
        let sent_ms = self.unix_ms();
        let node = &mut self.nodes[n];
        node.seq += 1;
        let msg = Message {
            sender: node.name.clone(),
            boot: node.boot,
            seq: node.seq,
            sent_ms,
            term,
            body,
        };
        wire::encode(&msg, &self.key)
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

    fn cluster_eval(&mut self, n: usize) {
        let now = self.now;
        {
            let node = &mut self.nodes[n];
            node.live.handle_timeout(now);
            node.votes.handle_timeout(now);
            if let Some(l) = &mut node.lease {
                l.handle_timeout(now);
            }
            while node.live.poll_event().is_some() {}
            node.votes
                .expire_asks(now, self.cfg.heartbeat * self.cfg.misses);
        }
        let state = self.nodes[n].inst.state();
        let master = state == State::Master;
        let wants = self.nodes[n].inst.wants_master();
        let promised = self.nodes[n].votes.promised_to(now);
        let asking = (master || wants) && promised.is_none();
        if !asking {
            self.nodes[n].votes.stop_asking();
        }
        let priority = self.nodes[n].inst.effective_priority();
        // A node that promised its vote cannot act on its wish: it does not announce it, so a
        // master does not yield to it.
        let report = InstanceReport {
            vrid: 51,
            master,
            wants: !master && wants && promised.is_none(),
            priority,
        };
        let peer_name = self.nodes[1 - n].name.clone();
        let term = self.nodes[n].lease.as_ref().map_or(0, LeaseClient::term);
        if now >= self.nodes[n].next_beat {
            self.nodes[n].next_beat = now + self.cfg.heartbeat;
            // The vote, decided once per beat.
            let grant = {
                let node = &mut self.nodes[n];
                let peer_rank = node
                    .live
                    .peer(&peer_name)
                    .and_then(|p| p.report.as_ref())
                    .and_then(|r| r.instances.first())
                    .map(|i| i.priority);
                let outranks = peer_rank
                    .is_some_and(|p| (p, peer_name.as_str()) > (priority, node.name.as_str()));
                match node.votes.ask_of(0) {
                    Some(ask) if may_grant(master, wants, outranks, promised, 0) => {
                        node.votes.promise(0, now);
                        Some(Grant {
                            to: peer_name.clone(),
                            ask,
                            duration_ms: ms(node.votes.duration()),
                        })
                    }
                    _ => None,
                }
            };
            for link in 0..2 {
                let ask = if asking { self.nodes[n].seq + 1 } else { 0 };
                if asking {
                    self.nodes[n].votes.asked(ask, now);
                }
                let hb = Heartbeat {
                    link: link as u8,
                    business_up: true,
                    instances: vec![report],
                    ask,
                    grant: grant.clone(),
                };
                let bytes = self.message(n, term, Body::Heartbeat(hb));
                self.send(link, n, 1 - n, bytes, false);
            }
        }
        let request = self.nodes[n]
            .lease
            .as_mut()
            .and_then(|l| l.poll_request(now));
        if let Some(r) = request {
            let bytes = self.message(
                n,
                r.term,
                Body::LeaseRequest {
                    request: r.request,
                    duration_ms: ms(r.duration),
                },
            );
            self.send(0, n, WITNESS, bytes, false);
        }
        let node = &mut self.nodes[n];
        if let Some(l) = &mut node.lease {
            l.set_wanted(now, asking);
        }
        let rules = Rules {
            nodes: 2,
            witness: self.cfg.lease.is_some(),
            policy: self.cfg.policy,
        };
        // A vote or lease counts only while it outlasts the VIP's kernel lifetime: if this
        // node died now, its VIP would be gone before the promise ends.
        let horizon = now + self.cfg.vip_lifetime;
        let local = Local {
            vrid: 51,
            priority,
            master,
            business_up: true,
            lease_valid: node.lease.as_ref().is_some_and(|l| l.valid(horizon)),
        };
        let ballot = Ballot {
            peer_votes: node.votes.count(horizon),
            promised_to: promised.map(|_| peer_name),
            voted_for: node.votes.last_given().is_some(),
        };
        let verdict = quorum::verdict(rules, &node.live, &node.name, local, &ballot);
        let veto = match verdict {
            quorum::Verdict::Denied(why) => Some(why),
            _ => None,
        };
        node.inst.set_veto(now, veto);
    }

    fn after(&mut self, n: usize) {
        let mut adverts = Vec::new();
        let now = self.now;
        {
            let node = &mut self.nodes[n];
            while let Some(a) = node.inst.poll_action() {
                self.trace.push(format!("{:?} {}: {a:?}", now, node.name));
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
            self.send(0, n, 1 - n, bytes, true);
        }
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if p.to == WITNESS {
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
        let node = &mut self.nodes[n];
        let guard = if p.from == WITNESS {
            &mut node.witness_guard
        } else {
            &mut node.guards[p.link]
        };
        if guard.admit(&msg, unix).is_err() {
            return;
        }
        match msg.body {
            Body::Heartbeat(hb) if usize::from(hb.link) == p.link => {
                let peer = if n == 0 { "beta" } else { "alpha" };
                node.live.heard(now, peer, p.link, msg.term, &hb);
                if node.votes.heard(0, now, &hb, &node.name) {
                    // A new ask: answer at once rather than at the next beat.
                    node.next_beat = now;
                }
                if let Some(l) = &mut node.lease {
                    l.observe_term(msg.term);
                }
            }
            Body::LeaseGranted {
                request,
                duration_ms,
            } => {
                if let Some(l) = &mut node.lease {
                    l.granted(
                        request,
                        Duration::from_millis(u64::from(duration_ms)),
                        msg.term,
                    );
                }
            }
            Body::LeaseRefused {
                request,
                remaining_ms,
                ..
            } => {
                if let Some(l) = &mut node.lease {
                    l.refused(
                        now,
                        request,
                        msg.term,
                        Duration::from_millis(u64::from(remaining_ms)),
                    );
                }
            }
            _ => {}
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
        let (term, body) = match answer {
            Answer::Granted { duration, term } => {
                let holder = self
                    .nodes
                    .iter()
                    .position(|x| x.name == msg.sender)
                    .unwrap_or(9);
                self.grants.push(GrantRecord {
                    at: now,
                    holder,
                    term,
                });
                (
                    term,
                    Body::LeaseGranted {
                        request,
                        duration_ms: ms(duration),
                    },
                )
            }
            Answer::Refused {
                holder,
                remaining,
                term,
            } => (
                term,
                Body::LeaseRefused {
                    request,
                    holder,
                    remaining_ms: ms(remaining),
                },
            ),
        };
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
        self.send(0, WITNESS, p.from, bytes, false);
    }

    fn next_event(&self) -> Option<Instant> {
        let packet = self.in_flight.peek().map(|Reverse(p)| p.at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.process == Process::Up)
            .flat_map(|n| {
                [
                    n.inst.poll_timeout(),
                    Some(n.next_beat),
                    n.live.poll_timeout(),
                    n.lease.as_ref().and_then(LeaseClient::poll_timeout),
                    n.votes.poll_timeout(),
                ]
            })
            .flatten()
            .min();
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
        if self.nodes[0].vip && self.nodes[1].vip {
            self.both_vip += t.saturating_since(self.now);
        }
        // Validity is re-read at `now`; an expiry between events is itself an event (the
        // lease clients' poll_timeout), so this is exact for running nodes. A frozen or dead
        // node's own view does not matter: it acts on nothing.
        let held = |n: &Node| {
            n.process == Process::Up && n.lease.as_ref().is_some_and(|l| l.valid(self.now))
        };
        if held(&self.nodes[0]) && held(&self.nodes[1]) {
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
            let node = &self.nodes[n];
            if node.process != Process::Up {
                continue;
            }
            let due = [
                node.inst.poll_timeout(),
                Some(node.next_beat),
                node.live.poll_timeout(),
                node.lease.as_ref().and_then(LeaseClient::poll_timeout),
                node.votes.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .any(|t| t <= now);
            if due {
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
