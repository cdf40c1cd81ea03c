//! Alert delivery (`[alerts]`): a consumer of the event stream on a thread of its own.
//!
//! Which events alert, dedupe and rate limits are the pure `duet_admin::alerts::Gate`'s;
//! this module subscribes, asks the gate, and delivers: a JSON POST to the webhook (tried
//! again after 1, 2 and 4 s) and a mail through the SMTP relay. A slow receiver delays only
//! this thread; if it falls behind the stream, the events it lost are counted (`alerts`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duet_admin::Events;
use duet_admin::alerts::{Alert, Gate, Policy};
use duet_config::AlertsConfig;
use http_body_util::{BodyExt, Full};
use tokio::sync::broadcast;

/// Pauses between webhook attempts.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Starts the alert thread for `node`.
pub fn start(node: &str, cfg: &AlertsConfig, events: Arc<Events>) -> Result<(), String> {
    let policy = Policy {
        on: cfg.on.clone(),
        dedupe_ms: cfg.dedupe.0.as_millis() as u64,
        per_minute: cfg.per_minute,
    };
    let gate = Gate::new(node, policy);
    let cfg = cfg.clone();
    let sub = events.subscribe();
    std::thread::Builder::new()
        .name("duet-alerts".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("alerts: runtime: {e}");
                    return;
                }
            };
            rt.block_on(run(cfg, gate, sub, events));
        })
        .map(|_| ())
        .map_err(|e| format!("alerts thread: {e}"))
}

async fn run(
    cfg: AlertsConfig,
    mut gate: Gate,
    mut sub: broadcast::Receiver<Arc<duet_admin::Event>>,
    events: Arc<Events>,
) {
    loop {
        let event = match sub.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                events.dropped("alerts", n);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(alert) = gate.admit(crate::witness::unix_ms(), &event) else {
            continue;
        };
        if let Some(w) = &cfg.webhook {
            webhook(&w.url, w.timeout.0, &alert).await;
        }
        if let Some(e) = &cfg.email {
            let (e, alert) = (e.clone(), alert.clone());
            let sent = tokio::task::spawn_blocking(move || email(&e, &alert)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(why)) => tracing::warn!("alerts: email through {}: {why}", cfg_smtp(&cfg)),
                Err(_) => tracing::warn!("alerts: email: the sender panicked"),
            }
        }
    }
}

fn cfg_smtp(cfg: &AlertsConfig) -> &str {
    cfg.email.as_ref().map_or("", |e| e.smtp.as_str())
}

/// POSTs `alert` to `url`, trying again after each pause in [`RETRIES`].
async fn webhook(url: &str, timeout: Duration, alert: &Alert) {
    let body = serde_json::to_vec(alert).unwrap_or_default();
    let mut last = String::new();
    for pause in std::iter::once(Duration::ZERO).chain(RETRIES) {
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(timeout, post(url, body.clone())).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
    }
    tracing::warn!(
        "alerts: webhook {url}: gave up after {} attempts: {last}",
        RETRIES.len() + 1
    );
}

/// One POST of a JSON body; `Ok` on a 2xx answer.
async fn post(url: &str, body: Vec<u8>) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Mails `alert` through the relay (plain SMTP, no authentication).
fn email(cfg: &duet_config::EmailConfig, alert: &Alert) -> Result<(), String> {
    use lettre::Transport;
    let (host, port) = cfg
        .smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("smtp {:?}: not host:port", cfg.smtp))?;
    let mut message = lettre::Message::builder()
        .from(cfg.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(format!(
            "[duet {}] {}: {}",
            alert.node, alert.severity, alert.summary
        ));
    for to in &cfg.to {
        message = message.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
    }
    let mut text = format!(
        "{}\n\nnode {}, severity {}, event #{} at {}\n",
        alert.summary,
        alert.node,
        alert.severity,
        alert.event.seq,
        crate::events::utc(alert.event.unix_ms)
    );
    if alert.suppressed > 0 {
        text.push_str(&format!(
            "{} more alert(s) were held back by the rate limit before this one.\n",
            alert.suppressed
        ));
    }
    text.push_str(&format!(
        "\n{}\n",
        serde_json::to_string_pretty(&alert.event).unwrap_or_default()
    ));
    let message = message.body(text).map_err(|e| e.to_string())?;
    let relay = lettre::SmtpTransport::builder_dangerous(host)
        .port(port)
        .timeout(Some(cfg.timeout.0))
        .build();
    relay.send(&message).map(|_| ()).map_err(|e| e.to_string())
}
