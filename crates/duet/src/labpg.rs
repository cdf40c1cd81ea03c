//! A PostgreSQL client for lab namespaces: a writer that records every acknowledged commit
//! (one JSON line each), and a reader that lists the rows a server holds. The database tests
//! and benchmarks compare the two: every acknowledged row must be on the new primary.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// One line of the writer's output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteLine {
    /// Wall clock, seconds since the epoch.
    pub t: f64,
    /// The row id whose commit was acknowledged.
    pub id: Option<u64>,
    /// What failed instead.
    pub error: Option<String>,
}

/// How long the writer waits for a connection before it tries again.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Connects to the first of `targets` that answers and, when there are several, accepts
/// writes (libpq's `target_session_attrs=read-write`, as clients of a Patroni pair do).
async fn connect(
    targets: &[SocketAddr],
    password: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    for t in targets {
        cfg.host(t.ip().to_string()).port(t.port());
    }
    if targets.len() > 1 {
        cfg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    let timeout = timeout * targets.len().max(1) as u32;
    cfg.user("postgres")
        .password(password)
        .dbname("postgres")
        .application_name("duet-lab-writer")
        .connect_timeout(timeout);
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {}", describe(&e)))?;
    tokio::spawn(conn);
    Ok(client)
}

fn describe(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

fn print(line: &WriteLine) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(line).unwrap_or_default());
    let _ = out.flush();
}

/// Inserts rows 1, 2, 3, … into `duet_audit` at `target` every `interval`, reconnecting after
/// any failure; prints a [`WriteLine`] per acknowledged commit and per failure. A commit that
/// takes longer than `timeout` counts as failed (not acknowledged). Runs until killed.
pub fn write(
    targets: &[SocketAddr],
    password_file: &std::path::Path,
    interval: &str,
    timeout: &str,
) -> i32 {
    let (Ok(interval), Ok(timeout)) = (
        duet_time::parse_duration(interval),
        duet_time::parse_duration(timeout),
    ) else {
        eprintln!("lab-pg: bad --interval or --timeout");
        return 2;
    };
    let password = match duet_db::read_password(password_file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lab-pg: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lab-pg: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let mut next: u64 = 1;
        let mut client = None;
        loop {
            if client.is_none() {
                // A short connect timeout: a SYN sent to a node that just lost the address
                // would otherwise wait out the kernel's retransmissions.
                match connect(targets, &password, CONNECT_TIMEOUT).await {
                    Ok(c) => {
                        let ddl = "CREATE TABLE IF NOT EXISTS duet_audit (id bigint PRIMARY KEY, at timestamptz DEFAULT now())";
                        match tokio::time::timeout(timeout, c.batch_execute(ddl)).await {
                            Ok(Ok(())) => client = Some(c),
                            Ok(Err(e)) => print(&WriteLine { t: now(), id: None, error: Some(describe(&e)) }),
                            Err(_) => print(&WriteLine { t: now(), id: None, error: Some("create table: timed out".into()) }),
                        }
                    }
                    Err(e) => print(&WriteLine { t: now(), id: None, error: Some(e) }),
                }
                if client.is_none() {
                    tokio::time::sleep(interval).await;
                    continue;
                }
            }
            let Some(c) = &client else { continue };
            // Each id is tried until acknowledged: an id whose commit failed may or may not be
            // on the server, and is not counted either way.
            let sql = format!("INSERT INTO duet_audit (id) VALUES ({next}) ON CONFLICT (id) DO NOTHING");
            match tokio::time::timeout(timeout, c.batch_execute(&sql)).await {
                Ok(Ok(())) => {
                    print(&WriteLine { t: now(), id: Some(next), error: None });
                    next += 1;
                }
                Ok(Err(e)) => {
                    print(&WriteLine { t: now(), id: None, error: Some(describe(&e)) });
                    client = None;
                }
                Err(_) => {
                    print(&WriteLine { t: now(), id: None, error: Some("commit: no answer within the timeout".into()) });
                    client = None;
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Prints the ids in `duet_audit` at `target`, one per line; exit 1 if it cannot.
pub fn read(targets: &[SocketAddr], password_file: &std::path::Path) -> i32 {
    let password = match duet_db::read_password(password_file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lab-pg: {e}");
            return 2;
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    rt.block_on(async {
        let c = match connect(targets, &password, Duration::from_secs(5)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("lab-pg: {e}");
                return 1;
            }
        };
        match c
            .simple_query("SELECT id FROM duet_audit ORDER BY id")
            .await
        {
            Ok(rows) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for m in rows {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m
                        && let Some(id) = r.get(0)
                    {
                        let _ = writeln!(out, "{id}");
                    }
                }
                0
            }
            Err(e) => {
                eprintln!("lab-pg: {}", describe(&e));
                1
            }
        }
    })
}
