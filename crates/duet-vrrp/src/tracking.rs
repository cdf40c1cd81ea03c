//! Tracking arithmetic: how scripts, interfaces and files change an instance's priority.
//!
//! The rules are keepalived's, so existing configs mean the same thing:
//!
//! | tracker | healthy | failing |
//! |---|---|---|
//! | weight `w > 0` | priority `+ w` | no change |
//! | weight `w < 0` | no change | priority `+ w` (i.e. lower) |
//! | weight `0` | no change | instance goes to FAULT |
//! | track file, weight `w ≠ 0` | priority `+ value × w` | (value is the file's integer) |
//! | track file, weight `0` | value 0: no change | value ≠ 0: FAULT |
//!
//! A tracker that has not reported yet counts neither way. The sum of all adjustments is added to
//! the configured priority and the result is clamped to `1..=254`, so tracking can never make an
//! instance the address owner (255) nor silently stop it advertising (0). An address owner keeps
//! 255 whatever the weights say (RFC 9568 §6.1), though a FAULT still applies to it.

use std::fmt;

pub use duet_health::RiseFall;

/// The combined effect of every tracker of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedHealth {
    /// `Some(what)` when a weight-0 tracker fails: the instance must be in FAULT.
    pub fault: Option<String>,
    /// Sum of weight adjustments.
    pub delta: i32,
}

impl TrackedHealth {
    /// The effective priority for a configured `base` priority.
    pub fn apply(&self, base: u8) -> u8 {
        if base == crate::OWNER_PRIORITY {
            return base;
        }
        (i32::from(base) + self.delta).clamp(1, 254) as u8
    }
}

/// The current reading of one tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerReading {
    /// A script or interface: up (`Some(true)`), down, or not known yet.
    Health(Option<bool>),
    /// A track file's integer (0 when the file is missing, as keepalived does).
    Value(i64),
}

/// One tracker of an instance with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// What it is, for fault messages: `script web_up`, `interface eth1`, `file /run/x`.
    pub name: String,
    /// Its weight (see the module table).
    pub weight: i32,
    /// Its latest reading.
    pub reading: TrackerReading,
}

/// Combines trackers into the input for [`crate::Instance::set_tracking`].
pub fn combine<'a>(trackers: impl IntoIterator<Item = &'a Tracker>) -> TrackedHealth {
    let mut health = TrackedHealth::default();
    let mut faults = Vec::new();
    for t in trackers {
        match (&t.reading, t.weight) {
            (TrackerReading::Health(Some(false)), 0) => faults.push(format!("{} down", t.name)),
            (TrackerReading::Health(Some(true)), w) if w > 0 => {
                health.delta = health.delta.saturating_add(w)
            }
            (TrackerReading::Health(Some(false)), w) if w < 0 => {
                health.delta = health.delta.saturating_add(w)
            }
            (TrackerReading::Value(v), 0) if *v != 0 => {
                faults.push(format!("{} reads {v}", t.name))
            }
            (TrackerReading::Value(v), w) => {
                let product = v.saturating_mul(i64::from(w));
                let clamped = product.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                health.delta = health.delta.saturating_add(clamped);
            }
            _ => {}
        }
    }
    if !faults.is_empty() {
        health.fault = Some(faults.join(", "));
    }
    health
}

impl fmt::Display for TrackedHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fault {
            Some(fault) => write!(f, "FAULT ({fault})"),
            None => write!(f, "{:+}", self.delta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, weight: i32, reading: TrackerReading) -> Tracker {
        Tracker {
            name: name.into(),
            weight,
            reading,
        }
    }

    #[test]
    fn weights_follow_keepalived() {
        let up = TrackerReading::Health(Some(true));
        let down = TrackerReading::Health(Some(false));
        let h = combine(&[
            t("script a", -30, down.clone()),
            t("script b", 10, up.clone()),
            t("script c", 10, down.clone()),
            t("script d", -5, up.clone()),
            t("interface e", 0, up),
            t("file f", 2, TrackerReading::Value(-3)),
        ]);
        assert_eq!(h.fault, None);
        assert_eq!(h.delta, -30 + 10 - 6);
        assert_eq!(h.apply(150), 124);
        let h = combine(&[t("interface eth1", 0, down)]);
        assert_eq!(h.fault.as_deref(), Some("interface eth1 down"));
        let h = combine(&[t("file /x", 0, TrackerReading::Value(1))]);
        assert!(h.fault.is_some());
        let unknown = combine(&[t("script a", -30, TrackerReading::Health(None))]);
        assert_eq!(unknown, TrackedHealth::default());
    }

    #[test]
    fn priority_is_clamped_and_owner_ignores_weights() {
        let h = TrackedHealth {
            fault: None,
            delta: -500,
        };
        assert_eq!(h.apply(100), 1);
        let h = TrackedHealth {
            fault: None,
            delta: 500,
        };
        assert_eq!(h.apply(100), 254);
        assert_eq!(h.apply(255), 255);
        let h = TrackedHealth {
            fault: None,
            delta: -50,
        };
        assert_eq!(h.apply(255), 255);
    }
}
