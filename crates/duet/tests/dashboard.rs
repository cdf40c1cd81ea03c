//! The web dashboard in a real browser (Debian `chromium`, headless): the page the admin
//! server embeds loads, calls the API and shows the node's state and its events.

use std::process::Command;
use std::sync::Arc;

use duet_admin::{
    BackendStatus, BalancerStatus, EventKind, Options, Published, Status, VrrpStatus,
};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|p| duet::lab::have_program(p))
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

#[test]
fn the_dashboard_shows_the_master_its_backends_and_its_events() {
    let Some(browser) = chromium() else {
        duet::lab::skip(
            "chromium is not installed (apt-get install chromium)",
            "DUET_REQUIRE_TOOLS",
        );
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
