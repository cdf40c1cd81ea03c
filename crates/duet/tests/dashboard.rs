//! The web dashboard in a real browser (Debian `chromium`, headless): the page the admin
//! server embeds loads, calls the API and shows the node's state and its events.

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

/// A headless Chromium driven over the DevTools protocol: `eval` runs JavaScript in the page.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` on Chromium's DevTools HTTP server (which keeps the connection
/// open: read by Content-Length).
fn devtools_get(port: u16, path: &str) -> String {
    use std::io::{BufRead, Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(c);
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

impl Browser {
    fn open(browser: &str, url: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("duet-chromium-cdp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,720",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it listens on into the profile (first line).
        let start = std::time::Instant::now();
        let port = loop {
            let text =
                std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap_or_default();
            if let Some(p) = text.lines().next().and_then(|l| l.parse::<u16>().ok()) {
                break p;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let targets: serde_json::Value =
            serde_json::from_str(&devtools_get(port, "/json/list")).unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let ws_url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), tcp).unwrap();
        Browser { child, ws, id: 0 }
    }

    /// Evaluates `js` in the page and returns its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        self.id += 1;
        let msg = serde_json::json!({
            "id": self.id,
            "method": "Runtime.evaluate",
            "params": { "expression": js, "returnByValue": true },
        });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == self.id {
                return v["result"]["result"]["value"].clone();
            }
        }
    }

    /// Polls `js` until it is true, for up to 10 s.
    fn wait_for(&mut self, js: &str) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            if self.eval(js) == serde_json::Value::Bool(true) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }
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
    let mut b = Browser::open(browser, &format!("http://{addr}/"));
    // Without the token the page says the API refused it, and shows no backend.
    assert!(
        b.wait_for("document.getElementById('error').textContent.includes('Bearer')"),
        "{}",
        b.eval("document.body.innerText")
    );
    // The token typed in: the backend appears, with its button; a click drains it.
    b.eval(&format!(
        "(() => {{ const t = document.getElementById('token'); t.value = '{token}'; t.dispatchEvent(new Event('change')); return true; }})()"
    ));
    assert!(
        b.wait_for("!!document.querySelector('button[data-act$=\"/drain\"]')"),
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
