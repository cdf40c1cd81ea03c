//! HTTP/1.x message heads: parse with `httparse`, then apply the rules a proxy must enforce
//! (RFC 9112) before it forwards a single byte.
//!
//! - A head larger than the limit is `431` (request) / `502` (response).
//! - `Content-Length` must be digits; several different values are an error; identical
//!   duplicates are accepted, as RFC 9112 §6.3 allows.
//! - `Transfer-Encoding` together with `Content-Length` is rejected (`400`): two parties reading
//!   the same bytes differently is how request smuggling works. A request transfer coding other
//!   than a final `chunked` is `501`; `Transfer-Encoding` in an HTTP/1.0 request is `400`.
//! - HTTP/1.1 requests need exactly one `Host`.
//! - The target is origin-form (`/path`), absolute-form (`http://host/path`: its authority wins
//!   over `Host`, RFC 9112 §3.2.2) or `*` for `OPTIONS`; `CONNECT` is `501`.
//! - A response whose transfer coding is not a final `chunked` is refused (the proxy would have
//!   to read it until close and could not forward its framing unchanged).
//!
//! Nothing here allocates: headers live in a caller-provided array and values borrow the buffer.

use httparse::{Header, Status};

/// Size limits for message heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line / status line plus headers, in bytes.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Why a head was refused. [`HeadError::status`] gives the answer to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head (or its header count) exceeds the limits.
    TooLarge,
    /// Not valid HTTP/1.x syntax.
    Malformed(&'static str),
    /// `Content-Length` and `Transfer-Encoding` disagree, or several lengths differ.
    ConflictingLength,
    /// A transfer coding we do not forward.
    UnsupportedTransferEncoding,
    /// HTTP/1.1 request without exactly one `Host`.
    BadHost,
    /// A request target that is not origin-, absolute- or asterisk-form.
    BadTarget,
    /// A method a reverse proxy does not forward (`CONNECT`).
    UnsupportedMethod,
}

impl HeadError {
    /// The status code to answer a client with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::UnsupportedTransferEncoding | HeadError::UnsupportedMethod => 501,
            HeadError::Malformed(_)
            | HeadError::ConflictingLength
            | HeadError::BadHost
            | HeadError::BadTarget => 400,
        }
    }

    /// A short description for logs and error bodies.
    pub fn describe(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request header fields too large",
            HeadError::Malformed(what) => what,
            HeadError::ConflictingLength => "conflicting Content-Length / Transfer-Encoding",
            HeadError::UnsupportedTransferEncoding => "unsupported transfer coding",
            HeadError::BadHost => "HTTP/1.1 request needs exactly one Host header",
            HeadError::BadTarget => "invalid request target",
            HeadError::UnsupportedMethod => "CONNECT is not supported",
        }
    }
}

/// How the message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// What the `Connection` header (and the version) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

/// A parsed, validated request head.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// Method.
    pub method: &'b str,
    /// Request target as sent.
    pub target: &'b str,
    /// The target in origin form, as forwarded: the path and query of an absolute-form target
    /// (`/` when it has none), else the target itself.
    pub path: &'b str,
    /// The authority of an absolute-form target, else the `Host` value: what the request is
    /// routed by and the `Host` it is forwarded with.
    pub authority: Option<&'b [u8]>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The headers, in order.
    pub headers: &'h [Header<'b>],
    /// Bytes of the head, including the final CRLF CRLF.
    pub head_len: usize,
    /// Body delimitation.
    pub framing: Framing,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header (e.g. WebSocket).
    pub upgrade: bool,
    /// The `Host` value, if any.
    pub host: Option<&'b [u8]>,
    /// The single `Content-Length` value (duplicates and lists of one value folded).
    pub content_length: Option<u64>,
    /// `Expect: 100-continue` in an HTTP/1.1 request: the client waits for `100` before its
    /// body.
    pub expect_continue: bool,
}

/// A parsed, validated response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'b str,
    /// 0 or 1.
    pub minor_version: u8,
    /// The headers, in order.
    pub headers: &'h [Header<'b>],
    /// Bytes of the head.
    pub head_len: usize,
    /// Body delimitation.
    pub framing: Framing,
    /// Whether the backend keeps the connection open.
    pub keep_alive: bool,
    /// The single `Content-Length` value, also where the body is empty (HEAD, 304).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`, also where the body is empty (HEAD, 304).
    pub chunked: bool,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    limits: Limits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let mut req = httparse::Request::new(headers);
    let Some(head_len) = head_length(req.parse(buf), buf.len(), limits)? else {
        return Ok(None);
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let headers: &'h [Header<'b>] = req.headers;
    let mut host = None;
    let mut hosts = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = Some(h.value);
        }
    }
    if minor_version == 1 && hosts != 1 || hosts > 1 {
        return Err(HeadError::BadHost);
    }
    let (path, absolute_authority) = request_target(method, target)?;
    let length = content_length(headers)?;
    let chunked = transfer_encoding(headers)?;
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => return Err(HeadError::ConflictingLength),
        (Some(_), None) if minor_version == 0 => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => return Err(HeadError::UnsupportedTransferEncoding),
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let conn = connection_tokens(headers);
    let has_upgrade = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let expect_continue = minor_version == 1
        && headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect")
                && trim(h.value).eq_ignore_ascii_case(b"100-continue")
        });
    Ok(Some(RequestHead {
        method,
        target,
        path,
        authority: absolute_authority.or(host),
        minor_version,
        headers,
        head_len,
        framing,
        keep_alive: keep_alive(minor_version, conn),
        upgrade: conn.upgrade && has_upgrade,
        host,
        content_length: length,
        expect_continue,
    }))
}

/// Parses a response head. `head_request`: the request was HEAD (no body follows).
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    limits: Limits,
    head_request: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, HeadError> {
    let mut res = httparse::Response::new(headers);
    let Some(head_len) = head_length(res.parse(buf), buf.len(), limits)? else {
        return Ok(None);
    };
    let (Some(status), Some(minor_version)) = (res.code, res.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let headers: &'h [Header<'b>] = res.headers;
    let length = content_length(headers)?;
    let chunked = transfer_encoding(headers)?;
    let bodyless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodyless {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => return Err(HeadError::ConflictingLength),
            (Some(true), None) => Framing::Chunked,
            // Other codings would run until the backend closes (RFC 9112 §6.3), under a
            // framing header the proxy could not forward as it is: refused (→ 502).
            (Some(false), None) => return Err(HeadError::UnsupportedTransferEncoding),
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let conn = connection_tokens(headers);
    Ok(Some(ResponseHead {
        status,
        reason: res.reason.unwrap_or(""),
        minor_version,
        headers,
        head_len,
        framing,
        keep_alive: keep_alive(minor_version, conn) && framing != Framing::UntilClose,
        content_length: length,
        chunked: chunked == Some(true),
    }))
}

/// Splits a request target into the origin-form path to forward and, for absolute-form, its
/// authority (RFC 9112 §3.2).
fn request_target<'b>(
    method: &str,
    target: &'b str,
) -> Result<(&'b str, Option<&'b [u8]>), HeadError> {
    if method == "CONNECT" {
        return Err(HeadError::UnsupportedMethod);
    }
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok((target, None));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            target
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])
        })
        .ok_or(HeadError::BadTarget)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // Userinfo is forbidden in http(s) URIs (RFC 9110 §4.2.4); a query without a path has no
    // origin form to borrow, and is refused rather than rewritten.
    if authority.is_empty()
        || authority.contains('@')
        || !(path.is_empty() || path.starts_with('/'))
    {
        return Err(HeadError::BadTarget);
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((path, Some(authority.as_bytes())))
}

/// The head's length once complete, `None` while more bytes may complete it, or the error.
fn head_length(
    parsed: Result<Status<usize>, httparse::Error>,
    buffered: usize,
    limits: Limits,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(Status::Complete(n)) if n > limits.max_head_bytes => Err(HeadError::TooLarge),
        Ok(Status::Complete(n)) => Ok(Some(n)),
        Ok(Status::Partial) if buffered >= limits.max_head_bytes => Err(HeadError::TooLarge),
        Ok(Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(parse_error(e))),
    }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// The single `Content-Length` value, if any.
fn content_length(headers: &[Header<'_>]) -> Result<Option<u64>, HeadError> {
    let mut found: Option<u64> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for part in h.value.split(|&b| b == b',') {
            let v = trim(part);
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            let n = v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => return Err(HeadError::ConflictingLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// `None` without `Transfer-Encoding`; `Some(true)` when the final coding is exactly chunked
/// (and the only one); `Some(false)` for anything else.
fn transfer_encoding(headers: &[Header<'_>]) -> Result<Option<bool>, HeadError> {
    let mut codings = 0usize;
    let mut chunked_last = false;
    let mut seen = false;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        seen = true;
        for part in h.value.split(|&b| b == b',') {
            let v = trim(part);
            if v.is_empty() {
                continue;
            }
            if chunked_last {
                // Anything after chunked is invalid (RFC 9112 §6.1).
                return Err(HeadError::Malformed("transfer coding after chunked"));
            }
            codings += 1;
            chunked_last = v.eq_ignore_ascii_case(b"chunked");
        }
    }
    if !seen {
        return Ok(None);
    }
    if codings == 0 {
        return Err(HeadError::Malformed("empty Transfer-Encoding"));
    }
    Ok(Some(chunked_last && codings == 1))
}

fn connection_tokens(headers: &[Header<'_>]) -> ConnectionTokens {
    let mut t = ConnectionTokens::default();
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for part in h.value.split(|&b| b == b',') {
            let v = trim(part);
            t.close |= v.eq_ignore_ascii_case(b"close");
            t.keep_alive |= v.eq_ignore_ascii_case(b"keep-alive");
            t.upgrade |= v.eq_ignore_ascii_case(b"upgrade");
        }
    }
    t
}

fn keep_alive(minor_version: u8, t: ConnectionTokens) -> bool {
    if minor_version == 0 {
        t.keep_alive && !t.close
    } else {
        !t.close
    }
}

/// Whether `name` is listed in the message's `Connection` header (and so is hop-by-hop).
pub fn listed_in_connection(headers: &[Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(name.as_bytes()))
}

pub(crate) fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<Option<(Framing, bool, bool, usize)>, HeadError> {
        let mut h = [httparse::EMPTY_HEADER; 64];
        parse_request(raw.as_bytes(), &mut h, Limits::default())
            .map(|o| o.map(|r| (r.framing, r.keep_alive, r.upgrade, r.head_len)))
    }

    #[test]
    fn simple_get_keeps_alive_on_1_1_and_closes_on_1_0() {
        let raw = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req(raw), Ok(Some((Framing::Empty, true, false, raw.len()))));
        let raw = "GET /x HTTP/1.0\r\n\r\n";
        assert_eq!(
            req(raw),
            Ok(Some((Framing::Empty, false, false, raw.len())))
        );
        let raw = "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert!(req(raw).unwrap().unwrap().1);
        let raw = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        assert!(!req(raw).unwrap().unwrap().1);
    }

    #[test]
    fn incomplete_heads_ask_for_more_until_the_limit() {
        assert_eq!(req("GET /x HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let big = format!(
            "GET /x HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(req(&big), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
        let many: String = (0..100).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(req(&raw), Err(HeadError::TooLarge));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            // CL + TE: the classic desync.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                HeadError::Malformed("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                HeadError::Malformed("transfer coding after chunked"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Malformed("transfer coding after chunked"),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"),
            ),
            ("GET / HTTP/1.1\r\n\r\n", HeadError::BadHost),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                HeadError::BadHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
                HeadError::Malformed("invalid header name"),
            ),
            (
                "GET / HTTP/2.0\r\n\r\n",
                HeadError::Malformed("unsupported HTTP version"),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(req(raw), Err(want), "{raw:?}");
        }
        // Identical duplicates are allowed (RFC 9112 §6.3).
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(req(raw).unwrap().unwrap().0, Framing::Length(5));
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(req(raw).unwrap().unwrap().0, Framing::Chunked);
    }

    #[test]
    fn targets_are_origin_absolute_or_asterisk_form() {
        let parts = |raw: &str| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            parse_request(raw.as_bytes(), &mut h, Limits::default())
                .map(|r| r.map(|r| (r.path.to_string(), r.authority.map(<[u8]>::to_vec))))
        };
        let some =
            |path: &str, auth: &str| Ok(Some((path.to_string(), Some(auth.as_bytes().to_vec()))));
        assert_eq!(
            parts("GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n"),
            some("/a?b", "h")
        );
        // The authority wins over Host (RFC 9112 §3.2.2); an empty path is `/`.
        assert_eq!(
            parts("GET http://x.example:8080/p HTTP/1.1\r\nHost: h\r\n\r\n"),
            some("/p", "x.example:8080")
        );
        assert_eq!(
            parts("GET HTTPS://x.example HTTP/1.1\r\nHost: h\r\n\r\n"),
            some("/", "x.example")
        );
        assert_eq!(
            parts("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
            some("*", "h")
        );
        for (raw, want) in [
            ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", HeadError::BadTarget),
            ("GET x HTTP/1.1\r\nHost: h\r\n\r\n", HeadError::BadTarget),
            (
                "GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n",
                HeadError::BadTarget,
            ),
            (
                "GET http://u@x/ HTTP/1.1\r\nHost: h\r\n\r\n",
                HeadError::BadTarget,
            ),
            (
                "GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n",
                HeadError::BadTarget,
            ),
            (
                "GET http://x?q HTTP/1.1\r\nHost: h\r\n\r\n",
                HeadError::BadTarget,
            ),
            (
                "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
                HeadError::UnsupportedMethod,
            ),
        ] {
            assert_eq!(parts(raw), Err(want), "{raw:?}");
        }
        assert_eq!(HeadError::UnsupportedMethod.status(), 501);
    }

    #[test]
    fn expect_continue_is_an_http_1_1_request_s() {
        let expect = |raw: &str| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            parse_request(raw.as_bytes(), &mut h, Limits::default())
                .unwrap()
                .unwrap()
                .expect_continue
        };
        assert!(expect(
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!expect(
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!expect(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n"
        ));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(req(raw).unwrap().unwrap().2);
        let raw = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert!(!req(raw).unwrap().unwrap().2);
    }

    fn res(raw: &str, head: bool) -> Result<Option<(u16, Framing, bool)>, HeadError> {
        let mut h = [httparse::EMPTY_HEADER; 64];
        parse_response(raw.as_bytes(), &mut h, Limits::default(), head)
            .map(|o| o.map(|r| (r.status, r.framing, r.keep_alive)))
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let ok = |raw: &str, head| res(raw, head).unwrap().unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            (200, Framing::Length(3), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            (200, Framing::Empty, true)
        );
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\n\r\n", false).1,
            Framing::Empty
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\n\r\n", false).1,
            Framing::Empty
        );
        assert_eq!(
            ok(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .1,
            Framing::Chunked
        );
        // No length: read until close, and the connection cannot be reused.
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\n\r\n", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            res(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Err(HeadError::ConflictingLength)
        );
        assert!(res("garbage\r\n\r\n", false).is_err());
        // A coding other than a final chunked would be read until close under a header duet
        // cannot forward as it is: refused.
        assert_eq!(
            res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        // HEAD and 304 keep the length they declare.
        let mut h = [httparse::EMPTY_HEADER; 8];
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
            &mut h,
            Limits::default(),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.framing, r.content_length), (Framing::Empty, Some(7)));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if present.
pub fn cookie<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
        })
}

#[cfg(test)]
mod cookie_tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_several_headers() {
        let headers = [
            Header {
                name: "Cookie",
                value: b"a=1; SERVERID=abc",
            },
            Header {
                name: "cookie",
                value: b"b=2",
            },
        ];
        assert_eq!(cookie(&headers, "SERVERID"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&headers, "SERVER"), None);
    }
}
