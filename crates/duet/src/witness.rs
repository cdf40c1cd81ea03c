//! `duet witness`: the third vote of a two-node cluster, for a small third host.
//!
//! It answers lease requests over UDP with the pure [`duet_cluster::lease::Witness`]: one
//! holder at a time, terms that rise with every new holder, stale terms refused. Before it
//! grants, it writes its promise (highest term, holder, lease length) to the state file and
//! syncs it, so a restarted witness waits out any lease it may have granted. Every message is
//! authenticated with the cluster key and checked against replay.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duet_cluster::lease::{Answer, Promise, Witness};
use duet_cluster::wire::{self, Body, DbRecord, Key, Message, ReplayGuard};

/// Clocks of nodes and witness may differ by this much (they should run NTP).
pub const CLOCK_WINDOW_MS: u64 = 30_000;

/// Options of `duet witness`.
#[derive(Debug, Clone)]
pub struct Options {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Shared key file.
    pub key_file: PathBuf,
    /// Where promises are persisted.
    pub state_file: PathBuf,
    /// Longest lease granted.
    pub lease: Duration,
}

/// Wall clock in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads a key file (its bytes, surrounding whitespace trimmed).
pub fn read_key(path: &Path) -> Result<Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    Key::new(text.trim().as_bytes()).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// Runs the witness until killed; returns the exit code.
pub fn run(opts: &Options) -> i32 {
    match serve(opts) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn load_promise(path: &Path) -> Result<Option<Promise>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("state file {}: {e}", path.display())),
    };
    let mut max_term = None;
    let mut holder = None;
    let mut duration = None;
    let mut record = DbRecord {
        system_id: 0,
        primary: String::new(),
        standby: String::new(),
        term: 0,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("max_term", v)) => max_term = v.trim().parse().ok(),
            Some(("holder", v)) => holder = Some(v.trim().to_string()),
            Some(("lease_ms", v)) => duration = v.trim().parse().ok().map(Duration::from_millis),
            Some(("db_system", v)) => record.system_id = v.trim().parse().unwrap_or(0),
            Some(("db_primary", v)) => record.primary = v.trim().to_string(),
            Some(("db_standby", v)) => record.standby = v.trim().to_string(),
            Some(("db_term", v)) => record.term = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let record = (!record.primary.is_empty()).then_some(record);
    match (max_term, holder, duration) {
        (Some(max_term), Some(holder), Some(duration)) => Ok(Some(Promise {
            max_term,
            holder,
            duration,
            record,
        })),
        _ => Err(format!(
            "state file {}: unreadable; remove it only if no node can hold a lease now",
            path.display()
        )),
    }
}

/// Writes the promise durably: a temporary file, fsync, rename, fsync of the directory.
fn save_promise(path: &Path, p: &Promise) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "max_term={}\nholder={}\nlease_ms={}\n",
        p.max_term,
        p.holder,
        p.duration.as_millis()
    )?;
    if let Some(r) = &p.record {
        write!(
            f,
            "db_system={}\ndb_primary={}\ndb_standby={}\ndb_term={}\n",
            r.system_id, r.primary, r.standby, r.term
        )?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes sure promises can be kept: the state file's directory exists (created if missing) and
/// a file can be written and synced there. A witness that cannot persist refuses every grant,
/// so it must not start as if it could.
fn check_state_dir(path: &Path) -> Result<(), String> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "state file {}: cannot {what} {}: {e}; the witness could not keep its promises (create the directory or choose another with --state)",
            path.display(),
            dir.display()
        )
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("create", e))?;
    crate::preflight::probe_write(&dir).map_err(|e| fail("write in", e))
}

fn serve(opts: &Options) -> Result<(), String> {
    let key = read_key(&opts.key_file)?;
    check_state_dir(&opts.state_file)?;
    let restored = load_promise(&opts.state_file)?;
    let socket = UdpSocket::bind(opts.listen).map_err(|e| format!("bind {}: {e}", opts.listen))?;
    let epoch = std::time::Instant::now();
    let now = || duet_time::Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
    if let Some(p) = &restored {
        tracing::info!(
            "restored promise: term {} held by {:?}; no lease for {} while it may still run",
            p.max_term,
            p.holder,
            duet_time::format_duration(p.duration.max(opts.lease))
        );
    }
    let mut witness = Witness::new(now(), opts.lease, restored.as_ref());
    let mut guard = ReplayGuard::new(CLOCK_WINDOW_MS);
    let boot = duet_sys::process::random_u64().map_err(|e| format!("random: {e}"))?;
    let mut seq = 0u64;
    let mut holder: Option<String> = None;
    // Why promises cannot be written now, logged once per change.
    let mut failing: Option<String> = None;
    tracing::info!(
        "duet witness on {} (lease {}, state {})",
        opts.listen,
        duet_time::format_duration(opts.lease),
        opts.state_file.display()
    );
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("receive: {e}");
                continue;
            }
        };
        let msg = match wire::decode(&buf[..n], &key) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("dropped a datagram from {from}: {}", e.label());
                continue;
            }
        };
        if let Err(e) = guard.admit(&msg, unix_ms()) {
            tracing::warn!(
                "dropped a message from {} ({from}): {}",
                msg.sender,
                e.label()
            );
            continue;
        }
        if let Body::RecordQuery { request } = msg.body {
            if let Some(record) = witness.record().cloned() {
                seq += 1;
                let body = Body::Record { request, record };
                send(&socket, &key, boot, seq, witness.max_term(), from, body);
            }
            continue;
        }
        if let Body::RecordWrite { request, record } = msg.body {
            let answer = match witness.write_record(now(), &msg.sender, msg.term, record.clone()) {
                Ok(p) => match save_promise(&opts.state_file, &p) {
                    Ok(()) => {
                        tracing::info!(
                            "database record from {}: {}",
                            msg.sender,
                            crate::daemon::record_from_wire(&record)
                        );
                        witness.record().cloned()
                    }
                    Err(e) => {
                        tracing::error!(
                            "cannot write its state file {}: {e}: database record not kept",
                            opts.state_file.display()
                        );
                        None
                    }
                },
                Err(why) => {
                    tracing::warn!("database record from {} refused: {why}", msg.sender);
                    witness.record().cloned()
                }
            };
            if let Some(record) = answer {
                seq += 1;
                send(
                    &socket,
                    &key,
                    boot,
                    seq,
                    witness.max_term(),
                    from,
                    Body::Record { request, record },
                );
            }
            continue;
        }
        let Body::LeaseRequest {
            request,
            duration_ms,
        } = msg.body
        else {
            continue;
        };
        let t = now();
        let (answer, promise) = witness.request(
            t,
            &msg.sender,
            msg.term,
            Duration::from_millis(u64::from(duration_ms)),
        );
        let saved = match &promise {
            Some(p) => save_promise(&opts.state_file, p).map_err(|e| {
                format!(
                    "cannot write its state file {}: {e}",
                    opts.state_file.display()
                )
            }),
            None => Ok(()),
        };
        match (&saved, &failing) {
            (Err(why), old) if old.as_ref() != Some(why) => {
                tracing::error!("{why}: refusing every lease until it can");
                failing = Some(why.clone());
            }
            (Ok(()), Some(_)) if promise.is_some() => {
                tracing::info!(
                    "state file {} written again: granting leases",
                    opts.state_file.display()
                );
                failing = None;
            }
            _ => {}
        }
        let body = match (&answer, saved) {
            // Without a durable promise there is no grant; the node is told why.
            (Answer::Granted { .. }, Err(reason)) => Body::LeaseUnavailable { request, reason },
            (answer, _) => reply_body(answer, request, &msg.sender, &mut holder),
        };
        let term = answer.term();
        // Every lease answer comes right after the database record (the next sequence
        // number), so a new holder knows the record as it stands when its lease begins.
        if let Some(record) = witness.record().cloned() {
            seq += 1;
            let body = Body::Record { request: 0, record };
            send(&socket, &key, boot, seq, term, from, body);
        }
        seq += 1;
        send(&socket, &key, boot, seq, term, from, body);
    }
}

/// Sends one message from the witness.
fn send(socket: &UdpSocket, key: &Key, boot: u64, seq: u64, term: u64, to: SocketAddr, body: Body) {
    let reply = Message {
        sender: "witness".into(),
        boot,
        seq,
        sent_ms: unix_ms(),
        term,
        body,
    };
    if let Err(e) = socket.send_to(&wire::encode(&reply, key), to) {
        tracing::warn!("reply to {to}: {e}");
    }
}

/// The reply to a request the witness could answer (and persist).
fn reply_body(answer: &Answer, request: u64, sender: &str, holder: &mut Option<String>) -> Body {
    if let Answer::Granted { term, .. } = answer
        && holder.as_deref() != Some(sender)
    {
        tracing::info!("lease to {sender} (term {term})");
        *holder = Some(sender.to_string());
    }
    answer.body(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_survive_a_restart_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("duet-witness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        assert_eq!(load_promise(&path).unwrap(), None);
        let p = Promise {
            max_term: 42,
            holder: "alpha".into(),
            duration: Duration::from_secs(2),
            record: Some(DbRecord {
                system_id: 7_443_000_000_000_000_001,
                primary: "alpha".into(),
                standby: "beta".into(),
                term: 42,
            }),
        };
        save_promise(&path, &p).unwrap();
        assert_eq!(load_promise(&path).unwrap(), Some(p));
        std::fs::write(&path, "garbage").unwrap();
        let e = load_promise(&path).unwrap_err();
        assert!(e.contains("unreadable"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
