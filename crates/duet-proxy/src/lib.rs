//! duet's load balancer data path.
//!
//! - [`runtime`]: thread-per-core listeners with `SO_REUSEPORT`, configuration snapshots swapped
//!   on reload, TCP mode, active checks.
//! - [`backends`]: backends shared across snapshots, pools, routes, picking with `maxconn` and a
//!   bounded queue, per-backend counters and latency histograms.
//! - [`h1`] and [`http`]: the hand-written HTTP/1.1 hot path; `h2`: HTTP/2 from clients through
//!   hyper; [`tls`]: rustls termination with SNI; [`proxy_protocol`]; [`access_log`].
//!
//! See `docs/proxy-design.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod backends;
pub mod h1;
mod h2;
pub mod http;
pub mod proxy_protocol;
pub mod runtime;
pub mod tls;

pub use backends::{Backend, BackendStats, ErrorKind, LATENCY_BUCKETS};
pub use http::HttpTimeouts;
pub use runtime::{
    BackendSpec, BackendView, BalancerSpec, CheckSpec, HashKey, Mode, Proxy, QueueSpec,
    ReloadError, RouteSpec,
};
pub use tls::{CertPaths, TlsSpec};
