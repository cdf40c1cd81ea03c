//! What a balancer is asked to do: the typed configuration the daemon builds from
//! `[[balancer]]` and hands to [`crate::Proxy::start`] and [`crate::Proxy::reload`].

use std::net::SocketAddr;
use std::time::Duration;

use duet_health::{Algorithm, HealthPolicy};

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
    pub http_timeouts: HttpTimeouts,
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
    /// Response statuses that count as backend failures for passive checks (none by default:
    /// only failed connections, resets, timeouts before the response head and malformed
    /// responses count).
    pub passive_on_status: Vec<std::ops::RangeInclusive<u16>>,
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

impl RouteSpec {
    /// A label for status and metrics: `host/path`.
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            self.host.as_deref().unwrap_or("*"),
            self.path_prefix
        )
    }

    /// Whether a request for `host` (the `Host` value, port allowed) and `path` matches.
    pub fn matches(&self, host: Option<&[u8]>, path: &[u8]) -> bool {
        if !path.starts_with(self.path_prefix.as_bytes()) {
            return false;
        }
        let Some(want) = &self.host else {
            return true;
        };
        let Some(host) = host else {
            return false;
        };
        let host = strip_port(host);
        match want.strip_prefix("*.") {
            // `*.example.com` matches any name below example.com, not example.com itself.
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
                    && host[host.len() - suffix.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(want.as_bytes()),
        }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    }
}

/// Convenience for tests and configs: a backend with weight 1 and no limit.
impl From<SocketAddr> for BackendSpec {
    fn from(address: SocketAddr) -> BackendSpec {
        BackendSpec {
            address,
            weight: 1,
            maxconn: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str) -> RouteSpec {
        RouteSpec {
            host: host.map(str::to_string),
            path_prefix: path.into(),
            backends: Vec::new(),
        }
    }

    #[test]
    fn routes_match_host_and_path_prefix() {
        let api = route(Some("api.example.com"), "/v1/");
        assert!(api.matches(Some(b"api.example.com"), b"/v1/users"));
        assert!(api.matches(Some(b"API.Example.com:8080"), b"/v1/"));
        assert!(!api.matches(Some(b"api.example.com"), b"/v2/users"));
        assert!(!api.matches(Some(b"www.example.com"), b"/v1/users"));
        assert!(!api.matches(None, b"/v1/users"));

        let any_host = route(None, "/static/");
        assert!(any_host.matches(None, b"/static/a.css"));
        assert!(any_host.matches(Some(b"x"), b"/static/"));

        let wild = route(Some("*.example.com"), "/");
        assert!(wild.matches(Some(b"a.example.com"), b"/"));
        assert!(wild.matches(Some(b"a.b.example.com:443"), b"/x"));
        assert!(!wild.matches(Some(b"example.com"), b"/"));
        assert!(!wild.matches(Some(b"badexample.com"), b"/"));
    }

    #[test]
    fn ports_are_stripped_but_not_from_bare_ipv6() {
        assert_eq!(strip_port(b"a:80"), b"a");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b"a"), b"a");
    }
}
