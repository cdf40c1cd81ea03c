//! duet's admin API: `GET /v1/status` (JSON) and `GET /metrics` (Prometheus text format).
//!
//! The daemon publishes a [`Status`] snapshot into a [`Published`] cell whenever something
//! changes; the server, on its own thread and runtime, only reads it. A slow or hostile HTTP
//! client therefore can never delay the control plane.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod auth;
pub mod events;
mod metrics;
mod roles;
mod server;
mod sse;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use events::{Event, EventKind, Events};
pub use metrics::render as render_metrics;
pub use server::{Action, ActionError, OPENAPI, Operator, Options, spawn};

/// `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// duet version.
    #[serde(default)]
    pub version: String,
    /// Seconds since the daemon started.
    #[serde(default)]
    pub uptime_seconds: f64,
    /// VRRP instances.
    pub vrrp: Vec<VrrpStatus>,
    /// Packets dropped before they could be matched to an instance, by reason.
    #[serde(default)]
    pub unmatched_drops: BTreeMap<String, u64>,
    /// Datagrams (VRRP, heartbeat) the control loop's inbox had no room for, since start: a
    /// flood at those ports is dropped and counted here, never queued without bound.
    #[serde(default)]
    pub inputs_dropped: u64,
    /// Load balancers.
    #[serde(default)]
    pub balancers: Vec<BalancerStatus>,
    /// The `[[service]]`s, in each group's start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// Automatic failover is off cluster-wide (`POST /v1/maintenance`), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// Heartbeat peers and the witness lease, when `[heartbeat]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// The database, when `[database]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
}

/// The database in `GET /v1/status` (and behind `/primary`, `/replica`, `/read-only`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// `primary`, `replica`, `stopped`, `cloning` or `unknown`, as last observed.
    pub role: String,
    /// The server accepted writes at the last look, that look is fresh (at most 1.5 s old),
    /// and this node may lead. A node that was frozen, or whose agent is stuck, is not
    /// reported writable from an old look.
    pub writable: bool,
    /// When the server was last looked at (Unix milliseconds).
    pub observed_unix_ms: u64,
    /// Its timeline.
    pub timeline: u32,
    /// Its WAL position (primary: flushed; replica: received), as PostgreSQL writes it.
    pub lsn: String,
    /// A replica: bytes behind the last primary position heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// A replica: it streams now.
    pub streaming: bool,
    /// A replica: the node it streams from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A primary: the standby it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_standby: Option<String>,
    /// `database.synchronous`.
    pub synchronous: String,
    /// The lag a replica may have and still answer `/replica` (bytes).
    pub max_lag_bytes: u64,
    /// What the node does or waits for.
    pub step: String,
    /// Why this replica may not be promoted, when it may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The last action that failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A clone in progress (pg_basebackup's last progress line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The last promotion of this node: when (Unix ms) and under which term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion: Option<String>,
    /// The lease authority's record, when it keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Refusals to promote since start.
    pub refusals: u64,
    /// Promotions, fences, rewinds, clones since start.
    pub counters: BTreeMap<String, u64>,
    /// The other nodes' databases, from their heartbeats.
    pub peers: Vec<DatabasePeer>,
}

/// Another node's database, as its heartbeat says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabasePeer {
    /// Its node name.
    pub name: String,
    /// Heard now.
    pub alive: bool,
    /// Its role.
    pub role: String,
    /// Its timeline.
    pub timeline: u32,
    /// Its WAL position.
    pub lsn: String,
}

/// The cluster layer in `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Every peer.
    pub peers: Vec<PeerStatus>,
    /// The lease, if a witness or etcd grants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// Cluster messages dropped, by reason (auth, replay, clock, peer, …).
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
    /// The hash of this node's cluster-wide config (hex).
    #[serde(default)]
    pub config_hash: String,
}

/// One peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node name (once heard).
    pub name: String,
    /// Its address on the first link.
    pub address: String,
    /// Heard on at least one link.
    pub alive: bool,
    /// Per link, in configuration order: heartbeats arrive.
    pub links: Vec<bool>,
    /// Per link: the heartbeat round trip in microseconds (smoothed), once timed while up.
    #[serde(default)]
    pub rtt_us: Vec<Option<u64>>,
    /// The hash of its cluster-wide config (hex), as its heartbeats say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Its cluster-wide config differs from this node's (`duet diff-config`).
    #[serde(default)]
    pub config_differs: bool,
    /// The highest term it reported.
    pub term: u64,
}

/// This node's lease, from the witness or etcd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Who grants it: `"witness"` or `"etcd"`.
    #[serde(default)]
    pub authority: String,
    /// The witness address, or the etcd endpoints.
    pub witness: String,
    /// Whether this node holds a valid lease.
    pub valid: bool,
    /// For how much longer (this node's conservative view).
    pub valid_for_ms: u64,
    /// The term held or last learned.
    pub term: u64,
    /// Why the authority cannot grant leases now, as it said (a degraded cluster: nobody can
    /// take over after a silent failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One load balancer in `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerStatus {
    /// Name.
    pub name: String,
    /// Listen address.
    pub bind: String,
    /// `tcp` or `http`.
    pub mode: String,
    /// Client connections closed because no backend could be reached.
    pub client_errors: u64,
    /// Backends in configuration order.
    pub backends: Vec<BackendStatus>,
}

/// One backend of a balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `ip:port`.
    pub address: String,
    /// `"default"` or the route (`host/path`) whose pool lists it.
    #[serde(default)]
    pub pool: String,
    /// Takes new connections.
    pub up: bool,
    /// Drained by the operator (finishes what it has, takes nothing new).
    #[serde(default)]
    pub draining: bool,
    /// While down: why (the check or request failure that took it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<String>,
    /// Configured weight.
    pub weight: u32,
    /// Configured in-flight limit (0: none).
    #[serde(default)]
    pub maxconn: u32,
    /// Requests (http) or connections (tcp) forwarded.
    pub connections: u64,
    /// Failed connects.
    pub connect_errors: u64,
    /// Failures by kind: connect, timeout, reset, bad_response, http_5xx.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// In flight now.
    pub active: u32,
    /// Latency from request head to response (http), as a histogram.
    #[serde(default)]
    pub latency: Histogram,
}

/// A latency histogram in Prometheus' shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(upper bound in seconds, observations at or below it)`, cumulative, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum_seconds: f64,
}

/// One VRRP instance in `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// Instance name.
    pub name: String,
    /// `INIT`, `BACKUP`, `MASTER` or `FAULT`.
    pub state: String,
    /// Configured priority.
    pub priority: u8,
    /// Priority after tracking.
    pub effective_priority: u8,
    /// VIPs with prefix.
    pub vips: Vec<String>,
    /// Interface.
    #[serde(default)]
    pub interface: String,
    /// Virtual router id.
    #[serde(default)]
    pub vrid: u8,
    /// 2 or 3.
    #[serde(default)]
    pub version: u8,
    /// Advert interval in milliseconds.
    #[serde(default)]
    pub advert_interval_ms: u64,
    /// Address of the master heard last (when BACKUP).
    #[serde(default)]
    pub master: Option<String>,
    /// Fault description (when FAULT).
    #[serde(default)]
    pub fault: Option<String>,
    /// The VIPs this node has configured on the interface right now (what the kernel was
    /// told, not what the state implies).
    #[serde(default)]
    pub vips_held: Vec<String>,
    /// Why the cluster layer does not allow MASTER now, if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<String>,
    /// Reason of the last transition.
    #[serde(default)]
    pub reason: String,
    /// Seconds since the last transition.
    #[serde(default)]
    pub in_state_seconds: f64,
    /// Seconds this node was MASTER (served the VIPs) since the daemon started.
    #[serde(default)]
    pub master_seconds: f64,
    /// Trackers: name → "up", "down", "unknown" or a file value.
    #[serde(default)]
    pub trackers: BTreeMap<String, String>,
    /// Counters.
    #[serde(default)]
    pub counters: VrrpCounters,
}

/// Counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VrrpCounters {
    /// Adverts received and processed.
    pub adverts_received: u64,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Priority-0 adverts received.
    pub priority_zero_received: u64,
    /// Priority-0 adverts sent.
    pub priority_zero_sent: u64,
    /// Transitions to MASTER.
    pub became_master: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// `GET /v1/config/cluster`: this node's cluster-wide config and its peers', for
/// `duet diff-config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigViews {
    /// This node.
    pub node: String,
    /// Its view's hash (hex).
    pub hash: String,
    /// Its cluster-wide config (TOML, sorted keys).
    pub view: String,
    /// The peers.
    pub peers: Vec<PeerConfig>,
}

/// A peer's cluster-wide config, as far as known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Its node name.
    pub name: String,
    /// The hash its heartbeats carry (hex).
    pub hash: Option<String>,
    /// Its view, once received (it comes in pieces while the hashes differ), and that
    /// view's hash.
    pub view: Option<String>,
    /// The received view's hash (hex): older than `hash` while a new one arrives.
    pub view_hash: Option<String>,
}

/// One `[[service]]` in `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// The instance whose master runs it.
    pub follows: String,
    /// `exec`, `systemd`, `mount`.
    pub kind: String,
    /// `running`, `stopped`, `starting`, `stopping`, `stop failed`, `restarting`.
    pub state: String,
    /// Its last failure, until it runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its group waits for the peer to stop these services before starting them.
    #[serde(default)]
    pub waiting_for_peer: bool,
    /// Its group made the node step down, and why (until `duet service reset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_down: Option<String>,
}

/// Maintenance in `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    /// Who turned it on (a token's name).
    pub by: String,
    /// The setting's version (it rises with every change, cluster-wide).
    pub version: u64,
}

/// The latest snapshot, shared between the daemon (writer) and the server (reader).
pub struct Published {
    status: Mutex<Arc<Status>>,
    balancers: Mutex<Option<BalancerSource>>,
    /// Written by the database agent at every look, so role endpoints answer from what the
    /// server said last, not from the control loop's slower snapshot.
    database: Mutex<Option<DatabaseStatus>>,
    /// The event stream: every producer emits here.
    events: Arc<Events>,
    /// The cluster-wide configs, for `duet diff-config`.
    config: Mutex<Arc<ConfigViews>>,
}

/// Reads the balancers' live counters; called by the admin thread per request, so the control
/// loop never builds them.
pub type BalancerSource = Arc<dyn Fn() -> Vec<BalancerStatus> + Send + Sync>;

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").finish_non_exhaustive()
    }
}

impl Default for Published {
    fn default() -> Published {
        Published {
            status: Mutex::new(Arc::default()),
            balancers: Mutex::new(None),
            database: Mutex::new(None),
            config: Mutex::default(),
            events: Arc::default(),
        }
    }
}

impl Published {
    /// The event stream.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Emits an event (a shorthand for `events().emit`).
    pub fn emit(&self, kind: EventKind) -> u64 {
        self.events.emit(kind)
    }

    /// Replaces the control plane's snapshot.
    pub fn publish(&self, status: Status) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(status);
    }

    /// Sets where the balancers' counters are read from (on start and after a reload).
    pub fn set_balancers(&self, source: BalancerSource) {
        *self.balancers.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Replaces the cluster-wide config views.
    pub fn set_config_views(&self, views: ConfigViews) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(views);
    }

    /// The cluster-wide config views, as last set.
    pub fn config_views(&self) -> Arc<ConfigViews> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the database's status (the database agent, at every look).
    pub fn set_database(&self, db: DatabaseStatus) {
        *self.database.lock().unwrap_or_else(|p| p.into_inner()) = Some(db);
    }

    /// The database's status, as last set.
    pub fn database(&self) -> Option<DatabaseStatus> {
        self.database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current status: the control plane's last snapshot with the balancers and the
    /// database read now.
    pub fn get(&self) -> Arc<Status> {
        let status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let source = self
            .balancers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let database = self.database();
        if source.is_none() && database.is_none() {
            return status;
        }
        let mut s = (*status).clone();
        if let Some(read) = source {
            s.balancers = read();
        }
        if let Some(mut db) = database {
            db.writable &= roles::fresh(&db);
            s.database = Some(db);
        }
        Arc::new(s)
    }
}
