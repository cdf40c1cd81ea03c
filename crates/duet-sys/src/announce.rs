//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for new VIPs, so that
//! switches and neighbours learn the new master's MAC address at once (RFC 9568 §8.1.2).

use std::io;
use std::mem::zeroed;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::fd::Socket;

const ETH_P_ARP: u16 = 0x0806;

/// Sends announcements for VIPs on one interface.
#[derive(Debug)]
pub struct Announcer {
    ifindex: u32,
    mac: [u8; 6],
    arp: Option<Socket>,
    icmp6: Option<Socket>,
}

impl Announcer {
    /// Prepares sockets for `interface` (MAC `mac`); a family's socket is opened only if needed.
    pub fn new(interface: &str, ifindex: u32, mac: &[u8], v4: bool, v6: bool) -> io::Result<Self> {
        let mac: [u8; 6] = mac.try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{interface} has no Ethernet address; cannot send gratuitous ARP"),
            )
        })?;
        let arp = if v4 {
            let s = Socket::new(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ARP.to_be()),
            )?;
            let mut ll: libc::sockaddr_ll = zeroed_ll();
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_protocol = ETH_P_ARP.to_be();
            ll.sll_ifindex = ifindex as i32;
            s.bind(&ll)?;
            Some(s)
        } else {
            None
        };
        let icmp6 = if v6 {
            let s = Socket::new(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
            s.setsockopt_bytes(
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                interface.as_bytes(),
            )?;
            s.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255i32)?;
            s.setsockopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, ifindex as i32)?;
            Some(s)
        } else {
            None
        };
        Ok(Announcer {
            ifindex,
            mac,
            arp,
            icmp6,
        })
    }

    /// Announces `vip` once.
    pub fn announce(&self, vip: IpAddr) -> io::Result<()> {
        match vip {
            IpAddr::V4(a) => self.garp(a),
            IpAddr::V6(a) => self.unsolicited_na(a),
        }
    }

    fn garp(&self, vip: Ipv4Addr) -> io::Result<()> {
        let Some(sock) = &self.arp else {
            return Ok(());
        };
        let frame = garp_frame(self.mac, vip);
        let mut ll = zeroed_ll();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ETH_P_ARP.to_be();
        ll.sll_ifindex = self.ifindex as i32;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        sock.send_to(&frame, &ll)?;
        Ok(())
    }

    fn unsolicited_na(&self, vip: Ipv6Addr) -> io::Result<()> {
        let Some(sock) = &self.icmp6 else {
            return Ok(());
        };
        let msg = neighbour_advert(self.mac, vip);
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut to: libc::sockaddr_in6 = unsafe { zeroed() };
        to.sin6_family = libc::AF_INET6 as u16;
        to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        to.sin6_scope_id = self.ifindex;
        // The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
        sock.send_to(&msg, &to)?;
        Ok(())
    }
}

fn zeroed_ll() -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll.
    unsafe { zeroed() }
}

/// An Ethernet broadcast ARP request announcing `vip` at `mac` (sender = target = VIP).
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An ICMPv6 neighbour advertisement (override flag, target link-layer option) for `vip`.
pub fn neighbour_advert(mac: [u8; 6], vip: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136; // Neighbor Advertisement
    m[4] = 0x20; // Override
    m[8..24].copy_from_slice(&vip.octets());
    m[24] = 2; // Target Link-Layer Address option
    m[25] = 1; // length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_layout() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
    }

    #[test]
    fn na_layout() {
        let m = neighbour_advert([2, 0, 0, 0, 0, 1], "2001:db8::10".parse().unwrap());
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20);
        assert_eq!(&m[26..32], &[2, 0, 0, 0, 0, 1]);
    }
}
