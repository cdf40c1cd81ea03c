//! A deterministic two-node database cluster with a witness, for the failover decisions.
//!
//! Each node runs what the daemon runs: a [`Member`] (heartbeats, votes, the lease) whose
//! verdict for the database resource feeds a [`Planner`], and the control side's rules for the
//! write VIP and record writes. The witness runs the pure [`Witness`], with the database
//! record, and sends the record before every lease answer as `duet witness` does. Messages go
//! through the real codec. PostgreSQL is a model ([`ModelPg`]): a WAL of (timeline, commit id)
//! entries, streaming that copies a primary's WAL to a standby whose WAL is a prefix of it,
//! synchronous commit (a commit is acknowledged once a standby named in
//! `synchronous_standby_names` has it), promotion onto a new timeline, immediate and clean
//! stops, rewind to the common prefix, clones.
//!
//! A client writes through the write VIP. The simulator checks, at every step:
//! - at most one node holds the write VIP (it has a kernel lifetime: a frozen or dead node
//!   keeps it until it expires);
//! - a node that becomes primary (promotion, restart in place) holds every commit
//!   acknowledged so far (`synchronous = "on"`/`"strict"`).
//!
//! Faults: crash and restart (the planner's memory is lost, the WAL is kept), postmaster kill,
//! pause and resume, partitions (node–node, node–witness), switchovers.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use duet_cluster::lease::Witness;
use duet_cluster::member::{Member, MemberConfig, Via};
use duet_cluster::quorum::{DATABASE, Local, TwoNodePolicy};
use duet_cluster::wire::{
    self, Body, DbRecord, DbState, InstanceReport, Key, Message, ReplayGuard,
};
use duet_dbfail::{
    Action, Data, Facts, Follower, Leadership, Mode, PeerDb, Planner, PlannerConfig, PrimaryState,
    Record, ReplicaState, Report, Role, Server, Step, slot_name,
};
use duet_time::Instant;

use crate::Rng;

const NAMES: [&str; 2] = ["alpha", "beta"];
const WITNESS: usize = 2;
const STEP: Duration = Duration::from_millis(10);
const LEASE: Duration = Duration::from_secs(2);
const VIP_LIFETIME: Duration = Duration::from_secs(1);
const LOOK: Duration = Duration::from_millis(100);

/// Process state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Running.
    Up,
    /// Frozen.
    Paused,
    /// Killed.
    Down,
}

/// A PostgreSQL server, as far as failover is concerned.
#[derive(Debug, Clone, Default)]
pub struct ModelPg {
    /// System identifier (0: empty data directory).
    pub system: u64,
    /// Flushed WAL: (timeline, commit id) per entry; the LSN is the length.
    pub wal: Vec<(u32, u64)>,
    /// Running as a primary (`Some(true)`), a standby (`Some(false)`), or stopped.
    pub running: Option<bool>,
    /// The last stop was clean.
    pub clean: bool,
    /// Its timeline.
    pub timeline: u32,
    /// `synchronous_standby_names`.
    pub sync_names: Vec<String>,
    /// The node a standby streams from.
    pub upstream: Option<usize>,
    /// A server just started answers only from then on (crash recovery).
    pub ready_at: Instant,
    /// A killed postmaster not yet reaped: until then a look finds it neither running nor
    /// gone ("starting").
    pub dying_until: Instant,
}

struct Node {
    process: Process,
    member: Member,
    planner: Planner,
    pg: ModelPg,
    next_look: Instant,
    /// The agent waits for the record to be confirmed, until then.
    awaiting: Option<(Record, Instant)>,
    master: bool,
    wants: bool,
    writable: bool,
    record_write: Option<Record>,
    last_write: Option<Instant>,
    vip: bool,
    vip_expires: Option<Instant>,
    /// Commits waiting for a synchronous standby: (id, WAL index).
    pending: Vec<(u64, usize)>,
    may_lead: bool,
    /// The last reason the planner gave for waiting (traced on change).
    last_wait: Option<String>,
    /// When the record was last asked for.
    last_query: Option<Instant>,
}

/// A message in flight: (arrival, sequence, from, to, bytes).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

struct WitnessProc {
    core: Witness,
    guard: ReplayGuard,
    seq: u64,
    boot: u64,
    up: bool,
}

/// The simulated database cluster.
pub struct DbSim {
    now: Instant,
    rng: Rng,
    key: Key,
    mode: Mode,
    lease_decides: bool,
    nodes: Vec<Node>,
    witness: WitnessProc,
    /// Messages in flight, earliest first.
    net: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    cut: BTreeSet<(usize, usize)>,
    next_id: u64,
    /// Every acknowledged commit, in order.
    pub acked: Vec<u64>,
    /// Promotions and restarts as primary.
    pub promotions: usize,
    /// Broken invariants (empty when all held).
    pub violations: Vec<String>,
    /// What happened, for failure messages.
    pub trace: Vec<String>,
}

impl std::fmt::Debug for DbSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSim").field("now", &self.now).finish()
    }
}

fn member(n: usize, boot: u64, lease_decides: bool) -> Member {
    Member::new(
        MemberConfig {
            name: NAMES[n].into(),
            peers: vec![NAMES[1 - n].into()],
            links: 1,
            interval: Duration::from_millis(50),
            misses: 5,
            lease: Some(LEASE),
            lease_decides,
            vip_lifetime: VIP_LIFETIME,
            policy: TwoNodePolicy::Safe,
            clock_window_ms: 30_000,
        },
        boot,
    )
}

fn planner(n: usize, mode: Mode) -> Planner {
    Planner::new(PlannerConfig {
        name: NAMES[n].into(),
        mode,
        max_lag: 4,
        max_crashes: 3,
        crash_window: Duration::from_secs(60),
    })
}

/// Whether `a` is a prefix of `b`.
fn prefix(a: &[(u32, u64)], b: &[(u32, u64)]) -> bool {
    a.len() <= b.len() && a == &b[..a.len()]
}

impl DbSim {
    /// Two empty nodes and a witness, all started.
    pub fn new(seed: u64, mode: Mode) -> DbSim {
        DbSim::with_authority(seed, mode, false)
    }

    /// Two empty nodes and a lease authority; with `lease_decides` it plays etcd (its lease
    /// alone decides, peers' votes do not count) and the record comes with every lease answer,
    /// as etcd's transactions read it.
    pub fn with_authority(seed: u64, mode: Mode, lease_decides: bool) -> DbSim {
        let mut rng = Rng::new(seed);
        let nodes = (0..2)
            .map(|n| Node {
                process: Process::Up,
                member: member(n, rng.next_u64(), lease_decides),
                planner: planner(n, mode),
                pg: ModelPg::default(),
                next_look: Instant::ZERO + Duration::from_millis(rng.range(0, 100)),
                awaiting: None,
                master: false,
                wants: false,
                writable: false,
                record_write: None,
                last_write: None,
                vip: false,
                vip_expires: None,
                pending: Vec::new(),
                may_lead: false,
                last_wait: None,
                last_query: None,
            })
            .collect();
        DbSim {
            now: Instant::ZERO,
            witness: WitnessProc {
                core: Witness::new(Instant::ZERO, LEASE, None),
                guard: ReplayGuard::new(30_000),
                seq: 0,
                boot: rng.next_u64(),
                up: true,
            },
            rng,
            key: Key::new(b"simulated database cluster key!!").expect("key"),
            mode,
            lease_decides,
            nodes,
            net: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            next_id: 1,
            acked: Vec::new(),
            promotions: 0,
            violations: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// The random generator (for schedules).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Node `n`'s server model.
    pub fn pg(&self, n: usize) -> &ModelPg {
        &self.nodes[n].pg
    }

    /// Node `n`'s process.
    pub fn process(&self, n: usize) -> Process {
        self.nodes[n].process
    }

    /// The node holding the write VIP and running a primary, if exactly one does.
    pub fn serving(&self) -> Option<usize> {
        let v: Vec<usize> = (0..2)
            .filter(|&n| {
                self.nodes[n].vip
                    && self.nodes[n].process == Process::Up
                    && self.now >= self.nodes[n].pg.ready_at
                    && self.nodes[n].pg.running == Some(true)
            })
            .collect();
        (v.len() == 1).then(|| v[0])
    }

    fn note(&mut self, what: String) {
        self.trace.push(format!("{:?} {what}", self.now));
    }

    fn unix_ms(&self) -> u64 {
        1_700_000_000_000 + self.now.as_nanos() / 1_000_000
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        let at = self.now + Duration::from_micros(self.rng.range(100, 3000));
        self.seq += 1;
        self.net.push(Reverse((at, self.seq, from, to, bytes)));
    }

    /// Kills node `n` (its server too); its write VIP lives until its lifetime ends.
    pub fn crash(&mut self, n: usize) {
        self.note(format!("crash {}", NAMES[n]));
        let node = &mut self.nodes[n];
        node.process = Process::Down;
        node.pg.running = None;
        node.pg.clean = false;
        node.pending.clear();
        if node.vip {
            node.vip_expires = Some(self.now + VIP_LIFETIME);
        }
    }

    /// Restarts node `n` with a fresh member and planner (its WAL is on disk).
    pub fn restart(&mut self, n: usize) {
        self.note(format!("restart {}", NAMES[n]));
        let boot = self.rng.next_u64();
        let (mode, lease_decides) = (self.mode, self.lease_decides);
        let node = &mut self.nodes[n];
        node.process = Process::Up;
        node.member = member(n, boot, lease_decides);
        node.planner = planner(n, mode);
        node.awaiting = None;
        node.record_write = None;
        node.master = false;
        node.wants = false;
        node.writable = false;
        node.vip = false;
        node.vip_expires = None;
        node.next_look = self.now;
    }

    /// Kills node `n`'s postmaster only.
    pub fn kill_postmaster(&mut self, n: usize) {
        if self.nodes[n].process == Process::Up && self.nodes[n].pg.running.is_some() {
            self.note(format!("postmaster of {} killed", NAMES[n]));
            let reaped = self.now + Duration::from_millis(self.rng.range(0, 300));
            let node = &mut self.nodes[n];
            node.pg.running = None;
            node.pg.clean = false;
            node.pending.clear();
            node.pg.dying_until = reaped;
        }
    }

    /// Freezes node `n`.
    pub fn pause(&mut self, n: usize) {
        if self.nodes[n].process == Process::Up {
            self.note(format!("pause {}", NAMES[n]));
            self.nodes[n].process = Process::Paused;
            if self.nodes[n].vip {
                self.nodes[n].vip_expires = Some(self.now + VIP_LIFETIME);
            }
        }
    }

    /// Thaws node `n`.
    pub fn resume(&mut self, n: usize) {
        if self.nodes[n].process == Process::Paused {
            self.note(format!("resume {}", NAMES[n]));
            self.nodes[n].process = Process::Up;
        }
    }

    /// Cuts (or heals) both directions between `a` and `b` (2 is the witness).
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        self.note(format!("{} {a}-{b}", if cut { "cut" } else { "heal" }));
        for pair in [(a, b), (b, a)] {
            if cut {
                self.cut.insert(pair);
            } else {
                self.cut.remove(&pair);
            }
        }
    }

    /// Heals every cut, resumes and restarts every node.
    pub fn heal(&mut self) {
        self.cut.clear();
        for n in 0..2 {
            match self.nodes[n].process {
                Process::Paused => self.resume(n),
                Process::Down => self.restart(n),
                Process::Up => {}
            }
        }
    }

    /// Asks node `n` (if it runs the primary) to hand over to the other node.
    pub fn switchover(&mut self, n: usize) {
        if self.nodes[n].process == Process::Up && self.nodes[n].pg.running == Some(true) {
            self.note(format!("switchover {} -> {}", NAMES[n], NAMES[1 - n]));
            self.nodes[n].planner.switchover(NAMES[1 - n].into());
        }
    }

    /// Runs `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
            self.now += STEP;
        }
    }

    fn step(&mut self) {
        let now = self.now;
        for n in 0..2 {
            if self.nodes[n].vip_expires.is_some_and(|t| t <= now) {
                self.nodes[n].vip = false;
                self.nodes[n].vip_expires = None;
            }
        }
        while self.net.peek().is_some_and(|p| p.0.0 <= now) {
            let Some(Reverse((_, _, from, to, bytes))) = self.net.pop() else {
                break;
            };
            self.deliver(from, to, &bytes);
        }
        for n in 0..2 {
            if self.nodes[n].process == Process::Up {
                self.control(n);
                if self.nodes[n].next_look <= now {
                    self.look(n);
                }
            }
        }
        self.replicate();
        self.client();
        if self.nodes.iter().filter(|x| x.vip).count() > 1 {
            self.violations
                .push(format!("{now:?}: both nodes hold the write VIP"));
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let Ok(msg) = wire::decode(bytes, &self.key) else {
            panic!("own message did not decode");
        };
        if to == WITNESS {
            return self.witness_receive(from, msg);
        }
        if self.nodes[to].process != Process::Up {
            return;
        }
        let (via, peer) = if from == WITNESS {
            (Via::Witness, None)
        } else {
            (Via::Link(0), Some(0))
        };
        let unix = self.unix_ms();
        let now = self.now;
        let _ = self.nodes[to].member.receive(now, unix, via, peer, &msg);
    }

    fn witness_receive(&mut self, from: usize, msg: Message) {
        if !self.witness.up || self.witness.guard.admit(&msg, self.unix_ms()).is_err() {
            return;
        }
        let now = self.now;
        let term = self.witness.core.max_term();
        match msg.body {
            Body::RecordWrite { request, record } => {
                let _ = self
                    .witness
                    .core
                    .write_record(now, &msg.sender, msg.term, record);
                if let Some(record) = self.witness.core.record().cloned() {
                    self.witness_send(from, term, Body::Record { request, record });
                }
            }
            Body::RecordQuery { request } => {
                if let Some(record) = self.witness.core.record().cloned() {
                    self.witness_send(from, term, Body::Record { request, record });
                }
            }
            Body::LeaseRequest {
                request,
                duration_ms,
            } => {
                let (answer, _) = self.witness.core.request(
                    now,
                    &msg.sender,
                    msg.term,
                    Duration::from_millis(u64::from(duration_ms)),
                );
                if let Some(record) = self.witness.core.record().cloned() {
                    self.witness_send(from, term, Body::Record { request: 0, record });
                }
                let (term, body) = (answer.term(), answer.body(request));
                self.witness_send(from, term, body);
            }
            _ => {}
        }
    }

    fn witness_send(&mut self, to: usize, term: u64, body: Body) {
        self.witness.seq += 1;
        let msg = Message {
            sender: "witness".into(),
            boot: self.witness.boot,
            seq: self.witness.seq,
            sent_ms: self.unix_ms(),
            term,
            body,
        };
        let bytes = wire::encode(&msg, &self.key);
        self.send(WITNESS, to, bytes);
    }

    /// What node `n`'s heartbeat says of its database.
    fn db_state(&self, n: usize) -> DbState {
        let pg = &self.nodes[n].pg;
        let role = match pg.running {
            Some(true) => Role::Primary,
            Some(false) => Role::Replica,
            None if pg.system != 0 => Role::Stopped,
            None => Role::Unknown,
        };
        DbState {
            role: role.code(),
            clean_stop: pg.running.is_none() && pg.clean,
            listen: "10.0.0.1:5432".parse().expect("addr"),
            system_id: pg.system,
            timeline: pg.timeline,
            lsn: pg.wal.len() as u64,
        }
    }

    /// The control loop's part: heartbeats, the verdict, record writes, the write VIP.
    fn control(&mut self, n: usize) {
        let now = self.now;
        let unix = self.unix_ms();
        let state = self.db_state(n);
        let node = &mut self.nodes[n];
        node.member.set_database(Some(state));
        let report = InstanceReport {
            vrid: DATABASE,
            master: node.master,
            wants: node.wants && !node.member.peer_master(DATABASE),
            priority: 100,
        };
        node.member.tick(now, unix, &[report], true);
        let verdict = node.member.verdict(now, db_local(node.master));
        node.may_lead = verdict.allowed();
        if let Some(r) = node.record_write.clone()
            && node.member.record().map(from_wire).as_ref() != Some(&r)
            && node
                .last_write
                .is_none_or(|t| now.saturating_since(t) >= Duration::from_millis(200))
            && node.member.write_record(now, unix, to_wire(&r))
        {
            node.last_write = Some(now);
        }
        let hold = node.writable && verdict.allowed();
        if hold != node.vip {
            node.vip = hold;
            node.vip_expires = None;
        }
        let mut out = Vec::new();
        while let Some(t) = node.member.poll_transmit() {
            out.push((t.via, wire::encode(&t.msg, &self.key)));
        }
        while node.member.poll_event().is_some() {}
        for (via, bytes) in out {
            match via {
                Via::Link(_) => self.send(n, 1 - n, bytes),
                Via::Witness => self.send(n, WITNESS, bytes),
            }
        }
    }

    fn server(&self, n: usize) -> Server {
        let pg = &self.nodes[n].pg;
        match pg.running {
            None if self.now < pg.dying_until => Server::Starting,
            None => Server::Stopped,
            Some(_) if self.now < pg.ready_at => Server::Starting,
            Some(true) => {
                let o = &self.nodes[1 - n];
                let streaming = self.streams(1 - n, n);
                Server::Primary(PrimaryState {
                    timeline: pg.timeline,
                    lsn: pg.wal.len() as u64,
                    sync_names: pg.sync_names.clone(),
                    followers: if o.pg.running == Some(false) && o.pg.upstream == Some(n) {
                        vec![Follower {
                            name: NAMES[1 - n].into(),
                            streaming,
                            sync: streaming && pg.sync_names.iter().any(|s| s == NAMES[1 - n]),
                            flush: o.pg.wal.len() as u64,
                        }]
                    } else {
                        Vec::new()
                    },
                    slots: vec![slot_name(NAMES[1 - n])],
                })
            }
            Some(false) => Server::Replica(ReplicaState {
                timeline: pg.timeline,
                received: pg.wal.len() as u64,
                replayed: pg.wal.len() as u64,
                upstream: pg.upstream.map(|u| NAMES[u].to_string()),
                streaming: pg.upstream.is_some_and(|u| self.streams(n, u)),
            }),
        }
    }

    /// Whether standby `r` streams from `u` now: both up, `u` a primary, reachable, and
    /// `r`'s WAL a prefix of `u`'s.
    fn streams(&self, r: usize, u: usize) -> bool {
        let (rn, un) = (&self.nodes[r], &self.nodes[u]);
        rn.process == Process::Up
            && un.process == Process::Up
            && self.now >= rn.pg.ready_at
            && self.now >= un.pg.ready_at
            && rn.pg.running == Some(false)
            && rn.pg.upstream == Some(u)
            && un.pg.running == Some(true)
            && !self.cut.contains(&(r, u))
            && !self.cut.contains(&(u, r))
            && prefix(&rn.pg.wal, &un.pg.wal)
    }

    /// The agent's look: facts, the planner, the action.
    fn look(&mut self, n: usize) {
        let now = self.now;
        self.nodes[n].next_look = now + LOOK;
        if let Some((r, until)) = self.nodes[n].awaiting.clone() {
            let done = self.nodes[n].member.record().map(from_wire).as_ref() == Some(&r);
            if !done && now < until && self.nodes[n].may_lead {
                return;
            }
            self.nodes[n].awaiting = None;
            self.nodes[n].record_write = None;
        }
        let server = self.server(n);
        let node = &self.nodes[n];
        let leadership = Leadership {
            may_lead: node.may_lead,
            why_not: String::new(),
            lease: node.member.lease().is_some_and(|l| l.valid(now)),
            term: node.member.lease().map_or(0, |l| l.term()),
            frozen: false,
        };
        let peer = PeerDb {
            name: NAMES[1 - n].into(),
            alive: node.member.liveness().peers()[0].alive(),
            report: node.member.peer_database(0).map(|d| Report {
                role: Role::from_code(d.role).unwrap_or_default(),
                listen: d.listen,
                system_id: d.system_id,
                timeline: d.timeline,
                lsn: d.lsn,
                clean_stop: d.clean_stop,
            }),
        };
        let data = if node.pg.system == 0 {
            Data::Empty
        } else {
            Data::Cluster {
                system_id: node.pg.system,
            }
        };
        let record = node.member.record().map(from_wire);
        let peers = [peer];
        let facts = Facts {
            now,
            leadership: &leadership,
            data: &data,
            server: &server,
            peers: &peers,
            authority: true,
            record: record.as_ref(),
        };
        let why_not = node.member.verdict(now, db_local(node.master));
        let plan = self.nodes[n].planner.next(&facts);
        if let Step::Wait(w) = &plan.step
            && self.nodes[n].last_wait.as_deref() != Some(w)
        {
            let w = w.clone();
            self.nodes[n].last_wait = Some(w.clone());
            let holder = self.witness.core.lease(now).map(|g| g.holder.clone());
            self.note(format!(
                "{} waits: {w} ({why_not:?}; wants {} master {}; peer wants {} master {}; lease at witness {holder:?})",
                NAMES[n], plan.wants, plan.master, self.nodes[1 - n].wants, self.nodes[1 - n].master
            ));
        }
        let unix = self.unix_ms();
        let node = &mut self.nodes[n];
        if plan.needs_record
            && node
                .last_query
                .is_none_or(|t| now.saturating_since(t) >= Duration::from_secs(1))
        {
            node.last_query = Some(now);
            node.member.query_record(unix);
        }
        node.master = plan.master;
        node.wants = plan.wants;
        node.writable = matches!(server, Server::Primary(_)) && leadership.may_lead;
        if let Step::Act(a) = plan.step {
            self.act(n, a);
        }
    }

    fn act(&mut self, n: usize, a: Action) {
        let now = self.now;
        self.note(format!("{}: {a:?}", NAMES[n]));
        let other = 1 - n;
        match a {
            Action::Initdb => {
                let system = self.rng.next_u64() | 1;
                let pg = &mut self.nodes[n].pg;
                *pg = ModelPg {
                    system,
                    running: Some(true),
                    timeline: 1,
                    ..ModelPg::default()
                };
                self.nodes[n].next_look = now + Duration::from_millis(500);
            }
            Action::Clone { from } | Action::Reclone { from } => {
                let f = NAMES.iter().position(|x| *x == from).unwrap_or(other);
                if self.nodes[f].pg.running == Some(true) && self.nodes[f].process == Process::Up {
                    let src = self.nodes[f].pg.clone();
                    let pg = &mut self.nodes[n].pg;
                    pg.system = src.system;
                    pg.wal = src.wal;
                    pg.timeline = src.timeline;
                    pg.running = None;
                    pg.clean = true;
                    self.nodes[n].next_look = now + Duration::from_millis(300);
                } else {
                    self.nodes[n].planner.failed(&Action::Clone { from });
                }
            }
            Action::Start {
                primary,
                upstream,
                sync_names,
            } => {
                if primary {
                    self.became_primary(n, "restart in place");
                }
                let recovery = Duration::from_millis(self.rng.range(50, 1500));
                let pg = &mut self.nodes[n].pg;
                pg.running = Some(primary);
                pg.ready_at = now + recovery;
                pg.sync_names = sync_names;
                pg.upstream = upstream.and_then(|u| NAMES.iter().position(|x| *x == u));
                pg.clean = false;
            }
            Action::Follow { upstream } => {
                self.nodes[n].pg.upstream = NAMES.iter().position(|x| *x == upstream);
            }
            Action::Fence => {
                let node = &mut self.nodes[n];
                node.pg.running = None;
                node.pg.clean = false;
                node.pending.clear();
            }
            Action::Stop => {
                // A fast shutdown sends the rest of the WAL to streaming standbys first.
                if self.streams(other, n) {
                    let wal = self.nodes[n].pg.wal.clone();
                    self.nodes[other].pg.wal = wal;
                }
                let node = &mut self.nodes[n];
                node.pg.running = None;
                node.pg.clean = true;
                node.pending.clear();
            }
            Action::Promote { sync_names } => {
                self.became_primary(n, "promotion");
                let seen = self.nodes[other].pg.timeline;
                let pg = &mut self.nodes[n].pg;
                pg.running = Some(true);
                pg.timeline = pg.timeline.max(seen) + 1;
                pg.sync_names = sync_names;
                pg.upstream = None;
                self.promotions += 1;
            }
            Action::SetSync(names) => self.nodes[n].pg.sync_names = names,
            Action::Record(r) => {
                self.nodes[n].record_write = Some(r.clone());
                self.nodes[n].awaiting = Some((r, now + Duration::from_secs(2)));
            }
            Action::Slots { .. } => {}
            Action::Rewind { from } => {
                let f = NAMES.iter().position(|x| *x == from).unwrap_or(other);
                if self.nodes[f].process == Process::Up && self.nodes[f].pg.running.is_some() {
                    let src = self.nodes[f].pg.clone();
                    let pg = &mut self.nodes[n].pg;
                    let common = pg
                        .wal
                        .iter()
                        .zip(&src.wal)
                        .take_while(|(a, b)| a == b)
                        .count();
                    pg.wal.truncate(common);
                    pg.timeline = src.timeline;
                    pg.running = None;
                    self.nodes[n].next_look = now + Duration::from_millis(300);
                } else {
                    self.nodes[n].planner.not_tried(&Action::Rewind { from });
                }
            }
        }
    }

    /// Node `n` becomes writable: it must hold every acknowledged commit.
    fn became_primary(&mut self, n: usize, how: &str) {
        if self.mode == Mode::Off {
            return;
        }
        let have: BTreeSet<u64> = self.nodes[n].pg.wal.iter().map(|e| e.1).collect();
        let lost: Vec<u64> = self
            .acked
            .iter()
            .filter(|id| !have.contains(id))
            .copied()
            .collect();
        if !lost.is_empty() {
            self.violations.push(format!(
                "{:?}: {} became primary by {how} without {} acknowledged commits (first {})",
                self.now,
                NAMES[n],
                lost.len(),
                lost[0]
            ));
        }
    }

    /// Streaming: a standby receives some of its primary's newer WAL each step.
    fn replicate(&mut self) {
        for r in 0..2 {
            let Some(u) = self.nodes[r].pg.upstream else {
                continue;
            };
            if !self.streams(r, u) {
                continue;
            }
            let have = self.nodes[r].pg.wal.len();
            let upto = (have + self.rng.range(0, 3) as usize).min(self.nodes[u].pg.wal.len());
            let more = self.nodes[u].pg.wal[have..upto].to_vec();
            let tl = self.nodes[u].pg.timeline;
            let pg = &mut self.nodes[r].pg;
            pg.wal.extend(more);
            pg.timeline = pg.timeline.max(tl);
        }
    }

    /// The client: a commit every step through the write VIP; acknowledgements as
    /// synchronous replication allows.
    fn client(&mut self) {
        if let Some(p) = self.serving() {
            let id = self.next_id;
            self.next_id += 1;
            let tl = self.nodes[p].pg.timeline;
            self.nodes[p].pg.wal.push((tl, id));
            let at = self.nodes[p].pg.wal.len() - 1;
            self.nodes[p].pending.push((id, at));
        }
        for p in 0..2 {
            if self.nodes[p].process != Process::Up || self.nodes[p].pg.running != Some(true) {
                continue;
            }
            let names = self.nodes[p].pg.sync_names.clone();
            let o = 1 - p;
            let standby_has = |at: usize, sim: &DbSim| {
                names.iter().any(|s| s == NAMES[o])
                    && sim.nodes[o].pg.wal.len() > at
                    && sim.nodes[o].pg.wal[..=at] == sim.nodes[p].pg.wal[..=at]
            };
            let mut still = Vec::new();
            for (id, at) in std::mem::take(&mut self.nodes[p].pending) {
                if names.is_empty() || standby_has(at, self) {
                    self.acked.push(id);
                } else {
                    still.push((id, at));
                }
            }
            self.nodes[p].pending = still;
        }
    }
}

/// The database resource as the cluster judges it (every node alike: names break ties).
fn db_local(master: bool) -> Local {
    Local {
        vrid: DATABASE,
        priority: 100,
        master,
        business_up: true,
        lease_valid: false,
    }
}

fn to_wire(r: &Record) -> DbRecord {
    DbRecord {
        system_id: r.system_id,
        primary: r.primary.clone(),
        standby: r.standby.clone().unwrap_or_default(),
        term: r.term,
    }
}

fn from_wire(r: &DbRecord) -> Record {
    Record {
        system_id: r.system_id,
        primary: r.primary.clone(),
        standby: (!r.standby.is_empty()).then(|| r.standby.clone()),
        term: r.term,
    }
}
