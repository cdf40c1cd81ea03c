//! Backends, the pools they form, and picking one for a request: availability from published
//! atomics, per-backend `maxconn` reserved at pick time, a bounded queue when every backend of
//! a pool is full, and routes that send a request to a pool by host and path prefix.
//!
//! A [`Backend`] outlives configuration snapshots: a reload that keeps an address keeps its
//! health, counters, idle connections and in-flight count, so nothing is lost or miscounted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use duet_health::{Admin, BackendHealth, Candidate, HealthPolicy, Selector};

use crate::spec::{BackendSpec, BalancerSpec, HashKey};

/// Monotonic time for health decisions, from one process-wide epoch.
pub(crate) fn now() -> duet_time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    duet_time::Instant::from_nanos(epoch.elapsed().as_nanos() as u64)
}

/// Why a request or connection to a backend failed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// No response within the server timeout.
    Timeout,
    /// Closed or reset before a complete response.
    Reset,
    /// A response that could not be parsed.
    BadResponse,
    /// A 5xx status.
    ServerError,
}

impl ErrorKind {
    /// Every kind, in the order of [`BackendStats::errors`].
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::BadResponse,
        ErrorKind::ServerError,
    ];

    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::ServerError => "http_5xx",
        }
    }

    pub(crate) fn of(outcome: duet_health::Outcome) -> Option<ErrorKind> {
        use duet_health::Outcome;
        match outcome {
            Outcome::Success => None,
            Outcome::ConnectFailed => Some(ErrorKind::Connect),
            Outcome::Timeout => Some(ErrorKind::Timeout),
            Outcome::Reset => Some(ErrorKind::Reset),
            Outcome::BadResponse => Some(ErrorKind::BadResponse),
            Outcome::ServerError => Some(ErrorKind::ServerError),
        }
    }
}

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus' classic set).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A lock-free latency histogram: per-bucket counts (not cumulative; the last one is `+Inf`),
/// the sum in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket of [`LATENCY_BUCKETS`], then one for larger values.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters of one backend, shared by the worker threads.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests (http) or connections (tcp) forwarded.
    pub connections: AtomicU64,
    /// Failures by [`ErrorKind`], in the order of [`ErrorKind::ALL`].
    pub errors: [AtomicU64; 5],
    /// Requests or connections in flight (reserved at pick time).
    pub active: AtomicU32,
    /// Whether it takes new requests (healthy and enabled).
    pub up: AtomicBool,
    /// Whether it is healthy, draining or not (sticky clients may still go there).
    pub healthy: AtomicBool,
    /// Time from the complete request head to the response head (http, as HAProxy's `Tr`),
    /// one histogram per worker thread so that recording never bounces a cache line between cores; see
    /// [`BackendStats::latency_totals`].
    latency: Vec<Shard>,
    /// Whether its passive failure streak is running (successes must then be recorded).
    failing: AtomicBool,
}

/// A histogram on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Histogram);

impl BackendStats {
    fn new(threads: usize) -> BackendStats {
        BackendStats {
            latency: (0..threads).map(|_| Shard::default()).collect(),
            ..BackendStats::default()
        }
    }

    /// Records a request's latency, seen on worker thread `thread`.
    pub(crate) fn observe(&self, thread: usize, d: Duration) {
        if let Some(shard) = self.latency.get(thread) {
            shard.0.observe(d);
        }
    }

    /// The latency histogram over every thread: per-bucket counts (not cumulative; the last
    /// is `+Inf`) and the sum in microseconds.
    pub fn latency_totals(&self) -> ([u64; LATENCY_BUCKETS.len() + 1], u64) {
        let mut buckets = [0; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0;
        for shard in &self.latency {
            for (total, b) in buckets.iter_mut().zip(&shard.0.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            sum += shard.0.sum_micros.load(Ordering::Relaxed);
        }
        (buckets, sum)
    }

    /// Counts a failure of `kind`.
    pub(crate) fn count_error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failures of `kind` so far.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        let i = ErrorKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.errors[i].load(Ordering::Relaxed)
    }
}

/// Told of every backend whose availability changes: the balancer, the backend, its new
/// state (`up`, `down`, `draining`) and why, when known. The daemon turns these into events.
pub type HealthObserver = Arc<dyn Fn(&str, SocketAddr, &'static str, Option<&str>) + Send + Sync>;

static OBSERVER: std::sync::RwLock<Option<HealthObserver>> = std::sync::RwLock::new(None);

/// Sets the process's health observer (the last one set wins).
pub fn observe_health(observer: HealthObserver) {
    *OBSERVER.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
}

fn tell(balancer: &str, address: SocketAddr, state: &'static str, reason: Option<&str>) {
    let observer = OBSERVER.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(f) = observer {
        f(balancer, address, state, reason);
    }
}

/// One backend server, shared by every snapshot that lists its address.
#[derive(Debug)]
pub struct Backend {
    /// Its address.
    pub address: SocketAddr,
    /// Its counters.
    pub stats: BackendStats,
    health: Mutex<Health>,
    /// Its id in sticky cookies.
    pub(crate) sticky_id: String,
    /// Idle keep-alive connections of both HTTP paths, per worker thread.
    pub(crate) pool: crate::upstream::Pool,
}

impl Backend {
    fn new(address: SocketAddr, policy: HealthPolicy, threads: usize) -> Backend {
        let stats = BackendStats::new(threads);
        stats.up.store(true, Ordering::Relaxed);
        stats.healthy.store(true, Ordering::Relaxed);
        Backend {
            address,
            stats,
            health: Mutex::new(Health {
                core: BackendHealth::new(policy),
                down_reason: None,
            }),
            sticky_id: sticky_id(address),
            pool: crate::upstream::Pool::new(threads),
        }
    }

    /// Applies a health input and republishes availability; `balancer` names it in logs. `f`
    /// returns the health change it caused, if any, with its reason: a backend that goes down
    /// says why (in the log at WARN and in the status), one that comes back says so at INFO.
    pub(crate) fn update(
        &self,
        balancer: &str,
        f: impl FnOnce(&mut BackendHealth, duet_time::Instant) -> Option<duet_health::Change>,
    ) {
        let now = now();
        let mut guard = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let Health { core, down_reason } = &mut *guard;
        let change = f(core, now);
        if let Some(c) = &change {
            *down_reason = (!c.up).then(|| c.reason.clone());
        }
        let s = &self.stats;
        s.failing
            .store(core.failure_streak() > 0, Ordering::Relaxed);
        s.healthy.store(core.is_up(now), Ordering::Relaxed);
        let up = core.accepts_new(now);
        if s.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        let address = self.address;
        let reason = change.map(|c| c.reason);
        let draining = core.admin() == Admin::Draining;
        let state = match (draining, up) {
            (true, _) => "draining",
            (false, true) => "up",
            (false, false) => "down",
        };
        tell(balancer, address, state, reason.as_deref());
        match (draining, up, reason) {
            (true, _, _) => tracing::info!("{balancer}: backend {address} is draining"),
            (false, true, Some(why)) => {
                tracing::info!("{balancer}: backend {address} is up ({why})")
            }
            (false, true, None) => tracing::info!("{balancer}: backend {address} is up"),
            (false, false, Some(why)) => {
                tracing::warn!("{balancer}: backend {address} is down: {why}")
            }
            (false, false, None) => tracing::warn!("{balancer}: backend {address} is down"),
        }
    }

    /// Why it is down (the last failure that took it out), while it is down.
    pub fn down_reason(&self) -> Option<String> {
        if self.stats.healthy.load(Ordering::Relaxed) {
            return None;
        }
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .down_reason
            .clone()
    }

    /// Records a request's outcome: counts a failure by kind, and feeds the passive checks.
    pub(crate) fn record(&self, balancer: &str, outcome: duet_health::Outcome) {
        if let Some(kind) = ErrorKind::of(outcome) {
            self.stats.count_error(kind);
        }
        self.record_health(balancer, outcome);
    }

    /// Feeds the passive checks only: failures always, successes only while a failure streak
    /// runs (so the common case touches no lock).
    pub(crate) fn record_health(&self, balancer: &str, outcome: duet_health::Outcome) {
        if outcome == duet_health::Outcome::Success && !self.stats.failing.load(Ordering::Relaxed) {
            return;
        }
        self.update(balancer, |h, now| h.record_outcome(now, outcome));
    }

    /// Whether the operator drains it.
    pub fn draining(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .core
            .admin()
            == Admin::Draining
    }

    fn effective_weight(&self, weight: u32) -> u32 {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .core
            .effective_weight(weight, now())
    }
}

/// A backend's health and the reason of its last fall.
#[derive(Debug)]
struct Health {
    core: BackendHealth,
    down_reason: Option<String>,
}

/// The stable id of a backend in sticky cookies: the same on every node and across restarts,
/// since it derives from the backend's address alone.
pub fn sticky_id(address: SocketAddr) -> String {
    format!(
        "{:016x}",
        duet_health::select::hash_bytes(address.to_string().as_bytes())
    )
}

/// A backend as one pool lists it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) backend: Arc<Backend>,
    pub(crate) weight: u32,
    /// In-flight limit; 0: none.
    pub(crate) maxconn: u32,
}

impl Member {
    /// Takes an in-flight slot if the backend is below its `maxconn`. Reserving first and
    /// checking after keeps two threads from both taking the last slot.
    fn reserve(&self) -> bool {
        let active = &self.backend.stats.active;
        let before = active.fetch_add(1, Ordering::Relaxed);
        if self.maxconn != 0 && before >= self.maxconn {
            active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A pool: the default backends or those of one route.
#[derive(Debug)]
pub(crate) struct Group {
    /// `"default"` or the route's label.
    pub(crate) label: String,
    pub(crate) members: Vec<Member>,
    /// Requests waiting for a free slot.
    queued: AtomicU32,
    /// Signalled when a slot frees up.
    released: tokio::sync::Notify,
}

/// Per-thread selection state of one pool: the selector and a reused candidate list.
#[derive(Debug)]
pub(crate) struct Picker {
    selector: Selector,
    cands: Vec<Candidate>,
}

/// One configuration snapshot of a balancer: its spec, pools and per-thread pickers.
pub(crate) struct Shared {
    pub(crate) spec: BalancerSpec,
    pub(crate) groups: Vec<Group>,
    /// `[thread][group]`.
    pickers: Vec<Vec<Mutex<Picker>>>,
    /// The reload generation this snapshot belongs to.
    pub(crate) generation: u64,
    /// The TLS acceptor, if the balancer terminates TLS.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Header lines added to every HTTP/1.1 response (HSTS).
    pub(crate) response_headers: Vec<u8>,
}

/// A slot on a backend, held from the pick to the end of the request (or connection); dropping
/// it frees the slot and wakes one queued request.
pub(crate) struct Lease<'a> {
    pub(crate) index: usize,
    pub(crate) backend: &'a Backend,
    group: &'a Group,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.backend.stats.active.fetch_sub(1, Ordering::Relaxed);
        if self.group.queued.load(Ordering::Relaxed) > 0 {
            self.group.released.notify_one();
        }
    }
}

/// Why no backend was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPick {
    /// None is available (all down, draining or already tried).
    Unavailable,
    /// Some are available but all are at their `maxconn`, and the queue is full or timed out.
    Full,
}

/// How a request is keyed for `hash` (and the random bits otherwise).
pub(crate) fn request_key(
    hash_key: &HashKey,
    client: std::net::IpAddr,
    path: &[u8],
    header: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> u64 {
    use duet_health::select::hash_bytes;
    match hash_key {
        HashKey::Source => hash_ip(client),
        HashKey::Uri => {
            let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
            hash_bytes(&path[..end])
        }
        HashKey::Header(name) => match header(name) {
            Some(v) => hash_bytes(&v),
            // As HAProxy: without the header, spread the requests.
            None => random_bits(),
        },
    }
}

/// The hash of a client address, without allocating.
pub(crate) fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => duet_health::select::hash_bytes(&v4.octets()),
        std::net::IpAddr::V6(v6) => duet_health::select::hash_bytes(&v6.octets()),
    }
}

/// Cheap per-request randomness (not for security): a counter through a mixer.
pub(crate) fn random_bits() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x243f_6a88_85a3_08d3);
    let x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    duet_health::select::hash_bytes(&x.to_le_bytes())
}

impl Shared {
    /// Builds a snapshot from `spec`, reusing the [`Backend`]s of `previous` by address.
    pub(crate) fn build(
        spec: BalancerSpec,
        previous: Option<&Shared>,
        threads: usize,
        generation: u64,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Shared {
        let mut known: Vec<Arc<Backend>> = previous
            .map(|p| {
                p.groups
                    .iter()
                    .flat_map(|g| g.members.iter().map(|m| m.backend.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut member = |b: &BackendSpec| {
            let backend = match known.iter().find(|k| k.address == b.address) {
                Some(k) => {
                    k.update(&spec.name, |h, _| {
                        h.set_policy(spec.health.clone());
                        None
                    });
                    k.clone()
                }
                None => {
                    let k = Arc::new(Backend::new(b.address, spec.health.clone(), threads));
                    known.push(k.clone());
                    k
                }
            };
            Member {
                backend,
                weight: b.weight,
                maxconn: b.maxconn,
            }
        };
        let pools = std::iter::once(("default".to_string(), &spec.backends))
            .chain(spec.routes.iter().map(|r| (r.label(), &r.backends)));
        let groups: Vec<Group> = pools
            .map(|(label, backends)| Group {
                label,
                members: backends.iter().map(&mut member).collect(),
                queued: AtomicU32::new(0),
                released: tokio::sync::Notify::new(),
            })
            .collect();
        let pickers = (0..threads)
            .map(|_| {
                groups
                    .iter()
                    .map(|g| {
                        let keys: Vec<String> = g
                            .members
                            .iter()
                            .map(|m| m.backend.address.to_string())
                            .collect();
                        let weights: Vec<u32> = g.members.iter().map(|m| m.weight).collect();
                        Mutex::new(Picker {
                            selector: Selector::new(spec.algorithm, &keys, &weights),
                            cands: Vec::with_capacity(keys.len()),
                        })
                    })
                    .collect()
            })
            .collect();
        let response_headers = match spec.tls.as_ref().and_then(|t| t.hsts) {
            Some(age) => {
                format!("Strict-Transport-Security: max-age={}\r\n", age.as_secs()).into_bytes()
            }
            None => Vec::new(),
        };
        Shared {
            spec,
            groups,
            pickers,
            generation,
            tls,
            response_headers,
        }
    }

    /// Connects to `backend` within the connect timeout, sending the PROXY preface for
    /// `client` (which connected to `local`) first when the balancer sends one.
    pub(crate) async fn connect(
        &self,
        backend: &Backend,
        client: SocketAddr,
        local: Option<SocketAddr>,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let preface = match (self.spec.send_proxy, local) {
            (Some(version), Some(destination)) => Some(crate::upstream::Preface {
                version,
                source: client,
                destination,
            }),
            _ => None,
        };
        crate::upstream::connect(backend.address, self.spec.connect_timeout, preface).await
    }

    /// Every distinct backend of the snapshot.
    pub(crate) fn backends(&self) -> Vec<&Arc<Backend>> {
        let mut all: Vec<&Arc<Backend>> = Vec::new();
        for m in self.groups.iter().flat_map(|g| &g.members) {
            if !all.iter().any(|b| Arc::ptr_eq(b, &m.backend)) {
                all.push(&m.backend);
            }
        }
        all
    }

    /// The pool for a request: the first route whose host and path prefix match, else the
    /// default pool (0).
    pub(crate) fn route(&self, host: Option<&[u8]>, path: &[u8]) -> usize {
        self.spec
            .routes
            .iter()
            .position(|r| r.matches(host, path))
            .map_or(0, |i| i + 1)
    }

    /// Picks a backend of pool `g` other than those in `exclude` and reserves a slot on it.
    /// `key` is the request's hash (hash) or random bits (random).
    pub(crate) fn try_pick(
        &self,
        thread: usize,
        g: usize,
        key: u64,
        exclude: &[usize],
    ) -> Result<Lease<'_>, NoPick> {
        let group = &self.groups[g];
        let mut picker = self.pickers[thread][g]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Picker { selector, cands } = &mut *picker;
        let ramp = !self.spec.health.slow_start.is_zero();
        cands.clear();
        let mut full = false;
        for (i, m) in group.members.iter().enumerate() {
            let s = &m.backend.stats;
            let up = s.up.load(Ordering::Relaxed) && !exclude.contains(&i);
            let active = s.active.load(Ordering::Relaxed);
            let room = m.maxconn == 0 || active < m.maxconn;
            full |= up && !room;
            cands.push(Candidate {
                weight: if ramp {
                    m.backend.effective_weight(m.weight)
                } else {
                    m.weight
                },
                active,
                available: up && room,
            });
        }
        // Another thread may take the last slot between the look and the reservation: then
        // mark that backend full and pick again.
        while let Some(i) = selector.pick(cands, key, None) {
            let m = &group.members[i];
            if m.reserve() {
                return Ok(Lease {
                    index: i,
                    backend: &m.backend,
                    group,
                });
            }
            cands[i].available = false;
            full = true;
        }
        Err(if full {
            NoPick::Full
        } else {
            NoPick::Unavailable
        })
    }

    /// Like [`Shared::try_pick`], but when every available backend is at its `maxconn`, waits in
    /// the pool's bounded queue for a slot (at most `queue.timeout`).
    pub(crate) async fn pick(
        &self,
        thread: usize,
        g: usize,
        key: u64,
        exclude: &[usize],
    ) -> Result<Lease<'_>, NoPick> {
        match self.try_pick(thread, g, key, exclude) {
            Err(NoPick::Full) => {}
            other => return other,
        }
        // Boxed: waiting is the exception, and its timers would otherwise enlarge every
        // connection's future.
        Box::pin(self.wait_in_queue(thread, g, key, exclude)).await
    }

    async fn wait_in_queue(
        &self,
        thread: usize,
        g: usize,
        key: u64,
        exclude: &[usize],
    ) -> Result<Lease<'_>, NoPick> {
        let group = &self.groups[g];
        let queue = self.spec.queue;
        if group.queued.fetch_add(1, Ordering::Relaxed) >= queue.size {
            group.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(NoPick::Full);
        }
        let deadline = tokio::time::Instant::now() + queue.timeout;
        let result = loop {
            // Wake on a released slot, or re-look now and then in case a wake-up went to a
            // request that no longer needed it.
            let nap = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(nap, group.released.notified()).await;
            match self.try_pick(thread, g, key, exclude) {
                Err(NoPick::Full) if tokio::time::Instant::now() < deadline => continue,
                other => break other,
            }
        };
        group.queued.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The backend for one attempt: the sticky one (`sticky`, unless tried already) when it can
    /// take the request, else a pick among the others not in `tried` (waiting in the queue
    /// if every one is full).
    pub(crate) async fn lease(
        &self,
        thread: usize,
        g: usize,
        key: u64,
        sticky: Option<usize>,
        tried: &[usize],
    ) -> Result<Lease<'_>, NoPick> {
        let stuck = sticky
            .filter(|i| !tried.contains(i))
            .and_then(|i| self.try_sticky(g, i));
        match stuck {
            Some(l) => Ok(l),
            None => self.pick(thread, g, key, tried).await,
        }
    }

    /// A sticky request's backend `i` of pool `g`, if it is healthy (draining is fine: it
    /// finishes its sessions) and has room.
    pub(crate) fn try_sticky(&self, g: usize, i: usize) -> Option<Lease<'_>> {
        let group = &self.groups[g];
        let m = group.members.get(i)?;
        if !m.backend.stats.healthy.load(Ordering::Relaxed) || !m.reserve() {
            return None;
        }
        Some(Lease {
            index: i,
            backend: &m.backend,
            group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keys_ignore_the_query_and_header_keys_fall_back_to_random() {
        let ip = "10.0.0.1".parse().unwrap();
        let a = request_key(&HashKey::Uri, ip, b"/a?x=1", |_| None);
        let b = request_key(&HashKey::Uri, ip, b"/a?x=2", |_| None);
        let c = request_key(&HashKey::Uri, ip, b"/b", |_| None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let h = HashKey::Header("X-User".into());
        let u1 = request_key(&h, ip, b"/", |_| Some(b"alice".to_vec()));
        let u2 = request_key(&h, ip, b"/other", |_| Some(b"alice".to_vec()));
        assert_eq!(u1, u2);
        let r1 = request_key(&h, ip, b"/", |_| None);
        let r2 = request_key(&h, ip, b"/", |_| None);
        assert_ne!(r1, r2);
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2); // ≤ 1 ms
        assert_eq!(counts[2], 1); // ≤ 5 ms
        assert_eq!(counts[LATENCY_BUCKETS.len()], 1); // +Inf
        assert_eq!(
            h.sum_micros.load(Ordering::Relaxed),
            500 + 1000 + 3000 + 60_000_000
        );
    }
}
