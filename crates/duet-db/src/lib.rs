//! The database shell: everything duet does to PostgreSQL, as thin as it can be.
//!
//! [`Postgres`] owns the server of one node: it writes the configuration (into duet's own
//! run directory, never into the data directory, so clones and rewinds cannot carry one
//! node's settings to another), runs the postmaster as a child that dies with the daemon,
//! observes it with one short query batch, and carries out the planner's actions
//! ([`duet_dbfail::Action`]) with PostgreSQL's own programs (`initdb`, `pg_basebackup`,
//! `pg_rewind`) and SQL (`pg_promote`, slots, `synchronous_standby_names`).
//!
//! Errors are `String`s that say what failed and where, ready for the log and the status.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod files;
mod programs;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use files::{DataInfo, OsUser, inspect_data, os_user, read_password};
pub use server::{Postgres, RewindError, Upstream};

/// What the shell needs to know to run a node's server.
#[derive(Debug, Clone)]
pub struct Spec {
    /// This node's name: `application_name`, slot and `cluster_name`.
    pub node: String,
    /// This node's server address.
    pub listen: SocketAddr,
    /// Listen on every address (a write VIP comes and goes), not only on `listen`.
    pub listen_all: bool,
    /// The data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL's programs.
    pub bin_dir: PathBuf,
    /// Who runs the server.
    pub os_user: OsUser,
    /// Superuser role.
    pub superuser: String,
    /// Replication role.
    pub replication_user: String,
    /// Both roles' password.
    pub password: Secret,
    /// Client networks (`"10.0.0.0/24"`), scram-sha-256.
    pub allow: Vec<String>,
    /// Peers' addresses, always allowed in for replication and rewind.
    pub peers: Vec<IpAddr>,
    /// `postgresql.conf` parameters from the config.
    pub parameters: Vec<(String, String)>,
    /// duet's directory for this server: configuration files and the Unix socket.
    pub run_dir: PathBuf,
}

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
