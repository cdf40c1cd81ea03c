//! duet's admin API: `GET /v1/status` (JSON) and `GET /metrics` (Prometheus text format).
//!
//! The daemon publishes a [`Status`] snapshot into a [`Published`] cell whenever something
//! changes; the server, on its own thread and runtime, only reads it. A slow or hostile HTTP
//! client therefore can never delay the control plane.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod events;
mod metrics;
mod roles;
mod sse;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

pub use events::{Event, EventKind, Events};
pub use metrics::render as render_metrics;

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

/// The latest snapshot, shared between the daemon (writer) and the server (reader).
pub struct Published {
    status: Mutex<Arc<Status>>,
    balancers: Mutex<Option<BalancerSource>>,
    /// Written by the database agent at every look, so role endpoints answer from what the
    /// server said last, not from the control loop's slower snapshot.
    database: Mutex<Option<DatabaseStatus>>,
    /// The event stream: every producer emits here.
    events: Arc<Events>,
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

/// What an operator may ask for through `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST /v1/reload`: re-read the config file, as SIGHUP does.
    Reload,
    /// `POST /v1/balancers/{balancer}/backends/{backend}/drain` (`drain: true`) or `…/enable`.
    Backend {
        /// Balancer name.
        balancer: String,
        /// Backend `ip:port`.
        backend: String,
        /// Drain (true) or enable (false).
        drain: bool,
    },
    /// `POST /v1/database/reinit`: clone this node's database again from the primary.
    Reinit,
    /// `POST /v1/switchover` (`?to=NODE`): the database primary hands over to a standby.
    Switchover {
        /// The node to hand over to; `None`: the only other node.
        to: Option<String>,
    },
}

/// Why an action failed: the HTTP status to answer and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    /// 400, 404, 409, 500…
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// Carries out actions; called on a blocking thread, so it may wait for the daemon.
pub type Operator = Arc<dyn Fn(Action) -> Result<String, ActionError> + Send + Sync>;

/// Who may `POST` and what it does.
#[derive(Clone)]
pub struct Control {
    /// The operator token (`Authorization: Bearer …`).
    pub token: String,
    /// Performs the action.
    pub operator: Operator,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control { .. }")
    }
}

/// Binds `addr` now (so the caller sees bind errors) and serves on a new thread. Without
/// `control`, the API is read-only. `names`: host names besides IP literals and `localhost`
/// that clients may use for the API (`node.admin_names`).
pub fn spawn(
    addr: SocketAddr,
    published: Arc<Published>,
    control: Option<Control>,
    names: Vec<String>,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin API on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let api = Arc::new(Api {
        published,
        control,
        names,
        streams: Arc::default(),
    });
    std::thread::Builder::new()
        .name("duet-admin".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("admin runtime");
            rt.block_on(serve(listener, api));
        })?;
    Ok(local)
}

/// The API's state: what it reads and who may act.
struct Api {
    published: Arc<Published>,
    control: Option<Control>,
    names: Vec<String>,
    /// Event streams open now.
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// Every response's body: whole, or an event stream.
type Body = BoxBody<Bytes, Infallible>;

/// How long a connection may live, unless it carries an event stream.
const CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn serve(listener: std::net::TcpListener, api: Arc<Api>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin API: {e}");
            return;
        }
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin API accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            // Set once the connection carries an event stream: it may then outlive the limit.
            let streaming = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let marked = streaming.clone();
            let service = service_fn(move |req| {
                let api = api.clone();
                let marked = marked.clone();
                async move { Ok::<_, Infallible>(handle(req, &api, &marked, remote).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(io, service);
            tokio::pin!(conn);
            let mut limit = std::pin::pin!(tokio::time::sleep(CONNECTION_LIMIT));
            loop {
                tokio::select! {
                    _ = &mut conn => break,
                    () = &mut limit => {
                        if !streaming.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        limit.as_mut().reset(tokio::time::Instant::now() + CONNECTION_LIMIT);
                    }
                }
            }
        });
    }
}

/// Answers one request.
async fn handle(
    req: Request<hyper::body::Incoming>,
    api: &Api,
    streaming: &std::sync::atomic::AtomicBool,
    remote: SocketAddr,
) -> Response<Body> {
    let action = match answer(&req, &api.published, api.control.as_ref(), &api.names) {
        Answer::Now(response) => return response.map(BodyExt::boxed),
        Answer::Stream(last_id) => {
            let Some(slot) = sse::slot(&api.streams) else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{} event streams are open already", sse::MAX_STREAMS),
                )
                .map(BodyExt::boxed);
            };
            streaming.store(true, std::sync::atomic::Ordering::Relaxed);
            let body = sse::start(api.published.events().clone(), last_id, slot);
            let mut r = Response::new(body.boxed());
            let h = r.headers_mut();
            h.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            h.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            return r;
        }
        Answer::Act(action) => action,
    };
    let Some(control) = &api.control else {
        return error(StatusCode::FORBIDDEN, "read-only").map(BodyExt::boxed);
    };
    let op = control.operator.clone();
    let done = tokio::task::spawn_blocking(move || op(action)).await;
    let (r, ok, result) = match done {
        Ok(Ok(message)) => (
            respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&serde_json::json!({ "ok": message })).unwrap_or_default(),
            ),
            true,
            message,
        ),
        Ok(Err(e)) => (action_error(&e), false, e.message),
        Err(_) => (
            error(StatusCode::INTERNAL_SERVER_ERROR, "action failed"),
            false,
            "action failed".into(),
        ),
    };
    api.published.emit(EventKind::Operator {
        who: "operator".into(),
        role: "admin".into(),
        from: remote.ip().to_string(),
        action: format!("{} {}", req.method(), req.uri()),
        ok,
        result,
    });
    r.map(BodyExt::boxed)
}

/// The endpoints, each with the one method it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Status,
    Metrics,
    /// `/v1/events`: the kept events as JSON, or a stream.
    Events,
    /// `/primary`, `/replica`, `/read-only`.
    Role(roles::Role),
    Act(Action),
}

impl Endpoint {
    /// The endpoint at `path`, if any.
    fn at(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/status" => return Some(Endpoint::Status),
            "/v1/events" => return Some(Endpoint::Events),
            "/metrics" => return Some(Endpoint::Metrics),
            "/primary" => return Some(Endpoint::Role(roles::Role::Primary)),
            "/replica" => return Some(Endpoint::Role(roles::Role::Replica)),
            "/read-only" => return Some(Endpoint::Role(roles::Role::ReadOnly)),
            "/v1/reload" => return Some(Endpoint::Act(Action::Reload)),
            "/v1/switchover" => return Some(Endpoint::Act(Action::Switchover { to: None })),
            "/v1/database/reinit" => return Some(Endpoint::Act(Action::Reinit)),
            _ => {}
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            [
                "v1",
                "balancers",
                balancer,
                "backends",
                backend,
                verb @ ("drain" | "enable"),
            ] => Some(Endpoint::Act(Action::Backend {
                balancer: balancer.to_string(),
                backend: backend.to_string(),
                drain: *verb == "drain",
            })),
            _ => None,
        }
    }

    fn method(&self) -> Method {
        match self {
            Endpoint::Status | Endpoint::Metrics | Endpoint::Events | Endpoint::Role(_) => {
                Method::GET
            }
            Endpoint::Act(_) => Method::POST,
        }
    }
}

/// What to do with a request.
enum Answer {
    /// Answer this now.
    Now(Response<Full<Bytes>>),
    /// An authorized operator action to carry out.
    Act(Action),
    /// An event stream, resumed after this `Last-Event-ID` if any.
    Stream(Option<String>),
}

/// Checks a request in order, host, path, method, token, and says what to do with it.
fn answer<B>(
    req: &Request<B>,
    published: &Published,
    control: Option<&Control>,
    names: &[String],
) -> Answer {
    let path = req.uri().path();
    if let Err(why) = host_allowed(req, names) {
        return Answer::Now(error(StatusCode::FORBIDDEN, &why));
    }
    let Some(endpoint) = Endpoint::at(path) else {
        return Answer::Now(error(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {path}"),
        ));
    };
    let allowed = endpoint.method();
    if req.method() != allowed {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {path}: only {allowed} is allowed", req.method()),
        );
        if let Ok(v) = allowed.as_str().parse() {
            r.headers_mut().insert(hyper::header::ALLOW, v);
        }
        return Answer::Now(r);
    }
    match endpoint {
        Endpoint::Status => {
            let body = serde_json::to_vec_pretty(&*published.get()).unwrap_or_default();
            Answer::Now(respond(StatusCode::OK, "application/json", body))
        }
        Endpoint::Metrics => Answer::Now(respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(&published.get(), published.events()).into_bytes(),
        )),
        Endpoint::Events => {
            let wants_stream = req
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("text/event-stream"));
            if wants_stream {
                let last = req
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return Answer::Stream(last);
            }
            match event_list(published.events(), req.uri().query()) {
                Ok(body) => Answer::Now(respond(StatusCode::OK, "application/json", body)),
                Err(e) => Answer::Now(error(StatusCode::BAD_REQUEST, &e)),
            }
        }
        Endpoint::Role(role) => {
            let (ok, body) = roles::check(role, published.database().as_ref(), req.uri().query());
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Answer::Now(respond(code, "application/json", body.into_bytes()))
        }
        Endpoint::Act(action) => match authorize(req, control) {
            Ok(()) => match with_query(action, req.uri().query()) {
                Ok(action) => Answer::Act(action),
                Err(e) => Answer::Now(action_error(&e)),
            },
            Err(e) => Answer::Now(action_error(&e)),
        },
    }
}

/// `GET /v1/events` without a stream: `{"events": [...]}`, the kept events after `after=SEQ`
/// (default: all kept), at most `limit=N` of the newest (default 100).
fn event_list(events: &Events, query: Option<&str>) -> Result<Vec<u8>, String> {
    let mut after = 0;
    let mut limit = 100;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", v)) => {
                after = v
                    .parse()
                    .map_err(|_| format!("after={v:?}: write an event number"))?
            }
            Some(("limit", v)) => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=events::KEEP).contains(n))
                    .ok_or_else(|| format!("limit={v:?}: write 1..={}", events::KEEP))?
            }
            _ => {
                return Err(format!("unknown parameter {pair:?} (after=SEQ, limit=N)"));
            }
        }
    }
    let (list, missed) = match events.after(after) {
        events::Since::Kept(v) => (v, 0),
        events::Since::Gap { events, missed } => (events, missed),
    };
    let list: Vec<&Event> = list[list.len().saturating_sub(limit)..]
        .iter()
        .map(|e| &**e)
        .collect();
    let body = serde_json::json!({ "events": list, "missed": missed });
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

/// A page on another site can reach a loopback API through DNS rebinding (its own name, made
/// to resolve to 127.0.0.1): such a request carries that name as its `Host`. Only IP literals,
/// `localhost` and the configured `names` pass.
fn host_allowed<B>(req: &Request<B>, names: &[String]) -> Result<(), String> {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let Some(host) = hosts.next() else {
        // Browsers always send one; a request without is not a rebinding page.
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err("several Host headers".into());
    }
    let host = host
        .to_str()
        .map_err(|_| "unreadable Host header".to_string())?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    let ok = bare.parse::<std::net::IpAddr>().is_ok()
        || bare.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(bare));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Host {host:?} is not an address of this admin API; use its IP, localhost, or add the name to node.admin_names"
        ))
    }
}

/// Checks the operator token of an action request.
fn authorize<B>(req: &Request<B>, control: Option<&Control>) -> Result<(), ActionError> {
    let Some(control) = control else {
        return Err(ActionError {
            status: 403,
            message: "the admin API is read-only: set node.operator_token_file to allow POST"
                .into(),
        });
    };
    let mut headers = req.headers().get_all(hyper::header::AUTHORIZATION).iter();
    let first = headers.next();
    if headers.next().is_some() {
        return Err(ActionError {
            status: 400,
            message: "several Authorization headers: send exactly one".into(),
        });
    }
    let given = first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), control.token.as_bytes()) {
        return Err(ActionError {
            status: 401,
            message: "POST needs Authorization: Bearer <operator token>".into(),
        });
    }
    Ok(())
}

/// Fills an action's parameters from the query string (`/v1/switchover?to=beta`); other
/// actions take none.
fn with_query(action: Action, query: Option<&str>) -> Result<Action, ActionError> {
    let bad = |message: String| ActionError {
        status: 400,
        message,
    };
    let pairs: Vec<(&str, &str)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    match action {
        Action::Switchover { .. } => {
            let mut to = None;
            for (k, v) in pairs {
                match k {
                    "to" if !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                    {
                        to = Some(v.to_string())
                    }
                    "to" => return Err(bad(format!("to={v:?}: write a node name"))),
                    k => return Err(bad(format!("unknown parameter {k:?} (only to=NODE)"))),
                }
            }
            Ok(Action::Switchover { to })
        }
        other if pairs.is_empty() => Ok(other),
        _ => Err(bad("this action takes no parameters".into())),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn action_error(e: &ActionError) -> Response<Full<Bytes>> {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(code, &e.message)
}

fn error(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    respond(code, "application/json", body)
}

fn respond(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Published {
        let p = Published::default();
        p.publish(Status {
            node: "alpha".into(),
            vrrp: vec![VrrpStatus {
                name: "web".into(),
                state: "MASTER".into(),
                priority: 150,
                effective_priority: 120,
                vips: vec!["10.10.10.10/24".into()],
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn an_old_look_at_the_database_is_not_reported_writable() {
        let p = sample();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let look = |age_ms: u64| DatabaseStatus {
            role: "primary".into(),
            writable: true,
            observed_unix_ms: now - age_ms,
            ..Default::default()
        };
        p.set_database(look(100));
        assert!(p.get().database.as_ref().unwrap().writable);
        // A node thawed after a freeze answers before its agent looked again.
        p.set_database(look(3_000));
        let db = p.get().database.clone().unwrap();
        assert!(!db.writable, "{db:?}");
        assert_eq!(db.role, "primary", "the rest is reported as it was seen");
    }

    #[test]
    fn status_has_the_contract_fields() {
        let r = ask(Method::GET, "/v1/status", &[], None).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = futures_body(r);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["node"], "alpha");
        let w = &v["vrrp"][0];
        assert_eq!(w["name"], "web");
        assert_eq!(w["state"], "MASTER");
        assert_eq!(w["priority"], 150);
        assert_eq!(w["effective_priority"], 120);
        assert_eq!(w["vips"][0], "10.10.10.10/24");
    }

    fn control() -> Control {
        Control {
            token: "0123456789abcdef".into(),
            operator: Arc::new(|_| Ok(String::new())),
        }
    }

    /// What the API does with `method path` and `headers`: the immediate answer's status and
    /// response, or the action it would carry out.
    fn ask(
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        control: Option<&Control>,
    ) -> Result<Response<Full<Bytes>>, Action> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let names = vec!["duet.example.net".to_string()];
        match answer(&b.body(()).unwrap(), &sample(), control, &names) {
            Answer::Now(r) => Ok(r),
            Answer::Act(a) => Err(a),
            Answer::Stream(_) => panic!("{path}: a stream (tested in tests/events.rs)"),
        }
    }

    fn status(r: Result<Response<Full<Bytes>>, Action>) -> Option<StatusCode> {
        r.ok().map(|r| r.status())
    }

    #[test]
    fn unknown_paths_get_404_and_wrong_methods_405_with_allow() {
        let r = ask(Method::GET, "/v2/nope", &[], None).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            String::from_utf8(futures_body(r))
                .unwrap()
                .contains("/v2/nope")
        );
        for (method, path, allow) in [
            (Method::POST, "/v1/status", "GET"),
            (Method::DELETE, "/metrics", "GET"),
            (Method::GET, "/v1/reload", "POST"),
            (
                Method::PUT,
                "/v1/balancers/web/backends/10.0.0.1:80/drain",
                "POST",
            ),
        ] {
            let r = ask(method.clone(), path, &[], Some(&control())).unwrap();
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        }
    }

    #[test]
    fn only_ip_literals_localhost_and_configured_names_may_be_the_host() {
        for host in [
            "127.0.0.1:9900",
            "127.0.0.1",
            "[::1]:9900",
            "10.1.2.3:9900",
            "localhost:9900",
            "LOCALHOST",
            "duet.example.net:9900",
        ] {
            assert_eq!(
                status(ask(Method::GET, "/v1/status", &[("host", host)], None)),
                Some(StatusCode::OK),
                "{host}"
            );
        }
        // A page on attacker.example whose name was made to resolve to 127.0.0.1.
        for host in [
            "attacker.example:9900",
            "attacker.example",
            "127.0.0.1.attacker.example",
        ] {
            let r = ask(Method::GET, "/v1/status", &[("host", host)], None).unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{host}");
            assert!(
                String::from_utf8(futures_body(r))
                    .unwrap()
                    .contains("node.admin_names"),
                "{host}"
            );
        }
        // Nor may it act with a stolen token.
        let auth = ("authorization", "Bearer 0123456789abcdef");
        assert_eq!(
            status(ask(
                Method::POST,
                "/v1/reload",
                &[("host", "attacker.example"), auth],
                Some(&control())
            )),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn posts_need_exactly_one_good_token_and_a_known_path() {
        let good = ("authorization", "Bearer 0123456789abcdef");
        assert_eq!(
            status(ask(Method::POST, "/v1/reload", &[good], None)),
            Some(StatusCode::FORBIDDEN)
        );
        let c = control();
        assert_eq!(
            status(ask(Method::POST, "/v1/reload", &[], Some(&c))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(ask(
                Method::POST,
                "/v1/reload",
                &[("authorization", "Bearer 0123456789abcdeX")],
                Some(&c)
            )),
            Some(StatusCode::UNAUTHORIZED)
        );
        // Two Authorization headers: refused, whichever comes first.
        for pair in [
            [good, ("authorization", "Bearer wrong")],
            [("authorization", "Bearer wrong"), good],
        ] {
            assert_eq!(
                status(ask(Method::POST, "/v1/reload", &pair, Some(&c))),
                Some(StatusCode::BAD_REQUEST)
            );
        }
        assert_eq!(
            ask(Method::POST, "/v1/reload", &[good], Some(&c)).err(),
            Some(Action::Reload)
        );
        assert_eq!(
            ask(
                Method::POST,
                "/v1/balancers/web/backends/10.0.0.1:80/drain",
                &[good],
                Some(&c)
            )
            .err(),
            Some(Action::Backend {
                balancer: "web".into(),
                backend: "10.0.0.1:80".into(),
                drain: true
            })
        );
        assert_eq!(
            status(ask(
                Method::POST,
                "/v1/balancers/web/backends/10.0.0.1:80/explode",
                &[good],
                Some(&c)
            )),
            Some(StatusCode::NOT_FOUND)
        );
    }

    fn futures_body(r: Response<Full<Bytes>>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }
}
