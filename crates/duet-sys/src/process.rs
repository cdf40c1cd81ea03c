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

pub use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM};

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
