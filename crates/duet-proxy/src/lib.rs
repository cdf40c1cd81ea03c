//! duet's load balancer data path.
//!
//! - [`spec`]: what a balancer is asked to do (the typed configuration).
//! - [`runtime`]: thread-per-core listeners with `SO_REUSEPORT`, start, reload and stop, and the
//!   accept path; [`balancer`](crate::balancer): the state that outlives snapshots.
//! - [`backends`]: backends shared across snapshots, pools, routes, picking with `maxconn` and a
//!   bounded queue, per-backend counters and latency histograms; `upstream`: backend
//!   connections and their idle pools.
//! - `policy`: the request policy both HTTP paths share (pick, retry, blame, log).
//! - [`h1`] and `http`: the hand-written HTTP/1.1 hot path; `h2`: HTTP/2 from clients on the
//!   h2 crate, to backends through hyper's HTTP/1.1 client; `tcp`: layer-4 mode; `check`: active checks; [`tls`]: rustls termination with SNI;
//!   [`proxy_protocol`]; [`access_log`].
//!
//! See `docs/proxy-design.md` and the module map in `ARCHITECTURE.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod backends;
mod balancer;
mod check;
pub mod h1;
mod h2;
mod http;
mod policy;
pub mod proxy_protocol;
pub mod runtime;
pub mod spec;
mod tcp;
pub mod tls;
mod upstream;

pub use backends::{Backend, BackendStats, ErrorKind, LATENCY_BUCKETS};
pub use runtime::{BackendView, Proxy, ReloadError};
pub use spec::{
    BackendSpec, BalancerSpec, CheckSpec, HashKey, HttpTimeouts, Mode, QueueSpec, RouteSpec,
};
pub use tls::{CertPaths, TlsSpec};
