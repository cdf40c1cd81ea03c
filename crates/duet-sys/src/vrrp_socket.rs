//! Raw IP sockets for VRRP (IP protocol 112), IPv4 and IPv6, bound to one interface.
//!
//! Two descriptors per interface and family:
//! - the receive socket (protocol 112) joins 224.0.0.18 / ff02::12 and sees every VRRP packet
//!   delivered on the interface, multicast and unicast, with the IP header (IPv4) or hop limit and
//!   destination from ancillary data (IPv6);
//! - the send socket is `IPPROTO_RAW` (header included, never receives), so duet writes the TTL /
//!   hop limit (255) and the source address itself: the checksum it computes over the pseudo-header
//!   is then guaranteed to match what goes on the wire.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use duet_vrrp::Family;
use duet_vrrp::packet::{IP_PROTOCOL, REQUIRED_HOP_LIMIT};

use crate::fd::Socket;

/// One received VRRP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address from the IP header.
    pub src: IpAddr,
    /// Destination address from the IP header.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub hop_limit: u8,
    /// Where the VRRP message starts in the buffer.
    pub offset: usize,
    /// Its length.
    pub len: usize,
}

/// The VRRP sockets of one interface and family.
#[derive(Debug)]
pub struct VrrpSocket {
    rx: Socket,
    tx: Socket,
    family: Family,
    ifindex: u32,
}

impl VrrpSocket {
    /// Opens and configures both sockets on `interface`.
    pub fn open(interface: &str, ifindex: u32, family: Family) -> io::Result<VrrpSocket> {
        let name = match family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        let context = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("VRRP {name} socket on {interface}: {what}: {e}"),
            )
        };
        let domain = match family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        let rx = Socket::new(domain, libc::SOCK_RAW, i32::from(IP_PROTOCOL))
            .map_err(|e| context("socket (needs CAP_NET_RAW)", e))?;
        let tx = Socket::new(domain, libc::SOCK_RAW, libc::IPPROTO_RAW)
            .map_err(|e| context("send socket", e))?;
        for s in [&rx, &tx] {
            s.setsockopt_bytes(
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                interface.as_bytes(),
            )
            .map_err(|e| context("SO_BINDTODEVICE", e))?;
        }
        rx.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)
            .map_err(|e| context("SO_RCVBUF", e))?;
        match family {
            Family::V4 => {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(duet_vrrp::packet::MULTICAST_V4.octets()),
                    },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: ifindex as i32,
                };
                rx.setsockopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, mreq)
                    .map_err(|e| context("join 224.0.0.18", e))?;
                tx.setsockopt(libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 0i32)
                    .map_err(|e| context("IP_MULTICAST_LOOP", e))?;
            }
            Family::V6 => {
                let mreq = libc::ipv6_mreq {
                    ipv6mr_multiaddr: libc::in6_addr {
                        s6_addr: duet_vrrp::packet::MULTICAST_V6.octets(),
                    },
                    ipv6mr_interface: ifindex,
                };
                rx.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, mreq)
                    .map_err(|e| context("join ff02::12", e))?;
                rx.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1i32)
                    .map_err(|e| context("IPV6_RECVHOPLIMIT", e))?;
                rx.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1i32)
                    .map_err(|e| context("IPV6_RECVPKTINFO", e))?;
                tx.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0i32)
                    .map_err(|e| context("IPV6_MULTICAST_LOOP", e))?;
            }
        }
        rx.set_nonblocking()?;
        tx.set_nonblocking()?;
        Ok(VrrpSocket {
            rx,
            tx,
            family,
            ifindex,
        })
    }

    /// The receive descriptor, for readiness polling.
    pub fn rx_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Sends a VRRP message (already carrying its checksum) from `src` to `dst` with TTL 255.
    pub fn send(&self, src: IpAddr, dst: IpAddr, message: &[u8]) -> io::Result<()> {
        let mut packet = Vec::with_capacity(40 + message.len());
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                packet.extend_from_slice(&ipv4_header(s, d, message.len()));
                packet.extend_from_slice(message);
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(d.octets()),
                    },
                    sin_zero: [0; 8],
                };
                self.tx.send_to(&packet, &addr)?;
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                packet.extend_from_slice(&ipv6_header(s, d, message.len()));
                packet.extend_from_slice(message);
                // SAFETY: all-zero is a valid sockaddr_in6.
                let mut addr: libc::sockaddr_in6 = unsafe { zeroed() };
                addr.sin6_family = libc::AF_INET6 as u16;
                addr.sin6_addr.s6_addr = d.octets();
                addr.sin6_scope_id = self.ifindex;
                self.tx.send_to(&packet, &addr)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "source and destination families differ",
                ));
            }
        }
        Ok(())
    }

    /// Receives one packet without blocking (`WouldBlock` when none is queued).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        match self.family {
            Family::V4 => {
                let (n, _) = self.rx.recv_from::<libc::sockaddr_in>(buf, 0)?;
                parse_ipv4(&buf[..n]).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "short or malformed IPv4 header")
                })
            }
            Family::V6 => recv_v6(&self.rx, buf),
        }
    }
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[1] = 0xc0; // DSCP CS6 (network control), as keepalived and routers send VRRP
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[8] = REQUIRED_HOP_LIMIT;
    h[9] = IP_PROTOCOL;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    // Identification and header checksum are filled in by the kernel for IPPROTO_RAW.
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x6c; // version 6, traffic class 0xc0 (CS6)
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = IP_PROTOCOL;
    h[7] = REQUIRED_HOP_LIMIT;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

fn parse_ipv4(p: &[u8]) -> Option<Received> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    // Trust the smaller of the header's total length and what arrived.
    let end = total.clamp(ihl, p.len());
    Some(Received {
        src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
        dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
        hop_limit: p[8],
        offset: ihl,
        len: end - ihl,
    })
}

fn recv_v6(sock: &Socket, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero is a valid sockaddr_in6 / msghdr.
    let mut from: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for IPV6_HOPLIMIT and IPV6_PKTINFO, 8-byte aligned.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: msg points at live buffers of the lengths it declares.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hop_limit = None;
    let mut dst = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel just filled, bounded by
    // msg_controllen; each payload is read unaligned with the size its type declares.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IPV6 {
                let data = libc::CMSG_DATA(cmsg);
                if c.cmsg_type == libc::IPV6_HOPLIMIT {
                    let v = std::ptr::read_unaligned(data.cast::<i32>());
                    hop_limit = u8::try_from(v).ok();
                } else if c.cmsg_type == libc::IPV6_PKTINFO {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let (Some(hop_limit), Some(dst)) = (hop_limit, dst) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "IPv6 VRRP packet without hop limit or destination ancillary data",
        ));
    };
    Ok(Received {
        src: IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr)),
        dst: IpAddr::V6(dst),
        hop_limit,
        offset: 0,
        len: n as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_round_trips_through_parser() {
        let h = ipv4_header(
            "10.0.0.1".parse().unwrap(),
            "224.0.0.18".parse().unwrap(),
            12,
        );
        let mut p = h.to_vec();
        p.extend_from_slice(&[0u8; 12]);
        let r = parse_ipv4(&p).unwrap();
        assert_eq!(r.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.dst, "224.0.0.18".parse::<IpAddr>().unwrap());
        assert_eq!((r.hop_limit, r.offset, r.len), (255, 20, 12));
        assert!(parse_ipv4(&p[..19]).is_none());
        let mut bad = p.clone();
        bad[0] = 0x44; // IHL 16 bytes
        assert!(parse_ipv4(&bad).is_none());
    }
}

/// The receive descriptor of a shared [`VrrpSocket`], for tokio readiness.
#[derive(Debug, Clone)]
pub struct RxFd(pub std::sync::Arc<VrrpSocket>);

impl AsRawFd for RxFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.rx_fd()
    }
}

/// Registers the receive socket with the current tokio runtime.
pub fn register_rx(sock: std::sync::Arc<VrrpSocket>) -> io::Result<tokio::io::unix::AsyncFd<RxFd>> {
    // SAFETY: `RxFd` owns an `Arc` of the socket, so the descriptor stays open and names the same
    // socket for as long as the `AsyncFd` (which owns the `RxFd`) lives; `as_raw_fd` always
    // returns that one descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(RxFd(sock)) }.map_err(io::Error::from)
}
