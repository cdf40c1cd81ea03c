//! A minimal owned socket with the few libc calls the rest of the crate shares.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An owned socket file descriptor.
#[derive(Debug)]
pub struct Socket(OwnedFd);

impl Socket {
    /// `socket(domain, type | SOCK_CLOEXEC, protocol)`.
    pub fn new(domain: i32, ty: i32, protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain syscall with integer arguments; the result is checked before use.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sets an option whose value is a plain `T`.
    pub fn setsockopt<T: Copy>(&self, level: i32, name: i32, value: T) -> io::Result<()> {
        // SAFETY: `value` lives for the call and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                level,
                name,
                (&value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        check(rc)
    }

    /// Sets an option whose value is a byte string (e.g. `SO_BINDTODEVICE`).
    pub fn setsockopt_bytes(&self, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        // SAFETY: the slice is valid for `value.len()` bytes during the call.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                level,
                name,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        check(rc)
    }

    /// Binds to a raw socket address of type `A`.
    pub fn bind<A>(&self, addr: &A) -> io::Result<()> {
        // SAFETY: `addr` is a valid sockaddr_* value of the size passed.
        let rc = unsafe {
            libc::bind(
                self.0.as_raw_fd(),
                (addr as *const A).cast(),
                size_of::<A>() as libc::socklen_t,
            )
        };
        check(rc)
    }

    /// Sends `buf` to a raw socket address of type `A`.
    pub fn send_to<A>(&self, buf: &[u8], addr: &A) -> io::Result<usize> {
        // SAFETY: `buf` and `addr` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (addr as *const A).cast(),
                size_of::<A>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Receives into `buf`, also returning the sender address as raw `A`.
    pub fn recv_from<A: Copy>(&self, buf: &mut [u8], flags: i32) -> io::Result<(usize, A)> {
        // SAFETY: all-zero is a valid bit pattern for the plain-old-data sockaddr types used here.
        let mut addr: A = unsafe { std::mem::zeroed() };
        let mut len = size_of::<A>() as libc::socklen_t;
        // SAFETY: `buf` and `addr` are valid, writable and of the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut addr as *mut A).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, addr))
    }

    /// Switches the descriptor to non-blocking mode (for tokio's `AsyncFd`).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        // SAFETY: fcntl on an fd we own, integer arguments.
        let flags = unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        check(unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

pub(crate) fn check(rc: i32) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Index of a network interface by name, or a clear error.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?}"),
        ));
    }
    Ok(index)
}
