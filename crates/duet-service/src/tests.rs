use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(n)
}

/// storage ← app ← proxy (each needs the one before), monitored every second, 3 restarts.
fn three() -> Vec<Resource> {
    let r = |name: &str, needs: Vec<usize>| Resource {
        name: name.into(),
        interval: Duration::from_secs(1),
        restarts: 3,
        needs,
        monitored: true,
    };
    vec![r("storage", vec![]), r("app", vec![0]), r("proxy", vec![1])]
}

/// Runs a group against scripted outcomes: operations finish at once; `fails` holds how
/// many more times each (resource, op) fails.
struct World {
    g: Group,
    now: Instant,
    log: Vec<String>,
    fails: HashMap<(usize, Op), u32>,
    /// Fail this (resource, op) always.
    broken: Option<(usize, Op)>,
}

impl World {
    fn new(resources: Vec<Resource>) -> World {
        World {
            g: Group::new(resources),
            now: Instant::ZERO,
            log: Vec::new(),
            fails: HashMap::new(),
            broken: None,
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.g.poll_action() {
            let name = self.g.resources()[a.resource].name.clone();
            let fail = self.broken == Some((a.resource, a.op))
                || self
                    .fails
                    .get_mut(&(a.resource, a.op))
                    .filter(|n| **n > 0)
                    .map(|n| *n -= 1)
                    .is_some();
            let op = match a.op {
                Op::Start => "start",
                Op::Stop => "stop",
                Op::Monitor => "monitor",
            };
            if a.op != Op::Monitor || fail {
                self.log.push(format!(
                    "{} {op} {name}{}",
                    self.now.saturating_since(Instant::ZERO).as_millis(),
                    if fail { " FAILS" } else { "" }
                ));
            }
            let result = if fail { Err("exit 1".into()) } else { Ok(()) };
            self.g.done(self.now, a.id, result);
        }
    }

    /// Runs every timer up to `until`.
    fn run_until(&mut self, until: Instant) {
        self.drain();
        while let Some(t) = self.g.poll_timeout().filter(|&t| t <= until) {
            self.now = self.now.max(t);
            self.g.tick(self.now);
            self.drain();
        }
        self.now = until;
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

#[test]
fn starts_in_order_once_the_peer_let_go_and_stops_in_reverse() {
    let mut w = World::new(three());
    w.g.set_wanted(ms(0), true);
    w.drain();
    assert!(
        w.take_log().is_empty(),
        "nothing starts before the peer let go"
    );
    assert!(w.g.waiting_for_peer());
    assert_eq!(w.g.holding(), Holding::Nothing);
    w.g.set_may_start(ms(10), true);
    w.now = ms(10);
    w.drain();
    assert_eq!(
        w.take_log(),
        ["10 start storage", "10 start app", "10 start proxy"]
    );
    assert!(w.g.all_running());
    assert_eq!(w.g.holding(), Holding::Running);
    // Monitors run and pass: nothing else happens.
    w.run_until(ms(5_000));
    assert!(w.take_log().is_empty());
    w.g.set_wanted(ms(5_000), false);
    w.drain();
    assert_eq!(
        w.take_log(),
        ["5000 stop proxy", "5000 stop app", "5000 stop storage"]
    );
    assert_eq!(w.g.holding(), Holding::Nothing);
}

#[test]
fn a_monitor_failure_restarts_the_resource_and_what_needs_it_never_what_it_needs() {
    let mut w = World::new(three());
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.run_until(ms(3_500));
    w.take_log();
    w.fails.insert((1, Op::Monitor), 1);
    w.run_until(ms(10_000));
    assert_eq!(
        w.take_log(),
        [
            "4000 monitor app FAILS",
            "4000 stop proxy",
            "4000 stop app",
            // The first restart waits one interval.
            "5000 start app",
            "5000 start proxy",
        ]
    );
    let events: Vec<Event> = std::iter::from_fn(|| w.g.poll_event()).collect();
    assert!(events.contains(&Event::Restarting(1, 1)), "{events:?}");
    assert!(w.g.all_running());
    assert_eq!(w.g.stepped_down(), None);
}

#[test]
fn failed_restarts_in_a_row_step_down_until_reset() {
    let mut w = World::new(three());
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.run_until(ms(1_500));
    w.take_log();
    // app's monitor fails from now on: each restart fails within its probation.
    w.broken = Some((1, Op::Monitor));
    w.run_until(ms(60_000));
    let log = w.take_log();
    assert_eq!(
        log,
        [
            "2000 monitor app FAILS",
            "2000 stop proxy",
            "2000 stop app",
            "3000 start app",
            "3000 start proxy",
            "4000 monitor app FAILS",
            "4000 stop proxy",
            "4000 stop app",
            // Backoff doubles: 2 s, then 4 s.
            "6000 start app",
            "6000 start proxy",
            "7000 monitor app FAILS",
            "7000 stop proxy",
            "7000 stop app",
            "11000 start app",
            "11000 start proxy",
            "12000 monitor app FAILS",
            // Three failed restarts: everything stops, in reverse.
            "12000 stop proxy",
            "12000 stop app",
            "12000 stop storage",
        ],
    );
    let why = w.g.stepped_down().expect("stepped down").to_string();
    assert!(
        why.starts_with("app: exit 1 (3 failed restart(s) in a row)"),
        "{why}"
    );
    assert_eq!(w.g.holding(), Holding::Nothing);
    assert_eq!(w.g.state(1), (State::Stopped, Some("exit 1")));
    // Still master in VRRP's eyes until the shell acts, but nothing starts again.
    w.run_until(ms(120_000));
    assert!(w.take_log().is_empty());
    // An operator fixed it and resets.
    w.broken = None;
    w.g.reset(ms(120_000));
    w.drain();
    assert_eq!(
        w.take_log(),
        [
            "120000 start storage",
            "120000 start app",
            "120000 start proxy"
        ]
    );
    assert_eq!(w.g.stepped_down(), None);
}

#[test]
fn with_no_restarts_allowed_the_first_failure_steps_down() {
    let mut res = three();
    res[2].restarts = 0;
    let mut w = World::new(res);
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.run_until(ms(1_500));
    w.take_log();
    w.fails.insert((2, Op::Monitor), 1);
    w.run_until(ms(3_000));
    assert_eq!(
        w.take_log(),
        [
            "2000 monitor proxy FAILS",
            "2000 stop proxy",
            "2000 stop app",
            "2000 stop storage"
        ]
    );
    assert!(w.g.stepped_down().is_some());
}

#[test]
fn a_good_spell_ends_the_streak() {
    let mut w = World::new(three());
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.run_until(ms(1_500));
    for failure in 0..6 {
        w.fails.insert((0, Op::Monitor), 1);
        // Long enough for the restart and three good monitors after it.
        w.run_until(w.now + Duration::from_secs(10));
        let events: Vec<Event> = std::iter::from_fn(|| w.g.poll_event()).collect();
        assert!(
            events.contains(&Event::Restarting(0, 1)),
            "failure {failure}: {events:?}"
        );
    }
    assert_eq!(w.g.stepped_down(), None);
    assert!(w.g.all_running());
}

#[test]
fn a_stop_that_fails_holds_the_peer_off_and_is_retried() {
    let mut w = World::new(three());
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.drain();
    w.take_log();
    w.fails.insert((0, Op::Stop), 2);
    w.g.set_wanted(ms(100), false);
    w.now = ms(100);
    w.drain();
    assert_eq!(w.g.holding(), Holding::StopFailed);
    assert_eq!(w.g.state(0).0, State::StopFailed);
    w.run_until(ms(5_000));
    assert_eq!(
        w.take_log(),
        [
            "100 stop proxy",
            "100 stop app",
            "100 stop storage FAILS",
            "1100 stop storage FAILS",
            "2100 stop storage"
        ]
    );
    assert_eq!(w.g.holding(), Holding::Nothing);
}

#[test]
fn a_failed_start_is_retried_with_backoff() {
    let mut w = World::new(three());
    w.fails.insert((1, Op::Start), 2);
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    w.run_until(ms(10_000));
    assert_eq!(
        w.take_log(),
        [
            "0 start storage",
            "0 start app FAILS",
            "1000 start app FAILS",
            "3000 start app",
            "3000 start proxy"
        ]
    );
    assert!(w.g.all_running());
}

#[test]
fn losing_mastership_during_a_start_stops_what_started() {
    let mut w = World::new(three());
    w.g.set_may_start(ms(0), true);
    w.g.set_wanted(ms(0), true);
    // The first start is running when mastership goes.
    let a = w.g.poll_action().unwrap();
    assert_eq!((a.resource, a.op), (0, Op::Start));
    w.g.set_wanted(ms(5), false);
    assert_eq!(w.g.holding(), Holding::Running);
    w.g.done(ms(50), a.id, Ok(()));
    let b = w.g.poll_action().unwrap();
    assert_eq!((b.resource, b.op), (0, Op::Stop));
    w.g.done(ms(60), b.id, Ok(()));
    assert_eq!(w.g.poll_action(), None);
    assert_eq!(w.g.holding(), Holding::Nothing);
    // A late answer for an operation that is not running is ignored.
    w.g.done(ms(70), a.id, Err("late".into()));
    assert_eq!(w.g.holding(), Holding::Nothing);
}

/// An input to the model run by the property test.
#[derive(Debug, Clone)]
enum Step {
    Wanted(bool),
    MayStart(bool),
    Reset,
    /// Finish the operation in flight: ok or failed.
    Finish(bool),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(Step::Wanted),
        any::<bool>().prop_map(Step::MayStart),
        Just(Step::Reset),
        any::<bool>().prop_map(Step::Finish),
        any::<bool>().prop_map(Step::Finish),
        any::<bool>().prop_map(Step::Finish),
        (1u64..5_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever happens: one operation at a time; a start only while wanted, allowed by
    /// the peer and not stepped down, and only once what it needs runs; a stop only once
    /// nothing that needs it runs; and once unwanted with every operation succeeding, the
    /// group ends with nothing running.
    #[test]
    fn the_rules_hold_under_any_schedule(steps in prop::collection::vec(step(), 1..120)) {
        let mut g = Group::new(three());
        let mut now = Instant::ZERO;
        let mut up = [false; 3];
        let mut wanted = false;
        let mut may = false;
        let mut inflight: Option<Action> = None;
        let check = |a: &Action, up: &[bool; 3], wanted: bool, may: bool, g: &Group| {
            let needs = &g.resources()[a.resource].needs;
            match a.op {
                Op::Start => {
                    assert!(wanted && may && g.stepped_down().is_none(), "{a:?}");
                    assert!(needs.iter().all(|&n| up[n]), "{a:?} {up:?}");
                }
                Op::Stop => {
                    let dependents_up = (0..3).any(|j| g.resources()[j].needs.contains(&a.resource) && up[j]);
                    assert!(!dependents_up, "{a:?} {up:?}");
                }
                Op::Monitor => assert!(up[a.resource]),
            }
        };
        for s in steps {
            match s {
                Step::Wanted(x) => { wanted = x; g.set_wanted(now, x); }
                Step::MayStart(x) => { may = x; g.set_may_start(now, x); }
                Step::Reset => g.reset(now),
                Step::Wait(d) => { now += Duration::from_millis(d); g.tick(now); }
                Step::Finish(ok) => {
                    if let Some(a) = inflight.take() {
                        match (a.op, ok) {
                            (Op::Start, true) => up[a.resource] = true,
                            (Op::Stop, true) => up[a.resource] = false,
                            _ => {}
                        }
                        g.done(now, a.id, if ok { Ok(()) } else { Err("no".into()) });
                    }
                }
            }
            if let Some(a) = g.poll_action() {
                prop_assert!(inflight.is_none(), "two operations at once");
                check(&a, &up, wanted, may, &g);
                inflight = Some(a);
            }
            prop_assert!(g.poll_action().is_none());
        }
        // Unwanted, and every operation succeeds: everything stops.
        g.set_wanted(now, false);
        for _ in 0..100 {
            if let Some(a) = inflight.take() {
                match a.op {
                    Op::Start => up[a.resource] = true,
                    Op::Stop => up[a.resource] = false,
                    Op::Monitor => {}
                }
                g.done(now, a.id, Ok(()));
            }
            now += Duration::from_secs(1);
            g.tick(now);
            if let Some(a) = g.poll_action() {
                check(&a, &up, false, may, &g);
                inflight = Some(a);
            }
        }
        prop_assert_eq!(up, [false; 3]);
        prop_assert_eq!(g.holding(), Holding::Nothing);
    }
}
