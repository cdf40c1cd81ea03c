//! The ordered event stream: every state change on this node, numbered.
//!
//! Producers (the control loop, the database agent, the balancers' health checks, the admin
//! API for operator actions) call [`Events::emit`], which numbers the event, keeps it in a
//! ring of the last [`KEEP`] and hands it to a broadcast channel. Emitting never waits for a
//! consumer: each consumer (an SSE client, the alert sender, the dashboard) reads at its own
//! pace, and one that falls more than the channel's capacity behind loses the oldest events
//! and counts them ([`Events::dropped`]). SSE clients then fill the gap from the ring when
//! they still can.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept in memory for `GET /v1/events` and for resuming streams.
pub const KEEP: usize = 1000;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its number: 1, 2, 3… in the order events happened on this node since it started.
    pub seq: u64,
    /// When (Unix milliseconds).
    pub unix_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. In JSON, `type` names the variant (`"vrrp"`, `"link"`…) beside its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The daemon started, or stops.
    Daemon {
        /// `started` or `stopping`.
        state: String,
        /// Its version, or why it stops.
        detail: String,
    },
    /// A VRRP instance changed state.
    Vrrp {
        /// The instance.
        instance: String,
        /// `INIT`, `BACKUP`, `MASTER`, `FAULT`.
        from: String,
        /// The new state.
        to: String,
        /// Why, as the state machine says.
        reason: String,
        /// Its effective priority then.
        priority: u8,
    },
    /// A heartbeat link to a peer went silent or carries heartbeats again.
    Link {
        /// The peer's name (or address, before it was heard).
        peer: String,
        /// The link's index in `heartbeat.links`.
        link: usize,
        /// Heartbeats arrive on it.
        up: bool,
    },
    /// A peer is heard, silent on every link, or left (said goodbye).
    Peer {
        /// The peer.
        peer: String,
        /// `heard`, `silent` or `left`.
        state: String,
    },
    /// This node's lease from the witness or etcd.
    Lease {
        /// `granted`, `lost`, `degraded` (the authority cannot grant leases) or `restored`.
        state: String,
        /// The term.
        term: u64,
        /// More, when there is more to say.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// A backend of a balancer went down, came back, or is drained.
    Backend {
        /// The balancer.
        balancer: String,
        /// The backend, `ip:port`.
        backend: String,
        /// `up`, `down` or `draining`.
        state: String,
        /// Why, when it went down or came back after a check.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// The configuration was reloaded, or a reload was refused.
    Reload {
        /// Applied.
        ok: bool,
        /// What changed, or why not.
        message: String,
    },
    /// The database on this node: a promotion, a fence, a new record, a refusal…
    Database {
        /// `promoted`, `fenced`, `recorded`, `refused`, `started`, `rejoined`, `cloned`…
        what: String,
        /// The log line's substance.
        detail: String,
    },
    /// The replication lag of this node's database crossed its limit, or came back under it.
    Lag {
        /// Bytes behind the primary.
        bytes: u64,
        /// Above `maximum_lag_on_failover`.
        above: bool,
    },
    /// A notify hook failed (exit status, timeout, could not start).
    Hook {
        /// The instance.
        instance: String,
        /// `notify`, `notify_master`…
        hook: String,
        /// What went wrong.
        detail: String,
    },
    /// A `[[service]]` started, stopped, failed, was restarted, or made the node step down.
    Service {
        /// The service.
        service: String,
        /// `started`, `stopped`, `start failed`, `stop failed`, `monitor failed`,
        /// `restarting`, `stepped down`, `waiting`, `reset`.
        state: String,
        /// Why, or what else to know.
        detail: String,
    },
    /// A peer's cluster-wide config differs from this node's (`same: false`), or agrees again.
    Config {
        /// The peer.
        peer: String,
        /// Whether the two agree now.
        same: bool,
    },
    /// Automatic failover was frozen or resumed, cluster-wide.
    Maintenance {
        /// Frozen now.
        enabled: bool,
        /// Who asked (a token's name, or the peer that said so).
        by: String,
    },
    /// An operator's call to the admin API (each one is also in the audit log).
    Operator {
        /// The token's name.
        who: String,
        /// Its role.
        role: String,
        /// The client's address.
        from: String,
        /// Method and path.
        action: String,
        /// It succeeded.
        ok: bool,
        /// The answer or the error.
        result: String,
    },
}

impl EventKind {
    /// The variant's name, as JSON's `type` and the SSE `event:` field say it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Daemon { .. } => "daemon",
            EventKind::Vrrp { .. } => "vrrp",
            EventKind::Link { .. } => "link",
            EventKind::Peer { .. } => "peer",
            EventKind::Lease { .. } => "lease",
            EventKind::Backend { .. } => "backend",
            EventKind::Reload { .. } => "reload",
            EventKind::Database { .. } => "database",
            EventKind::Lag { .. } => "lag",
            EventKind::Hook { .. } => "hook",
            EventKind::Maintenance { .. } => "maintenance",
            EventKind::Operator { .. } => "operator",
            EventKind::Service { .. } => "service",
            EventKind::Config { .. } => "config",
        }
    }

    /// Every variant's name, for metrics that list each once.
    pub const NAMES: [&'static str; 14] = [
        "daemon",
        "vrrp",
        "link",
        "peer",
        "lease",
        "backend",
        "reload",
        "database",
        "lag",
        "hook",
        "maintenance",
        "operator",
        "service",
        "config",
    ];
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKind::Daemon { state, detail } => write!(f, "duet {state} ({detail})"),
            EventKind::Vrrp {
                instance,
                from,
                to,
                reason,
                priority,
            } => write!(
                f,
                "{instance}: {from} -> {to} ({reason}), priority {priority}"
            ),
            EventKind::Link { peer, link, up } => {
                let s = if *up { "up" } else { "silent" };
                write!(f, "heartbeat link {link} to {peer} is {s}")
            }
            EventKind::Peer { peer, state } => write!(f, "peer {peer} is {state}"),
            EventKind::Lease {
                state,
                term,
                detail,
            } => {
                write!(f, "lease {state} (term {term})")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            EventKind::Backend {
                balancer,
                backend,
                state,
                reason,
            } => {
                write!(f, "{balancer}: backend {backend} is {state}")?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            EventKind::Reload { ok, message } => {
                let s = if *ok { "reloaded" } else { "reload refused" };
                write!(f, "{s}: {message}")
            }
            EventKind::Database { what, detail } => write!(f, "database {what}: {detail}"),
            EventKind::Lag { bytes, above } => {
                let s = if *above { "above" } else { "back under" };
                write!(f, "replication lag {bytes} bytes, {s} the limit")
            }
            EventKind::Hook {
                instance,
                hook,
                detail,
            } => write!(f, "{instance}: {hook} failed: {detail}"),
            EventKind::Maintenance { enabled, by } => {
                let s = if *enabled { "on" } else { "off" };
                write!(f, "maintenance {s} (by {by})")
            }
            EventKind::Operator {
                who,
                from,
                action,
                ok,
                result,
                ..
            } => {
                let s = if *ok { "ok" } else { "refused" };
                write!(f, "{who} from {from}: {action}: {s}: {result}")
            }
            EventKind::Config { peer, same: true } => {
                write!(
                    f,
                    "{peer}'s cluster-wide config agrees with this node's again"
                )
            }
            EventKind::Config { peer, same: false } => write!(
                f,
                "{peer}'s cluster-wide config differs from this node's (duet diff-config --peer {peer})"
            ),
            EventKind::Service {
                service,
                state,
                detail,
            } if detail.is_empty() => write!(f, "service {service}: {state}"),
            EventKind::Service {
                service,
                state,
                detail,
            } => write!(f, "service {service}: {state} ({detail})"),
        }
    }
}

/// The stream: numbering, the ring of recent events, the broadcast to consumers, counters.
#[derive(Debug)]
pub struct Events {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Identifies this run of the daemon in SSE ids: a client resuming with an id from an
    /// earlier run gets every event kept.
    boot: u64,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    ring: VecDeque<Arc<Event>>,
    keep: usize,
    emitted: BTreeMap<&'static str, u64>,
    dropped: BTreeMap<&'static str, u64>,
}

/// Where a resumed stream starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// Every event after the one asked for is still kept: these.
    Kept(Vec<Arc<Event>>),
    /// Some were forgotten already (more than [`KEEP`] since, or another run of the daemon):
    /// these are all that is kept, and `missed` were lost in between.
    Gap {
        /// What is kept.
        events: Vec<Arc<Event>>,
        /// How many the client missed (0 when unknown: another run).
        missed: u64,
    },
}

impl Events {
    /// A stream keeping `keep` events; consumers may fall up to `lag` events behind before
    /// they lose any.
    pub fn new(keep: usize, lag: usize) -> Events {
        let (tx, _) = broadcast::channel(lag.max(1));
        Events {
            inner: Mutex::new(Inner {
                next: 1,
                keep,
                ..Inner::default()
            }),
            tx,
            boot: unix_ms(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `kind`, keeps it and hands it to every consumer; never waits. Returns its
    /// number.
    pub fn emit(&self, kind: EventKind) -> u64 {
        let mut g = self.lock();
        let seq = g.next;
        g.next += 1;
        *g.emitted.entry(kind.name()).or_default() += 1;
        let event = Arc::new(Event {
            seq,
            unix_ms: unix_ms(),
            kind,
        });
        g.ring.push_back(event.clone());
        while g.ring.len() > g.keep {
            g.ring.pop_front();
        }
        // Sent under the lock, so every consumer sees events in their numbers' order. No
        // receiver is no error.
        let _ = self.tx.send(event);
        seq
    }

    /// A new consumer: it receives every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// The last `n` events kept, oldest first.
    pub fn last(&self, n: usize) -> Vec<Arc<Event>> {
        let g = self.lock();
        g.ring
            .iter()
            .skip(g.ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The events after `seq` (0: all kept), oldest first.
    pub fn after(&self, seq: u64) -> Since {
        let g = self.lock();
        let events: Vec<Arc<Event>> = g.ring.iter().filter(|e| e.seq > seq).cloned().collect();
        let first = events.first().map_or(g.next, |e| e.seq);
        if first > seq + 1 {
            Since::Gap {
                events,
                missed: first - seq - 1,
            }
        } else {
            Since::Kept(events)
        }
    }

    /// The SSE id of `event`: this run and its number.
    pub fn id(&self, event: &Event) -> String {
        format!("{}.{}", self.boot, event.seq)
    }

    /// Where to resume after the SSE id `last` (a `Last-Event-ID` header).
    pub fn resume(&self, last: &str) -> Since {
        match last.split_once('.') {
            Some((boot, seq)) if boot == self.boot.to_string() => match seq.parse() {
                Ok(seq) => self.after(seq),
                Err(_) => self.unknown_run(),
            },
            _ => self.unknown_run(),
        }
    }

    fn unknown_run(&self) -> Since {
        match self.after(0) {
            Since::Kept(events) | Since::Gap { events, .. } => Since::Gap { events, missed: 0 },
        }
    }

    /// The number of the newest event (0: none yet).
    pub fn newest(&self) -> u64 {
        self.lock().next - 1
    }

    /// A consumer lost `n` events (it fell behind): counted under `consumer`.
    pub fn dropped(&self, consumer: &'static str, n: u64) {
        *self.lock().dropped.entry(consumer).or_default() += n;
    }

    /// Events emitted since start, by type.
    pub fn emitted(&self) -> BTreeMap<&'static str, u64> {
        self.lock().emitted.clone()
    }

    /// Events consumers lost, by consumer.
    pub fn drops(&self) -> BTreeMap<&'static str, u64> {
        self.lock().dropped.clone()
    }
}

impl Default for Events {
    fn default() -> Events {
        Events::new(KEEP, 4096)
    }
}

/// Now, in Unix milliseconds (the crate's one wall clock reading).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reload(n: u64) -> EventKind {
        EventKind::Reload {
            ok: true,
            message: format!("reload {n}"),
        }
    }

    #[test]
    fn events_are_numbered_kept_and_resumed() {
        let e = Events::new(3, 16);
        for n in 1..=5 {
            assert_eq!(e.emit(reload(n)), n);
        }
        let seqs = |v: &[Arc<Event>]| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&e.last(10)), [3, 4, 5]);
        assert_eq!(seqs(&e.last(2)), [4, 5]);
        assert_eq!(e.after(3), Since::Kept(e.last(2)));
        assert_eq!(e.after(5), Since::Kept(vec![]));
        // 1 and 2 are forgotten: a client that saw only 1 missed one.
        assert_eq!(
            e.after(1),
            Since::Gap {
                events: e.last(3),
                missed: 1
            }
        );
        let id = e.id(&e.last(1)[0]);
        assert!(id.ends_with(".5"), "{id}");
        assert_eq!(e.resume(&id), Since::Kept(vec![]));
        let four = id.replace(".5", ".4");
        assert_eq!(e.resume(&four), Since::Kept(e.last(1)));
        // An id from another run, or no id at all: everything kept, gap unknown.
        for other in ["1.4", "garbage", ""] {
            assert_eq!(
                e.resume(other),
                Since::Gap {
                    events: e.last(3),
                    missed: 0
                }
            );
        }
        assert_eq!(e.emitted().get("reload"), Some(&5));
    }

    #[test]
    fn a_slow_consumer_loses_the_oldest_and_the_producer_never_waits() {
        let e = Events::new(KEEP, 4);
        let mut slow = e.subscribe();
        for n in 1..=10 {
            e.emit(reload(n));
        }
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("{other:?}"),
        }
        assert_eq!(slow.try_recv().unwrap().seq, 7);
    }

    #[test]
    fn json_names_the_type_beside_the_fields() {
        let event = Event {
            seq: 7,
            unix_ms: 1,
            kind: EventKind::Vrrp {
                instance: "web".into(),
                from: "BACKUP".into(),
                to: "MASTER".into(),
                reason: "master down".into(),
                priority: 150,
            },
        };
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["type"], "vrrp");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["to"], "MASTER");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, event);
        assert_eq!(
            event.kind.to_string(),
            "web: BACKUP -> MASTER (master down), priority 150"
        );
        for name in EventKind::NAMES {
            assert!(!name.is_empty());
        }
    }
}
