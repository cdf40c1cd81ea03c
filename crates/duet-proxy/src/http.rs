//! HTTP/1.1 connection loop (first cut): keep-alive to clients, pooled keep-alive connections to
//! backends, bodies streamed by their framing, and retries on another backend only where safe.
//!
//! Retry rules (issue #4): a request is retried once more on another backend when the connect
//! failed (nothing was written), or when it is idempotent, its whole body was buffered, and the
//! backend closed, reset or answered garbage before any response byte reached the client. Never
//! after response bytes went to the client. Otherwise the client gets 502 and the failure counts
//! against the backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_health::Outcome;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::{Backend, Lease, NoPick, Shared, request_key};
use crate::h1::{self, ClientInfo, Framing, Limits};
use crate::runtime::Balancer;

/// Timeouts of the HTTP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Waiting for the next request on an idle keep-alive connection.
    pub idle: Duration,
    /// Receiving a request head once it started (slowloris protection), and each read of a
    /// request body.
    pub client: Duration,
    /// Waiting for the backend's response.
    pub server: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> HttpTimeouts {
        HttpTimeouts {
            idle: Duration::from_secs(60),
            client: Duration::from_secs(30),
            server: Duration::from_secs(30),
        }
    }
}

enum Failure {
    /// Nothing reached the client yet; the request may be retried if the rules allow.
    BeforeResponse(Outcome),
    /// Response bytes went out: the client connection must be closed.
    AfterResponse,
}

const READ_CHUNK: usize = 16 * 1024;

/// Who a client connection belongs to.
pub(crate) struct Conn<'a> {
    pub(crate) balancer: &'a Balancer,
    /// The worker thread (its idle backend connections).
    pub(crate) thread: usize,
    /// The client (after PROXY protocol).
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (for PROXY headers).
    pub(crate) local: SocketAddr,
    /// `"http"` or `"https"`.
    pub(crate) proto: &'static str,
}

/// With `send_proxy`, backend connections carry one client's address and are not shared: the
/// client connection keeps its own.
type Private = Option<(SocketAddr, TcpStream)>;

/// A client stream the HTTP/1.1 loop can wait on without holding a read buffer.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin {
    /// Resolves when a read would make progress. Streams that cannot tell (TLS may hold
    /// decrypted bytes already) resolve at once and keep their buffers while idle.
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>>;
}

impl ClientIo for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> {
        self.readable()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    async fn wait_readable(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spare buffers of this worker thread. A connection holds buffers only while a request is
/// in progress, so an idle keep-alive connection costs little memory, and busy ones reuse
/// the same few buffers instead of allocating.
mod spare {
    use std::cell::RefCell;

    /// Buffers kept per thread at most; larger ones are not kept.
    const KEEP: usize = 256;
    const MAX_CAPACITY: usize = 64 * 1024;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer, reused when one is spare.
    pub(super) fn take() -> Vec<u8> {
        SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    /// Gives an empty-able buffer back (its contents are dropped).
    pub(super) fn give(mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_CAPACITY {
            return;
        }
        buf.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEEP {
                s.push(buf);
            }
        });
    }
}

/// The connection's buffers, held while a request is in progress.
#[derive(Default)]
struct ConnBuffers {
    /// Bytes read from the client and not yet forwarded.
    client: Vec<u8>,
    /// The request head for the backend.
    head_out: Vec<u8>,
    /// Bytes read from the backend.
    response: Vec<u8>,
    /// The response head for the client.
    response_head: Vec<u8>,
}

impl ConnBuffers {
    fn take() -> ConnBuffers {
        ConnBuffers {
            client: spare::take(),
            head_out: spare::take(),
            response: spare::take(),
            response_head: spare::take(),
        }
    }

    /// Returns the buffers to the thread's spares; the client buffer must be empty.
    fn release(&mut self) {
        for b in [
            &mut self.client,
            &mut self.head_out,
            &mut self.response,
            &mut self.response_head,
        ] {
            spare::give(std::mem::take(b));
        }
    }
}

/// What one look at the client buffer found.
enum Head {
    /// A complete, valid request head; its forwarded form is in `head_out`.
    Complete(Request),
    /// More bytes needed.
    Partial,
    /// Refused: status and reason.
    Refused(u16, &'static str),
}

/// Parses the request head in `buf` (sync, so the header array never lives in the
/// connection's future).
fn parse_head(
    buf: &[u8],
    limits: Limits,
    info: ClientInfo,
    head_out: &mut Vec<u8>,
    shared: &Shared,
    peer: SocketAddr,
) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    match h1::parse_request(buf, &mut headers, limits) {
        Ok(Some(req)) => {
            h1::write_request_head(&req, info, head_out);
            Head::Complete(Request::new(&req, shared, peer))
        }
        Ok(None) => Head::Partial,
        Err(e) => Head::Refused(e.status(), e.describe()),
    }
}

/// Serves one client connection until it closes.
pub(crate) async fn serve_connection<S: ClientIo>(
    mut client: S,
    initial: Vec<u8>,
    conn: Conn<'_>,
    mut shared: Arc<Shared>,
) {
    let info = ClientInfo {
        addr: conn.peer.ip(),
        proto: conn.proto,
    };
    let mut bufs = ConnBuffers {
        client: initial,
        ..ConnBuffers::default()
    };
    let mut private: Private = None;
    loop {
        // A reload applies from the next request on.
        conn.balancer.refresh(&mut shared);
        if conn.balancer.is_stopped() && bufs.client.is_empty() {
            return;
        }
        let timeouts = shared.spec.http_timeouts;
        // 1. Idle between requests: no buffers held, the idle timeout runs, and a stopping
        // balancer closes the connection now.
        if bufs.client.is_empty() {
            bufs.release();
            let wait = tokio::time::timeout(timeouts.idle, client.wait_readable());
            tokio::select! {
                r = wait => if !matches!(r, Ok(Ok(()))) {
                    return;
                },
                () = conn.balancer.stopped(conn.thread) => return,
            }
            bufs = ConnBuffers::take();
        }
        // 2. One request: its state lives in a box of its own while it runs, so an idle
        // connection's future stays small (one allocation per request, measured in
        // docs/benchmarks.md against the memory it saves).
        let keep = Box::pin(one_request(
            &mut client,
            &mut bufs,
            &conn,
            &shared,
            &mut private,
            info,
        ))
        .await;
        if !keep {
            return;
        }
    }
}

/// Reads one request from the client, forwards it and relays the response; whether the
/// client connection stays open.
async fn one_request<S: ClientIo>(
    mut client: &mut S,
    bufs: &mut ConnBuffers,
    conn: &Conn<'_>,
    shared: &Shared,
    private: &mut Private,
    info: ClientInfo,
) -> bool {
    let limits = shared.spec.limits;
    let timeouts = shared.spec.http_timeouts;
    {
        // 2. The request head: it must be complete within the client timeout from its first
        // byte on (a byte now and then does not extend it).
        let head_deadline = tokio::time::Instant::now() + timeouts.client;
        let request = loop {
            let parsed = parse_head(
                &bufs.client,
                limits,
                info,
                &mut bufs.head_out,
                shared,
                conn.peer,
            );
            match parsed {
                Head::Complete(r) => break r,
                Head::Partial => {
                    let left = head_deadline.saturating_duration_since(tokio::time::Instant::now());
                    match read_some(&mut client, &mut bufs.client, left).await {
                        Ok(0) | Err(_) => {
                            if !bufs.client.is_empty() {
                                let _ = client
                                    .write_all(&error_response(408, "request timeout"))
                                    .await;
                            }
                            return false;
                        }
                        Ok(_) => {}
                    }
                }
                Head::Refused(status, why) => {
                    let _ = client.write_all(&error_response(status, why)).await;
                    return false;
                }
            }
        };
        let ConnBuffers {
            client: buf,
            head_out,
            response: rbuf,
            response_head: rhead,
        } = bufs;
        buf.drain(..request.head_len);

        // 2. Is the whole body already here? Then a retry can resend it.
        let buffered_body = match request.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => usize::try_from(n).ok().filter(|n| *n <= buf.len()),
            Framing::Chunked => {
                let mut scan = h1::ChunkedScanner::default();
                match scan.feed(buf) {
                    Ok(end) => end,
                    Err(_) => {
                        let _ = client
                            .write_all(&error_response(400, "bad chunked body"))
                            .await;
                        return false;
                    }
                }
            }
            Framing::UntilClose => None,
        };

        // 3. Attempts.
        let started = std::time::Instant::now();
        let mut answered: Option<(SocketAddr, u16)> = None;
        let mut tried = Vec::new();
        let mut done = false;
        let mut full = false;
        let mut reuse_client = request.keep_alive && !request.upgrade;
        let group = request.group;
        for _ in 0..=shared.spec.retries {
            // A sticky client goes back to its backend while that one is healthy.
            let lease = match shared
                .lease(conn.thread, group, request.key, request.sticky, &tried)
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
            let cookie = match (
                &shared.spec.sticky_cookie,
                request.sticky == Some(lease.index),
            ) {
                (Some(name), false) => Some(format!(
                    "Set-Cookie: {name}={}; Path=/; HttpOnly\r\n",
                    lease.backend.sticky_id
                )),
                _ => None,
            };
            let mut extra = shared.response_headers.as_slice();
            let joined;
            if let Some(c) = cookie {
                joined = [extra, c.as_bytes()].concat();
                extra = &joined;
            }
            let forward = Forward {
                head: head_out,
                extra_response_headers: extra,
                framing: request.framing,
                buffered_body,
                is_head: request.is_head,
                client_keep_alive: request.keep_alive,
            };
            let bufs = Buffers {
                client: &mut *buf,
                response: &mut *rbuf,
                head: &mut *rhead,
            };
            let address = lease.backend.address;
            let result = exchange(&mut client, bufs, &forward, &lease, shared, conn, private).await;
            match result {
                Ok((client_keep, status)) => {
                    lease.backend.stats.observe(conn.thread, started.elapsed());
                    answered = Some((address, status));
                    if let Some(n) = buffered_body {
                        buf.drain(..n);
                    }
                    reuse_client &= client_keep;
                    done = true;
                    break;
                }
                Err(Failure::BeforeResponse(outcome)) => {
                    lease.backend.record(&shared.spec.name, outcome);
                    let safe = outcome == Outcome::ConnectFailed
                        || (request.idempotent && buffered_body.is_some());
                    if !safe {
                        break;
                    }
                }
                Err(Failure::AfterResponse) => return false,
            }
        }
        let failed_status = if tried.is_empty() || full { 503 } else { 502 };
        if let (Some(log), Some((method, target))) = (&shared.spec.access_log, &request.logged) {
            log.log(&crate::access_log::Entry {
                balancer: &shared.spec.name,
                client: conn.peer,
                method,
                target,
                status: answered.map_or(failed_status, |(_, s)| s),
                backend: answered.map(|(a, _)| a),
                attempts: tried.len(),
                duration: started.elapsed(),
            });
        }
        if !done {
            conn.balancer.client_errors.fetch_add(1, Ordering::Relaxed);
            let why = if full {
                "every backend is at its connection limit"
            } else {
                "no backend could answer"
            };
            let _ = client.write_all(&error_response(failed_status, why)).await;
            return false;
        }
        reuse_client
    }
}

/// What the loop keeps of a parsed request head once the buffer moves on.
struct Request {
    head_len: usize,
    framing: Framing,
    keep_alive: bool,
    idempotent: bool,
    is_head: bool,
    upgrade: bool,
    /// The pool its route chose.
    group: usize,
    /// Its backend in that pool, by sticky cookie.
    sticky: Option<usize>,
    /// Hash or random key for the pick.
    key: u64,
    /// Method and target, when an access log wants them.
    logged: Option<(String, String)>,
}

impl Request {
    fn new(req: &h1::RequestHead<'_, '_>, shared: &Shared, peer: SocketAddr) -> Request {
        let path = origin_path(req.target.as_bytes());
        let group = shared.route(req.host, path);
        let sticky = shared.spec.sticky_cookie.as_deref().and_then(|name| {
            let id = h1::head::cookie(req.headers, name)?;
            shared.groups[group]
                .members
                .iter()
                .position(|m| m.backend.sticky_id.as_bytes() == id)
        });
        let key = match shared.spec.algorithm {
            duet_health::Algorithm::Hash => {
                request_key(&shared.spec.hash_key, peer.ip(), path, |name| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value.to_vec())
                })
            }
            _ => crate::backends::random_bits(),
        };
        Request {
            head_len: req.head_len,
            framing: req.framing,
            keep_alive: req.keep_alive,
            idempotent: req.idempotent(),
            is_head: req.method == "HEAD",
            upgrade: req.upgrade,
            group,
            sticky,
            key,
            // Owned copies only when an access log wants them.
            logged: shared
                .spec
                .access_log
                .as_ref()
                .map(|_| (req.method.to_string(), req.target.to_string())),
        }
    }
}

/// The path of a request target: `/a?b` as is, `http://host/a?b` → `/a?b`.
fn origin_path(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    let after_scheme = target
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    let rest = &target[after_scheme..];
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => &rest[i..],
        None => b"/",
    }
}

/// Answers every request on a plain-HTTP redirect listener with `308` to the same host and
/// target over https (`port`: the TLS listener's, omitted when 443).
pub(crate) async fn redirect_to_https(
    mut client: TcpStream,
    mut buf: Vec<u8>,
    port: u16,
    shared: &Shared,
) {
    let timeouts = shared.spec.http_timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.client;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match h1::parse_request(&buf, &mut headers, shared.spec.limits) {
            Ok(Some(req)) => {
                let Some(host) = req.host.map(|h| String::from_utf8_lossy(h).into_owned()) else {
                    let _ = client.write_all(&error_response(400, "no Host")).await;
                    return;
                };
                let name = match host.rsplit_once(':') {
                    Some((name, p)) if !p.contains(']') => name.to_string(),
                    _ => host,
                };
                let authority = if port == 443 {
                    name
                } else {
                    format!("{name}:{port}")
                };
                let target =
                    String::from_utf8_lossy(origin_path(req.target.as_bytes())).into_owned();
                let location = format!("https://{authority}{target}");
                let response = format!(
                    "HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = client.write_all(response.as_bytes()).await;
                return;
            }
            Ok(None) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match read_some(&mut client, &mut buf, left).await {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
            }
            Err(e) => {
                let _ = client
                    .write_all(&error_response(e.status(), e.describe()))
                    .await;
                return;
            }
        }
    }
}

/// The request being forwarded, as each attempt needs it.
struct Forward<'a> {
    /// The head to send to the backend.
    head: &'a [u8],
    /// Header lines the proxy adds to the response (sticky cookie).
    extra_response_headers: &'a [u8],
    /// Request body framing.
    framing: Framing,
    /// Body length when the whole body is already in the client buffer.
    buffered_body: Option<usize>,
    /// The request was HEAD: the response has no body.
    is_head: bool,
    /// The client wants to keep its connection.
    client_keep_alive: bool,
}

/// The connection's reusable buffers.
struct Buffers<'a> {
    /// Bytes read from the client and not yet forwarded.
    client: &'a mut Vec<u8>,
    /// Bytes read from the backend.
    response: &'a mut Vec<u8>,
    /// The response head being written.
    head: &'a mut Vec<u8>,
}

/// One request/response exchange with the leased backend. `Ok((keep, status))`: done, whether
/// the client connection may be reused, and the status sent.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    bufs: Buffers<'_>,
    forward: &Forward<'_>,
    lease: &Lease<'_>,
    shared: &Shared,
    conn: &Conn<'_>,
    private: &mut Private,
) -> Result<(bool, u16), Failure> {
    let backend: &Backend = lease.backend;
    let stats = &backend.stats;
    let mut reused = if shared.spec.send_proxy.is_some() {
        private
            .take()
            .filter(|(a, s)| *a == backend.address && still_open(s))
            .map(|(_, s)| s)
    } else {
        take_open(backend, conn.thread)
    };
    let mut bufs = bufs;
    let (result, server) = loop {
        let (mut server, pooled) = match reused.take() {
            Some(s) => (s, true),
            None => {
                let local = Some(conn.local);
                // Boxed: a new backend connection is rarer than a request, and its future is
                // large.
                match Box::pin(crate::runtime::connect(shared, backend, conn.peer, local)).await {
                    Ok(s) => (s, false),
                    Err(()) => return Err(Failure::BeforeResponse(Outcome::ConnectFailed)),
                }
            }
        };
        let result = exchange_on(
            client,
            &mut server,
            &mut bufs,
            forward,
            shared.spec.http_timeouts,
        )
        .await;
        match result {
            // An idle connection the backend closed just as we used it (its keep-alive
            // timeout): not the backend's fault and not a retry; the same request again on a
            // fresh connection, when it can be sent again.
            Err(Failure::BeforeResponse(Outcome::Reset))
                if pooled && forward.buffered_body.is_some() =>
            {
                continue;
            }
            other => break (other, server),
        }
    };
    let mut server = Some(server);
    match result {
        Ok((client_keep, server_reusable, status)) => {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let outcome = if status >= 500 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            backend.record(&shared.spec.name, outcome);
            if let (true, Some(server)) = (server_reusable, server.take()) {
                if shared.spec.send_proxy.is_some() {
                    *private = Some((backend.address, server));
                } else {
                    backend.give_idle(conn.thread, server);
                }
            }
            Ok((client_keep, status))
        }
        Err(e) => Err(e),
    }
}

/// Parses a response head in `buf` and writes the client's version into `out` (sync, so the
/// header array never lives in the connection's future). `Some((head length, framing,
/// backend keep-alive, status))` when complete.
fn parse_response_head(
    buf: &[u8],
    is_head: bool,
    client_keep_alive: bool,
    extra: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<(usize, Framing, bool, u16)>, h1::HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let Some(res) = h1::parse_response(buf, &mut headers, Limits::default(), is_head)? else {
        return Ok(None);
    };
    let keep = client_keep_alive && res.framing != Framing::UntilClose;
    h1::write_response_head(&res, keep, extra, out);
    Ok(Some((
        res.head_len,
        res.framing,
        res.keep_alive,
        res.status,
    )))
}

/// An idle pooled connection to `backend` that is still open; closed ones are dropped.
fn take_open(backend: &Backend, thread: usize) -> Option<TcpStream> {
    while let Some(s) = backend.take_idle(thread) {
        if still_open(&s) {
            return Some(s);
        }
    }
    None
}

/// Whether an idle backend connection can take a request: nothing to read (a FIN, a reset or
/// stray bytes all mean it cannot).
fn still_open(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Returns (client keep-alive, backend connection reusable, status).
async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    server: &mut TcpStream,
    bufs: &mut Buffers<'_>,
    forward: &Forward<'_>,
    timeouts: HttpTimeouts,
) -> Result<(bool, bool, u16), Failure> {
    let Buffers {
        client: buf,
        response: rbuf,
        head: out,
    } = bufs;
    let (buf, rbuf, out): (&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>) = (buf, rbuf, out);
    let Forward {
        head,
        extra_response_headers,
        framing,
        buffered_body,
        is_head,
        client_keep_alive,
    } = *forward;
    let before = |_| Failure::BeforeResponse(Outcome::Reset);
    // Request: head, then the body as framed.
    match buffered_body {
        // Head and body in one write; the body stays in `buf` until the exchange succeeds, so a
        // retry can send it again.
        Some(n) => {
            out.clear();
            out.extend_from_slice(head);
            out.extend_from_slice(&buf[..n]);
            server.write_all(out).await.map_err(before)?;
        }
        None => {
            server.write_all(head).await.map_err(before)?;
            stream_body(client, server, buf, framing, timeouts.client)
                .await
                .map_err(|_| Failure::BeforeResponse(Outcome::Reset))?;
        }
    }
    // Response head.
    rbuf.clear();
    let (head_len, rframing, server_keep, status) = loop {
        match parse_response_head(
            rbuf,
            is_head,
            client_keep_alive,
            extra_response_headers,
            out,
        ) {
            Ok(Some(head)) => break head,
            Ok(None) => match read_some(server, rbuf, timeouts.server).await {
                Ok(0) => return Err(Failure::BeforeResponse(Outcome::Reset)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Failure::BeforeResponse(Outcome::Timeout));
                }
                Err(_) => return Err(Failure::BeforeResponse(Outcome::Reset)),
            },
            Err(_) => return Err(Failure::BeforeResponse(Outcome::BadResponse)),
        }
    };
    rbuf.drain(..head_len);
    // A small response that is already complete goes out in one write with its head.
    if let Framing::Length(n) = rframing
        && let Ok(n) = usize::try_from(n)
        && n <= rbuf.len()
    {
        out.extend_from_slice(&rbuf[..n]);
        rbuf.drain(..n);
        client
            .write_all(out)
            .await
            .map_err(|_| Failure::AfterResponse)?;
        let client_keep = client_keep_alive;
        return Ok((client_keep, server_keep && rbuf.is_empty(), status));
    }
    client
        .write_all(out)
        .await
        .map_err(|_| Failure::AfterResponse)?;
    if status == 101 {
        // Protocol switch: tunnel both ways until either side closes.
        let _ = client.write_all(rbuf).await;
        let _ = Box::pin(tokio::io::copy_bidirectional(client, server)).await;
        return Ok((false, false, status));
    }
    stream_body(server, client, rbuf, rframing, timeouts.server)
        .await
        .map_err(|_| Failure::AfterResponse)?;
    let client_keep = client_keep_alive && rframing != Framing::UntilClose;
    Ok((client_keep, server_keep && rbuf.is_empty(), status))
}

/// Copies one body framed by `framing` from `from` to `to`, starting with the bytes already in
/// `buf`; leaves any bytes after the body in `buf`.
async fn stream_body<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    framing: Framing,
    timeout: Duration,
) -> std::io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                to.write_all(&buf[..take]).await?;
                buf.drain(..take);
                left -= take as u64;
                if left == 0 {
                    return Ok(());
                }
                if read_some(from, buf, timeout).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Framing::Chunked => {
            let mut scan = h1::ChunkedScanner::default();
            loop {
                let end = scan
                    .feed(buf)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                if let Some(n) = end {
                    to.write_all(&buf[..n]).await?;
                    buf.drain(..n);
                    return Ok(());
                }
                // Everything so far belongs to the body: pass it on and read more.
                to.write_all(buf).await?;
                buf.clear();
                if read_some(from, buf, timeout).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Framing::UntilClose => {
            to.write_all(buf).await?;
            buf.clear();
            tokio::io::copy(from, to).await?;
            Ok(())
        }
    }
}

/// Appends what is readable now (up to [`READ_CHUNK`]) to `buf`; `Ok(0)` at end of stream.
async fn read_some<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<usize> {
    // `read_buf` fills spare capacity without zeroing it first.
    buf.reserve(READ_CHUNK);
    match tokio::time::timeout(timeout, stream.read_buf(buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

fn error_response(status: u16, text: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    )
    .into_bytes()
}
