//! The control plane: one task on its own thread that owns every VRRP instance.
//!
//! It loops: wait for a packet, a tracker change, a signal or the earliest timer; feed the cores;
//! then drain their outputs (adverts to send, VIPs to add or remove, transitions to log and hand
//! to the notify hooks). Nothing here blocks for long: netlink round trips take microseconds and
//! child processes live on the hooks thread.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_admin::{Published, Status, VrrpCounters, VrrpStatus};
use duet_config::Config;
use duet_sys::guardian::Goodbye;
use duet_sys::{Announcer, Netlink, VrrpSocket};
use duet_time::Instant;
use duet_vrrp::{
    Action, Advert, DropReason, RiseFall, State, SyncGroup, TrackedHealth, Tracker, TrackerReading,
    packet::check_hop_limit,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::hooks::{HookJob, Hooks, ScriptResult};
use super::instance::{Inst, SocketKey};
use super::vips::VipManager;
use super::watch::{self, WatchList};

/// Inputs to the control loop.
#[derive(Debug)]
pub enum Input {
    /// A VRRP packet arrived.
    Packet {
        key: SocketKey,
        at: Instant,
        src: IpAddr,
        dst: IpAddr,
        hop_limit: u8,
        bytes: Vec<u8>,
    },
    /// Link carrier states changed (interface name → running).
    Links(BTreeMap<String, bool>),
    /// Track file values changed.
    Files(BTreeMap<PathBuf, i64>),
    /// SIGTERM / SIGINT.
    Shutdown,
    /// SIGHUP.
    Reload,
}

/// Maps the process's monotonic clock onto the cores' time values.
#[derive(Debug, Clone, Copy)]
pub struct Clock(std::time::Instant);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock(std::time::Instant::now())
    }
    /// Current time.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.0.elapsed().as_nanos() as u64)
    }
    /// The tokio instant of a core time value.
    pub fn to_tokio(self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_nanos(t.as_nanos()))
    }
}

struct SocketEntry {
    sock: Arc<VrrpSocket>,
    reader: AbortHandle,
    announcer: Option<Announcer>,
}

struct ScriptSlot {
    cfg: duet_config::TrackScriptConfig,
    state: RiseFall,
    task: AbortHandle,
}

/// The control plane.
pub struct ControlPlane {
    config: Config,
    config_path: PathBuf,
    clock: Clock,
    nl: Netlink,
    instances: Vec<Inst>,
    groups: Vec<SyncGroup>,
    sockets: HashMap<SocketKey, SocketEntry>,
    vips: VipManager,
    hooks: Hooks,
    scripts: BTreeMap<String, ScriptSlot>,
    links: BTreeMap<String, bool>,
    files: BTreeMap<PathBuf, i64>,
    input_tx: mpsc::UnboundedSender<Input>,
    script_tx: mpsc::UnboundedSender<ScriptResult>,
    watch_list: tokio::sync::watch::Sender<WatchList>,
    published: Arc<Published>,
    unmatched_drops: [u64; DropReason::ALL.len()],
    drop_logged: HashMap<(DropReason, IpAddr), std::time::Instant>,
    next_refresh: Option<Instant>,
    started: std::time::Instant,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

/// Receivers the loop waits on.
pub struct Inputs {
    input_rx: mpsc::UnboundedReceiver<Input>,
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
    ) -> Result<(ControlPlane, Inputs, mpsc::UnboundedSender<Input>), String> {
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (script_tx, script_rx) = mpsc::unbounded_channel();
        let (watch_list, watch_rx) = tokio::sync::watch::channel(WatchList::default());
        tokio::spawn(watch::run(watch_rx, input_tx.clone()));
        let mut cp = ControlPlane {
            nl: Netlink::open().map_err(|e| format!("netlink: {e}"))?,
            config: Config::default(),
            config_path,
            clock: Clock::new(),
            instances: Vec::new(),
            groups: Vec::new(),
            sockets: HashMap::new(),
            vips,
            hooks,
            scripts: BTreeMap::new(),
            links: BTreeMap::new(),
            files: BTreeMap::new(),
            input_tx: input_tx.clone(),
            script_tx,
            watch_list,
            published,
            unmatched_drops: [0; DropReason::ALL.len()],
            drop_logged: HashMap::new(),
            next_refresh: None,
            started: std::time::Instant::now(),
        };
        cp.apply_config(config)?;
        Ok((
            cp,
            Inputs {
                input_rx,
                script_rx,
            },
            input_tx,
        ))
    }

    /// Runs until shutdown; returns after every instance has stepped down.
    pub async fn run(mut self, mut inputs: Inputs) {
        loop {
            self.drain();
            self.publish();
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(self.clock.to_tokio(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                input = inputs.input_rx.recv() => match input {
                    Some(Input::Shutdown) | None => break,
                    Some(Input::Reload) => self.reload(),
                    Some(input) => self.handle(input),
                },
                Some(result) = inputs.script_rx.recv() => self.script_result(result),
                () = sleep => self.timers(),
            }
        }
        self.shutdown();
    }

    fn handle(&mut self, input: Input) {
        match input {
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
                    if self.links.get(name) != Some(up) {
                        tracing::info!("interface {name} is {}", if *up { "up" } else { "down" });
                    }
                }
                self.links = links;
                self.retrack();
            }
            Input::Files(files) => {
                self.files = files;
                self.retrack();
            }
            Input::Shutdown | Input::Reload => {}
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
                self.count_drop(key, vrid, src, reason);
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
            if !inst.cfg.unicast_peers.is_empty() && !inst.cfg.unicast_peers.contains(&src) {
                inst.core.count_drop(DropReason::UnknownPeer);
                continue;
            }
            if let Err(reason) = inst.core.handle_advert(at, src, &advert)
                && !matches!(reason, DropReason::OwnAdvert)
            {
                let name = inst.cfg.name.clone();
                log_drop(&mut self.drop_logged, &name, src, reason);
            }
        }
        if !matched {
            self.unmatched_drops[DropReason::UnknownVrid.index()] += 1;
        }
    }

    fn count_drop(&mut self, key: SocketKey, vrid: Option<u8>, src: IpAddr, reason: DropReason) {
        let inst = self
            .instances
            .iter_mut()
            .find(|i| i.key == key && Some(i.cfg.vrid) == vrid);
        let name = match inst {
            Some(i) => {
                i.core.count_drop(reason);
                i.cfg.name.clone()
            }
            None => {
                self.unmatched_drops[reason.index()] += 1;
                String::from("-")
            }
        };
        log_drop(&mut self.drop_logged, &name, src, reason);
    }

    fn script_result(&mut self, r: ScriptResult) {
        let Some(slot) = self.scripts.get_mut(&r.name) else {
            return;
        };
        if let Some(up) = slot.state.record(r.passed) {
            if up {
                tracing::info!("track script {} is up", r.name);
            } else {
                tracing::warn!("track script {} is down: {}", r.name, r.detail);
            }
            self.retrack();
        }
    }

    /// Recomputes every instance's tracking input from the latest readings.
    fn retrack(&mut self) {
        let now = self.clock.now();
        for i in 0..self.instances.len() {
            let health = self.tracking_of(&self.instances[i]);
            if *self.instances[i].core.tracking() != health {
                self.instances[i].core.set_tracking(now, health);
            }
        }
    }

    fn trackers_of(&self, inst: &Inst) -> Vec<Tracker> {
        let link = |name: &str| TrackerReading::Health(self.links.get(name).copied());
        // The instance's own interface is always tracked: no VIP on a link without carrier.
        let mut trackers = vec![Tracker {
            name: format!("interface {}", inst.cfg.interface),
            weight: 0,
            reading: link(&inst.cfg.interface),
        }];
        for s in &inst.cfg.track_scripts {
            if let Some(slot) = self.scripts.get(s) {
                trackers.push(Tracker {
                    name: format!("script {s}"),
                    weight: slot.cfg.weight,
                    reading: TrackerReading::Health(slot.state.is_up()),
                });
            }
        }
        for t in &inst.cfg.track_interfaces {
            trackers.push(Tracker {
                name: format!("interface {}", t.name),
                weight: t.weight,
                reading: link(&t.name),
            });
        }
        for f in &inst.cfg.track_files {
            trackers.push(Tracker {
                name: format!("file {}", f.path.display()),
                weight: f.weight,
                reading: TrackerReading::Value(self.files.get(&f.path).copied().unwrap_or(0)),
            });
        }
        trackers
    }

    fn tracking_of(&self, inst: &Inst) -> TrackedHealth {
        duet_vrrp::combine(&self.trackers_of(inst))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut t = self.next_refresh;
        for i in &self.instances {
            for d in [
                i.core.poll_timeout(),
                i.garp.map(|(at, _)| at),
                i.garp_refresh,
            ]
            .into_iter()
            .flatten()
            {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        }
        t
    }

    fn timers(&mut self) {
        let now = self.clock.now();
        for i in 0..self.instances.len() {
            self.instances[i].core.handle_timeout(now);
            let inst = &mut self.instances[i];
            if inst.garp_refresh.is_some_and(|t| t <= now) {
                let every = inst.cfg.garp.refresh.0;
                inst.garp_refresh = Some(now + every);
                inst.garp = Some((now, inst.cfg.garp.count));
            }
            if let Some((at, remaining)) = inst.garp
                && at <= now
            {
                if let Some(a) = self
                    .sockets
                    .get(&inst.key)
                    .and_then(|s| s.announcer.as_ref())
                {
                    for vip in &inst.cfg.vips {
                        if let Err(e) = a.announce(vip.address) {
                            tracing::debug!("announcing {vip}: {e}");
                        }
                    }
                }
                inst.garp = (remaining > 1).then(|| (now + inst.garp_interval(), remaining - 1));
            }
        }
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.vips.refresh();
            self.next_refresh = self.vips.refresh_interval().map(|d| now + d);
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
        for i in 0..self.instances.len() {
            while let Some(action) = self.instances[i].core.poll_action() {
                self.act(i, action, now);
            }
            while let Some(advert) = self.instances[i].core.poll_transmit() {
                let inst = &self.instances[i];
                let Some(entry) = self.sockets.get(&inst.key) else {
                    continue;
                };
                for (dst, bytes) in inst.encode(&advert) {
                    if let Err(e) = entry.sock.send(inst.source, dst, &bytes) {
                        tracing::debug!("{}: sending advert to {dst}: {e}", inst.cfg.name);
                    }
                }
            }
        }
    }

    fn act(&mut self, i: usize, action: Action, now: Instant) {
        let node = self.config.node.name.clone();
        let inst = &mut self.instances[i];
        match action {
            Action::Transition { from, to, reason } => {
                let priority = inst.core.effective_priority();
                tracing::info!(
                    "{}: {from} -> {to} ({reason}), effective priority {priority}",
                    inst.cfg.name
                );
                inst.last_reason = reason.to_string();
                inst.since = std::time::Instant::now();
                if to != State::Master {
                    inst.garp = None;
                    inst.garp_refresh = None;
                }
                submit_hooks(&self.hooks, &node, inst, from, to, &reason.to_string());
            }
            Action::AddVips => {
                let (name, ifname, ifindex) = (
                    inst.cfg.name.clone(),
                    inst.cfg.interface.clone(),
                    inst.ifindex,
                );
                let goodbyes = inst
                    .encode(&inst.goodbye())
                    .into_iter()
                    .map(|(dst, message)| Goodbye {
                        ifname: ifname.clone(),
                        ifindex,
                        src: inst.source,
                        dst,
                        message,
                    })
                    .collect();
                let vips = inst.cfg.vips.clone();
                self.vips.add(&ifname, ifindex, &vips);
                self.vips.set_goodbyes(&name, goodbyes);
                if self.next_refresh.is_none() {
                    self.next_refresh = self.vips.refresh_interval().map(|d| now + d);
                }
            }
            Action::RemoveVips => {
                let (name, ifname, ifindex) = (
                    inst.cfg.name.clone(),
                    inst.cfg.interface.clone(),
                    inst.ifindex,
                );
                let vips = inst.cfg.vips.clone();
                self.vips.remove(&ifname, ifindex, &vips);
                self.vips.clear_goodbyes(&name);
            }
            Action::Announce => {
                if inst.cfg.garp.count > 0 {
                    inst.garp = Some((now, inst.cfg.garp.count));
                }
                let refresh = inst.cfg.garp.refresh.0;
                inst.garp_refresh = (!refresh.is_zero()).then(|| now + refresh);
            }
        }
    }

    /// Builds instances, sockets and scripts for `config`, keeping unchanged instances as they
    /// are (no flap on reload). On error nothing changes.
    fn apply_config(&mut self, config: Config) -> Result<(), String> {
        let all_vips: Vec<IpAddr> = config
            .vrrp
            .iter()
            .flat_map(|v| v.vips.iter().map(|x| x.address))
            .collect();
        let mut old: Vec<Option<Inst>> = std::mem::take(&mut self.instances)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::new();
        let mut fresh = Vec::new();
        let mut failed = None;
        for v in &config.vrrp {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.cfg == *v))
                .and_then(Option::take);
            match kept {
                Some(inst) => next.push(inst),
                None => match Inst::new(&self.nl, v, &all_vips) {
                    Ok(inst) => {
                        fresh.push(next.len());
                        next.push(inst);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
            }
        }
        if let Some(e) = failed {
            // Put the running instances back untouched.
            let mut restored: Vec<Inst> = next
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !fresh.contains(i))
                .map(|(_, x)| x)
                .collect();
            restored.extend(old.into_iter().flatten());
            self.instances = restored;
            return Err(e);
        }
        for key in next.iter().map(|i| i.key) {
            if !self.sockets.contains_key(&key) {
                let entry = self.open_socket(key, &config, &next)?;
                self.sockets.insert(key, entry);
            }
        }
        // Instances that are gone or changed step down.
        let now = self.clock.now();
        for mut inst in old.into_iter().flatten() {
            inst.core.shutdown(now);
            self.instances = vec![inst];
            self.drain_one(0, now);
            self.instances.clear();
        }
        self.instances = next;
        self.sockets.retain(|key, entry| {
            let used = self.instances.iter().any(|i| i.key == *key);
            if !used {
                entry.reader.abort();
            }
            used
        });
        self.config = config;
        self.restart_scripts();
        self.groups = self
            .config
            .sync_group
            .iter()
            .map(|(name, g)| {
                let members = g
                    .instances
                    .iter()
                    .filter_map(|n| self.instances.iter().position(|i| &i.cfg.name == n))
                    .collect();
                SyncGroup::new(name.clone(), members)
            })
            .collect();
        self.update_watch_list();
        for i in fresh {
            let health = self.tracking_of(&self.instances[i]);
            self.instances[i].core.set_tracking(now, health);
            self.instances[i].core.start(now);
        }
        Ok(())
    }

    fn drain_one(&mut self, i: usize, now: Instant) {
        while let Some(action) = self.instances[i].core.poll_action() {
            self.act(i, action, now);
        }
        while let Some(advert) = self.instances[i].core.poll_transmit() {
            let inst = &self.instances[i];
            if let Some(entry) = self.sockets.get(&inst.key) {
                for (dst, bytes) in inst.encode(&advert) {
                    let _ = entry.sock.send(inst.source, dst, &bytes);
                }
            }
        }
    }

    fn open_socket(
        &self,
        key: SocketKey,
        config: &Config,
        instances: &[Inst],
    ) -> Result<SocketEntry, String> {
        let inst = instances
            .iter()
            .find(|i| i.key == key)
            .expect("socket for an instance");
        let ifname = inst.cfg.interface.clone();
        let sock = Arc::new(VrrpSocket::open(&ifname, key.0, key.1).map_err(|e| e.to_string())?);
        let link = self.nl.link(&ifname).map_err(|e| e.to_string())?;
        let wants_garp = config
            .vrrp
            .iter()
            .any(|v| v.interface == ifname && v.garp.count > 0);
        let announcer = if wants_garp {
            let v4 = key.1 == duet_vrrp::Family::V4;
            match Announcer::new(&ifname, key.0, &link.mac, v4, !v4) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!("{ifname}: gratuitous ARP/NA disabled: {e}");
                    None
                }
            }
        } else {
            None
        };
        let reader = tokio::spawn(read_packets(
            key,
            sock.clone(),
            self.clock,
            self.input_tx.clone(),
        ))
        .abort_handle();
        Ok(SocketEntry {
            sock,
            reader,
            announcer,
        })
    }

    fn restart_scripts(&mut self) {
        let wanted = self.config.track_script.clone();
        self.scripts.retain(|name, slot| {
            let keep = wanted.get(name) == Some(&slot.cfg);
            if !keep {
                slot.task.abort();
            }
            keep
        });
        for (name, cfg) in wanted {
            if self.scripts.contains_key(&name) {
                continue;
            }
            let task = self.hooks.start_script(
                name.clone(),
                cfg.command.clone(),
                cfg.interval.0,
                cfg.timeout.0,
                self.script_tx.clone(),
            );
            let state = RiseFall::new(cfg.rise, cfg.fall);
            self.scripts.insert(name, ScriptSlot { cfg, state, task });
        }
    }

    fn update_watch_list(&mut self) {
        let mut list = WatchList::default();
        for v in &self.config.vrrp {
            list.interfaces.insert(v.interface.clone());
            list.interfaces
                .extend(v.track_interfaces.iter().map(|t| t.name.clone()));
            list.files
                .extend(v.track_files.iter().map(|f| f.path.clone()));
        }
        let _ = self.watch_list.send(list);
    }

    fn reload(&mut self) {
        let path = self.config_path.clone();
        let config = match duet_config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                for d in &e.diagnostics {
                    tracing::error!("reload rejected, keeping the running config: {d}");
                }
                return;
            }
        };
        if config.node.admin != self.config.node.admin {
            tracing::warn!("reload: node.admin changes take effect after a restart");
        }
        match self.apply_config(config) {
            Ok(()) => tracing::info!("reloaded {}", path.display()),
            Err(e) => tracing::error!("reload rejected, keeping the running config: {e}"),
        }
    }

    fn shutdown(&mut self) {
        let now = self.clock.now();
        for inst in &mut self.instances {
            inst.core.shutdown(now);
        }
        for i in 0..self.instances.len() {
            self.drain_one(i, now);
        }
        for slot in self.scripts.values() {
            slot.task.abort();
        }
        self.vips.dismiss_guardian();
        self.publish();
    }

    fn publish(&self) {
        let vrrp = self
            .instances
            .iter()
            .map(|i| {
                let stats = i.core.stats();
                let dropped = DropReason::ALL
                    .iter()
                    .filter(|r| stats.drops(**r) > 0)
                    .map(|r| (r.label().to_string(), stats.drops(*r)))
                    .collect();
                let trackers = self
                    .trackers_of(i)
                    .into_iter()
                    .map(|t| {
                        let v = match t.reading {
                            TrackerReading::Health(Some(true)) => "up".to_string(),
                            TrackerReading::Health(Some(false)) => "down".to_string(),
                            TrackerReading::Health(None) => "unknown".to_string(),
                            TrackerReading::Value(v) => v.to_string(),
                        };
                        (t.name, v)
                    })
                    .collect();
                VrrpStatus {
                    name: i.cfg.name.clone(),
                    state: i.core.state().as_str().to_string(),
                    priority: i.cfg.priority,
                    effective_priority: i.core.effective_priority(),
                    vips: i.cfg.vips.iter().map(ToString::to_string).collect(),
                    interface: i.cfg.interface.clone(),
                    vrid: i.cfg.vrid,
                    version: i.cfg.version,
                    advert_interval_ms: i.cfg.advert_interval.0.as_millis() as u64,
                    master: i.core.master().map(|m| m.address.to_string()),
                    fault: i.core.fault().map(str::to_string),
                    reason: i.last_reason.clone(),
                    in_state_seconds: i.since.elapsed().as_secs_f64(),
                    trackers,
                    counters: VrrpCounters {
                        adverts_received: stats.adverts_received,
                        adverts_sent: stats.adverts_sent,
                        priority_zero_received: stats.priority_zero_received,
                        priority_zero_sent: stats.priority_zero_sent,
                        became_master: stats.became_master,
                        dropped,
                    },
                }
            })
            .collect();
        let unmatched_drops = DropReason::ALL
            .iter()
            .filter(|r| self.unmatched_drops[r.index()] > 0)
            .map(|r| (r.label().to_string(), self.unmatched_drops[r.index()]))
            .collect();
        self.published.publish(Status {
            node: self.config.node.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            vrrp,
            unmatched_drops,
        });
    }
}

fn submit_hooks(hooks: &Hooks, node: &str, inst: &Inst, from: State, to: State, reason: &str) {
    // keepalived passes STOP for an instance that is shutting down; existing scripts expect it.
    let state_word = match to {
        State::Initialize => "STOP",
        s => s.as_str(),
    };
    let per_state = match to {
        State::Master => inst
            .cfg
            .notify_master
            .as_ref()
            .map(|c| ("notify_master", c)),
        State::Backup => inst
            .cfg
            .notify_backup
            .as_ref()
            .map(|c| ("notify_backup", c)),
        State::Fault => inst.cfg.notify_fault.as_ref().map(|c| ("notify_fault", c)),
        State::Initialize => inst.cfg.notify_stop.as_ref().map(|c| ("notify_stop", c)),
    };
    let env = vec![
        ("DUET_INSTANCE".to_string(), inst.cfg.name.clone()),
        ("DUET_NODE".to_string(), node.to_string()),
        ("DUET_OLD_STATE".to_string(), from.as_str().to_string()),
        ("DUET_NEW_STATE".to_string(), to.as_str().to_string()),
        ("DUET_REASON".to_string(), reason.to_string()),
    ];
    let timeout = inst.cfg.notify_timeout.0;
    if let Some((hook, cmd)) = per_state {
        hooks.submit(HookJob {
            instance: inst.cfg.name.clone(),
            hook,
            argv: cmd.0.clone(),
            env: env.clone(),
            timeout,
        });
    }
    if let Some(cmd) = &inst.cfg.notify {
        let mut argv = cmd.0.clone();
        argv.extend([
            "INSTANCE".to_string(),
            inst.cfg.name.clone(),
            state_word.to_string(),
            inst.core.effective_priority().to_string(),
        ]);
        hooks.submit(HookJob {
            instance: inst.cfg.name.clone(),
            hook: "notify",
            argv,
            env,
            timeout,
        });
    }
}

/// Logs a dropped packet at most once a minute per reason and sender.
fn log_drop(
    logged: &mut HashMap<(DropReason, IpAddr), std::time::Instant>,
    instance: &str,
    src: IpAddr,
    reason: DropReason,
) {
    if reason == DropReason::UnknownVrid {
        return; // other virtual routers on the LAN are normal
    }
    let now = std::time::Instant::now();
    let last = logged
        .entry((reason, src))
        .or_insert(now - Duration::from_secs(3600));
    if now.duration_since(*last) >= Duration::from_secs(60) {
        *last = now;
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
    }
}

async fn read_packets(
    key: SocketKey,
    sock: Arc<VrrpSocket>,
    clock: Clock,
    tx: mpsc::UnboundedSender<Input>,
) {
    let fd = match duet_sys::vrrp_socket::register_rx(sock.clone()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("VRRP socket: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        loop {
            match sock.recv(&mut buf) {
                Ok(r) => {
                    let bytes = buf[r.offset..r.offset + r.len].to_vec();
                    let input = Input::Packet {
                        key,
                        at: clock.now(),
                        src: r.src,
                        dst: r.dst,
                        hop_limit: r.hop_limit,
                        bytes,
                    };
                    if tx.send(input).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => tracing::debug!("VRRP receive: {e}"),
            }
        }
    }
}
