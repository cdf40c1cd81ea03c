//! HTTP/1.1 connection loop (first cut): keep-alive to clients, pooled keep-alive connections to
//! backends, bodies streamed by their framing, and retries on another backend only where safe.
//!
//! Retry rules (issue #4): a request is retried once more on another backend when the connect
//! failed (nothing was written), or when it is idempotent, its whole body was buffered, and the
//! backend closed, reset or answered garbage before any response byte reached the client. Never
//! after response bytes went to the client. Otherwise the client gets 502 and the failure counts
//! against the backend.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_health::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::h1::{self, ClientInfo, Framing, Limits};
use crate::runtime::{Picker, Shared};

/// Timeouts of the HTTP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Waiting for the next request on an idle keep-alive connection.
    pub idle: Duration,
    /// Receiving a request (head and body) once it started: slowloris protection.
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

/// Idle keep-alive connections to each backend, per worker thread.
#[derive(Debug, Default)]
pub struct Pool(Mutex<Vec<Vec<TcpStream>>>);

impl Pool {
    fn take(&self, i: usize) -> Option<TcpStream> {
        self.0.lock().ok()?.get_mut(i)?.pop()
    }

    fn give(&self, i: usize, conn: TcpStream) {
        if let Ok(mut p) = self.0.lock() {
            if p.len() <= i {
                p.resize_with(i + 1, Vec::new);
            }
            if p[i].len() < 64 {
                p[i].push(conn);
            }
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

/// Serves one client connection until it closes.
pub(crate) async fn serve_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    initial: Vec<u8>,
    shared: &Shared,
    selector: &Mutex<Picker>,
    pool: &Pool,
) {
    let limits = shared.spec.limits;
    let timeouts = shared.http_timeouts;
    let info = ClientInfo {
        addr: peer.ip(),
        proto: "http",
    };
    let mut buf: Vec<u8> = initial;
    buf.reserve(READ_CHUNK);
    let mut head_out: Vec<u8> = Vec::with_capacity(1024);
    // Reused for every response on this connection: no allocation per request.
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut rhead: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // 1. The request head: idle timeout before its first byte, then the whole head must
        // arrive within the client timeout (a byte now and then does not extend it).
        let mut head_deadline =
            (!buf.is_empty()).then(|| tokio::time::Instant::now() + timeouts.client);
        let (head_len, framing, keep_alive, idempotent, is_head, upgrade, sticky, logged) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            match h1::parse_request(&buf, &mut headers, limits) {
                Ok(Some(req)) => {
                    h1::write_request_head(&req, info, &mut head_out);
                    let sticky = shared.spec.sticky_cookie.as_deref().and_then(|name| {
                        let id = h1::head::cookie(req.headers, name)?;
                        shared
                            .sticky_ids
                            .iter()
                            .position(|known| known.as_bytes() == id)
                    });
                    // Owned copies only when an access log wants them.
                    let logged = shared
                        .spec
                        .access_log
                        .as_ref()
                        .map(|_| (req.method.to_string(), req.target.to_string()));
                    break (
                        req.head_len,
                        req.framing,
                        req.keep_alive,
                        req.idempotent(),
                        req.method == "HEAD",
                        req.upgrade,
                        sticky,
                        logged,
                    );
                }
                Ok(None) => {
                    let limit = match head_deadline {
                        None => timeouts.idle,
                        Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                    };
                    match read_some(&mut client, &mut buf, limit).await {
                        Ok(0) | Err(_) => {
                            if !buf.is_empty() {
                                let _ = client
                                    .write_all(&error_response(408, "request timeout"))
                                    .await;
                            }
                            return;
                        }
                        Ok(_) => {
                            head_deadline.get_or_insert_with(|| {
                                tokio::time::Instant::now() + timeouts.client
                            });
                        }
                    }
                }
                Err(e) => {
                    let _ = client
                        .write_all(&error_response(e.status(), e.describe()))
                        .await;
                    return;
                }
            }
        };
        buf.drain(..head_len);

        // 2. Is the whole body already here? Then a retry can resend it.
        let buffered_body = match framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => usize::try_from(n).ok().filter(|n| *n <= buf.len()),
            Framing::Chunked => {
                let mut scan = h1::ChunkedScanner::default();
                match scan.feed(&buf) {
                    Ok(end) => end,
                    Err(_) => {
                        let _ = client
                            .write_all(&error_response(400, "bad chunked body"))
                            .await;
                        return;
                    }
                }
            }
            Framing::UntilClose => None,
        };

        // 3. Attempts.
        let started = std::time::Instant::now();
        let mut answered: Option<(usize, u16)> = None;
        let key = crate::runtime::random_bits();
        let mut tried = Vec::new();
        let mut done = false;
        let mut reuse_client = keep_alive && !upgrade;
        for _ in 0..=shared.spec.retries {
            // A sticky client goes back to its backend while that one takes new requests.
            let stuck = sticky.filter(|&i| {
                !tried.contains(&i) && shared.stats.backends[i].up.load(Ordering::Relaxed)
            });
            let Some(i) = stuck.or_else(|| crate::runtime::pick(shared, selector, key, &tried))
            else {
                break;
            };
            tried.push(i);
            let set_cookie = match (&shared.spec.sticky_cookie, stuck) {
                (Some(name), None) => {
                    format!(
                        "Set-Cookie: {name}={}; Path=/; HttpOnly\r\n",
                        shared.sticky_ids[i]
                    )
                }
                _ => String::new(),
            };
            let forward = Forward {
                head: &head_out,
                extra_response_headers: set_cookie.as_bytes(),
                framing,
                buffered_body,
                is_head,
                client_keep_alive: keep_alive,
            };
            let bufs = Buffers {
                client: &mut buf,
                response: &mut rbuf,
                head: &mut rhead,
            };
            let result = exchange(&mut client, bufs, &forward, i, shared, pool).await;
            match result {
                Ok((client_keep, status)) => {
                    answered = Some((i, status));
                    if let Some(n) = buffered_body {
                        buf.drain(..n);
                    }
                    reuse_client &= client_keep;
                    done = true;
                    break;
                }
                Err(Failure::BeforeResponse(outcome)) => {
                    shared.update(i, |h, now| {
                        h.record_outcome(now, outcome);
                    });
                    let safe = outcome == Outcome::ConnectFailed
                        || (idempotent && buffered_body.is_some());
                    if !safe {
                        break;
                    }
                }
                Err(Failure::AfterResponse) => return,
            }
        }
        let failed_status = if tried.is_empty() { 503 } else { 502 };
        if let (Some(log), Some((method, target))) = (&shared.spec.access_log, &logged) {
            log.log(&crate::access_log::Entry {
                balancer: &shared.spec.name,
                client: peer,
                method,
                target,
                status: answered.map_or(failed_status, |(_, s)| s),
                backend: answered.map(|(i, _)| shared.spec.backends[i].address),
                attempts: tried.len(),
                duration: started.elapsed(),
            });
        }
        if !done {
            shared.stats.client_errors.fetch_add(1, Ordering::Relaxed);
            let _ = client
                .write_all(&error_response(failed_status, "no backend could answer"))
                .await;
            return;
        }
        if !reuse_client {
            return;
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

/// One request/response exchange with backend `i`. `Ok((keep, status))`: done, whether the
/// client connection may be reused, and the status sent.
async fn exchange(
    client: &mut TcpStream,
    bufs: Buffers<'_>,
    forward: &Forward<'_>,
    i: usize,
    shared: &Shared,
    pool: &Pool,
) -> Result<(bool, u16), Failure> {
    let timeouts = shared.http_timeouts;
    let stats = &shared.stats.backends[i];
    let (mut server, pooled) = match pool.take(i) {
        Some(s) => (s, true),
        None => {
            let addr = shared.spec.backends[i].address;
            match tokio::time::timeout(shared.spec.connect_timeout, TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    (s, false)
                }
                _ => {
                    stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure::BeforeResponse(Outcome::ConnectFailed));
                }
            }
        }
    };
    stats.active.fetch_add(1, Ordering::Relaxed);
    let result = exchange_on(client, &mut server, bufs, forward, timeouts).await;
    stats.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok((client_keep, server_reusable, status)) => {
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let outcome = if status >= 500 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            if outcome != Outcome::Success || stats.success_needs_recording() {
                shared.update(i, |h, now| {
                    h.record_outcome(now, outcome);
                });
            }
            if server_reusable {
                pool.give(i, server);
            }
            Ok((client_keep, status))
        }
        // A pooled connection the backend had already closed: not the backend's fault.
        Err(Failure::BeforeResponse(Outcome::Reset)) if pooled => {
            Err(Failure::BeforeResponse(Outcome::ConnectFailed))
        }
        Err(e) => Err(e),
    }
}

/// Returns (client keep-alive, backend connection reusable, status).
async fn exchange_on(
    client: &mut TcpStream,
    server: &mut TcpStream,
    bufs: Buffers<'_>,
    forward: &Forward<'_>,
    timeouts: HttpTimeouts,
) -> Result<(bool, bool, u16), Failure> {
    let Buffers {
        client: buf,
        response: rbuf,
        head: out,
    } = bufs;
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
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match h1::parse_response(rbuf, &mut headers, Limits::default(), is_head) {
            Ok(Some(res)) => {
                let keep = client_keep_alive && res.framing != Framing::UntilClose;
                h1::write_response_head(&res, keep, extra_response_headers, out);
                break (res.head_len, res.framing, res.keep_alive, res.status);
            }
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
        let _ = tokio::io::copy_bidirectional(client, server).await;
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
async fn stream_body(
    from: &mut TcpStream,
    to: &mut TcpStream,
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
async fn read_some(
    stream: &mut TcpStream,
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
