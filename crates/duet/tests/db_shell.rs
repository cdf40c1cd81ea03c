//! The database shell (`duet-db`) against real PostgreSQL 15 servers on loopback, without the
//! daemon: bootstrap, clone through a slot, synchronous replication, promotion, fencing and
//! rewind of the old primary. Needs root (the servers run as `postgres`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duet_db::{Postgres, Secret, Spec, Upstream};
use duet_dbfail::{Data, Server};

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn ready() -> bool {
    if duet_sys::process::effective_uid() != 0 {
        duet::lab::skip(
            "not root (the servers run as the postgres user)",
            "DUET_REQUIRE_ROOT",
        );
        return false;
    }
    if !Path::new(BIN).join("postgres").exists() || duet_db::os_user("postgres").is_err() {
        duet::lab::skip("PostgreSQL 15 is not installed", "DUET_REQUIRE_TOOLS");
        return false;
    }
    true
}

/// A directory every path component of which `postgres` can traverse, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("duet-db-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(dir: &Path, node: &str, port: u16) -> Spec {
    Spec {
        node: node.into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        listen_all: false,
        data_dir: dir.join(node).join("data"),
        bin_dir: BIN.into(),
        os_user: duet_db::os_user("postgres").unwrap(),
        superuser: "postgres".into(),
        replication_user: "replicator".into(),
        password: Secret("s3cret:with\\odd'chars".into()),
        allow: vec!["127.0.0.0/8".into()],
        peers: vec!["127.0.0.1".parse().unwrap()],
        parameters: vec![("max_connections".into(), "30".into())],
        run_dir: dir.join(node).join("run"),
    }
}

async fn wait_for<T>(what: &str, pg: &mut Postgres, mut f: impl FnMut(&Server) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = pg.observe().await;
        if let Some(v) = f(&s) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: last seen {s:?}; log:\n{}",
            std::fs::read_to_string(pg.spec().run_dir.join("postgresql.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write over TCP with the password, as a client would.
async fn write(addr: SocketAddr, sql: &str) -> Result<(), String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .password("s3cret:with\\odd'chars")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let (c, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    c.batch_execute(sql).await.map_err(|e| e.to_string())
}

#[test]
fn bootstrap_clone_sync_promote_fence_and_rewind() {
    if !ready() {
        return;
    }
    let dir = Dir::new("shell");
    let base = 26000 + (std::process::id() % 2000) as u16;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut a = Postgres::new(spec(&dir.0, "alpha", base));
        let mut b = Postgres::new(spec(&dir.0, "beta", base + 1));
        a.check_programs().unwrap();
        assert_eq!(duet_db::inspect_data(a.spec()).data, Data::Empty);

        // Bootstrap: a primary with checksums and passwords; a client gets in with the password.
        a.initdb().await.unwrap();
        let sys = match duet_db::inspect_data(a.spec()).data {
            Data::Cluster { system_id } => system_id,
            d => panic!("{d:?}"),
        };
        write(a.spec().listen, "CREATE TABLE t (n int)")
            .await
            .unwrap();
        let wrong = {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host("127.0.0.1")
                .port(base)
                .user("postgres")
                .password("nope")
                .dbname("postgres");
            cfg.connect(tokio_postgres::NoTls).await.err().map(|e| {
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            })
        };
        assert!(
            wrong
                .as_ref()
                .is_some_and(|e| e.contains("password authentication failed")),
            "a wrong password is refused: {wrong:?}"
        );
        let slots = vec![duet_dbfail::slot_name("beta")];
        a.slots(&slots, &[]).await.unwrap();

        // Clone through the slot, start streaming.
        let up_a = Upstream {
            node: "alpha".into(),
            addr: a.spec().listen,
        };
        let mut lines = 0;
        b.clone_from(&up_a, |_| lines += 1).await.unwrap();
        assert!(lines > 0, "pg_basebackup's progress reached the callback");
        assert_eq!(
            duet_db::inspect_data(b.spec()).data,
            Data::Cluster { system_id: sys }
        );
        b.start(false, Some(&up_a), &[]).await.unwrap();
        wait_for("beta streams", &mut b, |s| match s {
            Server::Replica(r) if r.streaming => Some(()),
            _ => None,
        })
        .await;

        // Synchronous: the follower shows as sync; a commit is on beta when acknowledged.
        a.set_sync(&["beta".into()]).await.unwrap();
        let p = wait_for("beta is synchronous", &mut a, |s| match s {
            Server::Primary(p) if p.followers.iter().any(|f| f.name == "beta" && f.sync) => {
                Some(p.clone())
            }
            _ => None,
        })
        .await;
        assert_eq!(p.sync_names, ["beta"]);
        assert_eq!(p.slots, slots);
        write(a.spec().listen, "INSERT INTO t VALUES (1)")
            .await
            .unwrap();

        // Failover: fence alpha (immediate), promote beta.
        a.fence().await;
        assert!(matches!(a.observe().await, Server::Stopped));
        b.promote(&[]).await.unwrap();
        let p = wait_for("beta is primary", &mut b, |s| match s {
            Server::Primary(p) => Some(p.clone()),
            _ => None,
        })
        .await;
        assert_eq!(p.timeline, 2, "promotion starts timeline 2");
        write(b.spec().listen, "INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        b.slots(&[duet_dbfail::slot_name("alpha")], &[])
            .await
            .unwrap();

        // Rejoin: alpha (crashed on timeline 1) rewinds onto beta's timeline and streams.
        let info = duet_db::inspect_data(a.spec());
        assert!(!info.clean, "an immediate stop is not a clean one");
        let up_b = Upstream {
            node: "beta".into(),
            addr: b.spec().listen,
        };
        a.rewind(&up_b).await.map_err(|e| format!("{e:?}")).unwrap();
        a.start(false, Some(&up_b), &[]).await.unwrap();
        let r = wait_for("alpha streams from beta", &mut a, |s| match s {
            Server::Replica(r) if r.streaming && r.timeline == 2 => Some(r.clone()),
            _ => None,
        })
        .await;
        assert_eq!(r.upstream.as_deref(), Some("beta"));
        // A clean stop leaves a final position a standby can be checked against.
        a.stop().await;
        b.stop().await;
        let info = duet_db::inspect_data(b.spec());
        assert!(
            info.clean && info.checkpoint > 0 && info.timeline == 2,
            "{info:?}"
        );
    });
}

#[test]
fn data_of_the_wrong_owner_or_without_a_cluster_is_refused_untouched() {
    if !ready() {
        return;
    }
    let dir = Dir::new("refuse");
    let s = spec(&dir.0, "gamma", 1);
    std::fs::create_dir_all(&s.data_dir).unwrap();
    std::fs::write(s.data_dir.join("keep.me"), "x").unwrap();
    // Owned by root, not postgres.
    match duet_db::inspect_data(&s).data {
        Data::Unusable(why) => assert!(why.contains("not to os_user postgres"), "{why}"),
        d => panic!("{d:?}"),
    }
    let pg = duet_db::os_user("postgres").unwrap();
    std::os::unix::fs::chown(&s.data_dir, Some(pg.uid), Some(pg.gid)).unwrap();
    match duet_db::inspect_data(&s).data {
        Data::Unusable(why) => assert!(why.contains("holds no PostgreSQL cluster"), "{why}"),
        d => panic!("{d:?}"),
    }
    assert!(s.data_dir.join("keep.me").exists());
}
