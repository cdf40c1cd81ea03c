//! A backend that judges what a proxy forwards. It reads requests leniently, the way a
//! forgiving application server would (bare LF, folded lines, `Transfer-Encoding` anywhere in a
//! value), so that a smuggled request shows up as a request, and it flags every head that two
//! reasonable servers could frame differently. A proxy in front of it is safe when nothing is
//! flagged and no hidden request ever arrives.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which header wins when a head carries both framings (the two classic desync servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// `Content-Length` wins (a CL.TE server).
    Length,
    /// `Transfer-Encoding: chunked` wins (a TE.CL server).
    Chunked,
}

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request line.
    pub line: String,
    /// The target.
    pub target: String,
    /// The head's header lines as received (without line ends).
    pub headers: Vec<String>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Which backend connection it came on (0, 1, …).
    pub connection: usize,
}

impl Seen {
    /// Values of header `name` (case-insensitive), trimmed.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// What the backend saw, shared with the test.
#[derive(Debug, Default)]
pub struct Record {
    /// Every request read, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
    /// Why some forwarded head was ambiguous (empty when every head had one reading).
    pub ambiguous: Mutex<Vec<String>>,
    connections: Mutex<usize>,
}

impl Record {
    /// The targets read, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.target.clone())
            .collect()
    }

    /// How many requests for `target` arrived.
    pub fn count(&self, target: &str) -> usize {
        self.targets().iter().filter(|t| *t == target).count()
    }

    /// The last request for `target`.
    pub fn last(&self, target: &str) -> Option<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().rev().find(|s| s.target == target).cloned()
    }

    /// Ambiguities found so far.
    pub fn ambiguities(&self) -> Vec<String> {
        self.ambiguous.lock().unwrap().clone()
    }
}

/// How the backend answers request number `n` (0-based, per connection) for `seen`; `None`
/// closes the connection without an answer.
pub type Reply = Arc<dyn Fn(usize, &Seen) -> Option<Answer> + Send + Sync>;

/// An answer: bytes to send, then whether to close.
#[derive(Debug, Clone)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub close: bool,
}

impl Answer {
    /// `bytes`, keeping the connection open.
    pub fn keep(bytes: impl Into<Vec<u8>>) -> Option<Answer> {
        Some(Answer {
            bytes: bytes.into(),
            close: false,
        })
    }

    /// `bytes`, then close.
    pub fn close(bytes: impl Into<Vec<u8>>) -> Option<Answer> {
        Some(Answer {
            bytes: bytes.into(),
            close: true,
        })
    }
}

/// Wraps a closure as a [`Reply`].
pub fn reply(f: impl Fn(usize, &Seen) -> Option<Answer> + Send + Sync + 'static) -> Reply {
    Arc::new(f)
}

/// The usual answer: 200 with the request's target as the body (`/echo`: the request body).
pub fn echo_target(_n: usize, seen: &Seen) -> Option<Answer> {
    let body = if seen.target == "/echo" {
        seen.body.clone()
    } else {
        seen.target.clone().into_bytes()
    };
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    Answer::keep(out)
}

/// A running strict backend.
pub struct StrictBackend {
    pub addr: SocketAddr,
    pub record: Arc<Record>,
}

/// Starts a strict backend on loopback that answers with [`echo_target`].
pub fn echo(prefer: Prefer) -> StrictBackend {
    spawn(prefer, None, reply(echo_target))
}

/// Starts a strict backend on loopback. `interim`: bytes sent as soon as a head with
/// `Expect: 100-continue` arrived, before its body is read (e.g. `100 Continue`).
pub fn spawn(prefer: Prefer, interim: Option<&'static str>, reply: Reply) -> StrictBackend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let record = Arc::new(Record::default());
    let rec = record.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let rec = rec.clone();
            let reply = reply.clone();
            let id = {
                let mut n = rec.connections.lock().unwrap();
                *n += 1;
                *n - 1
            };
            std::thread::spawn(move || serve(conn, id, prefer, interim, &*reply, &rec));
        }
    });
    StrictBackend { addr, record }
}

type ReplyFn = dyn Fn(usize, &Seen) -> Option<Answer> + Send + Sync;

fn serve(
    mut conn: TcpStream,
    id: usize,
    prefer: Prefer,
    interim: Option<&'static str>,
    reply: &ReplyFn,
    rec: &Record,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let mut interim_sent = false;
        let parsed = loop {
            if let (Some(bytes), false) = (interim, interim_sent)
                && let Some((_, lines)) = split_head(&buf)
                && lines
                    .iter()
                    .any(|l| l.to_ascii_lowercase().starts_with("expect: 100-continue"))
            {
                interim_sent = true;
                let _ = conn.write_all(bytes.as_bytes());
            }
            match parse_request(&buf, prefer) {
                Parse::Done(p) => break p,
                Parse::More => {
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                Parse::Garbage(why) => {
                    rec.ambiguous
                        .lock()
                        .unwrap()
                        .push(format!("unreadable: {why}"));
                    return;
                }
            }
        };
        buf.drain(..parsed.consumed);
        let mut seen = parsed.seen;
        seen.connection = id;
        rec.ambiguous.lock().unwrap().extend(parsed.ambiguous);
        rec.seen.lock().unwrap().push(seen.clone());
        match reply(n, &seen) {
            Some(answer) => {
                if conn.write_all(&answer.bytes).is_err() || answer.close {
                    return;
                }
            }
            None => return,
        }
        n += 1;
    }
}

struct Parsed {
    consumed: usize,
    seen: Seen,
    ambiguous: Vec<String>,
}

enum Parse {
    Done(Parsed),
    More,
    Garbage(String),
}

/// Reads one request from the start of `buf`, forgivingly, noting every ambiguity.
fn parse_request(buf: &[u8], prefer: Prefer) -> Parse {
    let Some((head_len, lines)) = split_head(buf) else {
        return Parse::More;
    };
    let mut ambiguous = Vec::new();
    let (line, headers) = lines.split_first().expect("a head has a line");
    let target = line.split(' ').nth(1).unwrap_or("").to_string();
    ambiguous.extend(judge_line(line, true));
    let framing = judge_headers(headers, &mut ambiguous);
    let body_start = head_len;
    let (body, consumed) = match read_body(&buf[body_start..], framing.choose(prefer)) {
        Some(x) => x,
        None => return Parse::More,
    };
    Parse::Done(Parsed {
        consumed: body_start + consumed,
        seen: Seen {
            line: line.clone(),
            target,
            headers: headers.to_vec(),
            body,
            connection: 0,
        },
        ambiguous,
    })
}

/// Splits a head at its end (CRLFCRLF, or LF LF for a forgiving reader) into lines with folded
/// lines joined; `None` while incomplete. Every line keeps a marker of its own line end.
fn split_head(buf: &[u8]) -> Option<(usize, Vec<String>)> {
    let mut lines: Vec<String> = Vec::new();
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let raw = &buf[start..start + i];
        start += i + 1;
        let text = String::from_utf8_lossy(raw).into_owned();
        if text.is_empty() || text == "\r" {
            if lines.is_empty() {
                continue; // leading empty lines
            }
            return Some((start, lines));
        }
        lines.push(text);
    }
    None
}

/// What the framing headers say, under each reading.
#[derive(Debug, Default)]
pub struct FramingView {
    /// First `Content-Length` value's leading digits.
    pub length: Option<u64>,
    /// Some `Transfer-Encoding` value mentions chunked.
    pub chunked: bool,
}

#[derive(Debug, Clone, Copy)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

impl FramingView {
    fn choose(&self, prefer: Prefer) -> BodyKind {
        match (prefer, self.length, self.chunked) {
            (Prefer::Length, Some(n), _) => BodyKind::Length(n),
            (_, _, true) => BodyKind::Chunked,
            (_, Some(n), false) => BodyKind::Length(n),
            _ => BodyKind::None,
        }
    }
}

/// Judges a request or status line: it must be three space-separated parts with a CR before
/// its LF and no control characters.
fn judge_line(line: &str, request: bool) -> Vec<String> {
    let mut out = Vec::new();
    let Some(text) = line.strip_suffix('\r') else {
        return vec![format!("bare LF after {line:?}")];
    };
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        out.push(format!("control character in {text:?}"));
    }
    let parts: Vec<&str> = text.splitn(3, ' ').collect();
    let version_ok = |v: &str| v == "HTTP/1.1" || v == "HTTP/1.0";
    let ok = if request {
        parts.len() == 3 && !parts[1].is_empty() && version_ok(parts[2])
    } else {
        parts.len() >= 2 && version_ok(parts[0]) && parts[1].len() == 3
    };
    if !ok {
        out.push(format!("odd start line {text:?}"));
    }
    out
}

/// Judges header lines; returns what they say about framing and pushes every ambiguity.
pub fn judge_headers(headers: &[String], ambiguous: &mut Vec<String>) -> FramingView {
    let mut view = FramingView::default();
    let mut lengths = 0;
    let mut codings = Vec::new();
    for h in headers {
        let Some(text) = h.strip_suffix('\r') else {
            ambiguous.push(format!("bare LF after {h:?}"));
            continue;
        };
        if text.starts_with([' ', '\t']) {
            ambiguous.push(format!("folded line {text:?}"));
            continue;
        }
        if text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            ambiguous.push(format!("control character in {text:?}"));
        }
        let Some((name, value)) = text.split_once(':') else {
            ambiguous.push(format!("no colon in {text:?}"));
            continue;
        };
        if name.is_empty() || name.trim() != name || name.contains([' ', '\t']) {
            ambiguous.push(format!("odd header name {name:?}"));
        }
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            lengths += 1;
            if !value.bytes().all(|b| b.is_ascii_digit()) || value.is_empty() {
                ambiguous.push(format!("Content-Length {value:?}"));
            }
            if view.length.is_none() {
                let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
                view.length = digits.parse().ok();
            }
        }
        if name == "transfer-encoding" {
            codings.push(value.to_string());
            view.chunked |= value.to_ascii_lowercase().contains("chunked");
        }
    }
    if lengths > 1 {
        ambiguous.push(format!("{lengths} Content-Length headers"));
    }
    if !codings.is_empty() {
        if lengths > 0 {
            ambiguous.push("Content-Length and Transfer-Encoding".into());
        }
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            ambiguous.push(format!("Transfer-Encoding {codings:?}"));
        }
    }
    view
}

/// Reads a body of `kind` from `buf`: (body, bytes consumed), or `None` if incomplete.
fn read_body(buf: &[u8], kind: BodyKind) -> Option<(Vec<u8>, usize)> {
    match kind {
        BodyKind::None => Some((Vec::new(), 0)),
        BodyKind::Length(n) => {
            let n = usize::try_from(n).ok()?;
            (buf.len() >= n).then(|| (buf[..n].to_vec(), n))
        }
        BodyKind::Chunked => {
            let mut at = 0;
            let mut body = Vec::new();
            loop {
                let eol = buf[at..].iter().position(|&b| b == b'\n')?;
                let line = &buf[at..at + eol];
                at += eol + 1;
                let digits: Vec<u8> = line
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_hexdigit)
                    .take(15)
                    .collect();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).unwrap_or(0);
                if size == 0 {
                    // Trailers until an empty line.
                    loop {
                        let eol = buf[at..].iter().position(|&b| b == b'\n')?;
                        let empty = eol == 0 || (eol == 1 && buf[at] == b'\r');
                        at += eol + 1;
                        if empty {
                            return Some((body, at));
                        }
                    }
                }
                if buf.len() < at + size {
                    return None;
                }
                body.extend_from_slice(&buf[at..at + size]);
                at += size;
                // The chunk's CRLF (forgiving: LF alone too).
                let eol = buf[at..].iter().position(|&b| b == b'\n')?;
                at += eol + 1;
            }
        }
    }
}

/// A response as a client read it, judged the same way.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The status code (0: none arrived).
    pub status: u16,
    /// Header lines as received.
    pub headers: Vec<String>,
    /// The body.
    pub body: Vec<u8>,
    /// Why its head was ambiguous.
    pub ambiguous: Vec<String>,
    /// The connection was closed after it.
    pub closed: bool,
    /// The body was not delimited and the connection stayed open (the client would hang).
    pub hung: bool,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads responses from `conn` until `want` final responses arrived, the connection closed,
/// or `wait` passed without a byte. 1xx responses are returned too.
pub fn read_responses(conn: &mut TcpStream, want: usize, wait: Duration) -> Vec<Response> {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    let mut finals = 0;
    while finals < want {
        if let Some((head_len, lines)) = split_head(&buf) {
            let (line, headers) = lines.split_first().unwrap();
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut ambiguous = judge_line(line, false);
            let view = judge_headers(headers, &mut ambiguous);
            let kind = if (100..200).contains(&status) || status == 204 || status == 304 {
                BodyKind::None
            } else if view.chunked {
                BodyKind::Chunked
            } else if let Some(n) = view.length {
                BodyKind::Length(n)
            } else {
                // Until close.
                if !closed {
                    match read_more(conn, &mut buf) {
                        Some(true) => continue,
                        Some(false) => {
                            closed = true;
                            continue;
                        }
                        None => {
                            out.push(Response {
                                status,
                                headers: headers.to_vec(),
                                body: buf[head_len..].to_vec(),
                                ambiguous,
                                closed: false,
                                hung: true,
                            });
                            return out;
                        }
                    }
                }
                BodyKind::Length((buf.len() - head_len) as u64)
            };
            if let Some((body, used)) = read_body(&buf[head_len..], kind) {
                buf.drain(..head_len + used);
                if status >= 200 {
                    finals += 1;
                }
                out.push(Response {
                    status,
                    headers: headers.to_vec(),
                    body,
                    ambiguous,
                    closed: false,
                    hung: false,
                });
                continue;
            }
        }
        if closed {
            break;
        }
        match read_more(conn, &mut buf) {
            Some(true) => {}
            Some(false) => closed = true,
            None => break,
        }
    }
    if closed && let Some(last) = out.last_mut() {
        last.closed = true;
    }
    out
}

/// `Some(true)`: read bytes; `Some(false)`: closed; `None`: nothing within the timeout.
fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<bool> {
    let mut chunk = [0u8; 4096];
    match conn.read(&mut chunk) {
        Ok(0) => Some(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(true)
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            None
        }
        Err(_) => Some(false),
    }
}

/// A backend that answers each request with `103 Early Hints` (a `Link` header), then
/// [`echo_target`].
pub fn early_hints() -> StrictBackend {
    spawn(
        Prefer::Length,
        None,
        reply(|n, seen| {
            let mut out =
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".to_vec();
            out.extend(echo_target(n, seen)?.bytes);
            Some(Answer {
                bytes: out,
                close: false,
            })
        }),
    )
}

/// A backend that answers a connection's first request, then reads the next one and closes
/// without an answer (as a keep-alive timeout racing a request does).
pub fn drops_second_request() -> StrictBackend {
    spawn(
        Prefer::Length,
        None,
        reply(|n, seen| if n == 0 { echo_target(n, seen) } else { None }),
    )
}
