//! The CLI as a user meets it: exit codes and messages. No root needed.

use std::process::Command;

fn duet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duet"))
}

fn scratch(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_file_line_col_and_exits_2() {
    let bad = scratch(
        "bad.toml",
        "[node]\nname = \"a\"\n\n[[vrrp]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 100\nvips = [\"10.0.0.1/24\"]\nadvert_interval = \"1x\"\n",
    );
    let out = duet().args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:10:19: invalid duration \"1x\"", bad.display())),
        "{err}"
    );
}

#[test]
fn check_accepts_a_good_config() {
    let good = scratch(
        "good.toml",
        &format!(
            "[node]\nname = \"a\"\nstate_dir = \"{}\"\n\n[[vrrp]]\nname = \"web\"\ninterface = \"lo\"\nvrid = 51\npriority = 100\nvips = [\"10.0.0.1/24\"]\n",
            std::env::temp_dir().join("duet-cli-good-state").display()
        ),
    );
    let out = duet().args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (node \"a\", 1 vrrp instance(s)"));
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = duet()
        .args(["check", "-c", "/nonexistent/duet.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/duet.toml:1:1: cannot read config")
    );
}

#[test]
fn version_and_help() {
    let out = duet().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("duet "));
    let out = duet().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "status", "demo"] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(
        !help.contains("guardian"),
        "internal commands are hidden: {help}"
    );
}

#[test]
fn status_without_a_daemon_explains_what_is_wrong() {
    // Port 1 on loopback: nothing listens there.
    let out = duet()
        .args(["status", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the admin API at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("Is `duet run` running"), "{err}");
}

#[test]
fn admin_server_answers_status_and_metrics_over_http() {
    use std::sync::Arc;
    let published = Arc::new(duet_admin::Published::default());
    published.publish(duet_admin::Status {
        node: "alpha".into(),
        vrrp: vec![duet_admin::VrrpStatus {
            name: "web".into(),
            state: "BACKUP".into(),
            priority: 100,
            effective_priority: 100,
            ..Default::default()
        }],
        ..Default::default()
    });
    let addr = duet_admin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        published,
        duet_admin::Options::read_only(),
    )
    .unwrap();
    let body = duet::status::http_get(addr, "/v1/status").unwrap();
    let status: duet_admin::Status = serde_json::from_str(&body).unwrap();
    assert_eq!(status.vrrp[0].state, "BACKUP");
    let metrics = duet::status::http_get(addr, "/metrics").unwrap();
    assert!(metrics.contains("duet_vrrp_state{instance=\"web\",state=\"BACKUP\"} 1"));
    let table = duet::status::render(&status);
    assert!(table.contains("web") && table.contains("BACKUP"), "{table}");
    let missing = duet::status::http_get(addr, "/nope").unwrap_err();
    assert!(missing.to_string().contains("404"), "{missing}");
}

#[test]
fn a_witness_that_cannot_keep_its_promises_does_not_start() {
    let key = scratch("cluster.key", "a cluster key long enough for hmac");
    let out = duet()
        .args(["witness", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .args(["--state-file", "/proc/duet-no-such-dir/witness.state"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "state file /proc/duet-no-such-dir/witness.state: cannot create /proc/duet-no-such-dir"
        ) && err.contains("could not keep its promises"),
        "{err}"
    );
}

#[test]
fn a_witness_creates_its_missing_state_directory() {
    let key = scratch("cluster2.key", "a cluster key long enough for hmac");
    let dir = std::env::temp_dir().join(format!("duet-cli-witness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("lib/duet/witness.state");
    let mut child = duet()
        .args(["witness", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .arg("--state-file")
        .arg(&state)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !state.parent().unwrap().is_dir() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        state.parent().unwrap().is_dir(),
        "the directory was not created"
    );
    assert!(running, "the witness exited");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("duet-cli-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = |name: &str| {
        // A free port for each daemon's admin API.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        scratch(
            &format!("lock-{name}.toml"),
            &format!(
                "[node]\nname = \"{name}\"\nadmin = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\nguardian = false\n",
                dir.display()
            ),
        )
    };
    let mut first = duet()
        .args(["run", "-c"])
        .arg(config("alpha"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.join("lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("alpha"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = duet()
        .args(["run", "-c"])
        .arg(config("beta"))
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "node.state_dir {} is in use by another duet (pid {} node \"alpha\")",
            dir.display(),
            first.id()
        )),
        "{err}"
    );
    // Once the first is gone (even killed), the directory is free again.
    let mut third = duet()
        .args(["run", "-c"])
        .arg(config("beta"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let running = third.try_wait().unwrap().is_none();
    let _ = third.kill();
    let _ = third.wait();
    assert!(running, "a daemon could not take a free state_dir");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_made_token_lets_the_cli_in_and_no_token_is_explained() {
    use std::sync::Arc;
    // `duet token new` prints the token, and the config line with only its hash.
    let out = duet()
        .args(["token", "new", "ops", "viewer"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let err = String::from_utf8_lossy(&out.stderr);
    let hash = duet_config::TokenHash(duet_admin::auth::token_hash(&token)).to_string();
    assert!(
        err.contains(&format!(
            "{{ name = \"ops\", role = \"viewer\", sha256 = \"{hash}\" }}"
        )),
        "{err}"
    );
    assert!(
        !err.contains(&token),
        "the secret is printed once, on stdout"
    );
    let bad = duet()
        .args(["token", "new", "ops", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let published = Arc::new(duet_admin::Published::default());
    let access = duet_admin::auth::Access::new(
        vec![duet_admin::auth::Token {
            name: "ops".into(),
            role: duet_admin::auth::Role::Viewer,
            sha256: duet_admin::auth::token_hash(&token),
        }],
        Vec::new(),
        false,
        None,
    )
    .unwrap();
    let options = duet_admin::Options {
        access,
        ..duet_admin::Options::read_only()
    };
    let addr = duet_admin::spawn("127.0.0.1:0".parse().unwrap(), published, options).unwrap();
    let status = |env: Option<&str>, file: Option<&std::path::Path>| {
        let mut cmd = duet();
        cmd.env_remove("DUET_TOKEN")
            .args(["status", "--json", "--admin", &addr.to_string()]);
        if let Some(t) = env {
            cmd.env("DUET_TOKEN", t);
        }
        if let Some(f) = file {
            cmd.arg("--token-file").arg(f);
        }
        cmd.output().unwrap()
    };
    let out = status(None, None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("pass --token-file FILE or set DUET_TOKEN"),
        "{err}"
    );
    let out = status(Some("a-wrong-token-of-enough-length"), None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the token was not accepted"),
        "{out:?}"
    );
    assert!(status(Some(&token), None).status.success());
    let file = scratch("viewer.token", &format!("{token}\n"));
    assert!(status(None, Some(&file)).status.success());
}

#[test]
fn the_cli_speaks_https_when_the_config_has_admin_tls() {
    use std::sync::Arc;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = scratch("admin-cli.pem", &cert.cert.pem());
    let key = scratch("admin-cli.key", &cert.signing_key.serialize_pem());
    let published = Arc::new(duet_admin::Published::default());
    published.publish(duet_admin::Status {
        node: "alpha".into(),
        ..Default::default()
    });
    let options = duet_admin::Options {
        tls: Some(duet_admin::tls::server_config(&pem, &key).unwrap()),
        ..duet_admin::Options::read_only()
    };
    let addr = duet_admin::spawn("127.0.0.1:0".parse().unwrap(), published, options).unwrap();
    let config = scratch(
        "admin-cli.toml",
        &format!(
            "[node]\nname = \"alpha\"\nadmin = \"{addr}\"\n\n[admin]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            pem.display(),
            key.display()
        ),
    );
    let out = duet()
        .args(["status", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s: duet_admin::Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s.node, "alpha");
    // Without the config, plain HTTP to the HTTPS port fails with a message.
    let out = duet()
        .args(["status", "--admin", &addr.to_string()])
        .args(["-c", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn status_watch_redraws_until_interrupted() {
    use std::io::Read;
    use std::sync::Arc;
    let published = Arc::new(duet_admin::Published::default());
    published.publish(duet_admin::Status {
        node: "alpha".into(),
        ..Default::default()
    });
    published.emit(duet_admin::EventKind::Reload {
        ok: true,
        message: "reloaded".into(),
    });
    let addr = duet_admin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        published,
        duet_admin::Options::read_only(),
    )
    .unwrap();
    let mut child = duet()
        .args(["status", "--watch", "0.2", "--admin", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = child.wait();
    // Not a terminal: each redraw starts with a dated separator line.
    let redraws = text.lines().filter(|l| l.starts_with("--- ")).count();
    assert!(redraws >= 3, "{redraws} redraws in 1.5 s:\n{text}");
    assert_eq!(text.matches("node alpha").count(), redraws, "{text}");
    assert!(text.contains("reloaded: reloaded"), "{text}");
}

#[test]
fn completions_man_pages_and_a_cluster_key_come_from_the_binary() {
    let out = duet().args(["completions", "bash"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("complete -F")
            && text.contains("switchover")
            && text.contains("--token-file"),
        "{text}"
    );
    let out = duet().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let dir = std::env::temp_dir().join(format!("duet-cli-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(duet().arg("man").arg(&dir).status().unwrap().success());
    let page = std::fs::read_to_string(dir.join("duet.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH duet 1"),
        "{page}"
    );
    for sub in ["duet-run.1", "duet-check.1", "duet-key-new.1"] {
        assert!(dir.join(sub).exists(), "no {sub}");
    }
    // The internal lab commands get no page.
    assert!(!dir.join("duet-lab-probe.1").exists());

    let key = dir.join("cluster.key");
    let out = duet().args(["key", "new"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let again = duet().args(["key", "new"]).arg(&key).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn services_are_checked_on_the_host_and_without_heartbeats_a_warning_says_why() {
    let text = r#"[node]
name = "a"

[[vrrp]]
name = "web"
interface = "lo"
vrid = 1
priority = 100
vips = ["10.0.0.1/24"]

[[service]]
name = "app"
follows = "web"
kind = "exec"
start = ["/bin/true"]
stop = ["/nonexistent/duet-stop"]
"#;
    let config = scratch("service.toml", text);
    let out = duet().args(["check", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service.toml:16:8: service \"app\": /nonexistent/duet-stop:"),
        "{err}"
    );
    let config = scratch(
        "service-ok.toml",
        &text.replace("/nonexistent/duet-stop", "/bin/true"),
    );
    let out = duet().args(["check", "-c"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "service-ok.toml:13:11: warning: without [heartbeat], a new master cannot know"
        ),
        "{err}"
    );
}

#[test]
fn a_cluster_key_others_can_read_is_a_warning() {
    let key = scratch("open.key", "a shared secret of enough bytes\n");
    let config = scratch(
        "hb.toml",
        &format!(
            "[node]\nname = \"a\"\nstate_dir = \"{}\"\n\n[heartbeat]\nkey_file = \"{}\"\nlinks = [{{ local = \"127.0.0.1:17946\", peers = [\"127.0.0.2:17946\"] }}]\n",
            std::env::temp_dir().join("duet-cli-hb-state").display(),
            key.display()
        ),
    );
    let mode = |m| {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(0o644);
    let out = duet().args(["check", "-c"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("hb.toml:6:12: warning: key file") && err.contains("(mode 644)"),
        "{err}"
    );
    mode(0o600);
    let out = duet().args(["check", "-c"]).arg(&config).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by other users"));
}
