//! What a valid config needs from this host before `duet run` can keep its promises: every file
//! it reads (tokens, keys, certificates), every command it runs (track scripts, notify hooks),
//! every interface it uses and every directory it writes. `duet check` and `duet run` both call
//! [`check`], so check says OK to exactly what run accepts; each problem points at the
//! `file:line:col` of the value that names the missing thing.
//!
//! Nothing here changes the host: directories are not created (the nearest existing parent
//! must be writable), files are not opened for writing where they do not exist yet.

use std::path::Path;

use duet_config::{Config, Diagnostic, Source, path};

/// The problems found: errors (run refuses to start) and warnings (it starts, and says so).
#[derive(Debug, Default)]
pub struct Findings {
    /// Run refuses to start.
    pub errors: Vec<Diagnostic>,
    /// Worth knowing, not fatal (a tracked interface that does not exist yet).
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and checks the config at `path` against this host: the config and the
/// warnings, or every error (config errors first; host checks need a valid config).
pub fn load_checked(path: &Path) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let source = Source::read(path).map_err(|e| e.diagnostics)?;
    let config = source.parse().map_err(|e| e.diagnostics)?;
    let found = check(&config, &source);
    if found.errors.is_empty() {
        Ok((config, found.warnings))
    } else {
        Err(found.errors)
    }
}

/// Checks `config` (read from `source`) against this host.
pub fn check(config: &Config, source: &Source) -> Findings {
    let mut f = Findings::default();
    let mut error = |p: Vec<duet_config::Seg>, m: String| f.errors.push(source.at(&p, m));
    let node = &config.node;

    if let Some(token) = &node.operator_token_file
        && let Err(e) = read_operator_token(token)
    {
        error(path!["node", "operator_token_file"], e);
    }
    if let Err(e) = writable_dir(&node.state_dir) {
        error(
            path!["node", "state_dir"],
            format!("state_dir {}: {e}", node.state_dir.display()),
        );
    }
    if let Some(t) = config.admin.as_ref().and_then(|a| a.tls.as_ref())
        && let Err(e) = duet_admin::tls::server_config(&t.cert, &t.key)
    {
        let key = if e.starts_with("admin.tls.key") {
            "key"
        } else {
            "cert"
        };
        error(path!["admin", "tls", key], e);
    }
    if let Some(log) = config.admin.as_ref().and_then(|a| a.audit_log.as_ref())
        && let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = writable_dir(dir)
    {
        error(
            path!["admin", "audit_log"],
            format!("audit_log {}: {e}", log.display()),
        );
    }
    if let Some(hb) = &config.heartbeat
        && let Err(e) = crate::witness::read_key(&hb.key_file)
    {
        error(path!["heartbeat", "key_file"], e);
    }
    if let Some(key) = config.witness.as_ref().and_then(|w| w.key_file.as_deref())
        && let Err(e) = crate::witness::read_key(key)
    {
        error(path!["witness", "key_file"], e);
    }
    let keys = [
        (
            path!["heartbeat", "key_file"],
            config.heartbeat.as_ref().map(|h| h.key_file.as_path()),
        ),
        (
            path!["witness", "key_file"],
            config.witness.as_ref().and_then(|w| w.key_file.as_deref()),
        ),
    ];
    for (at, key) in keys {
        use std::os::unix::fs::PermissionsExt;
        if let Some(key) = key
            && let Ok(meta) = std::fs::metadata(key)
            && meta.permissions().mode() & 0o077 != 0
        {
            f.warnings.push(source.at(
                &at,
                format!(
                    "key file {} is readable by other users (mode {:o}): anyone who reads it can forge heartbeats; chmod 600 it",
                    key.display(),
                    meta.permissions().mode() & 0o777
                ),
            ));
        }
    }
    if let Some(c) = &config.coordination {
        for (what, file) in [
            ("ca_file", &c.ca_file),
            ("cert_file", &c.cert_file),
            ("key_file", &c.key_file),
        ] {
            if let Some(file) = file
                && let Err(e) = std::fs::metadata(file)
            {
                error(
                    path!["coordination", what],
                    format!("{what} {}: {e}", file.display()),
                );
            }
        }
        if c.endpoints.iter().any(|e| e.starts_with("https://"))
            && let Err(e) = crate::daemon::etcd_tls(c)
        {
            error(path!["coordination", "ca_file"], e);
        }
    }
    for (i, b) in config.balancer.iter().enumerate() {
        if let Some(spec) = crate::daemon::tls_spec(b)
            && let Err(e) = duet_proxy::tls::acceptor(&spec)
        {
            error(path!["balancer", i, "tls", "certificates"], e);
        }
        if !matches!(b.access_log.as_str(), "off" | "stderr")
            && let Err(e) = writable_file(Path::new(&b.access_log))
        {
            error(
                path!["balancer", i, "access_log"],
                format!("access_log {}: {e}", b.access_log),
            );
        }
    }
    for (name, script) in &config.track_script {
        if let Err(e) = runnable(&script.command) {
            error(
                path!["track_script", name.as_str(), "command"],
                format!("track script {name:?}: {e}"),
            );
        }
    }
    for (i, s) in config.service.iter().enumerate() {
        check_service(i, s, &mut error);
    }
    if !config.service.is_empty() && config.heartbeat.is_none() {
        f.warnings.push(source.at(
            &[duet_config::Seg::from("service"), duet_config::Seg::from(0usize), duet_config::Seg::from("follows")],
            "without [heartbeat], a new master cannot know that the old one stopped its services: during a partition both may run them (add [heartbeat] and a witness)".into(),
        ));
    }
    if let Some(db) = &config.database {
        check_database(db, config, &mut error);
        if config.witness.is_none() && config.coordination.is_none() {
            f.warnings.push(source.at(
                &[duet_config::Seg::from("database"), duet_config::Seg::from("kind")],
                "without [witness] or [coordination], a standby is never promoted after the primary's silent death (only after a clean stop, a switchover): add a witness for automatic failover".into(),
            ));
        }
    }
    let nl = duet_sys::Netlink::open().ok();
    if let (Some(nl), Some(w)) = (
        &nl,
        config.database.as_ref().and_then(|d| d.write_vip.as_ref()),
    ) && let Err(e) = nl.link(&w.interface)
    {
        error(
            path!["database", "write_vip", "interface"],
            format!("interface {:?}: {e}", w.interface),
        );
    }
    for (i, v) in config.vrrp.iter().enumerate() {
        let hooks = [
            ("notify", &v.notify),
            ("notify_master", &v.notify_master),
            ("notify_backup", &v.notify_backup),
            ("notify_fault", &v.notify_fault),
            ("notify_stop", &v.notify_stop),
        ];
        for (key, hook) in hooks {
            if let Some(cmd) = hook
                && let Err(e) = runnable(&cmd.0)
            {
                error(path!["vrrp", i, key], format!("{key}: {e}"));
            }
        }
        let Some(nl) = &nl else { continue };
        if let Err(e) = nl.link(&v.interface) {
            error(
                path!["vrrp", i, "interface"],
                format!("interface {:?}: {e}", v.interface),
            );
        }
        for (t, tracked) in v.track_interfaces.iter().enumerate() {
            if nl.link(&tracked.name).is_err() {
                let at = path!["vrrp", i, "track_interfaces", t];
                f.warnings.push(source.at(
                    &at,
                    format!(
                        "tracked interface {:?} does not exist now: it counts as down until it appears",
                        tracked.name
                    ),
                ));
            }
        }
    }
    f
}

/// What a `[[service]]` needs from this host: its commands, `systemctl`, or `mount` and a
/// mount point.
fn check_service(
    i: usize,
    s: &duet_config::ServiceConfig,
    error: &mut impl FnMut(Vec<duet_config::Seg>, String),
) {
    let commands: Vec<(&str, Vec<String>)> = match s.kind {
        duet_config::ServiceKind::Exec => [
            ("start", &s.start),
            ("stop", &s.stop),
            ("monitor", &s.monitor),
        ]
        .into_iter()
        .filter_map(|(k, c)| c.as_ref().map(|c| (k, c.0.clone())))
        .collect(),
        duet_config::ServiceKind::Systemd => vec![("unit", vec!["systemctl".into()])],
        duet_config::ServiceKind::Mount => vec![
            ("fstype", vec!["mount".into()]),
            ("fstype", vec!["umount".into()]),
        ],
    };
    for (key, argv) in commands {
        if let Err(e) = runnable(&argv) {
            error(
                path!["service", i, key],
                format!("service {:?}: {e}", s.name),
            );
        }
    }
    if let Some(m) = &s.mountpoint
        && !m.is_dir()
    {
        error(
            path!["service", i, "mountpoint"],
            format!("mountpoint {}: not a directory here", m.display()),
        );
    }
}

/// What `[database]` needs from this host: PostgreSQL's programs, the OS user, a readable
/// password, a data directory it may own and reach, a free port. Nothing is created.
fn check_database(
    db: &duet_config::DatabaseConfig,
    config: &Config,
    error: &mut impl FnMut(Vec<duet_config::Seg>, String),
) {
    for program in [
        "postgres",
        "initdb",
        "pg_basebackup",
        "pg_rewind",
        "pg_controldata",
    ] {
        let p = db.bin_dir.join(program);
        if !p.is_file() {
            error(
                path!["database", "bin_dir"],
                format!(
                    "{} is missing: is PostgreSQL installed here? (Debian: postgresql-15)",
                    p.display()
                ),
            );
            break;
        }
    }
    if let Err(e) = duet_db::read_password(&db.password_file) {
        error(path!["database", "password_file"], e);
    }
    let user = match duet_db::os_user(&db.os_user) {
        Ok(u) => u,
        Err(e) => {
            error(path!["database", "os_user"], e);
            return;
        }
    };
    // Every directory on the way to data_dir and to the run directory must let os_user in.
    for (key, dir) in [
        ("data_dir", db.data_dir.parent()),
        ("state_dir", Some(config.node.state_dir.as_path())),
    ] {
        let Some(dir) = dir else { continue };
        if let Some(blocked) = dir.ancestors().find(|a| {
            std::fs::metadata(a).is_ok_and(|m| {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                m.uid() != user.uid
                    && m.permissions().mode() & 0o001 == 0
                    && a != &config.node.state_dir
            })
        }) {
            let at = if key == "data_dir" {
                path!["database", "data_dir"]
            } else {
                path!["node", "state_dir"]
            };
            error(
                at,
                format!(
                    "{} does not let os_user {} through (chmod o+x it, or move {key})",
                    blocked.display(),
                    user.name
                ),
            );
        }
    }
    let data = duet_db::inspect_data(&duet_db::Spec {
        node: config.node.name.clone(),
        listen: db.listen,
        listen_all: false,
        data_dir: db.data_dir.clone(),
        bin_dir: db.bin_dir.clone(),
        os_user: user,
        superuser: db.superuser.clone(),
        replication_user: db.replication_user.clone(),
        password: duet_db::Secret(String::new()),
        allow: Vec::new(),
        peers: Vec::new(),
        parameters: Vec::new(),
        run_dir: config.node.state_dir.join("pg"),
    });
    if let duet_dbfail::Data::Unusable(why) = data.data {
        error(path!["database", "data_dir"], why);
    }
    // A port someone else listens on: the server would not start. (Our own server, running
    // on data_dir, holds it legitimately.)
    let ours = std::fs::read_to_string(db.data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if let Err(e) = std::net::TcpListener::bind(db.listen)
        && e.kind() == std::io::ErrorKind::AddrInUse
        && !ours
    {
        error(
            path!["database", "listen"],
            format!(
                "{} is in use by another program (a distribution's own PostgreSQL service?): stop it or choose another port",
                db.listen
            ),
        );
    }
}

/// Whether `argv[0]` names an executable file (a path, or a name found on `PATH`).
fn runnable(argv: &[String]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err("the command is empty".into());
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return match std::fs::metadata(p) {
            Err(e) => Err(format!("{program}: {e}")),
            Ok(_) if !executable(p) => Err(format!("{program}: not an executable file")),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("{program}: not found on PATH"))
    }
}

/// Whether a file can be created (or appended to) at `path`, without creating it.
fn writable_file(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("directory {} does not exist", dir.display()));
    }
    probe(dir)
}

/// Whether `dir` can be written, or created under its nearest existing parent.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => return Err("no existing parent directory".into()),
        }
    }
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    probe(at).map_err(|e| {
        if at == dir {
            e
        } else {
            format!("cannot be created in {}: {e}", at.display())
        }
    })
}

/// Whether a file can be written in `dir`, said as a problem.
fn probe(dir: &Path) -> Result<(), String> {
    probe_write(dir).map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// Writes, syncs and removes a probe file in `dir`: whether files can be written there and
/// made durable.
pub(crate) fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".duet-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        std::io::Write::write_all(&mut f, b"probe")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written
}

/// The operator token in `path`: its first line, trimmed, of at least 16 characters. Both
/// `duet check` and the admin API at start read it through here.
pub fn read_operator_token(path: &Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("operator token file {}: {e}", path.display()))?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(format!(
            "operator token file {}: the token must have at least 16 characters (it has {})",
            path.display(),
            token.len()
        ));
    }
    Ok(token)
}
