//! Who may be MASTER: VRRP proposes, this module can veto.
//!
//! The decision table, in order (documented for operators in `docs/split-brain.md`):
//!
//! | situation | verdict |
//! |---|---|
//! | own business link down | no (VRRP is in FAULT anyway) |
//! | this node promised its vote to a peer and the promise runs | no (except under `available` once that peer is silent on every link) |
//! | not MASTER, and a live peer (any link) reports MASTER | no: the peer serves; a preempting node waits for the master to yield |
//! | MASTER, and a live peer reports MASTER and outranks this node | no (two masters: the lower one yields) |
//! | MASTER, and a live peer that outranks this node waits to take over | no: yield, so a handover never has two masters |
//! | not MASTER, and a live peer that outranks this node waits to take over | no: it goes first |
//! | a majority of voters (nodes, and the witness if any): itself, peers' promises, the lease | yes |
//! | three or more nodes without a majority | no |
//! | two nodes, peer alive, no vote yet | no: its vote comes within a round trip (a MASTER without a witness keeps serving: the peer cannot win without its vote) |
//! | two nodes, peer silent, witness configured, no lease | no |
//! | two nodes, no witness, the peer said goodbye (a clean stop) and is not heard since | yes |
//! | two nodes, peer silent, no witness, `available` | yes (both may serve; alerted) |
//! | two nodes, peer silent, no witness, `safe` | yes if already MASTER, or the peer was last seen not serving and this node did not vote for it since |
//!
//! The database (resource [`DATABASE`]) is never preempted: its MASTER does not yield to a
//! waiting peer that outranks it (a primary that stepped down for a peer's preference would
//! cost a failover and could hand the role to a standby that lacks commits).
//!
//! With `[coordination]` (etcd), the first five rows apply, then: MASTER only while holding the
//! etcd leadership lease; votes and the policy do not count.
//!
//! The caller counts votes and the lease only while they outlast the VIP's kernel lifetime.

use crate::liveness::Liveness;

/// The resource id heartbeats use for the database primary role (VRRP ids are 1..=255).
pub const DATABASE: u8 = 0;

/// What a two-node cluster without a witness does when the peer goes silent on every link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TwoNodePolicy {
    /// Keep safety: do not take over from a peer last seen serving.
    #[default]
    Safe,
    /// Keep availability: take over (both nodes may serve during a full partition).
    Available,
}

/// How the cluster decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Nodes in the cluster, this one included.
    pub nodes: usize,
    /// A witness grants leases (two-node clusters).
    pub witness: bool,
    /// Without a witness, in a two-node cluster.
    pub policy: TwoNodePolicy,
    /// An external coordinator (etcd) decides: MASTER needs its lease, and nothing else
    /// counts (no votes, no policy).
    pub lease_decides: bool,
}

/// The verdict for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// May be (or become) MASTER.
    Allowed,
    /// Allowed without confirmation: a full partition under the `available` policy. Worth an
    /// alert.
    AllowedUnconfirmed,
    /// Must not be MASTER, and why.
    Denied(String),
}

impl Verdict {
    /// Whether MASTER is allowed.
    pub fn allowed(&self) -> bool {
        !matches!(self, Verdict::Denied(_))
    }
}

/// What this node knows about itself for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The instance's virtual router id.
    pub vrid: u8,
    /// Its effective priority here.
    pub priority: u8,
    /// Whether this node holds it as MASTER now.
    pub master: bool,
    /// Whether this node's business link is up.
    pub business_up: bool,
    /// Whether this node holds a valid witness lease.
    pub lease_valid: bool,
}

/// The votes side of a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ballot {
    /// Peers whose promise to this node holds now.
    pub peer_votes: usize,
    /// The peer this node promised its own vote to, while that promise holds.
    pub promised_to: Option<String>,
    /// This node last voted for a peer that has not been heard idle since: it may be serving.
    pub voted_for: bool,
    /// For the database: this node's timeline. Of two primaries, the one on the later
    /// timeline was promoted later and stays (a primary that was frozen and thaws reports
    /// MASTER until it notices; names must not decide then). Terms cannot serve: a thawed
    /// node learns the current term from the heartbeats it finds queued.
    pub timeline: u32,
}

/// Decides whether this node (named `me`, for tie-breaks between equal priorities) may hold
/// the instance described by `local` as MASTER.
pub fn verdict(rules: Rules, live: &Liveness, me: &str, local: Local, ballot: &Ballot) -> Verdict {
    if !local.business_up {
        return Verdict::Denied("this node's business link is down".into());
    }
    // Under `available` (two nodes, no witness, no coordinator) a promise to a peer silent on
    // every link no longer binds: the operator chose to serve during a partition, so waiting
    // out the promise would only delay the takeover after a crash.
    let unbound = rules.nodes == 2
        && !rules.witness
        && !rules.lease_decides
        && rules.policy == TwoNodePolicy::Available
        && !live.peers().iter().any(|p| p.alive());
    if let Some(peer) = &ballot.promised_to
        && !unbound
    {
        return Verdict::Denied(format!(
            "this node promised its vote to {peer} and waits for the promise to end"
        ));
    }
    for p in live.peers().iter().filter(|p| p.alive()) {
        let Some(i) = p
            .report
            .as_ref()
            .and_then(|r| r.instances.iter().find(|i| i.vrid == local.vrid))
        else {
            continue;
        };
        // Higher priority wins; equal priorities go to the larger name. For the database,
        // the higher term first: a primary that was frozen and thaws still reports MASTER
        // under its old term until it notices, and must not make its successor yield.
        let outranks = if local.vrid == DATABASE {
            let theirs = p
                .report
                .as_ref()
                .and_then(|r| r.database.as_ref())
                .map_or(0, |d| d.timeline);
            (theirs, i.priority, p.display.as_str()) > (ballot.timeline, local.priority, me)
        } else {
            (i.priority, p.display.as_str()) > (local.priority, me)
        };
        if i.master && (!local.master || outranks) {
            return Verdict::Denied(format!(
                "{} is MASTER with priority {} (heard over the heartbeat)",
                p.display, i.priority
            ));
        }
        if local.master && i.wants && outranks && local.vrid != DATABASE {
            return Verdict::Denied(format!(
                "yielding to {} (priority {}), which takes over",
                p.display, i.priority
            ));
        }
        if !local.master && i.wants && outranks {
            // Taking over now would only mean yielding in a moment (and, with a coordinator,
            // handing the lease back and forth between lower nodes).
            return Verdict::Denied(format!(
                "{} (priority {}) takes over first",
                p.display, i.priority
            ));
        }
    }
    if rules.lease_decides {
        return if local.lease_valid {
            Verdict::Allowed
        } else {
            Verdict::Denied("this node does not hold the leadership key in etcd".into())
        };
    }
    // A majority of the voters: the nodes, and the witness when there is one.
    let voters = rules.nodes + usize::from(rules.witness);
    let votes = 1 + ballot.peer_votes + usize::from(rules.witness && local.lease_valid);
    if votes * 2 > voters {
        return Verdict::Allowed;
    }
    let alive = live.peers().iter().filter(|p| p.alive()).count();
    if rules.nodes == 2 && !rules.witness && live.peers().iter().all(|p| p.left()) {
        // The peer said goodbye: it gave up its VIPs and will not serve before it is heard
        // again. Neither policy has anything to fear.
        return Verdict::Allowed;
    }
    if rules.nodes >= 3 {
        return Verdict::Denied(format!("no majority: {votes} of {voters} votes"));
    }
    if alive > 0 {
        // Two nodes without a witness: the peer cannot reach a majority without this node's
        // vote, which a MASTER never gives, so a master whose peer comes back keeps serving
        // until the peer's vote arrives (stepping down would cost an outage for nothing).
        if local.master && !rules.witness {
            return Verdict::Allowed;
        }
        return Verdict::Denied("waiting for the peer's vote".into());
    }
    if rules.witness {
        return Verdict::Denied(
            "the peer is silent on every link and the witness lease is not ours".into(),
        );
    }
    match rules.policy {
        TwoNodePolicy::Available => Verdict::AllowedUnconfirmed,
        TwoNodePolicy::Safe => {
            let last_seen_serving = live.peers().iter().any(|p| {
                p.report.as_ref().is_some_and(|r| {
                    r.business_up && r.instances.iter().any(|i| i.vrid == local.vrid && i.master)
                })
            });
            if local.master || !(last_seen_serving || ballot.voted_for) {
                Verdict::Allowed
            } else {
                Verdict::Denied(
                    "the peer was last seen serving and is now silent on every link; waiting to hear it (two_node_policy = \"safe\")".into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Heartbeat, InstanceReport};
    use duet_time::Instant;
    use std::time::Duration;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn report(master: bool, priority: u8, business_up: bool) -> Heartbeat {
        Heartbeat {
            database: None,
            maintenance: None,
            echo: Vec::new(),
            services: Vec::new(),
            config_hash: None,
            link: 0,
            business_up,
            leaving: false,
            instances: vec![InstanceReport {
                vrid: 51,
                master,
                wants: false,
                priority,
            }],
            ask: 0,
            grant: None,
        }
    }

    fn wanting(priority: u8) -> Heartbeat {
        let mut h = report(false, priority, true);
        h.instances[0].wants = true;
        h
    }

    /// A two-link liveness with peer beta last heard with `hb`; `silent`: all links timed out.
    fn live(hb: &Heartbeat, silent: bool) -> Liveness {
        let mut l = Liveness::new(2, &["beta".to_string()], Duration::from_millis(50), 5);
        l.heard(ms(0), "beta", 0, 1, hb);
        l.heard(ms(0), "beta", 1, 1, hb);
        if silent {
            l.handle_timeout(ms(1000));
        }
        l
    }

    const NONE: Ballot = Ballot {
        peer_votes: 0,
        promised_to: None,
        voted_for: false,
        timeline: 0,
    };
    const VOTED: Ballot = Ballot {
        peer_votes: 1,
        promised_to: None,
        voted_for: false,
        timeline: 0,
    };

    const BACKUP: Local = Local {
        vrid: 51,
        priority: 100,
        master: false,
        business_up: true,
        lease_valid: false,
    };
    const PAIR: Rules = Rules {
        nodes: 2,
        witness: false,
        policy: TwoNodePolicy::Safe,
        lease_decides: false,
    };

    #[test]
    fn a_peer_heard_over_the_heartbeat_as_master_blocks_a_takeover() {
        let l = live(&report(true, 150, true), false);
        let v = verdict(PAIR, &l, "alpha", BACKUP, &NONE);
        assert!(!v.allowed(), "{v:?}");
        // Even a lower-priority master: the preempting node waits for it to yield.
        let l = live(&report(true, 90, true), false);
        assert!(!verdict(PAIR, &l, "alpha", BACKUP, &NONE).allowed());
        // Two masters: the one the other outranks yields; the other stays.
        let master = Local {
            master: true,
            ..BACKUP
        };
        let l = live(&report(true, 150, true), false);
        assert!(!verdict(PAIR, &l, "alpha", master, &NONE).allowed());
        let l = live(&report(true, 90, true), false);
        assert_eq!(verdict(PAIR, &l, "alpha", master, &VOTED), Verdict::Allowed);
        // Equal priorities: the larger name wins.
        let l = live(&report(true, 100, true), false);
        assert!(
            verdict(PAIR, &l, "alpha", master, &VOTED).allowed()
                != verdict(PAIR, &l, "zulu", master, &VOTED).allowed()
        );
    }

    #[test]
    fn a_master_yields_to_a_higher_priority_peer_that_waits() {
        let master = Local {
            master: true,
            ..BACKUP
        };
        let l = live(&wanting(150), false);
        let v = verdict(PAIR, &l, "alpha", master, &NONE);
        assert!(
            matches!(&v, Verdict::Denied(why) if why.contains("yielding to beta")),
            "{v:?}"
        );
        // A lower-priority peer that waits does not make a master yield.
        let l = live(&wanting(90), false);
        assert_eq!(verdict(PAIR, &l, "alpha", master, &VOTED), Verdict::Allowed);
        // Nor does a backup take over ahead of a higher-priority peer that waits: it would only
        // yield a moment later.
        let l = live(&wanting(150), false);
        let v = verdict(PAIR, &l, "alpha", BACKUP, &VOTED);
        assert!(
            matches!(&v, Verdict::Denied(why) if why.contains("takes over first")),
            "{v:?}"
        );
        let l = live(&wanting(90), false);
        assert_eq!(verdict(PAIR, &l, "alpha", BACKUP, &VOTED), Verdict::Allowed);
    }

    #[test]
    fn a_dead_business_link_never_allows_master() {
        let l = live(&report(false, 150, true), true);
        let local = Local {
            business_up: false,
            lease_valid: true,
            ..BACKUP
        };
        assert!(!verdict(PAIR, &l, "alpha", local, &NONE).allowed());
    }

    #[test]
    fn with_a_witness_a_silent_peer_needs_the_lease() {
        let rules = Rules {
            witness: true,
            ..PAIR
        };
        let l = live(&report(true, 150, true), true);
        assert!(!verdict(rules, &l, "alpha", BACKUP, &NONE).allowed());
        let leased = Local {
            lease_valid: true,
            ..BACKUP
        };
        assert_eq!(verdict(rules, &l, "alpha", leased, &NONE), Verdict::Allowed);
        // A master that loses its peer and cannot renew steps down.
        let master = Local {
            master: true,
            ..BACKUP
        };
        assert!(!verdict(rules, &l, "alpha", master, &NONE).allowed());
        // While the peer is heard, a dead witness disturbs nothing.
        let l = live(&report(false, 100, true), false);
        assert_eq!(
            verdict(rules, &l, "alpha", master, &VOTED),
            Verdict::Allowed
        );
        // Without the peer's vote yet, it waits for it: with a witness, the peer could hold the
        // lease and win.
        assert!(!verdict(rules, &l, "alpha", master, &NONE).allowed());
        // Without a witness the peer cannot win without this master's vote: keep serving.
        assert_eq!(verdict(PAIR, &l, "alpha", master, &NONE), Verdict::Allowed);
        assert!(!verdict(PAIR, &l, "alpha", BACKUP, &NONE).allowed());
    }

    #[test]
    fn without_a_witness_the_policy_decides() {
        let serving = live(&report(true, 150, true), true);
        assert!(
            !verdict(PAIR, &serving, "alpha", BACKUP, &NONE).allowed(),
            "safe: the peer was serving"
        );
        let master = Local {
            master: true,
            ..BACKUP
        };
        assert_eq!(
            verdict(PAIR, &serving, "alpha", master, &NONE),
            Verdict::Allowed,
            "safe: keep serving"
        );
        let not_serving = live(&report(false, 150, true), true);
        assert_eq!(
            verdict(PAIR, &not_serving, "alpha", BACKUP, &NONE),
            Verdict::Allowed
        );
        let lost_its_link = live(&report(true, 150, false), true);
        assert_eq!(
            verdict(PAIR, &lost_its_link, "alpha", BACKUP, &NONE),
            Verdict::Allowed
        );
        let available = Rules {
            policy: TwoNodePolicy::Available,
            ..PAIR
        };
        assert_eq!(
            verdict(available, &serving, "alpha", BACKUP, &NONE),
            Verdict::AllowedUnconfirmed
        );
    }

    #[test]
    fn three_nodes_need_a_majority() {
        let rules = Rules {
            nodes: 3,
            witness: false,
            policy: TwoNodePolicy::Safe,
            lease_decides: false,
        };
        let peers = ["beta".to_string(), "gamma".to_string()];
        let mut l = Liveness::new(1, &peers, Duration::from_millis(50), 5);
        let hb = report(false, 100, true);
        l.heard(ms(0), "beta", 0, 1, &hb);
        assert_eq!(
            verdict(rules, &l, "alpha", BACKUP, &VOTED),
            Verdict::Allowed,
            "2 of 3"
        );
        l.handle_timeout(ms(1000));
        assert!(
            !verdict(rules, &l, "alpha", BACKUP, &NONE).allowed(),
            "1 of 3"
        );
    }

    #[test]
    fn a_database_primary_never_yields_to_a_waiting_peer() {
        // beta outranks alpha (priority 200) and waits to take over.
        let mut hb = wanting(200);
        hb.instances[0].vrid = DATABASE;
        let l = live(&hb, false);
        let master = Local {
            vrid: DATABASE,
            master: true,
            ..BACKUP
        };
        assert_eq!(verdict(PAIR, &l, "alpha", master, &VOTED), Verdict::Allowed);
        // Two database primaries (one thawed from a freeze): the higher term stays, whatever
        // the names say.
        let mut hb = report(true, 100, true);
        hb.instances[0].vrid = DATABASE;
        hb.database = Some(crate::wire::DbState {
            role: 3,
            clean_stop: false,
            listen: "10.0.0.2:5432".parse().unwrap(),
            system_id: 1,
            timeline: 1,
            lsn: 1,
        });
        // It learned the current term from queued heartbeats: terms do not tell.
        let mut l = Liveness::new(2, &["beta".to_string()], Duration::from_millis(50), 5);
        l.heard(ms(0), "beta", 0, 9, &hb);
        let newer = Ballot {
            timeline: 2,
            ..VOTED
        };
        assert_eq!(verdict(PAIR, &l, "alpha", master, &newer), Verdict::Allowed);
        let same = Ballot {
            timeline: 1,
            ..VOTED
        };
        assert!(!verdict(PAIR, &l, "alpha", master, &same).allowed());
        // A VRRP instance in the same place yields (preemption).
        let l = live(&wanting(200), false);
        let vrrp = Local {
            master: true,
            ..BACKUP
        };
        assert!(!verdict(PAIR, &l, "alpha", vrrp, &VOTED).allowed());
    }
}

#[cfg(test)]
mod coordinator_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn with_a_coordinator_only_the_lease_counts() {
        let l = Liveness::new(
            1,
            &["beta".into(), "gamma".into()],
            Duration::from_millis(50),
            5,
        );
        let rules = Rules {
            nodes: 3,
            witness: false,
            policy: TwoNodePolicy::Available,
            lease_decides: true,
        };
        let local = Local {
            vrid: 51,
            priority: 100,
            master: true,
            business_up: true,
            lease_valid: false,
        };
        // Votes from both peers are a majority, but without the lease: no.
        let votes = Ballot {
            peer_votes: 2,
            promised_to: None,
            voted_for: false,
            timeline: 0,
        };
        let v = verdict(rules, &l, "alpha", local, &votes);
        assert!(
            matches!(&v, Verdict::Denied(w) if w.contains("leadership key in etcd")),
            "{v:?}"
        );
        let leased = Local {
            lease_valid: true,
            ..local
        };
        assert_eq!(
            verdict(rules, &l, "alpha", leased, &Ballot::default()),
            Verdict::Allowed
        );
    }
}

#[cfg(test)]
mod ballot_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_node_that_promised_its_vote_is_never_master() {
        let l = Liveness::new(1, &["beta".to_string()], Duration::from_millis(50), 5);
        let rules = Rules {
            nodes: 2,
            witness: true,
            policy: TwoNodePolicy::Safe,
            lease_decides: false,
        };
        let local = Local {
            vrid: 51,
            priority: 100,
            master: false,
            business_up: true,
            lease_valid: true,
        };
        let promised = Ballot {
            peer_votes: 0,
            promised_to: Some("beta".into()),
            voted_for: true,
            timeline: 0,
        };
        let v = verdict(rules, &l, "alpha", local, &promised);
        assert!(
            matches!(&v, Verdict::Denied(w) if w.contains("promised its vote to beta")),
            "{v:?}"
        );
        assert!(
            verdict(rules, &l, "alpha", local, &Ballot::default()).allowed(),
            "the lease alone is 2 of 3"
        );
        // Under `available` a promise to a peer silent on every link does not bind; while the
        // peer is heard, it does.
        let available = Rules {
            witness: false,
            policy: TwoNodePolicy::Available,
            ..rules
        };
        let mut l = Liveness::new(1, &["beta".to_string()], Duration::from_millis(50), 5);
        let hb = crate::wire::Heartbeat {
            database: None,
            maintenance: None,
            echo: Vec::new(),
            services: Vec::new(),
            config_hash: None,
            link: 0,
            business_up: true,
            leaving: false,
            instances: vec![],
            ask: 1,
            grant: None,
        };
        l.heard(duet_time::Instant::ZERO, "beta", 0, 1, &hb);
        assert!(!verdict(available, &l, "alpha", local, &promised).allowed());
        l.handle_timeout(duet_time::Instant::from_nanos(1_000_000_000));
        assert_eq!(
            verdict(available, &l, "alpha", local, &promised),
            Verdict::AllowedUnconfirmed
        );
        let safe = Rules {
            policy: TwoNodePolicy::Safe,
            ..available
        };
        assert!(!verdict(safe, &l, "alpha", local, &promised).allowed());
    }
}
