//! `[[service]]`: resources that run only on the node that is master of a VRRP instance,
//! started in order when it becomes master and stopped in reverse when it leaves
//! (`docs/config.md`, "`[[service]]`").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schema::{Command, Config, Dur};
use crate::validate::Seg;

/// One entry of `[[service]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its name in status, events, logs and `duet service reset`.
    pub name: String,
    /// The `[[vrrp]]` instance whose master runs it, or `"cluster"`: the node the cluster
    /// elects to lead.
    pub follows: String,
    /// What it is.
    pub kind: ServiceKind,
    /// exec: the command that starts it (must return once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Command>,
    /// exec: the command that stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Command>,
    /// exec: the command that says whether it runs (exit 0); none: not monitored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Command>,
    /// systemd: the unit (`systemctl start`, `stop`, `is-active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// mount: what to mount (`10.0.0.5:/export`, `/dev/drbd0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// mount: where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    /// mount: the filesystem type (`nfs`, `ext4`, `xfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// mount: `-o` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    /// Time between two monitor runs.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Each start, stop and monitor run is killed after this long and counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Failed restarts in a row tolerated before the node steps down.
    #[serde(default = "default_restarts")]
    pub restarts: u32,
    /// Services of the same instance started before this one (stopped after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

fn default_interval() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_restarts() -> u32 {
    3
}

/// `service.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Commands: `start`, `stop`, `monitor`.
    Exec,
    /// A systemd unit.
    Systemd,
    /// A filesystem mount.
    Mount,
}

impl ServiceKind {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Exec => "exec",
            ServiceKind::Systemd => "systemd",
            ServiceKind::Mount => "mount",
        }
    }
}

/// `follows = "cluster"`: the services run on the node the cluster elects to lead (the
/// database's primary with `[database]`).
pub const CLUSTER: &str = "cluster";

/// The services that follow `instance`, in start order (each after what it names in
/// `after`; otherwise in config order). Only for a config that passed [`check`].
pub fn start_order<'a>(cfg: &'a Config, instance: &str) -> Vec<&'a ServiceConfig> {
    let group: Vec<&ServiceConfig> = cfg
        .service
        .iter()
        .filter(|s| s.follows == instance)
        .collect();
    let mut done: Vec<&ServiceConfig> = Vec::new();
    while done.len() < group.len() {
        let next = group.iter().find(|s| {
            !done.iter().any(|d| d.name == s.name)
                && s.after.iter().all(|a| done.iter().any(|d| d.name == *a))
        });
        match next {
            Some(s) => done.push(s),
            None => break,
        }
    }
    done
}

pub(crate) fn check(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    let mut names: BTreeMap<&str, &ServiceConfig> = BTreeMap::new();
    for (i, s) in cfg.service.iter().enumerate() {
        let at = |key: &str| crate::path!["service", i, key];
        let ok = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if !ok {
            bad(
                at("name"),
                format!(
                    "service name {:?}: 1 to 64 letters, digits, '-', '_', '.', '@'",
                    s.name
                ),
            );
        } else if names.insert(&s.name, s).is_some() {
            bad(at("name"), format!("duplicate service name {:?}", s.name));
        }
        if s.follows == CLUSTER {
            if cfg.heartbeat.is_none() {
                bad(
                    at("follows"),
                    "follows = \"cluster\" needs [heartbeat] (with [witness] or [coordination]) to elect the node that leads".into(),
                );
            }
        } else if !cfg.vrrp.iter().any(|v| v.name == s.follows) {
            bad(
                at("follows"),
                format!(
                    "follows = {:?}: no [[vrrp]] instance has that name (a service runs on the master of an instance, or follows = \"cluster\")",
                    s.follows
                ),
            );
        }
        let fields: [(&str, bool); 8] = [
            ("start", s.start.is_some()),
            ("stop", s.stop.is_some()),
            ("monitor", s.monitor.is_some()),
            ("unit", s.unit.is_some()),
            ("device", s.device.is_some()),
            ("mountpoint", s.mountpoint.is_some()),
            ("fstype", s.fstype.is_some()),
            ("options", s.options.is_some()),
        ];
        let (required, allowed): (&[&str], &[&str]) = match s.kind {
            ServiceKind::Exec => (&["start", "stop"], &["start", "stop", "monitor"]),
            ServiceKind::Systemd => (&["unit"], &["unit"]),
            ServiceKind::Mount => (
                &["device", "mountpoint", "fstype"],
                &["device", "mountpoint", "fstype", "options"],
            ),
        };
        for (key, set) in fields {
            if set && !allowed.contains(&key) {
                bad(
                    at(key),
                    format!(
                        "{key} does not apply to kind = \"{}\" (it takes {})",
                        s.kind.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
            if !set && required.contains(&key) {
                bad(
                    at("kind"),
                    format!("kind = \"{}\" needs {key}", s.kind.as_str()),
                );
            }
        }
        if let Some(u) = &s.unit
            && (u.is_empty() || u.starts_with('-') || u.contains(['/', ' ']))
        {
            bad(
                at("unit"),
                format!("unit {u:?}: write a unit name such as \"nginx.service\""),
            );
        }
        if let Some(m) = &s.mountpoint
            && !m.is_absolute()
        {
            bad(
                at("mountpoint"),
                "mountpoint must be an absolute path".into(),
            );
        }
        if s.interval.0 < Duration::from_millis(100) {
            bad(at("interval"), "interval must be at least 100ms".into());
        }
        if s.timeout.0.is_zero() {
            bad(at("timeout"), "timeout must be more than 0s".into());
        }
        for (k, a) in s.after.iter().enumerate() {
            let path = crate::path!["service", i, "after", k];
            match cfg.service.iter().find(|o| o.name == *a) {
                None => bad(path, format!("after {a:?}: no service has that name")),
                Some(o) if o.name == s.name => {
                    bad(path, "a service cannot come after itself".into())
                }
                Some(o) if o.follows != s.follows => bad(
                    path,
                    format!(
                        "after {a:?}: it follows {:?}, this one {:?}; order applies within one instance",
                        o.follows, s.follows
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    // A cycle leaves services out of the start order.
    let groups = cfg.vrrp.iter().map(|v| v.name.as_str()).chain([CLUSTER]);
    for follows in groups {
        let group = cfg.service.iter().filter(|s| s.follows == follows).count();
        let ordered = start_order(cfg, follows);
        if ordered.len() < group
            && let Some((i, s)) =
                cfg.service.iter().enumerate().find(|(_, s)| {
                    s.follows == follows && !ordered.iter().any(|o| o.name == s.name)
                })
        {
            bad(
                crate::path!["service", i, "after"],
                format!(
                    "service {:?}: its `after` list goes round in a circle",
                    s.name
                ),
            );
        }
    }
}
