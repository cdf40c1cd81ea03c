//! A small synchronous rtnetlink client: the handful of requests duet needs.
//!
//! - add / refresh / delete an address, with a kernel lifetime (`IFA_CACHEINFO`) and `NODAD`;
//! - list the addresses of an interface;
//! - read a link's flags and MAC address.
//!
//! Written by hand (about 300 lines) rather than with the netlink-packet-* crates: duet needs a
//! blocking request/ack round trip on a dedicated thread, and the message layouts used here have
//! been stable in the kernel ABI for two decades.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::fd::Socket;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const IFA_F_PERMANENT: u32 = 0x80;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// An address configured on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// `RT_SCOPE_*` (0 universe, 253 link).
    pub scope: u8,
    /// Kernel lifetime in seconds, `None` when permanent.
    pub valid_lifetime: Option<u32>,
}

/// Link state as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Carrier present (`IFF_RUNNING`): what a tracked interface means by "up".
    pub running: bool,
    /// Hardware address (empty for interfaces without one).
    pub mac: Vec<u8>,
}

/// A route netlink socket.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
}

static SEQ: AtomicU32 = AtomicU32::new(1);

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket.
    pub fn open() -> io::Result<Netlink> {
        let sock = Socket::new(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        sock.bind(&addr)?;
        sock.setsockopt(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1i32)?;
        Ok(Netlink { sock })
    }

    /// Adds `address/prefix` to interface `index`, or refreshes it if present.
    ///
    /// `lifetime_secs` sets both valid and preferred lifetimes (`None`: permanent). IPv6
    /// addresses skip duplicate address detection: a VIP must answer at once, and VRRP itself
    /// guarantees uniqueness.
    pub fn replace_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix: u8,
        lifetime_secs: Option<u32>,
    ) -> io::Result<()> {
        let mut msg = Message::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        msg.ifaddrmsg(address, prefix, index);
        msg.address_attrs(address);
        let flags = if address.is_ipv6() { IFA_F_NODAD } else { 0 };
        msg.attr(IFA_FLAGS, &flags.to_ne_bytes());
        let lifetime = lifetime_secs.unwrap_or(INFINITY_LIFE_TIME);
        let mut cache = [0u8; 16];
        cache[0..4].copy_from_slice(&lifetime.to_ne_bytes()); // ifa_prefered
        cache[4..8].copy_from_slice(&lifetime.to_ne_bytes()); // ifa_valid
        msg.attr(IFA_CACHEINFO, &cache);
        self.request_ack(msg)
    }

    /// Removes `address/prefix` from interface `index`. Absent addresses are not an error.
    pub fn delete_address(&self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
        let mut msg = Message::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK);
        msg.ifaddrmsg(address, prefix, index);
        msg.address_attrs(address);
        match self.request_ack(msg) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other,
        }
    }

    /// Lists the addresses on interface `index` (both families).
    pub fn addresses(&self, index: u32) -> io::Result<Vec<InterfaceAddress>> {
        let mut msg = Message::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
        msg.bytes.extend_from_slice(&[0u8; 8]); // ifaddrmsg, family AF_UNSPEC
        let mut out = Vec::new();
        self.request_dump(msg, |ty, payload| {
            if ty != RTM_NEWADDR || payload.len() < 8 {
                return;
            }
            let family = payload[0];
            let prefix = payload[1];
            let scope = payload[3];
            let ifindex = u32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes"));
            if ifindex != index {
                return;
            }
            let mut address = None;
            let mut local = None;
            let mut valid = None;
            let mut flags = u32::from(payload[2]);
            for (ty, data) in Attrs(&payload[8..]) {
                match ty {
                    IFA_ADDRESS => address = parse_ip(family, data),
                    IFA_LOCAL => local = parse_ip(family, data),
                    IFA_CACHEINFO if data.len() >= 8 => {
                        valid = Some(u32::from_ne_bytes(data[4..8].try_into().expect("4 bytes")))
                    }
                    IFA_FLAGS if data.len() >= 4 => {
                        flags = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes"))
                    }
                    _ => {}
                }
            }
            // For IPv4 point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
            if let Some(address) = local.or(address) {
                let permanent =
                    flags & IFA_F_PERMANENT != 0 || valid.is_none_or(|v| v == INFINITY_LIFE_TIME);
                out.push(InterfaceAddress {
                    address,
                    prefix,
                    scope,
                    valid_lifetime: if permanent { None } else { valid },
                });
            }
        })?;
        Ok(out)
    }

    /// Reads the state of the link called `name`.
    pub fn link(&self, name: &str) -> io::Result<LinkState> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST);
        msg.bytes.extend_from_slice(&[0u8; 16]); // ifinfomsg
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        msg.attr(IFLA_IFNAME, &cname);
        let mut state = None;
        self.request_dump(msg, |ty, payload| {
            if ty != RTM_NEWLINK || payload.len() < 16 {
                return;
            }
            let index = i32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) as u32;
            let flags = u32::from_ne_bytes(payload[8..12].try_into().expect("4 bytes"));
            let mac = Attrs(&payload[16..])
                .find(|(ty, _)| *ty == IFLA_ADDRESS)
                .map(|(_, d)| d.to_vec())
                .unwrap_or_default();
            state = Some(LinkState {
                index,
                admin_up: flags & libc::IFF_UP as u32 != 0,
                running: flags & libc::IFF_RUNNING as u32 != 0,
                mac,
            });
        })
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface named {name:?}"),
                )
            } else {
                e
            }
        })?;
        state.ok_or_else(|| io::Error::other(format!("kernel sent no link info for {name:?}")))
    }

    fn request_ack(&self, msg: Message) -> io::Result<()> {
        self.request_dump(msg, |_, _| {})
    }

    /// Sends a request and feeds every reply message to `each` until DONE, an error, an ACK, or
    /// (for non-dump requests) the single reply.
    fn request_dump(&self, msg: Message, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let seq = msg.seq;
        let bytes = msg.finish();
        // SAFETY: all-zero is a valid sockaddr_nl; pid 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        self.sock.send_to(&bytes, &kernel)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, _) = self.sock.recv_from::<libc::sockaddr_nl>(&mut buf, 0)?;
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let flags = u16::from_ne_bytes(rest[6..8].try_into().expect("2 bytes"));
                let rseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::other("truncated netlink reply"));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                rest = &rest[align4(len).min(rest.len())..];
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            payload
                                .get(0..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or([0; 4]),
                        );
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => {
                        each(ty, payload);
                        if flags & NLM_F_MULTI == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

struct Message {
    seq: u32,
    bytes: Vec<u8>,
}

impl Message {
    fn new(ty: u16, flags: u16) -> Message {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        bytes.extend_from_slice(&ty.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // pid
        Message { seq, bytes }
    }

    fn ifaddrmsg(&mut self, address: IpAddr, prefix: u8, index: u32) {
        let family = match address {
            IpAddr::V4(_) => libc::AF_INET,
            IpAddr::V6(_) => libc::AF_INET6,
        } as u8;
        let scope = match address {
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => libc::RT_SCOPE_LINK,
            _ => libc::RT_SCOPE_UNIVERSE,
        };
        self.bytes.extend_from_slice(&[family, prefix, 0, scope]);
        self.bytes.extend_from_slice(&index.to_ne_bytes());
    }

    fn address_attrs(&mut self, address: IpAddr) {
        let octets = ip_octets(address);
        self.attr(IFA_LOCAL, &octets);
        self.attr(IFA_ADDRESS, &octets);
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

/// Iterates `(type, payload)` over a run of rtattrs.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.0.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.0[0], self.0[1]]) as usize;
        let ty = u16::from_ne_bytes([self.0[2], self.0[3]]) & 0x3fff;
        if len < 4 || len > self.0.len() {
            return None;
        }
        let data = &self.0[4..len];
        self.0 = &self.0[align4(len).min(self.0.len())..];
        Some((ty, data))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn parse_ip(family: u8, data: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), data.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
        (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_are_padded_and_parsed_back() {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_REQUEST);
        m.ifaddrmsg("10.0.0.1".parse().unwrap(), 24, 7);
        m.attr(IFLA_IFNAME, b"eth0\0");
        m.attr(IFA_FLAGS, &5u32.to_ne_bytes());
        let bytes = m.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        let attrs: Vec<_> = Attrs(&bytes[NLMSG_HDRLEN + 8..]).collect();
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"eth0\0"[..]));
        assert_eq!(attrs[1], (IFA_FLAGS, &5u32.to_ne_bytes()[..]));
    }

    #[test]
    fn loopback_is_readable() {
        // Every namespace has `lo`; reading it needs no privileges.
        let nl = Netlink::open().unwrap();
        let lo = nl.link("lo").unwrap();
        assert!(lo.index > 0);
        assert!(nl.link("no-such-if0").is_err());
        let _ = nl.addresses(lo.index).unwrap();
    }
}

/// Link change notifications: a netlink socket subscribed to `RTMGRP_LINK`, readable whenever
/// an interface of this namespace changes (carrier, admin state). The watcher reads the links
/// again when it wakes, so a carrier loss is seen at once instead of at the next poll.
#[derive(Debug)]
pub struct LinkEvents {
    sock: Socket,
}

impl LinkEvents {
    /// Subscribes.
    pub fn open() -> io::Result<LinkEvents> {
        let sock = Socket::new(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        sock.bind(&addr)?;
        Ok(LinkEvents { sock })
    }

    /// Blocks until the next notification (or an overrun: the kernel dropped some, which also
    /// means something changed). Their contents do not matter: the caller reads the links
    /// afresh.
    pub fn wait(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.sock.recv_from::<libc::sockaddr_nl>(&mut buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
