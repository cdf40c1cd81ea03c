//! The cluster shell: heartbeat sockets (one per link), the witness client, and the glue that
//! turns `duet-cluster`'s verdicts into VRRP vetoes.
//!
//! Sockets are read by small tasks that forward datagrams to the control loop; everything that
//! decides lives in the pure `duet_cluster` types this module owns, driven by the control
//! loop's clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duet_cluster::liveness::LivenessEvent;
use duet_cluster::member::{Event, Member, MemberConfig};
use duet_cluster::quorum::{Local, TwoNodePolicy, Verdict};
use duet_cluster::wire::{self, InstanceReport, Key};
use duet_config::{CoordinationConfig, HeartbeatConfig, WitnessConfig};
use duet_time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::input::Inbox;

pub use duet_cluster::member::Via;

/// The cluster state the control loop owns: the pure [`Member`] and its sockets.
pub struct Cluster {
    member: Member,
    cfg: HeartbeatConfig,
    witness: Option<WitnessConfig>,
    key: Key,
    witness_key: Key,
    links: Vec<Arc<UdpSocket>>,
    witness_socket: Option<Arc<UdpSocket>>,
    /// The etcd client task and its endpoints, with `[coordination]`.
    etcd: Option<(mpsc::UnboundedSender<super::etcd::Request>, String)>,
    drops: BTreeMap<&'static str, u64>,
    /// Each instance's veto as last applied, for logging changes.
    vetoes: BTreeMap<String, Option<String>>,
    /// The event stream.
    events: Arc<duet_admin::Events>,
    /// This node held a valid lease when the timers last ran.
    lease_held: bool,
    /// This node's cluster-wide config (`duet_config::drift`) and its hash.
    view: (String, u64),
    /// Per peer: whether its config agreed with this node's when last looked at.
    agreed: Vec<Option<bool>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.member.config().name)
            .finish()
    }
}

impl Cluster {
    /// Binds the link sockets (and the witness client socket) and starts their readers. Must
    /// run inside the control runtime.
    pub fn start(
        node: &str,
        cfg: &HeartbeatConfig,
        witness: Option<&WitnessConfig>,
        coordination: Option<&CoordinationConfig>,
        vip_lifetime: Duration,
        inbox: &Inbox,
        events: Arc<duet_admin::Events>,
    ) -> Result<Cluster, String> {
        let key = crate::witness::read_key(&cfg.key_file)?;
        let witness_key = match witness.and_then(|w| w.key_file.as_deref()) {
            Some(path) => crate::witness::read_key(path)?,
            None => key.clone(),
        };
        let mut links = Vec::new();
        for (n, l) in cfg.links.iter().enumerate() {
            let s =
                bind_udp(l.local).map_err(|e| format!("heartbeat link {n} on {}: {e}", l.local))?;
            let s = Arc::new(s);
            tokio::spawn(super::ingress::read_cluster(
                s.clone(),
                Via::Link(n),
                inbox.clone(),
            ));
            links.push(s);
        }
        let witness_socket = match witness {
            Some(_) => {
                // From the business link's address, so the witness sees the node where clients do.
                let local = SocketAddr::new(cfg.links[0].local.ip(), 0);
                let s = Arc::new(
                    bind_udp(local).map_err(|e| format!("witness client on {local}: {e}"))?,
                );
                tokio::spawn(super::ingress::read_cluster(
                    s.clone(),
                    Via::Witness,
                    inbox.clone(),
                ));
                Some(s)
            }
            None => None,
        };
        // A peer's key is its address on the first link.
        let peers: Vec<String> = cfg.links[0]
            .peers
            .iter()
            .map(|p| p.ip().to_string())
            .collect();
        tracing::info!(
            "heartbeat: {} link(s), {} peer(s), every {} (dead after {} misses){}",
            cfg.links.len(),
            peers.len(),
            duet_time::format_duration(cfg.interval.0),
            cfg.misses,
            witness.map_or(String::new(), |w| format!(
                ", witness {} (lease {})",
                w.address,
                duet_time::format_duration(w.lease.0)
            ))
        );
        let etcd = match coordination {
            Some(c) => {
                tracing::info!(
                    "coordination: etcd at {} (key {}/leader, lease {})",
                    c.endpoints.join(", "),
                    c.prefix,
                    duet_time::format_duration(c.lease.0)
                );
                Some((
                    super::etcd::start(node, c, inbox.clone())?,
                    c.endpoints.join(","),
                ))
            }
            None => None,
        };
        let member = Member::new(
            MemberConfig {
                name: node.to_string(),
                peers,
                links: cfg.links.len(),
                interval: cfg.interval.0,
                misses: cfg.misses,
                lease: witness
                    .map(|w| w.lease.0)
                    .or(coordination.map(|c| c.lease.0)),
                lease_decides: coordination.is_some(),
                vip_lifetime,
                policy: match cfg.two_node_policy {
                    duet_config::TwoNodePolicy::Safe => TwoNodePolicy::Safe,
                    duet_config::TwoNodePolicy::Available => TwoNodePolicy::Available,
                },
                clock_window_ms: crate::witness::CLOCK_WINDOW_MS,
            },
            duet_sys::process::random_u64().map_err(|e| format!("random: {e}"))?,
        );
        Ok(Cluster {
            member,
            cfg: cfg.clone(),
            witness: witness.cloned(),
            key,
            witness_key,
            links,
            witness_socket,
            etcd,
            drops: BTreeMap::new(),
            vetoes: BTreeMap::new(),
            agreed: vec![None; cfg.links.first().map_or(0, |l| l.peers.len())],
            events,
            lease_held: false,
            view: (String::new(), 0),
        })
    }

    /// The earliest time [`Cluster::timers`] must run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.member.poll_timeout()
    }

    /// Runs the member's timers and sends what is due: heartbeats on every link, a lease
    /// request or release.
    pub fn timers(&mut self, now: Instant, reports: &[InstanceReport], business_up: bool) {
        self.member
            .tick(now, crate::witness::unix_ms(), reports, business_up);
        self.flush();
        let valid = self.lease_valid(now);
        if self.lease_held && !valid {
            self.events.emit(duet_admin::EventKind::Lease {
                state: "lost".into(),
                term: self.term(),
                detail: "no longer held".into(),
            });
        }
        self.lease_held = valid;
    }

    /// Says goodbye on every link, once the VIPs are gone: peers count this node gone at once
    /// (and the witness or etcd learns that the lease is free).
    pub fn goodbye(&mut self, now: Instant, reports: &[InstanceReport], business_up: bool) {
        self.member
            .goodbye(now, crate::witness::unix_ms(), reports, business_up);
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(t) = self.member.poll_transmit() {
            match t.via {
                Via::Link(n) => {
                    let bytes = wire::encode(&t.msg, &self.key);
                    for peer in &self.cfg.links[n].peers {
                        // Non-blocking; a full buffer or an unreachable peer is just a miss.
                        let _ = self.links[n].try_send_to(&bytes, *peer);
                    }
                }
                Via::Witness if self.etcd.is_some() => {
                    use super::etcd::Request;
                    let req = match t.msg.body {
                        wire::Body::LeaseRequest {
                            request,
                            duration_ms,
                        } => Request::Lease {
                            request,
                            duration: Duration::from_millis(u64::from(duration_ms)),
                        },
                        wire::Body::RecordWrite { record, .. } => Request::WriteRecord(record),
                        wire::Body::RecordQuery { .. } => Request::ReadRecord,
                        _ => continue,
                    };
                    if let Some((etcd, _)) = &self.etcd {
                        let _ = etcd.send(req);
                    }
                }
                Via::Witness => {
                    if let (Some(w), Some(s)) = (&self.witness, &self.witness_socket) {
                        let _ = s.try_send_to(&wire::encode(&t.msg, &self.witness_key), w.address);
                    }
                }
            }
        }
        self.log_events();
    }

    /// Handles a datagram that arrived on `via` from `from`. Returns the VRIDs a peer stopped
    /// serving (VRRP may take over after its skew time rather than the master-down interval).
    pub fn receive(&mut self, now: Instant, via: Via, from: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let key = if via == Via::Witness {
            &self.witness_key
        } else {
            &self.key
        };
        let msg = match wire::decode(bytes, key) {
            Ok(m) => m,
            Err(e) => {
                self.drop(e.label(), from);
                return Vec::new();
            }
        };
        let peer = match via {
            Via::Link(n) => self
                .cfg
                .links
                .get(n)
                .and_then(|l| l.peers.iter().position(|p| p.ip() == from.ip())),
            Via::Witness => None,
        };
        if let Err(reason) = self
            .member
            .receive(now, crate::witness::unix_ms(), via, peer, &msg)
        {
            self.drop(reason, from);
        }
        self.log_events();
        std::iter::from_fn(|| self.member.poll_stepped_down()).collect()
    }

    /// etcd answered. The record comes first: it was read in the same transaction as the
    /// lease, so a new lease never acts on an older record.
    pub fn etcd_answer(&mut self, now: Instant, answer: super::etcd::Answer) {
        use super::etcd::Answer;
        match answer {
            Answer::Granted {
                request,
                duration,
                term,
                record,
            } => {
                self.member.record_told(record);
                self.member.lease_granted(now, request, duration, term);
            }
            Answer::Refused {
                request,
                holder,
                term,
                record,
            } => {
                self.member.record_told(record);
                self.member
                    .lease_refused(now, request, term, super::etcd::RETRY, &holder);
            }
            Answer::Record(record) => self.member.record_told(record),
        }
        self.log_events();
    }

    fn drop(&mut self, reason: &'static str, from: SocketAddr) {
        let n = self.drops.entry(reason).or_default();
        *n += 1;
        // The first few of each kind are worth a line; the counter carries the rest.
        if *n <= 3 {
            tracing::warn!("cluster: dropped a message from {from}: {reason}");
        }
    }

    fn log_events(&mut self) {
        use duet_admin::EventKind;
        while let Some(e) = self.member.poll_event() {
            let e = match e {
                Event::Liveness(e) => e,
                Event::PeerNamed { peer, name } => {
                    let address = &self.member.config().peers[peer];
                    tracing::info!("heartbeat: peer {address} is {name:?}");
                    continue;
                }
                Event::VotingFor(peer) => {
                    tracing::info!("voting for {peer}");
                    continue;
                }
                Event::VotedBy(peer) => {
                    tracing::info!("{peer} votes for this node");
                    continue;
                }
                Event::LeaseGranted { term } => {
                    let by = if self.etcd.is_some() {
                        "etcd"
                    } else {
                        "the witness"
                    };
                    tracing::info!("lease granted by {by} (term {term})");
                    self.events.emit(EventKind::Lease {
                        state: "granted".into(),
                        term,
                        detail: format!("by {by}"),
                    });
                    continue;
                }
                Event::LeaseRefused { holder } => {
                    tracing::debug!("witness lease refused: held by {holder:?}");
                    continue;
                }
                Event::AuthorityProblem(Some(why)) => {
                    tracing::error!("cluster degraded: the witness cannot grant a lease: {why}");
                    self.events.emit(EventKind::Lease {
                        state: "degraded".into(),
                        term: self.term(),
                        detail: why,
                    });
                    continue;
                }
                Event::AuthorityProblem(None) => {
                    tracing::info!("the witness can grant leases again");
                    self.events.emit(EventKind::Lease {
                        state: "restored".into(),
                        term: self.term(),
                        detail: String::new(),
                    });
                    continue;
                }
                Event::Record(r) => {
                    let r = record_from_wire(&r);
                    tracing::info!("database record: {r}");
                    self.events.emit(EventKind::Database {
                        what: "record".into(),
                        detail: r.to_string(),
                    });
                    continue;
                }
            };
            let live = self.member.liveness();
            match e {
                LivenessEvent::LinkDown { peer, link } => {
                    let alive = live.peer(&peer).is_some_and(|p| p.alive());
                    let name = self.member.display_key(&peer);
                    if alive {
                        tracing::warn!(
                            "heartbeat link {link} to {name} is silent (another link still carries heartbeats)"
                        );
                    } else {
                        tracing::warn!("heartbeat link {link} to {name} is silent");
                    }
                    self.events.emit(EventKind::Link {
                        peer: name,
                        link,
                        up: false,
                    });
                }
                LivenessEvent::LinkUp { peer, link } => {
                    let name = self.member.display_key(&peer);
                    tracing::info!("heartbeat link {link} to {name} is up");
                    self.events.emit(EventKind::Link {
                        peer: name,
                        link,
                        up: true,
                    });
                }
                LivenessEvent::PeerDead { peer } => {
                    let name = self.member.display_key(&peer);
                    tracing::warn!("peer {name} is silent on every heartbeat link");
                    self.peer_event(name, "silent");
                }
                LivenessEvent::PeerLeft { peer } => {
                    let name = self.member.display_key(&peer);
                    tracing::info!("peer {name} stopped (it said goodbye)");
                    self.peer_event(name, "left");
                }
                LivenessEvent::PeerAlive { peer } => {
                    let name = self.member.display_key(&peer);
                    tracing::info!("peer {name} is heard");
                    self.peer_event(name, "heard");
                }
            }
        }
    }

    fn peer_event(&self, peer: String, state: &str) {
        self.events.emit(duet_admin::EventKind::Peer {
            peer,
            state: state.into(),
        });
    }

    /// The verdict for one instance.
    pub fn verdict(&self, now: Instant, local: Local) -> Verdict {
        self.member.verdict(now, local)
    }

    /// What this node's heartbeats say of maintenance from now on.
    pub fn set_maintenance(&mut self, m: Option<wire::Maintenance>) {
        self.member.set_maintenance(m);
    }

    /// A live peer's maintenance setting newer than `version`, if any.
    pub fn newer_maintenance(&self, version: u64) -> Option<wire::Maintenance> {
        self.member.newer_maintenance(version).cloned()
    }

    /// What this node's heartbeats say of its database from now on.
    pub fn set_database(&mut self, state: Option<wire::DbState>) {
        self.member.set_database(state);
    }

    /// Whether this node holds the lease now (its own conservative view).
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.member.lease().is_some_and(|l| l.valid(now))
    }

    /// The term held or last learned.
    pub fn term(&self) -> u64 {
        self.member.lease().map_or(0, |l| l.term())
    }

    /// The lease authority's database record, as last heard.
    pub fn record(&self) -> Option<&wire::DbRecord> {
        self.member.record()
    }

    /// Asks the lease authority to keep `record` (sent only while this node holds the lease).
    pub fn write_record(&mut self, now: Instant, record: wire::DbRecord) -> bool {
        let sent = self
            .member
            .write_record(now, crate::witness::unix_ms(), record);
        self.flush();
        sent
    }

    /// Asks the lease authority for the database record.
    pub fn query_record(&mut self) {
        self.member.query_record(crate::witness::unix_ms());
        self.flush();
    }

    /// The peers' databases, by node name (peers not yet heard are left out).
    pub fn peer_databases(&self) -> Vec<duet_dbfail::PeerDb> {
        let m = &self.member;
        (0..m.liveness().peers().len())
            .filter_map(|i| {
                Some(duet_dbfail::PeerDb {
                    name: m.name(i)?.to_string(),
                    alive: m.liveness().peers()[i].alive(),
                    report: m.peer_database(i).map(report_from_wire),
                })
            })
            .collect()
    }

    /// Whether `ip` is a cluster peer's address on one of the heartbeat links: only such a
    /// sender's VRRP adverts are obeyed while the heartbeat runs.
    pub fn is_peer_address(&self, ip: std::net::IpAddr) -> bool {
        self.cfg
            .links
            .iter()
            .flat_map(|l| &l.peers)
            .any(|p| p.ip() == ip)
    }

    /// Whether a peer heard now reports MASTER for `vrid`.
    pub fn peer_master(&self, vrid: u8) -> bool {
        self.member.peer_master(vrid)
    }

    /// Records the veto applied to `instance`, logging changes; returns it.
    pub fn note_veto(&mut self, instance: &str, verdict: &Verdict) -> Option<String> {
        let veto = match verdict {
            Verdict::Denied(why) => Some(why.clone()),
            _ => None,
        };
        let old = self.vetoes.insert(instance.to_string(), veto.clone());
        if old.as_ref() != Some(&veto) {
            match (&veto, verdict) {
                (Some(why), _) => tracing::warn!("{instance}: MASTER not allowed: {why}"),
                (None, Verdict::AllowedUnconfirmed) => tracing::warn!(
                    "{instance}: the peer is silent on every link; MASTER allowed without confirmation (two_node_policy = \"available\")"
                ),
                (None, _) if old.flatten().is_some() => {
                    tracing::info!("{instance}: MASTER allowed again")
                }
                _ => {}
            }
        }
        veto
    }

    /// This node's cluster-wide config, for the heartbeats (at start and after a reload).
    pub fn set_config(&mut self, cfg: &duet_config::Config) {
        let view = duet_config::drift::cluster_view(cfg);
        let hash = duet_config::drift::view_hash(&view);
        self.member.set_config(&view, hash);
        self.view = (view, hash);
    }

    /// Peers whose config now differs from this node's (false), or agrees again (true), since
    /// the last call. A peer that agrees from the first is not news.
    pub fn config_changes(&mut self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (i, was) in self.agreed.iter_mut().enumerate() {
            let Some(theirs) = self.member.peer_config(i).0 else {
                continue;
            };
            let same = theirs == self.view.1;
            if *was != Some(same) {
                if *was == Some(false) || !same {
                    let name = self.member.name(i).unwrap_or("?").to_string();
                    out.push((name, same));
                }
                *was = Some(same);
            }
        }
        out
    }

    /// For `GET /v1/config/cluster`.
    pub fn config_views(&self, node: &str) -> duet_admin::ConfigViews {
        duet_admin::ConfigViews {
            node: node.into(),
            hash: format!("{:016x}", self.view.1),
            view: self.view.0.clone(),
            peers: (0..self.agreed.len())
                .map(|i| {
                    let (hash, view) = self.member.peer_config(i);
                    duet_admin::PeerConfig {
                        name: self.member.name(i).unwrap_or_default().into(),
                        hash: hash.map(|h| format!("{h:016x}")),
                        view: view.map(|(_, v)| v.clone()),
                        view_hash: view.map(|(h, _)| format!("{h:016x}")),
                    }
                })
                .collect(),
        }
    }

    /// Whether every peer has let go of the services of instance `vrid`: a peer that is heard
    /// (or said goodbye) holds none of them, and a silent one is gone (this node became master
    /// only once the cluster's rules said so).
    pub fn peers_let_go(&self, vrid: u8) -> bool {
        self.member.liveness().peers().iter().all(|p| {
            let held = p
                .report
                .as_ref()
                .and_then(|r| r.services.iter().find(|(v, _)| *v == vrid))
                .map_or(0, |(_, h)| *h);
            held == 0 || !(p.alive() || p.left())
        })
    }

    /// What this node's heartbeats say it holds of each instance's services.
    pub fn set_services(&mut self, services: Vec<(u8, u8)>) {
        self.member.set_services(services);
    }

    /// For the status API.
    pub fn status(&self, now: Instant) -> duet_admin::ClusterStatus {
        let m = &self.member;
        duet_admin::ClusterStatus {
            peers: m
                .liveness()
                .peers()
                .iter()
                .enumerate()
                .map(|(i, p)| duet_admin::PeerStatus {
                    name: m.name(i).unwrap_or_default().to_string(),
                    address: p.name.clone(),
                    alive: p.alive(),
                    links: (0..self.cfg.links.len()).map(|n| p.link_up(n)).collect(),
                    rtt_us: (0..self.cfg.links.len())
                        .map(|n| p.rtt(n).map(|d| d.as_micros() as u64))
                        .collect(),
                    config_hash: m.peer_config(i).0.map(|h| format!("{h:016x}")),
                    config_differs: m.peer_config(i).0.is_some_and(|h| h != self.view.1),
                    term: p.term,
                })
                .collect(),
            lease: m.lease().map(|l| duet_admin::LeaseStatus {
                authority: if self.etcd.is_some() {
                    "etcd"
                } else {
                    "witness"
                }
                .into(),
                witness: match (&self.witness, &self.etcd) {
                    (Some(w), _) => w.address.to_string(),
                    (None, Some((_, endpoints))) => endpoints.clone(),
                    (None, None) => String::new(),
                },
                valid: l.valid(now),
                valid_for_ms: l
                    .valid_until()
                    .map_or(0, |t| t.saturating_since(now).as_millis() as u64),
                term: l.term(),
                problem: m.authority_problem().map(str::to_string),
            }),
            dropped: self
                .drops
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            config_hash: format!("{:016x}", self.view.1),
        }
    }
}

/// The record as the wire carries it.
pub fn record_to_wire(r: &duet_dbfail::Record) -> wire::DbRecord {
    wire::DbRecord {
        system_id: r.system_id,
        primary: r.primary.clone(),
        standby: r.standby.clone().unwrap_or_default(),
        term: r.term,
    }
}

/// The record as the planner reads it.
pub fn record_from_wire(r: &wire::DbRecord) -> duet_dbfail::Record {
    duet_dbfail::Record {
        system_id: r.system_id,
        primary: r.primary.clone(),
        standby: (!r.standby.is_empty()).then(|| r.standby.clone()),
        term: r.term,
    }
}

/// A peer's heartbeat entry as the planner reads it.
pub fn report_from_wire(d: &wire::DbState) -> duet_dbfail::Report {
    duet_dbfail::Report {
        role: duet_dbfail::Role::from_code(d.role).unwrap_or_default(),
        listen: d.listen,
        system_id: d.system_id,
        timeline: d.timeline,
        lsn: d.lsn,
        clean_stop: d.clean_stop,
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // The link address may come up after duet starts.
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}
