//! The planner's rules, one scenario each.

use std::time::Duration;

use duet_time::Instant;

use crate::*;

fn planner(mode: Mode) -> Planner {
    Planner::new(PlannerConfig {
        name: "beta".into(),
        mode,
        max_lag: 1 << 20,
        max_crashes: 3,
        crash_window: Duration::from_secs(60),
    })
}

fn lead(may: bool, lease: bool) -> Leadership {
    Leadership {
        may_lead: may,
        why_not: if may {
            String::new()
        } else {
            "alpha leads".into()
        },
        lease,
        term: 7,
        frozen: false,
    }
}

fn peer(role: Role, alive: bool, timeline: u32, lsn: Lsn) -> PeerDb {
    PeerDb {
        name: "alpha".into(),
        alive,
        report: Some(Report {
            role,
            listen: "10.0.0.1:5432".parse().unwrap(),
            system_id: 42,
            timeline,
            lsn,
            clean_stop: false,
        }),
    }
}

fn replica(timeline: u32, received: Lsn, streaming: bool) -> Server {
    Server::Replica(ReplicaState {
        timeline,
        received,
        replayed: received,
        upstream: Some("alpha".into()),
        streaming,
    })
}

fn record(primary: &str, standby: Option<&str>) -> Record {
    Record {
        system_id: 42,
        primary: primary.into(),
        standby: standby.map(Into::into),
        term: 6,
    }
}

const DATA: Data = Data::Cluster { system_id: 42 };

fn at(s: u64) -> Instant {
    Instant::from_nanos(s * 1_000_000_000)
}

struct World {
    leadership: Leadership,
    data: Data,
    server: Server,
    peers: Vec<PeerDb>,
    authority: bool,
    record: Option<Record>,
}

impl World {
    fn plan(&self, p: &mut Planner, now: Instant) -> Plan {
        p.next(&Facts {
            now,
            leadership: &self.leadership,
            data: &self.data,
            server: &self.server,
            peers: &self.peers,
            authority: self.authority,
            record: self.record.as_ref(),
        })
    }
}

#[test]
fn the_leader_bootstraps_an_empty_pair_and_the_other_clones_from_it() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(false, false),
        data: Data::Empty,
        server: Server::Stopped,
        peers: vec![peer(Role::Unknown, true, 0, 0)],
        authority: true,
        record: None,
    };
    w.peers[0].report.as_mut().unwrap().system_id = 0;
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref w) if w.contains("alpha leads")),
        "{plan:?}"
    );
    assert!(plan.wants, "an empty pair: either node may bootstrap");
    w.leadership = lead(true, true);
    let plan = w.plan(&mut p, at(2));
    assert_eq!(plan.step, Step::Act(Action::Initdb));
    assert!(plan.master, "bootstrapping counts as primary for the peers");
    // The other node: the peer runs a primary now.
    let mut q = planner(Mode::On);
    w.leadership = lead(false, false);
    w.peers = vec![peer(Role::Primary, true, 1, 100)];
    let plan = w.plan(&mut q, at(3));
    assert_eq!(
        plan.step,
        Step::Act(Action::Clone {
            from: "alpha".into()
        })
    );
    assert!(!plan.wants && !plan.master);
}

#[test]
fn an_empty_node_never_bootstraps_a_cluster_that_exists() {
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(true, true),
        data: Data::Empty,
        server: Server::Stopped,
        peers: vec![peer(Role::Stopped, false, 1, 100)],
        authority: true,
        record: Some(record("alpha", Some("beta"))),
    };
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("cluster exists")),
        "{plan:?}"
    );
    assert!(!plan.wants);
}

#[test]
fn data_of_another_cluster_is_refused_and_left_alone() {
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(false, false),
        data: Data::Cluster { system_id: 99 },
        server: Server::Stopped,
        peers: vec![peer(Role::Primary, true, 1, 100)],
        authority: true,
        record: None,
    };
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("another cluster") && m.contains("99") && m.contains("42")),
        "{plan:?}"
    );
}

#[test]
fn a_primary_that_may_not_lead_is_fenced_at_once() {
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(false, false),
        data: DATA,
        server: Server::Primary(PrimaryState {
            timeline: 1,
            lsn: 500,
            ..Default::default()
        }),
        peers: vec![peer(Role::Replica, false, 1, 400)],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    let plan = w.plan(&mut p, at(1));
    assert_eq!(plan.step, Step::Act(Action::Fence));
    assert!(!plan.master);
}

#[test]
fn the_synchronous_standby_records_itself_then_promotes() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: replica(1, 300, false),
        peers: vec![peer(Role::Primary, false, 1, 400)],
        authority: true,
        record: Some(record("alpha", Some("beta"))),
    };
    let plan = w.plan(&mut p, at(1));
    assert_eq!(
        plan.step,
        Step::Act(Action::Record(Record {
            system_id: 42,
            primary: "beta".into(),
            standby: None,
            term: 7
        })),
        "the record names the new primary before it takes a write"
    );
    assert!(plan.master);
    w.record = Some(Record {
        term: 7,
        ..record("beta", None)
    });
    let plan = w.plan(&mut p, at(2));
    assert_eq!(plan.step, Step::Act(Action::Promote { sync_names: vec![] }));
}

#[test]
fn in_maintenance_a_promotable_standby_waits_and_says_why() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: Leadership {
            frozen: true,
            ..lead(true, true)
        },
        data: DATA,
        server: replica(1, 300, false),
        peers: vec![peer(Role::Primary, false, 1, 400)],
        authority: true,
        record: Some(record("alpha", Some("beta"))),
    };
    for t in 1..5 {
        let plan = w.plan(&mut p, at(t));
        assert!(
            !matches!(
                plan.step,
                Step::Act(Action::Promote { .. } | Action::Record(_))
            ),
            "{plan:?}"
        );
        assert!(!plan.wants && !plan.master, "{plan:?}");
        assert!(
            plan.refusal
                .as_deref()
                .is_some_and(|r| r.contains("maintenance")),
            "{plan:?}"
        );
    }
    // Lifted: the same standby records itself and is promoted.
    w.leadership.frozen = false;
    let plan = w.plan(&mut p, at(6));
    assert!(
        matches!(plan.step, Step::Act(Action::Record(_))),
        "{plan:?}"
    );
}

#[test]
fn a_standby_the_record_does_not_name_is_not_promoted() {
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(true, true),
        data: DATA,
        server: replica(1, 400, false),
        peers: vec![peer(Role::Primary, false, 1, 400)],
        authority: true,
        record: Some(record("alpha", None)),
    };
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("names no node as the synchronous standby of alpha")),
        "{plan:?}"
    );
    assert!(plan.refusal.is_some() && !plan.wants);
}

#[test]
fn without_an_authority_a_silent_primary_is_never_replaced_but_a_clean_stop_is() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, false),
        data: DATA,
        server: replica(1, 400, false),
        peers: vec![peer(Role::Primary, false, 1, 400)],
        authority: false,
        record: None,
    };
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("never promoted")),
        "{plan:?}"
    );
    // The primary stopped cleanly at 400, and this standby has 400.
    w.peers = vec![PeerDb {
        report: Some(Report {
            role: Role::Stopped,
            clean_stop: true,
            ..w.peers[0].report.clone().unwrap()
        }),
        ..w.peers[0].clone()
    }];
    let plan = w.plan(&mut p, at(2));
    assert_eq!(plan.step, Step::Act(Action::Promote { sync_names: vec![] }));
    // Not if it lacks the end.
    w.server = replica(1, 399, false);
    let plan = w.plan(&mut planner(Mode::On), at(3));
    assert!(matches!(plan.step, Step::Wait(_)), "{plan:?}");
}

#[test]
fn asynchronous_promotion_stays_within_the_lag_limit() {
    let mut p = planner(Mode::Off);
    let mut w = World {
        leadership: lead(false, false),
        data: DATA,
        server: replica(1, 1_000, true),
        peers: vec![peer(Role::Primary, true, 1, 3_000_000)],
        authority: true,
        record: Some(record("alpha", None)),
    };
    w.plan(&mut p, at(1));
    // The primary dies; we heard it at 3 000 000, we have 1 000: 2.9 MB behind (limit 1 MB).
    w.peers[0].alive = false;
    w.leadership = lead(true, true);
    let plan = w.plan(&mut p, at(2));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("bytes behind")),
        "{plan:?}"
    );
    w.server = replica(1, 2_500_000, false);
    let plan = w.plan(&mut p, at(3));
    assert!(
        matches!(plan.step, Step::Act(Action::Record(_))),
        "{plan:?}"
    );
    // A planner that never heard a primary cannot tell.
    let plan = w.plan(&mut planner(Mode::Off), at(3));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("no primary position")),
        "{plan:?}"
    );
}

fn primary(sync: &[&str], followers: Vec<Follower>, lsn: Lsn) -> Server {
    Server::Primary(PrimaryState {
        timeline: 1,
        lsn,
        sync_names: sync.iter().map(|s| s.to_string()).collect(),
        followers,
        slots: vec!["alpha".into()],
    })
}

fn follower(streaming: bool, sync: bool, flush: Lsn) -> Follower {
    Follower {
        name: "alpha".into(),
        streaming,
        sync,
        flush,
    }
}

#[test]
fn sync_is_set_recorded_after_two_looks_and_relaxed_only_after_the_record() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&[], vec![follower(true, false, 100)], 100),
        peers: vec![peer(Role::Replica, true, 1, 100)],
        authority: true,
        record: Some(record("beta", None)),
    };
    assert_eq!(
        w.plan(&mut p, at(1)).step,
        Step::Act(Action::SetSync(vec!["alpha".into()]))
    );
    // In effect: first look records where our WAL was (200); the standby has 150 only.
    w.server = primary(&["alpha"], vec![follower(true, true, 150)], 200);
    assert!(matches!(w.plan(&mut p, at(2)).step, Step::Wait(_)));
    w.server = primary(&["alpha"], vec![follower(true, true, 250)], 300);
    assert_eq!(
        w.plan(&mut p, at(3)).step,
        Step::Act(Action::Record(Record {
            term: 7,
            ..record("beta", Some("alpha"))
        }))
    );
    w.record = Some(record("beta", Some("alpha")));
    assert!(
        matches!(w.plan(&mut p, at(4)).step, Step::Wait(ref m) if m.contains("synchronous standby alpha"))
    );
    // The standby dies: the record first, then relax.
    w.peers[0].alive = false;
    w.server = primary(&["alpha"], vec![], 300);
    assert_eq!(
        w.plan(&mut p, at(5)).step,
        Step::Act(Action::Record(Record {
            term: 7,
            ..record("beta", None)
        }))
    );
    w.record = Some(record("beta", None));
    assert_eq!(
        w.plan(&mut p, at(6)).step,
        Step::Act(Action::SetSync(vec![]))
    );
}

#[test]
fn strict_never_relaxes() {
    let mut p = planner(Mode::Strict);
    let w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&["alpha"], vec![], 300),
        peers: vec![peer(Role::Replica, false, 1, 100)],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    assert!(matches!(w.plan(&mut p, at(1)).step, Step::Wait(_)));
}

#[test]
fn a_crashed_primary_restarts_in_place_until_it_crashes_too_often() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&[], vec![], 100),
        peers: vec![peer(Role::Replica, true, 1, 100)],
        authority: true,
        record: Some(record("beta", None)),
    };
    w.peers[0].alive = true;
    for round in 0..3u64 {
        w.server = primary(&[], vec![], 100);
        w.plan(&mut p, at(10 * round));
        w.server = Server::Stopped;
        let plan = w.plan(&mut p, at(10 * round + 1));
        if round < 2 {
            assert!(
                matches!(plan.step, Step::Act(Action::Start { primary: true, .. })),
                "round {round}: {plan:?}"
            );
            assert!(plan.master);
        } else {
            assert!(
                matches!(plan.step, Step::Act(Action::Start { primary: false, .. })),
                "third crash in a minute: {plan:?}"
            );
            assert!(!plan.master && !plan.wants);
            assert!(p.gave_up());
        }
    }
}

#[test]
fn a_primary_seen_dying_before_it_is_gone_is_still_a_crash_restarted_in_place() {
    // A killed postmaster is not reaped at once: one look can find the server not answering
    // while its process still exists ("starting"), the next finds it stopped.
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&["alpha"], vec![follower(true, true, 100)], 100),
        peers: vec![peer(Role::Replica, true, 1, 100)],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    assert!(w.plan(&mut p, at(1)).master);
    w.server = Server::Starting;
    let plan = w.plan(&mut p, at(2));
    assert!(plan.master, "still the primary for the peers: {plan:?}");
    w.server = Server::Stopped;
    let plan = w.plan(&mut p, at(3));
    assert!(
        matches!(plan.step, Step::Act(Action::Start { primary: true, .. })),
        "{plan:?}"
    );
    assert!(plan.master);
    // It dies twice more while recovering: three crashes in a minute, it gives up.
    for t in [4, 6] {
        w.server = Server::Starting;
        assert!(w.plan(&mut p, at(t)).master);
        w.server = Server::Stopped;
        w.plan(&mut p, at(t + 1));
    }
    assert!(p.gave_up());
}

#[test]
fn a_fenced_primary_comes_back_as_a_standby_and_rewinds_onto_the_new_timeline() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(false, false),
        data: DATA,
        server: primary(&[], vec![], 100),
        peers: vec![peer(Role::Replica, false, 1, 100)],
        authority: true,
        record: Some(record("beta", None)),
    };
    assert_eq!(w.plan(&mut p, at(1)).step, Step::Act(Action::Fence));
    w.server = Server::Stopped;
    // Not a crash: it starts as a standby, not as a primary.
    let plan = w.plan(&mut p, at(2));
    assert_eq!(
        plan.step,
        Step::Act(Action::Start {
            primary: false,
            upstream: None,
            sync_names: vec![]
        })
    );
    // The peer promoted (timeline 2).
    w.peers = vec![peer(Role::Primary, true, 2, 200)];
    assert_eq!(
        w.plan(&mut p, at(3)).step,
        Step::Act(Action::Rewind {
            from: "alpha".into()
        })
    );
    p.failed(&Action::Rewind {
        from: "alpha".into(),
    });
    assert_eq!(
        w.plan(&mut p, at(4)).step,
        Step::Act(Action::Reclone {
            from: "alpha".into()
        })
    );
    // Rewound and started: it follows.
    w.server = Server::Replica(ReplicaState {
        timeline: 2,
        received: 200,
        replayed: 200,
        upstream: None,
        streaming: false,
    });
    assert_eq!(
        w.plan(&mut p, at(5)).step,
        Step::Act(Action::Follow {
            upstream: "alpha".into()
        })
    );
}

#[test]
fn a_rewound_standby_streams_instead_of_rewinding_again_and_is_cloned_if_it_cannot() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(false, false),
        data: DATA,
        server: replica(1, 100, false),
        peers: vec![peer(Role::Primary, true, 2, 200)],
        authority: true,
        record: Some(record("alpha", None)),
    };
    assert_eq!(
        w.plan(&mut p, at(1)).step,
        Step::Act(Action::Rewind {
            from: "alpha".into()
        })
    );
    // "No rewind required": the control file still says timeline 1. Start, do not rewind.
    w.server = Server::Stopped;
    assert!(matches!(
        w.plan(&mut p, at(2)).step,
        Step::Act(Action::Start {
            primary: false,
            upstream: Some(_),
            ..
        })
    ));
    w.server = replica(1, 100, false);
    assert!(matches!(w.plan(&mut p, at(3)).step, Step::Wait(_)));
    // Still not streaming half a minute later: clone again.
    assert_eq!(
        w.plan(&mut p, at(40)).step,
        Step::Act(Action::Reclone {
            from: "alpha".into()
        })
    );
}

#[test]
fn the_only_copy_is_promotable_without_a_record() {
    // Bootstrapped, fenced before the first record; the peer never had data.
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: replica(1, 100, false),
        peers: vec![peer(Role::Unknown, true, 0, 0)],
        authority: true,
        record: None,
    };
    w.peers[0].report.as_mut().unwrap().system_id = 0;
    assert!(matches!(
        w.plan(&mut p, at(1)).step,
        Step::Act(Action::Record(_))
    ));
    // A peer never heard at all might have data: no.
    w.peers[0].report = None;
    let plan = w.plan(&mut planner(Mode::On), at(2));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("no record")),
        "{plan:?}"
    );
}

#[test]
fn a_primary_restarting_after_its_crash_keeps_claiming_the_role_while_it_recovers() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&["alpha"], vec![follower(true, true, 100)], 100),
        peers: vec![peer(Role::Replica, true, 1, 100)],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    assert!(w.plan(&mut p, at(1)).master);
    w.server = Server::Stopped;
    let plan = w.plan(&mut p, at(2));
    assert!(matches!(
        plan.step,
        Step::Act(Action::Start { primary: true, .. })
    ));
    assert!(plan.master);
    // Crash recovery: the server does not answer yet. Still the primary for the peers, or
    // the standby would be voted in meanwhile.
    w.server = Server::Starting;
    let plan = w.plan(&mut p, at(3));
    assert!(plan.master, "{plan:?}");
    // A standby that starts does not claim anything.
    let mut q = planner(Mode::On);
    w.server = Server::Stopped;
    w.leadership = lead(false, false);
    w.peers = vec![peer(Role::Primary, true, 1, 100)];
    w.plan(&mut q, at(4));
    w.server = Server::Starting;
    assert!(!w.plan(&mut q, at(5)).master);
}

#[test]
fn a_cached_record_that_names_this_node_still_needs_a_write_under_its_own_lease() {
    // beta was primary before a partition (term 6) and holds that record in its cache; the
    // lease it gets now (term 7) must be used to write the record before any promotion, and
    // without the lease nothing happens.
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, false),
        data: DATA,
        server: replica(1, 300, false),
        peers: vec![peer(Role::Replica, false, 1, 300)],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    let plan = w.plan(&mut p, at(1));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("lease")),
        "{plan:?}"
    );
    w.leadership = lead(true, true);
    assert!(matches!(
        w.plan(&mut p, at(2)).step,
        Step::Act(Action::Record(Record { term: 7, .. }))
    ));
}

#[test]
fn a_switchover_stops_cleanly_after_catch_up_and_the_target_takes_over_without_loss() {
    // beta is primary; alpha streams and is 20 MB behind at first.
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&["alpha"], vec![follower(true, true, 0)], 20 << 20),
        peers: vec![peer(Role::Replica, true, 1, 0)],
        authority: true,
        record: Some(Record {
            term: 7,
            ..record("beta", Some("alpha"))
        }),
    };
    w.plan(&mut p, at(1));
    p.switchover("alpha".into());
    let plan = w.plan(&mut p, at(2));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("bytes behind")),
        "{plan:?}"
    );
    w.server = primary(&["alpha"], vec![follower(true, true, 20 << 20)], 20 << 20);
    let plan = w.plan(&mut p, at(3));
    assert_eq!(plan.step, Step::Act(Action::Stop));
    assert!(
        !plan.master,
        "a primary that hands over no longer claims the role"
    );
    // Stopped cleanly: it waits for alpha, neither restarting as primary nor wanting.
    w.server = Server::Stopped;
    let plan = w.plan(&mut p, at(4));
    assert!(
        matches!(plan.step, Step::Wait(ref m) if m.contains("waiting for alpha")),
        "{plan:?}"
    );
    assert!(!plan.master && !plan.wants);

    // alpha's side: beta reports a clean stop at 20 MB, alpha received it all: promotable.
    let mut a = Planner::new(PlannerConfig {
        name: "alpha".into(),
        ..p.config().clone()
    });
    let mut stopped = peer(Role::Stopped, true, 1, 20 << 20);
    stopped.name = "beta".into();
    stopped.report.as_mut().unwrap().clean_stop = true;
    let wa = World {
        leadership: lead(true, true),
        data: DATA,
        server: replica(1, (20 << 20) + 120, false),
        peers: vec![stopped],
        authority: true,
        record: Some(record("beta", Some("alpha"))),
    };
    let plan = wa.plan(&mut a, at(5));
    assert!(plan.wants || plan.master, "{plan:?}");
    assert!(
        matches!(plan.step, Step::Act(Action::Record(Record { ref primary, .. })) if primary == "alpha")
    );

    // alpha promoted: beta rejoins (rewind onto the new timeline, then streams).
    w.peers = vec![peer(Role::Primary, true, 2, 30 << 20)];
    w.leadership = lead(false, false);
    let plan = w.plan(&mut p, at(6));
    assert_eq!(
        plan.step,
        Step::Act(Action::Rewind {
            from: "alpha".into()
        })
    );
    assert_eq!(p.handover(), None);
}

#[test]
fn a_switchover_nobody_takes_over_ends_with_the_old_primary_leading_again() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(true, true),
        data: DATA,
        server: primary(&["alpha"], vec![follower(true, true, 100)], 100),
        peers: vec![peer(Role::Replica, true, 1, 100)],
        authority: true,
        record: Some(Record {
            term: 7,
            ..record("beta", Some("alpha"))
        }),
    };
    w.plan(&mut p, at(1));
    p.switchover("alpha".into());
    assert_eq!(w.plan(&mut p, at(2)).step, Step::Act(Action::Stop));
    w.server = Server::Stopped;
    assert!(matches!(w.plan(&mut p, at(3)).step, Step::Wait(_)));
    let plan = w.plan(&mut p, at(40));
    assert!(
        matches!(plan.step, Step::Act(Action::Start { primary: true, .. })),
        "{plan:?}"
    );
}

#[test]
fn reinit_clones_a_standby_again_even_of_another_system_but_never_the_primary() {
    let mut p = planner(Mode::On);
    let mut w = World {
        leadership: lead(false, false),
        data: Data::Cluster { system_id: 99 },
        server: Server::Stopped,
        peers: vec![peer(Role::Primary, true, 1, 100)],
        authority: true,
        record: None,
    };
    assert!(
        matches!(w.plan(&mut p, at(1)).step, Step::Wait(ref m) if m.contains("another cluster"))
    );
    p.reinit();
    assert_eq!(
        w.plan(&mut p, at(2)).step,
        Step::Act(Action::Reclone {
            from: "alpha".into()
        })
    );
    // On the primary: refused, and forgotten.
    let mut q = planner(Mode::On);
    w.data = DATA;
    w.server = primary(&[], vec![], 100);
    w.peers = vec![peer(Role::Replica, true, 1, 100)];
    w.leadership = lead(true, true);
    q.reinit();
    assert!(
        matches!(w.plan(&mut q, at(3)).step, Step::Wait(ref m) if m.contains("reinit refused"))
    );
    assert!(!matches!(w.plan(&mut q, at(4)).step, Step::Wait(ref m) if m.contains("reinit")));
}

#[test]
fn a_standby_that_dies_at_every_start_rejoins_instead_and_is_cloned_if_rewind_fails() {
    // Its WAL is gone: the server dies before it runs, every time.
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(false, false),
        data: DATA,
        server: Server::Stopped,
        peers: vec![peer(Role::Primary, true, 1, 100)],
        authority: true,
        record: Some(record("alpha", Some("beta"))),
    };
    for i in 0..3 {
        let plan = w.plan(&mut p, at(i));
        assert!(
            matches!(plan.step, Step::Act(Action::Start { primary: false, .. })),
            "start {i}: {plan:?}"
        );
    }
    let plan = w.plan(&mut p, at(3));
    assert_eq!(
        plan.step,
        Step::Act(Action::Rewind {
            from: "alpha".into()
        })
    );
    p.failed(&Action::Rewind {
        from: "alpha".into(),
    });
    let mut last = Step::Wait(String::new());
    for i in 4..10 {
        last = w.plan(&mut p, at(i)).step;
        if matches!(last, Step::Act(Action::Reclone { .. })) {
            break;
        }
    }
    assert_eq!(
        last,
        Step::Act(Action::Reclone {
            from: "alpha".into()
        })
    );
}

#[test]
fn a_recloned_standby_starts_rather_than_cloning_again() {
    let mut p = planner(Mode::On);
    let w = World {
        leadership: lead(false, false),
        data: DATA,
        server: Server::Stopped,
        peers: vec![peer(Role::Primary, true, 1, 100)],
        authority: true,
        record: Some(record("alpha", Some("beta"))),
    };
    for i in 0..3 {
        w.plan(&mut p, at(i));
    }
    p.failed(&Action::Rewind {
        from: "alpha".into(),
    });
    p.reinit();
    assert!(matches!(
        w.plan(&mut p, at(4)).step,
        Step::Act(Action::Reclone { .. })
    ));
    // Cloned: the next look starts it.
    let plan = w.plan(&mut p, at(5));
    assert!(
        matches!(plan.step, Step::Act(Action::Start { primary: false, .. })),
        "{plan:?}"
    );
}
