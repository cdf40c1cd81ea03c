//! duet's split-brain safety core (pure: no sockets, no clock, no tokio).
//!
//! - [`wire`]: cluster messages (heartbeats, witness lease traffic) authenticated with
//!   HMAC-SHA256 and guarded against replay.
//! - [`liveness`]: which peer is alive on which link; a peer is dead only when every link is
//!   silent.
//! - [`lease`]: the witness's one-lease-at-a-time logic with terms (fencing tokens) and
//!   persisted promises, and the node's conservative view of its lease.
//! - [`votes`]: time-bounded promises between peers, carried in heartbeats.
//! - [`quorum`]: whether this node may be MASTER, combining VRRP's wish with the heartbeat,
//!   the lease and the two-node policy.
//! - [`member`]: one node's cluster logic (the above, wired together), driven by the daemon and
//!   by the simulator alike.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod lease;
pub mod liveness;
pub mod member;
pub mod quorum;
pub mod votes;
pub mod wire;
