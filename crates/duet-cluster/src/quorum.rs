//! Who may be MASTER: VRRP proposes, this module can veto.
//!
//! The decision table (documented for operators in `docs/split-brain.md`):
//!
//! | situation | verdict |
//! |---|---|
//! | own business link down | no (VRRP is in FAULT anyway) |
//! | not MASTER, and a live peer (any link) reports MASTER | no: the peer serves (adverts may be lost on one path); a preempting node waits for the master to yield |
//! | MASTER, and a live peer reports MASTER and outranks this node | no (two masters: the lower one yields) |
//! | MASTER, and a live peer that outranks this node waits to take over | no: yield, so the handover never has two masters |
//! | two nodes, peer alive on some link | yes (VRRP decides between the two) |
//! | two nodes, peer silent on every link, witness configured | only with a valid witness lease |
//! | two nodes, peer silent, no witness, `available` | yes (keepalived's behaviour; both may serve; alerted) |
//! | two nodes, peer silent, no witness, `safe` | yes if this node is already MASTER or the peer was last seen not serving (not MASTER, or its business link down); else no, until the peer is heard again |
//! | three or more nodes | only with a majority: this node plus the live peers are more than half |

use crate::liveness::Liveness;

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

/// Decides whether this node (named `me`, for tie-breaks between equal priorities) may hold
/// the instance described by `local` as MASTER.
pub fn verdict(rules: Rules, live: &Liveness, me: &str, local: Local) -> Verdict {
    if !local.business_up {
        return Verdict::Denied("this node's business link is down".into());
    }
    for p in live.peers().iter().filter(|p| p.alive()) {
        let Some(i) = p
            .report
            .as_ref()
            .and_then(|r| r.instances.iter().find(|i| i.vrid == local.vrid))
        else {
            continue;
        };
        // Higher priority wins; equal priorities go to the larger name.
        let outranks = (i.priority, p.display.as_str()) > (local.priority, me);
        if i.master && (!local.master || outranks) {
            return Verdict::Denied(format!(
                "{} is MASTER with priority {} (heard over the heartbeat)",
                p.display, i.priority
            ));
        }
        if local.master && i.wants && outranks {
            return Verdict::Denied(format!(
                "yielding to {} (priority {}), which takes over",
                p.display, i.priority
            ));
        }
    }
    let alive = live.peers().iter().filter(|p| p.alive()).count();
    if rules.nodes >= 3 {
        let votes = alive + 1;
        return if votes * 2 > rules.nodes {
            Verdict::Allowed
        } else {
            Verdict::Denied(format!(
                "no majority: {votes} of {} nodes reachable",
                rules.nodes
            ))
        };
    }
    if alive > 0 {
        return Verdict::Allowed;
    }
    if rules.witness {
        return if local.lease_valid {
            Verdict::Allowed
        } else {
            Verdict::Denied(
                "the peer is silent on every link and the witness lease is not ours".into(),
            )
        };
    }
    match rules.policy {
        TwoNodePolicy::Available => Verdict::AllowedUnconfirmed,
        TwoNodePolicy::Safe => {
            let last_seen_serving = live.peers().iter().any(|p| {
                p.report.as_ref().is_some_and(|r| {
                    r.business_up && r.instances.iter().any(|i| i.vrid == local.vrid && i.master)
                })
            });
            if local.master || !last_seen_serving {
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
            link: 0,
            business_up,
            instances: vec![InstanceReport {
                vrid: 51,
                master,
                wants: false,
                priority,
            }],
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
    };

    #[test]
    fn a_peer_heard_over_the_heartbeat_as_master_blocks_a_takeover() {
        let l = live(&report(true, 150, true), false);
        let v = verdict(PAIR, &l, "alpha", BACKUP);
        assert!(!v.allowed(), "{v:?}");
        // Even a lower-priority master: the preempting node waits for it to yield.
        let l = live(&report(true, 90, true), false);
        assert!(!verdict(PAIR, &l, "alpha", BACKUP).allowed());
        // Two masters: the one the other outranks yields; the other stays.
        let master = Local {
            master: true,
            ..BACKUP
        };
        let l = live(&report(true, 150, true), false);
        assert!(!verdict(PAIR, &l, "alpha", master).allowed());
        let l = live(&report(true, 90, true), false);
        assert_eq!(verdict(PAIR, &l, "alpha", master), Verdict::Allowed);
        // Equal priorities: the larger name wins.
        let l = live(&report(true, 100, true), false);
        assert!(
            verdict(PAIR, &l, "alpha", master).allowed()
                != verdict(PAIR, &l, "zulu", master).allowed()
        );
    }

    #[test]
    fn a_master_yields_to_a_higher_priority_peer_that_waits() {
        let master = Local {
            master: true,
            ..BACKUP
        };
        let l = live(&wanting(150), false);
        let v = verdict(PAIR, &l, "alpha", master);
        assert!(
            matches!(&v, Verdict::Denied(why) if why.contains("yielding to beta")),
            "{v:?}"
        );
        // A lower-priority peer that waits does not make a master yield.
        let l = live(&wanting(90), false);
        assert_eq!(verdict(PAIR, &l, "alpha", master), Verdict::Allowed);
    }

    #[test]
    fn a_dead_business_link_never_allows_master() {
        let l = live(&report(false, 150, true), true);
        let local = Local {
            business_up: false,
            lease_valid: true,
            ..BACKUP
        };
        assert!(!verdict(PAIR, &l, "alpha", local).allowed());
    }

    #[test]
    fn with_a_witness_a_silent_peer_needs_the_lease() {
        let rules = Rules {
            witness: true,
            ..PAIR
        };
        let l = live(&report(true, 150, true), true);
        assert!(!verdict(rules, &l, "alpha", BACKUP).allowed());
        let leased = Local {
            lease_valid: true,
            ..BACKUP
        };
        assert_eq!(verdict(rules, &l, "alpha", leased), Verdict::Allowed);
        // A master that loses its peer and cannot renew steps down.
        let master = Local {
            master: true,
            ..BACKUP
        };
        assert!(!verdict(rules, &l, "alpha", master).allowed());
        // While the peer is heard, a dead witness disturbs nothing.
        let l = live(&report(false, 100, true), false);
        assert_eq!(verdict(rules, &l, "alpha", master), Verdict::Allowed);
    }

    #[test]
    fn without_a_witness_the_policy_decides() {
        let serving = live(&report(true, 150, true), true);
        assert!(
            !verdict(PAIR, &serving, "alpha", BACKUP).allowed(),
            "safe: the peer was serving"
        );
        let master = Local {
            master: true,
            ..BACKUP
        };
        assert_eq!(
            verdict(PAIR, &serving, "alpha", master),
            Verdict::Allowed,
            "safe: keep serving"
        );
        let not_serving = live(&report(false, 150, true), true);
        assert_eq!(
            verdict(PAIR, &not_serving, "alpha", BACKUP),
            Verdict::Allowed
        );
        let lost_its_link = live(&report(true, 150, false), true);
        assert_eq!(
            verdict(PAIR, &lost_its_link, "alpha", BACKUP),
            Verdict::Allowed
        );
        let available = Rules {
            policy: TwoNodePolicy::Available,
            ..PAIR
        };
        assert_eq!(
            verdict(available, &serving, "alpha", BACKUP),
            Verdict::AllowedUnconfirmed
        );
    }

    #[test]
    fn three_nodes_need_a_majority() {
        let rules = Rules {
            nodes: 3,
            witness: false,
            policy: TwoNodePolicy::Safe,
        };
        let peers = ["beta".to_string(), "gamma".to_string()];
        let mut l = Liveness::new(1, &peers, Duration::from_millis(50), 5);
        let hb = report(false, 100, true);
        l.heard(ms(0), "beta", 0, 1, &hb);
        assert_eq!(
            verdict(rules, &l, "alpha", BACKUP),
            Verdict::Allowed,
            "2 of 3"
        );
        l.handle_timeout(ms(1000));
        assert!(!verdict(rules, &l, "alpha", BACKUP).allowed(), "1 of 3");
    }
}
