//! HTTP/1.1 helpers shared by the HTTP tests: a keep-alive backend and a blocking client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Backend;

/// A keep-alive HTTP/1.1 backend. `GET /xff` answers with the X-Forwarded-For it got,
/// `GET /proto` with the X-Forwarded-Proto;
/// `POST /echo` answers with the body; `/chunked` answers chunked; `/500` answers 500;
/// anything else answers its name.
pub fn backend(name: &'static str) -> Backend {
    super::spawn(name, serve)
}

pub fn serve(conn: TcpStream, name: &str, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::SeqCst) {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        let mut xff = String::new();
        let mut proto = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if lower.starts_with("x-forwarded-proto:") {
                proto = h["x-forwarded-proto:".len()..].trim().to_string();
            }
            if lower.starts_with("x-forwarded-for:") {
                xff = h["x-forwarded-for:".len()..].trim().to_string();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let reply = match path.as_str() {
            "/xff" => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{xff}",
                xff.len()
            ),
            "/proto" => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{proto}",
                proto.len()
            ),
            "/echo" => {
                let b = String::from_utf8_lossy(&body).to_string();
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len())
            }
            "/chunked" => format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{name}\r\n1\r\n!\r\n0\r\n\r\n",
                name.len()
            ),
            "/500" => "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_string(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            ),
        };
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A response as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status line, without CRLF.
    pub status: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` on `conn` and reads one response with a Content-Length or chunked body;
/// returns (status line, body).
pub fn roundtrip(conn: &mut BufReader<TcpStream>, request: &str) -> (String, String) {
    let r = exchange(conn, request);
    (r.status, r.body)
}

/// Sends `request` on `conn` and reads one whole response.
pub fn exchange(conn: &mut BufReader<TcpStream>, request: &str) -> Reply {
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    read_reply(conn)
}

/// Reads one response with a Content-Length or chunked body (or none).
pub fn read_reply<R: BufRead>(conn: &mut R) -> Reply {
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let (mut length, mut chunked) = (None, false);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            length = Some(value.parse::<usize>().unwrap());
        }
        chunked |= name == "transfer-encoding" && value.contains("chunked");
        headers.push((name, value));
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            conn.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body).unwrap();
    }
    Reply {
        status: status.trim_end().to_string(),
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A client connection to `addr` with a 5 s read timeout.
pub fn connect_to(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

/// A client connection to the proxy.
pub fn connect(p: &duet_proxy::Proxy) -> BufReader<TcpStream> {
    connect_to(p.local_addr())
}
