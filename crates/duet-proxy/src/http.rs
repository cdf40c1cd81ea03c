//! The HTTP/1.1 connection loop: keep-alive to clients, pooled keep-alive connections to
//! backends, bodies streamed by their framing, interim responses relayed. Where a request goes,
//! whether it may use a pooled connection, whether a failure is retried and whom it is blamed
//! on is the request policy's ([`crate::policy`]), shared with the HTTP/2 path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duet_health::Outcome;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::{Lease, Shared};
use crate::balancer::Balancer;
use crate::h1::{self, ClientInfo, Framing, Limits};
use crate::policy::{Attempts, Failed, Logged, Plan};
use crate::spec::HttpTimeouts;

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

/// A client stream the HTTP/1.1 loop serves.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin {
    /// Whether [`ClientIo::wait_readable`] can tell that a read would make progress without a
    /// read buffer (plain TCP). A TLS stream may hold decrypted bytes already, so it waits for
    /// its next request by reading, and keeps its buffers while idle.
    const WAITS_WITHOUT_BUFFERS: bool;

    /// Resolves when a read would make progress (only used when
    /// [`ClientIo::WAITS_WITHOUT_BUFFERS`]).
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>>;
}

impl ClientIo for TcpStream {
    const WAITS_WITHOUT_BUFFERS: bool = true;

    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> {
        self.readable()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    const WAITS_WITHOUT_BUFFERS: bool = false;

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
    /// The request head for the backend (and, once it went, the response head for the client).
    out: Vec<u8>,
    /// Bytes read from the backend.
    response: Vec<u8>,
}

impl ConnBuffers {
    fn take() -> ConnBuffers {
        ConnBuffers {
            client: spare::take(),
            out: spare::take(),
            response: spare::take(),
        }
    }

    /// Returns the buffers to the thread's spares; the client buffer must be empty.
    fn release(&mut self) {
        for b in [&mut self.client, &mut self.out, &mut self.response] {
            spare::give(std::mem::take(b));
        }
    }
}

/// What the loop keeps of a parsed request head once the buffer moves on.
struct Request {
    head_len: usize,
    framing: Framing,
    keep_alive: bool,
    is_head: bool,
    upgrade: bool,
    /// The client speaks HTTP/1.0: no interim responses for it.
    http10: bool,
    expect_continue: bool,
    plan: Plan,
    /// Method and target, when an access log wants them.
    logged: Option<(String, String)>,
}

/// What one look at the client buffer found.
enum Head {
    /// A complete, valid request head; its forwarded form is in `out`.
    Complete(Request),
    /// More bytes needed.
    Partial,
    /// Refused: status and reason.
    Refused(u16, &'static str),
}

/// Parses the request head in `buf` and writes its forwarded form into `out` (sync, so the
/// header array never lives in the connection's future).
fn parse_head(
    buf: &[u8],
    limits: Limits,
    info: ClientInfo,
    out: &mut Vec<u8>,
    shared: &Shared,
    peer: SocketAddr,
) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let req = match h1::parse_request(buf, &mut headers, limits) {
        Ok(Some(req)) => req,
        Ok(None) => return Head::Partial,
        Err(e) => return Head::Refused(e.status(), e.describe()),
    };
    h1::write_request_head(&req, info, out);
    let plan = Plan::new(
        shared,
        peer,
        req.method,
        req.authority,
        req.path.as_bytes(),
        |name| h1::head::cookie(req.headers, name),
        |name| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.to_vec())
        },
    );
    Head::Complete(Request {
        head_len: req.head_len,
        framing: req.framing,
        keep_alive: req.keep_alive,
        is_head: req.method == "HEAD",
        upgrade: req.upgrade,
        http10: req.minor_version == 0,
        expect_continue: req.expect_continue,
        plan,
        // Owned copies only when an access log wants them.
        logged: shared
            .spec
            .access_log
            .as_ref()
            .map(|_| (req.method.to_string(), req.target.to_string())),
    })
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
        local: conn.local,
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
        let idle = shared.spec.http_timeouts.idle;
        // 1. Idle between requests: the idle timeout runs, and a stopping balancer closes the
        // connection now. Plain TCP holds no buffers meanwhile.
        if bufs.client.is_empty() {
            if S::WAITS_WITHOUT_BUFFERS {
                bufs.release();
                let wait = tokio::time::timeout(idle, client.wait_readable());
                tokio::select! {
                    r = wait => if !matches!(r, Ok(Ok(()))) {
                        return;
                    },
                    () = conn.balancer.stopped(conn.thread) => return,
                }
                bufs = ConnBuffers::take();
            } else {
                tokio::select! {
                    r = read_some(&mut client, &mut bufs.client, idle) => if !matches!(r, Ok(n) if n > 0) {
                        return;
                    },
                    () = conn.balancer.stopped(conn.thread) => return,
                }
            }
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
    client: &mut S,
    bufs: &mut ConnBuffers,
    conn: &Conn<'_>,
    shared: &Shared,
    private: &mut Private,
    info: ClientInfo,
) -> bool {
    let limits = shared.spec.limits;
    let timeouts = shared.spec.http_timeouts;
    // The request head: it must be complete within the client timeout from its first byte on
    // (a byte now and then does not extend it).
    let head_deadline = tokio::time::Instant::now() + timeouts.client;
    let request = loop {
        match parse_head(&bufs.client, limits, info, &mut bufs.out, shared, conn.peer) {
            Head::Complete(r) => break r,
            Head::Partial => {
                let left = head_deadline.saturating_duration_since(tokio::time::Instant::now());
                match read_some(client, &mut bufs.client, left).await {
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
    bufs.client.drain(..request.head_len);

    // Is the whole body already here? Then it can be sent again.
    let buffered_body = match request.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => usize::try_from(n).ok().filter(|n| *n <= bufs.client.len()),
        Framing::Chunked => match h1::ChunkedScanner::default().feed(&bufs.client) {
            Ok(end) => end,
            Err(_) => {
                let _ = client
                    .write_all(&error_response(400, "bad chunked body"))
                    .await;
                return false;
            }
        },
        Framing::UntilClose => None,
    };
    let logged = request.logged.as_ref().map(|(method, target)| Logged {
        client: conn.peer,
        proto: conn.proto,
        method,
        target,
    });
    let log = |attempts: &Attempts<'_>, status, backend| {
        if let Some(l) = &logged {
            attempts.log(l, status, backend);
        }
    };

    let mut attempts = Attempts::new(shared, conn.thread, request.plan);
    let mut reuse_client = request.keep_alive && !request.upgrade;
    loop {
        let Some(lease) = attempts.next().await else {
            let (status, why) = attempts.give_up(conn.balancer);
            log(&attempts, status, None);
            let _ = client.write_all(&error_response(status, why)).await;
            return false;
        };
        // The snapshot's own header lines (HSTS), with a sticky cookie only when one is set:
        // no allocation per request otherwise.
        let extra: std::borrow::Cow<'_, [u8]> = match attempts.set_cookie(&lease) {
            None => std::borrow::Cow::Borrowed(&shared.response_headers),
            Some(c) => std::borrow::Cow::Owned(
                [
                    &shared.response_headers[..],
                    b"Set-Cookie: ",
                    c.as_bytes(),
                    b"\r\n",
                ]
                .concat(),
            ),
        };
        let forward = Forward {
            extra_response_headers: &extra,
            framing: request.framing,
            buffered_body,
            is_head: request.is_head,
            http10: request.http10,
            expect_continue: request.expect_continue,
            client_keep_alive: request.keep_alive,
            timeouts,
        };
        let address = lease.backend.address;
        let result = exchange(client, bufs, &forward, &lease, &attempts, conn, private).await;
        match result {
            Ok((client_keep, status)) => {
                if let Some(n) = buffered_body {
                    bufs.client.drain(..n);
                }
                log(&attempts, status, Some(address));
                reuse_client &= client_keep;
                return reuse_client;
            }
            Err(Failure::Connect) => {
                // Nothing was sent: the request can go elsewhere as it is.
                attempts.failed(&lease, Failed::Connect, true);
            }
            Err(Failure::Backend {
                outcome,
                resendable,
            }) => {
                attempts.failed(&lease, Failed::BeforeResponse(outcome), resendable);
            }
            Err(Failure::Client(status)) => {
                // The client's fault: answered (when it can still hear it), never counted
                // against the backend.
                log(&attempts, status.unwrap_or(499), Some(address));
                if let Some(s) = status {
                    let why = if s == 408 {
                        "request body timeout"
                    } else {
                        "bad request body"
                    };
                    let _ = client.write_all(&error_response(s, why)).await;
                }
                return false;
            }
            Err(Failure::Midway { status, blame }) => {
                if let Some(outcome) = blame {
                    attempts.failed_midway(&lease, outcome);
                }
                log(&attempts, status, Some(address));
                return false;
            }
        }
    }
}

/// Why an exchange did not complete.
enum Failure {
    /// No connection to the backend: nothing was sent.
    Connect,
    /// The backend failed before a final response head reached the client. `resendable`:
    /// the whole request can be sent again and nothing but what a retry may follow went to the
    /// client.
    Backend { outcome: Outcome, resendable: bool },
    /// The client timed out, closed or sent a malformed body before its response: answer this
    /// status if any (408, 400), then close.
    Client(Option<u16>),
    /// The response head went out and then the exchange broke: close the client connection.
    /// `blame`: the backend's fault, if it was.
    Midway { status: u16, blame: Option<Outcome> },
}

/// The request being forwarded, as each attempt needs it (its head is in the connection's
/// `out` buffer until the first attempt writes it).
struct Forward<'a> {
    /// Header lines the proxy adds to the response (HSTS, sticky cookie).
    extra_response_headers: &'a [u8],
    /// Request body framing.
    framing: Framing,
    /// Body length when the whole body is already in the client buffer.
    buffered_body: Option<usize>,
    /// The request was HEAD: the response has no body.
    is_head: bool,
    /// The client speaks HTTP/1.0 (no interim responses).
    http10: bool,
    /// The client waits for `100 Continue` before its body.
    expect_continue: bool,
    /// The client wants to keep its connection.
    client_keep_alive: bool,
    timeouts: HttpTimeouts,
}

/// One request/response exchange with the leased backend. `Ok((keep, status))`: done, whether
/// the client connection may be reused, and the status sent.
async fn exchange<S: ClientIo>(
    client: &mut S,
    bufs: &mut ConnBuffers,
    forward: &Forward<'_>,
    lease: &Lease<'_>,
    attempts: &Attempts<'_>,
    conn: &Conn<'_>,
    private: &mut Private,
) -> Result<(bool, u16), Failure> {
    let shared = attempts.shared();
    let backend = lease.backend;
    let per_client = shared.spec.send_proxy.is_some();
    // A request that must not be sent twice takes a fresh connection.
    let mut reused = match (attempts.plan().may_use_pooled(), per_client) {
        (true, true) => private
            .take()
            .filter(|(a, s)| *a == backend.address && crate::upstream::still_open(s))
            .map(|(_, s)| s),
        (true, false) => backend.pool.take_open(conn.thread),
        (false, _) => None,
    };
    // The head must survive a retry: the first attempt's head is kept and sent again.
    let head_len = bufs.out.len();
    loop {
        let (mut server, pooled) = match reused.take() {
            Some(s) => (s, true),
            None => {
                // Boxed: a new backend connection is rarer than a request, and its future is
                // large.
                match Box::pin(shared.connect(backend, conn.peer, Some(conn.local))).await {
                    Ok(s) => (s, false),
                    Err(_) => return Err(Failure::Connect),
                }
            }
        };
        bufs.out.truncate(head_len);
        let result = exchange_on(client, &mut server, bufs, forward, lease, attempts).await;
        match result {
            // An idle connection the backend closed just as we used it (its keep-alive
            // timeout): not the backend's fault and not a retry; the same request again on a
            // fresh connection (only idempotent requests take pooled connections).
            Err(Failure::Backend {
                outcome: Outcome::Reset,
                resendable: true,
            }) if pooled => continue,
            Ok((client_keep, server_reusable, status)) => {
                if server_reusable {
                    if per_client {
                        *private = Some((backend.address, server));
                    } else {
                        backend.pool.give(conn.thread, server);
                    }
                }
                return Ok((client_keep, status));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the backend answered before the client sent its body.
enum Continue {
    /// Go on with the body (the client sent some, or the backend said `100`).
    Body,
    /// The backend sent its final response head without waiting for the body.
    Final,
}

/// Returns (client keep-alive, backend connection reusable, status). On entry `out` holds the
/// request head; it is reused for the response head.
async fn exchange_on<S: ClientIo>(
    client: &mut S,
    server: &mut TcpStream,
    bufs: &mut ConnBuffers,
    forward: &Forward<'_>,
    lease: &Lease<'_>,
    attempts: &Attempts<'_>,
) -> Result<(bool, bool, u16), Failure> {
    let ConnBuffers {
        client: buf,
        out,
        response: rbuf,
    } = bufs;
    let timeouts = forward.timeouts;
    rbuf.clear();
    // Once an interim response reached the client, a retry could still answer it, but the
    // body may have been streamed: only a buffered body is sent again.
    let mut interim_sent = false;
    let backend_failed = |outcome, interim_sent: bool| Failure::Backend {
        outcome,
        resendable: forward.buffered_body.is_some() && !interim_sent,
    };
    // 1. The request: head, then the body as framed.
    let mut early_final = false;
    match forward.buffered_body {
        // Head and body in one write; the body stays in `buf` until the exchange succeeds, so a
        // retry can send it again.
        Some(n) => {
            out.extend_from_slice(&buf[..n]);
            let sent = server.write_all(out).await;
            out.truncate(out.len() - n);
            sent.map_err(|_| backend_failed(Outcome::Reset, false))?;
        }
        None => {
            server
                .write_all(out)
                .await
                .map_err(|_| backend_failed(Outcome::Reset, false))?;
            if forward.expect_continue && buf.is_empty() {
                match wait_for_continue(client, server, buf, rbuf, out, forward).await? {
                    (Continue::Body, sent) => interim_sent |= sent,
                    (Continue::Final, sent) => {
                        interim_sent |= sent;
                        early_final = true;
                    }
                }
            }
            if !early_final {
                stream_body(client, server, buf, forward.framing, timeouts.client)
                    .await
                    .map_err(|e| match e {
                        StreamError::Read(std::io::ErrorKind::TimedOut) => {
                            Failure::Client(Some(408))
                        }
                        StreamError::Read(_) => Failure::Client(None),
                        StreamError::Invalid => Failure::Client(Some(400)),
                        StreamError::Write => Failure::Backend {
                            outcome: Outcome::Reset,
                            resendable: false,
                        },
                    })?;
            }
        }
    }
    // 2. The response head, after any interim responses.
    let (head_len, rframing, server_keep, status) = loop {
        match read_response_head(server, rbuf, out, forward, timeouts.server).await {
            Ok(ResponseHead::Interim(len)) => {
                rbuf.drain(..len);
                if !forward.http10 {
                    client
                        .write_all(out)
                        .await
                        .map_err(|_| Failure::Client(None))?;
                    interim_sent = true;
                }
            }
            Ok(ResponseHead::Final(head)) => break head,
            Err(outcome) => return Err(backend_failed(outcome, interim_sent)),
        }
    };
    rbuf.drain(..head_len);
    attempts.answered(lease, status);
    // A client whose body was never read cannot send another request on this connection.
    let client_keep_alive = forward.client_keep_alive && !early_final;
    let server_keep = server_keep && !early_final;
    let midway = |blame| Failure::Midway { status, blame };
    // 3. A small response that is already complete goes out in one write with its head.
    if let Framing::Length(n) = rframing
        && let Ok(n) = usize::try_from(n)
        && n <= rbuf.len()
    {
        out.extend_from_slice(&rbuf[..n]);
        rbuf.drain(..n);
        client.write_all(out).await.map_err(|_| midway(None))?;
        return Ok((client_keep_alive, server_keep && rbuf.is_empty(), status));
    }
    client.write_all(out).await.map_err(|_| midway(None))?;
    if status == 101 {
        // Protocol switch: tunnel both ways until either side closes.
        let _ = client.write_all(rbuf).await;
        let _ = Box::pin(tokio::io::copy_bidirectional(client, server)).await;
        return Ok((false, false, status));
    }
    stream_body(server, client, rbuf, rframing, timeouts.server)
        .await
        .map_err(|e| match e {
            StreamError::Read(std::io::ErrorKind::TimedOut) => midway(Some(Outcome::Timeout)),
            StreamError::Read(_) => midway(Some(Outcome::Reset)),
            StreamError::Invalid => midway(Some(Outcome::BadResponse)),
            StreamError::Write => midway(None),
        })?;
    let client_keep = client_keep_alive && rframing != Framing::UntilClose;
    Ok((client_keep, server_keep && rbuf.is_empty(), status))
}

/// After a head with `Expect: 100-continue`: waits for whichever comes first, the client's
/// body or the backend's answer, and relays interim responses. Returns what came and whether an
/// interim response went to the client. On `Continue::Final`, the final head is in `rbuf`.
async fn wait_for_continue<S: ClientIo>(
    client: &mut S,
    server: &mut TcpStream,
    buf: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    forward: &Forward<'_>,
) -> Result<(Continue, bool), Failure> {
    let timeouts = forward.timeouts;
    let mut sent = false;
    loop {
        // Both reads are cancel-safe: the one that loses the race has read nothing.
        tokio::select! {
            r = read_some(client, buf, timeouts.client) => return match r {
                Ok(n) if n > 0 => Ok((Continue::Body, sent)),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Failure::Client(Some(408))),
                _ => Err(Failure::Client(None)),
            },
            r = read_some(server, rbuf, timeouts.server) => match r {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Failure::Backend { outcome: Outcome::Timeout, resendable: false });
                }
                _ => return Err(Failure::Backend { outcome: Outcome::Reset, resendable: false }),
            },
        }
        // Relay every complete interim head; a final one ends the wait.
        loop {
            match parse_response_head(rbuf, forward, out) {
                Ok(Some(ResponseHead::Interim(len))) => {
                    rbuf.drain(..len);
                    client
                        .write_all(out)
                        .await
                        .map_err(|_| Failure::Client(None))?;
                    sent = true;
                    if !rbuf.is_empty() {
                        continue;
                    }
                    // `100 Continue` (or another interim answer): the body may come now.
                    return Ok((Continue::Body, sent));
                }
                Ok(Some(ResponseHead::Final(_))) => return Ok((Continue::Final, sent)),
                Ok(None) => break,
                Err(outcome) => {
                    return Err(Failure::Backend {
                        outcome,
                        resendable: false,
                    });
                }
            }
        }
    }
}

/// A response head found in the backend's bytes.
enum ResponseHead {
    /// An interim (1xx, not 101) head of this length; its client form is in `out`.
    Interim(usize),
    /// The final head: (length, framing, backend keep-alive, status); its client form is in
    /// `out`.
    Final((usize, Framing, bool, u16)),
}

/// Reads until a complete response head is in `rbuf`; a failure is the backend's.
async fn read_response_head(
    server: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    forward: &Forward<'_>,
    timeout: Duration,
) -> Result<ResponseHead, Outcome> {
    loop {
        if let Some(head) = parse_response_head(rbuf, forward, out)? {
            return Ok(head);
        }
        match read_some(server, rbuf, timeout).await {
            Ok(0) => return Err(Outcome::Reset),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Outcome::Timeout),
            Err(_) => return Err(Outcome::Reset),
        }
    }
}

/// Parses a response head in `buf` and writes the client's version into `out` (sync, so the
/// header array never lives in the connection's future).
fn parse_response_head(
    buf: &[u8],
    forward: &Forward<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, Outcome> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let res = match h1::parse_response(buf, &mut headers, Limits::default(), forward.is_head) {
        Ok(Some(res)) => res,
        Ok(None) => return Ok(None),
        Err(_) => return Err(Outcome::BadResponse),
    };
    if (100..200).contains(&res.status) && res.status != 101 {
        h1::write_response_head(&res, true, b"", out);
        return Ok(Some(ResponseHead::Interim(res.head_len)));
    }
    let keep = forward.client_keep_alive && res.framing != Framing::UntilClose;
    h1::write_response_head(&res, keep, forward.extra_response_headers, out);
    Ok(Some(ResponseHead::Final((
        res.head_len,
        res.framing,
        res.keep_alive,
        res.status,
    ))))
}

/// Why a body could not be copied.
enum StreamError {
    /// Reading the sending side failed (`TimedOut`, `UnexpectedEof` when it closed early, …).
    Read(std::io::ErrorKind),
    /// Writing the receiving side failed.
    Write,
    /// The body is not valid chunked coding.
    Invalid,
}

/// Copies one body framed by `framing` from `from` to `to`, starting with the bytes already in
/// `buf`; leaves any bytes after the body in `buf`.
async fn stream_body<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
    buf: &mut Vec<u8>,
    framing: Framing,
    timeout: Duration,
) -> Result<(), StreamError> {
    let mut scan = h1::ChunkedScanner::default();
    let mut left = match framing {
        Framing::Empty => return Ok(()),
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    loop {
        // How much of `buf` belongs to the body, and whether the body ends there.
        let (take, end) = match framing {
            Framing::Length(_) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                left -= take as u64;
                (take, left == 0)
            }
            Framing::Chunked => match scan.feed(buf).map_err(|_| StreamError::Invalid)? {
                Some(n) => (n, true),
                None => (buf.len(), false),
            },
            _ => (buf.len(), false),
        };
        to.write_all(&buf[..take])
            .await
            .map_err(|_| StreamError::Write)?;
        buf.drain(..take);
        if end {
            return Ok(());
        }
        match read_some(from, buf, timeout).await {
            Ok(0) if framing == Framing::UntilClose => return Ok(()),
            Ok(0) => return Err(StreamError::Read(std::io::ErrorKind::UnexpectedEof)),
            Ok(_) => {}
            Err(e) => return Err(StreamError::Read(e.kind())),
        }
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
                let Some(host) = req
                    .authority
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                else {
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
                let target = req.path;
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
