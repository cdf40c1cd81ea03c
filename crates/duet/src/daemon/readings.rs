//! The latest tracker readings (scripts, links, files) and how they map onto an instance's
//! trackers. The arithmetic itself is `duet_vrrp::tracking`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use duet_config::{TrackScriptConfig, VrrpConfig};
use duet_vrrp::{RiseFall, TrackedHealth, Tracker, TrackerReading};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::hooks::{Hooks, ScriptResult};

struct ScriptSlot {
    cfg: TrackScriptConfig,
    state: RiseFall,
    task: AbortHandle,
}

/// Readings of every tracker of the node.
#[derive(Default)]
pub struct Readings {
    scripts: BTreeMap<String, ScriptSlot>,
    /// Carrier per interface name.
    pub links: BTreeMap<String, bool>,
    /// Track file values.
    pub files: BTreeMap<PathBuf, i64>,
}

impl Readings {
    /// Starts scripts that are new or changed and stops those that are gone or changed; an
    /// unchanged script keeps its rise/fall state.
    pub fn restart_scripts(
        &mut self,
        wanted: &BTreeMap<String, TrackScriptConfig>,
        hooks: &Hooks,
        tx: &mpsc::UnboundedSender<ScriptResult>,
    ) {
        self.scripts.retain(|name, slot| {
            let keep = wanted.get(name) == Some(&slot.cfg);
            if !keep {
                slot.task.abort();
            }
            keep
        });
        for (name, cfg) in wanted {
            if self.scripts.contains_key(name) {
                continue;
            }
            let task = hooks.start_script(
                name.clone(),
                cfg.command.clone(),
                cfg.interval.0,
                cfg.timeout.0,
                tx.clone(),
            );
            let state = RiseFall::new(cfg.rise, cfg.fall);
            let cfg = cfg.clone();
            self.scripts
                .insert(name.clone(), ScriptSlot { cfg, state, task });
        }
    }

    /// Stops every script.
    pub fn stop_scripts(&mut self) {
        for slot in self.scripts.values() {
            slot.task.abort();
        }
        self.scripts.clear();
    }

    /// Records a script run; true when the script's up/down state changed.
    pub fn record_script(&mut self, r: &ScriptResult) -> bool {
        let Some(slot) = self.scripts.get_mut(&r.name) else {
            return false;
        };
        match slot.state.record(r.passed) {
            Some(true) => tracing::info!("track script {} is up", r.name),
            Some(false) => tracing::warn!("track script {} is down: {}", r.name, r.detail),
            None => return false,
        }
        true
    }

    /// The trackers of an instance with their current readings.
    pub fn trackers_of(&self, cfg: &VrrpConfig) -> Vec<Tracker> {
        let link = |name: &str| TrackerReading::Health(self.links.get(name).copied());
        // The instance's own interface is always tracked: no VIP on a link without carrier.
        let mut trackers = vec![Tracker {
            name: format!("interface {}", cfg.interface),
            weight: 0,
            reading: link(&cfg.interface),
        }];
        for s in &cfg.track_scripts {
            if let Some(slot) = self.scripts.get(s) {
                trackers.push(Tracker {
                    name: format!("script {s}"),
                    weight: slot.cfg.weight,
                    reading: TrackerReading::Health(slot.state.is_up()),
                });
            }
        }
        for t in &cfg.track_interfaces {
            trackers.push(Tracker {
                name: format!("interface {}", t.name),
                weight: t.weight,
                reading: link(&t.name),
            });
        }
        for f in &cfg.track_files {
            trackers.push(Tracker {
                name: format!("file {}", f.path.display()),
                weight: f.weight,
                reading: TrackerReading::Value(self.files.get(&f.path).copied().unwrap_or(0)),
            });
        }
        trackers
    }

    /// The combined tracking input of an instance.
    pub fn tracking_of(&self, cfg: &VrrpConfig) -> TrackedHealth {
        duet_vrrp::combine(&self.trackers_of(cfg))
    }
}
