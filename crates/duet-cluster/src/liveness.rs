//! Which peers are alive, link by link.
//!
//! A peer is alive on a link while authenticated heartbeats arrive on it: silence for
//! `interval × misses` marks that link down for that peer. The peer counts as dead only when
//! every link is down. Losing one link while another carries heartbeats is a warning, never a
//! failover.

use std::collections::VecDeque;
use std::time::Duration;

use duet_time::Instant;

use crate::wire::Heartbeat;

/// A change worth a log line, a metric and an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessEvent {
    /// Heartbeats from `peer` arrive on `link` again (or for the first time).
    LinkUp {
        /// Peer name.
        peer: String,
        /// Link index.
        link: usize,
    },
    /// No heartbeat from `peer` on `link` for `interval × misses`.
    LinkDown {
        /// Peer name.
        peer: String,
        /// Link index.
        link: usize,
    },
    /// Every link of `peer` is silent.
    PeerDead {
        /// Peer name.
        peer: String,
    },
    /// `peer` said goodbye: it stops, and counts as gone on every link at once.
    PeerLeft {
        /// Peer name.
        peer: String,
    },
    /// `peer` is heard again after being dead (or for the first time).
    PeerAlive {
        /// Peer name.
        peer: String,
    },
}

/// What is known of one peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its key (e.g. its address on the first link).
    pub name: String,
    /// How logs and verdicts name it (its node name once known; the key until then).
    pub display: String,
    /// Per link: when a heartbeat last arrived.
    last_heard: Vec<Option<Instant>>,
    /// Per link: whether it counts as up.
    link_up: Vec<bool>,
    /// Per link: the smoothed heartbeat round trip while the link is up.
    rtt: Vec<Option<Duration>>,
    /// Whether any link is up.
    alive: bool,
    /// It said goodbye and has not been heard since.
    left: bool,
    /// The latest heartbeat, on any link.
    pub report: Option<Heartbeat>,
    /// The peer's term in its latest message.
    pub term: u64,
}

impl Peer {
    /// Whether heartbeats arrive on `link`.
    pub fn link_up(&self, link: usize) -> bool {
        self.link_up.get(link).copied().unwrap_or(false)
    }

    /// The heartbeat round trip on `link` (smoothed like TCP's: 7/8 old + 1/8 new), once one
    /// was timed since the link came up.
    pub fn rtt(&self, link: usize) -> Option<Duration> {
        self.rtt.get(link).copied().flatten()
    }

    /// Whether any link carries heartbeats.
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// Whether it said goodbye (it stopped cleanly, without VIPs) and has not been heard since.
    pub fn left(&self) -> bool {
        self.left
    }
}

/// Liveness of every peer over every link.
#[derive(Debug, Clone)]
pub struct Liveness {
    dead_after: Duration,
    peers: Vec<Peer>,
    events: VecDeque<LivenessEvent>,
}

impl Liveness {
    /// `links` links; `peers` by name; dead after `interval × misses` of silence.
    pub fn new(links: usize, peers: &[String], interval: Duration, misses: u32) -> Liveness {
        Liveness {
            dead_after: interval * misses.max(1),
            peers: peers
                .iter()
                .map(|name| Peer {
                    name: name.clone(),
                    display: name.clone(),
                    last_heard: vec![None; links],
                    link_up: vec![false; links],
                    rtt: vec![None; links],
                    alive: false,
                    left: false,
                    report: None,
                    term: 0,
                })
                .collect(),
            events: VecDeque::new(),
        }
    }

    /// Records an authenticated heartbeat from `peer` that arrived on `link`. Unknown peers and
    /// links are ignored (the caller counts them).
    pub fn heard(
        &mut self,
        now: Instant,
        peer: &str,
        link: usize,
        term: u64,
        hb: &Heartbeat,
    ) -> bool {
        let Some(p) = self.peers.iter_mut().find(|p| p.name == peer) else {
            return false;
        };
        let Some(slot) = p.last_heard.get_mut(link) else {
            return false;
        };
        p.report = Some(hb.clone());
        p.term = p.term.max(term);
        if hb.leaving {
            p.last_heard.iter_mut().for_each(|t| *t = None);
            p.link_up.iter_mut().for_each(|u| *u = false);
            p.alive = false;
            if !p.left {
                p.left = true;
                self.events.push_back(LivenessEvent::PeerLeft {
                    peer: peer.to_string(),
                });
            }
            return true;
        }
        p.left = false;
        *slot = Some(now);
        if !p.link_up[link] {
            p.link_up[link] = true;
            self.events.push_back(LivenessEvent::LinkUp {
                peer: peer.to_string(),
                link,
            });
        }
        if !p.alive {
            p.alive = true;
            self.events.push_back(LivenessEvent::PeerAlive {
                peer: peer.to_string(),
            });
        }
        true
    }

    /// Takes in one round-trip sample of `peer`'s heartbeats on `link` (an up link only).
    pub fn timed(&mut self, peer: &str, link: usize, sample: Duration) {
        let Some(p) = self.peers.iter_mut().find(|p| p.name == peer) else {
            return;
        };
        if let (Some(true), Some(rtt)) = (p.link_up.get(link), p.rtt.get_mut(link)) {
            *rtt = Some(rtt.map_or(sample, |old| (old * 7 + sample) / 8));
        }
    }

    /// Marks links silent for too long as down, and peers with every link down as dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        for p in &mut self.peers {
            for link in 0..p.last_heard.len() {
                let stale =
                    p.last_heard[link].is_none_or(|t| now.saturating_since(t) >= self.dead_after);
                if p.link_up[link] && stale {
                    p.link_up[link] = false;
                    p.rtt[link] = None;
                    self.events.push_back(LivenessEvent::LinkDown {
                        peer: p.name.clone(),
                        link,
                    });
                }
            }
            if p.alive && !p.link_up.iter().any(|&u| u) {
                p.alive = false;
                self.events.push_back(LivenessEvent::PeerDead {
                    peer: p.name.clone(),
                });
            }
        }
    }

    /// When [`Liveness::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flat_map(|p| {
                p.last_heard
                    .iter()
                    .zip(&p.link_up)
                    .filter(|(_, up)| **up)
                    .filter_map(|(t, _)| t.map(|t| t + self.dead_after))
            })
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LivenessEvent> {
        self.events.pop_front()
    }

    /// Every peer.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Names peer `key` `display` in logs and verdicts.
    pub fn set_display(&mut self, key: &str, display: &str) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.name == key) {
            p.display = display.to_string();
        }
    }

    /// One peer by name.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn drain(l: &mut Liveness) -> Vec<LivenessEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    #[test]
    fn one_silent_link_is_a_warning_all_silent_is_death() {
        let mut l = Liveness::new(2, &["beta".to_string()], Duration::from_millis(50), 5);
        let hb = Heartbeat::default();
        l.heard(ms(0), "beta", 0, 1, &hb);
        l.heard(ms(0), "beta", 1, 1, &hb);
        assert_eq!(drain(&mut l).len(), 3); // link 0 up, alive, link 1 up
        assert_eq!(l.poll_timeout(), Some(ms(250)));
        // Link 1 keeps talking, link 0 goes quiet.
        for t in (50..=300).step_by(50) {
            l.heard(ms(t), "beta", 1, 1, &hb);
        }
        l.handle_timeout(ms(300));
        assert_eq!(
            drain(&mut l),
            [LivenessEvent::LinkDown {
                peer: "beta".into(),
                link: 0
            }]
        );
        assert!(l.peer("beta").unwrap().alive());
        // 249 ms after its last heartbeat the second link still counts.
        l.handle_timeout(ms(549));
        assert!(drain(&mut l).is_empty());
        l.handle_timeout(ms(550));
        assert_eq!(
            drain(&mut l),
            [
                LivenessEvent::LinkDown {
                    peer: "beta".into(),
                    link: 1
                },
                LivenessEvent::PeerDead {
                    peer: "beta".into()
                }
            ]
        );
        assert_eq!(l.poll_timeout(), None);
        l.heard(ms(600), "beta", 0, 2, &hb);
        assert_eq!(drain(&mut l).len(), 2);
        assert_eq!(l.peer("beta").unwrap().term, 2);
        assert!(
            !l.heard(ms(600), "gamma", 0, 1, &hb),
            "unknown peers are not recorded"
        );
        assert!(
            !l.heard(ms(600), "beta", 5, 1, &hb),
            "unknown links are not recorded"
        );
    }
}
