//! HTTP/2 from clients (negotiated by ALPN over TLS), forwarded to backends over HTTP/1.1.
//!
//! The `h2` crate serves the client side (framing, HPACK, flow control), and per backend hyper's
//! HTTP/1.1 client connections are kept per worker thread. Each stream is one request and follows
//! the request policy of the HTTP/1.1 path ([`crate::policy`]): routes, sticky cookies, hashing,
//! `maxconn` and the queue, fresh connections for requests that are not idempotent, retries
//! only where safe, passive health, the access log.
//!
//! Interim responses: a backend's 1xx (hyper's client reports them) are relayed to the client
//! before the final response, `103 Early Hints` included; `Expect: 100-continue` is answered by
//! duet with `100 Continue` as it starts forwarding the body, so it works whether or not the
//! backend sends one (a backend's own `100` is then not relayed twice).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use duet_health::Outcome;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backends::{Backend, Lease, Shared};
use crate::balancer::Balancer;
use crate::policy::{Attempts, Failed, Logged, Plan};
use crate::upstream::{BoxError, ProxyBody, Senders};

/// One client's HTTP/2 connection.
struct Client {
    balancer: Arc<Balancer>,
    thread: usize,
    peer: SocketAddr,
    local: SocketAddr,
    /// Backend connections of this client, used instead of the shared ones with `send_proxy`.
    private: Senders,
}

/// Streams served at once on one client connection.
const MAX_STREAMS: u32 = 256;

/// Serves one client connection that chose `h2`: a task per stream, until the client goes, the
/// connection idles past the idle timeout, or the balancer stops (then the streams in flight
/// finish and no new ones are taken).
pub(crate) async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    local: SocketAddr,
    balancer: Arc<Balancer>,
    thread: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = balancer.snapshot();
    let timeouts = shared.spec.http_timeouts;
    // The same head limit as HTTP/1.1 (a client's header list beyond it is refused by h2).
    let max_head = u32::try_from(shared.spec.limits.max_head_bytes).unwrap_or(u32::MAX);
    drop(shared);
    let client = Arc::new(Client {
        balancer: balancer.clone(),
        thread,
        peer,
        local,
        private: std::sync::Mutex::new(Vec::new()),
    });
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(max_head)
        .handshake::<_, Bytes>(io);
    let Ok(Ok(mut conn)) = tokio::time::timeout(timeouts.client, handshake).await else {
        return;
    };
    let mut closing = false;
    let idle = tokio::time::sleep(timeouts.idle);
    let mut idle = std::pin::pin!(idle);
    // The streams' tasks: when the connection ends they end too (a gone client's backend
    // work is dropped), and a client cannot keep more than [`MAX_STREAMS`] of them running
    // by resetting streams it had opened.
    let mut streams = tokio::task::JoinSet::new();
    loop {
        while streams.try_join_next().is_some() {}
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, mut respond))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + timeouts.idle);
                    if streams.len() >= MAX_STREAMS as usize {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    streams.spawn(stream(request, respond, client.clone()));
                }
                Some(Err(e)) => {
                    tracing::debug!("{}: {peer}: HTTP/2: {e}", balancer.name);
                    return;
                }
                None => return,
            },
            () = &mut idle, if !closing => {
                if conn.has_streams() {
                    idle.as_mut().reset(tokio::time::Instant::now() + timeouts.idle);
                } else {
                    closing = true;
                    conn.graceful_shutdown();
                }
            }
            () = balancer.stopped(thread), if !closing => {
                closing = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// One stream: forward its request, relay interim responses, then the final response.
async fn stream(
    request: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    client: Arc<Client>,
) {
    let expect_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expect_continue {
        let mut go_on = Response::new(());
        *go_on.status_mut() = StatusCode::CONTINUE;
        let _ = respond.send_informational(go_on);
    }
    let timeouts = client.balancer.snapshot().spec.http_timeouts;
    let (interim_tx, mut interim) = tokio::sync::mpsc::unbounded_channel();
    let (parts, body) = request.into_parts();
    let body = RequestBody::new(body, timeouts.client);
    let state = body.state.clone();
    let request = Request::from_parts(parts, body);
    let forwarding = forward(request, &client, interim_tx, state);
    let mut forwarding = std::pin::pin!(forwarding);
    let response = loop {
        tokio::select! {
            biased;
            // The client reset the stream: its backend work stops here (the forwarding future
            // is dropped, and with it a backend connection made for it).
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
            Some(r) = interim.recv() => {
                let _ = respond.send_informational(r);
            }
            response = &mut forwarding => break response,
        }
    };
    // Interim answers that arrived with the final one still go first.
    while let Ok(r) = interim.try_recv() {
        let _ = respond.send_informational(r);
    }
    let (parts, body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(mut send) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end && send_body(body, &mut send, timeouts).await.is_err() {
        send.send_reset(h2::Reason::INTERNAL_ERROR);
    }
}

/// Copies a response body to the client within the stream's flow-control window. A client
/// that opens no window within the client timeout, or a backend that sends nothing within the
/// server timeout, ends it (the stream is reset and the backend connection let go).
async fn send_body(
    body: ProxyBody,
    send: &mut h2::SendStream<Bytes>,
    timeouts: crate::spec::HttpTimeouts,
) -> Result<(), ()> {
    let mut body = std::pin::pin!(body);
    while let Some(frame) = tokio::time::timeout(timeouts.server, body.frame())
        .await
        .map_err(|_| ())?
    {
        let frame = frame.map_err(|_| ())?;
        let frame = match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let room = tokio::time::timeout(
                        timeouts.client,
                        std::future::poll_fn(|cx| send.poll_capacity(cx)),
                    )
                    .await
                    .map_err(|_| ())?
                    .ok_or(())?
                    .map_err(|_| ())?;
                    let chunk = data.split_to(room.min(data.len()));
                    send.send_data(chunk, false).map_err(|_| ())?;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            return send.send_trailers(trailers).map_err(|_| ());
        }
    }
    send.send_data(Bytes::new(), true).map_err(|_| ())
}

/// What became of a request body, shared between the body hyper's client reads and the
/// attempt that must say whose fault a failure was.
#[derive(Debug, Default)]
struct BodyState {
    /// The client failed its body: 408 when it stalled past the client timeout, 400 when it
    /// reset or broke the stream.
    client_fault: Option<StatusCode>,
    /// The whole body was read.
    finished: bool,
    /// The backend side asked for more of the body and the client has not sent it yet.
    waiting_on_client: bool,
}

/// A client's request body, as hyper's client takes it: flow-control capacity is given back
/// for each chunk as hyper takes it, so a slow backend slows the client, not memory. A client
/// that sends nothing for the client timeout fails its body (its fault, not the backend's).
struct RequestBody {
    recv: h2::RecvStream,
    data_done: bool,
    timeout: Duration,
    stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    state: Arc<std::sync::Mutex<BodyState>>,
}

impl RequestBody {
    fn new(recv: h2::RecvStream, timeout: Duration) -> RequestBody {
        let finished = recv.is_end_stream();
        RequestBody {
            recv,
            data_done: false,
            timeout,
            stall: None,
            state: Arc::new(std::sync::Mutex::new(BodyState {
                client_fault: None,
                finished,
                waiting_on_client: false,
            })),
        }
    }

    fn fail(&self, status: StatusCode) {
        if let Ok(mut s) = self.state.lock() {
            s.client_fault.get_or_insert(status);
        }
    }

    fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.finished = true;
            s.waiting_on_client = false;
        }
    }

    fn waiting(&self, waiting: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.waiting_on_client = waiting;
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    this.stall = None;
                    this.waiting(false);
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(StatusCode::BAD_REQUEST);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => {
                    this.waiting(true);
                    let timeout = this.timeout;
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.fail(StatusCode::REQUEST_TIMEOUT);
                        return Poll::Ready(Some(Err("the client's body stalled".into())));
                    }
                    return Poll::Pending;
                }
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => {
                this.finish();
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Poll::Ready(Ok(None)) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.fail(StatusCode::BAD_REQUEST);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Strips the headers that describe one connection (the HTTP/1.1 path's list, RFC 9110
/// §7.6.1), and `Transfer-Encoding`, which HTTP/2 never carries (RFC 9113 §8.2.2) and hyper
/// writes itself towards the backend.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in crate::h1::forward::HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
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

/// Forwards one request under the request policy; a backend's interim responses (other than
/// `100`) go to `interim` as they arrive.
async fn forward(
    req: Request<RequestBody>,
    client: &Client,
    interim: tokio::sync::mpsc::UnboundedSender<Response<()>>,
    body_state: Arc<std::sync::Mutex<BodyState>>,
) -> Response<ProxyBody> {
    let shared = client.balancer.snapshot();
    let (parts, body) = req.into_parts();
    // What HTTP/1.1 refuses, HTTP/2 refuses too (see h1::head).
    if parts.method == hyper::Method::CONNECT {
        return text_response(StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported\n");
    }
    let scheme_ok = parts
        .uri
        .scheme_str()
        .is_none_or(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let userinfo = parts
        .uri
        .authority()
        .is_some_and(|a| a.as_str().contains('@'));
    if !scheme_ok || userinfo {
        return text_response(StatusCode::BAD_REQUEST, "invalid request target\n");
    }
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
    let cookies: Vec<httparse::Header<'_>> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| httparse::Header {
            name: "cookie",
            value: v.as_bytes(),
        })
        .collect();
    let plan = Plan::new(
        &shared,
        client.peer,
        parts.method.as_str(),
        authority.as_deref().map(str::as_bytes),
        path.as_bytes(),
        |name| crate::h1::head::cookie(&cookies, name),
        |name| parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
    );
    let bodiless = body.is_end_stream();
    let mut body = Some(body);

    // The head to send: origin-form target, Host from the authority, forwarding headers.
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // HTTP/2 clients split cookies into several fields; HTTP/1.1 takes one (RFC 9113 §8.2.3).
    let cookie_values: Vec<&str> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if cookie_values.len() > 1
        && let Ok(joined) = HeaderValue::from_str(&cookie_values.join("; "))
    {
        headers.insert(header::COOKIE, joined);
    }
    if let Some(a) = authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(header::HOST, a);
    }
    add_forwarding(&mut headers, client.peer.ip());

    let target = parts.uri.to_string();
    let logged = Logged {
        client: client.peer,
        proto: "h2",
        method: parts.method.as_str(),
        target: &target,
    };
    let mut attempts = Attempts::new(&shared, client.thread, plan);
    while let Some(lease) = attempts.next().await {
        // Built once a connection is there: a failed connect keeps the body for the retry.
        let request = || {
            let outgoing_body = match body.take() {
                Some(b) if !bodiless => b.map_err(Into::into).boxed(),
                _ => empty_body(),
            };
            let mut out = Request::new(outgoing_body);
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = path
                .parse()
                .unwrap_or_else(|_| hyper::Uri::from_static("/"));
            *out.headers_mut() = headers.clone();
            let interim = interim.clone();
            hyper::ext::on_informational(&mut out, move |r| {
                // duet answered `Expect: 100-continue` itself.
                if r.status() == StatusCode::CONTINUE {
                    return;
                }
                let mut relay = Response::new(());
                *relay.status_mut() = r.status();
                *relay.headers_mut() = r.headers().clone();
                strip_hop_by_hop(relay.headers_mut());
                let _ = interim.send(relay);
            });
            out
        };
        match attempt(request, &lease, &attempts, client).await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                attempts.answered(&lease, status);
                attempts.log(&logged, status, Some(lease.backend.address));
                let h = response.headers_mut();
                strip_hop_by_hop(h);
                add_response_headers(h, &shared, attempts.set_cookie(&lease));
                return response.map(|b| b.map_err(Into::into).boxed());
            }
            Err(failure) => {
                // The client's own failure (a reset or stalled body) is answered to it and
                // never counted against the backend.
                if let Some(status) = client_fault(&body_state, failure) {
                    attempts.log(&logged, status.as_u16(), Some(lease.backend.address));
                    return text_response(status, "the request body did not arrive\n");
                }
                // The body went with the first attempt that got a connection.
                let resendable = bodiless || body.is_some();
                attempts.failed(&lease, failure, resendable);
            }
        }
    }
    let (status, why) = attempts.give_up(&client.balancer);
    attempts.log(&logged, status, None);
    text_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        why,
    )
}

/// Whether a failed attempt was the client's doing: its body broke or stalled (the server
/// timeout can fire while the backend waits for a body the client does not send).
fn client_fault(state: &std::sync::Mutex<BodyState>, failure: Failed) -> Option<StatusCode> {
    let state = state.lock().ok()?;
    match (state.client_fault, failure) {
        (Some(status), _) => Some(status),
        (None, Failed::BeforeResponse(Outcome::Timeout)) if state.waiting_on_client => {
            Some(StatusCode::REQUEST_TIMEOUT)
        }
        _ => None,
    }
}

/// Sets the forwarding headers: every earlier value of the `X-Forwarded-For` and `Forwarded`
/// chains in order, then this client; the scheme duet saw.
fn add_forwarding(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let chain = |headers: &HeaderMap, name: &str, last: String| {
        let mut values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        values.push(&last);
        values.join(", ")
    };
    let node = match ip {
        std::net::IpAddr::V4(a) => format!("for={a};proto=https"),
        std::net::IpAddr::V6(a) => format!("for=\"[{a}]\";proto=https"),
    };
    let xff = chain(headers, "x-forwarded-for", ip.to_string());
    let forwarded = chain(headers, "forwarded", node);
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

fn add_response_headers(h: &mut HeaderMap, shared: &Shared, cookie: Option<String>) {
    if let Some(hsts) = &shared.spec.tls.as_ref().and_then(|t| t.hsts)
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={}", hsts.as_secs()))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, v);
    }
}

/// Sends one request (built by `request` once connected) to the leased backend; `Err` when it
/// failed before a response head.
async fn attempt(
    request: impl FnOnce() -> Request<ProxyBody>,
    lease: &Lease<'_>,
    attempts: &Attempts<'_>,
    client: &Client,
) -> Result<Response<Incoming>, Failed> {
    let shared = attempts.shared();
    let backend: &Backend = lease.backend;
    let private = shared.spec.send_proxy.is_some();
    // A request that must not be sent twice takes a fresh connection.
    let idle = match (attempts.plan().may_use_pooled(), private) {
        (true, true) => crate::upstream::take_sender(&client.private, backend.address),
        (true, false) => backend.pool.take_sender(client.thread, backend.address),
        (false, _) => None,
    };
    // A connection made for this request is closed if the request goes away (the client
    // reset its stream, or left) before the response head: its backend work stops too.
    let mut guard = AbortOnDrop(None);
    let mut sender = match idle {
        Some(s) => s,
        None => {
            let stream = shared
                .connect(backend, client.peer, Some(client.local))
                .await
                .map_err(|_| Failed::Connect)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Failed::Connect)?;
            guard.0 = Some(tokio::spawn(conn).abort_handle());
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
            return Err(Failed::BeforeResponse(outcome));
        }
        Err(_) => return Err(Failed::BeforeResponse(Outcome::Timeout)),
    };
    // The response came: the connection lives on (for its body, then the pool).
    guard.0 = None;
    // The connection takes the next request once this response's body has been read; until
    // then `take_sender` passes over it.
    if private {
        crate::upstream::give_sender(&client.private, backend.address, sender);
    } else {
        backend
            .pool
            .give_sender(client.thread, backend.address, sender);
    }
    Ok(response)
}

/// Aborts a backend connection's task when dropped, unless disarmed first.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
