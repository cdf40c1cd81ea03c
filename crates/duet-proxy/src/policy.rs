//! The request policy, one copy for the HTTP/1.1 and HTTP/2 paths: which pool and backend a
//! request goes to (route, sticky cookie, hash), which backend connection it may use, whether a
//! failed attempt may be retried, who is to blame for a failure, what a client gets when no
//! backend answered, and the access-log entry.
//!
//! The rules (issue #10, after HAProxy's `http-reuse safe` and `retry-on`):
//! - A request that is not idempotent (RFC 9110 §9.2.2) never goes on a pooled connection: a
//!   backend may close an idle connection just as the request is written, and then nobody can
//!   tell whether it acted on it. It goes on a fresh connection, and is never written twice.
//! - An attempt is retried on another backend, up to `retries` times, when the connection could
//!   not be made (nothing was sent), or when the request is idempotent, could be sent again in
//!   full (no body, or a body still held whole), and nothing of a response reached the client.
//! - Client faults (timeouts, aborts, short or malformed bodies) are answered to the client and
//!   never count against a backend. Passive checks count backend faults only: connection
//!   refused or reset, no response head within the server timeout, a malformed response;
//!   response statuses only when listed in `passive.on_status`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use duet_health::Outcome;

use crate::backends::{Backend, Lease, NoPick, Shared, request_key};
use crate::balancer::Balancer;

/// Whether a method is idempotent (RFC 9110 §9.2.2), so that sending it twice is harmless.
pub(crate) fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// Where a request goes, decided once from its head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The pool its route chose.
    pub(crate) group: usize,
    /// Its backend in that pool, named by the sticky cookie.
    pub(crate) sticky: Option<usize>,
    /// Hash (for `hash`) or random bits.
    pub(crate) key: u64,
    /// Whether it may be sent twice.
    pub(crate) idempotent: bool,
}

impl Plan {
    /// Plans a request. `authority`: the target's authority or the `Host` value; `path`: the
    /// origin-form target; `cookie`: finds a cookie by name; `header`: a header value by name
    /// (only called for header hashing).
    pub(crate) fn new<'h>(
        shared: &Shared,
        client: SocketAddr,
        method: &str,
        authority: Option<&[u8]>,
        path: &[u8],
        cookie: impl FnOnce(&str) -> Option<&'h [u8]>,
        header: impl FnOnce(&str) -> Option<Vec<u8>>,
    ) -> Plan {
        let group = shared.route(authority, path);
        let sticky = shared.spec.sticky_cookie.as_deref().and_then(|name| {
            let id = cookie(name)?;
            shared.groups[group]
                .members
                .iter()
                .position(|m| m.backend.sticky_id.as_bytes() == id)
        });
        let key = match shared.spec.algorithm {
            duet_health::Algorithm::Hash => {
                request_key(&shared.spec.hash_key, client.ip(), path, header)
            }
            _ => crate::backends::random_bits(),
        };
        Plan {
            group,
            sticky,
            key,
            idempotent: idempotent(method),
        }
    }

    /// Whether the request may use an idle pooled connection (else it opens a fresh one).
    pub(crate) fn may_use_pooled(&self) -> bool {
        self.idempotent
    }
}

/// How far a failed attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// No connection to the backend: nothing of the request left duet.
    Connect,
    /// The request was written (all or part of it) and the backend failed before a response
    /// head: reset, timeout or a malformed response.
    BeforeResponse(Outcome),
}

/// The attempts of one request: the backends tried, the retry budget, the blame, the answer
/// when none worked, and the log entry.
pub(crate) struct Attempts<'s> {
    shared: &'s Shared,
    thread: usize,
    plan: Plan,
    tried: Vec<usize>,
    /// Some backend was available but every one was at its `maxconn` (then 503).
    full: bool,
    /// No more attempts (a failure that must not be retried).
    stopped: bool,
    started: Instant,
}

impl<'s> Attempts<'s> {
    /// Starts the clock of a request whose head is complete.
    pub(crate) fn new(shared: &'s Shared, thread: usize, plan: Plan) -> Attempts<'s> {
        Attempts {
            shared,
            thread,
            plan,
            tried: Vec::new(),
            full: false,
            stopped: false,
            started: Instant::now(),
        }
    }

    /// The snapshot the request runs on.
    pub(crate) fn shared(&self) -> &'s Shared {
        self.shared
    }

    /// Where the request goes.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The backend for the next attempt (the sticky one first, waiting in the pool's queue if
    /// every backend is full), or `None` when the attempts are over.
    pub(crate) async fn next(&mut self) -> Option<Lease<'s>> {
        if self.stopped || self.tried.len() > self.shared.spec.retries as usize {
            return None;
        }
        let p = self.plan;
        match self
            .shared
            .lease(self.thread, p.group, p.key, p.sticky, &self.tried)
            .await
        {
            Ok(lease) => {
                self.tried.push(lease.index);
                Some(lease)
            }
            Err(NoPick::Full) => {
                self.full = true;
                None
            }
            Err(NoPick::Unavailable) => None,
        }
    }

    /// Records a failed attempt against its backend; whether another may follow.
    /// `resendable`: the whole request can be sent again (no body, or a body still held whole)
    /// and nothing of a response reached the client.
    pub(crate) fn failed(&mut self, lease: &Lease<'_>, failure: Failed, resendable: bool) -> bool {
        let retry = match failure {
            Failed::Connect => {
                lease
                    .backend
                    .record(&self.shared.spec.name, Outcome::ConnectFailed);
                resendable
            }
            Failed::BeforeResponse(outcome) => {
                lease.backend.record(&self.shared.spec.name, outcome);
                self.plan.idempotent && resendable
            }
        };
        self.stopped |= !retry;
        retry
    }

    /// Records that the backend failed after its response head went to the client (the
    /// client's connection is then closed): it counts, and nothing is retried.
    pub(crate) fn failed_midway(&mut self, lease: &Lease<'_>, outcome: Outcome) {
        lease.backend.record(&self.shared.spec.name, outcome);
        self.stopped = true;
    }

    /// Records a response head with `status` from the lease's backend: counts it and its
    /// latency, and feeds the passive checks (a failure only for `passive.on_status`).
    pub(crate) fn answered(&self, lease: &Lease<'_>, status: u16) {
        let backend: &Backend = lease.backend;
        backend.stats.connections.fetch_add(1, Ordering::Relaxed);
        backend.stats.observe(self.thread, self.started.elapsed());
        if status >= 500 {
            backend
                .stats
                .count_error(crate::backends::ErrorKind::ServerError);
        }
        let counts = self
            .shared
            .spec
            .passive_on_status
            .iter()
            .any(|r| r.contains(&status));
        let outcome = if counts {
            Outcome::ServerError
        } else {
            Outcome::Success
        };
        backend.record_health(&self.shared.spec.name, outcome);
    }

    /// The value of the sticky `Set-Cookie` to add to a response from `lease`'s backend, when
    /// the client is not already stuck to it.
    pub(crate) fn set_cookie(&self, lease: &Lease<'_>) -> Option<String> {
        let name = self.shared.spec.sticky_cookie.as_deref()?;
        (self.plan.sticky != Some(lease.index))
            .then(|| format!("{name}={}; Path=/; HttpOnly", lease.backend.sticky_id))
    }

    /// The answer for a request that no backend answered, counted as a client error: 503 when
    /// none could be tried or all were full, else 502.
    pub(crate) fn give_up(&self, balancer: &Balancer) -> (u16, &'static str) {
        balancer.client_errors.fetch_add(1, Ordering::Relaxed);
        if self.full {
            (503, "every backend is at its connection limit")
        } else if self.tried.is_empty() {
            (503, "no backend available")
        } else {
            (502, "no backend could answer")
        }
    }

    /// Writes the access-log line (when the balancer keeps a log).
    pub(crate) fn log(&self, request: &Logged<'_>, status: u16, backend: Option<SocketAddr>) {
        if let Some(log) = &self.shared.spec.access_log {
            log.log(&crate::access_log::Entry {
                balancer: &self.shared.spec.name,
                client: request.client,
                proto: request.proto,
                method: request.method,
                target: request.target,
                status,
                backend,
                attempts: self.tried.len(),
                duration: self.started.elapsed(),
            });
        }
    }
}

/// What the access log says of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged<'a> {
    pub(crate) client: SocketAddr,
    /// `"http/1.1"`, `"https/1.1"`, `"h2"`.
    pub(crate) proto: &'static str,
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
}
