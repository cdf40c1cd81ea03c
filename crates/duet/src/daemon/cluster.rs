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

use duet_cluster::lease::LeaseClient;
use duet_cluster::liveness::{Liveness, LivenessEvent};
use duet_cluster::quorum::{self, Ballot, Local, Rules, TwoNodePolicy, Verdict};
use duet_cluster::votes::{Votes, may_grant};
use duet_cluster::wire::{self, Body, Grant, Heartbeat, InstanceReport, Key, Message, ReplayGuard};
use duet_config::{HeartbeatConfig, WitnessConfig};
use duet_time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::control::Input;

/// Which socket a datagram came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Heartbeat link `n`.
    Link(usize),
    /// The witness client socket.
    Witness,
}

/// The cluster state the control loop owns.
pub struct Cluster {
    node: String,
    cfg: HeartbeatConfig,
    witness: Option<WitnessConfig>,
    key: Key,
    witness_key: Key,
    links: Vec<Arc<UdpSocket>>,
    witness_socket: Option<Arc<UdpSocket>>,
    liveness: Liveness,
    lease: Option<LeaseClient>,
    /// Votes given and received (node-level: every instance of a node follows one decision).
    votes: Votes,
    /// `node.vip_lifetime`: votes and leases count only while they outlast it.
    vip_lifetime: Duration,
    /// Replay guards: one per link (a heartbeat names its link, so a message captured on one
    /// link and replayed on another is refused), one for the witness.
    guards: Vec<ReplayGuard>,
    witness_guard: ReplayGuard,
    rules: Rules,
    /// Peer *i*'s name, learned from its first authenticated message.
    names: Vec<Option<String>>,
    boot: u64,
    seq: u64,
    next_beat: Instant,
    drops: BTreeMap<&'static str, u64>,
    /// Each instance's veto as last applied, for logging changes.
    vetoes: BTreeMap<String, Option<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// Liveness key of peer `i`: its address on the first link.
fn label(cfg: &HeartbeatConfig, i: usize) -> String {
    cfg.links[0].peers[i].ip().to_string()
}

impl Cluster {
    /// Binds the link sockets (and the witness client socket) and starts their readers. Must
    /// run inside the control runtime.
    pub fn start(
        node: &str,
        cfg: &HeartbeatConfig,
        witness: Option<&WitnessConfig>,
        vip_lifetime: Duration,
        tx: &mpsc::UnboundedSender<Input>,
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
            tokio::spawn(read_loop(s.clone(), Via::Link(n), tx.clone()));
            links.push(s);
        }
        let witness_socket = match witness {
            Some(_) => {
                // From the business link's address, so the witness sees the node where clients do.
                let local = SocketAddr::new(cfg.links[0].local.ip(), 0);
                let s = Arc::new(
                    bind_udp(local).map_err(|e| format!("witness client on {local}: {e}"))?,
                );
                tokio::spawn(read_loop(s.clone(), Via::Witness, tx.clone()));
                Some(s)
            }
            None => None,
        };
        let peers = cfg.links[0].peers.len();
        let labels: Vec<String> = (0..peers).map(|i| label(cfg, i)).collect();
        let liveness = Liveness::new(cfg.links.len(), &labels, cfg.interval.0, cfg.misses);
        let lease = witness.map(|w| {
            // The node ends its lease a little before its own count: covers clock-rate drift.
            LeaseClient::new(w.lease.0, (w.lease.0 / 20).max(Duration::from_millis(20)))
        });
        let rules = Rules {
            nodes: peers + 1,
            witness: witness.is_some(),
            policy: match cfg.two_node_policy {
                duet_config::TwoNodePolicy::Safe => TwoNodePolicy::Safe,
                duet_config::TwoNodePolicy::Available => TwoNodePolicy::Available,
            },
        };
        tracing::info!(
            "heartbeat: {} link(s), {} peer(s), every {} (dead after {} misses){}",
            cfg.links.len(),
            peers,
            duet_time::format_duration(cfg.interval.0),
            cfg.misses,
            witness.map_or(String::new(), |w| format!(
                ", witness {} (lease {})",
                w.address,
                duet_time::format_duration(w.lease.0)
            ))
        );
        Ok(Cluster {
            node: node.to_string(),
            cfg: cfg.clone(),
            witness: witness.cloned(),
            key,
            witness_key,
            links,
            witness_socket,
            liveness,
            lease,
            votes: {
                // As long as the witness lease, or twice the VIP lifetime (at least 2 s):
                // always longer than a frozen or killed node's VIP lives.
                let d = witness.map_or((vip_lifetime * 2).max(Duration::from_secs(2)), |w| {
                    w.lease.0
                });
                Votes::new(peers, d, (d / 20).max(Duration::from_millis(20)))
            },
            vip_lifetime,
            guards: vec![ReplayGuard::new(crate::witness::CLOCK_WINDOW_MS); cfg.links.len()],
            witness_guard: ReplayGuard::new(crate::witness::CLOCK_WINDOW_MS),
            rules,
            names: vec![None; peers],
            boot: duet_sys::process::random_u64().map_err(|e| format!("random: {e}"))?,
            seq: 0,
            next_beat: Instant::ZERO,
            drops: BTreeMap::new(),
            vetoes: BTreeMap::new(),
        })
    }

    /// The earliest time [`Cluster::timers`] must run.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            Some(self.next_beat),
            self.liveness.poll_timeout(),
            self.lease.as_ref().and_then(LeaseClient::poll_timeout),
            self.votes.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn message(&mut self, term: u64, body: Body) -> Message {
        self.seq += 1;
        Message {
            sender: self.node.clone(),
            boot: self.boot,
            seq: self.seq,
            sent_ms: crate::witness::unix_ms(),
            term,
            body,
        }
    }

    /// Sends what is due: heartbeats on every link, a lease request.
    pub fn timers(&mut self, now: Instant, reports: &[InstanceReport], business_up: bool) {
        self.liveness.handle_timeout(now);
        self.votes.handle_timeout(now);
        if let Some(l) = &mut self.lease {
            l.handle_timeout(now);
        }
        self.votes
            .expire_asks(now, self.cfg.interval.0 * self.cfg.misses);
        self.log_events();
        let term = self.lease.as_ref().map_or(0, LeaseClient::term);
        let master = reports.iter().any(|r| r.master);
        let wants = reports.iter().any(|r| r.wants);
        let promised = self.votes.promised_to(now).is_some();
        let asking = (master || wants) && !promised;
        if !asking {
            self.votes.stop_asking();
        }
        // A node that promised its vote cannot act on its wish: it does not announce it, so a
        // master does not yield to it.
        let owned: Vec<InstanceReport>;
        let reports = if promised && wants {
            owned = reports
                .iter()
                .map(|r| InstanceReport { wants: false, ..*r })
                .collect();
            &owned[..]
        } else {
            reports
        };
        if now >= self.next_beat {
            self.next_beat = now + self.cfg.interval.0;
            let grant = self.decide_grant(now, reports, master, wants);
            for n in 0..self.links.len() {
                let ask = if asking { self.seq + 1 } else { 0 };
                if asking {
                    self.votes.asked(ask, now);
                }
                let hb = Heartbeat {
                    link: n as u8,
                    business_up,
                    instances: reports.to_vec(),
                    ask,
                    grant: grant.clone(),
                };
                let msg = self.message(term, Body::Heartbeat(hb));
                let bytes = wire::encode(&msg, &self.key);
                for peer in &self.cfg.links[n].peers {
                    // Non-blocking; a full buffer or an unreachable peer is just a miss.
                    let _ = self.links[n].try_send_to(&bytes, *peer);
                }
            }
        }
        if let (Some(lease), Some(w), Some(s)) =
            (&mut self.lease, &self.witness, &self.witness_socket)
            && let Some(r) = lease.poll_request(now)
        {
            let address = w.address;
            let socket = s.clone();
            let msg = self.message(
                r.term,
                Body::LeaseRequest {
                    request: r.request,
                    duration_ms: r.duration.as_millis() as u32,
                },
            );
            let _ = socket.try_send_to(&wire::encode(&msg, &self.witness_key), address);
        }
    }

    /// This node's vote for this beat: to the best-ranked asking peer, if it may vote.
    fn decide_grant(
        &mut self,
        now: Instant,
        reports: &[InstanceReport],
        master: bool,
        wants: bool,
    ) -> Option<Grant> {
        let mine = reports.iter().map(|r| r.priority).max().unwrap_or(0);
        let promised = self.votes.promised_to(now);
        let rank = |i: usize| -> (u8, String) {
            let p = &self.liveness.peers()[i];
            let prio = p
                .report
                .as_ref()
                .and_then(|r| r.instances.iter().map(|x| x.priority).max())
                .unwrap_or(0);
            (prio, p.display.clone())
        };
        let best = (0..self.names.len())
            .filter(|&i| self.votes.ask_of(i).is_some())
            .max_by_key(|&i| rank(i))?;
        let outranks = rank(best) > (mine, self.node.clone());
        if !may_grant(master, wants, outranks, promised, best) {
            return None;
        }
        let ask = self.votes.ask_of(best)?;
        if self.votes.promised_to(now).is_none() {
            tracing::info!("voting for {}", self.names[best].as_deref().unwrap_or("?"));
        }
        self.votes.promise(best, now);
        Some(Grant {
            to: self.names[best].clone()?,
            ask,
            duration_ms: self.votes.duration().as_millis() as u32,
        })
    }

    /// Sends one heartbeat on every link now, e.g. the last one before exiting, so peers learn
    /// at once that this node no longer serves.
    pub fn beat_now(&mut self, now: Instant, reports: &[InstanceReport], business_up: bool) {
        self.next_beat = now;
        self.timers(now, reports, business_up);
    }

    /// Handles a datagram that arrived on `via` from `from`.
    pub fn receive(&mut self, now: Instant, via: Via, from: SocketAddr, bytes: &[u8]) {
        let key = if via == Via::Witness {
            &self.witness_key
        } else {
            &self.key
        };
        let msg = match wire::decode(bytes, key) {
            Ok(m) => m,
            Err(e) => return self.drop(e.label(), from),
        };
        let guard = match via {
            Via::Link(n) => &mut self.guards[n],
            Via::Witness => &mut self.witness_guard,
        };
        if let Err(e) = guard.admit(&msg, crate::witness::unix_ms()) {
            return self.drop(e.label(), from);
        }
        match (via, &msg.body) {
            (Via::Link(n), Body::Heartbeat(hb)) => {
                if usize::from(hb.link) != n {
                    return self.drop("link", from);
                }
                let Some(i) = self.cfg.links[n]
                    .peers
                    .iter()
                    .position(|p| p.ip() == from.ip())
                else {
                    return self.drop("peer", from);
                };
                match &self.names[i] {
                    Some(name) if *name != msg.sender => return self.drop("peer", from),
                    Some(_) => {}
                    None => {
                        tracing::info!(
                            "heartbeat: peer {} is {:?}",
                            label(&self.cfg, i),
                            msg.sender
                        );
                        self.names[i] = Some(msg.sender.clone());
                        self.liveness.set_display(&label(&self.cfg, i), &msg.sender);
                    }
                }
                let l = label(&self.cfg, i);
                self.liveness.heard(now, &l, n, msg.term, hb);
                let had = self.votes.count(now);
                if self.votes.heard(i, now, hb, &self.node) {
                    // A new ask: answer with the next pass rather than a whole interval later.
                    self.next_beat = now;
                }
                if had == 0 && self.votes.count(now) > 0 {
                    tracing::info!("{} votes for this node", msg.sender);
                }
                if let Some(lease) = &mut self.lease {
                    lease.observe_term(msg.term);
                }
                self.log_events();
            }
            (
                Via::Witness,
                Body::LeaseGranted {
                    request,
                    duration_ms,
                },
            ) => {
                if let Some(lease) = &mut self.lease {
                    let was = lease.valid(now);
                    lease.granted(
                        *request,
                        Duration::from_millis(u64::from(*duration_ms)),
                        msg.term,
                    );
                    if !was && lease.valid(now) {
                        tracing::info!("witness lease granted (term {})", msg.term);
                    }
                }
            }
            (
                Via::Witness,
                Body::LeaseRefused {
                    request,
                    holder,
                    remaining_ms,
                },
            ) => {
                if let Some(lease) = &mut self.lease {
                    tracing::debug!("witness lease refused: held by {holder:?}");
                    lease.refused(
                        now,
                        *request,
                        msg.term,
                        Duration::from_millis(u64::from(*remaining_ms)),
                    );
                }
            }
            _ => self.drop("unexpected", from),
        }
    }

    fn drop(&mut self, reason: &'static str, from: SocketAddr) {
        let n = self.drops.entry(reason).or_default();
        *n += 1;
        // The first few of each kind are worth a line; the counter carries the rest.
        if *n <= 3 {
            tracing::warn!("cluster: dropped a message from {from}: {reason}");
        }
    }

    fn peer_name(&self, l: &str) -> String {
        (0..self.names.len())
            .find(|&i| label(&self.cfg, i) == l)
            .and_then(|i| self.names[i].clone())
            .unwrap_or_else(|| l.to_string())
    }

    fn log_events(&mut self) {
        while let Some(e) = self.liveness.poll_event() {
            match e {
                LivenessEvent::LinkDown { peer, link } => {
                    let alive = self.liveness.peer(&peer).is_some_and(|p| p.alive());
                    let name = self.peer_name(&peer);
                    if alive {
                        tracing::warn!(
                            "heartbeat link {link} to {name} is silent (another link still carries heartbeats)"
                        );
                    } else {
                        tracing::warn!("heartbeat link {link} to {name} is silent");
                    }
                }
                LivenessEvent::LinkUp { peer, link } => {
                    tracing::info!("heartbeat link {link} to {} is up", self.peer_name(&peer));
                }
                LivenessEvent::PeerDead { peer } => {
                    tracing::warn!(
                        "peer {} is silent on every heartbeat link",
                        self.peer_name(&peer)
                    );
                }
                LivenessEvent::PeerAlive { peer } => {
                    tracing::info!("peer {} is heard", self.peer_name(&peer));
                }
            }
        }
    }

    /// The verdict for one instance. A vote or lease counts only while it outlasts the VIP's
    /// kernel lifetime: if this node died now, its VIP would be gone before the promise ends.
    pub fn verdict(&mut self, now: Instant, local: Local) -> Verdict {
        let horizon = now + self.vip_lifetime;
        let lease_valid = self.lease.as_ref().is_some_and(|l| l.valid(horizon));
        let ballot = Ballot {
            peer_votes: self.votes.count(horizon),
            promised_to: self
                .votes
                .promised_to(now)
                .map(|i| self.names[i].clone().unwrap_or_else(|| label(&self.cfg, i))),
            voted_for: self.votes.last_given().is_some(),
        };
        quorum::verdict(
            self.rules,
            &self.liveness,
            &self.node,
            Local {
                lease_valid,
                ..local
            },
            &ballot,
        )
    }

    /// Whether a peer heard now reports MASTER for `vrid`.
    pub fn peer_master(&self, vrid: u8) -> bool {
        self.liveness.peers().iter().any(|p| {
            p.alive()
                && p.report
                    .as_ref()
                    .is_some_and(|r| r.instances.iter().any(|i| i.vrid == vrid && i.master))
        })
    }

    /// Tells the lease client whether any instance wants to be MASTER (a node that promised
    /// its vote does not seek the lease).
    pub fn want_lease(&mut self, now: Instant, wanted: bool) {
        let wanted = wanted && self.votes.promised_to(now).is_none();
        if let Some(l) = &mut self.lease {
            l.set_wanted(now, wanted);
        }
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

    /// For the status API.
    pub fn status(&self, now: Instant) -> duet_admin::ClusterStatus {
        duet_admin::ClusterStatus {
            peers: self
                .liveness
                .peers()
                .iter()
                .enumerate()
                .map(|(i, p)| duet_admin::PeerStatus {
                    name: self.names[i].clone().unwrap_or_default(),
                    address: p.name.clone(),
                    alive: p.alive(),
                    links: (0..self.cfg.links.len()).map(|n| p.link_up(n)).collect(),
                    term: p.term,
                })
                .collect(),
            lease: self.lease.as_ref().map(|l| duet_admin::LeaseStatus {
                witness: self
                    .witness
                    .as_ref()
                    .map(|w| w.address.to_string())
                    .unwrap_or_default(),
                valid: l.valid(now),
                valid_for_ms: l
                    .valid_until()
                    .map_or(0, |t| t.saturating_since(now).as_millis() as u64),
                term: l.term(),
            }),
            dropped: self
                .drops
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
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

async fn read_loop(socket: Arc<UdpSocket>, via: Via, tx: mpsc::UnboundedSender<Input>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let input = Input::Cluster {
                    via,
                    from,
                    bytes: buf[..n].to_vec(),
                };
                if tx.send(input).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!("cluster socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
