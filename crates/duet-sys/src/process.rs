//! Signals to processes and process groups.

use std::io;

/// Sends `signal` to process `pid`, or to process group `-pid` when `group` is set.
pub fn send_signal(pid: u32, signal: i32, group: bool) -> io::Result<()> {
    let target = i32::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    let target = if group { -target } else { target };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    crate::fd::check(unsafe { libc::kill(target, signal) })
}

pub use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGSTOP, SIGTERM};

/// Runs `cmd` (stdin and stdout to /dev/null) in a process group of its own and waits at
/// most `timeout`: `Ok` when it exits 0; otherwise why. On timeout the whole group is
/// killed, so a shell's children go too. Blocking: for the guardian and shutdown, where
/// nothing else runs.
pub fn run_with_timeout(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let until = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(status.to_string()),
            Ok(None) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = send_signal(child.id(), SIGKILL, true);
                let _ = child.wait();
                return Err(format!("{program:?} timed out after {timeout:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Raises the soft limit on open files to the hard limit (as HAProxy and nginx do), so a
/// balancer can hold many connections under a default soft limit of 1024. Returns the limit
/// now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct passed to it.
    crate::fd::check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the valid struct passed to it.
        crate::fd::check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// Sets the soft and hard limits on open files to `n` (raising the hard limit needs root).
/// Benchmarks use it so that every tool compared gets the same room.
pub fn set_fd_limit(n: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit only reads the valid struct passed to it.
    crate::fd::check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })
}

/// 64 random bits from the kernel (`getrandom(2)`): boot ids, request ids.
pub fn random_u64() -> io::Result<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into the valid buffer passed to it.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fd_limit_rises_to_the_hard_limit() {
        let now = super::raise_fd_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(now, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}

/// An exclusive advisory lock on a file, held until it is dropped (or the process dies: the
/// kernel releases it, so a crashed daemon never leaves a stale lock).
#[derive(Debug)]
pub struct FileLock {
    /// Kept open: closing it releases the lock.
    _file: std::fs::File,
}

impl FileLock {
    /// Opens (creating) `path` and takes its exclusive lock without waiting, then writes
    /// `note` into it (who holds it). `Ok(None)`: another holder has it ([`FileLock::holder`]
    /// says who).
    pub fn try_new(path: &std::path::Path, note: &str) -> io::Result<Option<FileLock>> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: flock(2) takes the open descriptor of `file`, which lives for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        file.set_len(0)?;
        (&file).write_all(note.as_bytes())?;
        Ok(Some(FileLock { _file: file }))
    }

    /// What the holder of the lock at `path` wrote into it (for the message to whoever cannot
    /// take it).
    pub fn holder(path: &std::path::Path) -> String {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

/// The resident memory (VmRSS) of process `pid` in KiB, if it is there to ask.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A Linux capability duet needs for some of its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Binding ports below 1024.
    NetBindService,
    /// Adding and removing addresses (VIPs), nftables.
    NetAdmin,
    /// Raw sockets (VRRP, gratuitous ARP/NA).
    NetRaw,
}

impl Capability {
    /// The kernel's bit number (`linux/capability.h`).
    pub fn bit(self) -> u32 {
        match self {
            Capability::NetBindService => 10,
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
        }
    }

    /// The name as `capsh` and systemd write it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetBindService => "CAP_NET_BIND_SERVICE",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
        }
    }
}

/// Whether this process holds `cap` in its effective set (read from `/proc/self/status`, so
/// the answer is the kernel's, whatever the uid).
pub fn has_capability(cap: Capability) -> io::Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = effective_mask(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no CapEff line in /proc/self/status",
        )
    })?;
    Ok(mask & (1u64 << cap.bit()) != 0)
}

/// The `CapEff` mask of a `/proc/PID/status` text.
fn effective_mask(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    #[test]
    fn a_lock_is_held_once_and_freed_on_drop() {
        let path = std::env::temp_dir().join(format!("duet-lock-test-{}", std::process::id()));
        let first = FileLock::try_new(&path, "pid 1 node alpha").unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file: a second open, even in this process, is refused.
        assert!(FileLock::try_new(&path, "pid 2").unwrap().is_none());
        assert_eq!(FileLock::holder(&path), "pid 1 node alpha");
        drop(first);
        assert!(FileLock::try_new(&path, "pid 3").unwrap().is_some());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_effective_mask_is_read_from_the_status_text() {
        let status = "Name:\tduet\nCapInh:\t0000000000000000\nCapEff:\t0000000000002000\n";
        let mask = effective_mask(status).unwrap();
        assert_ne!(mask & (1 << Capability::NetRaw.bit()), 0);
        assert_eq!(mask & (1 << Capability::NetAdmin.bit()), 0);
        assert_eq!(effective_mask("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        // This process can always answer for itself.
        assert!(has_capability(Capability::NetAdmin).is_ok());
    }
}

/// Makes the child that `cmd` starts receive `signal` when the thread that starts it exits
/// (Linux `PR_SET_PDEATHSIG`): a server duet runs must not outlive the daemon, or nobody would
/// fence it. Start the child from a thread that lives as long as the daemon.
pub fn die_with_parent(cmd: &mut std::process::Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl and
    // getppid, which are async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "the parent exited while starting the child",
                ));
            }
            Ok(())
        });
    }
}
