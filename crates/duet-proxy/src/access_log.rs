//! The access log: one JSON object per request, written by a thread of its own so that a slow
//! disk never stalls a worker. Off unless configured.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where log lines go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Sender<String>,
}

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Balancer name.
    pub balancer: &'a str,
    /// Client address.
    pub client: SocketAddr,
    /// `"http"`, `"https"` (HTTP/1.x) or `"h2"`.
    pub proto: &'a str,
    /// Method.
    pub method: &'a str,
    /// Request target.
    pub target: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Backend that answered, if any.
    pub backend: Option<SocketAddr>,
    /// Backends tried.
    pub attempts: usize,
    /// From the complete request head to the end of the response (HTTP/1.x) or to the
    /// response head (HTTP/2, whose body streams on after the log line).
    pub duration: Duration,
}

impl AccessLog {
    /// Opens `target`: `"stderr"` or a file path (appended to).
    pub fn open(target: &str) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = if target == "stderr" {
            Box::new(std::io::stderr())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(target))?,
            )
        };
        let (tx, rx) = channel::<String>();
        std::thread::Builder::new()
            .name("duet-access-log".into())
            .spawn(move || {
                for line in rx {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.flush();
                }
            })?;
        Ok(AccessLog { tx })
    }

    /// Queues one line.
    pub fn log(&self, e: &Entry<'_>) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let backend = e
            .backend
            .map_or_else(|| "null".to_string(), |b| format!("\"{b}\""));
        let line = format!(
            "{{\"ts\":{ts:.3},\"balancer\":{},\"client\":\"{}\",\"proto\":\"{}\",\"method\":{},\"target\":{},\"status\":{},\"backend\":{backend},\"attempts\":{},\"ms\":{:.3}}}\n",
            json_string(e.balancer),
            e.client,
            e.proto,
            json_string(e.method),
            json_string(e.target),
            e.status,
            e.attempts,
            e.duration.as_secs_f64() * 1000.0
        );
        let _ = self.tx.send(line);
    }
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
