//! `GET /primary`, `/replica`, `/read-only`: HTTP checks for HAProxy or the duet balancer.
//!
//! Each answers 200 or 503 with a one-line JSON body (role, timeline, lag). They answer from
//! the database agent's last look at the server, and only while that look is fresh: a server
//! that stopped answering is not reported writable from an old observation.

use crate::DatabaseStatus;

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server accepts writes.
    Primary,
    /// A replica streaming within the lag limit.
    Replica,
    /// Either.
    ReadOnly,
}

/// An observation older than this proves nothing.
const FRESH_MS: u64 = 1_500;

/// Whether the agent looked at the server recently enough for its observation to count.
pub fn fresh(db: &DatabaseStatus) -> bool {
    crate::events::unix_ms().saturating_sub(db.observed_unix_ms) <= FRESH_MS
}

/// Whether `db` passes the `role` check (`query` may hold `lag=1MB`), and the body.
pub fn check(role: Role, db: Option<&DatabaseStatus>, query: Option<&str>) -> (bool, String) {
    let Some(db) = db else {
        return (
            false,
            r#"{"role":"none","reason":"no [database] on this node"}"#.into(),
        );
    };
    let fresh = fresh(db);
    let mut limit = db.max_lag_bytes;
    let mut bad_query = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("lag", v)) => match v.parse::<duet_config::ByteSize>() {
                Ok(b) => limit = b.0,
                Err(e) => bad_query = Some(e),
            },
            _ => bad_query = Some(format!("unknown parameter {pair:?} (only lag=SIZE)")),
        }
    }
    let primary = fresh && db.role == "primary" && db.writable;
    let replica =
        fresh && db.role == "replica" && db.streaming && db.lag_bytes.is_some_and(|l| l <= limit);
    let ok = bad_query.is_none()
        && match role {
            Role::Primary => primary,
            Role::Replica => replica,
            Role::ReadOnly => primary || replica,
        };
    let reason = if let Some(e) = &bad_query {
        e.clone()
    } else if !fresh {
        "the server did not answer recently".into()
    } else if ok {
        String::new()
    } else if db.role == "replica" && !db.streaming {
        "not streaming".into()
    } else if db.role == "replica" {
        format!("lag above {limit} bytes")
    } else if db.role == "primary" && !db.writable {
        "fenced: this node may not lead".into()
    } else {
        format!("role is {}", db.role)
    };
    let body = serde_json::json!({
        "role": db.role,
        "timeline": db.timeline,
        "lsn": db.lsn,
        "lag": db.lag_bytes,
        "reason": if reason.is_empty() { None } else { Some(reason) },
    });
    (ok, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(role: &str, writable: bool, lag: Option<u64>, age_ms: u64) -> DatabaseStatus {
        let now = crate::events::unix_ms();
        DatabaseStatus {
            role: role.into(),
            writable,
            observed_unix_ms: now - age_ms,
            timeline: 2,
            lsn: "0/3000060".into(),
            lag_bytes: lag,
            streaming: lag.is_some(),
            max_lag_bytes: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn each_check_answers_only_what_was_observed_recently() {
        let p = db("primary", true, None, 10);
        assert!(check(Role::Primary, Some(&p), None).0);
        assert!(check(Role::ReadOnly, Some(&p), None).0);
        assert!(!check(Role::Replica, Some(&p), None).0);
        // Stale: the server stopped answering (or the agent is stuck).
        let (ok, body) = check(Role::Primary, Some(&db("primary", true, None, 5_000)), None);
        assert!(!ok && body.contains("did not answer recently"), "{body}");
        // A primary that may no longer lead is not a primary for clients.
        let (ok, body) = check(Role::Primary, Some(&db("primary", false, None, 10)), None);
        assert!(!ok && body.contains("fenced"), "{body}");
        let r = db("replica", false, Some(2 << 20), 10);
        assert!(
            !check(Role::Replica, Some(&r), None).0,
            "2 MB behind, limit 1 MB"
        );
        assert!(check(Role::Replica, Some(&r), Some("lag=4MB")).0);
        let (ok, body) = check(Role::Replica, Some(&r), Some("lag=lots"));
        assert!(!ok && body.contains("size"), "{body}");
        let (ok, body) = check(Role::Primary, None, None);
        assert!(!ok && body.contains("no [database]"), "{body}");
        assert!(!body.contains('\n'), "one line");
    }
}
