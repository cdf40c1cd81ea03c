//! Alerts: which events are worth telling a person, without flooding them.
//!
//! Pure: [`Gate::admit`] takes an event and the time and says whether it becomes an alert.
//! An event type must be listed in `alerts.on`; the same alert (type, subject and state) is
//! sent at most once per dedupe window, so a flapping check does not repeat itself; and at
//! most `per_minute` alerts leave per minute: the rest are counted, and the next alert that
//! leaves says how many were held back. Delivery (webhook, email) is the daemon's.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::{Event, EventKind};

/// Event types that can be alerts, in `alerts.on`.
pub use duet_config::ALERT_TYPES as TYPES;

/// One alert, as the webhook's JSON body carries it and the email says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The node that saw it.
    pub node: String,
    /// `critical` (a service or a guarantee is at risk), `warning` or `info` (recovered, or
    /// an operator's doing).
    pub severity: &'static str,
    /// One line.
    pub summary: String,
    /// Alerts held back by the rate limit since the last one that left.
    pub suppressed: u64,
    /// The event.
    pub event: Event,
}

/// How alerts are chosen.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Event types that alert.
    pub on: Vec<String>,
    /// The same alert at most once per this many milliseconds.
    pub dedupe_ms: u64,
    /// Alerts per minute at most.
    pub per_minute: u32,
}

/// The dedupe and rate-limit memory.
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    node: String,
    /// When each alert key last left.
    sent: HashMap<String, u64>,
    /// When the alerts of the last minute left.
    recent: VecDeque<u64>,
    suppressed: u64,
}

impl Gate {
    /// A gate for `node`'s alerts.
    pub fn new(node: &str, policy: Policy) -> Gate {
        Gate {
            policy,
            node: node.to_string(),
            sent: HashMap::new(),
            recent: VecDeque::new(),
            suppressed: 0,
        }
    }

    /// Whether `event`, at `now_ms`, becomes an alert, and which.
    pub fn admit(&mut self, now_ms: u64, event: &Event) -> Option<Alert> {
        let name = event.kind.name();
        if !self.policy.on.iter().any(|t| t == name) {
            return None;
        }
        let (severity, key) = classify(&event.kind)?;
        if self
            .sent
            .get(&key)
            .is_some_and(|t| now_ms.saturating_sub(*t) < self.policy.dedupe_ms)
        {
            return None;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.per_minute as usize {
            self.suppressed += 1;
            return None;
        }
        self.recent.push_back(now_ms);
        self.sent.insert(key, now_ms);
        // Forget keys older than the window: the map stays as small as the recent past.
        let window = self.policy.dedupe_ms;
        self.sent.retain(|_, t| now_ms.saturating_sub(*t) < window);
        Some(Alert {
            node: self.node.clone(),
            severity,
            summary: event.kind.to_string(),
            suppressed: std::mem::take(&mut self.suppressed),
            event: event.clone(),
        })
    }
}

/// An event's severity and dedupe key (type, subject and state); `None`: not alert-worthy
/// (a heartbeat link coming back is told by the peer's own event, a reload that worked…).
fn classify(kind: &EventKind) -> Option<(&'static str, String)> {
    Some(match kind {
        EventKind::Vrrp { instance, to, .. } => {
            let severity = match to.as_str() {
                "FAULT" => "critical",
                "MASTER" | "BACKUP" => "warning",
                _ => "info",
            };
            (severity, format!("vrrp {instance} {to}"))
        }
        EventKind::Link { peer, link, up } => (
            if *up { "info" } else { "warning" },
            format!("link {peer} {link} {up}"),
        ),
        EventKind::Peer { peer, state } => (
            if state == "silent" {
                "critical"
            } else {
                "info"
            },
            format!("peer {peer} {state}"),
        ),
        EventKind::Lease { state, .. } => (
            match state.as_str() {
                "lost" | "degraded" => "critical",
                _ => "info",
            },
            format!("lease {state}"),
        ),
        EventKind::Backend {
            balancer,
            backend,
            state,
            ..
        } => (
            if state == "down" { "warning" } else { "info" },
            format!("backend {balancer} {backend} {state}"),
        ),
        EventKind::Database { what, .. } => (
            match what.as_str() {
                "promoted" | "fenced" | "failed" => "critical",
                "refused" => "warning",
                _ => return None,
            },
            format!("database {what}"),
        ),
        EventKind::Lag { above, .. } => (
            if *above { "warning" } else { "info" },
            format!("lag {above}"),
        ),
        EventKind::Hook { instance, hook, .. } => ("warning", format!("hook {instance} {hook}")),
        EventKind::Maintenance { enabled, .. } => ("warning", format!("maintenance {enabled}")),
        EventKind::Config { peer, same } => (
            if *same { "info" } else { "warning" },
            format!("config {peer} {same}"),
        ),
        EventKind::Service { service, state, .. } => (
            match state.as_str() {
                "stepped down" | "stop failed" => "critical",
                "start failed" | "monitor failed" => "warning",
                _ => return None,
            },
            format!("service {service} {state}"),
        ),
        EventKind::Reload { ok: false, .. } => ("warning", "reload refused".into()),
        EventKind::Reload { ok: true, .. }
        | EventKind::Daemon { .. }
        | EventKind::Operator { .. } => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            unix_ms: 0,
            kind,
        }
    }

    fn backend(state: &str) -> EventKind {
        EventKind::Backend {
            balancer: "web".into(),
            backend: "10.0.0.11:80".into(),
            state: state.into(),
            reason: String::new(),
        }
    }

    fn gate(per_minute: u32) -> Gate {
        Gate::new(
            "alpha",
            Policy {
                on: TYPES.iter().map(|t| t.to_string()).collect(),
                dedupe_ms: 60_000,
                per_minute,
            },
        )
    }

    #[test]
    fn a_flapping_backend_alerts_once_per_state_per_window() {
        let mut g = gate(100);
        let mut sent = Vec::new();
        // Down and up every second for two minutes.
        for s in 0..120u64 {
            let state = if s % 2 == 0 { "down" } else { "up" };
            if let Some(a) = g.admit(s * 1000, &event(s, backend(state))) {
                sent.push((s, a.severity));
            }
        }
        assert_eq!(
            sent,
            [(0, "warning"), (1, "info"), (60, "warning"), (61, "info")],
            "one down and one up per minute"
        );
    }

    #[test]
    fn beyond_the_rate_the_rest_are_counted_and_said_with_the_next() {
        let mut g = gate(3);
        let mut left = Vec::new();
        for n in 0..10u64 {
            let kind = EventKind::Vrrp {
                instance: format!("vip{n}"),
                from: "BACKUP".into(),
                to: "MASTER".into(),
                reason: "master down".into(),
                priority: 100,
            };
            left.extend(g.admit(n * 100, &event(n, kind)));
        }
        assert_eq!(left.len(), 3);
        // A minute later the next leaves and says how many were held back.
        let a = g
            .admit(61_000, &event(11, backend("down")))
            .expect("room again");
        assert_eq!(a.suppressed, 7);
        assert_eq!(a.node, "alpha");
        assert_eq!(a.summary, "web: backend 10.0.0.11:80 is down");
    }

    #[test]
    fn only_listed_types_and_alert_worthy_events_alert() {
        let mut g = Gate::new(
            "alpha",
            Policy {
                on: vec!["lease".into()],
                dedupe_ms: 0,
                per_minute: 100,
            },
        );
        assert!(
            g.admit(0, &event(1, backend("down"))).is_none(),
            "not listed"
        );
        let lost = EventKind::Lease {
            state: "lost".into(),
            term: 3,
            detail: String::new(),
        };
        assert_eq!(g.admit(1, &event(2, lost)).unwrap().severity, "critical");
        let mut all = gate(100);
        let ok_reload = EventKind::Reload {
            ok: true,
            message: "x".into(),
        };
        assert!(all.admit(0, &event(3, ok_reload)).is_none());
        let json = serde_json::to_value(all.admit(0, &event(4, backend("down"))).unwrap()).unwrap();
        assert_eq!(json["event"]["type"], "backend");
        assert_eq!(json["severity"], "warning");
    }
}
