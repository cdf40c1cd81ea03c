//! The proxy runtime: one thread per core, each with a current-thread tokio runtime and its own
//! `SO_REUSEPORT` listener; configuration as a snapshot swapped on reload; TCP forwarding with
//! retry of failed connects on another backend; active checks. The HTTP paths live in
//! [`crate::http`] and [`crate::h2`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use duet_health::{Algorithm, HealthPolicy, Outcome};
use tokio::net::{TcpListener, TcpStream};

use crate::backends::{Backend, NoPick, Shared};

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Its address.
    pub address: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// Requests (http) or connections (tcp) in flight at most; 0: no limit. Beyond it,
    /// requests wait in the pool's queue.
    pub maxconn: u32,
}

/// Requests for host and path prefix go to their own backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// `example.com`, `*.example.com` (any name below), or `None` for any host.
    pub host: Option<String>,
    /// Path prefix, e.g. `/api/`; `/` matches everything.
    pub path_prefix: String,
    /// The pool.
    pub backends: Vec<BackendSpec>,
}

/// What `hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client's address.
    #[default]
    Source,
    /// The request path (without the query).
    Uri,
    /// The value of a request header (random when absent).
    Header(String),
}

/// The queue of requests waiting when every backend of a pool is at its `maxconn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// Waiting requests at most, per pool; beyond it requests get 503 at once.
    pub size: u32,
    /// Longest wait; then 503.
    pub timeout: Duration,
}

impl Default for QueueSpec {
    fn default() -> QueueSpec {
        QueueSpec {
            size: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Active checks: a TCP connect, or with `path` an HTTP `GET` whose status must fall in
/// `expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Time between checks of one backend.
    pub interval: Duration,
    /// A check slower than this (connect, request and response head) fails.
    pub timeout: Duration,
    /// HTTP path to `GET`; `None`: a successful connect passes.
    pub path: Option<String>,
    /// Passing status codes, inclusive.
    pub expect: (u16, u16),
}

/// What the balancer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Layer-4 pass-through.
    Tcp,
    /// HTTP/1.1, and HTTP/2 over TLS.
    Http,
}

/// What a balancer does.
#[derive(Debug, Clone)]
pub struct BalancerSpec {
    /// Name, for logs.
    pub name: String,
    /// TCP or HTTP.
    pub mode: Mode,
    /// HTTP timeouts (ignored in TCP mode).
    pub http_timeouts: crate::http::HttpTimeouts,
    /// Listen address (bound with `SO_REUSEPORT` and `IP_FREEBIND`).
    pub bind: SocketAddr,
    /// Backend selection.
    pub algorithm: Algorithm,
    /// What `hash` hashes.
    pub hash_key: HashKey,
    /// The default backends.
    pub backends: Vec<BackendSpec>,
    /// Host / path routes to other backends (http mode), first match wins.
    pub routes: Vec<RouteSpec>,
    /// The wait queue for backends at their `maxconn`.
    pub queue: QueueSpec,
    /// Health rules.
    pub health: HealthPolicy,
    /// Active checks, if any.
    pub check: Option<CheckSpec>,
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// Further backends to try when a connect fails.
    pub retries: u32,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Expect a PROXY protocol header (v1 or v2) from a front load balancer on every connection.
    pub accept_proxy: bool,
    /// Send a PROXY protocol header to backends.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Sticky sessions (http mode): the cookie that names the backend.
    pub sticky_cookie: Option<String>,
    /// Request head size limit (http mode): larger heads get 431.
    pub limits: crate::h1::Limits,
    /// One JSON line per request (http mode), or `None`.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// TLS termination (http mode).
    pub tls: Option<crate::tls::TlsSpec>,
}

/// A balancer for as long as it runs, across reloads.
pub(crate) struct Balancer {
    pub(crate) name: String,
    /// The bound address of the main listener (the real port, also when 0 was asked for).
    local: SocketAddr,
    threads: usize,
    current: RwLock<Arc<Shared>>,
    generation: AtomicU64,
    /// Requests or connections that got no backend.
    pub(crate) client_errors: AtomicU64,
    /// Set by [`Proxy::stop`]; read on every request, so a plain atomic.
    stopping: std::sync::atomic::AtomicBool,
    /// Wakes a worker thread's waiters (accept loop, idle connections) at stop; one per
    /// thread, so waiting never touches another thread's lock.
    stop_signals: Vec<tokio::sync::Notify>,
    /// Client connections open now.
    live: AtomicUsize,
}

impl Balancer {
    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Shared> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Moves `shared` to the current snapshot if a reload happened (one atomic load if not).
    pub(crate) fn refresh(&self, shared: &mut Arc<Shared>) {
        if self.generation.load(Ordering::Acquire) != shared.generation {
            *shared = self.snapshot();
        }
    }

    /// Resolves when the balancer is stopped; `thread` is the caller's worker thread.
    pub(crate) async fn stopped(&self, thread: usize) {
        let notified = self.stop_signals[thread].notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a stop in between still wakes it.
        notified.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Counts a client connection while it lives.
struct Live<'a>(&'a Balancer);

impl<'a> Live<'a> {
    fn new(b: &'a Balancer) -> Live<'a> {
        b.live.fetch_add(1, Ordering::Relaxed);
        Live(b)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running balancer. Clones share it; [`Proxy::stop`] ends it.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Balancer>,
    local: SocketAddr,
    redirect_local: Option<SocketAddr>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("name", &self.inner.name)
            .field("local", &self.local)
            .finish()
    }
}

/// A backend as the status and metrics show it.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// `"default"` or the route's label.
    pub pool: String,
    /// Configured weight.
    pub weight: u32,
    /// Configured in-flight limit (0: none).
    pub maxconn: u32,
    /// The backend: address, counters, state.
    pub backend: Arc<Backend>,
}

/// Why a reload could not be applied in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The listen address, mode, thread count or redirect listener changed: start a new
    /// balancer and stop this one.
    NeedsRestart,
    /// The new configuration is unusable (e.g. a certificate); the old one keeps running.
    Invalid(String),
}

/// Longest wait for open connections when a balancer stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

impl Proxy {
    /// Binds and starts the worker threads (and the checker, on the first one).
    pub fn start(spec: BalancerSpec) -> Result<Proxy, String> {
        let threads = if spec.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            spec.threads
        };
        let tls = spec.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        // Bind every listener before starting anything, so errors reach the caller; with port
        // 0, the later ones reuse the port the first one got.
        let bind_all = |addr: SocketAddr| -> Result<Vec<std::net::TcpListener>, String> {
            let first = bind_reuseport(addr).map_err(|e| format!("bind {addr}: {e}"))?;
            let local = first.local_addr().map_err(|e| e.to_string())?;
            let mut all = vec![first];
            for _ in 1..threads {
                all.push(bind_reuseport(local).map_err(|e| format!("bind {local}: {e}"))?);
            }
            Ok(all)
        };
        let listeners = bind_all(spec.bind)?;
        let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let redirect_from = spec.tls.as_ref().and_then(|t| t.redirect_from);
        let mut redirects: Vec<Option<std::net::TcpListener>> = match redirect_from {
            Some(addr) => bind_all(addr)?.into_iter().map(Some).collect(),
            None => (0..threads).map(|_| None).collect(),
        };
        let redirect_local = redirects
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|l| l.local_addr().ok());
        let name = spec.name.clone();
        let shared = Arc::new(Shared::build(spec, None, threads, 0, tls));
        let inner = Arc::new(Balancer {
            name,
            local,
            threads,
            current: RwLock::new(shared),
            generation: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop_signals: (0..threads).map(|_| tokio::sync::Notify::new()).collect(),
            live: AtomicUsize::new(0),
        });
        for (n, listener) in listeners.into_iter().enumerate() {
            let inner = inner.clone();
            let redirect = redirects[n].take();
            std::thread::Builder::new()
                .name(format!("duet-proxy-{n}"))
                .spawn(move || run_thread(n, listener, redirect, inner))
                .map_err(|e| e.to_string())?;
        }
        Ok(Proxy {
            inner,
            local,
            redirect_local,
        })
    }

    /// Applies a new configuration in place when only backends, routes, checks, timeouts,
    /// limits or certificates changed: new requests use it at once, requests in flight finish
    /// with the old one, health and counters carry over by backend address. Certificates are
    /// read again even when their paths are unchanged.
    pub fn reload(&self, spec: BalancerSpec) -> Result<(), ReloadError> {
        let old = self.inner.snapshot();
        let threads = if spec.threads == 0 {
            self.inner.threads
        } else {
            spec.threads
        };
        let redirect = |s: &BalancerSpec| s.tls.as_ref().and_then(|t| t.redirect_from);
        if spec.bind != old.spec.bind
            || spec.mode != old.spec.mode
            || threads != self.inner.threads
            || redirect(&spec) != redirect(&old.spec)
        {
            return Err(ReloadError::NeedsRestart);
        }
        let tls = spec
            .tls
            .as_ref()
            .map(crate::tls::acceptor)
            .transpose()
            .map_err(ReloadError::Invalid)?;
        let generation = old.generation + 1;
        let next = Arc::new(Shared::build(spec, Some(&old), threads, generation, tls));
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = next;
        self.inner.generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// Stops accepting, closes idle keep-alive connections and lets requests in flight finish
    /// (for at most 30 s); then the worker threads end.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for signal in &self.inner.stop_signals {
            signal.notify_waiters();
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The bound address of the plain-HTTP redirect listener, if any.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_local
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Requests or connections that no backend could serve.
    pub fn client_errors(&self) -> u64 {
        self.inner.client_errors.load(Ordering::Relaxed)
    }

    /// Every backend of the current configuration, pool by pool, in configuration order.
    pub fn backends(&self) -> Vec<BackendView> {
        let shared = self.inner.snapshot();
        shared
            .groups
            .iter()
            .flat_map(|g| {
                g.members.iter().map(|m| BackendView {
                    pool: g.label.clone(),
                    weight: m.weight,
                    maxconn: m.maxconn,
                    backend: m.backend.clone(),
                })
            })
            .collect()
    }

    /// Drains backend `address` (it finishes what it has and takes no new requests; sticky
    /// sessions still reach it) or re-enables it. Errors if no pool lists it.
    pub fn set_draining(&self, address: SocketAddr, drain: bool) -> Result<(), String> {
        let shared = self.inner.snapshot();
        let Some(b) = shared.backends().into_iter().find(|b| b.address == address) else {
            return Err(format!(
                "balancer {} has no backend {address}",
                self.inner.name
            ));
        };
        let admin = if drain {
            duet_health::Admin::Draining
        } else {
            duet_health::Admin::Enabled
        };
        b.update(&self.inner.name, |h, _| h.set_admin(admin));
        Ok(())
    }
}

fn run_thread(
    n: usize,
    listener: std::net::TcpListener,
    redirect: Option<std::net::TcpListener>,
    inner: Arc<Balancer>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    rt.block_on(async move {
        if n == 0 {
            tokio::spawn(tick_loop(inner.clone()));
            tokio::spawn(check_loop(inner.clone()));
        }
        if let Some(r) = redirect {
            tokio::spawn(serve(r, inner.clone(), n, Listener::Redirect));
        }
        serve(listener, inner.clone(), n, Listener::Main).await;
        // Stopped: give open connections time to finish.
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        while inner.live.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv4() {
        // The VIP may not be local yet on a backup node.
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The balancer's own listener.
    Main,
    /// Plain HTTP that only redirects to https.
    Redirect,
}

async fn serve(
    listener: std::net::TcpListener,
    inner: Arc<Balancer>,
    thread: usize,
    kind: Listener,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{}: listener: {e}", inner.name);
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = inner.stopped(thread) => return,
        };
        let (client, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{}: accept: {e}", inner.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(connection(client, peer, inner, thread, kind));
    }
}

/// One client connection. Plain HTTP/1.1 (the common case) runs inline; every other kind
/// is boxed, so that an idle keep-alive connection's task stays small.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    inner: Arc<Balancer>,
    thread: usize,
    kind: Listener,
) {
    let _live = Live::new(&inner);
    let shared = inner.snapshot();
    let plain = kind == Listener::Main
        && shared.spec.mode == Mode::Http
        && !shared.spec.accept_proxy
        && shared.tls.is_none();
    if plain {
        let local = client.local_addr().unwrap_or(shared.spec.bind);
        let conn = crate::http::Conn {
            balancer: &inner,
            thread,
            peer,
            local,
            proto: "http",
        };
        crate::http::serve_connection(client, Vec::new(), conn, shared).await;
    } else {
        Box::pin(handle(client, peer, &inner, shared, thread, kind)).await;
    }
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    inner: &Arc<Balancer>,
    shared: Arc<Shared>,
    thread: usize,
    kind: Listener,
) {
    let local = client.local_addr().unwrap_or(shared.spec.bind);
    let timeout = shared.spec.http_timeouts.client;
    let (peer, initial) = if shared.spec.accept_proxy {
        match read_proxy_header(&mut client, peer, timeout).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("{}: {peer}: PROXY header: {e}", inner.name);
                return;
            }
        }
    } else {
        (peer, Vec::new())
    };
    // The task's future is as large as its largest path; the rarer ones are boxed so that a
    // plain HTTP/1.1 connection carries only its own state.
    if kind == Listener::Redirect {
        let port = inner.local.port();
        Box::pin(crate::http::redirect_to_https(
            client, initial, port, &shared,
        ))
        .await;
        return;
    }
    if shared.spec.mode == Mode::Tcp {
        Box::pin(forward_tcp(client, peer, initial, &shared, inner, thread)).await;
        return;
    }
    let Some(acceptor) = shared.tls.clone() else {
        let conn = crate::http::Conn {
            balancer: inner,
            thread,
            peer,
            local,
            proto: "http",
        };
        crate::http::serve_connection(client, initial, conn, shared).await;
        return;
    };
    if !initial.is_empty() {
        tracing::debug!("{}: {peer}: bytes before the TLS handshake", inner.name);
        return;
    }
    let tls = match Box::pin(tokio::time::timeout(timeout, acceptor.accept(client))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("{}: {peer}: TLS handshake: {e}", inner.name);
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        Box::pin(crate::h2::serve_connection(
            tls,
            peer,
            local,
            inner.clone(),
            thread,
        ))
        .await;
    } else {
        let conn = crate::http::Conn {
            balancer: inner,
            thread,
            peer,
            local,
            proto: "https",
        };
        Box::pin(crate::http::serve_connection(tls, Vec::new(), conn, shared)).await;
    }
}

/// Reads the PROXY header a front load balancer puts before the client's bytes; returns the
/// original client address (or `peer` for LOCAL/UNKNOWN) and the bytes read past the header.
async fn read_proxy_header(
    client: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(SocketAddr, Vec<u8>), String> {
    use crate::proxy_protocol::{Header, parse};
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(256);
    loop {
        match parse(&buf) {
            Ok(Some((header, n))) => {
                let source = match header {
                    Header::Proxied { source, .. } => source,
                    Header::Local => peer,
                };
                return Ok((source, buf.split_off(n)));
            }
            Ok(None) => {
                buf.reserve(256);
                let read = tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await;
                match read {
                    Ok(Ok(0)) => return Err("closed before the header".into()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("timed out".into()),
                }
            }
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

/// Connects to `backend`, and sends the PROXY header for `peer` first when configured.
pub(crate) async fn connect(
    shared: &Shared,
    backend: &Backend,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<TcpStream, ()> {
    use tokio::io::AsyncWriteExt;
    let connect = TcpStream::connect(backend.address);
    let mut server = match tokio::time::timeout(shared.spec.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Err(()),
    };
    let _ = server.set_nodelay(true);
    if let (Some(v), Some(local)) = (shared.spec.send_proxy, local) {
        let mut preface = Vec::with_capacity(64);
        crate::proxy_protocol::encode(v, peer, local, &mut preface);
        server.write_all(&preface).await.map_err(|_| ())?;
    }
    Ok(server)
}

async fn forward_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    initial: Vec<u8>,
    shared: &Shared,
    inner: &Balancer,
    thread: usize,
) {
    use tokio::io::AsyncWriteExt;
    let key = match shared.spec.hash_key {
        HashKey::Source => crate::backends::hash_ip(peer.ip()),
        _ => crate::backends::random_bits(),
    };
    let local = client.local_addr().ok();
    let mut tried = Vec::new();
    for _attempt in 0..=shared.spec.retries {
        let lease = match shared.pick(thread, 0, key, &tried).await {
            Ok(l) => l,
            Err(NoPick::Full | NoPick::Unavailable) => break,
        };
        tried.push(lease.index);
        let backend = lease.backend;
        let Ok(mut server) = connect(shared, backend, peer, local).await else {
            backend.record(&inner.name, Outcome::ConnectFailed);
            continue;
        };
        if !initial.is_empty() && server.write_all(&initial).await.is_err() {
            backend.record(&inner.name, Outcome::Reset);
            continue;
        }
        backend.record(&inner.name, Outcome::Success);
        backend.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    inner.client_errors.fetch_add(1, Ordering::Relaxed);
}

/// Republishes availability that changes with time alone (end of a passive cooldown).
async fn tick_loop(inner: Arc<Balancer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !inner.is_stopped() {
        tick.tick().await;
        let shared = inner.snapshot();
        for b in shared.backends() {
            b.update(&inner.name, |h, now| {
                h.handle_timeout(now);
            });
        }
    }
}

/// Checks every backend of the current snapshot, one round per interval; a reload takes effect
/// at the next round.
async fn check_loop(inner: Arc<Balancer>) {
    while !inner.is_stopped() {
        let shared = inner.snapshot();
        let Some(check) = shared.spec.check.clone() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let round = tokio::time::Instant::now();
        for b in shared.backends() {
            let result = tokio::time::timeout(check.timeout, probe(b.address, &check)).await;
            let (passed, detail) = match result {
                Ok(Ok(())) => (true, String::new()),
                Ok(Err(e)) => (false, e),
                Err(_) => (false, "timed out".to_string()),
            };
            b.update(&inner.name, |h, now| {
                h.record_check(now, passed, &detail);
            });
        }
        drop(shared);
        tokio::time::sleep_until(round + check.interval).await;
    }
}

/// One check of one backend.
async fn probe(addr: SocketAddr, check: &CheckSpec) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let Some(path) = &check.path else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: duet-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        match crate::h1::parse_response(&buf, &mut headers, crate::h1::Limits::default(), false) {
            Ok(Some(res)) => {
                let (lo, hi) = check.expect;
                return if (lo..=hi).contains(&res.status) {
                    Ok(())
                } else {
                    Err(format!("status {}", res.status))
                };
            }
            Ok(None) => {
                buf.reserve(1024);
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed before a response".into());
                }
            }
            Err(e) => return Err(format!("bad response: {}", e.describe())),
        }
    }
}
