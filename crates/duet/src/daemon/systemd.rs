//! The daemon's side of systemd's notifications (`Type=notify`, `WatchdogSec=`): `READY=1`
//! once the control loop runs, `STATUS=` whenever its one-line summary changes, `RELOADING=1`
//! and `READY=1` around a reload, `STOPPING=1` when it steps down.
//!
//! `WATCHDOG=1` is sent by the control loop itself, between its other work, never by a
//! timer thread of its own: a loop that stalls (a blocked call, a busy loop) stops feeding
//! the watchdog, and systemd kills and restarts the daemon; the guardian and the VIPs' kernel
//! lifetimes take the VIPs away meanwhile.

use std::time::Duration;

use duet_sys::notify::Notifier;
use duet_time::Instant;

/// Notifications to systemd, when it started the daemon with `Type=notify`.
#[derive(Debug)]
pub struct Systemd {
    notifier: Notifier,
    /// Half of `WatchdogSec=`, when set.
    every: Option<Duration>,
    next_ping: Option<Instant>,
    /// The last `STATUS=` sent.
    status: String,
}

impl Systemd {
    /// From `$NOTIFY_SOCKET`; `None` outside systemd (or, with a warning, when the variable
    /// is unusable).
    pub fn from_env() -> Option<Systemd> {
        match Notifier::from_env() {
            Ok(n) => n.map(|notifier| Systemd {
                every: notifier.watchdog(),
                notifier,
                next_ping: None,
                status: String::new(),
            }),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET is set but unusable, systemd is not told: {e}");
                None
            }
        }
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.notifier.send(state) {
            tracing::debug!("systemd notification {state:?} not sent: {e}");
        }
    }

    /// The control loop runs: the unit is started; the watchdog counts from now.
    pub fn ready(&mut self, now: Instant) {
        self.send("READY=1");
        self.ping(now);
    }

    /// When [`Systemd::tick`] must run next (the watchdog's next feed).
    pub fn deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Feeds the watchdog when due; called from the control loop between its other work.
    pub fn tick(&mut self, now: Instant) {
        if self.next_ping.is_some_and(|t| now >= t) {
            self.ping(now);
        }
    }

    fn ping(&mut self, now: Instant) {
        if let Some(every) = self.every {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
    }

    /// Sends `STATUS=line` if it changed.
    pub fn status(&mut self, line: String) {
        if line != self.status {
            self.send(&format!("STATUS={line}"));
            self.status = line;
        }
    }

    /// A reload starts.
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// A reload ended (applied or refused: the daemon runs either way).
    pub fn reloaded(&self) {
        self.send("READY=1");
    }

    /// The daemon steps down and exits.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// The one line `systemctl status` shows: each instance's state, the peers, the database.
pub fn summary(s: &duet_admin::Status) -> String {
    let mut parts: Vec<String> = s
        .vrrp
        .iter()
        .map(|v| format!("{} {}", v.name, v.state))
        .collect();
    if let Some(c) = &s.cluster {
        let alive = c.peers.iter().filter(|p| p.alive).count();
        parts.push(format!("peers {alive}/{} alive", c.peers.len()));
    }
    if let Some(d) = &s.database {
        parts.push(format!("database {}", d.role));
    }
    if s.maintenance.is_some() {
        parts.push("MAINTENANCE (automatic failover off)".into());
    }
    if parts.is_empty() {
        "running".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_each_instance_the_peers_and_maintenance() {
        let mut s = duet_admin::Status {
            vrrp: vec![
                duet_admin::VrrpStatus {
                    name: "web".into(),
                    state: "MASTER".into(),
                    ..Default::default()
                },
                duet_admin::VrrpStatus {
                    name: "db".into(),
                    state: "BACKUP".into(),
                    ..Default::default()
                },
            ],
            cluster: Some(duet_admin::ClusterStatus {
                peers: vec![duet_admin::PeerStatus {
                    alive: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(summary(&s), "web MASTER, db BACKUP, peers 1/1 alive");
        s.maintenance = Some(duet_admin::MaintenanceStatus {
            by: "ops".into(),
            version: 2,
        });
        assert!(summary(&s).ends_with(", MAINTENANCE (automatic failover off)"));
        assert_eq!(summary(&duet_admin::Status::default()), "running");
    }
}
