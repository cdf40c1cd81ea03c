//! Reads link carrier and track files and reports changes to the control loop: at once when
//! the kernel announces a link change (a netlink socket subscribed to link notifications), and
//! every 100 ms in any case (track files, and a fallback should notifications be lost).
//!
//! Each pass is bounded: one netlink round trip per interface (microseconds) and one small file
//! read per track file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use duet_sys::Netlink;
use tokio::sync::{mpsc, watch};

use super::control::Input;

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchList {
    /// Interfaces whose carrier matters.
    pub interfaces: BTreeSet<String>,
    /// Track files.
    pub files: BTreeSet<PathBuf>,
}

/// How often links and files are read.
pub const POLL: Duration = Duration::from_millis(100);

/// The poll interval; `DUET_LINK_POLL_MS` overrides it, so a test can show that link changes
/// arrive through notifications rather than the poll.
fn poll_interval() -> Duration {
    std::env::var("DUET_LINK_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(POLL, Duration::from_millis)
}

/// Runs until the control loop goes away.
pub async fn run(mut list: watch::Receiver<WatchList>, tx: mpsc::UnboundedSender<Input>) {
    let nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::error!("link watcher: netlink: {e}; interface tracking is off");
            return;
        }
    };
    let mut links: Option<BTreeMap<String, bool>> = None;
    let mut files: Option<BTreeMap<PathBuf, i64>> = None;
    let mut warned: BTreeSet<PathBuf> = BTreeSet::new();
    // Notifications are read on a small thread of their own (a blocking read), which wakes
    // this task.
    let (wake_tx, mut wake) = mpsc::unbounded_channel::<()>();
    match duet_sys::LinkEvents::open() {
        Ok(events) => {
            let spawned = std::thread::Builder::new()
                .name("duet-links".into())
                .spawn(move || {
                    while events.wait().is_ok() {
                        if wake_tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("link watcher: no notification thread ({e}); polling only");
            }
        }
        Err(e) => tracing::warn!("link watcher: no link notifications ({e}); polling only"),
    }
    let mut tick = tokio::time::interval(poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = list.changed() => if changed.is_err() { return },
            Some(()) = wake.recv() => while wake.try_recv().is_ok() {},
        }
        let current = list.borrow().clone();
        let now_links: BTreeMap<String, bool> = current
            .interfaces
            .iter()
            .map(|name| {
                let up = nl
                    .link(name)
                    .map(|l| l.admin_up && l.running)
                    .unwrap_or(false);
                (name.clone(), up)
            })
            .collect();
        if links.as_ref() != Some(&now_links) {
            links = Some(now_links.clone());
            if tx.send(Input::Links(now_links)).is_err() {
                return;
            }
        }
        let now_files: BTreeMap<PathBuf, i64> = current
            .files
            .iter()
            .map(|p| {
                let value = read_track_file(p).unwrap_or_else(|e| {
                    if warned.insert(p.clone()) {
                        tracing::warn!("{e}; using 0");
                    }
                    0
                });
                (p.clone(), value)
            })
            .collect();
        if files.as_ref() != Some(&now_files) {
            files = Some(now_files.clone());
            if tx.send(Input::Files(now_files)).is_err() {
                return;
            }
        }
    }
}

/// The integer in a track file; a missing or empty file is 0, as in keepalived.
pub fn read_track_file(path: &std::path::Path) -> Result<i64, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(0);
    };
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("track file {}: {t:?} is not an integer", path.display()))
}
