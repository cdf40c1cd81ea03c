//! One node of the cluster: everything the node decides, with no sockets and no clock.
//!
//! A [`Member`] owns the node's [`Liveness`], [`Votes`], witness [`LeaseClient`] and replay
//! guards. The shell (the daemon, or the simulator) feeds it the time, decoded messages and the
//! node's VRRP instances, sends what [`Member::poll_transmit`] returns, and applies
//! [`Member::verdict`] as each instance's veto. Both shells run this one implementation, so the
//! simulator's thousands of schedules test the daemon's exact logic.

use std::collections::VecDeque;
use std::time::Duration;

use duet_time::Instant;

use crate::lease::LeaseClient;
use crate::liveness::{Liveness, LivenessEvent};
use crate::quorum::{self, Ballot, Local, Rules, TwoNodePolicy, Verdict};
use crate::votes::{Votes, may_grant};
use crate::wire::{
    Body, DbRecord, DbState, Echo, Grant, Heartbeat, InstanceReport, MAX_ECHOES, Maintenance,
    Message, ReplayGuard,
};

/// A view arriving in pieces: its hash, and each piece once here.
type Pieces = (u64, Vec<Option<Vec<u8>>>);

/// Heartbeats remembered per link to time their echoes (a peer echoes within a few intervals).
const SENT_KEPT: usize = 8;

/// What a member is configured with.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// This node's name (carried in every message).
    pub name: String,
    /// One key per peer (e.g. its address on the first link), in a fixed order: the shell
    /// names peers by their index in this list.
    pub peers: Vec<String>,
    /// Heartbeat links.
    pub links: usize,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Missed heartbeats before a link counts as silent.
    pub misses: u32,
    /// The lease length, when a lease authority runs (the witness, or etcd).
    pub lease: Option<Duration>,
    /// The lease alone decides (etcd): no votes are asked or given.
    pub lease_decides: bool,
    /// `node.vip_lifetime`: votes and leases count only while they outlast it.
    pub vip_lifetime: Duration,
    /// Two nodes without a witness.
    pub policy: TwoNodePolicy,
    /// Replay guards refuse messages whose wall-clock stamp is further off than this.
    pub clock_window_ms: u64,
}

/// Where a message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Heartbeat link `n` (a transmit goes to every peer on it).
    Link(usize),
    /// The lease authority: the witness, or (with [`MemberConfig::lease_decides`]) the shell
    /// that speaks to etcd on the member's behalf.
    Witness,
}

/// A message for the shell to encode and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub via: Via,
    /// What.
    pub msg: Message,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link or a peer changed (peers named by their key).
    Liveness(LivenessEvent),
    /// Peer `peer` (index) introduced itself as `name`.
    PeerNamed {
        /// Index in [`MemberConfig::peers`].
        peer: usize,
        /// Its node name.
        name: String,
    },
    /// This node started voting for a peer.
    VotingFor(String),
    /// A peer's vote for this node arrived (none counted before).
    VotedBy(String),
    /// The witness granted a lease (none valid before).
    LeaseGranted {
        /// Its term.
        term: u64,
    },
    /// The witness refused a lease.
    LeaseRefused {
        /// Who holds it.
        holder: String,
    },
    /// The lease authority cannot grant anyone a lease (with why), or can again (`None`).
    /// Emitted on change only.
    AuthorityProblem(Option<String>),
    /// The lease authority's database record changed (as it told).
    Record(DbRecord),
}

/// One node's cluster logic.
#[derive(Debug)]
pub struct Member {
    cfg: MemberConfig,
    rules: Rules,
    liveness: Liveness,
    lease: Option<LeaseClient>,
    /// Node-level: every instance of a node follows one decision.
    votes: Votes,
    /// One guard per link (a heartbeat names its link, so one captured on a link and replayed
    /// on another is refused), one for the witness.
    guards: Vec<ReplayGuard>,
    witness_guard: ReplayGuard,
    /// Peer *i*'s name, learned from its first authenticated message.
    names: Vec<Option<String>>,
    /// When the lease authority last answered (granted or refused).
    authority_heard: Option<Instant>,
    /// What the lease authority last said it cannot do, while it says so.
    authority_problem: Option<String>,
    /// Per peer: the goodbye heard (its boot and counter); its earlier messages still in
    /// flight on another link must not bring it back.
    goodbyes: Vec<Option<(u64, u64)>>,
    /// This node says goodbye in its heartbeats (it is stopping).
    leaving: bool,
    /// VRIDs a live peer stopped serving, for the shell to tell VRRP.
    stepped_down: VecDeque<u8>,
    /// What the last heartbeat said of each instance (vrid, master, wants).
    last_state: Vec<(u8, bool, bool)>,
    /// The first tick. A node does not remember the votes it gave before it (re)started, so
    /// for one promise's length it acts as if it had promised its vote: no MASTER, no grant,
    /// no lease (not with a coordinator, whose lease alone decides).
    started: Option<Instant>,
    /// This node's database, for its heartbeats.
    database: Option<DbState>,
    /// The maintenance setting this node knows, for its heartbeats.
    maintenance: Option<Maintenance>,
    /// What this node holds of each instance's services, for its heartbeats.
    services: Vec<(u8, u8)>,
    /// This node's cluster-wide config: its hash, and its view in pieces for peers whose hash
    /// differs.
    config: Option<(u64, Vec<Vec<u8>>)>,
    /// The next piece to send.
    config_next: usize,
    /// Per peer: the pieces of its view received so far.
    peer_parts: Vec<Option<Pieces>>,
    /// Per peer: its whole view, once received (hash, text).
    peer_views: Vec<Option<(u64, String)>>,
    /// The lease authority's database record, as it last told.
    record: Option<DbRecord>,
    /// The sequence number of the witness message that carried it.
    record_seq: u64,
    /// Per link, per peer: its latest heartbeat there (boot, seq, arrival), to echo.
    heard: Vec<Vec<Option<(u64, u64, Instant)>>>,
    /// Per link: this node's last heartbeats there (seq, sending), to time their echoes.
    sent: Vec<VecDeque<(u64, Instant)>>,
    boot: u64,
    seq: u64,
    next_beat: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Member {
    /// A member that has sent nothing; `boot` tells this run's messages from an earlier run's
    /// (pick it at random).
    pub fn new(cfg: MemberConfig, boot: u64) -> Member {
        let peers = cfg.peers.len();
        let liveness = Liveness::new(cfg.links, &cfg.peers, cfg.interval, cfg.misses);
        // The node ends its lease a little before its own count: covers clock-rate drift.
        let lease = cfg
            .lease
            .map(|l| LeaseClient::new(l, (l / 20).max(Duration::from_millis(20))));
        // Promises last as long as the witness lease, or twice the VIP lifetime (at least
        // 2 s): always longer than a frozen or killed node's VIP lives.
        let d = cfg
            .lease
            .unwrap_or((cfg.vip_lifetime * 2).max(Duration::from_secs(2)));
        let votes = Votes::new(peers, d, (d / 20).max(Duration::from_millis(20)));
        Member {
            rules: Rules {
                nodes: peers + 1,
                witness: cfg.lease.is_some() && !cfg.lease_decides,
                policy: cfg.policy,
                lease_decides: cfg.lease.is_some() && cfg.lease_decides,
            },
            liveness,
            lease,
            votes,
            guards: vec![ReplayGuard::new(cfg.clock_window_ms); cfg.links],
            witness_guard: ReplayGuard::new(cfg.clock_window_ms),
            names: vec![None; peers],
            authority_heard: None,
            authority_problem: None,
            goodbyes: vec![None; peers],
            leaving: false,
            stepped_down: VecDeque::new(),
            last_state: Vec::new(),
            started: None,
            database: None,
            maintenance: None,
            services: Vec::new(),
            config: None,
            config_next: 0,
            peer_parts: vec![None; peers],
            peer_views: vec![None; peers],
            record: None,
            record_seq: 0,
            heard: vec![vec![None; peers]; cfg.links],
            sent: vec![VecDeque::new(); cfg.links],
            boot,
            seq: 0,
            next_beat: Instant::ZERO,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        }
    }

    /// The earliest time [`Member::tick`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.next_beat),
            self.liveness.poll_timeout(),
            self.lease.as_ref().and_then(LeaseClient::poll_timeout),
            self.votes.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn message(&mut self, unix_ms: u64, term: u64, body: Body) -> Message {
        self.seq += 1;
        Message {
            sender: self.cfg.name.clone(),
            boot: self.boot,
            seq: self.seq,
            sent_ms: unix_ms,
            term,
            body,
        }
    }

    /// Runs timers and queues what is due: heartbeats on every link, a lease request or
    /// release. `reports` are this node's instances; `business_up` its business link.
    pub fn tick(
        &mut self,
        now: Instant,
        unix_ms: u64,
        reports: &[InstanceReport],
        business_up: bool,
    ) {
        self.liveness.handle_timeout(now);
        self.votes.handle_timeout(now);
        if let Some(l) = &mut self.lease {
            l.handle_timeout(now);
        }
        self.votes
            .expire_asks(now, self.cfg.interval * self.cfg.misses);
        self.take_liveness_events();
        let term = self.lease.as_ref().map_or(0, LeaseClient::term);
        let master = reports.iter().any(|r| r.master);
        let wants = reports.iter().any(|r| r.wants);
        self.started.get_or_insert(now);
        let promised = self.votes.promised_to(now).is_some() || self.restart_promise(now);
        let deferring = !master && self.outranked_by_a_waiting_peer(reports);
        let asking = (master || wants) && !promised && !deferring;
        // With an external coordinator nobody votes: the lease alone decides.
        let votes_count = !self.rules.lease_decides;
        if !asking || !votes_count {
            self.votes.stop_asking();
        }
        // A node that cannot act on its wish does not announce it, so a master does not yield
        // to it: one that promised its vote, one that lets a higher peer go first, or, with a
        // coordinator, one that cannot reach it (the master would give the lease up for
        // nobody, take it back, and flap).
        let owned: Vec<InstanceReport>;
        let reports = if (promised || deferring || !self.coordinator_reachable(now)) && wants {
            owned = reports
                .iter()
                .map(|r| InstanceReport { wants: false, ..*r })
                .collect();
            &owned[..]
        } else {
            reports
        };
        // A change of who serves is news: tell the peers now, not at the next beat.
        let state: Vec<(u8, bool, bool)> = reports
            .iter()
            .map(|r| (r.vrid, r.master, r.wants))
            .collect();
        if state != self.last_state {
            self.last_state = state;
            self.next_beat = self.next_beat.min(now);
        }
        let sent_beats = now >= self.next_beat;
        if sent_beats {
            self.next_beat = now + self.cfg.interval;
            let grant = if votes_count {
                self.decide_grant(now, reports, master, wants)
            } else {
                None
            };
            for n in 0..self.cfg.links {
                let ask = if asking && votes_count {
                    self.seq + 1
                } else {
                    0
                };
                if ask != 0 {
                    self.votes.asked(ask, now);
                }
                let hb = Heartbeat {
                    link: n as u8,
                    business_up,
                    leaving: self.leaving,
                    instances: reports.to_vec(),
                    ask,
                    grant: grant.clone(),
                    database: self.database.clone(),
                    maintenance: self.maintenance.clone(),
                    echo: self.echoes(now, n),
                    services: self.services.clone(),
                    config_hash: self.config.as_ref().map(|(h, _)| *h),
                };
                let msg = self.message(unix_ms, term, Body::Heartbeat(hb));
                let sent = &mut self.sent[n];
                if sent.len() == SENT_KEPT {
                    sent.pop_front();
                }
                sent.push_back((msg.seq, now));
                self.transmits.push_back(Transmit {
                    via: Via::Link(n),
                    msg,
                });
            }
        }
        if sent_beats {
            self.send_config_piece(unix_ms, term);
        }
        if let Some(l) = &mut self.lease {
            l.set_wanted(now, asking);
        }
        if let Some(r) = self.lease.as_mut().and_then(|l| l.poll_request(now)) {
            let msg = self.message(
                unix_ms,
                r.term,
                Body::LeaseRequest {
                    request: r.request,
                    duration_ms: r.duration.as_millis() as u32,
                },
            );
            self.transmits.push_back(Transmit {
                via: Via::Witness,
                msg,
            });
        }
    }

    /// The last heartbeat on every link before exiting, after the VIPs are gone (`reports`
    /// neither serve nor want to): peers count this node gone at once and are free of their
    /// promises, and the lease is released.
    pub fn goodbye(
        &mut self,
        now: Instant,
        unix_ms: u64,
        reports: &[InstanceReport],
        business_up: bool,
    ) {
        self.leaving = true;
        self.next_beat = now;
        self.tick(now, unix_ms, reports, business_up);
    }

    /// This node's vote for this beat: to the best-ranked asking peer, if it may vote.
    fn decide_grant(
        &mut self,
        now: Instant,
        reports: &[InstanceReport],
        master: bool,
        wants: bool,
    ) -> Option<Grant> {
        if self.restart_promise(now) {
            return None;
        }
        let promised = self.votes.promised_to(now);
        let best = (0..self.names.len())
            .filter(|&i| self.votes.ask_of(i).is_some())
            .max_by_key(|&i| self.rank(i))?;
        let outranks = self.rank(best) > Self::rank_of(reports, &self.cfg.name);
        if !may_grant(master, wants, outranks, promised, best) {
            return None;
        }
        let ask = self.votes.ask_of(best)?;
        let to = self.names[best].clone()?;
        if promised.is_none() {
            self.events.push_back(Event::VotingFor(to.clone()));
        }
        self.votes.promise(best, now);
        Some(Grant {
            to,
            ask,
            duration_ms: self.votes.duration().as_millis() as u32,
        })
    }

    /// Whether a live peer that outranks this node waits to take over. A backup then lets it
    /// go first: it neither asks for votes nor seeks the lease (holding the lease while
    /// deferring would block the peer for good).
    fn outranked_by_a_waiting_peer(&self, reports: &[InstanceReport]) -> bool {
        let mine = Self::rank_of(reports, &self.cfg.name);
        (0..self.names.len()).any(|i| {
            let p = &self.liveness.peers()[i];
            p.alive()
                && p.report
                    .as_ref()
                    .is_some_and(|r| r.instances.iter().any(|x| x.wants))
                && self.rank(i) > mine
        })
    }

    /// Whether this node may still be bound by a vote it gave before it (re)started.
    fn restart_promise(&self, now: Instant) -> bool {
        !self.rules.lease_decides && self.started.is_none_or(|t| now < t + self.votes.duration())
    }

    /// Without a coordinator, always; with one, whether it answered within a lease.
    fn coordinator_reachable(&self, now: Instant) -> bool {
        !self.rules.lease_decides
            || self
                .authority_heard
                .is_some_and(|t| now.saturating_since(t) < self.cfg.lease.unwrap_or_default())
    }

    /// A node's rank for tie-breaks: its highest instance priority, then its name.
    fn rank_of<'a>(reports: &[InstanceReport], name: &'a str) -> (u8, &'a str) {
        (reports.iter().map(|r| r.priority).max().unwrap_or(0), name)
    }

    /// Peer `i`'s rank, from its latest heartbeat.
    fn rank(&self, i: usize) -> (u8, &str) {
        let p = &self.liveness.peers()[i];
        let reports = p.report.as_ref().map_or(&[][..], |r| &r.instances[..]);
        Self::rank_of(reports, &p.display)
    }

    /// What a heartbeat on `link` echoes: every peer's latest heartbeat there, recent enough
    /// that its sender still remembers sending it.
    fn echoes(&self, now: Instant, link: usize) -> Vec<Echo> {
        let recent = self.cfg.interval * SENT_KEPT as u32 / 2;
        self.heard[link]
            .iter()
            .flatten()
            .filter(|(.., at)| now.saturating_since(*at) < recent)
            .map(|&(boot, seq, at)| Echo {
                boot,
                seq,
                held_us: now.saturating_since(at).as_micros().min(u32::MAX.into()) as u32,
            })
            .take(MAX_ECHOES)
            .collect()
    }

    /// Times the round trip of this node's heartbeats that `hb` (from peer `i`, on `link`)
    /// echoes.
    fn time_echoes(&mut self, now: Instant, i: usize, link: usize, hb: &Heartbeat) {
        for e in hb.echo.iter().filter(|e| e.boot == self.boot) {
            let Some(&(_, sent)) = self.sent[link].iter().find(|(seq, _)| *seq == e.seq) else {
                continue;
            };
            let held = Duration::from_micros(e.held_us.into());
            if let Some(rtt) = now.saturating_since(sent).checked_sub(held) {
                self.liveness.timed(&self.cfg.peers[i], link, rtt);
            }
        }
    }

    /// Takes in a decoded message that arrived on `via`, from peer index `peer` (the shell
    /// matches the source address; `None`: no configured peer). On refusal, returns why (a
    /// short label for counters and logs); the member's state is untouched then.
    pub fn receive(
        &mut self,
        now: Instant,
        unix_ms: u64,
        via: Via,
        peer: Option<usize>,
        msg: &Message,
    ) -> Result<(), &'static str> {
        // Everything that can refuse the message runs before the replay guard records it.
        match (via, &msg.body) {
            (Via::Link(n), Body::Heartbeat(hb)) => {
                if usize::from(hb.link) != n || n >= self.guards.len() {
                    return Err("link");
                }
                let i = peer.filter(|&i| i < self.names.len()).ok_or("peer")?;
                if self.names[i]
                    .as_ref()
                    .is_some_and(|name| *name != msg.sender)
                {
                    return Err("peer");
                }
                if self.goodbyes[i].is_some_and(|(boot, seq)| boot == msg.boot && msg.seq < seq) {
                    return Err("sent before its goodbye");
                }
            }
            (Via::Link(n), Body::ConfigChunk { .. }) => {
                // Only from a peer already named by its heartbeats.
                let i = peer.filter(|&i| i < self.names.len()).ok_or("peer")?;
                if n >= self.guards.len() || self.names[i].as_deref() != Some(&msg.sender) {
                    return Err("peer");
                }
            }
            (
                Via::Witness,
                Body::LeaseGranted { .. }
                | Body::LeaseRefused { .. }
                | Body::LeaseUnavailable { .. }
                | Body::Record { .. },
            ) if self.lease.is_some() => {}
            _ => return Err("unexpected"),
        }
        let guard = match via {
            Via::Link(n) => &mut self.guards[n],
            Via::Witness => &mut self.witness_guard,
        };
        guard.admit(msg, unix_ms).map_err(|e| e.label())?;
        match (via, &msg.body) {
            (
                Via::Link(_),
                Body::ConfigChunk {
                    hash,
                    index,
                    total,
                    data,
                },
            ) => {
                // Checked above.
                let i = peer.unwrap_or_default();
                self.config_piece(i, *hash, *index, *total, data);
                Ok(())
            }
            (Via::Link(n), Body::Heartbeat(hb)) => {
                // Checked above.
                let i = peer.unwrap_or_default();
                if self.names[i].is_none() {
                    self.names[i] = Some(msg.sender.clone());
                    self.liveness.set_display(&self.cfg.peers[i], &msg.sender);
                    self.events.push_back(Event::PeerNamed {
                        peer: i,
                        name: msg.sender.clone(),
                    });
                }
                self.goodbyes[i] = hb.leaving.then_some((msg.boot, msg.seq));
                // A live peer that served an instance and no longer does (its business link
                // died, it stops, it yields): VRRP need not wait out the master-down interval.
                if let Some(old) = self.liveness.peers()[i]
                    .report
                    .as_ref()
                    .filter(|_| self.liveness.peers()[i].alive())
                {
                    for r in old.instances.iter().filter(|r| r.master) {
                        let still = hb.instances.iter().any(|x| x.vrid == r.vrid && x.master);
                        if !still && !self.stepped_down.contains(&r.vrid) {
                            self.stepped_down.push_back(r.vrid);
                        }
                    }
                }
                self.liveness
                    .heard(now, &self.cfg.peers[i], n, msg.term, hb);
                self.heard[n][i] = Some((msg.boot, msg.seq, now));
                self.time_echoes(now, i, n, hb);
                let had = self.votes.count(now);
                if self.votes.heard(i, now, hb, &self.cfg.name) {
                    // A new ask: answer with the next pass rather than a whole interval later.
                    self.next_beat = now;
                }
                if had == 0 && self.votes.count(now) > 0 {
                    self.events.push_back(Event::VotedBy(msg.sender.clone()));
                }
                if let Some(lease) = &mut self.lease {
                    lease.observe_term(msg.term);
                }
                self.take_liveness_events();
                Ok(())
            }
            (
                Via::Witness,
                Body::LeaseGranted {
                    request,
                    duration_ms,
                },
            ) => {
                let d = Duration::from_millis(u64::from(*duration_ms));
                let was = self.lease.as_ref().is_some_and(|l| l.valid(now));
                self.lease_granted(now, *request, d, msg.term);
                let new = !was && self.lease.as_ref().is_some_and(|l| l.valid(now));
                // A new lease must not act on a record older than itself: the witness sends
                // the record just before each answer; if that one was lost or overtaken, the
                // record is unknown until the next answer brings it.
                if new && self.record_seq + 1 != msg.seq {
                    self.record = None;
                }
                Ok(())
            }
            (
                Via::Witness,
                Body::LeaseRefused {
                    request,
                    holder,
                    remaining_ms,
                },
            ) => {
                let d = Duration::from_millis(u64::from(*remaining_ms));
                self.lease_refused(now, *request, msg.term, d, holder);
                Ok(())
            }
            (Via::Witness, Body::LeaseUnavailable { request, reason }) => {
                self.lease_unavailable(now, *request, msg.term, reason);
                Ok(())
            }
            (Via::Witness, Body::Record { record, .. }) => {
                self.record_seq = msg.seq;
                self.record_heard(record.clone());
                Ok(())
            }
            _ => Err("unexpected"),
        }
    }

    /// The lease authority granted `request` for `duration` (counted from the request's
    /// sending) under `term`.
    pub fn lease_granted(&mut self, now: Instant, request: u64, duration: Duration, term: u64) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        self.authority_heard = Some(now);
        let was = lease.valid(now);
        lease.granted(request, duration, term);
        if !was && lease.valid(now) {
            self.events.push_back(Event::LeaseGranted { term });
        }
        self.set_authority_problem(None);
    }

    /// The lease authority cannot grant any lease now, for `reason`: like a refusal without a
    /// holder (the node asks again at its usual pace), and a degraded cluster in the status.
    pub fn lease_unavailable(&mut self, now: Instant, request: u64, term: u64, reason: &str) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        self.authority_heard = Some(now);
        lease.refused(now, request, term, Duration::ZERO);
        self.set_authority_problem(Some(reason.to_string()));
    }

    /// The lease authority's database record as it told (the witness after each answer, or
    /// the etcd task).
    pub fn record_heard(&mut self, record: DbRecord) {
        if self.record.as_ref() != Some(&record) {
            self.events.push_back(Event::Record(record.clone()));
            self.record = Some(record);
        }
    }

    /// The lease authority's database record as it told, where it may have none (etcd
    /// answers every request with the record it read, or with none).
    pub fn record_told(&mut self, record: Option<DbRecord>) {
        match record {
            Some(r) => self.record_heard(r),
            None => self.record = None,
        }
    }

    /// The lease authority's database record, as last heard.
    pub fn record(&self) -> Option<&DbRecord> {
        self.record.as_ref()
    }

    /// Asks the lease authority to keep `record`, if this node holds the lease now (only the
    /// holder may write it; the authority checks the term too). Returns whether it was sent;
    /// the answer arrives as [`Member::record`].
    pub fn write_record(&mut self, now: Instant, unix_ms: u64, record: DbRecord) -> bool {
        let Some(term) = self
            .lease
            .as_ref()
            .filter(|l| l.valid(now))
            .map(LeaseClient::term)
        else {
            return false;
        };
        let request = self.seq + 1;
        let msg = self.message(unix_ms, term, Body::RecordWrite { request, record });
        self.transmits.push_back(Transmit {
            via: Via::Witness,
            msg,
        });
        true
    }

    /// Asks the lease authority for its database record (any node may; the answer arrives as
    /// [`Member::record`]).
    pub fn query_record(&mut self, unix_ms: u64) {
        if self.lease.is_none() {
            return;
        }
        let request = self.seq + 1;
        let term = self.lease.as_ref().map_or(0, LeaseClient::term);
        let msg = self.message(unix_ms, term, Body::RecordQuery { request });
        self.transmits.push_back(Transmit {
            via: Via::Witness,
            msg,
        });
    }

    /// What this node's heartbeats say of its database from now on.
    pub fn set_database(&mut self, database: Option<DbState>) {
        self.database = database;
    }

    /// What this node's heartbeats say it holds of each instance's services from now on:
    /// (vrid, holding code). A change is sent at once, not at the next beat.
    pub fn set_services(&mut self, services: Vec<(u8, u8)>) {
        if services != self.services {
            self.services = services;
            self.next_beat = Instant::ZERO;
        }
    }

    /// This node's cluster-wide config view (`duet_config::drift::cluster_view`) and its hash:
    /// the hash rides in every heartbeat, the view goes in pieces to peers whose hash differs.
    pub fn set_config(&mut self, view: &str, hash: u64) {
        let pieces = view
            .as_bytes()
            .chunks(crate::wire::MAX_CHUNK)
            .map(<[u8]>::to_vec)
            .collect();
        self.config = Some((hash, pieces));
        self.config_next = 0;
    }

    /// Peer `i`'s cluster-wide config: the hash its heartbeats carry, and its view once
    /// received whole (it comes while the hashes differ).
    pub fn peer_config(&self, i: usize) -> (Option<u64>, Option<&(u64, String)>) {
        let hash = self
            .liveness
            .peers()
            .get(i)
            .and_then(|p| p.report.as_ref())
            .and_then(|r| r.config_hash);
        (hash, self.peer_views.get(i).and_then(Option::as_ref))
    }

    /// One piece of this node's view per beat, on the first link, while a live peer's
    /// config hash differs from this node's.
    fn send_config_piece(&mut self, unix_ms: u64, term: u64) {
        let Some((hash, pieces)) = &self.config else {
            return;
        };
        let differs = self.liveness.peers().iter().any(|p| {
            p.alive()
                && p.report
                    .as_ref()
                    .and_then(|r| r.config_hash)
                    .is_some_and(|h| h != *hash)
        });
        if !differs || pieces.is_empty() {
            return;
        }
        let index = self.config_next % pieces.len();
        let body = Body::ConfigChunk {
            hash: *hash,
            index: index as u16,
            total: pieces.len() as u16,
            data: pieces[index].clone(),
        };
        self.config_next = index + 1;
        let msg = self.message(unix_ms, term, body);
        self.transmits.push_back(Transmit {
            via: Via::Link(0),
            msg,
        });
    }

    /// Keeps piece `index` of peer `i`'s view; the whole view once every piece is here.
    fn config_piece(&mut self, i: usize, hash: u64, index: u16, total: u16, data: &[u8]) {
        let slot = &mut self.peer_parts[i];
        if slot
            .as_ref()
            .is_none_or(|(h, parts)| *h != hash || parts.len() != usize::from(total))
        {
            *slot = Some((hash, vec![None; usize::from(total)]));
        }
        let Some((_, parts)) = slot else { return };
        parts[usize::from(index)] = Some(data.to_vec());
        if parts.iter().all(Option::is_some) {
            let bytes: Vec<u8> = parts.iter().flatten().flatten().copied().collect();
            self.peer_views[i] = Some((hash, String::from_utf8_lossy(&bytes).into_owned()));
            *slot = None;
        }
    }

    /// What this node's heartbeats say of maintenance from now on.
    pub fn set_maintenance(&mut self, maintenance: Option<Maintenance>) {
        self.maintenance = maintenance;
    }

    /// The newest maintenance setting a live peer's heartbeat carries, if newer than
    /// `version`.
    pub fn newer_maintenance(&self, version: u64) -> Option<&Maintenance> {
        self.liveness
            .peers()
            .iter()
            .filter_map(|p| p.report.as_ref()?.maintenance.as_ref())
            .filter(|m| m.version > version)
            .max_by_key(|m| m.version)
    }

    /// Peer `i`'s database, from its latest heartbeat.
    pub fn peer_database(&self, i: usize) -> Option<&DbState> {
        self.liveness.peers()[i].report.as_ref()?.database.as_ref()
    }

    /// Why the lease authority cannot grant leases, as it last said, if it cannot.
    pub fn authority_problem(&self) -> Option<&str> {
        self.authority_problem.as_deref()
    }

    fn set_authority_problem(&mut self, problem: Option<String>) {
        if self.authority_problem != problem {
            self.authority_problem = problem.clone();
            self.events.push_back(Event::AuthorityProblem(problem));
        }
    }

    /// The lease authority refused `request`: `holder` holds it, for about `remaining`; `term`
    /// is the highest it knows.
    pub fn lease_refused(
        &mut self,
        now: Instant,
        request: u64,
        term: u64,
        remaining: Duration,
        holder: &str,
    ) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        self.authority_heard = Some(now);
        lease.refused(now, request, term, remaining);
        self.events.push_back(Event::LeaseRefused {
            holder: holder.to_string(),
        });
        self.set_authority_problem(None);
    }

    fn take_liveness_events(&mut self) {
        while let Some(e) = self.liveness.poll_event() {
            self.events.push_back(Event::Liveness(e));
        }
    }

    /// The verdict for one instance (`local.lease_valid` is filled in here). A vote or lease
    /// counts only while it outlasts the VIP's kernel lifetime: if this node died now, its
    /// VIP would be gone before the promise ends.
    pub fn verdict(&self, now: Instant, local: Local) -> Verdict {
        let horizon = now + self.cfg.vip_lifetime;
        let lease_valid = self.lease.as_ref().is_some_and(|l| l.valid(horizon));
        let ballot = Ballot {
            peer_votes: self.votes.count(horizon),
            promised_to: self
                .votes
                .promised_to(now)
                .map(|i| self.display(i).to_string())
                .or_else(|| {
                    self.restart_promise(now)
                        .then(|| "whichever peer it voted for before it started".to_string())
                }),
            voted_for: self.votes.last_given().is_some(),
            timeline: self.database.as_ref().map_or(0, |d| d.timeline),
        };
        quorum::verdict(
            self.rules,
            &self.liveness,
            &self.cfg.name,
            Local {
                lease_valid,
                ..local
            },
            &ballot,
        )
    }

    /// Whether a peer heard now reports MASTER for `vrid`.
    pub fn peer_master(&self, vrid: u8) -> bool {
        self.liveness.peers().iter().any(|p| {
            p.alive()
                && p.report
                    .as_ref()
                    .is_some_and(|r| r.instances.iter().any(|i| i.vrid == vrid && i.master))
        })
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next VRID a live peer stopped serving (heard in its heartbeat): the shell tells the
    /// instance (`duet_vrrp::Instance::master_left`), which takes over after its skew time if the
    /// verdict allows.
    pub fn poll_stepped_down(&mut self) -> Option<u8> {
        self.stepped_down.pop_front()
    }

    /// The next event worth a log line.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Peer `i`'s name, or its key until it has introduced itself.
    pub fn display(&self, i: usize) -> &str {
        self.names[i].as_deref().unwrap_or(&self.cfg.peers[i])
    }

    /// Peer `i`'s name, once it has introduced itself.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.names.get(i).and_then(|n| n.as_deref())
    }

    /// The name behind a peer key (as in liveness events).
    pub fn display_key(&self, key: &str) -> String {
        self.cfg
            .peers
            .iter()
            .position(|k| k == key)
            .map_or(key.to_string(), |i| self.display(i).to_string())
    }

    /// Links and peers.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// The witness lease, when a witness runs.
    pub fn lease(&self) -> Option<&LeaseClient> {
        self.lease.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &MemberConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn member(name: &str, peer: &str) -> Member {
        Member::new(
            MemberConfig {
                name: name.into(),
                peers: vec![peer.into()],
                links: 2,
                interval: Duration::from_millis(50),
                misses: 5,
                lease: None,
                lease_decides: false,
                vip_lifetime: Duration::from_secs(1),
                policy: TwoNodePolicy::Safe,
                clock_window_ms: 30_000,
            },
            7,
        )
    }

    fn report(master: bool, wants: bool) -> Vec<InstanceReport> {
        vec![InstanceReport {
            vrid: 51,
            master,
            wants,
            priority: 100,
        }]
    }

    const LOCAL: Local = Local {
        vrid: 51,
        priority: 100,
        master: false,
        business_up: true,
        lease_valid: false,
    };

    /// Delivers everything `from` queued to `to` (peer index 0), at `now`.
    fn exchange(from: &mut Member, to: &mut Member, now: Instant) {
        while let Some(t) = from.poll_transmit() {
            if let Via::Link(n) = t.via {
                to.receive(now, 1_000, Via::Link(n), Some(0), &t.msg)
                    .expect("admitted");
            }
        }
    }

    #[test]
    fn a_vote_travels_in_heartbeats_and_makes_a_majority() {
        let mut alpha = member("alpha", "b");
        let mut beta = member("beta", "a");
        // Both start idle. For one promise's length (2 s here) neither may be MASTER nor vote:
        // each may have promised its vote before it started.
        alpha.tick(ms(0), 1_000, &report(false, false), true);
        beta.tick(ms(0), 1_000, &report(false, false), true);
        let v = alpha.verdict(ms(1), LOCAL);
        assert!(
            matches!(&v, Verdict::Denied(w) if w.contains("before it started")),
            "{v:?}"
        );
        // After that, alpha wants MASTER and asks; beta hears the ask and votes at once.
        let t = ms(2_000);
        alpha.tick(t, 1_000, &report(false, true), true);
        beta.tick(t, 1_000, &report(false, false), true);
        exchange(&mut alpha, &mut beta, t + Duration::from_millis(1));
        exchange(&mut beta, &mut alpha, t + Duration::from_millis(1));
        assert_eq!(
            beta.poll_timeout(),
            Some(t + Duration::from_millis(1)),
            "answers the new ask at once"
        );
        beta.tick(
            t + Duration::from_millis(1),
            1_000,
            &report(false, false),
            true,
        );
        assert!(
            beta.poll_event()
                .into_iter()
                .chain(std::iter::from_fn(|| beta.poll_event()))
                .any(|e| e == Event::VotingFor("alpha".into()))
        );
        let t2 = t + Duration::from_millis(2);
        exchange(&mut beta, &mut alpha, t2);
        assert_eq!(alpha.verdict(t2, LOCAL), Verdict::Allowed);
        let v = beta.verdict(t2, LOCAL);
        assert!(
            matches!(&v, Verdict::Denied(w) if w.contains("promised its vote to alpha")),
            "{v:?}"
        );
    }

    #[test]
    fn heartbeats_echoed_back_time_each_links_round_trip() {
        let mut alpha = member("alpha", "b");
        let mut beta = Member::new(member("beta", "a").cfg, 8);
        let rtt = |m: &Member, link| m.liveness().peers()[0].rtt(link);
        // Alpha beats at 0; it reaches beta 3 ms later on link 0, 10 ms later on link 1.
        alpha.tick(ms(0), 1_000, &report(false, false), true);
        let sent: Vec<_> = std::iter::from_fn(|| alpha.poll_transmit()).collect();
        for (t, delay) in sent.iter().zip([3, 10]) {
            let Via::Link(n) = t.via else { panic!() };
            beta.receive(ms(delay), 1_000, t.via, Some(0), &t.msg)
                .expect("admitted");
            assert_eq!(rtt(&beta, n), None, "nothing of beta's own timed yet");
        }
        // Beta's next beat (at 20 ms) echoes them, having held them 17 and 10 ms; the echoes
        // take 3 and 10 ms back again.
        beta.tick(ms(20), 1_000, &report(false, false), true);
        let back: Vec<_> = std::iter::from_fn(|| beta.poll_transmit()).collect();
        for (t, delay) in back.iter().zip([3, 10]) {
            let Body::Heartbeat(hb) = &t.msg.body else {
                panic!()
            };
            assert_eq!(hb.echo.len(), 1);
            alpha
                .receive(ms(20 + delay), 1_000, t.via, Some(0), &t.msg)
                .expect("admitted");
        }
        assert_eq!(rtt(&alpha, 0), Some(Duration::from_millis(6)));
        assert_eq!(rtt(&alpha, 1), Some(Duration::from_millis(20)));
        // Beta echoed alpha's boot, not its own: beta timed nothing.
        assert_eq!((rtt(&beta, 0), rtt(&beta, 1)), (None, None));

        // The next round on link 0 takes 14 ms: the estimate moves an eighth of the way.
        alpha.tick(ms(50), 1_000, &report(false, false), true);
        let t = alpha.poll_transmit().unwrap();
        while alpha.poll_transmit().is_some() {}
        beta.receive(ms(57), 1_000, t.via, Some(0), &t.msg).unwrap();
        beta.tick(ms(70), 1_000, &report(false, false), true);
        let t = beta.poll_transmit().unwrap();
        alpha
            .receive(ms(77), 1_000, t.via, Some(0), &t.msg)
            .unwrap();
        assert_eq!(rtt(&alpha, 0), Some(Duration::from_millis(7)));

        // A link that falls silent forgets its round trip; the other keeps its own.
        alpha.tick(ms(300), 1_000, &report(false, false), true);
        assert_eq!(rtt(&alpha, 0), Some(Duration::from_millis(7)));
        assert_eq!(rtt(&alpha, 1), None, "silent since 30 ms");
    }

    /// `from` ticks at `t` and everything it sends reaches `to`; returns the config pieces.
    fn beat_to(from: &mut Member, to: &mut Member, t: Instant, unix_ms: u64) -> usize {
        from.tick(t, unix_ms, &report(false, false), true);
        let mut pieces = 0;
        while let Some(x) = from.poll_transmit() {
            pieces += usize::from(matches!(x.msg.body, Body::ConfigChunk { .. }));
            let Via::Link(n) = x.via else { continue };
            to.receive(t, unix_ms, Via::Link(n), Some(0), &x.msg)
                .expect("admitted");
        }
        pieces
    }

    #[test]
    fn differing_configs_travel_in_pieces_and_equal_ones_do_not_travel() {
        let mut alpha = member("alpha", "b");
        let mut beta = Member::new(member("beta", "a").cfg, 8);
        let long: String = (0..300).map(|i| format!("backend_{i} = true\n")).collect();
        assert!(long.len() > 2 * crate::wire::MAX_CHUNK);
        alpha.set_config(&long, 1);
        beta.set_config("short = true\n", 2);
        let mut pieces = 0;
        for beat in 0..12u64 {
            let t = ms(beat * 50);
            pieces += beat_to(&mut alpha, &mut beta, t, 1_000 + beat);
            pieces += beat_to(&mut beta, &mut alpha, t, 1_000 + beat);
        }
        let (hash, view) = beta.peer_config(0);
        assert_eq!(hash, Some(1));
        assert_eq!(
            view,
            Some(&(1, long.clone())),
            "alpha's whole view, in order"
        );
        assert_eq!(
            alpha.peer_config(0).1,
            Some(&(2, "short = true\n".to_string()))
        );
        // One piece per beat per node while they differ.
        assert!(pieces <= 24, "{pieces}");

        // The same config: no pieces at all.
        beta.set_config(&long, 1);
        let mut after = 0;
        for beat in 12..20u64 {
            let t = ms(beat * 50);
            after += beat_to(&mut alpha, &mut beta, t, 1_000 + beat);
            after += beat_to(&mut beta, &mut alpha, t, 1_000 + beat);
        }
        // (The first beat after the change may still see the old hash.)
        assert!(after <= 2, "{after} pieces sent between equal configs");
    }

    #[test]
    fn a_witness_that_cannot_grant_is_a_problem_reported_once_until_it_grants() {
        let mut alpha = Member::new(
            MemberConfig {
                lease: Some(Duration::from_secs(2)),
                ..member("alpha", "b").cfg
            },
            7,
        );
        let events = |m: &mut Member| std::iter::from_fn(|| m.poll_event()).collect::<Vec<_>>();
        let why = "cannot write its state file: Read-only file system";
        for i in 0..3 {
            alpha.lease_unavailable(ms(10 + i), 1, 0, why);
        }
        assert_eq!(alpha.authority_problem(), Some(why));
        assert_eq!(
            events(&mut alpha),
            [Event::AuthorityProblem(Some(why.into()))],
            "reported once, not per answer"
        );
        assert!(!alpha.lease().unwrap().valid(ms(20)));
        // A later answer, even a refusal, means the witness works again.
        alpha.lease_refused(ms(30), 2, 0, Duration::ZERO, "beta");
        assert_eq!(alpha.authority_problem(), None);
        assert!(events(&mut alpha).contains(&Event::AuthorityProblem(None)));
    }

    #[test]
    fn refused_messages_say_why_and_change_nothing() {
        let mut alpha = member("alpha", "b");
        let mut beta = member("beta", "a");
        beta.tick(ms(0), 1_000, &report(false, false), true);
        let t = beta.poll_transmit().expect("a heartbeat");
        // From an address that is no configured peer.
        assert_eq!(
            alpha.receive(ms(1), 1_000, Via::Link(0), None, &t.msg),
            Err("peer")
        );
        // On the wrong link.
        assert_eq!(
            alpha.receive(ms(1), 1_000, Via::Link(1), Some(0), &t.msg),
            Err("link")
        );
        assert!(!alpha.liveness().peers()[0].alive());
        alpha
            .receive(ms(1), 1_000, Via::Link(0), Some(0), &t.msg)
            .expect("admitted");
        assert!(alpha.liveness().peers()[0].alive());
        assert_eq!(alpha.name(0), Some("beta"));
        // The same message again is a replay.
        assert!(
            alpha
                .receive(ms(2), 1_000, Via::Link(0), Some(0), &t.msg)
                .is_err()
        );
        // Another node claiming the same address.
        let mut gamma = member("gamma", "a");
        gamma.tick(ms(0), 1_000, &report(false, false), true);
        let g = gamma.poll_transmit().expect("a heartbeat");
        assert_eq!(
            alpha.receive(ms(3), 1_000, Via::Link(0), Some(0), &g.msg),
            Err("peer")
        );
        // A lease answer without a witness configured.
        let msg = Message {
            body: Body::LeaseRefused {
                request: 1,
                holder: "x".into(),
                remaining_ms: 10,
            },
            ..g.msg
        };
        assert_eq!(
            alpha.receive(ms(3), 1_000, Via::Witness, None, &msg),
            Err("unexpected")
        );
    }
}
