//! The health of one backend: active checks (rise/fall), passive failure accounting, slow start
//! after recovery, and the operator's drain / disable.
//!
//! A backend is *up* unless active checks say it is down or passive failures took it out. It
//! takes *new* requests only when it is up and enabled; a draining backend finishes what it has.

use std::time::Duration;

use duet_time::Instant;

use crate::RiseFall;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admin {
    /// Normal service.
    #[default]
    Enabled,
    /// Finish in-flight requests, take no new ones.
    Draining,
}

/// How one request to the backend ended, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that was not a server error.
    Success,
    /// The connection could not be made (refused, unreachable, timed out).
    ConnectFailed,
    /// The backend closed or reset the connection before a complete response.
    Reset,
    /// The response could not be parsed.
    BadResponse,
    /// A 5xx status.
    ServerError,
    /// No response within the server timeout.
    Timeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ConnectFailed => "connection failed",
            Outcome::Reset => "connection reset",
            Outcome::BadResponse => "malformed response",
            Outcome::ServerError => "5xx response",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Health rules of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Passing checks needed to come back up.
    pub rise: u32,
    /// Failing checks needed to go down.
    pub fall: u32,
    /// Whether active checks run (then they, not a timer, bring a passively failed backend back).
    pub active_checks: bool,
    /// Consecutive failed requests that take a backend out; 0 disables passive checks.
    pub passive_failures: u32,
    /// Without active checks: how long a passively failed backend stays out.
    pub passive_cooldown: Duration,
    /// After coming back up, the weight ramps from ~0 to full over this long.
    pub slow_start: Duration,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            rise: 2,
            fall: 3,
            active_checks: true,
            passive_failures: 3,
            passive_cooldown: Duration::from_secs(10),
            slow_start: Duration::ZERO,
        }
    }
}

/// An up/down change, for logs, metrics and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new state.
    pub up: bool,
    /// Why.
    pub reason: String,
}

/// Health state of one backend.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    policy: HealthPolicy,
    active: RiseFall,
    passive_streak: u32,
    passive_down_until: Option<Instant>,
    up_since: Option<Instant>,
    admin: Admin,
}

impl BackendHealth {
    /// A backend that counts as up until a check or a request says otherwise (as HAProxy does:
    /// a fresh start must not answer 503 while the first checks run).
    pub fn new(policy: HealthPolicy) -> BackendHealth {
        let active = RiseFall::new(policy.rise, policy.fall);
        BackendHealth {
            policy,
            active,
            passive_streak: 0,
            passive_down_until: None,
            up_since: None,
            admin: Admin::Enabled,
        }
    }

    /// Whether the backend is healthy.
    pub fn is_up(&self, now: Instant) -> bool {
        self.active.is_up() != Some(false) && self.passive_down_until.is_none_or(|t| now >= t)
    }

    /// Whether new requests may go to it.
    pub fn accepts_new(&self, now: Instant) -> bool {
        self.admin == Admin::Enabled && self.is_up(now)
    }

    /// Consecutive failed requests so far (0 after any success).
    pub fn failure_streak(&self) -> u32 {
        self.passive_streak
    }

    /// The operator's setting.
    pub fn admin(&self) -> Admin {
        self.admin
    }

    /// Drain or re-enable.
    pub fn set_admin(&mut self, admin: Admin) {
        self.admin = admin;
    }

    /// Applies new rules (a reload) and keeps what is known: the current up/down state, the
    /// failure streak and the operator's setting.
    pub fn set_policy(&mut self, policy: HealthPolicy) {
        if policy == self.policy {
            return;
        }
        let mut active = RiseFall::new(policy.rise, policy.fall);
        if let Some(up) = self.active.is_up() {
            active.set(up);
        }
        self.active = active;
        if !policy.active_checks && self.policy.active_checks && self.active.is_up() == Some(false)
        {
            // Nothing would ever bring it back: start over as up, as a fresh backend does.
            self.active = RiseFall::new(policy.rise, policy.fall);
        }
        self.policy = policy;
    }

    /// `weight` scaled by slow start: from 1 right after recovery up to `weight` after
    /// `slow_start`.
    pub fn effective_weight(&self, weight: u32, now: Instant) -> u32 {
        let (Some(since), false) = (self.up_since, self.policy.slow_start.is_zero()) else {
            return weight;
        };
        let elapsed = now.saturating_since(since);
        if elapsed >= self.policy.slow_start || weight == 0 {
            return weight;
        }
        let scaled = u128::from(weight) * elapsed.as_nanos() / self.policy.slow_start.as_nanos();
        (scaled as u32).max(1)
    }

    /// When [`BackendHealth::handle_timeout`] must be called (end of a passive cooldown).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.policy.active_checks {
            None
        } else {
            self.passive_down_until
        }
    }

    /// Ends a passive cooldown whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Change> {
        let until = self.passive_down_until?;
        if now < until || self.policy.active_checks {
            return None;
        }
        self.passive_down_until = None;
        self.passive_streak = 0;
        self.came_up(now);
        Some(Change {
            up: true,
            reason: "passive cooldown over".into(),
        })
    }

    /// Records an active check result.
    pub fn record_check(&mut self, now: Instant, passed: bool, detail: &str) -> Option<Change> {
        let was_up = self.is_up(now);
        if let Some(up) = self.active.record(passed)
            && up
        {
            self.passive_down_until = None;
            self.passive_streak = 0;
        }
        self.change(now, was_up, || {
            if passed {
                "check passed".to_string()
            } else {
                format!("check failed: {detail}")
            }
        })
    }

    /// Records how a request ended (passive checks).
    pub fn record_outcome(&mut self, now: Instant, outcome: Outcome) -> Option<Change> {
        if outcome == Outcome::Success {
            self.passive_streak = 0;
            return None;
        }
        if self.policy.passive_failures == 0 {
            return None;
        }
        let was_up = self.is_up(now);
        self.passive_streak += 1;
        if self.passive_streak < self.policy.passive_failures || !was_up {
            return None;
        }
        if self.policy.active_checks {
            // Out until the checks pass `rise` times.
            self.active.set(false);
            self.passive_down_until = None;
        } else {
            self.passive_down_until = Some(now + self.policy.passive_cooldown);
        }
        let streak = self.passive_streak;
        self.change(now, was_up, || {
            format!("{streak} failed requests in a row ({})", outcome.label())
        })
    }

    fn change(
        &mut self,
        now: Instant,
        was_up: bool,
        reason: impl FnOnce() -> String,
    ) -> Option<Change> {
        let up = self.is_up(now);
        if up == was_up {
            return None;
        }
        if up {
            self.came_up(now);
        } else {
            self.up_since = None;
        }
        Some(Change {
            up,
            reason: reason(),
        })
    }

    fn came_up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn a_new_policy_keeps_the_state_and_the_operator_setting() {
        let mut b = BackendHealth::new(HealthPolicy::default());
        b.record_check(t(0), false, "refused");
        b.set_admin(Admin::Draining);
        b.set_policy(HealthPolicy {
            rise: 1,
            ..HealthPolicy::default()
        });
        assert!(!b.is_up(t(1)), "still down after a reload");
        assert_eq!(b.admin(), Admin::Draining);
        // The new rise of 1 applies: one passing check brings it back.
        assert!(b.record_check(t(2), true, "").unwrap().up);
        // Active checks switched off: a backend they had taken down must not stay down forever.
        b.record_check(t(3), false, "x");
        b.record_check(t(4), false, "x");
        b.record_check(t(5), false, "x");
        assert!(!b.is_up(t(5)));
        b.set_policy(HealthPolicy {
            active_checks: false,
            ..HealthPolicy::default()
        });
        assert!(b.is_up(t(6)));
    }

    #[test]
    fn active_checks_rise_and_fall() {
        let mut b = BackendHealth::new(HealthPolicy::default());
        assert!(b.accepts_new(t(0)));
        assert_eq!(b.record_check(t(0), true, ""), None);
        assert_eq!(b.record_check(t(1), false, "503"), None);
        assert_eq!(b.record_check(t(2), false, "503"), None);
        let down = b.record_check(t(3), false, "503").unwrap();
        assert!(!down.up && down.reason.contains("503"));
        assert!(!b.accepts_new(t(3)));
        assert_eq!(b.record_check(t(4), true, ""), None);
        assert!(b.record_check(t(5), true, "").unwrap().up);
    }

    #[test]
    fn passive_failures_take_it_out_until_checks_pass() {
        let mut b = BackendHealth::new(HealthPolicy::default());
        b.record_check(t(0), true, "");
        assert_eq!(b.record_outcome(t(1), Outcome::Reset), None);
        assert_eq!(b.record_outcome(t(2), Outcome::Success), None); // streak broken
        b.record_outcome(t(3), Outcome::ConnectFailed);
        b.record_outcome(t(4), Outcome::ConnectFailed);
        let down = b.record_outcome(t(5), Outcome::ConnectFailed).unwrap();
        assert!(!down.up);
        assert!(
            down.reason
                .contains("3 failed requests in a row (connection failed)")
        );
        assert!(
            !b.is_up(t(100_000)),
            "active checks, not time, bring it back"
        );
        b.record_check(t(6), true, "");
        assert!(b.record_check(t(7), true, "").unwrap().up);
    }

    #[test]
    fn without_active_checks_a_cooldown_brings_it_back() {
        let policy = HealthPolicy {
            active_checks: false,
            passive_failures: 2,
            passive_cooldown: Duration::from_secs(10),
            ..HealthPolicy::default()
        };
        let mut b = BackendHealth::new(policy);
        b.record_outcome(t(0), Outcome::ServerError);
        assert!(!b.record_outcome(t(1), Outcome::ServerError).unwrap().up);
        assert_eq!(b.poll_timeout(), Some(t(10_001)));
        assert_eq!(b.handle_timeout(t(5_000)), None);
        assert!(!b.is_up(t(5_000)));
        assert!(b.handle_timeout(t(10_001)).unwrap().up);
        assert!(b.accepts_new(t(10_001)));
    }

    #[test]
    fn slow_start_ramps_the_weight_after_recovery() {
        let policy = HealthPolicy {
            rise: 1,
            fall: 1,
            slow_start: Duration::from_secs(10),
            ..HealthPolicy::default()
        };
        let mut b = BackendHealth::new(policy);
        assert_eq!(b.effective_weight(100, t(0)), 100, "no ramp at start");
        b.record_check(t(0), false, "down");
        b.record_check(t(1_000), true, "");
        assert_eq!(b.effective_weight(100, t(1_000)), 1);
        assert_eq!(b.effective_weight(100, t(6_000)), 50);
        assert_eq!(b.effective_weight(100, t(11_000)), 100);
    }

    #[test]
    fn draining_keeps_it_up_but_takes_no_new_requests() {
        let mut b = BackendHealth::new(HealthPolicy::default());
        b.set_admin(Admin::Draining);
        assert!(b.is_up(t(0)));
        assert!(!b.accepts_new(t(0)));
        b.set_admin(Admin::Enabled);
        assert!(b.accepts_new(t(0)));
    }
}
