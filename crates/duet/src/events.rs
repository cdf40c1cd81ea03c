//! `duet events [--follow]`: a running node's event stream, one line per event.
//!
//! Without `--follow`, the last events kept (`GET /v1/events`). With it, the Server-Sent
//! Events stream; a dropped connection is resumed with `Last-Event-ID`, so no event is
//! printed twice or skipped unless the node forgot it (then a line says how many).

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use duet_admin::Event;

/// Runs `duet events`; returns the exit code.
pub fn run(target: &crate::status::Target, last: usize, follow: bool, json: bool) -> i32 {
    let addr = target.addr;
    let path = format!(
        "/v1/events?limit={}",
        last.clamp(1, duet_admin::events::KEEP)
    );
    let body = match target.get(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("duet events: {e}");
            return 1;
        }
    };
    let list: Vec<Event> = match serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["events"].clone()).ok())
    {
        Some(l) => l,
        None => {
            eprintln!("duet events: unexpected answer from {addr}: {body}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    for e in &list {
        if print(&mut out, e, json).is_err() {
            return 0;
        }
    }
    if !follow {
        return 0;
    }
    // Resume right after what was printed (by number: the stream's ids carry the run too).
    let mut after = list.last().map(|e| e.seq);
    let mut id: Option<String> = None;
    loop {
        match follow_once(target, &mut id, &mut after, &mut out, json) {
            Ok(()) => return 0,
            Err(e) => {
                eprintln!("duet events: {e}; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Reads one stream connection until it fails; `Ok` when stdout is gone.
fn follow_once(
    target: &crate::status::Target,
    id: &mut Option<String>,
    after: &mut Option<u64>,
    out: &mut impl Write,
    json: bool,
) -> Result<(), String> {
    let addr = target.addr;
    // Keep-alives come every 15 s: silence for much longer means the node is gone.
    let mut s = target
        .connect(Duration::from_secs(40))
        .map_err(|e| format!("{addr}: {e}"))?;
    let last = id
        .as_ref()
        .map_or(String::new(), |i| format!("Last-Event-ID: {i}\r\n"));
    let auth = target
        .token
        .as_ref()
        .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}{last}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("the stream was refused: {}", line.trim()));
    }
    let (mut event, mut data, mut this_id) = (String::new(), String::new(), None);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the node closed the stream".into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = l.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            data = v.to_string();
        } else if let Some(v) = l.strip_prefix("id: ") {
            this_id = Some(v.to_string());
        } else if l.is_empty() && !data.is_empty() {
            if event == "gap" {
                let missed = serde_json::from_str::<serde_json::Value>(&data)
                    .ok()
                    .and_then(|v| v["missed"].as_u64())
                    .unwrap_or(0);
                if missed > 0 {
                    eprintln!(
                        "duet events: {missed} event(s) were forgotten by the node meanwhile"
                    );
                }
            } else if let Ok(e) = serde_json::from_str::<Event>(&data) {
                // The first connection has no id: skip what the list printed already.
                if after.is_none_or(|a| e.seq > a) {
                    if print(out, &e, json).is_err() {
                        return Ok(());
                    }
                    *after = Some(e.seq);
                }
                if let Some(i) = this_id.take() {
                    *id = Some(i);
                }
            }
            event.clear();
            data.clear();
        }
    }
}

fn print(out: &mut impl Write, e: &Event, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())?;
    } else {
        writeln!(out, "{} #{:<5} {}", utc(e.unix_ms), e.seq, e.kind)?;
    }
    out.flush()
}

/// `2026-12-01 13:55:02.123` (UTC) from Unix milliseconds.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_milliseconds_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc(1_796_129_933_253), "2026-12-01 12:58:53.253");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31 23:59:59.999");
    }
}
