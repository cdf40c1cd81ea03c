//! What the planner is told: the local data directory and server, the peers' reports, the
//! record at the lease authority, and the cluster's leadership verdict.

use std::fmt;
use std::net::SocketAddr;

use duet_time::Instant;

/// A WAL position (PostgreSQL's `pg_lsn` as a number of bytes).
pub type Lsn = u64;

/// `database.synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Asynchronous: promotion within the lag limit.
    Off,
    /// Synchronous while the standby is healthy; relaxed, after recording it, when it is not.
    #[default]
    On,
    /// Always synchronous: commits wait while the standby is away.
    Strict,
}

/// What the local data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Missing or empty: bootstrap (initdb) or clone.
    Empty,
    /// A PostgreSQL cluster with this system identifier.
    Cluster {
        /// `pg_controldata`'s "Database system identifier".
        system_id: u64,
    },
    /// Something the shell cannot use (not a data directory, wrong owner, unreadable), and why.
    Unusable(String),
}

/// The local server, as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// No postmaster runs.
    Stopped,
    /// A postmaster runs but does not answer yet (starting, crash recovery).
    Starting,
    /// Running and accepting writes.
    Primary(PrimaryState),
    /// Running in recovery (a standby).
    Replica(ReplicaState),
}

/// A primary's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrimaryState {
    /// Its timeline.
    pub timeline: u32,
    /// WAL flushed locally.
    pub lsn: Lsn,
    /// `synchronous_standby_names`, as the server runs with it (names, unquoted).
    pub sync_names: Vec<String>,
    /// Standbys connected (`pg_stat_replication`).
    pub followers: Vec<Follower>,
    /// Physical replication slots.
    pub slots: Vec<String>,
}

/// A standby connected to the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// Its `application_name` (duet sets it to the node name).
    pub name: String,
    /// It streams (state `streaming`).
    pub streaming: bool,
    /// The primary waits for it (`sync_state` = `sync`).
    pub sync: bool,
    /// WAL it flushed.
    pub flush: Lsn,
}

/// A standby's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaState {
    /// Timeline it replays (the newest it has seen).
    pub timeline: u32,
    /// WAL received and flushed by its WAL receiver (or replayed, whichever is further).
    pub received: Lsn,
    /// WAL replayed.
    pub replayed: Lsn,
    /// The node it is configured to stream from.
    pub upstream: Option<String>,
    /// Its WAL receiver streams now.
    pub streaming: bool,
}

/// A node's database role as its heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Nothing known yet, or no data.
    #[default]
    Unknown,
    /// Cloning itself from the primary.
    Cloning,
    /// Data, no server running (after a clean stop: `lsn` is where it stopped).
    Stopped,
    /// Writable primary.
    Primary,
    /// Standby.
    Replica,
}

impl Role {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Role::Unknown => 0,
            Role::Cloning => 1,
            Role::Stopped => 2,
            Role::Primary => 3,
            Role::Replica => 4,
        }
    }

    /// From the wire code.
    pub fn from_code(c: u8) -> Option<Role> {
        Some(match c {
            0 => Role::Unknown,
            1 => Role::Cloning,
            2 => Role::Stopped,
            3 => Role::Primary,
            4 => Role::Replica,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Unknown => "unknown",
            Role::Cloning => "cloning",
            Role::Stopped => "stopped",
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// What a node tells its peers about its database in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its role.
    pub role: Role,
    /// Where its server listens.
    pub listen: SocketAddr,
    /// Its data's system identifier (0: none).
    pub system_id: u64,
    /// Its timeline.
    pub timeline: u32,
    /// Primary: WAL flushed; replica: WAL received; stopped: where it stopped.
    pub lsn: Lsn,
    /// The stop was clean (a shutdown checkpoint): `lsn` is final.
    pub clean_stop: bool,
}

/// A peer's database, as the cluster layer knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDb {
    /// Its node name.
    pub name: String,
    /// Heard on some heartbeat link now.
    pub alive: bool,
    /// Its last report (kept after it went silent).
    pub report: Option<Report>,
}

/// The record the lease authority keeps for the database: who is primary and which standby
/// holds every commit it acknowledged. Only the lease holder writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The node that is (or last was) primary.
    pub primary: String,
    /// The standby that has every acknowledged commit of that primary; `None`: nobody.
    pub standby: Option<String>,
    /// The term it was written under.
    pub term: u64,
}

impl fmt::Display for Record {
    /// `primary beta, synchronous standby alpha (term 7)`, for logs and status.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "primary {}, synchronous standby {} (term {})",
            self.primary,
            self.standby.as_deref().unwrap_or("none"),
            self.term
        )
    }
}

/// The cluster's verdict for the database role, from `duet-cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// This node may be (or become) primary now.
    pub may_lead: bool,
    /// Why not, when it may not.
    pub why_not: String,
    /// It holds the lease of the lease authority (needed to write the record).
    pub lease: bool,
    /// The current term.
    pub term: u64,
    /// Maintenance: automatic failover is off (no promotion but a planned handover's).
    pub frozen: bool,
}

/// Everything the planner looks at, at one moment.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Now.
    pub now: Instant,
    /// The cluster's verdict.
    pub leadership: &'a Leadership,
    /// The data directory.
    pub data: &'a Data,
    /// The server.
    pub server: &'a Server,
    /// The other nodes.
    pub peers: &'a [PeerDb],
    /// A lease authority (witness or etcd) keeps a record.
    pub authority: bool,
    /// Its record, as last heard (`None`: none written yet, or not heard).
    pub record: Option<&'a Record>,
}

impl Facts<'_> {
    /// The live peer that runs a primary, if any.
    pub fn live_primary(&self) -> Option<(&PeerDb, &Report)> {
        self.peers.iter().find_map(|p| {
            let r = p.report.as_ref()?;
            (p.alive && r.role == Role::Primary).then_some((p, r))
        })
    }

    /// The cluster's system identifier, as far as anyone says: the record, or a peer with
    /// data.
    pub fn cluster_system(&self) -> Option<u64> {
        self.record.map(|r| r.system_id).or_else(|| {
            self.peers
                .iter()
                .filter_map(|p| p.report.as_ref())
                .map(|r| r.system_id)
                .find(|s| *s != 0)
        })
    }
}
