//! `[database]`: the PostgreSQL server duet runs and fails over (the config contract of
//! `docs/config.md`, "`[database]`"), and the rules that span its keys.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::schema::{Config, Vip};
use crate::validate::Seg;

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Which server: only `"postgres"` today.
    pub kind: DatabaseKind,
    /// This node's server address; peers learn it through the heartbeat.
    pub listen: SocketAddr,
    /// The data directory (bootstrapped when empty or missing).
    pub data_dir: PathBuf,
    /// Where `initdb`, `pg_ctl`, `postgres`, `pg_basebackup`, `pg_rewind` live.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// The OS user that owns `data_dir` and runs the server.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// The database superuser role.
    #[serde(default = "default_superuser")]
    pub superuser: String,
    /// The role replicas connect as.
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// First line: the password of both roles. Never logged.
    pub password_file: PathBuf,
    /// Networks allowed in for any role with scram-sha-256 (peers always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Network>,
    /// `off`, `on` or `strict`.
    #[serde(default)]
    pub synchronous: SyncMode,
    /// With `synchronous = "off"`: how far a replica may trail and still be promoted.
    #[serde(default = "default_max_lag")]
    pub maximum_lag_on_failover: ByteSize,
    /// An address that lives where the primary is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_vip: Option<WriteVip>,
    /// Passed to `postgresql.conf` as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// `database.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// PostgreSQL (streaming replication).
    Postgres,
}

/// `database.synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Asynchronous: a replica within `maximum_lag_on_failover` may be promoted.
    Off,
    /// Synchronous while the replica is healthy; relaxed (after recording it) when it dies.
    #[default]
    On,
    /// Synchronous always: commits wait while the replica is away.
    Strict,
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncMode::Off => "off",
            SyncMode::On => "on",
            SyncMode::Strict => "strict",
        })
    }
}

/// `database.write_vip`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriteVip {
    /// The address with its prefix.
    pub address: Vip,
    /// The interface it is added to.
    pub interface: String,
}

/// A network written as `"10.10.10.0/24"` (host bits must be zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            format!("network {s:?}: write it as address/prefix, e.g. \"10.10.10.0/24\"")
        })?;
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("network {s:?}: {addr:?} is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("network {s:?}: prefix must be 0..={max}"))?;
        let n = Network { address, prefix };
        if !n.contains(address) || n.masked() != address {
            return Err(format!(
                "network {s:?}: host bits are set; did you mean {}/{prefix}?",
                n.masked()
            ));
        }
        Ok(n)
    }
}

impl Network {
    fn masked(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(a) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u32::from(a) & m).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u128::from(a) & m).to_be_bytes())
            }
        }
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let probe = Network {
            address: ip,
            prefix: self.prefix,
        };
        ip.is_ipv4() == self.address.is_ipv4() && probe.masked() == self.masked()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            de::Error::custom("expected a network string such as \"10.10.10.0/24\"")
        })?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as `"1MB"`, `"512kB"`, `"0"` (units of 1024, as PostgreSQL reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(digits);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("size {s:?}: write a number with a unit, e.g. \"1MB\""))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            "TB" => 1 << 40,
            other => {
                return Err(format!(
                    "size {s:?}: unknown unit {other:?} (use B, kB, MB, GB or TB)"
                ));
            }
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, scale) in [
            ("TB", 1u64 << 40),
            ("GB", 1 << 30),
            ("MB", 1 << 20),
            ("kB", 1 << 10),
        ] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a size string such as \"1MB\""))?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}
fn default_os_user() -> String {
    "postgres".into()
}
fn default_superuser() -> String {
    "postgres".into()
}
fn default_replication_user() -> String {
    "replicator".into()
}
fn default_max_lag() -> ByteSize {
    ByteSize(1 << 20)
}

/// Parameters duet sets itself: an operator's value would break replication or failover.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "hba_file",
    "ident_file",
    "data_directory",
    "config_file",
    "wal_level",
    "hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "synchronous_standby_names",
    "synchronous_commit",
    "wal_log_hints",
    "cluster_name",
];

/// A role name duet writes into SQL and `pg_hba.conf` as it is.
fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// The rules across `[database]` keys and the rest of the config.
pub(crate) fn check(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    let Some(db) = &cfg.database else {
        return;
    };
    let at = |key: &str| crate::path!["database", key];
    if cfg.heartbeat.is_none() {
        bad(
            at("kind"),
            "a database needs a cluster to decide which node is primary: add [heartbeat] with [witness] (two nodes) or [coordination] (etcd)".into(),
        );
    } else if cfg.witness.is_none()
        && cfg.coordination.is_none()
        && cfg
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.two_node_policy != crate::TwoNodePolicy::Safe)
    {
        bad(
            crate::path!["heartbeat", "two_node_policy"],
            "a database without [witness] or [coordination] needs two_node_policy = \"safe\": under \"available\" both nodes would be primary during a partition".into(),
        );
    }
    if let Some(hb) = &cfg.heartbeat
        && hb.links.first().is_some_and(|l| l.peers.len() > 1)
    {
        bad(
            crate::path!["heartbeat", "links"],
            "a database runs on a pair: the heartbeat links must list exactly one peer (the witness or etcd is the third party)".into(),
        );
    }
    for (key, role) in [
        ("superuser", &db.superuser),
        ("replication_user", &db.replication_user),
    ] {
        if !is_role_name(role) {
            bad(
                at(key),
                format!(
                    "role name {role:?}: use lowercase letters, digits and '_' (not starting with a digit), at most 63 characters"
                ),
            );
        }
    }
    if db.superuser == db.replication_user {
        bad(
            at("replication_user"),
            "replication_user must differ from superuser".into(),
        );
    }
    if db.os_user.is_empty() || db.os_user == "root" {
        bad(
            at("os_user"),
            "os_user must name an unprivileged OS user (PostgreSQL refuses to run as root)".into(),
        );
    }
    if !db.data_dir.is_absolute() {
        bad(at("data_dir"), "data_dir must be an absolute path".into());
    }
    if !db.bin_dir.is_absolute() {
        bad(at("bin_dir"), "bin_dir must be an absolute path".into());
    }
    if db.listen.ip().is_unspecified() {
        bad(
            at("listen"),
            "listen must be this node's own address (peers connect to it); the server also listens on the write VIP".into(),
        );
    }
    if let Some(v) = &db.write_vip
        && v.interface.trim().is_empty()
    {
        bad(
            crate::path!["database", "write_vip", "interface"],
            "interface must not be empty".into(),
        );
    }
    for key in db.parameters.keys() {
        if MANAGED_PARAMETERS.contains(&key.as_str()) {
            bad(
                crate::path!["database", "parameters", key.as_str()],
                format!("{key} is set by duet (replication and failover depend on it)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "10.10.10.0/24".parse().unwrap();
        assert!(n.contains("10.10.10.77".parse().unwrap()));
        assert!(!n.contains("10.10.11.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let e = "10.10.10.1/24".parse::<Network>().unwrap_err();
        assert!(e.contains("did you mean 10.10.10.0/24"), "{e}");
        assert!("10.0.0.0".parse::<Network>().is_err());
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }

    #[test]
    fn sizes_parse_in_units_of_1024() {
        assert_eq!("1MB".parse::<ByteSize>().unwrap(), ByteSize(1 << 20));
        assert_eq!("512kB".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("0".parse::<ByteSize>().unwrap(), ByteSize(0));
        assert_eq!(ByteSize(16 << 20).to_string(), "16MB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        let e = "1 parsec".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        assert!("MB".parse::<ByteSize>().is_err());
    }
}
