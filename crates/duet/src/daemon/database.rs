//! The database: PostgreSQL following the cluster's leader.
//!
//! Two halves. The **agent** runs on its own thread (`duet-database`) with its own runtime,
//! because its actions take seconds (initdb, pg_basebackup, pg_rewind, a fast shutdown): it
//! looks at the server every 100 ms or when the cluster's view changes, asks the pure
//! planner (`duet_dbfail::Planner`) for the next step and carries it out with `duet_db`.
//! The **control side** ([`Database`]) lives in the control loop: it turns the agent's
//! report into this node's heartbeat entry (resource id [`RESOURCE`]), takes the cluster's
//! verdict for it, hands the agent the [`View`] (verdict, peers' databases, the lease
//! authority's record), writes records for it, and holds the write VIP while the verdict
//! allows it and the agent saw a writable primary (or restarts its crashed primary in place:
//! clients are then refused at once rather than left retransmitting SYNs). A verdict that turns against
//! this node drops the write VIP at once, before the agent's fence lands.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use duet_admin::{DatabasePeer, DatabaseStatus, Published};
use duet_cluster::wire::{DbState, InstanceReport};
use duet_config::{Config, DatabaseConfig, SyncMode};
use duet_db::{DataInfo, Postgres, Secret, Spec, Upstream};
use duet_dbfail::{
    Action, Data, Facts, Leadership, Mode, PeerDb, Planner, PlannerConfig, Record, Role, Server,
    Step, fmt_lsn,
};
use duet_sys::Netlink;
use duet_time::Instant;
use tokio::sync::watch;

use super::input::{DatabaseReport as Out, Inbox, Input};
use super::vips::VipManager;

/// The database's id among the resources a heartbeat reports (VRRP ids are 1..=255).
pub const RESOURCE: u8 = duet_cluster::quorum::DATABASE;

/// The database's rank in the cluster's tie-breaks (all nodes alike: names decide).
const PRIORITY: u8 = 100;

/// How often the agent looks at the server when nothing else wakes it.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What the control loop tells the agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The cluster's verdict for the database.
    pub leadership: Leadership,
    /// The other nodes' databases.
    pub peers: Vec<PeerDb>,
    /// A witness or etcd keeps the record.
    pub authority: bool,
    /// Its record.
    pub record: Option<Record>,
    /// Stop the server cleanly and end.
    pub stop: bool,
    /// The latest switchover asked of this node: its number and target.
    pub switchover: Option<(u64, String)>,
    /// The latest reinit asked of this node (its number).
    pub reinit: u64,
}

impl View {
    /// What wakes the agent: everything but the peers' WAL positions, which move all the time.
    fn significant(&self) -> impl PartialEq + '_ {
        (
            &self.leadership,
            &self.record,
            self.authority,
            self.stop,
            self.peers
                .iter()
                .map(|p| {
                    (
                        &p.name,
                        p.alive,
                        p.report
                            .as_ref()
                            .map(|r| (r.role, r.timeline, r.clean_stop)),
                    )
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// The control loop's side of the database.
pub struct Database {
    view: watch::Sender<View>,
    out: Out,
    thread: Option<std::thread::JoinHandle<Out>>,
    write_vip: Option<WriteVip>,
    /// The last record write sent, and when (one per 200 ms at most).
    last_write: Option<(Instant, Record)>,
    /// When the record was last asked for (once a second at most).
    last_query: Option<Instant>,
    /// Maintenance: no automatic promotion.
    pub frozen: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("out", &self.out).finish()
    }
}

/// The write VIP and whether this node holds it.
struct WriteVip {
    vip: duet_config::Vip,
    ifname: String,
    held: Option<u32>,
    /// Gratuitous ARP/NA still to send after taking it.
    announce: u32,
}

impl Database {
    /// Starts the agent thread. `authority`: a witness or etcd keeps records.
    pub fn start(
        config: &Config,
        inbox: Inbox,
        published: Arc<Published>,
    ) -> Result<Option<Database>, String> {
        let Some(cfg) = config.database.clone() else {
            return Ok(None);
        };
        let spec = spec(config, &cfg)?;
        traversable(&config.node.state_dir)?;
        let planner = PlannerConfig {
            name: config.node.name.clone(),
            mode: mode(cfg.synchronous),
            max_lag: cfg.maximum_lag_on_failover.0,
            max_crashes: 3,
            crash_window: Duration::from_secs(60),
        };
        let (view, view_rx) = watch::channel(View {
            authority: config.witness.is_some() || config.coordination.is_some(),
            ..View::default()
        });
        let synchronous = cfg.synchronous.to_string();
        let thread = std::thread::Builder::new()
            .name("duet-database".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("database runtime: {e}");
                        return Out::default();
                    }
                };
                let agent = Agent {
                    pg: Postgres::new(spec),
                    planner: Planner::new(planner),
                    view: view_rx,
                    inbox,
                    published,
                    status: DatabaseStatus {
                        synchronous,
                        ..DatabaseStatus::default()
                    },
                    data: None,
                    last_refusal: None,
                    last_error: None,
                    lag_above: false,
                    epoch: std::time::Instant::now(),
                    switchover: 0,
                    reinit: 0,
                };
                rt.block_on(agent.run())
            })
            .map_err(|e| format!("database thread: {e}"))?;
        Ok(Some(Database {
            write_vip: cfg.write_vip.as_ref().map(|w| WriteVip {
                vip: w.address,
                ifname: w.interface.clone(),
                held: None,
                announce: 0,
            }),
            view,
            out: Out::default(),
            thread: Some(thread),
            last_write: None,
            last_query: None,
            frozen: false,
        }))
    }

    /// This node's database as a heartbeat resource. A node never says it wants the primary
    /// role while a live peer holds it: for a database that would not be a preference but a
    /// demand that the primary yield (the cluster's rule for VRRP preemption).
    pub fn report(&self, peer_master: bool) -> InstanceReport {
        InstanceReport {
            vrid: RESOURCE,
            master: self.out.master,
            wants: self.out.wants && !peer_master,
            priority: PRIORITY,
        }
    }

    /// Whether this node's server is the primary the cluster elected (what `follows =
    /// "cluster"` services follow).
    pub fn is_primary(&self) -> bool {
        self.out.master
    }

    /// The agent's latest report.
    pub fn update(&mut self, out: Out) {
        self.out = out;
    }

    /// After the cluster ran: hands the agent the new view, writes a record it asked for,
    /// and takes or drops the write VIP.
    pub fn eval(
        &mut self,
        now: Instant,
        cluster: &mut super::cluster::Cluster,
        vips: &mut VipManager,
        nl: &Netlink,
    ) {
        cluster.set_database(self.out.state.clone());
        let verdict = cluster.verdict(
            now,
            duet_cluster::quorum::Local {
                vrid: RESOURCE,
                priority: PRIORITY,
                master: self.out.master,
                business_up: true,
                lease_valid: false,
            },
        );
        let new = View {
            leadership: Leadership {
                may_lead: verdict.allowed(),
                why_not: match &verdict {
                    duet_cluster::quorum::Verdict::Denied(w) => w.clone(),
                    _ => String::new(),
                },
                lease: cluster.lease_valid(now),
                term: cluster.term(),
                frozen: self.frozen,
            },
            peers: cluster.peer_databases(),
            authority: self.view.borrow().authority,
            record: cluster.record().map(super::cluster::record_from_wire),
            stop: self.view.borrow().stop,
            switchover: self.view.borrow().switchover.clone(),
            reinit: self.view.borrow().reinit,
        };
        self.view.send_if_modified(|v| {
            let wake = v.significant() != new.significant();
            *v = new;
            wake
        });
        if let Some(r) = &self.out.record_write
            && cluster
                .record()
                .map(super::cluster::record_from_wire)
                .as_ref()
                != Some(r)
            && self.last_write.as_ref().is_none_or(|(t, w)| {
                w != r || now.saturating_since(*t) >= Duration::from_millis(200)
            })
            && cluster.write_record(now, super::cluster::record_to_wire(r))
        {
            self.last_write = Some((now, r.clone()));
        }
        if self.out.record_query
            && self
                .last_query
                .is_none_or(|t| now.saturating_since(t) >= Duration::from_secs(1))
        {
            self.last_query = Some(now);
            cluster.query_record();
        }
        let hold = (self.out.writable || self.out.restarting) && verdict.allowed();
        self.hold_write_vip(hold, vips, nl);
    }

    fn hold_write_vip(&mut self, hold: bool, vips: &mut VipManager, nl: &Netlink) {
        let Some(w) = &mut self.write_vip else {
            return;
        };
        match (hold, w.held) {
            (true, None) => {
                let link = match nl.link(&w.ifname) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("database: write VIP {} on {}: {e}", w.vip, w.ifname);
                        return;
                    }
                };
                match vips.add(&w.ifname, link.index, &[w.vip]) {
                    Ok(()) => {
                        tracing::info!("database: write VIP {} added on {}", w.vip, w.ifname);
                        w.held = Some(link.index);
                        w.announce = 3;
                    }
                    Err(e) => tracing::error!("database: {}", e.message),
                }
            }
            (false, Some(index)) => {
                vips.remove(&w.ifname, index, &[w.vip]);
                tracing::info!("database: write VIP {} removed from {}", w.vip, w.ifname);
                w.held = None;
                w.announce = 0;
            }
            _ => {}
        }
        if let (Some(index), true) = (w.held, w.announce > 0) {
            w.announce -= 1;
            announce(&w.ifname, index, nl, w.vip.address);
        }
    }

    /// Starts a switchover (`POST /v1/switchover`): this node must run the primary, and `to`
    /// (default: the only peer) a streaming standby. Returns at once; progress shows in the
    /// status and the log.
    pub fn switchover(
        &mut self,
        to: Option<String>,
        cluster: &super::cluster::Cluster,
    ) -> Result<String, duet_admin::ActionError> {
        let refuse = |message: String| duet_admin::ActionError {
            status: 409,
            message,
        };
        let primary = duet_dbfail::Role::Primary.code();
        if self.out.state.as_ref().is_none_or(|s| s.role != primary) || !self.out.writable {
            return Err(refuse(
                "this node does not run the writable primary: ask the primary's node".into(),
            ));
        }
        let peers = cluster.peer_databases();
        let target = match to {
            Some(t) => t,
            None if peers.len() == 1 => peers[0].name.clone(),
            None => return Err(refuse("several standbys: name one with ?to=NODE".into())),
        };
        let Some(peer) = peers.iter().find(|p| p.name == target) else {
            return Err(refuse(format!("{target} is not a node of this cluster")));
        };
        let streaming = peer
            .report
            .as_ref()
            .is_some_and(|r| r.role == duet_dbfail::Role::Replica);
        if !peer.alive || !streaming {
            return Err(refuse(format!(
                "{target} is not a live standby: a switchover needs one that streams"
            )));
        }
        let id = self
            .view
            .borrow()
            .switchover
            .as_ref()
            .map_or(1, |(n, _)| n + 1);
        tracing::info!("database: switchover to {target} asked");
        self.view
            .send_modify(|v| v.switchover = Some((id, target.clone())));
        Ok(format!("switchover to {target} started"))
    }

    /// `duet db reinit`: the agent clones this node's data again from the primary (moving
    /// the old directory aside). Returns at once.
    pub fn reinit(&mut self) -> String {
        tracing::warn!("database: reinit asked: the data directory will be cloned again");
        self.view.send_modify(|v| v.reinit += 1);
        "reinit started: the data directory is moved aside and cloned again from the primary".into()
    }

    /// Whether the write VIP is held (its lifetime is refreshed with the other VIPs).
    pub fn holds_write_vip(&self) -> bool {
        self.write_vip.as_ref().is_some_and(|w| w.held.is_some())
    }

    /// Stops the server cleanly (a shutdown checkpoint) and waits for the agent to end;
    /// returns its last report, for the goodbye heartbeat.
    pub fn stop(&mut self, vips: &mut VipManager, nl: &Netlink) -> Option<DbState> {
        self.hold_write_vip(false, vips, nl);
        self.view.send_modify(|v| v.stop = true);
        let out = self.thread.take()?.join().ok()?;
        out.state
    }
}

/// Gratuitous ARP (IPv4) or an unsolicited NA (IPv6) for `address` on `ifname`.
fn announce(ifname: &str, index: u32, nl: &Netlink, address: IpAddr) {
    let Ok(link) = nl.link(ifname) else {
        return;
    };
    match duet_sys::announce::Announcer::new(
        ifname,
        index,
        &link.mac,
        address.is_ipv4(),
        address.is_ipv6(),
    ) {
        Ok(a) => {
            if let Err(e) = a.announce(address) {
                tracing::debug!("announcing {address}: {e}");
            }
        }
        Err(e) => tracing::debug!("{ifname}: gratuitous ARP/NA: {e}"),
    }
}

fn mode(m: SyncMode) -> Mode {
    match m {
        SyncMode::Off => Mode::Off,
        SyncMode::On => Mode::On,
        SyncMode::Strict => Mode::Strict,
    }
}

/// The server reads its configuration under the state directory as `os_user`: the directory
/// must let others through (not list: `o+x` only).
fn traversable(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
        tracing::info!(
            "state_dir {}: added o+x so the database server can reach its configuration",
            dir.display()
        );
    }
    Ok(())
}

/// The shell's spec from the config: the password read now (never logged), the peers'
/// addresses from every heartbeat link.
fn spec(config: &Config, db: &DatabaseConfig) -> Result<Spec, String> {
    let run_dir = config.node.state_dir.join("pg");
    let peers = config
        .heartbeat
        .iter()
        .flat_map(|h| &h.links)
        .flat_map(|l| &l.peers)
        .map(|p| p.ip())
        .collect();
    Ok(Spec {
        node: config.node.name.clone(),
        listen: db.listen,
        listen_all: db.write_vip.is_some(),
        data_dir: db.data_dir.clone(),
        bin_dir: db.bin_dir.clone(),
        os_user: duet_db::os_user(&db.os_user)?,
        superuser: db.superuser.clone(),
        replication_user: db.replication_user.clone(),
        password: Secret(duet_db::read_password(&db.password_file)?),
        allow: db.allow.iter().map(ToString::to_string).collect(),
        peers,
        parameters: db
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        run_dir,
    })
}

/// The agent on its thread.
struct Agent {
    pg: Postgres,
    planner: Planner,
    view: watch::Receiver<View>,
    inbox: Inbox,
    published: Arc<Published>,
    status: DatabaseStatus,
    /// The data directory as last inspected (refreshed while the server is stopped).
    data: Option<DataInfo>,
    last_refusal: Option<String>,
    last_error: Option<String>,
    /// This replica's lag was above `maximum_lag_on_failover` at the last look.
    lag_above: bool,
    epoch: std::time::Instant,
    /// The last switchover request taken (its number).
    switchover: u64,
    /// The last reinit request taken (its number).
    reinit: u64,
}

impl Agent {
    async fn run(mut self) -> Out {
        if let Err(e) = self.pg.check_programs() {
            tracing::error!("database: {e}");
            self.status.last_error = Some(e);
        }
        loop {
            let view = self.view.borrow_and_update().clone();
            if view.stop {
                return self.shut_down().await;
            }
            let now = Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64);
            if let Some((id, to)) = &view.switchover
                && *id > self.switchover
            {
                self.switchover = *id;
                tracing::info!("database: switching over to {to}: waiting for it to catch up");
                self.planner.switchover(to.clone());
            }
            if view.reinit > self.reinit {
                self.reinit = view.reinit;
                self.planner.reinit();
            }
            let running = self.pg.running();
            if !running
                || !matches!(
                    self.data.as_ref().map(|d| &d.data),
                    Some(Data::Cluster { .. })
                )
            {
                self.data = Some(duet_db::inspect_data(self.pg.spec()));
            }
            let info = self
                .data
                .clone()
                .unwrap_or_else(|| duet_db::inspect_data(self.pg.spec()));
            let server = self.pg.observe().await;
            let plan = self.planner.next(&Facts {
                now,
                leadership: &view.leadership,
                data: &info.data,
                server: &server,
                peers: &view.peers,
                authority: view.authority,
                record: view.record.as_ref(),
            });
            if plan.refusal != self.last_refusal {
                match &plan.refusal {
                    Some(why) => {
                        tracing::warn!("database: this replica may not be promoted: {why}");
                        self.status.refusals += 1;
                        self.event("refused", why.clone());
                    }
                    None if self.last_refusal.is_some() => {
                        tracing::info!("database: this replica is promotable again")
                    }
                    None => {}
                }
                self.last_refusal = plan.refusal.clone();
            }
            let out = Out {
                state: self.state(&info, &server),
                master: plan.master,
                wants: plan.wants,
                record_query: plan.needs_record,
                writable: matches!(server, Server::Primary(_)) && view.leadership.may_lead,
                restarting: plan.master
                    && matches!(server, Server::Starting | Server::Stopped)
                    && view.leadership.may_lead,
                record_write: match &plan.step {
                    Step::Act(Action::Record(r)) => Some(r.clone()),
                    _ => None,
                },
            };
            self.publish(&view, &server, &plan.step, &plan.refusal, out.writable);
            if self.inbox.send(Input::Database(out)).await.is_err() {
                return Out::default();
            }
            let pause = match plan.step {
                Step::Act(action) => {
                    // A stop does not wait for a clone or a rewind to finish.
                    let mut stop = self.view.clone();
                    let stopping = async move {
                        while !stop.borrow_and_update().stop {
                            if stop.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        pause = self.act(action, &view) => pause,
                        () = stopping => Duration::ZERO,
                    }
                }
                Step::Wait(_) => LOOK_EVERY,
            };
            tokio::select! {
                _ = self.view.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// What the heartbeat says of this node's database.
    fn state(&self, info: &DataInfo, server: &Server) -> Option<DbState> {
        let system_id = match info.data {
            Data::Cluster { system_id } => system_id,
            _ => 0,
        };
        let (role, timeline, lsn, clean_stop) = match server {
            Server::Primary(p) => (Role::Primary, p.timeline, p.lsn, false),
            Server::Replica(r) => (Role::Replica, r.timeline, r.received, false),
            Server::Starting => (Role::Stopped, info.timeline, info.checkpoint, false),
            Server::Stopped if system_id != 0 => {
                (Role::Stopped, info.timeline, info.checkpoint, info.clean)
            }
            Server::Stopped => (Role::Unknown, 0, 0, false),
        };
        Some(DbState {
            role: role.code(),
            clean_stop,
            listen: self.pg.spec().listen,
            system_id,
            timeline,
            lsn,
        })
    }

    fn publish(
        &mut self,
        view: &View,
        server: &Server,
        step: &Step,
        refusal: &Option<String>,
        writable: bool,
    ) {
        let s = &mut self.status;
        s.observed_unix_ms = crate::witness::unix_ms();
        s.writable = writable;
        s.refusal = refusal.clone();
        s.step = match step {
            Step::Act(a) => format!("{a:?}"),
            Step::Wait(w) => w.clone(),
        };
        s.record = view.record.as_ref().map(ToString::to_string);
        s.max_lag_bytes = self.planner.config().max_lag;
        let primary_lsn = view
            .peers
            .iter()
            .filter_map(|p| p.report.as_ref())
            .filter(|r| r.role == Role::Primary)
            .map(|r| r.lsn)
            .max();
        (
            s.role,
            s.timeline,
            s.lsn,
            s.lag_bytes,
            s.streaming,
            s.upstream,
            s.sync_standby,
        ) = match server {
            Server::Primary(p) => (
                "primary".into(),
                p.timeline,
                fmt_lsn(p.lsn),
                None,
                false,
                None,
                p.followers.iter().find(|f| f.sync).map(|f| f.name.clone()),
            ),
            Server::Replica(r) => (
                "replica".into(),
                r.timeline,
                fmt_lsn(r.received),
                primary_lsn.map(|p| p.saturating_sub(r.received)),
                r.streaming,
                r.upstream.clone(),
                None,
            ),
            Server::Starting => ("starting".into(), 0, String::new(), None, false, None, None),
            Server::Stopped => ("stopped".into(), 0, String::new(), None, false, None, None),
        };
        s.peers = view
            .peers
            .iter()
            .map(|p| DatabasePeer {
                name: p.name.clone(),
                alive: p.alive,
                role: p
                    .report
                    .as_ref()
                    .map_or("unknown".into(), |r| r.role.to_string()),
                timeline: p.report.as_ref().map_or(0, |r| r.timeline),
                lsn: p.report.as_ref().map_or(String::new(), |r| fmt_lsn(r.lsn)),
            })
            .collect();
        let above = s.role == "replica" && s.lag_bytes.is_some_and(|l| l > s.max_lag_bytes);
        let bytes = s.lag_bytes.unwrap_or(0);
        self.published.set_database(s.clone());
        if above != self.lag_above {
            self.lag_above = above;
            self.published
                .emit(duet_admin::EventKind::Lag { bytes, above });
        }
    }

    fn upstream(&self, view: &View, node: &str) -> Result<Upstream, String> {
        view.peers
            .iter()
            .find(|p| p.name == node)
            .and_then(|p| p.report.as_ref())
            .map(|r| Upstream {
                node: node.to_string(),
                addr: r.listen,
            })
            .ok_or_else(|| format!("{node}'s server address is not known yet"))
    }

    /// An event on the stream, from this node's database.
    fn event(&self, what: &str, detail: String) {
        self.published.emit(duet_admin::EventKind::Database {
            what: what.into(),
            detail,
        });
    }

    /// Carries out `action`; returns how long to wait before the next look.
    async fn act(&mut self, action: Action, view: &View) -> Duration {
        let name = action_name(&action);
        let result = match &action {
            Action::Initdb => {
                tracing::info!("database: bootstrapping a new cluster (initdb)");
                self.pg.initdb().await
            }
            Action::Clone { from } => match self.upstream(view, from) {
                Ok(up) => self.clone_from(&up, false).await,
                Err(e) => Err(e),
            },
            Action::Reclone { from } => match self.upstream(view, from) {
                Ok(up) => self.clone_from(&up, true).await,
                Err(e) => Err(e),
            },
            Action::Start {
                primary,
                upstream,
                sync_names,
            } => {
                let up = match upstream {
                    Some(n) => self.upstream(view, n).ok(),
                    None => None,
                };
                if *primary {
                    tracing::warn!("database: restarting the primary in place after its crash");
                }
                self.pg.start(*primary, up.as_ref(), sync_names).await
            }
            Action::Follow { upstream } => match self.upstream(view, upstream) {
                Ok(up) => {
                    tracing::info!("database: following {} ({})", up.node, up.addr);
                    self.pg.follow(&up).await
                }
                Err(e) => Err(e),
            },
            Action::Fence => {
                tracing::warn!(
                    "database: fencing the primary (immediate shutdown): {}",
                    view.leadership.why_not
                );
                self.pg.fence().await;
                Ok(())
            }
            Action::Stop => {
                match self.planner.handover() {
                    Some(to) => tracing::info!(
                        "database: switchover: stopping the primary cleanly; {to} takes over"
                    ),
                    None => tracing::warn!(
                        "database: stopping the primary: this node gives up leadership"
                    ),
                }
                self.pg.stop().await;
                Ok(())
            }
            Action::Promote { sync_names } => {
                let t = std::time::Instant::now();
                tracing::info!(
                    "database: promoting this replica (term {})",
                    view.leadership.term
                );
                let r = self.pg.promote(sync_names).await;
                if r.is_ok() {
                    tracing::info!(
                        "database: promoted in {} ms (pg_promote)",
                        t.elapsed().as_millis()
                    );
                    self.status.last_promotion = Some(format!(
                        "term {}, pg_promote {} ms (at {} Unix ms)",
                        view.leadership.term,
                        t.elapsed().as_millis(),
                        crate::witness::unix_ms()
                    ));
                }
                r
            }
            Action::SetSync(names) => {
                tracing::info!(
                    "database: synchronous_standby_names = {}",
                    if names.is_empty() {
                        "'' (commits do not wait)".to_string()
                    } else {
                        names.join(", ")
                    }
                );
                self.pg.set_sync(names).await
            }
            Action::Record(r) => self.await_record(r).await,
            Action::Slots { create, drop } => self.pg.slots(create, drop).await,
            Action::Rewind { from } => match self.upstream(view, from) {
                Ok(up) => {
                    tracing::info!("database: rewinding onto {}'s timeline", up.node);
                    match self.pg.rewind(&up).await {
                        Ok(()) => Ok(()),
                        // The source could not be reached: try again later, rewinding
                        // (not cloning) when it answers.
                        Err(duet_db::RewindError::Source(e)) => {
                            tracing::warn!("database: {e}");
                            self.planner.not_tried(&action);
                            return Duration::from_secs(1);
                        }
                        Err(duet_db::RewindError::Rewind(e)) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
        };
        *self.status.counters.entry(name.into()).or_default() += 1;
        match result {
            Ok(()) => {
                self.status.last_error = None;
                self.last_error = None;
                if let Some((what, detail)) = done(&action, view) {
                    self.event(what, detail);
                }
                Duration::ZERO
            }
            Err(e) => {
                let e = format!("{name}: {e}");
                if self.last_error.as_ref() != Some(&e) {
                    tracing::error!("database: {e}");
                    self.event("failed", e.clone());
                }
                self.status.last_error = Some(e.clone());
                self.last_error = Some(e);
                *self.status.counters.entry("errors".into()).or_default() += 1;
                self.planner.failed(&action);
                Duration::from_secs(1)
            }
        }
    }

    async fn clone_from(&mut self, up: &Upstream, again: bool) -> Result<(), String> {
        // Peers see a node that clones, not one without data.
        let out = Out {
            state: Some(DbState {
                role: Role::Cloning.code(),
                clean_stop: false,
                listen: self.pg.spec().listen,
                system_id: 0,
                timeline: 0,
                lsn: 0,
            }),
            ..Out::default()
        };
        let _ = self.inbox.send(Input::Database(out)).await;
        let published = self.published.clone();
        let mut status = self.status.clone();
        status.role = "cloning".into();
        let mut last = std::time::Instant::now() - Duration::from_secs(10);
        let progress = |line: &str| {
            if last.elapsed() >= Duration::from_secs(1) {
                last = std::time::Instant::now();
                tracing::info!("database: pg_basebackup: {line}");
                status.progress = Some(line.to_string());
                status.observed_unix_ms = crate::witness::unix_ms();
                published.set_database(status.clone());
            }
        };
        let r = if again {
            self.pg.reclone(up, progress).await
        } else {
            self.pg.clone_from(up, progress).await
        };
        self.status.progress = None;
        self.data = None;
        r
    }

    /// Waits (2 s at most) until the lease authority confirms `record`; the control loop
    /// writes it meanwhile.
    async fn await_record(&mut self, record: &Record) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if !self.view.borrow().leadership.may_lead {
                // Back to the planner at once: a primary that lost leadership must fence now,
                // not after this wait.
                return Err("leadership was lost while the record was being written".into());
            }
            if self.view.borrow().record.as_ref() == Some(record) {
                tracing::info!("database: recorded {record}");
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, self.view.changed())
                .await
                .is_err()
            {
                return Err("the lease authority did not confirm the record within 2 s".into());
            }
        }
    }

    async fn shut_down(&mut self) -> Out {
        if self.pg.running() {
            tracing::info!("database: stopping the server (fast shutdown)");
            self.pg.stop().await;
        }
        let info = duet_db::inspect_data(self.pg.spec());
        Out {
            state: self.state(&info, &Server::Stopped),
            ..Out::default()
        }
    }
}

/// The event an action that succeeded makes: what, and the detail. Slot changes are
/// bookkeeping; records are told by the cluster when the authority confirms them.
fn done(a: &Action, view: &View) -> Option<(&'static str, String)> {
    let term = view.leadership.term;
    Some(match a {
        Action::Initdb => ("bootstrapped", "initdb: a new cluster".into()),
        Action::Clone { from } => ("cloned", format!("from {from}")),
        Action::Reclone { from } => ("cloned", format!("again from {from}")),
        Action::Start { primary: true, .. } => ("started", "as primary (restart in place)".into()),
        Action::Start { upstream, .. } => (
            "started",
            match upstream {
                Some(u) => format!("as standby of {u}"),
                None => "as standby".into(),
            },
        ),
        Action::Follow { upstream } => ("following", upstream.clone()),
        Action::Fence => ("fenced", view.leadership.why_not.clone()),
        Action::Stop => ("stopped", "the primary stopped cleanly".into()),
        Action::Promote { .. } => ("promoted", format!("term {term}")),
        Action::SetSync(names) if names.is_empty() => {
            ("sync", "commits do not wait for a standby".into())
        }
        Action::SetSync(names) => ("sync", format!("commits wait for {}", names.join(", "))),
        Action::Rewind { from } => ("rewound", format!("onto {from}'s timeline")),
        Action::Record(_) | Action::Slots { .. } => return None,
    })
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Initdb => "bootstraps",
        Action::Clone { .. } => "clones",
        Action::Start { .. } => "starts",
        Action::Follow { .. } => "follows",
        Action::Fence => "fences",
        Action::Promote { .. } => "promotions",
        Action::SetSync(_) => "sync_changes",
        Action::Record(_) => "records",
        Action::Slots { .. } => "slot_changes",
        Action::Rewind { .. } => "rewinds",
        Action::Reclone { .. } => "reclones",
        Action::Stop => "stops",
    }
}
