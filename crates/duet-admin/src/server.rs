//! The admin HTTP server: routing, authorization, the answers.
//!
//! Runs on its own thread and runtime; it reads what the daemon published and hands actions
//! to the daemon through the [`Operator`] callback, so a slow or hostile client never delays
//! the control plane.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::{self, Access, Caller, Role};
use crate::events::{self, Event, EventKind, Events};
use crate::{Published, render_metrics, roles, sse};

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
    /// `POST /v1/switchover` (`?to=NODE`): the VRRP instances this node is master of, and
    /// the database primary when it runs here, hand over.
    Switchover {
        /// The database node to hand over to; `None`: the only other node.
        to: Option<String>,
    },
    /// `POST /v1/maintenance` with `{"enabled": true|false}`: automatic failover off or on,
    /// cluster-wide.
    Maintenance {
        /// Off (true) or on again (false).
        enabled: bool,
        /// Who asked (the token's name).
        by: String,
    },
    /// `POST /v1/services/{service}/reset`: a group that stepped down because of this
    /// service may run again.
    ServiceReset {
        /// The service.
        service: String,
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

/// How the server answers.
pub struct Options {
    /// Who may call what, and the audit log.
    pub access: Access,
    /// Carries out actions; `None`: nothing can be changed.
    pub operator: Option<Operator>,
    /// Host names besides IP literals and `localhost` that clients may use for the API
    /// (`node.admin_names`).
    pub names: Vec<String>,
    /// Serve HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("access", &self.access)
            .field("names", &self.names)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Plain HTTP, reads open to all, nothing can be changed.
    pub fn read_only() -> Options {
        Options {
            access: Access::open(),
            operator: None,
            names: Vec::new(),
            tls: None,
        }
    }
}

/// Binds `addr` now (so the caller sees bind errors) and serves on a new thread.
pub fn spawn(
    addr: SocketAddr,
    published: Arc<Published>,
    options: Options,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin API on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let api = Arc::new(Api {
        published,
        options,
        streams: Arc::default(),
    });
    std::thread::Builder::new()
        .name("duet-admin".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("admin runtime");
            rt.block_on(serve(listener, api, tls));
        })?;
    Ok(local)
}

/// The API's state: what it reads and who may act.
struct Api {
    published: Arc<Published>,
    options: Options,
    /// Event streams open now.
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// Every response's body: whole, or an event stream.
type Body = BoxBody<Bytes, Infallible>;

/// How long a connection may live, unless it carries an event stream.
const CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(
    listener: std::net::TcpListener,
    api: Arc<Api>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
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
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(hyper_util::rt::TokioIo::new(stream), api, remote).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(hyper_util::rt::TokioIo::new(s), api, remote).await,
                        Ok(Err(e)) => tracing::debug!("admin API: TLS from {remote}: {e}"),
                        Err(_) => tracing::debug!("admin API: TLS from {remote}: too slow"),
                    }
                }
            }
        });
    }
}

/// Serves one connection until it ends or outlives [`CONNECTION_LIMIT`] (an event stream
/// may).
async fn connection<I>(io: I, api: Arc<Api>, remote: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
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
}

/// Answers one request; audits every call that would change something and every failed
/// authentication, and tells the event stream of the former.
async fn handle(
    mut req: Request<hyper::body::Incoming>,
    api: &Api,
    streaming: &Arc<std::sync::atomic::AtomicBool>,
    remote: SocketAddr,
) -> Response<Body> {
    let (response, caller, result) = match answer(&req, &api.published, &api.options, remote.ip()) {
        Answer::Now(response) => {
            let text = response.status().to_string();
            (response.map(BodyExt::boxed), None, text)
        }
        Answer::Refused(response, text) => (response.map(BodyExt::boxed), None, text),
        Answer::Stream(last_id) => return stream(api, streaming, last_id),
        Answer::Act(action, caller) => {
            let (response, text) = match with_body(action, &caller, req.body_mut()).await {
                Ok(action) => act(api, action).await,
                Err(e) => (action_error(&e), e.message),
            };
            (response.map(BodyExt::boxed), Some(caller), text)
        }
    };
    let status = response.status();
    let write = req.method() == Method::POST;
    let failed_auth = matches!(status.as_u16(), 401 | 429);
    if write || failed_auth {
        let (who, role) = caller.as_ref().map_or(("-", None), |c| {
            (c.name.as_str(), c.role.map(|r| r.as_str()))
        });
        let target = req.uri().to_string();
        let ok = status.is_success();
        api.options.access.audit(&auth::AuditEntry {
            unix_ms: events::unix_ms(),
            who,
            role,
            from: remote.ip().to_string(),
            method: req.method().as_str(),
            path: &target,
            status: status.as_u16(),
            ok,
            result: &result,
        });
        if write {
            api.published.emit(EventKind::Operator {
                who: who.to_string(),
                role: role.unwrap_or("-").to_string(),
                from: remote.ip().to_string(),
                action: format!("{} {target}", req.method()),
                ok,
                result,
            });
        }
    }
    response
}

/// Fills an action's fields that come from the request body and the caller:
/// `POST /v1/maintenance` takes `{"enabled": true|false}` (at most 1 KiB).
async fn with_body(
    action: Action,
    caller: &Caller,
    body: &mut hyper::body::Incoming,
) -> Result<Action, ActionError> {
    let Action::Maintenance { .. } = action else {
        return Ok(action);
    };
    let bad = |message: String| ActionError {
        status: 400,
        message,
    };
    let bytes = http_body_util::Limited::new(body, 1024)
        .collect()
        .await
        .map_err(|e| bad(format!("the body: {e}")))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("the body must be {{\"enabled\": true|false}}: {e}")))?;
    let enabled = v["enabled"]
        .as_bool()
        .ok_or_else(|| bad("the body must be {\"enabled\": true|false}".into()))?;
    Ok(Action::Maintenance {
        enabled,
        by: caller.name.clone(),
    })
}

/// Starts an event stream, if there is room for one.
fn stream(
    api: &Api,
    streaming: &Arc<std::sync::atomic::AtomicBool>,
    last_id: Option<String>,
) -> Response<Body> {
    let Some(slot) = sse::slot(&api.streams) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{} event streams are open already", sse::MAX_STREAMS),
        )
        .map(BodyExt::boxed);
    };
    streaming.store(true, std::sync::atomic::Ordering::Relaxed);
    let body = sse::start(
        api.published.events().clone(),
        last_id,
        slot,
        streaming.clone(),
    );
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
    r
}

/// Carries out an authorized action; the answer and its text.
async fn act(api: &Api, action: Action) -> (Response<Full<Bytes>>, String) {
    let Some(op) = api.options.operator.clone() else {
        let text = "this node takes no actions".to_string();
        return (error(StatusCode::FORBIDDEN, &text), text);
    };
    match tokio::task::spawn_blocking(move || op(action)).await {
        Ok(Ok(message)) => {
            let body =
                serde_json::to_vec(&serde_json::json!({ "ok": message })).unwrap_or_default();
            (respond(StatusCode::OK, "application/json", body), message)
        }
        Ok(Err(e)) => (action_error(&e), e.message),
        Err(_) => (
            error(StatusCode::INTERNAL_SERVER_ERROR, "action failed"),
            "action failed".into(),
        ),
    }
}

/// Every route, as the path template the OpenAPI document (`openapi.json`) uses: paths are
/// matched against these and nothing else, and a test holds the document to this list.
pub(crate) const ROUTES: [&str; 16] = [
    "/",
    "/v1/status",
    "/v1/events",
    "/v1/openapi.json",
    "/v1/config/cluster",
    "/metrics",
    "/primary",
    "/replica",
    "/read-only",
    "/v1/reload",
    "/v1/switchover",
    "/v1/database/reinit",
    "/v1/maintenance",
    "/v1/balancers/{balancer}/backends/{backend}/drain",
    "/v1/balancers/{balancer}/backends/{backend}/enable",
    "/v1/services/{service}/reset",
];

/// `%XX` sequences decoded; `None` for a bad one or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The values of `template`'s `{…}` segments in `path`, if `path` fits it.
fn fit<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') && !ps.is_empty() => params.push(ps),
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// The web dashboard: one page, no data in it (it calls the API with the token typed into
/// it), no assets from elsewhere.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The OpenAPI 3 document of this API (served at `/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The endpoints, each with the one method it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `/`: the dashboard page, which anyone may load.
    Dashboard,
    Status,
    Metrics,
    /// `/v1/openapi.json`.
    OpenApi,
    /// `/v1/events`: the kept events as JSON, or a stream.
    Events,
    /// `/primary`, `/replica`, `/read-only`.
    Role(roles::Role),
    /// `/v1/config/cluster`.
    Config,
    Act(Action),
}

impl Endpoint {
    /// The endpoint at `path`, if any: the first of [`ROUTES`] whose template it fits.
    fn at(path: &str) -> Option<Endpoint> {
        ROUTES
            .iter()
            .find_map(|t| Endpoint::route(t, &fit(t, path)?))
    }

    /// The endpoint of route `template` with its `{…}` segments' values (percent-decoded:
    /// a browser writes `10.0.0.11%3A8080`).
    fn route(template: &str, params: &[&str]) -> Option<Endpoint> {
        let params = params
            .iter()
            .map(|p| percent_decode(p))
            .collect::<Option<Vec<String>>>()?;
        let backend = |drain| {
            Endpoint::Act(Action::Backend {
                balancer: params[0].clone(),
                backend: params[1].clone(),
                drain,
            })
        };
        Some(match template {
            "/" => Endpoint::Dashboard,
            "/v1/status" => Endpoint::Status,
            "/v1/events" => Endpoint::Events,
            "/v1/openapi.json" => Endpoint::OpenApi,
            "/v1/config/cluster" => Endpoint::Config,
            "/metrics" => Endpoint::Metrics,
            "/primary" => Endpoint::Role(roles::Role::Primary),
            "/replica" => Endpoint::Role(roles::Role::Replica),
            "/read-only" => Endpoint::Role(roles::Role::ReadOnly),
            "/v1/reload" => Endpoint::Act(Action::Reload),
            "/v1/switchover" => Endpoint::Act(Action::Switchover { to: None }),
            "/v1/database/reinit" => Endpoint::Act(Action::Reinit),
            "/v1/maintenance" => Endpoint::Act(Action::Maintenance {
                enabled: false,
                by: String::new(),
            }),
            "/v1/balancers/{balancer}/backends/{backend}/drain" => backend(true),
            "/v1/balancers/{balancer}/backends/{backend}/enable" => backend(false),
            "/v1/services/{service}/reset" => Endpoint::Act(Action::ServiceReset {
                service: params[0].clone(),
            }),
            _ => return None,
        })
    }

    /// The role a caller needs.
    fn role(&self) -> Role {
        match self {
            Endpoint::Dashboard
            | Endpoint::Status
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::Events
            | Endpoint::Config
            | Endpoint::Role(_) => Role::Viewer,
            Endpoint::Act(
                Action::Backend { .. }
                | Action::Switchover { .. }
                | Action::Maintenance { .. }
                | Action::ServiceReset { .. },
            ) => Role::Operator,
            Endpoint::Act(Action::Reload | Action::Reinit) => Role::Admin,
        }
    }

    fn method(&self) -> Method {
        match self {
            Endpoint::Act(_) => Method::POST,
            _ => Method::GET,
        }
    }
}

/// What to do with a request.
enum Answer {
    /// Answer this now.
    Now(Response<Full<Bytes>>),
    /// Refused by the access rules, and why.
    Refused(Response<Full<Bytes>>, String),
    /// An authorized operator action to carry out, and who asked.
    Act(Action, Caller),
    /// An event stream, resumed after this `Last-Event-ID` if any.
    Stream(Option<String>),
}

/// Checks a request in order, host, path, method, token, and says what to do with it.
fn answer<B>(
    req: &Request<B>,
    published: &Published,
    options: &Options,
    from: std::net::IpAddr,
) -> Answer {
    let path = req.uri().path();
    if let Err(why) = host_allowed(req, &options.names) {
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
    let authorization: Vec<&[u8]> = req
        .headers()
        .get_all(hyper::header::AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let write = endpoint.method() == Method::POST;
    let checked = if endpoint == Endpoint::Dashboard {
        Ok(Caller {
            name: "-".into(),
            role: None,
        })
    } else {
        options
            .access
            .check(&authorization, from, path, endpoint.role(), write)
    };
    let caller = match checked {
        Ok(c) => c,
        Err(r) => {
            let code = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
            let mut response = error(code, &r.message);
            if code == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer realm=\"duet\""),
                );
            }
            return Answer::Refused(response, r.message);
        }
    };
    match endpoint {
        Endpoint::Dashboard => {
            let mut r = respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                DASHBOARD.as_bytes().to_vec(),
            );
            let h = r.headers_mut();
            // Its own inline script and style only; never framed (its buttons act).
            h.insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                hyper::header::HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                ),
            );
            h.insert(
                hyper::header::X_FRAME_OPTIONS,
                hyper::header::HeaderValue::from_static("DENY"),
            );
            Answer::Now(r)
        }
        Endpoint::Status => {
            let body = serde_json::to_vec_pretty(&*published.get()).unwrap_or_default();
            Answer::Now(respond(StatusCode::OK, "application/json", body))
        }
        Endpoint::Config => {
            let body = serde_json::to_vec_pretty(&*published.config_views()).unwrap_or_default();
            Answer::Now(respond(StatusCode::OK, "application/json", body))
        }
        Endpoint::OpenApi => Answer::Now(respond(
            StatusCode::OK,
            "application/json",
            OPENAPI.as_bytes().to_vec(),
        )),
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
        Endpoint::Act(action) => match with_query(action, req.uri().query()) {
            Ok(action) => Answer::Act(action, caller),
            Err(e) => Answer::Refused(action_error(&e), e.message),
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
    use crate::{DatabaseStatus, Status, VrrpStatus};

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

    /// `node.operator_token_file` alone: reads open, the token may do everything.
    fn control() -> Options {
        let token = auth::Token {
            name: "operator".into(),
            role: Role::Admin,
            sha256: auth::token_hash("0123456789abcdef"),
        };
        Options {
            access: Access::new(vec![token], Vec::new(), true, None).unwrap(),
            operator: Some(Arc::new(|_| Ok(String::new()))),
            names: vec!["duet.example.net".to_string()],
            tls: None,
        }
    }

    /// What the API does with `method path` and `headers`: the immediate answer's status and
    /// response, or the action it would carry out.
    fn ask(
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        options: Option<&Options>,
    ) -> Result<Response<Full<Bytes>>, Action> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut read_only = Options::read_only();
        read_only.names = vec!["duet.example.net".to_string()];
        let options = options.unwrap_or(&read_only);
        let from = "127.0.0.1".parse().unwrap();
        match answer(&b.body(()).unwrap(), &sample(), options, from) {
            Answer::Now(r) | Answer::Refused(r, _) => Ok(r),
            Answer::Act(a, _) => Err(a),
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

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_with_their_methods_and_roles() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        let mut routes = ROUTES.to_vec();
        documented.sort_unstable();
        routes.sort_unstable();
        assert_eq!(documented, routes, "openapi.json against ROUTES");
        for template in ROUTES {
            // Each route answers at its path (with sample values for its parameters).
            let path = template
                .replace("{balancer}", "web")
                .replace("{backend}", "10.0.0.1:80");
            let e = Endpoint::at(&path).unwrap_or_else(|| panic!("{template}: no endpoint"));
            let ops = paths[template].as_object().unwrap();
            assert_eq!(ops.len(), 1, "{template}: one method per path");
            let (method, op) = ops.iter().next().unwrap();
            assert_eq!(
                method.to_uppercase(),
                e.method().as_str(),
                "{template}: the document's method"
            );
            let role = if e == Endpoint::Dashboard {
                "public"
            } else {
                e.role().as_str()
            };
            assert_eq!(op["x-duet-role"], role, "{template}: the document's role");
            assert!(op["responses"]["200"].is_object(), "{template}");
            // A path one segment longer or with an empty parameter is no route.
            assert_eq!(Endpoint::at(&format!("{path}/x")), None, "{path}/x");
        }
        assert_eq!(
            Endpoint::at("/v1/balancers//backends/10.0.0.1:80/drain"),
            None
        );
        // A browser encodes the colon; a bad escape is no route.
        assert_eq!(
            Endpoint::at("/v1/balancers/web/backends/10.0.0.1%3A80/drain"),
            Endpoint::at("/v1/balancers/web/backends/10.0.0.1:80/drain")
        );
        assert_eq!(
            Endpoint::at("/v1/balancers/web/backends/10.0.0.1%3/drain"),
            None
        );
        assert_eq!(Endpoint::at("/v1/balancers/web/backends/%ff/drain"), None);
        assert_eq!(Endpoint::at("/v1/status/"), None);
    }

    #[test]
    fn the_document_is_served() {
        let r = ask(Method::GET, "/v1/openapi.json", &[], None).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&futures_body(r)).unwrap();
        assert_eq!(v["openapi"], "3.0.3");
    }

    fn futures_body(r: Response<Full<Bytes>>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes().to_vec() })
    }
}
