//! The proxy runtime: one thread per core, each with a current-thread tokio runtime and its own
//! `SO_REUSEPORT` listener; a shared view of backend health; TCP forwarding with retry of
//! failed connects on another backend. HTTP connection loops build on the same pieces.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_health::{Algorithm, BackendHealth, Candidate, HealthPolicy, Outcome, Selector};
use tokio::net::{TcpListener, TcpStream};

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Its address.
    pub address: SocketAddr,
    /// Its weight.
    pub weight: u32,
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
    /// HTTP/1.1 (first cut).
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
    /// The backends.
    pub backends: Vec<BackendSpec>,
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
    /// Send a PROXY protocol header to backends (tcp mode).
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Sticky sessions (http mode): the cookie that names the backend.
    pub sticky_cookie: Option<String>,
    /// Request head size limit (http mode): larger heads get 431.
    pub limits: crate::h1::Limits,
    /// One JSON line per request (http mode), or `None`.
    pub access_log: Option<crate::access_log::AccessLog>,
}

/// The stable id of a backend in sticky cookies: the same on every node and across restarts,
/// since it derives from the backend's address alone.
pub fn sticky_id(address: SocketAddr) -> String {
    format!(
        "{:016x}",
        duet_health::select::hash_bytes(address.to_string().as_bytes())
    )
}

/// Counters of one backend, shared by the worker threads.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections forwarded.
    pub connections: AtomicU64,
    /// Failed connects.
    pub connect_errors: AtomicU64,
    /// Connections open now.
    pub active: AtomicU32,
    /// Whether it takes new connections.
    pub up: AtomicBool,
    /// Whether its passive failure streak is running (successes must then be recorded).
    failing: AtomicBool,
}

impl BackendStats {
    /// Records a success without touching the shared health unless a failure streak runs.
    pub(crate) fn success_needs_recording(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// Per-thread selection state: the selector and a reused candidate list.
#[derive(Debug)]
pub(crate) struct Picker {
    selector: Selector,
    cands: Vec<Candidate>,
}

/// Counters of the balancer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Per backend, in configuration order.
    pub backends: Vec<BackendStats>,
    /// Client connections closed because no backend could be reached.
    pub client_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) spec: BalancerSpec,
    health: Mutex<Vec<BackendHealth>>,
    pub(crate) stats: Stats,
    clock: std::time::Instant,
    pub(crate) http_timeouts: crate::http::HttpTimeouts,
    /// [`sticky_id`] of each backend, in configuration order.
    pub(crate) sticky_ids: Vec<String>,
}

impl Shared {
    fn now(&self) -> duet_time::Instant {
        duet_time::Instant::from_nanos(self.clock.elapsed().as_nanos() as u64)
    }

    /// Applies a health input to backend `i` and republishes its availability.
    pub(crate) fn update(&self, i: usize, f: impl FnOnce(&mut BackendHealth, duet_time::Instant)) {
        let now = self.now();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut health[i], now);
        self.stats.backends[i]
            .failing
            .store(health[i].failure_streak() > 0, Ordering::Relaxed);
        let up = health[i].accepts_new(now);
        let was = self.stats.backends[i].up.swap(up, Ordering::Relaxed);
        if was != up {
            tracing::warn!(
                "{}: backend {} is {}",
                self.spec.name,
                self.spec.backends[i].address,
                if up { "up" } else { "down" }
            );
        }
    }
}

/// A running balancer; dropping it does not stop the threads (they live with the process).
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    local: SocketAddr,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("name", &self.shared.spec.name)
            .field("local", &self.local)
            .finish()
    }
}

impl Proxy {
    /// Binds and starts the worker threads (and the checker, on the first one).
    pub fn start(spec: BalancerSpec) -> std::io::Result<Proxy> {
        let threads = if spec.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            spec.threads
        };
        let health = spec
            .backends
            .iter()
            .map(|_| BackendHealth::new(spec.health.clone()))
            .collect();
        let stats = Stats {
            backends: spec
                .backends
                .iter()
                .map(|_| BackendStats {
                    up: AtomicBool::new(true),
                    ..Default::default()
                })
                .collect(),
            client_errors: AtomicU64::new(0),
        };
        // Bind every listener before starting anything, so errors reach the caller; with port
        // 0, the later ones reuse the port the first one got.
        let first = bind_reuseport(spec.bind)?;
        let local = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(bind_reuseport(local)?);
        }
        let http_timeouts = spec.http_timeouts;
        let sticky_ids = spec.backends.iter().map(|b| sticky_id(b.address)).collect();
        let shared = Arc::new(Shared {
            sticky_ids,
            spec,
            health: Mutex::new(health),
            stats,
            clock: std::time::Instant::now(),
            http_timeouts,
        });
        for (n, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("duet-proxy-{n}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("proxy runtime");
                    rt.block_on(async move {
                        if n == 0 {
                            tokio::spawn(tick_loop(shared.clone()));
                            if shared.spec.check.is_some() {
                                tokio::spawn(check_loop(shared.clone()));
                            }
                        }
                        serve(listener, shared).await;
                    });
                })?;
        }
        Ok(Proxy { shared, local })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
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
    s.listen(1024)?;
    Ok(s.into())
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{}: listener: {e}", shared.spec.name);
            return;
        }
    };
    let backends = &shared.spec.backends;
    let keys: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    let selector = Arc::new(Mutex::new(Picker {
        selector: Selector::new(shared.spec.algorithm, &keys, &weights),
        cands: Vec::with_capacity(keys.len()),
    }));
    let pool = Arc::new(crate::http::Pool::default());
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{}: accept: {e}", shared.spec.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        let selector = selector.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut client = client;
            let (peer, initial) = if shared.spec.accept_proxy {
                match read_proxy_header(&mut client, peer, shared.http_timeouts.client).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("{}: {peer}: PROXY header: {e}", shared.spec.name);
                        return;
                    }
                }
            } else {
                (peer, Vec::new())
            };
            match shared.spec.mode {
                Mode::Tcp => forward_tcp(client, peer, initial, &shared, &selector).await,
                Mode::Http => {
                    crate::http::serve_connection(client, peer, initial, &shared, &selector, &pool)
                        .await
                }
            }
        });
    }
}

/// Picks a backend; `key` is the client's address hash (hash) or random bits (random).
/// Availability comes from the published atomics; the shared health is locked only when slow
/// start scales weights.
pub(crate) fn pick(
    shared: &Shared,
    picker: &Mutex<Picker>,
    key: u64,
    exclude: &[usize],
) -> Option<usize> {
    let mut guard = picker.lock().unwrap_or_else(|p| p.into_inner());
    let Picker { selector, cands } = &mut *guard;
    cands.clear();
    let ramp = !shared.spec.health.slow_start.is_zero();
    let now = shared.now();
    let health = ramp.then(|| shared.health.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, b) in shared.spec.backends.iter().enumerate() {
        let s = &shared.stats.backends[i];
        cands.push(Candidate {
            weight: health
                .as_ref()
                .map_or(b.weight, |h| h[i].effective_weight(b.weight, now)),
            active: s.active.load(Ordering::Relaxed),
            available: s.up.load(Ordering::Relaxed) && !exclude.contains(&i),
        });
    }
    drop(health);
    selector.pick(cands, key, None)
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

async fn forward_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    initial: Vec<u8>,
    shared: &Shared,
    selector: &Mutex<Picker>,
) {
    use tokio::io::AsyncWriteExt;
    let key = match shared.spec.algorithm {
        Algorithm::Hash => duet_health::select::hash_bytes(peer.ip().to_string().as_bytes()),
        _ => random_bits(),
    };
    let mut tried = Vec::new();
    for _attempt in 0..=shared.spec.retries {
        let Some(i) = pick(shared, selector, key, &tried) else {
            break;
        };
        tried.push(i);
        let stats = &shared.stats.backends[i];
        let addr = shared.spec.backends[i].address;
        let connect = tokio::time::timeout(shared.spec.connect_timeout, TcpStream::connect(addr));
        let mut server = match connect.await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                shared.update(i, |h, now| {
                    h.record_outcome(now, Outcome::ConnectFailed);
                });
                continue;
            }
        };
        let _ = server.set_nodelay(true);
        let mut preface = Vec::new();
        if let (Some(v), Ok(local)) = (shared.spec.send_proxy, client.local_addr()) {
            crate::proxy_protocol::encode(v, peer, local, &mut preface);
        }
        preface.extend_from_slice(&initial);
        if !preface.is_empty() && server.write_all(&preface).await.is_err() {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if stats.success_needs_recording() {
            shared.update(i, |h, now| {
                h.record_outcome(now, Outcome::Success);
            });
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.active.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    shared.stats.client_errors.fetch_add(1, Ordering::Relaxed);
}

/// Republishes availability that changes with time alone (end of a passive cooldown).
async fn tick_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        for i in 0..shared.spec.backends.len() {
            shared.update(i, |h, now| {
                h.handle_timeout(now);
            });
        }
    }
}

async fn check_loop(shared: Arc<Shared>) {
    let Some(check) = shared.spec.check.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, b) in shared.spec.backends.iter().enumerate() {
            let result = tokio::time::timeout(check.timeout, probe(b.address, &check)).await;
            let (passed, detail) = match result {
                Ok(Ok(())) => (true, String::new()),
                Ok(Err(e)) => (false, e),
                Err(_) => (false, "timed out".to_string()),
            };
            shared.update(i, |h, now| {
                h.record_check(now, passed, &detail);
            });
        }
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

/// Cheap per-connection randomness (not for security): a counter through a mixer.
pub(crate) fn random_bits() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x243f_6a88_85a3_08d3);
    let x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    duet_health::select::hash_bytes(&x.to_le_bytes())
}
