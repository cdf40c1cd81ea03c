//! duet's admin API: `GET /v1/status` (JSON) and `GET /metrics` (Prometheus text format).
//!
//! The daemon publishes a [`Status`] snapshot into a [`Published`] cell whenever something
//! changes; the server, on its own thread and runtime, only reads it. A slow or hostile HTTP
//! client therefore can never delay the control plane.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod metrics;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

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
    /// Load balancers.
    #[serde(default)]
    pub balancers: Vec<BalancerStatus>,
    /// Heartbeat peers and the witness lease, when `[heartbeat]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
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
#[derive(Debug, Default)]
pub struct Published(Mutex<Arc<Status>>);

impl Published {
    /// Replaces the snapshot.
    pub fn publish(&self, status: Status) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(status);
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<Status> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
/// `control`, the API is read-only.
pub fn spawn(
    addr: SocketAddr,
    published: Arc<Published>,
    control: Option<Control>,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin API on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("duet-admin".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("admin runtime");
            rt.block_on(serve(listener, published, control));
        })?;
    Ok(local)
}

async fn serve(
    listener: std::net::TcpListener,
    published: Arc<Published>,
    control: Option<Control>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin API: {e}");
            return;
        }
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin API accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let published = published.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = service_fn(move |req| {
                let published = published.clone();
                let control = control.clone();
                async move {
                    if req.method() != Method::POST {
                        return Ok::<_, Infallible>(route(&req, &published));
                    }
                    let action = match authorize(&req, control.as_ref()) {
                        Ok(a) => a,
                        Err(e) => return Ok(action_error(&e)),
                    };
                    let Some(control) = control else {
                        return Ok(error(StatusCode::FORBIDDEN, "read-only"));
                    };
                    let op = control.operator.clone();
                    let done = tokio::task::spawn_blocking(move || op(action)).await;
                    Ok(match done {
                        Ok(Ok(message)) => respond(
                            StatusCode::OK,
                            "application/json",
                            serde_json::to_vec(&serde_json::json!({ "ok": message }))
                                .unwrap_or_default(),
                        ),
                        Ok(Err(e)) => action_error(&e),
                        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "action failed"),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(io, service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}

/// Checks a `POST`: the operator token, then the path; returns the action it asks for or why
/// it is refused.
pub fn authorize<B>(req: &Request<B>, control: Option<&Control>) -> Result<Action, ActionError> {
    let path = req.uri().path();
    let Some(control) = control else {
        return Err(ActionError {
            status: 403,
            message: "the admin API is read-only: set node.operator_token_file to allow POST"
                .into(),
        });
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), control.token.as_bytes()) {
        return Err(ActionError {
            status: 401,
            message: "POST needs Authorization: Bearer <operator token>".into(),
        });
    }
    if path == "/v1/reload" {
        return Ok(Action::Reload);
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
        ] => Ok(Action::Backend {
            balancer: balancer.to_string(),
            backend: backend.to_string(),
            drain: *verb == "drain",
        }),
        _ => Err(ActionError {
            status: 404,
            message: format!("no such endpoint: POST {path}"),
        }),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers one request.
pub fn route<B>(req: &Request<B>, published: &Published) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/v1/status") => {
            let body = serde_json::to_vec_pretty(&*published.get()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(&published.get()).into_bytes(),
        ),
        (_, "/v1/status" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {path}: only GET is allowed", req.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    }
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

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn status_has_the_contract_fields() {
        let r = route(&get("/v1/status"), &sample());
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

    #[test]
    fn unknown_paths_and_methods_get_clear_errors() {
        let r = route(&get("/v2/nope"), &sample());
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            String::from_utf8(futures_body(r))
                .unwrap()
                .contains("/v2/nope")
        );
        let post = Request::builder()
            .method(Method::POST)
            .uri("/v1/status")
            .body(())
            .unwrap();
        assert_eq!(
            route(&post, &sample()).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn posts_need_the_token_and_a_known_path() {
        let control = Control {
            token: "0123456789abcdef".into(),
            operator: Arc::new(|_| Ok(String::new())),
        };
        let post = |path: &str, auth: Option<&str>| {
            let mut b = Request::builder().method(Method::POST).uri(path);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap()
        };
        let status = |r: Result<Action, ActionError>| {
            r.err().map(|e| StatusCode::from_u16(e.status).unwrap())
        };
        let good = Some("Bearer 0123456789abcdef");
        assert_eq!(
            status(authorize(&post("/v1/reload", good), None)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(authorize(&post("/v1/reload", None), Some(&control))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(authorize(
                &post("/v1/reload", Some("Bearer 0123456789abcdeX")),
                Some(&control)
            )),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            authorize(&post("/v1/reload", good), Some(&control)).ok(),
            Some(Action::Reload)
        );
        assert_eq!(
            authorize(
                &post("/v1/balancers/web/backends/10.0.0.1:80/drain", good),
                Some(&control)
            )
            .ok(),
            Some(Action::Backend {
                balancer: "web".into(),
                backend: "10.0.0.1:80".into(),
                drain: true
            })
        );
        assert_eq!(
            status(authorize(
                &post("/v1/balancers/web/backends/10.0.0.1:80/explode", good),
                Some(&control)
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
