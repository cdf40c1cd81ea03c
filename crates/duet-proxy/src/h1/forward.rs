//! Writing the head a proxy forwards. The message's framing and routing headers are decided
//! once, from the parsed head, and written by the proxy itself: `Content-Length` (one value) or
//! `Transfer-Encoding: chunked`, and `Host` (the absolute-form authority, else the client's
//! `Host`, else for HTTP/1.0 the address the client connected to). The client's own copies are
//! never copied, so a `Connection` header that names them cannot remove them (RFC 9110 §7.6.1
//! lets a proxy drop what `Connection` names; for these three it keeps duet's own, and the
//! message stays framed as it was parsed). Hop-by-hop headers go; the client's address and scheme
//! are added (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`, RFC 7239), every earlier
//! value of a chain kept in order; the next hop's connection semantics are stated explicitly.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use httparse::Header;

use super::head::{Framing, RequestHead, ResponseHead, listed_in_connection};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1). The HTTP/2 path
/// strips the same ones.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Who the client is, for the forwarding headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (after PROXY protocol, if any).
    pub addr: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The address the client connected to: the `Host` of an HTTP/1.0 request without one.
    pub local: SocketAddr,
}

/// Headers the proxy writes itself and never copies from the message.
const WRITTEN_BY_PROXY: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
];

fn hop_by_hop(headers: &[Header<'_>], name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) || listed_in_connection(headers, name)
}

/// Writes the request head to send to a backend into `out` (cleared first).
pub fn write_request_head(req: &RequestHead<'_, '_>, client: ClientInfo, out: &mut Vec<u8>) {
    out.clear();
    let _ = write!(out, "{} {} HTTP/1.1\r\n", req.method, req.path);
    out.extend_from_slice(b"Host: ");
    match req.authority {
        Some(a) => out.extend_from_slice(a),
        None => {
            let _ = write!(out, "{}", client.local);
        }
    }
    out.extend_from_slice(b"\r\n");
    for h in req.headers {
        let name = h.name;
        if WRITTEN_BY_PROXY
            .iter()
            .any(|w| name.eq_ignore_ascii_case(w))
        {
            continue;
        }
        // An HTTP/1.0 client cannot take a 100 Continue (RFC 9110 §10.1.1).
        if req.minor_version == 0 && name.eq_ignore_ascii_case("expect") {
            continue;
        }
        if name.eq_ignore_ascii_case("upgrade") && req.upgrade {
            write_header(out, name, h.value);
            continue;
        }
        if hop_by_hop(req.headers, name) {
            continue;
        }
        write_header(out, name, h.value);
    }
    write_framing(out, req.framing, req.content_length, false);
    write_chain(out, req.headers, "x-forwarded-for", b"X-Forwarded-For: ");
    let _ = write!(out, "{}\r\n", client.addr);
    let _ = write!(out, "X-Forwarded-Proto: {}\r\n", client.proto);
    write_chain(out, req.headers, "forwarded", b"Forwarded: ");
    match client.addr {
        IpAddr::V4(a) => {
            let _ = write!(out, "for={a};proto={}\r\n", client.proto);
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "for=\"[{a}]\";proto={}\r\n", client.proto);
        }
    }
    if req.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n\r\n");
    } else {
        out.extend_from_slice(b"Connection: keep-alive\r\n\r\n");
    }
}

/// Writes `label`, then every value of header `name` in order, each followed by `, ` (the
/// caller appends the last element).
fn write_chain(out: &mut Vec<u8>, headers: &[Header<'_>], name: &str, label: &[u8]) {
    out.extend_from_slice(label);
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = super::head::trim(h.value);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// Writes the framing header of a message: `Transfer-Encoding: chunked` or the one
/// `Content-Length`. A message without a body keeps a length it declared (a HEAD or 304
/// response's, or a request's `Content-Length: 0`); `bodiless_status`: 1xx and 204 responses,
/// which carry neither.
fn write_framing(out: &mut Vec<u8>, framing: Framing, length: Option<u64>, bodiless_status: bool) {
    if bodiless_status {
        return;
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::UntilClose => {}
        Framing::Empty => {
            if let Some(n) = length {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
    }
}

/// Writes the response head to send to the client into `out` (cleared first).
/// `keep_alive`: whether the client connection stays open after this response. `extra`: whole
/// header lines (each ending in CRLF) the proxy adds, e.g. a sticky-session `Set-Cookie`.
pub fn write_response_head(
    res: &ResponseHead<'_, '_>,
    keep_alive: bool,
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", res.status, res.reason);
    let switching = res.status == 101;
    for h in res.headers {
        if switching && h.name.eq_ignore_ascii_case("upgrade") {
            write_header(out, h.name, h.value);
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || hop_by_hop(res.headers, h.name)
        {
            continue;
        }
        write_header(out, h.name, h.value);
    }
    let bodiless = (100..200).contains(&res.status) || res.status == 204;
    let declared = match res.framing {
        // A HEAD or 304 response declares the body it does not carry.
        Framing::Empty if res.chunked => Framing::Chunked,
        other => other,
    };
    write_framing(out, declared, res.content_length, bodiless);
    out.extend_from_slice(extra);
    out.extend_from_slice(match (switching, keep_alive) {
        (true, _) => b"Connection: upgrade\r\n\r\n".as_slice(),
        (false, true) => b"\r\n",
        (false, false) => b"Connection: close\r\n\r\n",
    });
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::head::{Limits, parse_request, parse_response};
    use super::*;

    fn forward(raw: &str, client: ClientInfo) -> String {
        let mut h = [httparse::EMPTY_HEADER; 32];
        let req = parse_request(raw.as_bytes(), &mut h, Limits::default())
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_request_head(&req, client, &mut out);
        String::from_utf8(out).unwrap()
    }

    const V4: ClientInfo = ClientInfo {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
        proto: "http",
        local: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 80),
    };

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let out = forward(
            "GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nX-Secret: s\r\nTE: trailers\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
            V4,
        );
        assert_eq!(
            out,
            "GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nForwarded: for=192.0.2.7;proto=http\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn existing_forwarding_chains_are_extended() {
        let client = ClientInfo {
            addr: "2001:db8::1".parse().unwrap(),
            proto: "https",
            ..V4
        };
        let out = forward(
            "POST /p HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.1\r\nForwarded: for=198.51.100.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            client,
        );
        assert!(
            out.contains("X-Forwarded-For: 198.51.100.1, 2001:db8::1\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Forwarded: for=198.51.100.1, for=\"[2001:db8::1]\";proto=https\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Transfer-Encoding: chunked\r\n"),
            "body framing is kept: {out}"
        );
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let out = forward(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
            V4,
        );
        assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
        assert!(out.ends_with("Connection: upgrade\r\n\r\n"), "{out}");
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    }

    #[test]
    fn response_heads_drop_hop_by_hop_and_state_the_connection() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: s\r\n\r\nok";
        let mut h = [httparse::EMPTY_HEADER; 16];
        let res = parse_response(raw.as_bytes(), &mut h, Limits::default(), false)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_response_head(&res, true, b"", &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n"
        );
        write_response_head(&res, false, b"Set-Cookie: S=1\r\n", &mut out);
        assert!(
            String::from_utf8_lossy(&out).contains("Set-Cookie: S=1\r\nConnection: close\r\n\r\n")
        );
        assert!(String::from_utf8_lossy(&out).ends_with("Connection: close\r\n\r\n"));
    }
}
