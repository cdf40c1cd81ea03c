//! Health and selection of load-balancer backends, with no IO and no clock.
//!
//! - [`RiseFall`]: debouncing of pass/fail signals (also used by VRRP track scripts);
//! - [`backend`]: one backend's health: active checks, passive failures, slow start, drain;
//! - [`select`]: which backend gets the next request.
//!
//! The proxy shell (`duet-proxy`) runs the checks and forwards requests; it feeds results in
//! with the current time and asks these types what to do.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod rise_fall;
pub mod select;

pub use backend::{Admin, BackendHealth, Change, HealthPolicy, Outcome};
pub use rise_fall::RiseFall;
pub use select::{Algorithm, Candidate, Selector};
