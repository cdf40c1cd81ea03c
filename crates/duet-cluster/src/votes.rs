//! Votes between peers: time-bounded promises carried in heartbeats.
//!
//! A node that is, or wants to become, MASTER *asks* in each heartbeat (the ask's id is that
//! heartbeat's sequence number). A peer that may vote for it *grants* in its own heartbeat,
//! echoing the ask id, and thereby *promises* not to become MASTER itself (nor to seek the
//! witness lease) for `duration` from the moment it sent the grant. The asker counts the
//! promise from the moment it sent the ask, minus a margin — earlier than the voter's count,
//! whatever the delays — so the asker always believes the promise ends before the voter does.
//!
//! MASTER needs a majority of the voters: this node, its peers, and the witness when there is
//! one. So two nodes cannot both count a majority at the same time, and a node that promised
//! its vote cannot take over before every node counting on it has stopped doing so.

use std::collections::VecDeque;
use std::time::Duration;

use duet_time::Instant;

use crate::wire::Heartbeat;

/// Asks remembered (their send times), enough for the grants in flight.
const REMEMBERED_ASKS: usize = 64;

/// Promises given and received.
#[derive(Debug, Clone)]
pub struct Votes {
    duration: Duration,
    margin: Duration,
    asks: VecDeque<(u64, Instant)>,
    /// Per peer: its promise to us is valid until (our conservative view).
    received: Vec<Option<Instant>>,
    /// Our promise: to which peer, until when (our clock).
    given: Option<(usize, Instant)>,
    /// The peer we last voted for, until it is heard neither serving nor wanting to: it may
    /// be serving even after the promise ends.
    last_given: Option<usize>,
    /// Per peer: its latest ask (id) and when it arrived.
    asks_heard: Vec<Option<(u64, Instant)>>,
}

impl Votes {
    /// Votes among `peers` peers; promises last `duration`, counted `margin` short by askers.
    pub fn new(peers: usize, duration: Duration, margin: Duration) -> Votes {
        Votes {
            duration,
            margin,
            asks: VecDeque::new(),
            received: vec![None; peers],
            given: None,
            last_given: None,
            asks_heard: vec![None; peers],
        }
    }

    /// How long a promise lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// We sent an ask with id `id` at `now`.
    pub fn asked(&mut self, id: u64, now: Instant) {
        if self.asks.len() == REMEMBERED_ASKS {
            self.asks.pop_front();
        }
        self.asks.push_back((id, now));
    }

    /// Peer `peer` granted our ask `id` for `duration`.
    pub fn granted(&mut self, peer: usize, id: u64, duration: Duration) {
        let Some(&(_, sent)) = self.asks.iter().find(|(a, _)| *a == id) else {
            return;
        };
        let Some(slot) = self.received.get_mut(peer) else {
            return;
        };
        let until = sent + duration.min(self.duration).saturating_sub(self.margin);
        *slot = Some(slot.map_or(until, |t| t.max(until)));
    }

    /// Forgets promises that ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in &mut self.received {
            if slot.is_some_and(|t| t <= now) {
                *slot = None;
            }
        }
        if self.given.is_some_and(|(_, t)| t <= now) {
            self.given = None;
        }
    }

    /// When a promise ends next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.received
            .iter()
            .flatten()
            .copied()
            .chain(self.given.map(|(_, t)| t))
            .min()
    }

    /// Peers whose promise to us holds now.
    pub fn count(&self, now: Instant) -> usize {
        self.received
            .iter()
            .filter(|t| t.is_some_and(|t| now < t))
            .count()
    }

    /// We stopped asking (not MASTER, not wanting to be): forget every promise received and
    /// every ask sent, so that a grant still in flight counts for nothing. Peers may then
    /// release their promises as soon as they hear that we no longer ask.
    pub fn stop_asking(&mut self) {
        self.received.iter_mut().for_each(|s| *s = None);
        self.asks.clear();
    }

    /// Peer `peer` no longer asks (and is neither MASTER nor wanting to be): it has forgotten
    /// our promise, so we are free at once.
    pub fn release(&mut self, peer: usize) {
        if self.given.is_some_and(|(p, _)| p == peer) {
            self.given = None;
        }
    }

    /// The peer we promised our vote to, while the promise holds.
    pub fn promised_to(&self, now: Instant) -> Option<usize> {
        self.given.filter(|(_, t)| now < *t).map(|(p, _)| p)
    }

    /// Records that we grant `peer` our vote now (in the heartbeat being sent).
    pub fn promise(&mut self, peer: usize, now: Instant) {
        self.given = Some((peer, now + self.duration));
        self.last_given = Some(peer);
    }

    /// Takes in what a heartbeat from `peer` says about votes: whether it serves or asks, and
    /// a grant addressed to `me`. Returns whether to answer at once (a new ask this node may
    /// vote for, rather than a whole interval later).
    pub fn heard(&mut self, peer: usize, now: Instant, hb: &Heartbeat, me: &str) -> bool {
        if !hb.instances.iter().any(|r| r.master || r.wants) {
            // Released first: a peer that no longer asks and is idle is not serving either.
            if hb.ask == 0 {
                self.release(peer);
            }
            self.peer_idle(peer);
        }
        let mut answer_now = false;
        if let Some(slot) = self.asks_heard.get_mut(peer) {
            if hb.ask != 0 {
                answer_now = slot.is_none() && self.given.is_none_or(|(_, t)| now >= t);
                *slot = Some((hb.ask, now));
            } else {
                *slot = None;
            }
        }
        if let Some(g) = &hb.grant
            && g.to == me
        {
            self.granted(peer, g.ask, Duration::from_millis(u64::from(g.duration_ms)));
        }
        answer_now
    }

    /// Forgets asks not repeated within `stale` (the asker went silent).
    pub fn expire_asks(&mut self, now: Instant, stale: Duration) {
        for a in &mut self.asks_heard {
            if a.is_some_and(|(_, at)| now.saturating_since(at) >= stale) {
                *a = None;
            }
        }
    }

    /// Peer `peer`'s latest ask id, while it asks.
    pub fn ask_of(&self, peer: usize) -> Option<u64> {
        self.asks_heard
            .get(peer)
            .copied()
            .flatten()
            .map(|(id, _)| id)
    }

    /// The peer this node last voted for, unless it was heard since neither serving nor
    /// wanting to.
    pub fn last_given(&self) -> Option<usize> {
        self.last_given
    }

    /// Peer `peer` was heard neither serving nor wanting to serve.
    pub fn peer_idle(&mut self, peer: usize) {
        if self.last_given == Some(peer) && self.given.is_none() {
            self.last_given = None;
        }
    }
}

/// Whether a node may grant its vote to an asking peer: it is not MASTER, it does not want to
/// be (or the asker outranks it), and it has not promised another peer.
pub fn may_grant(
    local_master: bool,
    local_wants: bool,
    asker_outranks: bool,
    promised_to: Option<usize>,
    asker: usize,
) -> bool {
    !local_master && (!local_wants || asker_outranks) && promised_to.is_none_or(|p| p == asker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }
    const TWO: Duration = Duration::from_secs(2);
    const MARGIN: Duration = Duration::from_millis(100);

    #[test]
    fn the_asker_believes_the_promise_ends_before_the_voter_does() {
        let mut alpha = Votes::new(1, TWO, MARGIN);
        let mut beta = Votes::new(1, TWO, MARGIN);
        alpha.asked(7, ms(0));
        // The ask takes 30 ms to arrive; beta grants at once.
        beta.promise(0, ms(30));
        alpha.granted(0, 7, TWO);
        assert_eq!(alpha.count(ms(1899)), 1);
        assert_eq!(alpha.count(ms(1900)), 0);
        assert_eq!(beta.promised_to(ms(2029)), Some(0));
        assert_eq!(beta.promised_to(ms(2030)), None);
        // A grant for an ask we never sent counts for nothing.
        let mut gamma = Votes::new(1, TWO, MARGIN);
        gamma.granted(0, 99, TWO);
        assert_eq!(gamma.count(ms(0)), 0);
    }

    #[test]
    fn timers_move_on_after_promises_end() {
        let mut v = Votes::new(1, TWO, MARGIN);
        v.asked(1, ms(0));
        v.granted(0, 1, TWO);
        v.promise(0, ms(0));
        assert_eq!(v.poll_timeout(), Some(ms(1900)));
        v.handle_timeout(ms(1900));
        assert_eq!(v.poll_timeout(), Some(ms(2000)));
        v.handle_timeout(ms(2000));
        assert_eq!(v.poll_timeout(), None);
    }

    #[test]
    fn a_released_promise_frees_the_voter_and_late_grants_count_for_nothing() {
        let mut alpha = Votes::new(1, TWO, MARGIN);
        let mut beta = Votes::new(1, TWO, MARGIN);
        alpha.asked(1, ms(0));
        beta.promise(0, ms(10));
        alpha.stop_asking();
        // The grant arrives after alpha stopped asking: ignored.
        alpha.granted(0, 1, TWO);
        assert_eq!(alpha.count(ms(20)), 0);
        // beta hears that alpha no longer asks: free.
        beta.release(0);
        assert_eq!(beta.promised_to(ms(30)), None);
    }

    #[test]
    fn grant_rules() {
        assert!(may_grant(false, false, false, None, 0));
        assert!(
            !may_grant(true, false, true, None, 0),
            "a master votes for nobody"
        );
        assert!(
            !may_grant(false, true, false, None, 0),
            "wanting and outranking the asker"
        );
        assert!(
            may_grant(false, true, true, None, 0),
            "wanting but outranked"
        );
        assert!(
            !may_grant(false, false, false, Some(1), 0),
            "promised elsewhere"
        );
        assert!(
            may_grant(false, false, false, Some(0), 0),
            "renewing the same promise"
        );
    }
}
