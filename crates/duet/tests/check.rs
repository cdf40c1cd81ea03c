//! `duet check` says OK only to what `duet run` accepts, and says what is wrong with everything
//! else: a table of bad configs, each with the `file:line:col` of the offending value (marked
//! `‸` in the case) and the message expected there. No root needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a case's files live; `@DIR@` in a config stands for it.
fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("duet-check-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Files the cases point at: a good key, a short one, a good token, a short one, a regular file
/// that is not executable. Tests run in parallel and each writes them: a file is replaced
/// whole (written aside, then renamed), so another test's `duet check` never reads it empty.
fn fixtures(d: &Path) {
    let put = |name: &str, text: &str| {
        let aside = d.join(format!("{name}.{:?}", std::thread::current().id()));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, d.join(name)).unwrap();
    };
    put("good.key", "a cluster key long enough for hmac");
    put("short.key", "short");
    put("token", "0123456789abcdef0123");
    put("short.token", "abc");
    put("plain.sh", "#!/bin/sh\n");
    std::fs::create_dir_all(d.join("state")).unwrap();
    put("db.secret", "a database password\n");
    put("empty.secret", "\n");
}

/// A database node with a witness; cases replace parts.
const DB: &str = "\n[heartbeat]\nkey_file = \"@DIR@/good.key\"\nlinks = [{ local = \"127.0.0.1:7946\", peers = [\"127.0.0.2:7946\"] }]\n\n[witness]\naddress = \"127.0.0.3:7947\"\n\n[database]\nkind = \"postgres\"\nlisten = \"127.0.0.1:15432\"\ndata_dir = \"@DIR@/pgdata\"\npassword_file = \"@DIR@/db.secret\"\n";

/// The `[node]` section every case starts from (valid on any host).
const NODE: &str = "[node]\nname = \"a\"\nstate_dir = \"@DIR@/state\"\n";

/// A valid instance on `lo`; cases append keys or replace parts.
const VRRP: &str = "\n[[vrrp]]\nname = \"web\"\ninterface = \"lo\"\nvrid = 51\npriority = 100\nvips = [\"10.0.0.1/24\"]\n";

/// (what, config with `‸` before the offending value, expected message there).
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let n = NODE;
    let v = VRRP;
    let hb = "\n[heartbeat]\nkey_file = \"@DIR@/good.key\"\nlinks = [{ local = \"127.0.0.1:7946\", peers = [\"127.0.0.2:7946\"] }]\n";
    let bal = |extra: &str| {
        format!(
            "\n[[balancer]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\n{extra}"
        )
    };
    let db = DB;
    vec![
        // The database: its programs, its password, its cluster.
        ("no PostgreSQL programs", format!("{n}{db}bin_dir = ‸\"/nonexistent/bin\"\n"), "/nonexistent/bin/postgres is missing: is PostgreSQL installed here? (Debian: postgresql-15)"),
        ("a missing password file", format!("{n}{}", db.replace("password_file = \"@DIR@/db.secret\"", "password_file = ‸\"@DIR@/none.secret\"")), "password_file @DIR@/none.secret: No such file or directory"),
        ("an empty password", format!("{n}{}", db.replace("password_file = \"@DIR@/db.secret\"", "password_file = ‸\"@DIR@/empty.secret\"")), "password_file @DIR@/empty.secret: the first line is empty; write the password there"),
        ("a database without a cluster", format!("{n}\n[database]\nkind = ‸\"postgres\"\nlisten = \"127.0.0.1:15432\"\ndata_dir = \"/d\"\npassword_file = \"/p\"\n"), "a database needs a cluster to decide which node is primary"),
        ("a parameter duet manages", format!("{n}{db}parameters = {{ port = ‸\"5433\" }}\n"), "port is set by duet (replication and failover depend on it)"),
        ("a database on three nodes", format!("{n}{}", db.replace("links = [{ local = \"127.0.0.1:7946\", peers = [\"127.0.0.2:7946\"]", "links = ‸[{ local = \"127.0.0.1:7946\", peers = [\"127.0.0.2:7946\", \"127.0.0.4:7946\"]")), "a database runs on a pair: the heartbeat links must list exactly one peer"),
        // The admin API's access rules.
        ("a token hash that is no SHA-256", format!("{n}\n[admin]\ntokens = [{{ name = \"ops\", role = \"operator\", sha256 = ‸\"abc\" }}]\n"), "sha256 \"abc\": write the token's SHA-256 as 64 hex digits"),
        ("an unknown role", format!("{n}\n[admin]\ntokens = [{{ name = \"ops\", role = ‸\"root\", sha256 = \"{}\" }}]\n", "ab".repeat(32)), "`root` is not one of `viewer`, `operator`, `admin`"),
        ("a token name used twice", format!("{n}\n[admin]\ntokens = [{{ name = \"ops\", role = \"viewer\", sha256 = \"{}\" }}, {{ name = ‸\"ops\", role = \"admin\", sha256 = \"{}\" }}]\n", "ab".repeat(32), "cd".repeat(32)), "token name \"ops\" is used twice"),
        ("a public path that is no health check", format!("{n}\n[admin]\ntokens = [{{ name = \"ops\", role = \"viewer\", sha256 = \"{}\" }}]\npublic = [‸\"/v1/status\"]\n", "ab".repeat(32)), "\"/v1/status\" cannot be public: only the health endpoints"),
        ("an admin certificate that is missing", format!("{n}\n[admin]\ntls = {{ cert = ‸\"@DIR@/none.pem\", key = \"@DIR@/none.key\" }}\n"), "admin.tls.cert @DIR@/none.pem:"),
        ("alerts with nowhere to go", format!("{n}\n‸[alerts]\non = [\"vrrp\"]\n"), "[alerts] needs webhook or email (or both)"),
        ("an https webhook", format!("{n}\n[alerts]\nwebhook = {{ url = ‸\"https://x/y\" }}\n"), "url \"https://x/y\": write http://host:port/path (https is not supported yet)"),
        ("an unknown alert type", format!("{n}\n[alerts]\nwebhook = {{ url = \"http://127.0.0.1:9/\" }}\non = [‸\"weather\"]\n"), "\"weather\": one of vrrp, link"),
        // Syntax and types: every one reported, with the value and the form expected.
        ("unterminated string", "[node]\nname = \"a‸\n".to_string(), "invalid basic string, expected `\"`"),
        ("vrid above 255", format!("{n}{}", v.replace("vrid = 51", "vrid = ‸256")), "vrid must be 1..=255"),
        ("vrid 0", format!("{n}{}", v.replace("vrid = 51", "vrid = ‸0")), "vrid must be 1..=255"),
        ("priority as a string", format!("{n}{}", v.replace("priority = 100", "priority = ‸\"high\"")), "priority = \"high\": expected an integer, found string \"high\""),
        ("priority 0", format!("{n}{}", v.replace("priority = 100", "priority = ‸0")), "priority must be 1..=255 (0 is reserved for a master that is leaving)"),
        ("version 4", format!("{n}{v}version = ‸4\n"), "version must be 2 or 3, got 4"),
        ("unknown instance key", format!("{n}{v}‸bogus = 1\n"), "unknown field `bogus`, expected one of"),
        ("unknown section", format!("{n}\n[‸bogus]\nx = 1\n"), "unknown field `bogus`"),
        ("admin without a port", format!("{n}admin = ‸\"127.0.0.1\"\n"), "admin = \"127.0.0.1\": not an address: write \"ip:port\", such as \"10.0.0.1:80\" or \"[2001:db8::1]:80\""),
        ("admin on port 0", format!("{n}admin = ‸\"127.0.0.1:0\"\n"), "127.0.0.1:0 has port 0: give the port (\"127.0.0.1:80\")"),
        ("bad duration", format!("{n}{v}advert_interval = ‸\"1x\"\n"), "invalid duration \"1x\""),
        ("vip lifetime not whole seconds", format!("{n}vip_lifetime = ‸\"1500ms\"\n"), "vip_lifetime must be whole seconds between 1s and 1h, or 0s for permanent VIPs"),
        ("a VIP that is no address", format!("{n}{}", v.replace("vips = [\"10.0.0.1/24\"]", "vips = ‸[\"10.0.0.300/24\"]")), "invalid VIP \"10.0.0.300/24\": \"10.0.0.300\" is not an IP address"),
        ("no VIPs", format!("{n}{}", v.replace("vips = [\"10.0.0.1/24\"]", "vips = ‸[]")), "at least one VIP"),
        ("a boolean as a string", format!("{n}{v}preempt = ‸\"yes\"\n"), "preempt = \"yes\": expected true or false, found string \"yes\""),
        ("an unknown checksum mode", format!("{n}{v}v3_checksum = ‸\"crc\"\n"), "`crc` is not one of `pseudo-header` or `rfc`"),
        // Names and ports.
        ("empty node name", "[node]\nname = ‸\"\"\nstate_dir = \"@DIR@/state\"\n".to_string(), "node name must not be empty"),
        ("a line break in the node name", "[node]\nname = ‸\"a\\nb\"\nstate_dir = \"@DIR@/state\"\n".to_string(), "node name \"a\\nb\" holds a control character"),
        ("a tab in an instance name", format!("{n}{}", v.replace("name = \"web\"", "name = ‸\"w\\teb\"")), "instance name \"w\\teb\" holds a control character"),
        ("a control character in a route host", format!("{n}{}", bal("\n[[balancer.route]]\nhost = ‸\"a\\u0007.example\"\npath = \"/\"\nbackends = [{ address = \"127.0.0.1:9001\" }]\n")), "route host \"a\\u{7}.example\" holds a control character"),
        ("balancer bind without a port", format!("{n}{}", bal("").replace("bind = \"127.0.0.1:8080\"", "bind = ‸\"127.0.0.1\"")), "bind = \"127.0.0.1\": not an address"),
        ("balancer bind on port 0", format!("{n}{}", bal("").replace("bind = \"127.0.0.1:8080\"", "bind = ‸\"127.0.0.1:0\"")), "127.0.0.1:0 has port 0"),
        ("backend on port 0", format!("{n}{}", bal("").replace("address = \"127.0.0.1:9000\"", "address = ‸\"127.0.0.1:0\"")), "127.0.0.1:0 has port 0"),
        ("backend that is no address", format!("{n}{}", bal("").replace("address = \"127.0.0.1:9000\"", "address = ‸\"web-1\"")), "address = \"web-1\": not an address"),
        ("two balancers on one address", format!("{n}{}{}", bal(""), bal("").replace("name = \"web\"", "name = \"api\"").replace("bind = \"127.0.0.1:8080\"", "bind = ‸\"127.0.0.1:8080\"")), "127.0.0.1:8080 is already bound by another balancer"),
        ("heartbeat peer on port 0", format!("{n}{}", hb.replace("peers = [\"127.0.0.2:7946\"]", "peers = [‸\"127.0.0.2:0\"]")), "127.0.0.2:0 has port 0"),
        ("witness on port 0", format!("{n}{hb}\n[witness]\naddress = ‸\"127.0.0.3:0\"\n"), "127.0.0.3:0 has port 0"),
        ("an admin name with a port", format!("{n}admin_names = [‸\"duet.example:9900\"]\n"), "admin name \"duet.example:9900\": write a host name"),
        // Rules across values.
        ("a VRID used twice on one interface", format!("{n}{v}{}", v.replace("name = \"web\"", "name = \"db\"").replace("vrid = 51", "vrid = ‸51").replace("10.0.0.1/24", "10.0.0.2/24")), "vrid 51 on lo is already used"),
        ("an undefined track script", format!("{n}{v}track_scripts = [‸\"nope\"]\n"), "unknown track script \"nope\"; define it in [track_script.nope]"),
        ("a sync group of an unknown instance", format!("{n}{v}\n[sync_group.g]\ninstances = [\"web\", ‸\"nope\"]\n"), "unknown vrrp instance \"nope\""),
        ("a lease shorter than twice the VIP lifetime", format!("{n}{hb}\n[witness]\naddress = \"127.0.0.3:7947\"\nlease = ‸\"1s\"\n"), "the lease (1s) must be at least twice node.vip_lifetime (1s, and not 0s)"),
        ("tls on a tcp balancer", format!("{n}{}", bal("mode = \"tcp\"\ntls = { certificates = ‸[{ cert = \"@DIR@/c.pem\", key = \"@DIR@/c.key\" }] }\n")), "tls termination needs mode = \"http\""),
        ("a check expecting no status", format!("{n}{}", bal("check = { path = \"/health\", expect = ‸\"abc\" }\n")), "expect \"abc\": write a status range such as \"200-399\" or one code"),
        ("passive on_status that is no status", format!("{n}{}", bal("passive = { on_status = [‸\"5xx\"] }\n")), "on_status \"5xx\": write a status such as \"503\" or a range such as \"500-599\""),
        ("a tiny header limit", format!("{n}{}", bal("max_header_bytes = ‸10\n")), "max_header_bytes must be 1024..=1048576"),
        ("too many GARPs", format!("{n}{v}garp = {{ count = ‸1000 }}\n"), "garp count must be 0..=100"),
        // The host: every file run reads, command it runs, interface and directory it uses.
        ("an interface that does not exist", format!("{n}{}", v.replace("interface = \"lo\"", "interface = ‸\"nosuch0\"")), "interface \"nosuch0\":"),
        ("a missing operator token file", "[node]\nname = \"a\"\nstate_dir = \"@DIR@/state\"\noperator_token_file = ‸\"@DIR@/missing.token\"\n".to_string(), "operator token file @DIR@/missing.token: No such file or directory"),
        ("a short operator token", "[node]\nname = \"a\"\nstate_dir = \"@DIR@/state\"\noperator_token_file = ‸\"@DIR@/short.token\"\n".to_string(), "operator token file @DIR@/short.token: the token must have at least 16 characters (it has 3)"),
        ("a missing heartbeat key", format!("{n}{}", hb.replace("key_file = \"@DIR@/good.key\"", "key_file = ‸\"@DIR@/missing.key\"")), "key file @DIR@/missing.key: No such file or directory"),
        ("a short heartbeat key", format!("{n}{}", hb.replace("key_file = \"@DIR@/good.key\"", "key_file = ‸\"@DIR@/short.key\"")), "key file @DIR@/short.key"),
        ("a missing TLS certificate", format!("{n}{}", bal("tls = { certificates = ‸[{ cert = \"@DIR@/missing.pem\", key = \"@DIR@/missing.key\" }] }\n")), "@DIR@/missing.pem: No such file or directory"),
        ("an access log in a missing directory", format!("{n}{}", bal("access_log = ‸\"@DIR@/no/such/dir/access.log\"\n")), "access_log @DIR@/no/such/dir/access.log: directory @DIR@/no/such/dir does not exist"),
        ("a state directory that cannot be written", "[node]\nname = \"a\"\nstate_dir = ‸\"/proc/duet-state\"\n".to_string(), "state_dir /proc/duet-state: cannot be created in /proc"),
        ("a track script that does not exist", format!("{n}{v}track_scripts = [\"app\"]\n\n[track_script.app]\ncommand = ‸[\"@DIR@/missing.sh\"]\n"), "track script \"app\": @DIR@/missing.sh: No such file or directory"),
        ("a track script that is not executable", format!("{n}{v}track_scripts = [\"app\"]\n\n[track_script.app]\ncommand = ‸[\"@DIR@/plain.sh\"]\n"), "track script \"app\": @DIR@/plain.sh: not an executable file"),
        ("a notify command not on PATH", format!("{n}{v}notify = ‸[\"duet-no-such-program\", \"x\"]\n"), "notify: duet-no-such-program: not found on PATH"),
    ]
}

/// `duet check -c path`.
fn check(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap()
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[start..at].chars().count() + 1)
}

#[test]
fn duet_check_reports_each_bad_config_where_it_is_wrong() {
    let d = dir();
    fixtures(&d);
    let dir_text = d.display().to_string();
    let all = cases();
    assert!(all.len() >= 40, "{} cases", all.len());
    let mut failures = Vec::new();
    for (i, (what, marked, want)) in all.iter().enumerate() {
        let marked = marked.replace("@DIR@", &dir_text);
        let at = marked
            .find('‸')
            .unwrap_or_else(|| panic!("{what}: no marker"));
        let text = marked.replacen('‸', "", 1);
        let (line, col) = line_col(&text, at);
        let path = d.join(format!("case{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = check(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!(
            "{}:{line}:{col}: {}",
            path.display(),
            want.replace("@DIR@", &dir_text)
        );
        if out.status.code() != Some(2) || !err.contains(&want) {
            failures.push(format!(
                "{what} (exit {:?})\n  want: {want}\n  got:  {}",
                out.status.code(),
                err.trim_end().replace('\n', "\n        ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let d = dir();
    fixtures(&d);
    let text = format!(
        "{NODE}admin = \"127.0.0.1\"\n{VRRP}bogus = 1\n\n[[vrrp]]\nname = \"db\"\ninterface = \"lo\"\nvrid = 300\npriority = \"high\"\nvips = [\"10.0.0.2/24\"]\n"
    )
    .replace("@DIR@", &d.display().to_string());
    let path = d.join("many.toml");
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":4:9: admin = \"127.0.0.1\": not an address",
        ":12:1: unknown field `bogus`",
        ":17:8: vrid must be 1..=255",
        ":18:12: priority = \"high\": expected an integer",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn a_byte_that_is_not_utf8_is_reported_where_it_is() {
    let d = dir();
    let path = d.join("latin1.toml");
    std::fs::write(&path, b"[node]\nname = \"caf\xe9\"\n").unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:12: byte 0xe9 is not UTF-8", path.display())),
        "{err}"
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    let d = dir();
    fixtures(&d);
    let text = format!("{NODE}{VRRP}track_interfaces = [{{ name = \"nosuch1\" }}]\n")
        .replace("@DIR@", &d.display().to_string());
    let path = d.join("warn.toml");
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: tracked interface \"nosuch1\" does not exist now"),
        "{err}"
    );
}

#[test]
fn a_database_port_another_program_holds_is_reported() {
    let d = dir();
    fixtures(&d);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let text = format!("{NODE}{DB}")
        .replace("15432", &port.to_string())
        .replace("@DIR@", &d.display().to_string());
    let path = d.join("port.toml");
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            ":14:10: 127.0.0.1:{port} is in use by another program"
        )),
        "{err}"
    );
}

#[test]
fn a_database_whose_record_lives_in_etcd_passes_the_check() {
    let d = dir();
    fixtures(&d);
    let text = format!("{NODE}{DB}")
        .replace(
            "[witness]\naddress = \"127.0.0.3:7947\"\n",
            "[coordination]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.3:2379\"]\n",
        )
        .replace("@DIR@", &d.display().to_string());
    assert!(text.contains("[coordination]"));
    let path = d.join("etcd-db.toml");
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}
