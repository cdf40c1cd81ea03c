//! A service group: the resources that run on the master of one VRRP instance (a mount, a
//! systemd unit, an application), with no IO. The shell tells a [`Group`] whether this node
//! should run them ([`Group::set_wanted`]), whether the peer has let go of them
//! ([`Group::set_may_start`]) and how each operation it asked for ended ([`Group::done`]);
//! the group says which operation to run next ([`Group::poll_action`]), what happened
//! ([`Group::poll_event`]), and whether the node must give up mastership
//! ([`Group::stepped_down`]).
//!
//! Rules:
//! - One operation at a time. Resources start in order (each after the ones it needs) and
//!   stop in reverse; nothing starts before the peer has let go.
//! - A monitor failure restarts that resource in place, and the resources that need it (they
//!   stop first and start after it), never the ones it needs.
//! - A restart fails when its start fails, or when a monitor fails within three intervals of
//!   it. After `restarts` failed restarts in a row the group steps down: every resource stops
//!   in reverse order and the node gives up mastership until [`Group::reset`].
//! - A stop that fails is retried every interval, and the group reports
//!   [`Holding::StopFailed`] meanwhile, so that the peer does not start what may still run here.
//! - Restarts wait `interval × 2^(n−1)` before the n-th attempt (at most a minute).

use std::collections::VecDeque;
use std::time::Duration;

use duet_time::Instant;

/// One resource of a group.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Its name.
    pub name: String,
    /// Time between monitor runs.
    pub interval: Duration,
    /// Failed restarts in a row tolerated before the group steps down.
    pub restarts: u32,
    /// Indices of the resources it needs (started before it, stopped after it).
    pub needs: Vec<usize>,
    /// Whether it can be monitored.
    pub monitored: bool,
}

/// What to do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Ask whether it runs.
    Monitor,
}

/// An operation for the shell to run, then report with [`Group::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Names the operation in [`Group::done`].
    pub id: u64,
    /// Which resource.
    pub resource: usize,
    /// What to do.
    pub op: Op,
}

/// What happened, for logs, events and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A resource started.
    Started(usize),
    /// A resource stopped.
    Stopped(usize),
    /// A start failed.
    StartFailed(usize, String),
    /// A stop failed (it is retried; the peer is held off meanwhile).
    StopFailed(usize, String),
    /// A monitor run failed.
    MonitorFailed(usize, String),
    /// A resource is restarted in place (attempt `n` of the allowed restarts).
    Restarting(usize, u32),
    /// Too many failed restarts: the group stops and the node gives up mastership.
    SteppedDown(usize, String),
}

/// What this node holds, as its heartbeats tell the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Nothing runs here and nothing is being started or stopped.
    Nothing,
    /// Resources run here, or are being started or stopped.
    Running,
    /// A stop failed: what it should have stopped may still run here.
    StopFailed,
}

impl Holding {
    /// Its code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Holding::Nothing => 0,
            Holding::Running => 1,
            Holding::StopFailed => 2,
        }
    }

    /// From its code (an unknown code counts as still running).
    pub fn from_code(code: u8) -> Holding {
        match code {
            0 => Holding::Nothing,
            2 => Holding::StopFailed,
            _ => Holding::Running,
        }
    }
}

/// One resource's state, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running.
    Stopped,
    /// Its start runs.
    Starting,
    /// Running.
    Running,
    /// Its stop runs.
    Stopping,
    /// Its stop failed; retried.
    StopFailed,
    /// Waiting to be started again after a failure.
    Restarting,
}

impl State {
    /// As the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::StopFailed => "stop failed",
            State::Restarting => "restarting",
        }
    }
}

/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A monitor failure within this many intervals of a restart fails that restart.
const PROBATION: u32 = 3;

#[derive(Debug, Clone, Default)]
struct Res {
    up: bool,
    target: bool,
    next_monitor: Option<Instant>,
    /// Restarts attempted in the current streak.
    attempts: u32,
    /// Until when a monitor failure fails the last restart.
    probation_until: Option<Instant>,
    stop_failed: bool,
    /// A failed stop is tried again then.
    retry_stop: Option<Instant>,
    /// A restart starts it again then (after its stops).
    restart_at: Option<Instant>,
    last_error: Option<String>,
}

/// The group's decisions.
#[derive(Debug, Clone)]
pub struct Group {
    res: Vec<Resource>,
    /// Start order.
    order: Vec<usize>,
    st: Vec<Res>,
    wanted: bool,
    may_start: bool,
    stepped_down: Option<String>,
    inflight: Option<Action>,
    next_id: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Group {
    /// A group of `resources`, all stopped. `needs` must name earlier-started resources
    /// without a cycle (the config check ensures it); resources in a cycle never start.
    pub fn new(resources: Vec<Resource>) -> Group {
        let mut order: Vec<usize> = Vec::new();
        while order.len() < resources.len() {
            let next = (0..resources.len()).find(|&i| {
                !order.contains(&i) && resources[i].needs.iter().all(|n| order.contains(n))
            });
            match next {
                Some(i) => order.push(i),
                None => break,
            }
        }
        Group {
            st: vec![Res::default(); resources.len()],
            res: resources,
            order,
            wanted: false,
            may_start: false,
            stepped_down: None,
            inflight: None,
            next_id: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The resources.
    pub fn resources(&self) -> &[Resource] {
        &self.res
    }

    /// Whether this node should run the group (it is MASTER of the instance).
    pub fn set_wanted(&mut self, now: Instant, wanted: bool) {
        if wanted != self.wanted {
            self.wanted = wanted;
            for r in &mut self.st {
                // A new mastership starts a new streak; a lost one cancels pending restarts.
                r.attempts = 0;
                r.restart_at = None;
            }
            self.retarget();
            self.step(now);
        }
    }

    /// Whether the peer has let go of the group (it reported everything stopped, or it is
    /// known to be gone). Starts wait for it; stops never do.
    pub fn set_may_start(&mut self, now: Instant, may: bool) {
        if may != self.may_start {
            self.may_start = may;
            self.step(now);
        }
    }

    /// Clears a step-down (`duet service reset`): the group may run again when wanted.
    pub fn reset(&mut self, now: Instant) {
        self.stepped_down = None;
        for r in &mut self.st {
            r.attempts = 0;
            r.restart_at = None;
            r.last_error = None;
        }
        self.retarget();
        self.step(now);
    }

    /// Why the node gave up mastership, while it does.
    pub fn stepped_down(&self) -> Option<&str> {
        self.stepped_down.as_deref()
    }

    /// What the heartbeats say this node holds.
    pub fn holding(&self) -> Holding {
        if self.st.iter().any(|r| r.stop_failed) {
            Holding::StopFailed
        } else if self.st.iter().any(|r| r.up) || self.inflight.is_some() {
            Holding::Running
        } else {
            Holding::Nothing
        }
    }

    /// Whether every resource runs.
    pub fn all_running(&self) -> bool {
        self.st.iter().all(|r| r.up) && self.inflight.is_none()
    }

    /// Whether it waits for the peer to let go before it can start.
    pub fn waiting_for_peer(&self) -> bool {
        self.wanted && self.stepped_down.is_none() && !self.may_start && !self.all_running()
    }

    /// Resource `i`'s state and its last error.
    pub fn state(&self, i: usize) -> (State, Option<&str>) {
        let r = &self.st[i];
        let op = self.inflight.filter(|a| a.resource == i).map(|a| a.op);
        let state = match op {
            Some(Op::Start) => State::Starting,
            Some(Op::Stop) => State::Stopping,
            _ if r.stop_failed => State::StopFailed,
            _ if r.up => State::Running,
            _ if r.restart_at.is_some() => State::Restarting,
            _ => State::Stopped,
        };
        (state, r.last_error.as_deref())
    }

    /// The next operation to run.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Group::tick`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.inflight.is_some() {
            return None;
        }
        self.st
            .iter()
            .flat_map(|r| {
                [
                    r.retry_stop,
                    r.restart_at,
                    r.next_monitor.filter(|_| r.up && r.target),
                ]
            })
            .flatten()
            .min()
    }

    /// Runs what is due.
    pub fn tick(&mut self, now: Instant) {
        self.step(now);
    }

    /// How the operation `id` ended: `Ok(())`, or why it failed (a timeout is a failure).
    pub fn done(&mut self, now: Instant, id: u64, result: Result<(), String>) {
        let Some(a) = self.inflight.filter(|a| a.id == id) else {
            return;
        };
        self.inflight = None;
        let i = a.resource;
        let interval = self.res[i].interval;
        match (a.op, result) {
            (Op::Start, Ok(())) => {
                let r = &mut self.st[i];
                r.up = true;
                r.last_error = None;
                r.next_monitor = Some(now + interval);
                if self.res[i].monitored {
                    r.probation_until = Some(now + interval * PROBATION);
                } else {
                    r.attempts = 0;
                }
                self.events.push_back(Event::Started(i));
            }
            (Op::Start, Err(why)) => {
                self.st[i].last_error = Some(why.clone());
                self.events.push_back(Event::StartFailed(i, why.clone()));
                self.trouble(now, i, why);
            }
            (Op::Stop, Ok(())) => {
                let r = &mut self.st[i];
                r.up = false;
                r.stop_failed = false;
                r.next_monitor = None;
                self.events.push_back(Event::Stopped(i));
            }
            (Op::Stop, Err(why)) => {
                let r = &mut self.st[i];
                r.stop_failed = true;
                r.last_error = Some(why.clone());
                r.retry_stop = Some(now + interval);
                self.events.push_back(Event::StopFailed(i, why));
            }
            (Op::Monitor, Ok(())) => {
                let r = &mut self.st[i];
                r.next_monitor = Some(now + interval);
                if r.probation_until.is_some_and(|t| now >= t) {
                    r.probation_until = None;
                    r.attempts = 0;
                }
            }
            (Op::Monitor, Err(why)) if self.st[i].up && self.st[i].target => {
                let r = &mut self.st[i];
                r.last_error = Some(why.clone());
                self.events.push_back(Event::MonitorFailed(i, why.clone()));
                // It is not running: it must be started again (a stop first is harmless and
                // cleans up what a crash left).
                self.trouble(now, i, why);
            }
            // A monitor that ended after the resource was meant to stop says nothing.
            (Op::Monitor, Err(_)) => {}
        }
        self.step(now);
    }

    /// Resource `i` failed (`why`): restart it and what needs it, or step down.
    fn trouble(&mut self, now: Instant, i: usize, why: String) {
        let r = &mut self.st[i];
        let in_probation = r.probation_until.is_some_and(|t| now < t);
        if !in_probation && r.attempts > 0 && r.up {
            // A new incident after a good spell.
            r.attempts = 0;
        }
        if r.attempts >= self.res[i].restarts {
            let why = format!(
                "{}: {why} ({} failed restart(s) in a row)",
                self.res[i].name, r.attempts
            );
            self.stepped_down = Some(why.clone());
            self.events.push_back(Event::SteppedDown(i, why));
            self.retarget();
            return;
        }
        r.attempts += 1;
        let n = r.attempts;
        let backoff = (self.res[i].interval * 2u32.saturating_pow(n - 1)).min(MAX_BACKOFF);
        r.probation_until = None;
        self.events.push_back(Event::Restarting(i, n));
        // Stop it and everything that needs it; start them again after the backoff.
        for j in self.dependents(i) {
            self.st[j].target = false;
        }
        self.st[i].target = false;
        self.st[i].restart_at = Some(now + backoff);
    }

    /// Every resource that needs `i`, directly or not.
    fn dependents(&self, i: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let mut frontier = vec![i];
        while let Some(x) = frontier.pop() {
            for (j, r) in self.res.iter().enumerate() {
                if r.needs.contains(&x) && !out.contains(&j) {
                    out.push(j);
                    frontier.push(j);
                }
            }
        }
        out
    }

    fn retarget(&mut self) {
        let run = self.wanted && self.stepped_down.is_none();
        for r in &mut self.st {
            r.target = run;
            if run {
                // Kept after all: whether it runs is the monitor's to say.
                r.stop_failed = false;
                r.retry_stop = None;
            }
        }
    }

    /// Queues the next operation, if one is due and none runs.
    fn step(&mut self, now: Instant) {
        if self.inflight.is_some() {
            return;
        }
        let run = self.wanted && self.stepped_down.is_none();
        // A restart's stops are done and its wait is over: the group may start again.
        if run {
            for i in 0..self.st.len() {
                let r = &self.st[i];
                if !r.up
                    && r.restart_at.is_some_and(|t| now >= t)
                    && self.dependents(i).iter().all(|&j| !self.st[j].up)
                {
                    self.st[i].restart_at = None;
                    self.st[i].target = true;
                    for j in self.dependents(i) {
                        self.st[j].target = true;
                    }
                }
            }
        }
        // Stops first, last-started first; a resource stops once nothing that needs it runs.
        let stop = self.order.iter().rev().copied().find(|&i| {
            let r = &self.st[i];
            r.up && !r.target
                && r.retry_stop.is_none_or(|t| now >= t)
                && self.dependents(i).iter().all(|&j| !self.st[j].up)
        });
        let action = if let Some(i) = stop {
            self.st[i].retry_stop = None;
            Some((i, Op::Stop))
        } else if self.may_start && run {
            let start = self.order.iter().copied().find(|&i| {
                let r = &self.st[i];
                !r.up
                    && r.target
                    && r.restart_at.is_none()
                    && self.res[i].needs.iter().all(|&n| self.st[n].up)
            });
            start.map(|i| (i, Op::Start)).or_else(|| {
                self.order
                    .iter()
                    .copied()
                    .find(|&i| {
                        let r = &self.st[i];
                        self.res[i].monitored
                            && r.up
                            && r.target
                            && r.next_monitor.is_some_and(|t| now >= t)
                    })
                    .map(|i| (i, Op::Monitor))
            })
        } else {
            None
        };
        if let Some((resource, op)) = action {
            self.next_id += 1;
            let a = Action {
                id: self.next_id,
                resource,
                op,
            };
            self.inflight = Some(a);
            self.actions.push_back(a);
        }
    }
}

#[cfg(test)]
mod tests;
