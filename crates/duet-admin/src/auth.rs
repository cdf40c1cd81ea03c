//! Who may call what: tokens kept as SHA-256 hashes with a role each, the health endpoints
//! that may be open, a limit on failed authentications per client address, and the audit
//! log.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use duet_config::Role;

/// A token the API accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Who: in the audit log and events.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {})", self.name, self.role)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `"-"` when none was needed.
    pub name: String,
    /// Its role; `None` when none was needed.
    pub role: Option<Role>,
}

/// Why a request was refused: the HTTP status and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401, 403 or 429.
    pub status: u16,
    /// The message.
    pub message: String,
}

/// Failed authentications from one address within [`WINDOW`] before it is refused
/// without a look at its token, for [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// See [`MAX_FAILURES`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest are forgotten first).
const REMEMBERED: usize = 4096;

/// The API's access rules.
#[derive(Debug)]
pub struct Access {
    tokens: Vec<Token>,
    public: Vec<String>,
    /// Reads need no token (no `[admin]` tokens: the behaviour before they existed).
    open_reads: bool,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    audit: Option<Mutex<std::fs::File>>,
    audit_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl Access {
    /// The rules: `tokens`, GET paths open to all (`public`), whether every read is open,
    /// and the audit log to append to (created 0600 if missing).
    pub fn new(
        tokens: Vec<Token>,
        public: Vec<String>,
        open_reads: bool,
        audit: Option<&Path>,
    ) -> Result<Access, String> {
        let file = match audit {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("audit log {}: {e}", path.display()))?;
                Some(Mutex::new(f))
            }
            None => None,
        };
        Ok(Access {
            tokens,
            public,
            open_reads,
            failures: Mutex::new(HashMap::new()),
            audit: file,
            audit_path: audit.map(Path::to_path_buf),
        })
    }

    /// Reads open, nothing writable: no token at all.
    pub fn open() -> Access {
        Access {
            tokens: Vec::new(),
            public: Vec::new(),
            open_reads: true,
            failures: Mutex::new(HashMap::new()),
            audit: None,
            audit_path: None,
        }
    }

    /// Whether any token can act (else the API is read-only).
    pub fn writable(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Where the audit log is.
    pub fn audit_path(&self) -> Option<&Path> {
        self.audit_path.as_deref()
    }

    /// Checks the `Authorization` headers of a request from `from` to `path` that needs
    /// `need` (`write`: it changes something).
    pub fn check(
        &self,
        authorization: &[&[u8]],
        from: IpAddr,
        path: &str,
        need: Role,
        write: bool,
    ) -> Result<Caller, Refusal> {
        let anonymous = Caller {
            name: "-".into(),
            role: None,
        };
        if !write && (self.open_reads || self.public.iter().any(|p| p == path)) {
            return Ok(anonymous);
        }
        if write && self.tokens.is_empty() {
            return Err(Refusal {
                status: 403,
                message: "the admin API is read-only: add admin.tokens (or node.operator_token_file) to allow changes".into(),
            });
        }
        let now = Instant::now();
        if let Some(until) = self.blocked(from, now) {
            return Err(Refusal {
                status: 429,
                message: format!(
                    "too many failed authentications from {from}: wait {} s",
                    until
                        .saturating_duration_since(now)
                        .as_millis()
                        .div_ceil(1000)
                ),
            });
        }
        if authorization.len() > 1 {
            return Err(Refusal {
                status: 400,
                message: "several Authorization headers: send exactly one".into(),
            });
        }
        let given = authorization
            .first()
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, given);
        // Every configured hash is compared, in time independent of the contents.
        let mut found = None;
        for t in &self.tokens {
            if same(digest.as_ref(), &t.sha256) && !given.is_empty() {
                found = Some(t);
            }
        }
        let Some(token) = found else {
            // Only a token that does not fit counts toward the limit: a client without one
            // (a browser's first request) is not guessing.
            if !given.is_empty() {
                self.failed(from, now);
            }
            return Err(Refusal {
                status: 401,
                message: format!(
                    "{path} needs Authorization: Bearer <token> of a {} (or higher) token",
                    need.as_str()
                ),
            });
        };
        if token.role < need {
            return Err(Refusal {
                status: 403,
                message: format!(
                    "token {:?} is a {}: {path} needs {}",
                    token.name, token.role, need
                ),
            });
        }
        Ok(Caller {
            name: token.name.clone(),
            role: Some(token.role),
        })
    }

    fn blocked(&self, from: IpAddr, now: Instant) -> Option<Instant> {
        let g = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&from)?.blocked_until.filter(|u| *u > now)
    }

    fn failed(&self, from: IpAddr, now: Instant) {
        let mut g = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= REMEMBERED && !g.contains_key(&from) {
            g.retain(|_, f| now.saturating_duration_since(f.since) < WINDOW);
            if g.len() >= REMEMBERED
                && let Some(oldest) = g.iter().min_by_key(|(_, f)| f.since).map(|(ip, _)| *ip)
            {
                g.remove(&oldest);
            }
        }
        let f = g.entry(from).or_insert(Failures {
            count: 0,
            since: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(f.since) >= WINDOW {
            *f = Failures {
                count: 0,
                since: now,
                blocked_until: None,
            };
        }
        f.count += 1;
        if f.count == MAX_FAILURES {
            f.blocked_until = Some(now + WINDOW);
            tracing::warn!(
                "admin API: {MAX_FAILURES} failed authentications from {from} within {} s: refused for {} s",
                WINDOW.as_secs(),
                WINDOW.as_secs()
            );
        }
    }

    /// Appends one line to the audit log (when there is one). A write error is logged; the
    /// call it records has happened either way.
    pub fn audit(&self, entry: &AuditEntry<'_>) {
        let Some(file) = &self.audit else {
            return;
        };
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write of the whole line: with O_APPEND it lands whole, after every other.
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            tracing::error!("audit log: {e}");
        }
    }
}

/// One line of the audit log.
#[derive(Debug, serde::Serialize)]
pub struct AuditEntry<'a> {
    /// When (Unix milliseconds).
    pub unix_ms: u64,
    /// The token's name, or `-`.
    pub who: &'a str,
    /// Its role, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    /// The client's address.
    pub from: String,
    /// `POST`, `GET`…
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// The HTTP status answered.
    pub status: u16,
    /// It succeeded.
    pub ok: bool,
    /// The answer or the error.
    pub result: &'a str,
}

/// The SHA-256 of a token, as `admin.tokens[].sha256` holds it.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let t = |name: &str, role, secret: &str| Token {
            name: name.into(),
            role,
            sha256: token_hash(secret),
        };
        Access::new(
            vec![
                t("grafana", Role::Viewer, "viewer-secret-0123456789"),
                t("ops", Role::Operator, "operator-secret-0123456789"),
                t("root", Role::Admin, "admin-secret-0123456789"),
            ],
            vec!["/primary".into()],
            false,
            None,
        )
        .unwrap()
    }

    fn bearer(s: &str) -> Vec<u8> {
        format!("Bearer {s}").into_bytes()
    }

    #[test]
    fn each_role_may_do_what_the_lower_ones_may() {
        let a = access();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let ask = |secret: &str, need, write| {
            let h = bearer(secret);
            a.check(&[&h], ip, "/x", need, write)
        };
        for (secret, role) in [
            ("viewer-secret-0123456789", Role::Viewer),
            ("operator-secret-0123456789", Role::Operator),
            ("admin-secret-0123456789", Role::Admin),
        ] {
            for need in [Role::Viewer, Role::Operator, Role::Admin] {
                let r = ask(secret, need, need != Role::Viewer);
                if role >= need {
                    assert_eq!(r.unwrap().role, Some(role));
                } else {
                    let e = r.unwrap_err();
                    assert_eq!(e.status, 403, "{e:?}");
                    assert!(e.message.contains(&format!("is a {role}")), "{e:?}");
                }
            }
        }
        // The public path is open to a GET without a token, not to a write.
        assert_eq!(
            a.check(&[], ip, "/primary", Role::Viewer, false)
                .unwrap()
                .name,
            "-"
        );
        assert_eq!(
            a.check(&[], ip, "/v1/status", Role::Viewer, false)
                .unwrap_err()
                .status,
            401
        );
        let two = [bearer("a").clone(), bearer("b")];
        let two: Vec<&[u8]> = two.iter().map(Vec::as_slice).collect();
        assert_eq!(
            a.check(&two, ip, "/x", Role::Viewer, false)
                .unwrap_err()
                .status,
            400
        );
        // An empty bearer never matches, even a hash of the empty string.
        assert_eq!(ask("", Role::Viewer, false).unwrap_err().status, 401);
    }

    #[test]
    fn failed_authentications_are_limited_per_address() {
        let a = access();
        let bad: IpAddr = "10.0.0.66".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        let wrong = bearer("guess");
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                a.check(&[&wrong], bad, "/x", Role::Viewer, false)
                    .unwrap_err()
                    .status,
                401
            );
        }
        // Now even the right token is refused from that address, and it says for how long.
        let right = bearer("viewer-secret-0123456789");
        let e = a
            .check(&[&right], bad, "/x", Role::Viewer, false)
            .unwrap_err();
        assert_eq!(e.status, 429, "{e:?}");
        assert!(e.message.contains("wait 60 s"), "{e:?}");
        // Another address is not affected.
        assert!(a.check(&[&right], good, "/x", Role::Viewer, false).is_ok());
    }

    #[test]
    fn without_tokens_reads_are_open_and_writes_refused() {
        let a = Access::open();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(a.check(&[], ip, "/v1/status", Role::Viewer, false).is_ok());
        let e = a
            .check(&[], ip, "/v1/reload", Role::Admin, true)
            .unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("read-only"), "{e:?}");
    }

    #[test]
    fn the_audit_log_gets_one_json_line_per_entry_and_is_private() {
        let dir = std::env::temp_dir().join(format!("duet-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let a = Access::new(Vec::new(), Vec::new(), true, Some(&path)).unwrap();
        for ok in [true, false] {
            a.audit(&AuditEntry {
                unix_ms: 1,
                who: "ops",
                role: Some("operator"),
                from: "10.0.0.1".into(),
                method: "POST",
                path: "/v1/maintenance",
                status: if ok { 200 } else { 409 },
                ok,
                result: "done",
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["who"], "ops");
        assert_eq!(lines[1]["ok"], false);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
