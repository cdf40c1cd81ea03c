//! The web dashboard in a real browser (Debian `chromium`, headless): the page the admin
//! server embeds loads, calls the API and shows the node's state and its events; during a
//! real failover in a namespace lab the open page follows it.

mod common;

use std::process::Command;
use std::sync::Arc;

use duet_admin::{
    BackendStatus, BalancerStatus, EventKind, Options, Published, Status, VrrpStatus,
};

/// The browser's program, or `None` (and a recorded skip) without one.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|p| duet::lab::have_program(p));
    if found.is_none() {
        duet::lab::skip(
            "chromium is not installed (apt-get install chromium)",
            "DUET_REQUIRE_TOOLS",
        );
    }
    found
}

fn headless(browser: &str, args: &[&str], url: &str) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!("duet-chromium-{}", std::process::id()));
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// Balancer `web` on 10.10.10.10:80 with one healthy backend, 10.0.0.11:8080.
fn one_backend(published: &Published) {
    published.set_balancers(Arc::new(|| {
        vec![BalancerStatus {
            name: "web".into(),
            bind: "10.10.10.10:80".into(),
            mode: "http".into(),
            backends: vec![BackendStatus {
                address: "10.0.0.11:8080".into(),
                up: true,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }));
}

#[test]
fn the_dashboard_shows_the_master_its_backends_and_its_events() {
    let Some(browser) = chromium() else {
        return;
    };
    let published = Arc::new(Published::default());
    published.publish(Status {
        node: "alpha".into(),
        version: "0.1.0".into(),
        vrrp: vec![VrrpStatus {
            name: "web".into(),
            state: "MASTER".into(),
            priority: 150,
            effective_priority: 150,
            vips: vec!["10.10.10.10/24".into()],
            reason: "no advert for master down interval 360ms".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    one_backend(&published);
    published.emit(EventKind::Vrrp {
        instance: "web".into(),
        from: "BACKUP".into(),
        to: "MASTER".into(),
        reason: "no advert for master down interval 360ms".into(),
        priority: 150,
    });
    let addr = duet_admin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        published,
        Options::read_only(),
    )
    .unwrap();
    let url = format!("http://{addr}/");
    let out = headless(browser, &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "alpha · duet 0.1.0",
        r#"<span class="state MASTER">MASTER</span>"#,
        "10.10.10.10/24",
        "10.0.0.11:8080",
        r#"data-act="/v1/balancers/web/backends/10.0.0.11%3A8080/drain""#,
        "#1  vrrp  from=BACKUP instance=web priority=150",
    ] {
        assert!(dom.contains(want), "no {want:?} in the page:\n{dom}");
    }
    // The picture for the docs.
    let shot = std::env::temp_dir().join(format!("duet-dashboard-{}.png", std::process::id()));
    let out = headless(
        browser,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,720",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // DUET_DASHBOARD_SHOT=docs/dashboard.png keeps the picture.
    if let Some(keep) = std::env::var_os("DUET_DASHBOARD_SHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    let _ = std::fs::remove_file(&shot);
}

/// A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// requests on its fd 3, answers on its fd 4, each a JSON text ended by a NUL byte). A pipe
/// works the same whether the browser runs here or inside a lab namespace, whose loopback
/// this process cannot reach.
struct Browser {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    id: u64,
    /// The page's session (commands without one go to the browser).
    session: Option<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = duet_sys::process::send_signal(self.child.id(), duet_sys::process::SIGKILL, true);
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Opens `url` in `browser`; `host`: inside that lab host's namespace.
    fn open(
        browser: &str,
        host: Option<(&duet::lab::Lab, &duet::lab::Host)>,
        url: &str,
    ) -> Browser {
        use std::io::Read;
        let profile = std::env::temp_dir().join(format!(
            "duet-chromium-cdp-{}-{}",
            std::process::id(),
            host.map_or("here", |(_, h)| h.name.as_str())
        ));
        let _ = std::fs::remove_dir_all(&profile);
        // The shell hands its stdin and stdout to the browser as fds 3 and 4.
        let script = r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null 2>&1"#;
        let mut cmd = match host {
            Some((lab, h)) => {
                let mut c = lab.command(h, "sh");
                c.arg("-c");
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-c");
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
        };
        let mut child = cmd
            .args([script, browser])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            id: 0,
            session: None,
        };
        // Attach to the page the browser opened with `url`.
        let start = std::time::Instant::now();
        let page = loop {
            let targets = b.call("Target.getTargets", serde_json::json!({}));
            let page = targets["targetInfos"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .map(|t| t["targetId"].clone());
            if let Some(p) = page {
                break p;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "chromium opened no page"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": page, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().map(String::from);
        assert!(b.session.is_some(), "{attached}");
        b
    }

    /// Sends one command and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.id += 1;
        let mut msg = serde_json::json!({ "id": self.id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = s.clone().into();
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium takes commands");
        loop {
            let v = self
                .from
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == self.id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page and returns its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is true, for up to `seconds`.
    fn wait_for(&mut self, js: &str, seconds: u64) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(seconds) {
            if self.eval(js) == serde_json::Value::Bool(true) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// Types `token` into the page's token field.
    fn type_token(&mut self, token: &str) {
        self.eval(&format!(
            "(() => {{ const t = document.getElementById('token'); t.value = {}; t.dispatchEvent(new Event('change')); return true; }})()",
            serde_json::Value::from(token)
        ));
    }

    /// The page as a PNG.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        );
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64 (the DevTools protocol's binary data), padding allowed.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_the_protocol_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}

#[test]
fn a_click_with_an_operator_token_drains_a_backend() {
    let Some(browser) = chromium() else {
        return;
    };
    use duet_admin::auth::{Access, Role, Token, token_hash};
    let published = Arc::new(Published::default());
    published.publish(Status {
        node: "alpha".into(),
        ..Default::default()
    });
    one_backend(&published);
    let (tx, acted) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let token = "an-operator-token-for-the-browser";
    let options = Options {
        access: Access::new(
            vec![Token {
                name: "ops".into(),
                role: Role::Operator,
                sha256: token_hash(token),
            }],
            Vec::new(),
            false,
            None,
        )
        .unwrap(),
        operator: Some(Arc::new(move |action| {
            let _ = tx.lock().unwrap().send(action);
            Ok("done".into())
        })),
        ..Options::read_only()
    };
    let addr = duet_admin::spawn("127.0.0.1:0".parse().unwrap(), published, options).unwrap();
    let mut b = Browser::open(browser, None, &format!("http://{addr}/"));
    // Without the token the page says the API refused it, and shows no backend.
    assert!(
        b.wait_for(
            "document.getElementById('error').textContent.includes('Bearer')",
            10
        ),
        "{}",
        b.eval("document.body.innerText")
    );
    // The token typed in: the backend appears, with its button; a click drains it.
    b.type_token(token);
    assert!(
        b.wait_for(
            "!!document.querySelector('button[data-act$=\"/drain\"]')",
            10
        ),
        "{}",
        b.eval("document.body.innerText")
    );
    b.eval("document.querySelector('button[data-act$=\"/drain\"]').click(), true");
    let action = acted
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the click reached the daemon");
    assert_eq!(
        action,
        duet_admin::Action::Backend {
            balancer: "web".into(),
            backend: "10.0.0.11:8080".into(),
            drain: true,
        }
    );
}

/// Whether the page's VRRP table shows `state` for the (only) instance.
fn shows_state(state: &str) -> String {
    format!("document.querySelector('#vrrp .state')?.textContent === '{state}'")
}

/// JavaScript: how many events in the page's timeline took an instance to MASTER.
const TO_MASTER: &str = "[...document.getElementById('events').children].filter((d) => d.className === 'vrrp' && d.textContent.includes('to=MASTER')).length";

#[test]
fn the_open_dashboard_follows_a_real_failover_to_the_new_master() {
    let Some(browser) = chromium() else {
        return;
    };
    // With a witness, so that a dead master is replaced (without one, the safe policy
    // cannot tell death from a partition and waits).
    let Some(mut p) = common::cluster("ds", &duet::lab::witness_config(20), true) else {
        return;
    };
    // The page is beta's (the backup), opened in beta's namespace before anything fails.
    let url = format!("http://{}/", p.beta.admin);
    let mut b = Browser::open(browser, Some((&p.lab, &p.beta.host)), &url);
    let token = std::fs::read_to_string(p.lab.dir().join("operator.token")).unwrap();
    b.type_token(token.trim());
    let cluster = "document.getElementById('cluster').innerText";
    assert!(
        b.wait_for(&shows_state("BACKUP"), 15)
            && b.wait_for(&format!("{cluster}.includes('alpha') && {cluster}.includes('alive') && / ms/.test({cluster})"), 15),
        "{}\n{}",
        b.eval("document.body.innerText"),
        p.logs()
    );
    let before = b.eval(TO_MASTER).as_u64().unwrap();
    b.eval("window.duetOpenedBeforeTheFailover = true");

    // alpha dies: the same page (no reload) shows beta MASTER, the transition in its
    // timeline, and alpha silent.
    p.signal(common::Node::Alpha, duet_sys::process::SIGKILL, true);
    p.alpha.pid = None;
    assert!(
        b.wait_for(&shows_state("MASTER"), 15),
        "{}\n{}",
        b.eval("document.body.innerText"),
        p.logs()
    );
    assert!(
        b.wait_for(&format!("{TO_MASTER} > {before}"), 10)
            && b.wait_for(&format!("{cluster}.includes('silent')"), 10),
        "{}",
        b.eval("document.body.innerText")
    );
    assert_eq!(
        b.eval("window.duetOpenedBeforeTheFailover === true"),
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );
    let text = b.eval("document.body.innerText");
    assert!(
        text.as_str().unwrap().contains("10.99.0.100"),
        "the VIP is shown: {text}"
    );
    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // DUET_FAILOVER_SHOT=docs/dashboard-failover.png keeps the picture.
    if let Some(keep) = std::env::var_os("DUET_FAILOVER_SHOT") {
        std::fs::write(keep, &png).unwrap();
    }
}
