//! Database failover decisions, with no IO and no clock.
//!
//! The shell (`duet`'s database agent) observes the local PostgreSQL server, hears the peers'
//! [`Report`]s through the heartbeat and the [`Record`] kept by the lease authority (witness
//! or etcd), and asks a [`Planner`] for the next [`Step`]: one [`Action`] to carry out, or
//! the reason it waits. The planner is level-triggered (like a reconciler): it looks at the
//! whole picture every time, so a lost or repeated observation cannot leave it stuck, and the
//! same code runs in the daemon and in the simulator (`duet-sim`).
//!
//! The rules it keeps (`docs/database.md` explains them for operators):
//!
//! - **One writable primary.** A primary that may no longer lead is fenced at once; a server
//!   starts as a primary only to restart in place after its own crash while this node still
//!   leads; anything else starts as a replica and becomes primary only through promotion.
//! - **No acknowledged commit lost.** A replica is promoted only if it cannot have missed an
//!   acknowledged commit ([`Planner::promotable`]): the record names it as the synchronous
//!   standby (`on`, `strict`), or it trails the last primary position it heard by at most
//!   `maximum_lag_on_failover` (`off`), or the old primary stopped cleanly and it received
//!   everything. The record is rewritten before the promotion and before synchronous
//!   replication is relaxed, never after.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod facts;
mod plan;

pub use facts::{
    Data, Facts, Follower, Leadership, Lsn, Mode, PeerDb, PrimaryState, Record, ReplicaState,
    Report, Role, Server,
};
pub use plan::{Action, Plan, Planner, PlannerConfig, Step, fmt_lsn, slot_name};

#[cfg(test)]
mod tests;
