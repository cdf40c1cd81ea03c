//! Small helpers that run inside lab namespaces: an HTTP responder that says which node
//! answered, and a probe that polls a target and prints one JSON line per attempt.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Serves `HTTP/1.0 200` with the node `name` as body, one thread per connection.
pub fn responder(listen: SocketAddr, name: &str) -> i32 {
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lab-responder: bind {listen}: {e}");
            return 1;
        }
    };
    let body = format!("{name}\n");
    for stream in listener.incoming().flatten() {
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            // Read the request head up to the empty line.
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" || line == "\n" {
                    break;
                }
                line.clear();
            }
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    0
}

/// One probe result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeLine {
    /// Wall-clock time of the attempt, seconds since the epoch (comparable across processes).
    pub t: f64,
    /// Node that answered, or `None`.
    pub node: Option<String>,
    /// Error text when nobody answered.
    pub error: Option<String>,
}

/// Polls `target` every `interval` forever, printing a [`ProbeLine`] per attempt.
pub fn probe(target: SocketAddr, interval: &str, timeout: &str) -> i32 {
    let (Ok(interval), Ok(timeout)) = (
        duet_time::parse_duration(interval),
        duet_time::parse_duration(timeout),
    ) else {
        eprintln!("lab-probe: bad --interval or --timeout");
        return 2;
    };
    let stdout = std::io::stdout();
    loop {
        let started = Instant::now();
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let line = match ask(target, timeout) {
            Ok(node) => ProbeLine {
                t,
                node: Some(node),
                error: None,
            },
            Err(e) => ProbeLine {
                t,
                node: None,
                error: Some(e.to_string()),
            },
        };
        let mut out = stdout.lock();
        if writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default()).is_err()
            || out.flush().is_err()
        {
            return 0; // reader went away
        }
        drop(out);
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// One HTTP GET; returns the body's first line.
pub fn ask(target: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| std::io::Error::other("malformed response"))?;
    Ok(body)
}
