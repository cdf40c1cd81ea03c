//! VRRP for duet: packets and the virtual router state machine, with no IO and no clock.
//!
//! - [`packet`]: VRRP v2 (RFC 3768) and v3 (RFC 9568) advertisements, IPv4 and IPv6; a checked
//!   zero-copy [`Packet`] view and a validated [`Advert`] representation; both v3 IPv4 checksum
//!   camps.
//! - [`instance`]: one virtual router, RFC 9568 §6 plus keepalived's FAULT state, driven by
//!   `handle_*` inputs and drained through `poll_*` outputs.
//! - [`tracking`]: how track scripts, interfaces and files move the priority.
//! - [`sync_group`]: instances that fail over together.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod instance;
pub mod packet;
pub mod sync_group;
pub mod tracking;

pub use duet_time::Instant;
pub use instance::{
    Action, Instance, InstanceConfig, MasterInfo, OWNER_PRIORITY, Reason, State, Stats,
};
pub use packet::{
    Advert, AdvertInterval, ChecksumMatch, ChecksumMode, DropReason, Family, Packet, Version, Vrid,
};
pub use sync_group::SyncGroup;
pub use tracking::{RiseFall, TrackedHealth, Tracker, TrackerReading, combine};
