//! systemd's service notifications (`sd_notify`): with `Type=notify` the unit waits for
//! `READY=1`; `STATUS=` is the line `systemctl status` shows; with `WatchdogSec=` systemd
//! kills and restarts a service that stops sending `WATCHDOG=1`.
//!
//! Each notification is one datagram to the socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Outside systemd the variable is unset and
//! nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets: `None` when `$NOTIFY_SOCKET` is unset (not started
    /// by systemd with `Type=notify`), an error when it is set but unusable.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Ok(Some(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
            watchdog,
        }))
    }

    /// Sends `state`: newline-separated `KEY=value` lines (`READY=1`, `STATUS=…`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }

    /// How often to send `WATCHDOG=1` (half of `WatchdogSec=`), when systemd asks for it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// Half the watchdog timeout in `usec` (systemd's advice), when it is meant for `pid`.
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if for_pid.is_some_and(|p| p.parse() != Ok(pid)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_twice_per_timeout_and_only_by_the_process_it_names() {
        assert_eq!(
            watchdog_interval(Some("10000000"), None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(5))
        );
        // Inherited from a parent that systemd watches: not ours to feed.
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("duet-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=web MASTER").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=web MASTER");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
