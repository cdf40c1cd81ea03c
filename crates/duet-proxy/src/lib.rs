//! duet's load balancer data path (issue #4, in progress).
//!
//! So far: [`h1`], the HTTP/1.1 message rules of the hot path (head parsing and validation,
//! chunked framing, forwarded heads). The thread-per-core runtime, connection loops, pools, TLS
//! and HTTP/2 follow; see `docs/status.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod h1;
