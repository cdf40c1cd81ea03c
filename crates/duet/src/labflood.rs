//! Lab tools for the flood test: a paced flood of forged and garbage packets at a node's VRRP
//! and heartbeat ports, and a watcher that measures the intervals between one sender's VRRP
//! adverts as a peer receives them. They run inside lab namespaces only (`duet lab-flood`,
//! `duet lab-vrrp-watch`, hidden commands) and send only to the lab's own addresses.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const IPPROTO_VRRP: i32 = 112;

/// What to flood.
#[derive(Debug, Clone)]
pub struct Flood {
    /// This host's address (the packets' source).
    pub from: Ipv4Addr,
    /// Heartbeat (UDP) targets.
    pub udp: Vec<SocketAddr>,
    /// Also multicast VRRP: forged adverts for this VRID (priority 254) and garbage.
    pub vrid: Option<u8>,
    /// Packets per second in all.
    pub pps: u32,
    /// For how long.
    pub seconds: u64,
}

/// Sends the flood, paced in 1 ms slices; prints `{"sent": N, "seconds": S}`.
pub fn flood(f: &Flood) -> i32 {
    match run_flood(f) {
        Ok((sent, took)) => {
            println!(
                "{}",
                serde_json::json!({ "sent": sent, "seconds": took.as_secs_f64() })
            );
            0
        }
        Err(e) => {
            eprintln!("lab-flood: {e}");
            1
        }
    }
}

fn run_flood(f: &Flood) -> std::io::Result<(u64, Duration)> {
    let raw = match f.vrid {
        Some(_) => {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
            s.set_multicast_if_v4(&f.from)?;
            s.set_multicast_ttl_v4(255)?;
            s.set_nonblocking(true)?;
            Some(s)
        }
        None => None,
    };
    let udp = UdpSocket::bind(SocketAddr::from((f.from, 0)))?;
    udp.set_nonblocking(true)?;
    // The packets, built once: a valid forged advert, garbage that fails the VRRP checks, a
    // heartbeat-shaped frame with a bad tag (it costs the receiver an HMAC check) and garbage.
    let forged = f.vrid.map(|vrid| forged_advert(f.from, vrid));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    let junk_vrrp = garbage(40);
    let mut fake_heartbeat = b"dUeT\x01\x01".to_vec();
    fake_heartbeat.extend(garbage(90));
    let junk_udp = garbage(64);
    let group = SockAddr::from(SocketAddrV4::new(VRRP_GROUP, 0));
    let per_slice = (f.pps / 1000).max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs(f.seconds);
    let mut slice = start;
    let mut sent = 0u64;
    while Instant::now() < end {
        for i in 0..per_slice {
            let ok = match (i % 4, &raw, &forged) {
                (0, Some(s), Some(adv)) => s.send_to(adv, &group).is_ok(),
                (1, Some(s), _) => s.send_to(&junk_vrrp, &group).is_ok(),
                (k, _, _) if !f.udp.is_empty() => {
                    let target = f.udp[(i as usize / 4) % f.udp.len()];
                    let payload = if k == 2 { &fake_heartbeat } else { &junk_udp };
                    udp.send_to(payload, target).is_ok()
                }
                _ => false,
            };
            sent += u64::from(ok);
        }
        slice += Duration::from_millis(1);
        if let Some(wait) = slice.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((sent, start.elapsed()))
}

/// A VRRPv3 advert for `vrid` at priority 254 from `from`, checksummed as keepalived and duet
/// send it (over the pseudo-header).
fn forged_advert(from: Ipv4Addr, vrid: u8) -> Vec<u8> {
    let advert = duet_vrrp::Advert {
        version: duet_vrrp::Version::V3,
        vrid: duet_vrrp::Vrid::new(vrid).unwrap_or(duet_vrrp::Vrid::new(1).expect("1 is valid")),
        priority: 254,
        interval: duet_vrrp::AdvertInterval::from_duration(
            Duration::from_millis(100),
            duet_vrrp::Version::V3,
        )
        .expect("100 ms is a valid interval"),
        addresses: vec![std::net::IpAddr::V4(Ipv4Addr::new(10, 99, 0, 100))],
    };
    advert.to_bytes(
        std::net::IpAddr::V4(from),
        std::net::IpAddr::V4(VRRP_GROUP),
        duet_vrrp::ChecksumMode::PseudoHeader,
    )
}

/// Records when VRRP adverts from `src` arrive at this host (joined on `on`) for `seconds`,
/// and prints the intervals between them: `{"count", "p50_ms", "p99_ms", "max_ms",
/// "over_110_ms"}`.
pub fn vrrp_watch(src: Ipv4Addr, on: Ipv4Addr, seconds: u64) -> i32 {
    match run_watch(src, on, seconds) {
        Ok(intervals) => {
            let mut ms: Vec<f64> = intervals.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            let at = |q: f64| {
                ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "{}",
                serde_json::json!({
                    "count": ms.len(),
                    "p50_ms": at(0.5),
                    "p99_ms": at(0.99),
                    "max_ms": ms.last().copied().unwrap_or(f64::NAN),
                    "min_ms": ms.first().copied().unwrap_or(f64::NAN),
                    "over_110_ms": ms.iter().filter(|m| **m > 110.0).count(),
                })
            );
            0
        }
        Err(e) => {
            eprintln!("lab-vrrp-watch: {e}");
            1
        }
    }
}

fn run_watch(src: Ipv4Addr, on: Ipv4Addr, seconds: u64) -> std::io::Result<Vec<Duration>> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
    s.join_multicast_v4(&VRRP_GROUP, &on)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    // A datagram socket's plain recv reads the raw socket's packets (IP header first).
    let s: UdpSocket = s.into();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut last: Option<Instant> = None;
    let mut intervals = Vec::new();
    while Instant::now() < end {
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        let bytes = &buf[..n];
        if bytes.len() < 20 || bytes[12..16] != src.octets() {
            continue;
        }
        let ihl = usize::from(bytes[0] & 0x0f) * 4;
        // A VRRPv3 advert (version 3, type 1), not the flood's garbage from the same address.
        if bytes.get(ihl) != Some(&0x31) {
            continue;
        }
        if let Some(prev) = last {
            intervals.push(at - prev);
        }
        last = Some(at);
    }
    Ok(intervals)
}
