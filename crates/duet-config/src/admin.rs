//! `[admin]`: who may use the admin API and how (`docs/config.md`, "`[admin]`"): HTTPS,
//! tokens stored as SHA-256 hashes with a role each, the health endpoints open without a
//! token, the audit log.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::schema::Config;
use crate::validate::Seg;

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve HTTPS with this certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AdminTls>,
    /// Who may call the API. With none (and no `node.operator_token_file`), reads are open
    /// and nothing can be changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    /// GET paths answered without a token (only `/primary`, `/replica`, `/read-only`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public: Vec<String>,
    /// Append-only JSON-lines log of every call that changes something, and of failed
    /// authentications. Default: `{node.state_dir}/audit.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
}

/// `admin.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One entry of `admin.tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who: shown in the audit log and events.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, hex (`duet token new` prints it).
    pub sha256: TokenHash,
}

/// What a token may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: status, events, metrics, the dashboard, the health endpoints.
    Viewer,
    /// And act on the running cluster: switchover, maintenance, drain and enable backends.
    Operator,
    /// And change this node: reload the config, clone the database again.
    Admin,
}

impl Role {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("role {s:?}: viewer, operator or admin")),
        }
    }
}

/// A SHA-256 digest written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for TokenHash {
    type Err = String;
    fn from_str(s: &str) -> Result<TokenHash, String> {
        let bad = || {
            format!(
                "sha256 {s:?}: write the token's SHA-256 as 64 hex digits (`duet token new NAME ROLE` prints the line)"
            )
        };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(TokenHash(out))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TokenHash, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected 64 hex digits (a SHA-256)"))?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[alerts]`: events told to people by webhook and email.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// POST each alert as JSON to this URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Mail each alert through this SMTP relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// Event types that alert.
    #[serde(default = "default_alert_types")]
    pub on: Vec<String>,
    /// The same alert (type, subject and state) at most once per this long.
    #[serde(default = "default_dedupe")]
    pub dedupe: crate::Dur,
    /// Alerts per minute at most; the rest are counted and said with the next.
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
}

/// `alerts.webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// Each attempt's limit (three retries, 1 s, 2 s and 4 s apart).
    #[serde(default = "default_alert_timeout")]
    pub timeout: crate::Dur,
}

/// `alerts.email`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The relay, `host:port` (plain SMTP: a local relay such as Postfix on the node).
    pub smtp: String,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Each attempt's limit.
    #[serde(default = "default_alert_timeout")]
    pub timeout: crate::Dur,
}

/// Event types `alerts.on` may list.
pub const ALERT_TYPES: [&str; 12] = [
    "vrrp",
    "link",
    "peer",
    "lease",
    "backend",
    "database",
    "lag",
    "hook",
    "maintenance",
    "reload",
    "service",
    "config",
];

fn default_alert_types() -> Vec<String> {
    ALERT_TYPES.iter().map(|t| t.to_string()).collect()
}

fn default_dedupe() -> crate::Dur {
    crate::Dur(std::time::Duration::from_secs(60))
}

fn default_per_minute() -> u32 {
    20
}

fn default_alert_timeout() -> crate::Dur {
    crate::Dur(std::time::Duration::from_secs(5))
}

/// The paths `admin.public` may open.
pub const PUBLIC_PATHS: [&str; 3] = ["/primary", "/replica", "/read-only"];

/// The rules across `[admin]` keys.
pub(crate) fn check(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    if let Some(a) = &cfg.alerts {
        check_alerts(a, bad);
    }
    let Some(admin) = &cfg.admin else {
        return;
    };
    for (i, t) in admin.tokens.iter().enumerate() {
        let ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if !ok {
            bad(
                crate::path!["admin", "tokens", i, "name"],
                format!(
                    "token name {:?}: 1 to 64 letters, digits, '-', '_', '.', '@'",
                    t.name
                ),
            );
        }
        if admin.tokens[..i].iter().any(|o| o.name == t.name) {
            bad(
                crate::path!["admin", "tokens", i, "name"],
                format!(
                    "token name {:?} is used twice: names tell who did what",
                    t.name
                ),
            );
        }
        if admin.tokens[..i].iter().any(|o| o.sha256 == t.sha256) {
            bad(
                crate::path!["admin", "tokens", i, "sha256"],
                "the same token twice: give each person or tool its own".into(),
            );
        }
    }
    for (i, p) in admin.public.iter().enumerate() {
        if !PUBLIC_PATHS.contains(&p.as_str()) {
            bad(
                crate::path!["admin", "public", i],
                format!(
                    "{p:?} cannot be public: only the health endpoints {} may be read without a token",
                    PUBLIC_PATHS.join(", ")
                ),
            );
        }
    }
    if admin.tokens.is_empty() && cfg.node.operator_token_file.is_none() && !admin.public.is_empty()
    {
        bad(
            crate::path!["admin", "public"],
            "without tokens every endpoint is open already: add admin.tokens".into(),
        );
    }
}

fn check_alerts(a: &AlertsConfig, bad: &mut impl FnMut(Vec<Seg>, String)) {
    if a.webhook.is_none() && a.email.is_none() {
        bad(
            crate::path!["alerts"],
            "[alerts] needs webhook or email (or both)".into(),
        );
    }
    if let Some(w) = &a.webhook
        && !w.url.starts_with("http://")
    {
        bad(
            crate::path!["alerts", "webhook", "url"],
            format!(
                "url {:?}: write http://host:port/path (https is not supported yet)",
                w.url
            ),
        );
    }
    if let Some(e) = &a.email {
        if e.smtp
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            bad(
                crate::path!["alerts", "email", "smtp"],
                format!(
                    "smtp {:?}: write host:port, such as \"127.0.0.1:25\"",
                    e.smtp
                ),
            );
        }
        if e.to.is_empty() {
            bad(crate::path!["alerts", "email", "to"], "no recipient".into());
        }
        for (i, addr) in std::iter::once(&e.from).chain(&e.to).enumerate() {
            if !addr.contains('@') {
                let at = if i == 0 {
                    crate::path!["alerts", "email", "from"]
                } else {
                    crate::path!["alerts", "email", "to", i - 1]
                };
                bad(at, format!("{addr:?} is not a mail address"));
            }
        }
    }
    for (i, t) in a.on.iter().enumerate() {
        if !ALERT_TYPES.contains(&t.as_str()) {
            bad(
                crate::path!["alerts", "on", i],
                format!("{t:?}: one of {}", ALERT_TYPES.join(", ")),
            );
        }
    }
    if a.per_minute == 0 {
        bad(
            crate::path!["alerts", "per_minute"],
            "per_minute must be at least 1".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_64_hex_digits() {
        let h: TokenHash = "00ff".repeat(16).parse().unwrap();
        assert_eq!(h.0[0], 0);
        assert_eq!(h.0[1], 0xff);
        assert_eq!(h.to_string(), "00ff".repeat(16));
        for bad in ["", "00ff", &"zz".repeat(32), &"é".repeat(32)] {
            assert!(bad.parse::<TokenHash>().is_err(), "{bad}");
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
    }
}
