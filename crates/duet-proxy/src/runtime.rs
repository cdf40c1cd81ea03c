//! The proxy runtime: one thread per core, each with a current-thread tokio runtime and its own
//! `SO_REUSEPORT` listener; start, reload and stop; accepting a connection and handing it to
//! its path (plain HTTP/1.1 inline, everything else boxed): [`crate::http`], [`crate::h2`],
//! [`crate::tcp`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::backends::{Backend, Shared};
use crate::balancer::{Balancer, Live};
use crate::spec::{BalancerSpec, Mode};

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
        let shared = Shared::build(spec, None, threads, 0, tls);
        let inner = Arc::new(Balancer::new(name, local, threads, shared));
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
        let next = Shared::build(spec, Some(&old), threads, generation, tls);
        self.inner.replace(next);
        Ok(())
    }

    /// Stops accepting, closes idle keep-alive connections and lets requests in flight finish
    /// (for at most 30 s); then the worker threads end.
    pub fn stop(&self) {
        self.inner.stop();
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
        self.inner.open_connections()
    }

    /// Requests or connections that no backend could serve.
    pub fn client_errors(&self) -> u64 {
        self.inner
            .client_errors
            .load(std::sync::atomic::Ordering::Relaxed)
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
        b.update(&self.inner.name, |h, _| {
            h.set_admin(admin);
            None
        });
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
            tokio::spawn(crate::check::tick_loop(inner.clone()));
            tokio::spawn(crate::check::check_loop(inner.clone()));
        }
        if let Some(r) = redirect {
            tokio::spawn(serve(r, inner.clone(), n, Listener::Redirect));
        }
        serve(listener, inner.clone(), n, Listener::Main).await;
        // Stopped: give open connections time to finish.
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        while inner.open_connections() > 0 && tokio::time::Instant::now() < deadline {
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
        Box::pin(crate::tcp::forward_tcp(
            client, peer, initial, &shared, inner, thread,
        ))
        .await;
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
