//! Files: the OS user, the password file, the data directory's state (`pg_controldata`), and
//! the configuration duet writes into its run directory.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use duet_dbfail::{Data, Lsn};

use crate::Spec;

/// An OS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory.
    pub home: String,
}

/// Looks `name` up in `/etc/passwd`.
pub fn os_user(name: &str) -> Result<OsUser, String> {
    let text = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && f[0] == name).then(|| OsUser {
                name: name.to_string(),
                uid: f[2].parse().unwrap_or(u32::MAX),
                gid: f[3].parse().unwrap_or(u32::MAX),
                home: f[5].to_string(),
            })
        })
        .find(|u| u.uid != u32::MAX && u.gid != u32::MAX)
        .ok_or_else(|| format!("OS user {name:?} does not exist (no line in /etc/passwd)"))
}

/// The password: the first line of `path`, which must not be empty.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("password_file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!(
            "password_file {}: the first line is empty; write the password there",
            path.display()
        ));
    }
    Ok(line.to_string())
}

/// What the data directory holds, with what `pg_controldata` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataInfo {
    /// For the planner.
    pub data: Data,
    /// Timeline of the latest checkpoint.
    pub timeline: u32,
    /// Where the latest checkpoint is.
    pub checkpoint: Lsn,
    /// The server was shut down cleanly (a primary's final position is `checkpoint`).
    pub clean: bool,
}

impl DataInfo {
    fn of(data: Data) -> DataInfo {
        DataInfo {
            data,
            timeline: 0,
            checkpoint: 0,
            clean: false,
        }
    }
}

/// Looks at the data directory: empty, a cluster (with `pg_controldata`'s facts), or
/// unusable and why. Changes nothing.
pub fn inspect_data(spec: &Spec) -> DataInfo {
    let dir = &spec.data_dir;
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DataInfo::of(Data::Empty),
        Err(e) => {
            return DataInfo::of(Data::Unusable(format!("data_dir {}: {e}", dir.display())));
        }
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return DataInfo::of(Data::Unusable(format!(
            "data_dir {} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != spec.os_user.uid {
        return DataInfo::of(Data::Unusable(format!(
            "data_dir {} belongs to uid {}, not to os_user {} (uid {}): nothing was changed; chown it or name its owner in database.os_user",
            dir.display(),
            meta.uid(),
            spec.os_user.name,
            spec.os_user.uid
        )));
    }
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => {
            return DataInfo::of(Data::Unusable(format!("data_dir {}: {e}", dir.display())));
        }
    };
    if empty {
        return DataInfo::of(Data::Empty);
    }
    if !dir.join("PG_VERSION").exists() {
        return DataInfo::of(Data::Unusable(format!(
            "data_dir {} is not empty and holds no PostgreSQL cluster (no PG_VERSION): nothing was changed",
            dir.display()
        )));
    }
    let out = std::process::Command::new(spec.bin_dir.join("pg_controldata"))
        .arg(dir)
        .env("LC_ALL", "C")
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return DataInfo::of(Data::Unusable(format!(
                "pg_controldata {}: {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Err(e) => {
            return DataInfo::of(Data::Unusable(format!(
                "{}: {e}",
                spec.bin_dir.join("pg_controldata").display()
            )));
        }
    };
    parse_controldata(&String::from_utf8_lossy(&out.stdout))
}

fn parse_controldata(text: &str) -> DataInfo {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':'))
            .map(str::trim)
    };
    let Some(system_id) = field("Database system identifier").and_then(|v| v.parse().ok()) else {
        return DataInfo::of(Data::Unusable(
            "pg_controldata printed no system identifier".into(),
        ));
    };
    DataInfo {
        data: Data::Cluster { system_id },
        timeline: field("Latest checkpoint's TimeLineID")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        checkpoint: field("Latest checkpoint location")
            .and_then(parse_lsn)
            .unwrap_or(0),
        clean: field("Database cluster state").is_some_and(|s| s.starts_with("shut down")),
    }
}

/// `16/B374D848` as a number.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A string as a `postgresql.conf` / conninfo single-quoted value.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `synchronous_standby_names` for these nodes.
pub(crate) fn sync_value(names: &[String]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "")))
        .collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        _ => format!("FIRST 1 ({})", quoted.join(", ")),
    }
}

/// Reads `synchronous_standby_names` back into names.
pub(crate) fn parse_sync(value: &str) -> Vec<String> {
    let v = value.trim();
    let inner = match (v.find('('), v.rfind(')')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    inner
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Writes a file owned by the OS user, readable by it only.
pub(crate) fn write_private(spec: &Spec, path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(spec.os_user.uid), Some(spec.os_user.gid))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates `dir` (and its missing parents) owned by the OS user, mode 0700.
pub(crate) fn private_dir(spec: &Spec, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(spec.os_user.uid), Some(spec.os_user.gid))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes everything the server reads from the run directory except the two files that
/// change while it runs (`sync.conf`, `upstream.conf`).
pub(crate) fn write_config(spec: &Spec) -> Result<(), String> {
    private_dir(spec, &spec.run_dir)?;
    let run = spec.run_dir.display();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by duet at every start; edit duet.toml instead."
    );
    let _ = writeln!(
        c,
        "data_directory = {}",
        quote(&spec.data_dir.display().to_string())
    );
    let _ = writeln!(c, "hba_file = '{run}/pg_hba.conf'");
    let _ = writeln!(c, "ident_file = '{run}/pg_ident.conf'");
    let listen = if spec.listen_all {
        "*".to_string()
    } else {
        spec.listen.ip().to_string()
    };
    let _ = writeln!(c, "listen_addresses = {}", quote(&listen));
    let _ = writeln!(c, "port = {}", spec.listen.port());
    let _ = writeln!(c, "unix_socket_directories = {}", quote(&run.to_string()));
    let _ = writeln!(c, "cluster_name = {}", quote(&spec.node));
    let _ = writeln!(c, "wal_level = replica");
    let _ = writeln!(c, "hot_standby = on");
    let _ = writeln!(c, "wal_log_hints = on");
    let _ = writeln!(c, "synchronous_commit = on");
    let _ = writeln!(c, "recovery_target_timeline = 'latest'");
    // Defaults an operator may override in `parameters`.
    let mut defaults = vec![
        ("max_slot_wal_keep_size", "1GB"),
        ("wal_receiver_status_interval", "1s"),
        ("wal_sender_timeout", "10s"),
        ("wal_receiver_timeout", "10s"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("log_line_prefix", "%m [%p] "),
    ];
    defaults.retain(|(k, _)| !spec.parameters.iter().any(|(p, _)| p == k));
    for (k, v) in defaults {
        let _ = writeln!(c, "{k} = {}", quote(v));
    }
    for (k, v) in &spec.parameters {
        let _ = writeln!(c, "{k} = {}", quote(v));
    }
    let _ = writeln!(c, "include_if_exists = 'sync.conf'");
    let _ = writeln!(c, "include_if_exists = 'upstream.conf'");
    write_private(spec, &spec.run_dir.join("postgresql.conf"), &c)?;

    let mut hba = String::from("# Written by duet at every start.\n");
    let _ = writeln!(hba, "local all all peer map=duet");
    for ip in &spec.peers {
        let net = host_net(*ip);
        let _ = writeln!(
            hba,
            "host replication {} {net} scram-sha-256",
            spec.replication_user
        );
        // pg_rewind reads the new primary as the superuser.
        let _ = writeln!(hba, "host all {} {net} scram-sha-256", spec.superuser);
    }
    for net in &spec.allow {
        let _ = writeln!(hba, "host all all {net} scram-sha-256");
    }
    write_private(spec, &spec.run_dir.join("pg_hba.conf"), &hba)?;
    let ident = format!(
        "# Written by duet: root (duet) and the OS user may connect over the socket as the superuser.\nduet root {su}\nduet {os} {su}\n",
        su = spec.superuser,
        os = spec.os_user.name
    );
    write_private(spec, &spec.run_dir.join("pg_ident.conf"), &ident)?;
    // For the WAL receiver, pg_basebackup and pg_rewind (libpq reads it as the OS user).
    let pass = spec.password.0.replace('\\', "\\\\").replace(':', "\\:");
    let pgpass = format!(
        "*:*:*:{}:{pass}\n*:*:*:{}:{pass}\n",
        spec.replication_user, spec.superuser
    );
    write_private(spec, &spec.run_dir.join("pgpass"), &pgpass)
}

fn host_net(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}/32"),
        std::net::IpAddr::V6(a) => format!("{a}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_is_read() {
        let text = "pg_control version number:            1300\nDatabase system identifier:           7443123456789012345\nDatabase cluster state:               shut down\nLatest checkpoint location:           0/3000028\nLatest checkpoint's TimeLineID:       2\n";
        let d = parse_controldata(text);
        assert_eq!(
            d.data,
            Data::Cluster {
                system_id: 7443123456789012345
            }
        );
        assert_eq!((d.timeline, d.checkpoint, d.clean), (2, 0x3000028, true));
        let d = parse_controldata(&text.replace("shut down", "in production"));
        assert!(!d.clean);
        assert!(matches!(parse_controldata("").data, Data::Unusable(_)));
    }

    #[test]
    fn sync_names_round_trip() {
        assert_eq!(sync_value(&[]), "");
        assert_eq!(sync_value(&["alpha".into()]), "\"alpha\"");
        let two = sync_value(&["a".into(), "b".into()]);
        assert_eq!(two, "FIRST 1 (\"a\", \"b\")");
        assert_eq!(parse_sync(&two), ["a", "b"]);
        assert_eq!(parse_sync("\"alpha\""), ["alpha"]);
        assert!(parse_sync("").is_empty());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(quote("it's"), "'it\\'s'");
    }
}
