//! PROXY protocol v1 (text) and v2 (binary), as HAProxy specifies it: a header in front of a
//! connection that carries the original client and destination addresses through a proxy.
//!
//! Pure: encode into a buffer, parse from the start of a buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Signature that starts every v2 header.
const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];
/// Longest v1 line (spec: 107 bytes including CRLF).
const V1_MAX: usize = 107;

/// Which version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `PROXY TCP4 …\r\n`.
    V1,
    /// Binary.
    V2,
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The original client and the address it connected to.
    Proxied {
        /// Client.
        source: SocketAddr,
        /// Destination.
        destination: SocketAddr,
    },
    /// `UNKNOWN` (v1) or `LOCAL` (v2, e.g. health checks): use the connection's own addresses.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not start with a PROXY header.
    NotProxy,
    /// A v1 line or v2 block that does not follow the format.
    Malformed(&'static str),
}

/// Writes a header for `source` → `destination` (same family) into `out`.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            out.extend_from_slice(
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                )
                .as_bytes(),
            );
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Parses a header at the start of `buf`: `Ok(None)` while incomplete, else the header and
/// its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    if buf[0] == 0x0d {
        return parse_v2(buf);
    }
    Err(Error::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(Error::NotProxy);
    }
    let Some(end) = buf.windows(2).take(V1_MAX).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| Error::Malformed("v1 line not ASCII"))?;
    let f: Vec<&str> = line.split(' ').collect();
    let header = match f.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, Error> {
                let ip: IpAddr = s.parse().map_err(|_| Error::Malformed("v1 bad address"))?;
                if ip.is_ipv4() != (*fam == "TCP4") {
                    return Err(Error::Malformed("v1 address family mismatch"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, Error> {
                if s.len() > 1 && s.starts_with('0') {
                    return Err(Error::Malformed("v1 bad port"));
                }
                s.parse().map_err(|_| Error::Malformed("v1 bad port"))
            };
            Header::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(Error::Malformed("v1 line has the wrong fields")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(Error::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    if buf[12] >> 4 != 2 {
        return Err(Error::Malformed("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let header = match (buf[12] & 0x0f, buf[13]) {
        (0x0, _) => Header::Local,
        (0x1, 0x11) if body.len() >= 12 => {
            let s = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let d = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Header::Proxied {
                source: SocketAddr::new(s.into(), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(d.into(), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let s: [u8; 16] = body[0..16].try_into().expect("16 bytes");
            let d: [u8; 16] = body[16..32].try_into().expect("16 bytes");
            Header::Proxied {
                source: SocketAddr::new(
                    Ipv6Addr::from(s).into(),
                    u16::from_be_bytes([body[32], body[33]]),
                ),
                destination: SocketAddr::new(
                    Ipv6Addr::from(d).into(),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        // Other families (UNIX, UNSPEC) carry nothing we can use: treat as local.
        (0x1, fam) if fam >> 4 == 0 || fam >> 4 == 3 => Header::Local,
        (0x1, _) => return Err(Error::Malformed("v2 address block too short")),
        _ => return Err(Error::Malformed("v2 unknown command")),
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_for_both_families() {
        for (src, dst) in [
            ("192.0.2.7:51000", "198.51.100.1:443"),
            ("[2001:db8::7]:51000", "[2001:db8::1]:443"),
        ] {
            for v in [Version::V1, Version::V2] {
                let mut out = Vec::new();
                encode(v, sa(src), sa(dst), &mut out);
                out.extend_from_slice(b"GET / HTTP/1.1\r\n");
                let (h, n) = parse(&out).unwrap().unwrap();
                assert_eq!(
                    h,
                    Header::Proxied {
                        source: sa(src),
                        destination: sa(dst)
                    }
                );
                assert_eq!(&out[n..], b"GET / HTTP/1.1\r\n");
                // Every prefix is incomplete, never an error.
                for cut in 0..n {
                    assert_eq!(parse(&out[..cut]), Ok(None), "{v:?} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn v1_golden_and_unknown() {
        let mut out = Vec::new();
        encode(
            Version::V1,
            sa("192.0.2.7:51000"),
            sa("198.51.100.1:443"),
            &mut out,
        );
        assert_eq!(out, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n");
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nrest"),
            Ok(Some((Header::Local, 15)))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotProxy));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n").is_err());
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(
            parse(long.as_bytes()),
            Err(Error::Malformed("v1 line too long"))
        );
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
        v2.extend_from_slice(&[0; 12]);
        assert_eq!(parse(&v2), Err(Error::Malformed("v2 version is not 2")));
    }
}
