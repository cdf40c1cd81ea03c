//! HTTP/2 from clients (negotiated by ALPN over TLS), forwarded to backends over HTTP/1.1.
//!
//! Here the protocol is the hard part, so hyper does it (design.md): hyper's HTTP/2 server on
//! the worker's runtime, and per backend hyper HTTP/1.1 client connections kept per worker
//! thread. Each stream is one request and follows the same rules as the HTTP/1.1 path: routes,
//! sticky cookies, hashing, `maxconn` and the queue, passive health, and one retry on another
//! backend only where safe (connect failed; or an idempotent request without a body whose
//! backend failed before answering).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use duet_health::Outcome;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backends::{Backend, Lease, NoPick, Shared, request_key};
use crate::runtime::Balancer;

/// Request and response bodies as they pass through.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// An HTTP/1.1 client connection to a backend.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// Idle client connections; per worker thread in a [`Backend`], or per client connection when
/// they carry that client's PROXY header.
pub(crate) type Senders = Mutex<Vec<(SocketAddr, Sender)>>;

/// At most this many idle senders per backend and thread.
const IDLE_SENDERS: usize = 64;

/// One client's HTTP/2 connection.
struct Client {
    balancer: Arc<Balancer>,
    thread: usize,
    peer: SocketAddr,
    local: SocketAddr,
    /// Backend connections of this client, used instead of the shared ones with `send_proxy`.
    private: Senders,
}

/// Serves one client connection that chose `h2`.
pub(crate) async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    local: SocketAddr,
    balancer: Arc<Balancer>,
    thread: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(Client {
        balancer: balancer.clone(),
        thread,
        peer,
        local,
        private: Mutex::new(Vec::new()),
    });
    let service = hyper::service::service_fn(move |req| {
        let client = client.clone();
        async move { Ok::<_, Infallible>(forward(req, &client).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = balancer.stopped(thread) => {
            // Finish the streams in flight, take no new ones.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Headers that describe one connection; never forwarded (RFC 9113 §8.2.2, RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn text_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

async fn forward(req: Request<Incoming>, client: &Client) -> Response<ProxyBody> {
    let shared = client.balancer.snapshot();
    let (parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let group = shared.route(authority.as_deref().map(str::as_bytes), path.as_bytes());
    let cookies: Vec<httparse::Header<'_>> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| httparse::Header {
            name: "cookie",
            value: v.as_bytes(),
        })
        .collect();
    let sticky = shared.spec.sticky_cookie.as_deref().and_then(|name| {
        let id = crate::h1::head::cookie(&cookies, name)?;
        shared.groups[group]
            .members
            .iter()
            .position(|m| m.backend.sticky_id.as_bytes() == id)
    });
    let key = match shared.spec.algorithm {
        duet_health::Algorithm::Hash => request_key(
            &shared.spec.hash_key,
            client.peer.ip(),
            path.as_bytes(),
            |name| parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
        ),
        _ => crate::backends::random_bits(),
    };
    let idempotent = matches!(
        parts.method.as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    );
    let bodiless = body.is_end_stream();
    let mut body = Some(body);

    // The head to send: origin-form target, Host from the authority, forwarding headers.
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    if let Some(a) = authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(header::HOST, a);
    }
    add_forwarding(&mut headers, client.peer.ip());

    let started = std::time::Instant::now();
    let mut tried = Vec::new();
    let mut full = false;
    for _ in 0..=shared.spec.retries {
        let lease = match shared
            .lease(client.thread, group, key, sticky, &tried)
            .await
        {
            Ok(l) => l,
            Err(NoPick::Full) => {
                full = true;
                break;
            }
            Err(NoPick::Unavailable) => break,
        };
        tried.push(lease.index);
        // Built once a connection is there: a failed connect keeps the body for the retry.
        let request = || {
            let outgoing_body = match body.take() {
                Some(b) if !bodiless => b.boxed(),
                _ => empty_body(),
            };
            let mut out = Request::new(outgoing_body);
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = path
                .parse()
                .unwrap_or_else(|_| hyper::Uri::from_static("/"));
            *out.headers_mut() = headers.clone();
            out
        };
        match attempt(request, &lease, &shared, client).await {
            Ok(mut response) => {
                lease
                    .backend
                    .stats
                    .observe(client.thread, started.elapsed());
                let h = response.headers_mut();
                strip_hop_by_hop(h);
                add_response_headers(h, &shared, &lease, sticky);
                return response.map(|b| b.boxed());
            }
            Err(outcome) => {
                lease.backend.record(&shared.spec.name, outcome);
                let body_kept = bodiless || body.is_some();
                let safe =
                    (outcome == Outcome::ConnectFailed && body_kept) || (idempotent && bodiless);
                if !safe {
                    break;
                }
            }
        }
    }
    client
        .balancer
        .client_errors
        .fetch_add(1, Ordering::Relaxed);
    if tried.is_empty() || full {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n")
    } else {
        text_response(StatusCode::BAD_GATEWAY, "no backend could answer\n")
    }
}

fn add_forwarding(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    let node = match ip {
        std::net::IpAddr::V4(a) => format!("for={a};proto=https"),
        std::net::IpAddr::V6(a) => format!("for=\"[{a}]\";proto=https"),
    };
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {node}"),
        None => node,
    };
    for (name, value) in [
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", "https".to_string()),
        ("forwarded", forwarded),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

fn add_response_headers(
    h: &mut HeaderMap,
    shared: &Shared,
    lease: &Lease<'_>,
    sticky: Option<usize>,
) {
    if let Some(hsts) = &shared.spec.tls.as_ref().and_then(|t| t.hsts)
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={}", hsts.as_secs()))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    if let Some(name) = &shared.spec.sticky_cookie
        && sticky != Some(lease.index)
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{name}={}; Path=/; HttpOnly",
            lease.backend.sticky_id
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
}

/// Sends one request (built by `request` once connected) to the leased backend; `Err` when it
/// failed before a response head.
async fn attempt(
    request: impl FnOnce() -> Request<ProxyBody>,
    lease: &Lease<'_>,
    shared: &Shared,
    client: &Client,
) -> Result<Response<Incoming>, Outcome> {
    let backend: &Backend = lease.backend;
    let private = shared.spec.send_proxy.is_some();
    let idle = if private {
        take_sender(&client.private, backend.address)
    } else {
        backend.take_sender(client.thread)
    };
    let mut sender = match idle {
        Some(s) => s,
        None => {
            let local = Some(client.local);
            let stream = crate::runtime::connect(shared, backend, client.peer, local)
                .await
                .map_err(|()| Outcome::ConnectFailed)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Outcome::ConnectFailed)?;
            tokio::spawn(conn);
            sender
        }
    };
    let timeout = shared.spec.http_timeouts.server;
    let response = match tokio::time::timeout(timeout, sender.send_request(request())).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let outcome = if e.is_parse() {
                Outcome::BadResponse
            } else {
                Outcome::Reset
            };
            return Err(outcome);
        }
        Err(_) => return Err(Outcome::Timeout),
    };
    backend.stats.connections.fetch_add(1, Ordering::Relaxed);
    let outcome = if response.status().is_server_error() {
        Outcome::ServerError
    } else {
        Outcome::Success
    };
    backend.record(&shared.spec.name, outcome);
    // The connection takes the next request once this response's body has been read; until
    // then `take_sender` passes over it.
    if private {
        give_sender(&client.private, backend.address, sender);
    } else {
        backend.give_sender(client.thread, sender);
    }
    Ok(response)
}

/// A ready sender for `address`; closed ones are dropped on the way.
pub(crate) fn take_sender(senders: &Senders, address: SocketAddr) -> Option<Sender> {
    let mut list = senders.lock().ok()?;
    list.retain(|(_, s)| !s.is_closed());
    let i = list
        .iter()
        .position(|(a, s)| *a == address && s.is_ready())?;
    Some(list.swap_remove(i).1)
}

pub(crate) fn give_sender(senders: &Senders, address: SocketAddr, sender: Sender) {
    if let Ok(mut list) = senders.lock()
        && list.len() < IDLE_SENDERS
    {
        list.push((address, sender));
    }
}
