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
