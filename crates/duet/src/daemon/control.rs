//! The control plane: one task on its own thread that owns every VRRP instance.
//!
//! It loops: wait for a packet, a tracker change, a signal or the earliest timer; feed the cores;
//! then drain their outputs through [`Effects`]. Nothing here blocks for long: netlink round
//! trips take microseconds and child processes live on the hooks thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_admin::Published;
use duet_config::Config;
use duet_sys::Netlink;
use duet_time::Instant;
use duet_vrrp::{Advert, DropReason, SyncGroup, packet::check_hop_limit};
use tokio::sync::mpsc;

use super::balancers::{self, Balancer};
use super::effects::Effects;
use super::hooks::{Hooks, ScriptResult};
use super::input::{Clock, Inbox, Input};
use super::instance::{Inst, SocketKey};
use super::readings::Readings;
use super::vips::VipManager;
use super::watch::{self, WatchList};

/// The control plane.
pub struct ControlPlane {
    pub(super) config: Config,
    pub(super) config_path: PathBuf,
    pub(super) clock: Clock,
    pub(super) nl: Netlink,
    pub(super) instances: Vec<Inst>,
    pub(super) groups: Vec<SyncGroup>,
    pub(super) fx: Effects,
    pub(super) readings: Readings,
    pub(super) inbox: Inbox,
    pub(super) script_tx: mpsc::UnboundedSender<ScriptResult>,
    pub(super) watch_list: tokio::sync::watch::Sender<WatchList>,
    pub(super) published: Arc<Published>,
    pub(super) unmatched_drops: [u64; DropReason::ALL.len()],
    pub(super) drop_log: DropLog,
    pub(super) started: Instant,
    pub(super) balancers: Vec<Balancer>,
    /// Heartbeats and the witness, when configured.
    pub(super) cluster: Option<super::cluster::Cluster>,
    /// The database, when configured.
    pub(super) database: Option<super::database::Database>,
    /// The maintenance setting this node knows (set here or heard from a peer).
    pub(super) maintenance: Option<duet_cluster::wire::Maintenance>,
    /// When the status snapshot was last published.
    pub(super) published_at: Instant,
    /// Something may have changed since.
    pub(super) dirty: bool,
    /// systemd's notifications, when it runs the daemon.
    pub(super) systemd: Option<super::systemd::Systemd>,
    /// The `[[service]]` groups.
    pub(super) services: super::services::Services,
    /// This node leads the cluster (`follows = "cluster"` services run here), without
    /// `[database]` (whose primary leads then).
    pub(super) leader: bool,
}

/// Receivers the loop waits on.
pub struct Inputs {
    input_rx: mpsc::Receiver<Input>,
    script_rx: mpsc::UnboundedReceiver<ScriptResult>,
}

impl ControlPlane {
    /// Builds instances and sockets. Must run inside the control runtime (it spawns readers).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        vips: VipManager,
        hooks: Hooks,
        published: Arc<Published>,
        balancers: Vec<Balancer>,
    ) -> Result<(ControlPlane, Inputs, Inbox), String> {
        let (inbox, input_rx) = Inbox::new(super::input::INBOX_CAPACITY);
        let (script_tx, script_rx) = mpsc::unbounded_channel();
        let (watch_list, watch_rx) = tokio::sync::watch::channel(WatchList::default());
        tokio::spawn(watch::run_links(watch_rx.clone(), inbox.clone()));
        watch::spawn_files(watch_rx, inbox.clone())
            .map_err(|e| format!("track-file thread: {e}"))?;
        let mut cp = ControlPlane {
            nl: Netlink::open().map_err(|e| format!("netlink: {e}"))?,
            config: Config::default(),
            config_path,
            clock: Clock::new(),
            instances: Vec::new(),
            groups: Vec::new(),
            services: super::services::Services::new(&config, hooks.clone()),
            fx: Effects {
                node: config.node.name.clone(),
                sockets: HashMap::new(),
                vips,
                hooks,
                next_refresh: None,
                transitioned: false,
                events: published.events().clone(),
            },
            readings: Readings::default(),
            inbox: inbox.clone(),
            script_tx,
            watch_list,
            published,
            unmatched_drops: [0; DropReason::ALL.len()],
            drop_log: DropLog::default(),
            started: Instant::ZERO,
            balancers,
            cluster: None,
            database: None,
            maintenance: None,
            published_at: Instant::ZERO,
            dirty: true,
            systemd: super::systemd::Systemd::from_env(),
            leader: false,
        };
        if let Some(hb) = &config.heartbeat {
            cp.cluster = Some(super::cluster::Cluster::start(
                &config.node.name,
                hb,
                config.witness.as_ref(),
                config.coordination.as_ref(),
                config.node.vip_lifetime.0,
                &inbox,
                cp.published.events().clone(),
            )?);
        }
        cp.database =
            super::database::Database::start(&config, inbox.clone(), cp.published.clone())?;
        cp.published.set_balancers(balancers::source(&cp.balancers));
        if let Some(c) = &mut cp.cluster {
            c.set_config(&config);
        }
        cp.apply_config(config)?;
        let inputs = Inputs {
            input_rx,
            script_rx,
        };
        Ok((cp, inputs, inbox))
    }

    /// Runs until shutdown; returns after every instance has stepped down.
    ///
    /// Timers never wait behind inputs: under a flood the inbox always holds something, and
    /// adverts and heartbeats must still leave on time. Inputs are taken in batches of at most
    /// [`BATCH`] between looks at the clock.
    pub async fn run(mut self, mut inputs: Inputs) {
        let now = self.clock.now();
        if let Some(s) = &mut self.systemd {
            s.ready(now);
        }
        'run: loop {
            self.drain();
            let now = self.clock.now();
            if let Some(s) = &mut self.systemd {
                s.tick(now);
            }
            self.sync_services(now);
            if self.publish_due(now) {
                self.publish(now);
            }
            let deadline = self.next_deadline();
            if deadline.is_some_and(|t| t <= now) {
                self.timers();
                continue;
            }
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(self.clock.to_tokio(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = sleep => self.timers(),
                input = inputs.input_rx.recv() => {
                    let Some(first) = input else { break };
                    if !self.take(first) {
                        break;
                    }
                    for _ in 1..BATCH {
                        let Ok(next) = inputs.input_rx.try_recv() else { break };
                        if !self.take(next) {
                            break 'run;
                        }
                    }
                }
                Some(result) = inputs.script_rx.recv() => {
                    self.dirty = true;
                    if self.readings.record_script(&result) {
                        self.retrack();
                    }
                }
            }
        }
        self.shutdown();
    }

    /// Handles one input; `false` when it asks the loop to end.
    fn take(&mut self, input: Input) -> bool {
        self.dirty = true;
        match input {
            Input::Shutdown => return false,
            Input::Reload => {
                if let Some(s) = &self.systemd {
                    s.reloading();
                }
                let _ = self.reload();
                if let Some(s) = &self.systemd {
                    s.reloaded();
                }
            }
            Input::Action(action, reply) => {
                let _ = reply.send(self.act(action));
            }
            input => self.handle(input),
        }
        true
    }

    /// Whether the status snapshot is due: an instance changed state (at once), something else
    /// changed and the last one is [`PUBLISH_CHANGES`] old, or nothing changed for
    /// [`PUBLISH_IDLE`] (its clocks move).
    fn publish_due(&self, now: Instant) -> bool {
        self.fx.transitioned || now >= self.next_publish()
    }

    fn next_publish(&self) -> Instant {
        let after = if self.dirty {
            PUBLISH_CHANGES
        } else {
            PUBLISH_IDLE
        };
        self.published_at + after
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Service { group, id, result } => {
                let now = self.clock.now();
                let events = self.published.events().clone();
                if self
                    .services
                    .done(now, group, id, result, &self.inbox, &events)
                {
                    self.retrack();
                }
            }
            Input::Packet {
                key,
                at,
                src,
                dst,
                hop_limit,
                bytes,
            } => self.packet(key, at, src, dst, hop_limit, &bytes),
            Input::Links(links) => {
                for (name, up) in &links {
                    if self.readings.links.get(name) != Some(up) {
                        tracing::info!("interface {name} is {}", if *up { "up" } else { "down" });
                    }
                }
                self.readings.links = links;
                self.retrack();
            }
            Input::Files(files) => {
                self.readings.files = files;
                self.retrack();
            }
            Input::Cluster { via, from, bytes } => {
                let now = self.clock.now();
                if let Some(c) = &mut self.cluster {
                    for vrid in c.receive(now, via, from, &bytes) {
                        for inst in self.instances.iter_mut().filter(|i| i.cfg.vrid == vrid) {
                            inst.core.master_left(now);
                        }
                    }
                }
                self.cluster_eval();
            }
            Input::Etcd(answer) => {
                let now = self.clock.now();
                if let Some(c) = &mut self.cluster {
                    c.etcd_answer(now, answer);
                }
                self.cluster_eval();
            }
            Input::Database(out) => {
                if let Some(db) = &mut self.database {
                    db.update(out);
                }
                self.database_eval();
            }
            Input::Shutdown | Input::Reload | Input::Action(..) => {}
        }
    }

    fn packet(
        &mut self,
        key: SocketKey,
        at: Instant,
        src: IpAddr,
        dst: IpAddr,
        hop_limit: u8,
        bytes: &[u8],
    ) {
        let parsed = check_hop_limit(hop_limit).and_then(|()| Advert::parse(bytes, src, dst));
        let advert = match parsed {
            Ok((advert, _)) => advert,
            Err(reason) => {
                let vrid = bytes.get(1).copied();
                self.count_drop(at, key, vrid, src, reason);
                return;
            }
        };
        let mut matched = false;
        for inst in self
            .instances
            .iter_mut()
            .filter(|i| i.key == key && i.cfg.vrid == advert.vrid.get())
        {
            matched = true;
            // With a heartbeat, the cluster knows its peers through authenticated messages: a
            // stranger's advert (any host on the LAN can multicast one) is not obeyed. Our own
            // looped-back adverts go on to the core, which counts them as its own.
            let stranger = self.cluster.as_ref().is_some_and(|c| {
                src != inst.source
                    && !c.is_peer_address(src)
                    && !inst.cfg.unicast_peers.contains(&src)
            });
            if stranger {
                inst.core.count_drop(DropReason::NotClusterPeer);
                self.drop_log
                    .note(at, &inst.cfg.name, src, DropReason::NotClusterPeer);
                continue;
            }
            if !inst.cfg.unicast_peers.is_empty() && !inst.cfg.unicast_peers.contains(&src) {
                inst.core.count_drop(DropReason::UnknownPeer);
                self.drop_log
                    .note(at, &inst.cfg.name, src, DropReason::UnknownPeer);
                continue;
            }
            if let Err(reason) = inst.core.handle_advert(at, src, &advert) {
                self.drop_log.note(at, &inst.cfg.name, src, reason);
            }
        }
        if !matched {
            self.unmatched_drops[DropReason::UnknownVrid.index()] += 1;
        }
    }

    /// Counts a packet that failed validation, on the instance its VRID byte names if any.
    fn count_drop(
        &mut self,
        at: Instant,
        key: SocketKey,
        vrid: Option<u8>,
        src: IpAddr,
        reason: DropReason,
    ) {
        let inst = self
            .instances
            .iter_mut()
            .find(|i| i.key == key && Some(i.cfg.vrid) == vrid);
        let name = match inst {
            Some(i) => {
                i.core.count_drop(reason);
                i.cfg.name.as_str()
            }
            None => {
                self.unmatched_drops[reason.index()] += 1;
                "-"
            }
        };
        self.drop_log.note(at, name, src, reason);
    }

    /// Recomputes every instance's tracking input from the latest readings (and the VIP
    /// faults, which hold an instance in FAULT whatever the trackers say).
    /// Tells each service group whether this node is master of its instance and whether the
    /// peer has let go of it, and tells the peers what this node holds.
    fn sync_services(&mut self, now: Instant) {
        // Every turn of the loop comes here: a node without services does nothing more.
        if self.services.is_empty() {
            return;
        }
        self.leader = self.leads(now);
        let leader = self.leader;
        let masters: Vec<&str> = self
            .instances
            .iter()
            .filter(|i| i.core.state() == duet_vrrp::State::Master)
            .map(|i| i.cfg.name.as_str())
            .collect();
        let cluster = &self.cluster;
        let changed = self.services.update(
            now,
            |name| {
                if name == duet_config::service::CLUSTER {
                    leader
                } else {
                    masters.contains(&name)
                }
            },
            |vrid| cluster.as_ref().is_none_or(|c| c.peers_let_go(vrid)),
            &self.inbox,
            self.published.events(),
        );
        if let Some(c) = &mut self.cluster {
            c.set_services(self.services.holdings());
        }
        for cmd in self.services.take_guardian() {
            self.fx.vips.tell_guardian(cmd);
        }
        if changed {
            self.retrack();
        }
    }

    /// Whether this node leads the cluster: its database is the primary; or it is master of
    /// every one of its VRRP instances (a node's resources follow one decision: the cluster
    /// votes for nodes, so a leadership of its own beside VRRP could pull the other way); or,
    /// on a node with neither, the cluster's verdict lets it hold the leadership resource.
    /// Never while its `follows = "cluster"` services have stepped down.
    fn leads(&self, now: Instant) -> bool {
        if let Some(db) = &self.database {
            return db.is_primary();
        }
        if self
            .services
            .fault_of(duet_config::service::CLUSTER)
            .is_some()
        {
            return false;
        }
        if !self.instances.is_empty() {
            return self
                .instances
                .iter()
                .all(|i| i.core.state() == duet_vrrp::State::Master);
        }
        let Some(c) = &self.cluster else {
            return false;
        };
        if !self.services.follows_cluster()
            || self
                .services
                .fault_of(duet_config::service::CLUSTER)
                .is_some()
        {
            return false;
        }
        let id = super::services::CLUSTER_ID;
        if !self.leader && c.peer_master(id) {
            return false;
        }
        c.verdict(
            now,
            duet_cluster::quorum::Local {
                vrid: id,
                priority: 100,
                master: self.leader,
                business_up: true,
                lease_valid: false,
            },
        )
        .allowed()
    }

    pub(super) fn retrack(&mut self) {
        let now = self.clock.now();
        for inst in &mut self.instances {
            let health = health_of(inst, &self.readings, &self.services);
            if *inst.core.tracking() != health {
                inst.core.set_tracking(now, health);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.instances
            .iter()
            .flat_map(|i| {
                [
                    i.core.poll_timeout(),
                    i.garp.next_deadline(),
                    i.vip_fault.as_ref().map(|f| f.retry_at),
                ]
            })
            .chain([
                self.fx.next_refresh,
                Some(self.next_publish()),
                self.cluster.as_ref().and_then(|c| c.next_deadline()),
                self.systemd.as_ref().and_then(|s| s.deadline()),
                self.services.deadline(),
            ])
            .flatten()
            .min()
    }

    /// What this node's heartbeats say: its instances, and whether its business link is up.
    fn reports(&self) -> (Vec<duet_cluster::wire::InstanceReport>, bool) {
        let reports = self
            .instances
            .iter()
            .map(|i| duet_cluster::wire::InstanceReport {
                vrid: i.cfg.vrid,
                master: i.core.state() == duet_vrrp::State::Master,
                wants: i.core.state() != duet_vrrp::State::Master && i.core.wants_master(),
                priority: i.core.effective_priority(),
            })
            .chain(self.database.as_ref().map(|d| {
                d.report(
                    self.cluster
                        .as_ref()
                        .is_some_and(|c| c.peer_master(super::database::RESOURCE)),
                )
            }))
            .chain(
                (self.database.is_none()
                    && self.instances.is_empty()
                    && self.services.follows_cluster())
                .then(|| {
                    let id = super::services::CLUSTER_ID;
                    let peer = self.cluster.as_ref().is_some_and(|c| c.peer_master(id));
                    let out = self
                        .services
                        .fault_of(duet_config::service::CLUSTER)
                        .is_some();
                    duet_cluster::wire::InstanceReport {
                        vrid: id,
                        master: self.leader,
                        wants: !self.leader && !peer && !out,
                        priority: 100,
                    }
                }),
            )
            .collect();
        let business_up = self
            .instances
            .iter()
            .all(|i| self.readings.links.get(&i.cfg.interface) != Some(&false));
        (reports, business_up)
    }

    /// Sends due heartbeats and lease requests, and applies the cluster's verdict to every
    /// instance (a veto, or none).
    fn cluster_eval(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        let now = self.clock.now();
        let (reports, business_up) = self.reports();
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.timers(now, &reports, business_up);
        // A newer maintenance setting from a peer is adopted (the newest wins everywhere).
        let known = self.maintenance.as_ref().map_or(0, |m| m.version);
        if let Some(m) = c.newer_maintenance(known) {
            self.set_maintenance(m, "a peer");
        }
        let Some(c) = &mut self.cluster else {
            return;
        };
        for inst in &mut self.instances {
            let local = duet_cluster::quorum::Local {
                vrid: inst.cfg.vrid,
                priority: inst.core.effective_priority(),
                master: inst.core.state() == duet_vrrp::State::Master,
                business_up: self.readings.links.get(&inst.cfg.interface) != Some(&false),
                lease_valid: false,
            };
            let verdict = c.verdict(now, local);
            let veto = c.note_veto(&inst.cfg.name, &verdict);
            inst.core.set_veto(now, veto);
            // Two masters (a healed partition under "available"): if this one stays, clients
            // that learned the other's MAC must hear where the VIPs live.
            let claims =
                inst.core.state() == duet_vrrp::State::Master && c.peer_master(inst.cfg.vrid);
            if claims && !inst.peer_claims {
                inst.garp.burst(now, &inst.cfg.garp);
            }
            inst.peer_claims = claims;
        }
        self.database_eval();
    }

    /// Hands the database agent the cluster's view and holds the write VIP as it allows.
    fn database_eval(&mut self) {
        let now = self.clock.now();
        let (Some(db), Some(c)) = (&mut self.database, &mut self.cluster) else {
            return;
        };
        db.eval(now, c, &mut self.fx.vips, &self.nl);
        if db.holds_write_vip() && self.fx.next_refresh.is_none() {
            self.fx.next_refresh = self.fx.vips.refresh_interval().map(|d| now + d);
        }
    }

    fn timers(&mut self) {
        // The cluster first: a lease that ran out while this process was frozen must take the
        // VIPs away before the refresh below could put them back.
        self.cluster_eval();
        self.drain();
        self.dirty = true;
        let now = self.clock.now();
        for inst in &mut self.instances {
            inst.core.handle_timeout(now);
            self.fx.announce_due(inst, now);
        }
        self.retry_vips(now);
        if let Some(due) = self.fx.next_refresh.filter(|t| *t <= now) {
            for (ifname, e) in self.fx.vips.refresh() {
                for inst in self.instances.iter_mut().filter(|i| {
                    i.cfg.interface == ifname && i.core.state() == duet_vrrp::State::Master
                }) {
                    inst.fail_vips(now, e.message.clone(), e.permission);
                }
            }
            let every = self.fx.vips.refresh_interval();
            self.fx.next_refresh = every.map(|d| now + d);
            // A refresh more than a whole interval late means this process was frozen (SIGSTOP,
            // a paused VM): our VIPs may have expired and been taken over meanwhile, and the
            // refresh just re-added them. Tell the LAN again where they live.
            if every.is_some_and(|d| now.saturating_since(due) > d) {
                tracing::warn!(
                    "resumed after {} without running: re-announcing the VIPs of every MASTER",
                    duet_time::format_duration(now.saturating_since(due))
                );
                for inst in &mut self.instances {
                    if inst.core.state() == duet_vrrp::State::Master {
                        inst.garp.burst(now, &inst.cfg.garp);
                    }
                }
            }
        }
    }

    /// Lifts VIP faults whose retry time came, so the instance may try again (a missing
    /// privilege is checked first: without it the fault stays and the next check backs off).
    fn retry_vips(&mut self, now: Instant) {
        let mut lifted = false;
        for inst in &mut self.instances {
            let Some(permission) = inst
                .vip_fault
                .as_ref()
                .filter(|f| f.retry_at <= now)
                .map(|f| f.permission)
            else {
                continue;
            };
            if permission && !super::vips::may_add_addresses() {
                inst.vip_failures = inst.vip_failures.saturating_add(1);
                let next = now + inst.vip_backoff();
                if let Some(f) = &mut inst.vip_fault {
                    f.retry_at = next;
                }
                continue;
            }
            tracing::info!("{}: trying the VIPs again", inst.cfg.name);
            inst.vip_fault = None;
            lifted = true;
        }
        if lifted {
            self.retrack();
        }
    }

    /// Reconciles sync groups and performs every pending output of every instance.
    fn drain(&mut self) {
        let now = self.clock.now();
        fn core(i: &mut Inst) -> &mut duet_vrrp::Instance {
            &mut i.core
        }
        for g in &mut self.groups {
            g.reconcile_with(now, &mut self.instances, core);
        }
        for inst in &mut self.instances {
            self.fx.drain(inst, now);
        }
    }

    fn shutdown(&mut self) {
        if let Some(s) = &self.systemd {
            s.stopping();
        }
        self.fx.events.emit(duet_admin::EventKind::Daemon {
            state: "stopping".into(),
            detail: "stepping down".into(),
        });
        let now = self.clock.now();
        for inst in &mut self.instances {
            inst.core.shutdown(now);
            self.fx.drain(inst, now);
        }
        // The database stops cleanly first: its final position travels in the goodbye, so
        // the standby can see it has everything and take over at once.
        let final_db = self
            .database
            .as_mut()
            .and_then(|db| db.stop(&mut self.fx.vips, &self.nl));
        // Services stop after the VIPs went and before the goodbye, which says they did.
        let holdings = self.services.stop_all();
        // Tell the peers at once that this node no longer serves, so they need not wait for
        // the heartbeat to go silent.
        let (mut reports, business_up) = self.reports();
        reports.retain(|r| r.vrid != super::database::RESOURCE);
        if let Some(c) = &mut self.cluster {
            if self.database.is_some() {
                c.set_database(final_db);
            }
            c.set_services(holdings);
            // Tell the peers that this node no longer asks for votes (they are free at once
            // instead of after their promises run out) and give the witness lease back.
            c.goodbye(now, &reports, business_up);
        }
        self.readings.stop_scripts();
        self.fx.vips.dismiss_guardian();
        self.publish(now);
    }

    /// Adopts `m` (asked here by an operator, or heard from `source`): instances and the
    /// database stop (or resume) taking over, heartbeats carry it, an event says so.
    pub(super) fn set_maintenance(&mut self, m: duet_cluster::wire::Maintenance, source: &str) {
        let was = self.maintenance.as_ref().is_some_and(|o| o.enabled);
        for inst in &mut self.instances {
            inst.core.set_frozen(m.enabled);
        }
        if let Some(db) = &mut self.database {
            db.frozen = m.enabled;
        }
        if let Some(c) = &mut self.cluster {
            c.set_maintenance(Some(m.clone()));
        }
        if was != m.enabled {
            let state = if m.enabled {
                "on: automatic failover is off"
            } else {
                "off: automatic failover is back"
            };
            tracing::warn!("maintenance {state} (by {}, from {source})", m.by);
            self.fx.events.emit(duet_admin::EventKind::Maintenance {
                enabled: m.enabled,
                by: m.by.clone(),
            });
        }
        self.maintenance = Some(m);
        self.dirty = true;
    }

    fn publish(&mut self, now: Instant) {
        let mut status = super::publish::status(
            &self.config.node.name,
            self.started,
            now,
            &self.instances,
            &self.readings,
            &self.fx.vips,
            &self.unmatched_drops,
        );
        if let Some(c) = &mut self.cluster {
            for (peer, same) in c.config_changes() {
                let kind = duet_admin::EventKind::Config { peer, same };
                if same {
                    tracing::info!("{kind}");
                } else {
                    tracing::warn!("{kind}");
                }
                self.fx.events.emit(kind);
            }
            self.published
                .set_config_views(c.config_views(&self.config.node.name));
        }
        status.cluster = self.cluster.as_ref().map(|c| c.status(now));
        status.maintenance = self.maintenance.as_ref().filter(|m| m.enabled).map(|m| {
            duet_admin::MaintenanceStatus {
                by: m.by.clone(),
                version: m.version,
            }
        });
        status.inputs_dropped = self.inbox.dropped();
        status.services = self.services.status();
        if let Some(s) = &mut self.systemd {
            s.status(super::systemd::summary(&status));
        }
        self.published.publish(status);
        self.published_at = now;
        self.dirty = false;
        self.fx.transitioned = false;
    }
}

/// An instance's tracking: its trackers, then a VIP fault, then a service group that stepped
/// down (either puts it in FAULT).
pub(super) fn health_of(
    inst: &Inst,
    readings: &Readings,
    services: &super::services::Services,
) -> duet_vrrp::TrackedHealth {
    let mut health = inst.with_vip_fault(readings.tracking_of(&inst.cfg));
    if health.fault.is_none() {
        health.fault = services.fault_of(&inst.cfg.name);
    }
    health
}

/// Inputs taken in one go before the loop looks at the clock again.
const BATCH: usize = 64;
/// The status snapshot follows changes at most this often (a flood must not rebuild it per
/// packet).
const PUBLISH_CHANGES: Duration = Duration::from_millis(100);
/// And is refreshed this often when nothing changed (its clocks move).
const PUBLISH_IDLE: Duration = Duration::from_secs(1);

/// Logs dropped packets: at most once a minute per reason and sender.
#[derive(Debug, Default)]
pub struct DropLog {
    last: HashMap<(DropReason, IpAddr), Instant>,
}

impl DropLog {
    /// Logs that `instance` dropped a packet from `src` for `reason` at `now`, unless it did
    /// within the last minute.
    fn note(&mut self, now: Instant, instance: &str, src: IpAddr, reason: DropReason) {
        // Other virtual routers on the LAN, and our own adverts, are normal.
        if matches!(reason, DropReason::UnknownVrid | DropReason::OwnAdvert) {
            return;
        }
        if self
            .last
            .get(&(reason, src))
            .is_some_and(|last| now.saturating_since(*last) < Duration::from_secs(60))
        {
            return;
        }
        self.last.insert((reason, src), now);
        tracing::warn!(
            "{instance}: dropped VRRP packet from {src}: {}",
            describe(reason)
        );
    }
}

fn describe(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Truncated => "truncated",
        DropReason::BadLength => "length does not match the address count",
        DropReason::BadVersion => "wrong VRRP version",
        DropReason::BadType => "not an advertisement",
        DropReason::BadHopLimit => "TTL/hop limit is not 255",
        DropReason::BadChecksum => "bad checksum",
        DropReason::UnknownVrid => "unknown VRID",
        DropReason::BadFamily => "wrong address family",
        DropReason::BadAuth => "authentication type is not 0 (none)",
        DropReason::IntervalMismatch => "advert interval differs from ours (VRRPv2)",
        DropReason::OwnAdvert => "our own advert",
        DropReason::UnknownPeer => "sender is not a configured unicast peer",
        DropReason::NotClusterPeer => {
            "sender is not a cluster peer (not an address of [heartbeat] links): ignored"
        }
    }
}
