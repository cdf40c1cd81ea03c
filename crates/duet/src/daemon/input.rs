//! What reaches the control loop, and its clock.
//!
//! The loop's inbox is bounded: a flood of packets at the VRRP or heartbeat ports fills it and
//! the excess is dropped and counted (`duet_control_inputs_dropped_total`) instead of growing
//! memory. Inputs that must not be lost (signals, operator actions, link and file changes, etcd
//! answers) wait for room instead.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duet_time::Instant;
use tokio::sync::mpsc;

use super::instance::SocketKey;

/// Inputs the inbox holds at most; a flood beyond it is dropped and counted.
pub const INBOX_CAPACITY: usize = 1024;

/// Inputs to the control loop.
#[derive(Debug)]
pub enum Input {
    /// A VRRP packet arrived.
    Packet {
        key: SocketKey,
        at: Instant,
        src: IpAddr,
        dst: IpAddr,
        hop_limit: u8,
        bytes: Vec<u8>,
    },
    /// Link carrier states changed (interface name → running).
    Links(BTreeMap<String, bool>),
    /// Track file values changed.
    Files(BTreeMap<PathBuf, i64>),
    /// SIGTERM / SIGINT.
    Shutdown,
    /// SIGHUP.
    Reload,
    /// A datagram on a heartbeat or witness socket.
    Cluster {
        /// The socket.
        via: duet_cluster::member::Via,
        /// Its sender.
        from: std::net::SocketAddr,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// etcd answered a lease request (`[coordination]`).
    Etcd(EtcdAnswer),
    /// The database agent's report after a look at the server.
    Database(DatabaseReport),
    /// A `[[service]]` operation ended.
    Service {
        /// The group (index in `Services`).
        group: usize,
        /// The operation.
        id: u64,
        /// How it ended.
        result: Result<(), String>,
    },
    /// An operator's action from the admin API, and where to send the answer.
    Action(
        duet_admin::Action,
        std::sync::mpsc::Sender<Result<String, duet_admin::ActionError>>,
    ),
}

/// Maps the process's monotonic clock onto the cores' time values.
#[derive(Debug, Clone, Copy)]
pub struct Clock(std::time::Instant);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock(std::time::Instant::now())
    }
    /// Current time.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.0.elapsed().as_nanos() as u64)
    }
    /// The tokio instant of a core time value.
    pub fn to_tokio(self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_nanos(t.as_nanos()))
    }
}

/// etcd's answer (the etcd client task's output). Every answer carries the database record
/// as etcd held it in the same transaction (`None`: no record, or an unreadable one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdAnswer {
    /// This node holds the leadership key for `duration` under `term`.
    Granted {
        /// The request answered.
        request: u64,
        /// The lease TTL.
        duration: Duration,
        /// The key's create revision.
        term: u64,
        /// The database record.
        record: Option<duet_cluster::wire::DbRecord>,
    },
    /// Another node holds it.
    Refused {
        /// The request answered.
        request: u64,
        /// The holder's name.
        holder: String,
        /// The key's create revision.
        term: u64,
        /// The database record.
        record: Option<duet_cluster::wire::DbRecord>,
    },
    /// The answer to a record write or read.
    Record(Option<duet_cluster::wire::DbRecord>),
}

/// What the database agent tells the control loop after each look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseReport {
    /// For the heartbeat.
    pub state: Option<duet_cluster::wire::DbState>,
    /// The server is, or is becoming, the primary.
    pub master: bool,
    /// It would become primary and waits for leadership.
    pub wants: bool,
    /// The last look found a primary accepting writes, and this node may lead.
    pub writable: bool,
    /// The primary is being restarted in place (after a crash) and this node may lead: the
    /// write VIP stays, so clients are refused at once (connection refused) instead of
    /// waiting for their SYN to be retransmitted to an address nobody holds.
    pub restarting: bool,
    /// The agent needs the lease authority's record (no primary in sight).
    pub record_query: bool,
    /// A record the agent needs written at the lease authority.
    pub record_write: Option<duet_dbfail::Record>,
}

/// The sending side of the control loop's inbox; clones share the drop counter.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Input>,
    dropped: Arc<AtomicU64>,
}

/// The control loop is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Inbox {
    /// A bounded inbox and its receiving side.
    pub fn new(capacity: usize) -> (Inbox, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Inbox {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// A datagram from the network: queued if there is room, else dropped and counted.
    pub fn offer(&self, input: Input) -> Result<(), Closed> {
        match self.tx.try_send(input) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// An input that must not be lost: waits for room.
    pub async fn send(&self, input: Input) -> Result<(), Closed> {
        self.tx.send(input).await.map_err(|_| Closed)
    }

    /// [`Inbox::send`] from a thread outside the control runtime.
    pub fn blocking_send(&self, input: Input) -> Result<(), Closed> {
        self.tx.blocking_send(input).map_err(|_| Closed)
    }

    /// Whether the control loop is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Datagrams dropped so far because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
