//! `[[service]]` groups in the daemon: one `duet_service::Group` per VRRP instance that has
//! services, told whether this node is that instance's master and whether the peer has let
//! go of the group (its heartbeats say it holds nothing, or it is gone), and the operations
//! the group asks for, run as child processes with the service's timeout:
//!
//! - exec: the `start`, `stop` and `monitor` commands;
//! - systemd: `systemctl start`, `stop`, `is-active --quiet` of the unit;
//! - mount: `mount -t FSTYPE [-o OPTIONS] DEVICE MOUNTPOINT` unless mounted there already,
//!   `umount MOUNTPOINT` unless not mounted, and the mount table for monitoring.
//!
//! The operations run on the hooks thread (`Hooks::spawn`, `hooks::run_command`: the
//! process group is killed on timeout, the last stderr line kept), never on the control
//! loop's. Each operation's end comes back to the control loop as [`Input::Service`]. A group that
//! steps down puts its instance in FAULT (the peer takes over) until `duet service reset`.

use duet_config::{Config, ServiceConfig, ServiceKind};
use duet_service::{Event, Group, Op, Resource};
use duet_time::Instant;
use std::path::Path;

use super::hooks::Hooks;
use super::input::{Inbox, Input};

/// The heartbeat id of the `follows = "cluster"` group (the cluster's leadership resource,
/// which the database uses too: VRRP ids are 1..=255).
pub const CLUSTER_ID: u8 = duet_cluster::quorum::DATABASE;

struct Slot {
    follows: String,
    vrid: u8,
    specs: Vec<ServiceConfig>,
    group: Group,
    /// The step-down reason last applied to the instance.
    fault: Option<String>,
    /// Whether "waiting for the peer" was last said.
    waiting: bool,
    /// The service whose failures made the group step down.
    culprit: String,
}

/// Every service group of the node.
pub struct Services {
    slots: Vec<Slot>,
    /// For the guardian: services that started (with the command that stops them) or
    /// stopped since last taken.
    guardian: Vec<duet_sys::guardian::Command>,
    /// Where the operations run.
    hooks: Hooks,
}

impl Services {
    /// The groups of `cfg`, all stopped.
    pub fn new(cfg: &Config, hooks: Hooks) -> Services {
        let slots = cfg
            .vrrp
            .iter()
            .map(|v| (v.name.as_str(), v.vrid))
            .chain([(duet_config::service::CLUSTER, CLUSTER_ID)])
            .filter_map(|(follows, vrid)| {
                let specs: Vec<ServiceConfig> = duet_config::service::start_order(cfg, follows)
                    .into_iter()
                    .cloned()
                    .collect();
                if specs.is_empty() {
                    return None;
                }
                let resources = specs
                    .iter()
                    .map(|s| Resource {
                        name: s.name.clone(),
                        interval: s.interval.0,
                        restarts: s.restarts,
                        needs: s
                            .after
                            .iter()
                            .filter_map(|a| specs.iter().position(|o| o.name == *a))
                            .collect(),
                        monitored: s.kind != ServiceKind::Exec || s.monitor.is_some(),
                    })
                    .collect();
                Some(Slot {
                    follows: follows.to_string(),
                    vrid,
                    specs,
                    group: Group::new(resources),
                    fault: None,
                    waiting: false,
                    culprit: String::new(),
                })
            })
            .collect();
        Services {
            slots,
            guardian: Vec::new(),
            hooks,
        }
    }

    /// Whether the node has no services.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether a group follows the cluster's leadership (`follows = "cluster"`).
    pub fn follows_cluster(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.follows == duet_config::service::CLUSTER)
    }

    /// What the guardian must learn: how to stop each service that started, and which
    /// stopped (it stops the running ones if the daemon dies).
    pub fn take_guardian(&mut self) -> Vec<duet_sys::guardian::Command> {
        std::mem::take(&mut self.guardian)
    }

    /// Feeds every group this node's mastership (`master(instance)`) and whether the peer
    /// let go (`may_start(vrid)`), runs what is due, and reports what happened. Returns true
    /// when a group's step-down changed (the instance's FAULT follows it).
    pub fn update(
        &mut self,
        now: Instant,
        master: impl Fn(&str) -> bool,
        may_start: impl Fn(u8) -> bool,
        inbox: &Inbox,
        events: &duet_admin::Events,
    ) -> bool {
        let mut changed = false;
        for (g, slot) in self.slots.iter_mut().enumerate() {
            slot.group.set_wanted(now, master(&slot.follows));
            slot.group.set_may_start(now, may_start(slot.vrid));
            slot.group.tick(now);
            changed |= slot.after(g, inbox, events, &mut self.guardian, &self.hooks);
        }
        changed
    }

    /// An operation ended.
    pub fn done(
        &mut self,
        now: Instant,
        group: usize,
        id: u64,
        result: Result<(), String>,
        inbox: &Inbox,
        events: &duet_admin::Events,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(group) else {
            return false;
        };
        slot.group.done(now, id, result);
        slot.after(group, inbox, events, &mut self.guardian, &self.hooks)
    }

    /// When [`Services::update`] must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.group.poll_timeout())
            .min()
    }

    /// Why `instance` must not be master (its group stepped down), if it must not.
    pub fn fault_of(&self, instance: &str) -> Option<String> {
        self.slots
            .iter()
            .find(|s| s.follows == instance)
            .and_then(|s| Some((s.group.stepped_down()?, &s.culprit)))
            .map(|(why, name)| format!("service {why}; after fixing it: duet service reset {name}"))
    }

    /// What this node holds of each group, for its heartbeats.
    pub fn holdings(&self) -> Vec<(u8, u8)> {
        self.slots
            .iter()
            .map(|s| (s.vrid, s.group.holding().code()))
            .collect()
    }

    /// For `GET /v1/status`.
    pub fn status(&self) -> Vec<duet_admin::ServiceStatus> {
        self.slots
            .iter()
            .flat_map(|slot| {
                slot.specs.iter().enumerate().map(|(i, s)| {
                    let (state, error) = slot.group.state(i);
                    duet_admin::ServiceStatus {
                        name: s.name.clone(),
                        follows: slot.follows.clone(),
                        kind: s.kind.as_str().into(),
                        state: state.as_str().into(),
                        error: error.map(String::from),
                        waiting_for_peer: slot.group.waiting_for_peer(),
                        stepped_down: slot.group.stepped_down().map(String::from),
                    }
                })
            })
            .collect()
    }

    /// `duet service reset NAME`: the group of `name` may run again.
    pub fn reset(
        &mut self,
        now: Instant,
        name: &str,
        inbox: &Inbox,
        events: &duet_admin::Events,
    ) -> Result<String, duet_admin::ActionError> {
        let Some(g) = self
            .slots
            .iter()
            .position(|s| s.specs.iter().any(|x| x.name == name))
        else {
            return Err(duet_admin::ActionError {
                status: 404,
                message: format!("no service named {name:?}"),
            });
        };
        let slot = &mut self.slots[g];
        let was = slot.group.stepped_down().is_some();
        slot.group.reset(now);
        events.emit(duet_admin::EventKind::Service {
            service: name.into(),
            state: "reset".into(),
            detail: String::new(),
        });
        slot.after(g, inbox, events, &mut self.guardian, &self.hooks);
        Ok(if was {
            format!("{} may run again on this node", slot.follows)
        } else {
            format!("{} had not stepped down; nothing to reset", slot.follows)
        })
    }

    /// At shutdown: stops every service that may run here, in reverse order, waiting for
    /// each (its timeout bounds it). Blocking: nothing else runs then. Returns what the
    /// goodbye heartbeat says this node still holds.
    pub fn stop_all(&mut self) -> Vec<(u8, u8)> {
        let mut holdings = Vec::new();
        for slot in &mut self.slots {
            let held: Vec<usize> = (0..slot.specs.len())
                .rev()
                .filter(|&i| slot.group.state(i).0 != duet_service::State::Stopped)
                .collect();
            let mut failed = false;
            for i in held {
                let spec = &slot.specs[i];
                match run_blocking(spec, Op::Stop) {
                    Ok(()) => tracing::info!("service {} stopped", spec.name),
                    Err(e) => {
                        failed = true;
                        tracing::error!("service {} did not stop: {e}", spec.name);
                    }
                }
            }
            let h = if failed {
                duet_service::Holding::StopFailed
            } else {
                duet_service::Holding::Nothing
            };
            holdings.push((slot.vrid, h.code()));
        }
        holdings
    }
}

impl Slot {
    /// Starts the operations the group asks for and reports its events. True when the
    /// group's step-down changed.
    fn after(
        &mut self,
        g: usize,
        inbox: &Inbox,
        events: &duet_admin::Events,
        guardian: &mut Vec<duet_sys::guardian::Command>,
        hooks: &Hooks,
    ) -> bool {
        while let Some(a) = self.group.poll_action() {
            let spec = self.specs[a.resource].clone();
            let inbox = inbox.clone();
            let job = hooks.spawn(async move { run(&spec, a.op).await });
            tokio::spawn(async move {
                let result = job
                    .await
                    .unwrap_or_else(|e| Err(format!("the operation did not finish: {e}")));
                let _ = inbox
                    .send(Input::Service {
                        group: g,
                        id: a.id,
                        result,
                    })
                    .await;
            });
        }
        while let Some(e) = self.group.poll_event() {
            let (i, state, detail) = match e {
                Event::Started(i) => (i, "started", String::new()),
                Event::Stopped(i) => (i, "stopped", String::new()),
                Event::StartFailed(i, why) => (i, "start failed", why),
                Event::StopFailed(i, why) => (i, "stop failed", why),
                Event::MonitorFailed(i, why) => (i, "monitor failed", why),
                Event::Restarting(i, n) => (
                    i,
                    "restarting",
                    format!("restart {n} of {}", self.specs[i].restarts),
                ),
                Event::SteppedDown(i, why) => {
                    self.culprit = self.specs[i].name.clone();
                    (i, "stepped down", why)
                }
            };
            let name = &self.specs[i].name;
            match state {
                "started" => guardian.push(duet_sys::guardian::Command::Stop {
                    service: name.clone(),
                    timeout_ms: self.specs[i].timeout.0.as_millis() as u64,
                    argv: stop_argv(&self.specs[i]),
                }),
                "stopped" => guardian.push(duet_sys::guardian::Command::NoStop {
                    service: name.clone(),
                }),
                _ => {}
            }
            match state {
                "started" | "stopped" | "restarting" => {
                    tracing::info!("service {name}: {state} {detail}")
                }
                _ => tracing::warn!("service {name}: {state}: {detail}"),
            }
            events.emit(duet_admin::EventKind::Service {
                service: name.clone(),
                state: state.into(),
                detail,
            });
        }
        let waiting = self.group.waiting_for_peer();
        if waiting && !self.waiting {
            tracing::info!(
                "{}: master, waiting for the peer to report its services stopped",
                self.follows
            );
            events.emit(duet_admin::EventKind::Service {
                service: self
                    .specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                state: "waiting".into(),
                detail: "for the peer to report them stopped".into(),
            });
        }
        self.waiting = waiting;
        let fault = self.group.stepped_down().map(String::from);
        let changed = fault != self.fault;
        self.fault = fault;
        changed
    }
}

/// The command that stops `spec` whatever its state, for the guardian.
fn stop_argv(spec: &ServiceConfig) -> Vec<String> {
    match spec.kind {
        ServiceKind::Exec => spec.stop.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
        ServiceKind::Systemd => vec![
            "systemctl".into(),
            "stop".into(),
            spec.unit.clone().unwrap_or_default(),
        ],
        ServiceKind::Mount => vec![
            "umount".into(),
            spec.mountpoint
                .clone()
                .unwrap_or_default()
                .display()
                .to_string(),
        ],
    }
}

/// The program and arguments of `op` on `spec`; `None`: answered without a process (a
/// mount already in the state asked for).
fn argv(spec: &ServiceConfig, op: Op) -> Option<Vec<String>> {
    let s = |x: &str| x.to_string();
    match spec.kind {
        ServiceKind::Exec => match op {
            Op::Start => spec.start.as_ref().map(|c| c.0.clone()),
            Op::Stop => spec.stop.as_ref().map(|c| c.0.clone()),
            Op::Monitor => spec.monitor.as_ref().map(|c| c.0.clone()),
        },
        ServiceKind::Systemd => {
            let unit = spec.unit.clone().unwrap_or_default();
            Some(match op {
                Op::Start => vec![s("systemctl"), s("start"), unit],
                Op::Stop => vec![s("systemctl"), s("stop"), unit],
                Op::Monitor => vec![s("systemctl"), s("is-active"), s("--quiet"), unit],
            })
        }
        ServiceKind::Mount => {
            let point = spec.mountpoint.clone().unwrap_or_default();
            let mounted = is_mounted(&point);
            match op {
                Op::Start if mounted => None,
                Op::Start => {
                    let mut a = vec![s("mount"), s("-t"), spec.fstype.clone().unwrap_or_default()];
                    if let Some(o) = &spec.options {
                        a.extend([s("-o"), o.clone()]);
                    }
                    a.push(spec.device.clone().unwrap_or_default());
                    a.push(point.display().to_string());
                    Some(a)
                }
                Op::Stop if !mounted => None,
                Op::Stop => Some(vec![s("umount"), point.display().to_string()]),
                // Answered from the mount table below.
                Op::Monitor => None,
            }
        }
    }
}

/// Whether something is mounted at `point` (in this process's mount namespace).
fn is_mounted(point: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let norm = |s: &str| {
        let t = s.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    let want = norm(&point.to_string_lossy());
    table.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| norm(&unescape_mount(m)) == want)
    })
}

/// The kernel writes spaces, tabs, newlines and backslashes in mount paths as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The answer when no process runs: a mount's monitor, or a mount already as asked.
fn without_process(spec: &ServiceConfig, op: Op) -> Result<(), String> {
    match (spec.kind, op) {
        (ServiceKind::Mount, Op::Monitor) => {
            let point = spec.mountpoint.clone().unwrap_or_default();
            if is_mounted(&point) {
                Ok(())
            } else {
                Err(format!("nothing is mounted at {}", point.display()))
            }
        }
        _ => Ok(()),
    }
}

/// Runs `op` on `spec` with its timeout (on the hooks thread).
async fn run(spec: &ServiceConfig, op: Op) -> Result<(), String> {
    match argv(spec, op) {
        Some(argv) => {
            super::hooks::run_command(&argv, &[("DUET_SERVICE", &spec.name)], spec.timeout.0).await
        }
        None => without_process(spec, op),
    }
}

/// [`run`], blocking (at shutdown).
fn run_blocking(spec: &ServiceConfig, op: Op) -> Result<(), String> {
    let Some(argv) = argv(spec, op) else {
        return without_process(spec, op);
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env("DUET_SERVICE", &spec.name);
    duet_sys::process::run_with_timeout(&mut cmd, spec.timeout.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn mount_paths_are_unescaped_as_the_kernel_writes_them() {
        assert_eq!(unescape_mount(r"/srv/my\040data"), "/srv/my data");
        assert_eq!(unescape_mount(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mount(r"/odd\x"), r"/odd\x");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn each_kind_runs_what_an_administrator_would() {
        let base = ServiceConfig {
            name: "x".into(),
            follows: "web".into(),
            kind: ServiceKind::Systemd,
            start: None,
            stop: None,
            monitor: None,
            unit: Some("nginx.service".into()),
            device: None,
            mountpoint: None,
            fstype: None,
            options: None,
            interval: duet_config::Dur(Duration::from_secs(2)),
            timeout: duet_config::Dur(Duration::from_secs(10)),
            restarts: 3,
            after: Vec::new(),
        };
        assert_eq!(
            argv(&base, Op::Monitor).unwrap(),
            ["systemctl", "is-active", "--quiet", "nginx.service"]
        );
        let mount = ServiceConfig {
            kind: ServiceKind::Mount,
            unit: None,
            device: Some("10.0.0.5:/export".into()),
            mountpoint: Some("/nonexistent/duet-test-mountpoint".into()),
            fstype: Some("nfs".into()),
            options: Some("vers=4.2".into()),
            ..base
        };
        assert_eq!(
            argv(&mount, Op::Start).unwrap(),
            [
                "mount",
                "-t",
                "nfs",
                "-o",
                "vers=4.2",
                "10.0.0.5:/export",
                "/nonexistent/duet-test-mountpoint"
            ]
        );
        // Not mounted: stopping has nothing to do, and the monitor says so.
        assert_eq!(argv(&mount, Op::Stop), None);
        assert!(
            without_process(&mount, Op::Monitor)
                .unwrap_err()
                .contains("nothing is mounted")
        );
        // The root is always mounted.
        let root = ServiceConfig {
            mountpoint: Some("/".into()),
            ..mount
        };
        assert_eq!(argv(&root, Op::Start), None);
        assert!(without_process(&root, Op::Monitor).is_ok());
    }
}
