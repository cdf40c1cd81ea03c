//! Reads link carrier and track files and reports changes to the control loop.
//!
//! - Links: a task on the control runtime, woken at once when the kernel announces a link
//!   change (a netlink socket subscribed to link notifications) and every 100 ms in any case (a
//!   fallback should notifications be lost). One netlink round trip per interface
//!   (microseconds).
//! - Track files: a thread of their own (`duet-track-files`), every 100 ms. A file read can
//!   block (a hung NFS mount) and must never hold up adverts; files are opened non-blocking, so
//!   a FIFO or a device cannot block even this thread, and anything but a regular file reads
//!   as an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use duet_sys::Netlink;
use tokio::sync::{mpsc, watch};

use super::input::{Inbox, Input};

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

/// Starts the track-file thread: it reads the current list's files every poll interval and
/// sends their values when they change, until the control loop goes away.
pub fn spawn_files(list: watch::Receiver<WatchList>, inbox: Inbox) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("duet-track-files".into())
        .spawn(move || {
            let mut files: Option<BTreeMap<PathBuf, i64>> = None;
            let mut warned: BTreeSet<PathBuf> = BTreeSet::new();
            loop {
                let current = list.borrow().files.clone();
                let now_files: BTreeMap<PathBuf, i64> = current
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
                    if inbox.blocking_send(Input::Files(now_files)).is_err() {
                        return;
                    }
                }
                if inbox.is_closed() {
                    return;
                }
                std::thread::sleep(poll_interval());
            }
        })
        .map(|_| ())
}

/// Watches link carrier until the control loop goes away.
pub async fn run_links(mut list: watch::Receiver<WatchList>, inbox: Inbox) {
    let nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::error!("link watcher: netlink: {e}; interface tracking is off");
            return;
        }
    };
    let mut links: Option<BTreeMap<String, bool>> = None;
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
            if inbox.send(Input::Links(now_links)).await.is_err() {
                return;
            }
        }
    }
}

/// The integer in a track file; a missing or empty file is 0, as in keepalived. The file is
/// opened non-blocking and must be a regular file: a FIFO or a device is an error, never a
/// wait.
pub fn read_track_file(path: &std::path::Path) -> Result<i64, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return Ok(0);
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("track file {}: not a regular file", path.display()));
    }
    let mut text = String::new();
    // Track files hold one number: a few bytes are plenty.
    if (&mut file).take(4096).read_to_string(&mut text).is_err() {
        return Err(format!("track file {}: unreadable", path.display()));
    }
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("track file {}: {t:?} is not an integer", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_track_file_is_an_error_not_a_wait() {
        let dir = std::env::temp_dir().join(format!("duet-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // No writer ever opens it: a blocking open or read would never return.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_track_file(&path));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("reading a FIFO track file blocked");
        assert_eq!(
            got,
            Err(format!("track file {}: not a regular file", fifo.display()))
        );
        // Regular files still read as before; a missing one is 0.
        let file = dir.join("value");
        std::fs::write(&file, " 42 \n").unwrap();
        assert_eq!(read_track_file(&file), Ok(42));
        assert_eq!(read_track_file(&dir.join("missing")), Ok(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
