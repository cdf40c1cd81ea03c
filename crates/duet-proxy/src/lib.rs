//! duet's load balancer data path (issue #4, in progress).
//!
//! So far: [`h1`], the HTTP/1.1 message rules of the hot path (head parsing and validation,
//! chunked framing, forwarded heads), and [`runtime`]: thread-per-core listeners with
//! `SO_REUSEPORT`, TCP forwarding with connect retries on another backend, passive failure
//! accounting and active TCP checks. HTTP connection loops, pools, TLS and HTTP/2 follow; see
//! `docs/proxy-design.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod h1;
pub mod http;
pub mod proxy_protocol;
pub mod runtime;

pub use http::HttpTimeouts;
pub use runtime::{BackendSpec, BalancerSpec, CheckSpec, Mode, Proxy};
