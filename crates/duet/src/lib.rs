//! duet: two Linux servers, one highly available service.
//!
//! The binary's modules live in this library so that integration tests, the demo and the
//! benchmarks share one implementation of the lab and the CLI.
#![forbid(unsafe_code)]

pub mod cli;
pub mod daemon;
pub mod demo;
pub mod demodb;
pub mod diffconfig;
pub mod events;
pub mod import;
pub mod key;
pub mod lab;
pub mod labdb;
pub mod labflood;
pub mod labpg;
pub mod labtools;
pub mod preflight;
pub mod status;
pub mod token;
pub mod witness;
