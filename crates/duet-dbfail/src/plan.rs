//! The planner: from [`Facts`] to the next [`Step`], with the little it must remember
//! (crashes, the last primary position heard, actions whose effect it awaits).

use std::time::Duration;

use duet_time::Instant;

use crate::facts::{
    Data, Facts, Lsn, Mode, PrimaryState, Record, ReplicaState, Report, Role, Server,
};

/// What a planner is configured with.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// This node's name (its standby `application_name` and slot).
    pub name: String,
    /// `database.synchronous`.
    pub mode: Mode,
    /// `database.maximum_lag_on_failover`, in bytes.
    pub max_lag: Lsn,
    /// A primary whose server crashed this many times within `crash_window` gives up
    /// leadership instead of restarting in place again.
    pub max_crashes: u32,
    /// See `max_crashes`.
    pub crash_window: Duration,
}

/// One thing for the shell to do. Each is idempotent or checked against fresh facts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the cluster in the empty data directory (initdb with checksums, roles and
    /// passwords, `pg_hba.conf`).
    Initdb,
    /// Clone the empty data directory from `from` (pg_basebackup through this node's slot).
    Clone {
        /// The primary's node name.
        from: String,
    },
    /// Start the server: as a primary (restart in place after a crash, or right after
    /// bootstrap), or as a standby of `upstream` (none: a standby with nobody to follow).
    Start {
        /// As a primary.
        primary: bool,
        /// The node to stream from.
        upstream: Option<String>,
        /// `synchronous_standby_names` to start with.
        sync_names: Vec<String>,
    },
    /// Make the running standby stream from another node.
    Follow {
        /// The primary's node name.
        upstream: String,
    },
    /// Stop the primary at once (immediate shutdown): this node may no longer write.
    Fence,
    /// Promote the standby (`pg_promote`, which waits for the replay), with
    /// `synchronous_standby_names` set first.
    Promote {
        /// What the new primary waits for.
        sync_names: Vec<String>,
    },
    /// Change `synchronous_standby_names` on the running primary.
    SetSync(Vec<String>),
    /// Write the record at the lease authority (only the lease holder can).
    Record(Record),
    /// Create the replication slots of peers that lack one; drop slots of unknown nodes.
    Slots {
        /// Slot names to create.
        create: Vec<String>,
        /// Slot names to drop.
        drop: Vec<String>,
    },
    /// Stop the server if it runs, and rewind the data onto `from`'s timeline (pg_rewind).
    Rewind {
        /// The primary's node name.
        from: String,
    },
    /// Move the data directory aside and clone it again from `from` (rewind was impossible).
    Reclone {
        /// The primary's node name.
        from: String,
    },
    /// Stop the server cleanly (a shutdown checkpoint): this node gives up being primary.
    Stop,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Do this.
    Act(Action),
    /// Nothing to do; the state, or why not (shown in status).
    Wait(String),
}

/// What this node says about the database role in its heartbeats (the cluster layer turns it
/// into votes and the lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The next step.
    pub step: Step,
    /// This node is, or is becoming, the primary.
    pub master: bool,
    /// It would become primary (it is promotable) and waits for leadership.
    pub wants: bool,
    /// It may not become primary, and why (a refusal worth a log line, status and a metric).
    pub refusal: Option<String>,
    /// No primary is in sight and the decision rests on the lease authority's record: the
    /// shell should ask for it now and then (a cached record may be stale).
    pub needs_record: bool,
}

/// The server's kind at the last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    Stopped,
    Starting,
    Primary,
    Replica,
}

/// One node's database failover logic.
#[derive(Debug)]
pub struct Planner {
    cfg: PlannerConfig,
    last: Seen,
    /// An action that stops the server was issued: the next stop is not a crash.
    stopping: bool,
    /// The primary crashed: restart it in place while this node still leads.
    restart_primary: bool,
    crashes: Vec<Instant>,
    gave_up: bool,
    /// The highest (timeline, LSN) heard from a live primary peer (for `synchronous = off`).
    primary_seen: Option<(u32, Lsn)>,
    /// The first look at which a standby was seen synchronous: its name and our WAL then.
    sync_since: Option<(String, Lsn)>,
    /// Rewinding onto this primary failed: clone again instead.
    rewind_failed: Option<String>,
    /// Rewound onto this primary, at this time: start and stream, do not rewind again.
    rewound: Option<(String, Instant)>,
    /// This node's timeline, as last seen running.
    timeline: u32,
    /// The time of the current look.
    now: Instant,
    /// An operator asked to clone this node's data again (`duet db reinit`).
    reinit: bool,
    /// A standby was started and has not been seen running since.
    starting: bool,
    /// Standby starts in a row whose server died before it ran (its data may be unusable:
    /// WAL gone); after [`MAX_FAILED_STARTS`] the node rejoins instead of starting again.
    failed_starts: u32,
    /// An operator's planned handover: to this node, asked at this time.
    handover: Option<(String, Instant)>,
    /// The server was started as a primary and has not been seen otherwise since: while it
    /// starts (crash recovery can take a while) this node still claims the role, or a peer
    /// would take it meanwhile.
    claiming: bool,
}

impl Planner {
    /// A planner that has seen nothing.
    pub fn new(cfg: PlannerConfig) -> Planner {
        Planner {
            cfg,
            last: Seen::Nothing,
            stopping: false,
            restart_primary: false,
            crashes: Vec::new(),
            gave_up: false,
            primary_seen: None,
            sync_since: None,
            rewind_failed: None,
            rewound: None,
            timeline: 0,
            now: Instant::ZERO,
            claiming: false,
            handover: None,
            reinit: false,
            starting: false,
            failed_starts: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlannerConfig {
        &self.cfg
    }

    /// Whether the node gave up leadership after repeated crashes.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// The next step, and what to tell the peers.
    pub fn next(&mut self, f: &Facts) -> Plan {
        self.observe(f);
        let step = self.decide(f);
        if let Step::Act(a) = &step {
            self.issued(a);
        }
        let master = matches!(f.server, Server::Primary(_))
            || (self.claiming && matches!(f.server, Server::Starting))
            || matches!(
                &step,
                Step::Act(
                    Action::Initdb | Action::Promote { .. } | Action::Start { primary: true, .. }
                )
            )
            || matches!(&step, Step::Act(Action::Record(r)) if r.primary == self.cfg.name);
        let master = master && !matches!(&step, Step::Act(Action::Fence | Action::Stop));
        let refusal = match (f.server, f.live_primary()) {
            (Server::Replica(r), None) => self.promotable(f, r).err(),
            _ => None,
        };
        // A node asks for leadership when it could use it. Not knowing the record is no
        // refusal: the record comes with the lease, and the decision is taken then.
        let wants = !master && !self.gave_up && f.live_primary().is_none() && {
            match (f.data, f.server) {
                (Data::Empty, _) => f.cluster_system().is_none(),
                (_, Server::Replica(_)) => refusal.is_none() || (f.authority && f.record.is_none()),
                (_, Server::Stopped) => self.restart_primary,
                _ => false,
            }
        };
        let needs_record = f.authority
            && !master
            && f.live_primary().is_none()
            && matches!(f.data, Data::Cluster { .. });
        Plan {
            step,
            master,
            wants,
            refusal,
            needs_record,
        }
    }

    /// An operator asks this primary to hand over to `to` (a switchover): once `to` streams
    /// and has nearly caught up, the primary stops cleanly (its last WAL reaches `to` during
    /// the shutdown), `to` is promoted under the clean-stop rule, and this node rejoins as its
    /// standby. Without a takeover within [`HANDOVER_PATIENCE`] the node goes back to leading.
    pub fn switchover(&mut self, to: String) {
        self.handover = Some((to, self.now));
    }

    /// An operator asks for this node's data to be cloned again from the primary
    /// (`duet db reinit`): the data directory is moved aside, never deleted. Refused on the
    /// primary itself.
    pub fn reinit(&mut self) {
        self.reinit = true;
    }

    /// The node a switchover hands over to, while one runs.
    pub fn handover(&self) -> Option<&str> {
        self.handover.as_ref().map(|(to, _)| to.as_str())
    }

    /// The shell did not try `action` after all (its source did not answer): forget what
    /// issuing it implied, so the next look plans it again.
    pub fn not_tried(&mut self, action: &Action) {
        if let Action::Rewind { .. } | Action::Reclone { .. } = action {
            self.rewound = None;
        }
    }

    /// The shell could not carry out `action` (`why`, already logged by the shell).
    pub fn failed(&mut self, action: &Action) {
        match action {
            Action::Rewind { from } => {
                self.rewind_failed = Some(from.clone());
                self.rewound = None;
            }
            Action::Fence | Action::Stop | Action::Reclone { .. } => self.stopping = false,
            _ => {}
        }
    }

    /// Updates memory from a new look.
    fn observe(&mut self, f: &Facts) {
        let now = f.now;
        self.now = now;
        let seen = match f.server {
            Server::Stopped => Seen::Stopped,
            Server::Starting => Seen::Starting,
            Server::Primary(p) => {
                self.timeline = p.timeline;
                Seen::Primary
            }
            Server::Replica(r) => {
                self.timeline = r.timeline;
                Seen::Replica
            }
        };
        // A crash: the primary stopped without being asked to, whether the look before saw
        // it running or already dying (a killed postmaster not yet reaped answers nothing,
        // "starting", for a look), or it died again while it recovered from a crash.
        let was_primary =
            self.last == Seen::Primary || (self.last == Seen::Starting && self.claiming);
        if was_primary && seen == Seen::Stopped && !self.stopping {
            self.crashes
                .retain(|t| now.saturating_since(*t) < self.cfg.crash_window);
            self.crashes.push(now);
            if self.crashes.len() >= self.cfg.max_crashes as usize {
                self.gave_up = true;
                self.restart_primary = false;
            } else {
                self.restart_primary = true;
            }
        }
        if seen == Seen::Stopped {
            self.stopping = false;
            if self.starting {
                self.failed_starts += 1;
            }
        }
        if seen != Seen::Starting {
            self.starting = false;
        }
        if matches!(seen, Seen::Primary | Seen::Replica) {
            self.failed_starts = 0;
        }
        if seen != Seen::Stopped {
            self.restart_primary &= seen == Seen::Starting;
        }
        if seen != Seen::Primary {
            self.sync_since = None;
        }
        match seen {
            // The primary this node runs, whoever started it: it claims the role until it
            // is seen as a replica or stops it on purpose.
            Seen::Primary if !self.stopping => self.claiming = true,
            Seen::Replica => self.claiming = false,
            _ => {}
        }
        self.last = seen;
        if self.gave_up
            && (f.live_primary().is_some()
                || self
                    .crashes
                    .last()
                    .is_some_and(|t| now.saturating_since(*t) >= self.cfg.crash_window))
        {
            self.gave_up = false;
            self.crashes.clear();
        }
        if let Some((_, r)) = f.live_primary() {
            let pos = (r.timeline, r.lsn);
            if self.primary_seen.is_none_or(|seen| pos > seen) {
                self.primary_seen = Some(pos);
            }
        }
        if seen == Seen::Primary {
            self.primary_seen = None;
        }
    }

    fn issued(&mut self, a: &Action) {
        match a {
            Action::Initdb | Action::Start { primary: true, .. } | Action::Promote { .. } => {
                self.claiming = true
            }
            Action::Start { primary: false, .. } => {
                self.claiming = false;
                self.starting = true;
            }
            Action::Fence
            | Action::Stop
            | Action::Rewind { .. }
            | Action::Reclone { .. }
            | Action::Clone { .. } => self.claiming = false,
            _ => {}
        }
        if let Action::Rewind { from } | Action::Reclone { from } = a {
            self.rewound = Some((from.clone(), self.now));
            self.failed_starts = 0;
        }
        match a {
            Action::Fence | Action::Stop | Action::Rewind { .. } | Action::Reclone { .. } => {
                self.stopping = true;
                self.restart_primary = false;
            }
            Action::Promote { .. } => self.primary_seen = None,
            Action::Clone { .. } | Action::Follow { .. } => self.rewind_failed = None,
            _ => {}
        }
    }

    fn decide(&mut self, f: &Facts) -> Step {
        if self.reinit {
            if matches!(f.server, Server::Primary(_)) {
                self.reinit = false;
                return Step::Wait(
                    "reinit refused: this node runs the primary (switch over first)".into(),
                );
            }
            return match f.live_primary() {
                Some((p, _)) => {
                    self.reinit = false;
                    Step::Act(Action::Reclone {
                        from: p.name.clone(),
                    })
                }
                None => Step::Wait("reinit: waiting for a primary to clone from".into()),
            };
        }
        let system = match f.data {
            Data::Unusable(why) => return Step::Wait(why.clone()),
            Data::Empty => return self.bootstrap_or_clone(f),
            Data::Cluster { system_id } => *system_id,
        };
        if let Some(theirs) = f.cluster_system()
            && theirs != system
        {
            return Step::Wait(format!(
                "data_dir belongs to another cluster: its system identifier is {system}, the cluster's is {theirs}; nothing was changed (move it away, or run `duet db reinit` to clone it again)"
            ));
        }
        match f.server {
            Server::Starting => Step::Wait("the server is starting".into()),
            Server::Stopped => self.start(f),
            Server::Primary(p) => self.as_primary(f, p, system),
            Server::Replica(r) => self.as_replica(f, r, system),
        }
    }

    /// Whether this node may create a new cluster in its empty data directory.
    fn may_bootstrap(&self, f: &Facts) -> Result<(), String> {
        if let Some(s) = f.cluster_system() {
            return Err(format!(
                "the cluster exists (system identifier {s}) and no primary is running to clone from"
            ));
        }
        Ok(())
    }

    fn bootstrap_or_clone(&self, f: &Facts) -> Step {
        if let Some((p, _)) = f.live_primary() {
            return Step::Act(Action::Clone {
                from: p.name.clone(),
            });
        }
        if let Err(why) = self.may_bootstrap(f) {
            return Step::Wait(why);
        }
        if f.leadership.may_lead && f.authority && !f.leadership.lease {
            // The record comes with the lease: only then is it known that no cluster exists.
            Step::Wait("waiting for the lease to learn whether a cluster exists".into())
        } else if f.leadership.may_lead {
            Step::Act(Action::Initdb)
        } else {
            Step::Wait(format!(
                "empty data_dir: waiting for the node that leads to bootstrap ({})",
                f.leadership.why_not
            ))
        }
    }

    fn start(&mut self, f: &Facts) -> Step {
        let primary = f.live_primary();
        if let Some((to, since)) = self.handover.clone() {
            match primary {
                Some((p, _)) if p.name == to => self.handover = None,
                _ if f.now.saturating_since(since) <= HANDOVER_PATIENCE => {
                    return Step::Wait(format!(
                        "switchover: stopped cleanly, waiting for {to} to take over"
                    ));
                }
                // Nobody took over: this node stopped cleanly and lost nothing; it may lead
                // again.
                _ => {
                    self.handover = None;
                    self.restart_primary = true;
                }
            }
        }
        if self.restart_primary && f.leadership.may_lead && primary.is_none() && !self.gave_up {
            return Step::Act(Action::Start {
                primary: true,
                upstream: None,
                sync_names: self.start_sync_names(f),
            });
        }
        // A standby that keeps dying as it starts (its WAL is gone, say) rejoins instead:
        // pg_rewind, or a clone when that fails too. Never a node left stuck.
        if let Some((p, _)) = primary
            && self.failed_starts >= MAX_FAILED_STARTS
        {
            return self.rejoin(&p.name);
        }
        if let Some((p, r)) = primary
            && r.timeline > self.timeline
            && self.timeline != 0
            && !self.rewound_onto(&p.name)
        {
            // Our data may have gone further on an older timeline than where theirs forked:
            // pg_rewind finds out (and does nothing when no rewind is needed).
            return self.rejoin(&p.name);
        }
        Step::Act(Action::Start {
            primary: false,
            upstream: primary.map(|(p, _)| p.name.clone()),
            sync_names: Vec::new(),
        })
    }

    /// Whether this node was rewound (or cloned again) onto `primary` and should now just
    /// stream from it.
    fn rewound_onto(&self, primary: &str) -> bool {
        self.rewound.as_ref().is_some_and(|(p, _)| p == primary)
    }

    fn rejoin(&self, from: &str) -> Step {
        if self.rewind_failed.as_deref() == Some(from) {
            Step::Act(Action::Reclone { from: from.into() })
        } else {
            Step::Act(Action::Rewind { from: from.into() })
        }
    }

    /// `synchronous_standby_names` for a primary restarting in place: what protects the
    /// commits the record promises are on a standby.
    fn start_sync_names(&self, f: &Facts) -> Vec<String> {
        match self.cfg.mode {
            Mode::Off => Vec::new(),
            Mode::Strict => peer_names(f),
            Mode::On => f
                .record
                .and_then(|r| r.standby.clone())
                .into_iter()
                .collect(),
        }
    }

    fn as_primary(&mut self, f: &Facts, p: &PrimaryState, system: u64) -> Step {
        if !f.leadership.may_lead {
            return Step::Act(Action::Fence);
        }
        if let Some((peer, r)) = f.live_primary()
            && (r.timeline, peer.name.as_str()) > (p.timeline, self.cfg.name.as_str())
        {
            return Step::Act(Action::Fence);
        }
        if self.gave_up {
            return Step::Act(Action::Stop);
        }
        if let Some(step) = self.hand_over(f, p) {
            return step;
        }
        let me = &self.cfg.name;
        // The record first: it must name this node before anything relies on it.
        if f.authority
            && f.record
                .is_none_or(|r| r.primary != *me || r.system_id != system)
        {
            let standby = self.safe_standby(f, p);
            return self.record(f, system, standby);
        }
        let want: Vec<String> = peer_names(f).iter().map(|n| slot_name(n)).collect();
        let create: Vec<String> = want
            .iter()
            .filter(|s| !p.slots.contains(s))
            .cloned()
            .collect();
        let drop: Vec<String> = p
            .slots
            .iter()
            .filter(|s| !want.contains(s))
            .cloned()
            .collect();
        if !create.is_empty() || !drop.is_empty() {
            return Step::Act(Action::Slots { create, drop });
        }
        self.manage_sync(f, p, system)
    }

    /// A primary's part in a switchover: wait for the target to stream and catch up, then
    /// stop cleanly.
    fn hand_over(&mut self, f: &Facts, p: &PrimaryState) -> Option<Step> {
        let (to, since) = self.handover.clone()?;
        if f.now.saturating_since(since) > HANDOVER_PATIENCE {
            self.handover = None;
            return Some(Step::Wait(format!(
                "switchover to {to} abandoned: it did not catch up within {}s",
                HANDOVER_PATIENCE.as_secs()
            )));
        }
        let target = p.followers.iter().find(|x| x.name == to && x.streaming);
        Some(match target {
            None => Step::Wait(format!("switchover: waiting for {to} to stream")),
            Some(t) if p.lsn.saturating_sub(t.flush) > HANDOVER_LAG => Step::Wait(format!(
                "switchover: {to} is {} bytes behind",
                p.lsn.saturating_sub(t.flush)
            )),
            Some(_) => Step::Act(Action::Stop),
        })
    }

    fn record(&self, f: &Facts, system: u64, standby: Option<String>) -> Step {
        if !f.leadership.lease {
            return Step::Wait("waiting for the lease to write the record".into());
        }
        Step::Act(Action::Record(Record {
            system_id: system,
            primary: self.cfg.name.clone(),
            standby,
            term: f.leadership.term,
        }))
    }

    /// A standby the record may name now: one that has every commit this primary
    /// acknowledged (synchronous for two looks, and caught up with our WAL of the first).
    fn safe_standby(&self, f: &Facts, p: &PrimaryState) -> Option<String> {
        match self.cfg.mode {
            Mode::Off => None,
            // Nothing is acknowledged without the standby: it has all of it.
            Mode::Strict => {
                let names = peer_names(f);
                (p.sync_names == names)
                    .then(|| names.first().cloned())
                    .flatten()
            }
            Mode::On => {
                let (name, since) = self.sync_since.as_ref()?;
                p.followers
                    .iter()
                    .find(|x| x.name == *name && x.sync && x.streaming && x.flush >= *since)
                    .map(|x| x.name.clone())
            }
        }
    }

    fn manage_sync(&mut self, f: &Facts, p: &PrimaryState, system: u64) -> Step {
        let record_standby = f.record.and_then(|r| r.standby.clone());
        match self.cfg.mode {
            Mode::Off => {
                if !p.sync_names.is_empty() {
                    return Step::Act(Action::SetSync(Vec::new()));
                }
            }
            Mode::Strict => {
                let names = peer_names(f);
                if p.sync_names != names {
                    return Step::Act(Action::SetSync(names));
                }
                let standby = self.safe_standby(f, p);
                if f.authority && record_standby != standby {
                    return self.record(f, system, standby);
                }
            }
            Mode::On => {
                let healthy = |name: &str| {
                    f.peers.iter().any(|x| x.name == name && x.alive)
                        && p.followers.iter().any(|x| x.name == name && x.streaming)
                };
                let current = p.sync_names.iter().find(|n| healthy(n)).cloned();
                match current {
                    Some(name) => {
                        let sync = p.followers.iter().any(|x| x.name == name && x.sync);
                        match &self.sync_since {
                            Some((n, _)) if *n == name && sync => {}
                            _ if sync => self.sync_since = Some((name.clone(), p.lsn)),
                            _ => self.sync_since = None,
                        }
                        let standby = self.safe_standby(f, p);
                        if f.authority && standby.is_some() && record_standby != standby {
                            return self.record(f, system, standby);
                        }
                        if p.sync_names.len() > 1 {
                            return Step::Act(Action::SetSync(vec![name]));
                        }
                    }
                    None => {
                        self.sync_since = None;
                        let candidate = p
                            .followers
                            .iter()
                            .find(|x| x.streaming && healthy(&x.name))
                            .map(|x| x.name.clone());
                        // Relax only once the record no longer promises anything of a
                        // standby that is gone.
                        if f.authority
                            && record_standby
                                .as_ref()
                                .is_some_and(|s| Some(s) != candidate.as_ref())
                        {
                            return self.record(f, system, None);
                        }
                        let want: Vec<String> = candidate.into_iter().collect();
                        if p.sync_names != want {
                            return Step::Act(Action::SetSync(want));
                        }
                    }
                }
            }
        }
        let standby = p
            .followers
            .iter()
            .filter(|x| x.sync)
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>();
        Step::Wait(if standby.is_empty() {
            "primary".into()
        } else {
            format!("primary, synchronous standby {}", standby.join(", "))
        })
    }

    fn as_replica(&mut self, f: &Facts, r: &ReplicaState, system: u64) -> Step {
        if let Some((peer, pr)) = f.live_primary() {
            if r.streaming {
                self.rewound = None;
            }
            match &self.rewound {
                // Rewound onto it and still not streaming after a while: clone again rather
                // than leave the node stuck.
                Some((p, at))
                    if *p == peer.name && f.now.saturating_since(*at) > REJOIN_PATIENCE =>
                {
                    self.rewind_failed = Some(p.clone());
                    return self.rejoin(&peer.name);
                }
                Some((p, _)) if *p == peer.name => {}
                _ if pr.timeline > r.timeline && !r.streaming => return self.rejoin(&peer.name),
                _ => {}
            }
            if r.upstream.as_deref() != Some(peer.name.as_str()) {
                return Step::Act(Action::Follow {
                    upstream: peer.name.clone(),
                });
            }
            return Step::Wait(if r.streaming {
                format!("replica, streaming from {}", peer.name)
            } else {
                format!("replica, connecting to {}", peer.name)
            });
        }
        if !f.leadership.may_lead || self.gave_up {
            return Step::Wait(format!(
                "replica; no primary is running ({})",
                if self.gave_up {
                    "this node gave up after repeated crashes"
                } else {
                    &f.leadership.why_not
                }
            ));
        }
        if let Err(why) = self.promotable(f, r) {
            return Step::Wait(format!("not promoted: {why}"));
        }
        let sync_names = match self.cfg.mode {
            Mode::Strict => peer_names(f),
            _ => Vec::new(),
        };
        if f.authority
            && f.record
                .is_none_or(|x| x.primary != self.cfg.name || x.term != f.leadership.term)
        {
            // Before the first write, under this node's own lease: the witness gives the
            // current record with the lease (a cached one may be stale), and a former primary
            // must not read the old record as its licence to come back.
            let standby = match self.cfg.mode {
                Mode::Strict => sync_names.first().cloned(),
                _ => None,
            };
            return self.record(f, system, standby);
        }
        Step::Act(Action::Promote { sync_names })
    }

    /// Whether this standby may become primary without losing an acknowledged commit; if
    /// not, why.
    pub fn promotable(&self, f: &Facts, r: &ReplicaState) -> Result<(), String> {
        if let Some((p, _)) = f.live_primary() {
            return Err(format!("{} runs the primary", p.name));
        }
        let me = self.cfg.name.as_str();
        let newest = f
            .peers
            .iter()
            .filter_map(|p| p.report.as_ref())
            .all(|x| x.timeline <= r.timeline);
        // The old primary stopped cleanly and this standby received all of it.
        let stopped = f
            .peers
            .iter()
            .filter_map(|p| Some((p, p.report.as_ref()?)))
            .find(|(_, x)| x.role == Role::Stopped && x.clean_stop);
        let no_primary = f
            .peers
            .iter()
            .filter_map(|p| p.report.as_ref())
            .all(|x: &Report| x.role != Role::Primary);
        let clean = stopped
            .is_some_and(|(_, x)| no_primary && x.timeline <= r.timeline && r.received >= x.lsn);
        // Said with the refusal below when it is the reason.
        let short = stopped.filter(|_| !clean).map(|(p, x)| {
            format!(
                "; {} stopped cleanly at {} (timeline {}), this standby has {} (timeline {})",
                p.name,
                fmt_lsn(x.lsn),
                x.timeline,
                fmt_lsn(r.received),
                r.timeline
            )
        });
        if clean {
            return Ok(());
        }
        if f.leadership.frozen {
            return Err(
                "maintenance is on: automatic failover is off (a switchover still works)".into(),
            );
        }
        // No record, and every peer was heard without data: this is the only copy (a primary
        // fenced between its bootstrap and its first record).
        let sole = f.record.is_none()
            && !f.peers.is_empty()
            && f.peers
                .iter()
                .all(|p| p.report.as_ref().is_some_and(|x| x.system_id == 0));
        if sole {
            return Ok(());
        }
        let rec = f.record;
        if let Some(rec) = rec
            && rec.primary == me
            && newest
        {
            return Ok(());
        }
        match self.cfg.mode {
            Mode::On | Mode::Strict => {
                if !f.authority {
                    return Err("without [witness] or [coordination] a standby is promoted only after the primary stopped cleanly; after a silent death it is never promoted".into());
                }
                let Some(rec) = rec else {
                    return Err("the lease authority holds no record of the primary".into());
                };
                if rec.standby.as_deref() == Some(me) {
                    return Ok(());
                }
                Err(format!(
                    "the record names {} as the synchronous standby of {}: this node may lack acknowledged commits{}",
                    rec.standby.as_deref().unwrap_or("no node"),
                    rec.primary,
                    short.unwrap_or_default()
                ))
            }
            Mode::Off => match self.primary_seen {
                Some((tl, lsn)) if r.timeline >= tl && r.received.saturating_add(self.cfg.max_lag) >= lsn => Ok(()),
                Some((_, lsn)) => Err(format!(
                    "it received WAL up to {}, the primary was at {} ({} bytes behind; maximum_lag_on_failover is {})",
                    fmt_lsn(r.received),
                    fmt_lsn(lsn),
                    lsn.saturating_sub(r.received),
                    self.cfg.max_lag
                )),
                None => Err("no primary position was heard since this node started: it cannot tell how far it trails".into()),
            },
        }
    }
}

/// Standby starts that die before running, in a row, before the node rejoins instead.
const MAX_FAILED_STARTS: u32 = 3;

/// How long a switchover may take before the primary goes back to leading.
pub const HANDOVER_PATIENCE: Duration = Duration::from_secs(30);

/// A switchover target at most this far behind may be handed over to (the rest of the WAL
/// reaches it during the clean shutdown).
const HANDOVER_LAG: Lsn = 16 << 20;

/// How long a rewound standby may try to stream before it is cloned again.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// The peers' node names, in order.
fn peer_names(f: &Facts) -> Vec<String> {
    f.peers.iter().map(|p| p.name.clone()).collect()
}

/// A node's replication slot name: lowercase letters, digits and `_`.
pub fn slot_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// An LSN the way PostgreSQL writes it (`16/B374D848`).
pub fn fmt_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}
