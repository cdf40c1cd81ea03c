//! Active checks (a TCP connect, or an HTTP `GET` whose status must fall in a range) and the
//! tick that ends passive cooldowns. Both run on the first worker thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::balancer::Balancer;
use crate::spec::CheckSpec;

/// Republishes availability that changes with time alone (end of a passive cooldown).
pub(crate) async fn tick_loop(inner: Arc<Balancer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !inner.is_stopped() {
        tick.tick().await;
        let shared = inner.snapshot();
        for b in shared.backends() {
            b.update(&inner.name, |h, now| h.handle_timeout(now));
        }
    }
}

/// Checks every backend of the current snapshot, one round per interval; a reload takes effect
/// at the next round.
pub(crate) async fn check_loop(inner: Arc<Balancer>) {
    while !inner.is_stopped() {
        let shared = inner.snapshot();
        let Some(check) = shared.spec.check.clone() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let round = tokio::time::Instant::now();
        for b in shared.backends() {
            let result = tokio::time::timeout(check.timeout, probe(b.address, &check)).await;
            let (passed, detail) = match result {
                Ok(Ok(())) => (true, String::new()),
                Ok(Err(e)) => (false, e),
                Err(_) => (
                    false,
                    format!(
                        "no answer within {}",
                        duet_time::format_duration(check.timeout)
                    ),
                ),
            };
            b.update(&inner.name, |h, now| h.record_check(now, passed, &detail));
        }
        drop(shared);
        tokio::time::sleep_until(round + check.interval).await;
    }
}

/// One check of one backend.
async fn probe(addr: SocketAddr, check: &CheckSpec) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let Some(path) = &check.path else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: duet-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        match crate::h1::parse_response(&buf, &mut headers, crate::h1::Limits::default(), false) {
            Ok(Some(res)) => {
                let (lo, hi) = check.expect;
                return if (lo..=hi).contains(&res.status) {
                    Ok(())
                } else {
                    Err(format!(
                        "GET {path} answered {} (expected {lo}-{hi})",
                        res.status
                    ))
                };
            }
            Ok(None) => {
                buf.reserve(1024);
                if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed before a response".into());
                }
            }
            Err(e) => return Err(format!("bad response: {}", e.describe())),
        }
    }
}
