//! The server of one node: start, observe, stop, and the actions that change its role.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use duet_dbfail::{Follower, PrimaryState, ReplicaState, Server, slot_name};
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::Spec;
use crate::files::{
    parse_lsn, parse_sync, private_dir, quote, sync_value, write_config, write_private,
};
use crate::programs::{check_program, command, run};

/// A node to stream from (or clone, or rewind from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its node name.
    pub node: String,
    /// Its server address.
    pub addr: SocketAddr,
}

/// Why a rewind did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewindError {
    /// Nothing was tried (the new primary did not answer its CHECKPOINT, or the
    /// configuration could not be written): try again later.
    Source(String),
    /// pg_rewind ran and failed: the data cannot be rewound (WAL gone, another system).
    Rewind(String),
}

/// Query deadline: a server that does not answer within it counts as not ready.
const QUERY: Duration = Duration::from_secs(2);

/// One node's PostgreSQL server.
pub struct Postgres {
    spec: Spec,
    child: Option<Child>,
    client: Option<Client>,
    upstream: Option<String>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("node", &self.spec.node)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Postgres {
    /// A handle; nothing runs yet.
    pub fn new(spec: Spec) -> Postgres {
        Postgres {
            spec,
            child: None,
            client: None,
            upstream: None,
        }
    }

    /// What it runs.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Whether every program duet runs is there.
    pub fn check_programs(&self) -> Result<(), String> {
        for p in [
            "postgres",
            "initdb",
            "pg_basebackup",
            "pg_rewind",
            "pg_controldata",
        ] {
            check_program(&self.spec.bin_dir.join(p))
                .map_err(|e| format!("database.bin_dir: {e}"))?;
        }
        Ok(())
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the postmaster runs (reaps it when it exited).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    tracing::warn!("database: the postmaster exited ({status})");
                    self.child = None;
                    self.client = None;
                    false
                }
                Err(_) => true,
            },
        }
    }

    /// The node the standby is configured to stream from.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// A postmaster that duet did not start, running on the data directory.
    fn foreign_postmaster(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.spec.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        if Some(pid) == self.pid() {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("postgres")
            .then_some(pid)
    }

    /// Starts the postmaster (it dies with this thread): as a primary, or as a standby of
    /// `upstream` (none: a standby that follows nobody yet). Returns once it is spawned;
    /// [`Postgres::observe`] says when it answers.
    pub async fn start(
        &mut self,
        primary: bool,
        upstream: Option<&Upstream>,
        sync_names: &[String],
    ) -> Result<(), String> {
        if self.running() {
            return Err("the server runs already".into());
        }
        if let Some(pid) = self.foreign_postmaster() {
            return Err(format!(
                "a postmaster duet did not start (pid {pid}) runs on {}: stop it first; nothing was changed",
                self.spec.data_dir.display()
            ));
        }
        write_config(&self.spec)?;
        self.write_sync(sync_names)?;
        self.write_upstream(upstream)?;
        let signal = self.spec.data_dir.join("standby.signal");
        if primary {
            match std::fs::remove_file(&signal) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: {e}", signal.display()));
                }
                _ => {}
            }
        } else {
            write_private(&self.spec, &signal, "")?;
        }
        let log = self.spec.run_dir.join("postgresql.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = std::process::Command::new(self.spec.bin_dir.join("postgres"));
        {
            use std::os::unix::process::CommandExt;
            cmd.arg("-D")
                .arg(&self.spec.run_dir)
                .uid(self.spec.os_user.uid)
                .gid(self.spec.os_user.gid)
                .current_dir(&self.spec.run_dir)
                .env_clear()
                .env("LC_ALL", "C")
                .env("PGPASSFILE", self.spec.run_dir.join("pgpass"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0);
        }
        // Immediate shutdown if duet dies: nobody would fence a server left behind.
        duet_sys::process::die_with_parent(&mut cmd, duet_sys::process::SIGQUIT);
        let child = Command::from(cmd).spawn().map_err(|e| {
            format!(
                "cannot start {}: {e}",
                self.spec.bin_dir.join("postgres").display()
            )
        })?;
        tracing::info!(
            "database: started the server as {} (pid {}){}",
            if primary { "primary" } else { "standby" },
            child.id().unwrap_or(0),
            upstream.map_or(String::new(), |u| format!(
                ", streaming from {} ({})",
                u.node, u.addr
            ))
        );
        self.child = Some(child);
        self.client = None;
        self.upstream = upstream.map(|u| u.node.clone());
        Ok(())
    }

    fn write_sync(&self, names: &[String]) -> Result<(), String> {
        write_private(
            &self.spec,
            &self.spec.run_dir.join("sync.conf"),
            &format!(
                "synchronous_standby_names = {}\n",
                quote(&sync_value(names))
            ),
        )
    }

    fn write_upstream(&self, upstream: Option<&Upstream>) -> Result<(), String> {
        let text = match upstream {
            None => "primary_conninfo = ''\nprimary_slot_name = ''\n".to_string(),
            Some(u) => {
                let conninfo = format!(
                    "host={} port={} user={} passfile={} application_name={} connect_timeout=2 keepalives_idle=2 keepalives_interval=1 keepalives_count=3",
                    u.addr.ip(),
                    u.addr.port(),
                    self.spec.replication_user,
                    self.spec.run_dir.join("pgpass").display(),
                    self.spec.node
                );
                format!(
                    "primary_conninfo = {}\nprimary_slot_name = {}\n",
                    quote(&conninfo),
                    quote(&slot_name(&self.spec.node))
                )
            }
        };
        write_private(&self.spec, &self.spec.run_dir.join("upstream.conf"), &text)
    }

    async fn client(&mut self) -> Result<&Client, String> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(self.client.as_ref().expect("checked"));
        }
        self.client = None;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.spec.run_dir)
            .port(self.spec.listen.port())
            .user(&self.spec.superuser)
            .dbname("postgres")
            .application_name("duet")
            .connect_timeout(QUERY);
        let (client, conn) = tokio::time::timeout(QUERY, cfg.connect(NoTls))
            .await
            .map_err(|_| "connect: timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.client.insert(client))
    }

    /// Runs `sql` and returns its rows' text values.
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let client = self.client().await?;
        let rows = tokio::time::timeout(QUERY, client.simple_query(sql)).await;
        let msgs = match rows {
            Err(_) => {
                self.client = None;
                return Err(format!("{sql}: no answer within {}s", QUERY.as_secs()));
            }
            Ok(Err(e)) => {
                if e.is_closed() {
                    self.client = None;
                }
                return Err(format!("{sql}: {e}"));
            }
            Ok(Ok(m)) => m,
        };
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Looks at the server: stopped, starting (not answering yet), primary or standby.
    pub async fn observe(&mut self) -> Server {
        if !self.running() {
            return Server::Stopped;
        }
        match self.look().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("database: not answering yet: {e}");
                Server::Starting
            }
        }
    }

    async fn look(&mut self) -> Result<Server, String> {
        let rows = self
            .query("SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')")
            .await?;
        let row = rows.first().ok_or("no row")?;
        let recovery = row.first().cloned().flatten().as_deref() == Some("t");
        if !recovery {
            let sync_names = parse_sync(row.get(1).cloned().flatten().as_deref().unwrap_or(""));
            let rows = self
                .query("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8))::bit(32)::int, pg_current_wal_flush_lsn()")
                .await?;
            let row = rows.first().ok_or("no row")?;
            let timeline = cell(row, 0).and_then(|v| v.parse().ok()).unwrap_or(0);
            let lsn = cell(row, 1).and_then(parse_lsn).unwrap_or(0);
            let followers = self
                .query("SELECT application_name, state, sync_state, coalesce(flush_lsn, '0/0') FROM pg_stat_replication")
                .await?
                .iter()
                .map(|r| Follower {
                    name: cell(r, 0).unwrap_or("").to_string(),
                    streaming: cell(r, 1) == Some("streaming"),
                    sync: cell(r, 2) == Some("sync"),
                    flush: cell(r, 3).and_then(parse_lsn).unwrap_or(0),
                })
                .collect();
            let slots = self
                .query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
                .await?
                .iter()
                .filter_map(|r| cell(r, 0).map(str::to_string))
                .collect();
            return Ok(Server::Primary(PrimaryState {
                timeline,
                lsn,
                sync_names,
                followers,
                slots,
            }));
        }
        // The timeline: the receiver's while it streams; else the newest history file in
        // pg_wal (a standby fetches it when its primary switches), as the checkpoint's lags.
        let rows = self
            .query("SELECT coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'), (SELECT status FROM pg_stat_wal_receiver), greatest((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()), (SELECT min_recovery_end_timeline FROM pg_control_recovery()), (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() WHERE name LIKE '%.history'))")
            .await?;
        let row = rows.first().ok_or("no row")?;
        let received = cell(row, 0).and_then(parse_lsn).unwrap_or(0);
        let replayed = cell(row, 1).and_then(parse_lsn).unwrap_or(0);
        Ok(Server::Replica(ReplicaState {
            timeline: cell(row, 3).and_then(|v| v.parse().ok()).unwrap_or(0),
            received: received.max(replayed),
            replayed,
            upstream: self.upstream.clone(),
            streaming: cell(row, 2) == Some("streaming"),
        }))
    }

    /// Immediate shutdown (SIGQUIT to the postmaster; SIGKILL to its group after 3 s): this
    /// node may no longer write.
    pub async fn fence(&mut self) {
        self.signal_and_wait(duet_sys::process::SIGQUIT, Duration::from_secs(3))
            .await;
    }

    /// Fast shutdown (a shutdown checkpoint, so a standby that received it has everything);
    /// immediate after 30 s.
    pub async fn stop(&mut self) {
        if !self
            .signal_and_wait(duet_sys::process::SIGINT, Duration::from_secs(30))
            .await
        {
            self.fence().await;
        }
    }

    /// Sends `signal` and waits up to `limit` for the exit; SIGKILL to the whole group after.
    /// Returns whether it exited on `signal`.
    async fn signal_and_wait(&mut self, signal: i32, limit: Duration) -> bool {
        self.client = None;
        let Some(child) = &mut self.child else {
            return true;
        };
        let Some(pid) = child.id() else {
            self.child = None;
            return true;
        };
        let _ = duet_sys::process::send_signal(pid, signal, false);
        let exited = tokio::time::timeout(limit, child.wait()).await.is_ok();
        if !exited {
            tracing::warn!(
                "database: the postmaster (pid {pid}) did not stop; killing its process group"
            );
            let _ = duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, true);
            let _ = child.wait().await;
        }
        self.child = None;
        exited
    }

    /// Reloads the configuration files.
    async fn reload(&mut self) -> Result<(), String> {
        self.query("SELECT pg_reload_conf()").await.map(|_| ())
    }

    /// Sets `synchronous_standby_names` on the running server.
    pub async fn set_sync(&mut self, names: &[String]) -> Result<(), String> {
        self.write_sync(names)?;
        self.reload().await
    }

    /// Makes the running standby stream from `upstream`.
    pub async fn follow(&mut self, upstream: &Upstream) -> Result<(), String> {
        self.write_upstream(Some(upstream))?;
        self.upstream = Some(upstream.node.clone());
        self.reload().await
    }

    /// Promotes the standby, `synchronous_standby_names` set first; waits for the replay.
    pub async fn promote(&mut self, sync_names: &[String]) -> Result<(), String> {
        self.write_sync(sync_names)?;
        self.write_upstream(None)?;
        self.reload().await?;
        let rows = self.query("SELECT pg_promote(true, 60)").await?;
        if rows.first().and_then(|r| cell(r, 0)) != Some("t") {
            return Err("pg_promote did not finish within 60 s".into());
        }
        self.upstream = None;
        Ok(())
    }

    /// Creates and drops replication slots.
    pub async fn slots(&mut self, create: &[String], drop: &[String]) -> Result<(), String> {
        for s in create {
            self.query(&format!(
                "SELECT pg_create_physical_replication_slot({}, true)",
                quote_sql(s)
            ))
            .await?;
            tracing::info!("database: created replication slot {s}");
        }
        for s in drop {
            match self
                .query(&format!(
                    "SELECT pg_drop_replication_slot({})",
                    quote_sql(s)
                ))
                .await
            {
                Ok(_) => tracing::info!("database: dropped replication slot {s} (no such node)"),
                Err(e) => tracing::warn!("database: dropping slot {s}: {e}"),
            }
        }
        Ok(())
    }

    /// Sets both roles' passwords (as SCRAM verifiers: the clear text never reaches the
    /// server) and creates the replication role if missing.
    pub async fn ensure_roles(&mut self) -> Result<(), String> {
        let verifier = postgres_protocol::password::scram_sha_256(self.spec.password.0.as_bytes());
        let su = ident(&self.spec.superuser);
        let repl = self.spec.replication_user.clone();
        self.query(&format!(
            "ALTER ROLE {su} PASSWORD {}",
            quote_sql(&verifier)
        ))
        .await?;
        let exists = self
            .query(&format!(
                "SELECT 1 FROM pg_roles WHERE rolname = {}",
                quote_sql(&repl)
            ))
            .await?;
        let verb = if exists.is_empty() { "CREATE" } else { "ALTER" };
        self.query(&format!(
            "{verb} ROLE {} WITH REPLICATION LOGIN PASSWORD {}",
            ident(&repl),
            quote_sql(&verifier)
        ))
        .await?;
        Ok(())
    }

    /// Creates the cluster in the empty data directory (checksums on), starts it as the
    /// primary and sets the roles' passwords.
    pub async fn initdb(&mut self) -> Result<(), String> {
        self.prepare_data_dir()?;
        private_dir(&self.spec, &self.spec.run_dir)?;
        let mut c = command(&self.spec, "initdb");
        c.arg("-D")
            .arg(&self.spec.data_dir)
            .arg("-U")
            .arg(&self.spec.superuser)
            .args([
                "--data-checksums",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]);
        run(c, "initdb", Duration::from_secs(300), |_| {}).await?;
        tracing::info!("database: initdb created {}", self.spec.data_dir.display());
        self.start(true, None, &[]).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Server::Primary(_) = self.observe().await {
                break;
            }
            if !self.running() || tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the new server did not come up; see {}",
                    self.spec.run_dir.join("postgresql.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.ensure_roles().await
    }

    /// The data directory exists, empty, owned by the OS user, mode 0700.
    fn prepare_data_dir(&self) -> Result<(), String> {
        let dir = &self.spec.data_dir;
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(format!("data_dir {} is not empty", dir.display()));
        }
        private_dir(&self.spec, dir)
    }

    /// Clones the empty data directory from `from` through this node's slot;
    /// `progress` sees pg_basebackup's progress lines.
    pub async fn clone_from(
        &mut self,
        from: &Upstream,
        progress: impl FnMut(&str),
    ) -> Result<(), String> {
        self.prepare_data_dir()?;
        private_dir(&self.spec, &self.spec.run_dir)?;
        write_config(&self.spec)?;
        let mut c = command(&self.spec, "pg_basebackup");
        c.arg("-h")
            .arg(from.addr.ip().to_string())
            .arg("-p")
            .arg(from.addr.port().to_string())
            .arg("-U")
            .arg(&self.spec.replication_user)
            .arg("-D")
            .arg(&self.spec.data_dir)
            .args([
                "-X",
                "stream",
                "-c",
                "fast",
                "--progress",
                "--no-password",
                "-S",
            ])
            .arg(slot_name(&self.spec.node));
        tracing::info!("database: cloning from {} ({})", from.node, from.addr);
        run(c, "pg_basebackup", Duration::from_secs(24 * 3600), progress).await?;
        tracing::info!("database: cloned from {}", from.node);
        Ok(())
    }

    /// Stops the server, has the new primary checkpoint, and rewinds this data directory
    /// onto its timeline (pg_rewind finishes crash recovery first, and does nothing when no
    /// rewind is needed).
    pub async fn rewind(&mut self, from: &Upstream) -> Result<(), RewindError> {
        self.stop().await;
        self.checkpoint_on(from)
            .await
            .map_err(RewindError::Source)?;
        write_config(&self.spec).map_err(RewindError::Source)?;
        let source = format!(
            "host={} port={} user={} dbname=postgres passfile={} connect_timeout=5 options='-c statement_timeout=0'",
            from.addr.ip(),
            from.addr.port(),
            self.spec.superuser,
            self.spec.run_dir.join("pgpass").display()
        );
        let mut c = command(&self.spec, "pg_rewind");
        c.arg("--target-pgdata")
            .arg(&self.spec.data_dir)
            .arg("--source-server")
            .arg(source);
        let mut said = String::new();
        let r = run(c, "pg_rewind", Duration::from_secs(3600), |l| {
            said = l.to_string();
        })
        .await;
        if r.is_ok() {
            tracing::info!("database: pg_rewind onto {}: {said}", from.node);
        }
        r.map_err(RewindError::Rewind)
    }

    async fn checkpoint_on(&self, from: &Upstream) -> Result<(), String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(from.addr.ip().to_string())
            .port(from.addr.port())
            .user(&self.spec.superuser)
            .password(self.spec.password.0.as_bytes())
            .dbname("postgres")
            .application_name("duet")
            .options("-c statement_timeout=0")
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .map_err(|e| format!("CHECKPOINT on {}: {e}", from.node))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .simple_query("CHECKPOINT")
            .await
            .map_err(|e| format!("CHECKPOINT on {}: {e}", from.node))?;
        Ok(())
    }

    /// Moves the data directory aside (replacing an older one there) and clones again.
    pub async fn reclone(
        &mut self,
        from: &Upstream,
        progress: impl FnMut(&str),
    ) -> Result<(), String> {
        self.stop().await;
        let dir = &self.spec.data_dir;
        let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
        if empty {
            return self.clone_from(from, progress).await;
        }
        let aside = dir.with_file_name(format!(
            "{}.duet-old",
            dir.file_name()
                .map_or("data".into(), |n| n.to_string_lossy())
        ));
        if aside.exists() {
            std::fs::remove_dir_all(&aside).map_err(|e| format!("{}: {e}", aside.display()))?;
        }
        std::fs::rename(dir, &aside).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
        tracing::warn!(
            "database: moved {} to {} to clone it again",
            dir.display(),
            aside.display()
        );
        self.clone_from(from, progress).await
    }
}

fn cell(row: &[Option<String>], i: usize) -> Option<&str> {
    row.get(i).and_then(|v| v.as_deref())
}

/// A string literal for SQL.
fn quote_sql(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An identifier for SQL.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
