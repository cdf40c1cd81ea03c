//! `/metrics` as a real scraper reads it: every family duet renders, with every section of the
//! status filled, goes through Prometheus' own `promtool check metrics` (Debian `prometheus`),
//! which parses the text format and lints names (`_total` for counters, units, help).

use std::io::Write;
use std::process::{Command, Stdio};

use duet_admin::{
    BackendStatus, BalancerStatus, ClusterStatus, DatabasePeer, DatabaseStatus, EventKind, Events,
    Histogram, LeaseStatus, MaintenanceStatus, PeerStatus, Status, VrrpCounters, VrrpStatus,
};

/// A status with every section present (the database as a replica: its lag is a family of
/// its own).
fn full() -> Status {
    Status {
        services: vec![duet_admin::ServiceStatus {
            name: "app".into(),
            follows: "web".into(),
            kind: "exec".into(),
            state: "running".into(),
            error: None,
            waiting_for_peer: false,
            stepped_down: None,
        }],
        node: "alpha".into(),
        version: "0.1.0".into(),
        uptime_seconds: 12.5,
        vrrp: vec![VrrpStatus {
            name: "web".into(),
            state: "MASTER".into(),
            priority: 150,
            effective_priority: 120,
            vips: vec!["10.0.0.100/24".into()],
            veto: Some("no quorum".into()),
            in_state_seconds: 3.0,
            master_seconds: 10.25,
            counters: VrrpCounters {
                adverts_received: 3,
                adverts_sent: 40,
                dropped: [("checksum".to_string(), 2)].into(),
                ..Default::default()
            },
            ..Default::default()
        }],
        unmatched_drops: [("vrid".to_string(), 5)].into(),
        inputs_dropped: 1,
        maintenance: Some(MaintenanceStatus {
            by: "ops".into(),
            version: 2,
        }),
        balancers: vec![BalancerStatus {
            name: "web".into(),
            bind: "10.0.0.100:80".into(),
            mode: "http".into(),
            client_errors: 1,
            backends: vec![BackendStatus {
                address: "10.0.0.11:80".into(),
                pool: "default".into(),
                up: true,
                weight: 1,
                connections: 10,
                errors: [("timeout".to_string(), 1)].into(),
                latency: Histogram {
                    buckets: vec![(0.005, 3), (0.05, 9)],
                    count: 10,
                    sum_seconds: 0.2,
                },
                ..Default::default()
            }],
        }],
        cluster: Some(ClusterStatus {
            peers: vec![PeerStatus {
                name: "beta".into(),
                address: "10.0.0.2".into(),
                alive: true,
                links: vec![true, false],
                rtt_us: vec![Some(180), None],
                config_hash: Some("0000000000000001".into()),
                config_differs: true,
                term: 3,
            }],
            lease: Some(LeaseStatus {
                authority: "witness".into(),
                witness: "10.0.0.9:7947".into(),
                valid: true,
                valid_for_ms: 1500,
                term: 4,
                problem: None,
            }),
            dropped: [("auth".to_string(), 2)].into(),
            config_hash: "0000000000000002".into(),
        }),
        database: Some(DatabaseStatus {
            role: "replica".into(),
            streaming: true,
            lag_bytes: Some(4096),
            timeline: 2,
            lsn: "0/3000060".into(),
            synchronous: "on".into(),
            counters: [("promotions".to_string(), 1)].into(),
            peers: vec![DatabasePeer {
                name: "beta".into(),
                alive: true,
                role: "primary".into(),
                timeline: 2,
                lsn: "0/3000060".into(),
            }],
            ..Default::default()
        }),
    }
}

#[test]
fn promtool_accepts_every_metric_family() {
    if !duet::lab::have_program("promtool") {
        duet::lab::skip(
            "promtool is not installed (apt-get install prometheus)",
            "DUET_REQUIRE_TOOLS",
        );
        return;
    }
    let events = Events::default();
    events.emit(EventKind::Reload {
        ok: true,
        message: "x".into(),
    });
    events.dropped("sse", 3);
    let text = duet_admin::render_metrics(&full(), &events);
    for family in [
        "duet_vrrp_master_seconds_total",
        "duet_maintenance",
        "duet_events_total",
        "duet_events_dropped_total",
        "duet_balancer_backend_latency_seconds",
        "duet_database_role",
        "duet_cluster_peer_alive",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "no {family}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n--- the text ---\n{text}"
    );
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_duet_exports() {
    let text = duet_admin::render_metrics(&full(), &Events::default());
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/duet.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Every duet_… name in the query is a family duet renders (histograms by their
            // _bucket series).
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("duet_"))
            {
                let family = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(
                    families.contains(&family),
                    "{:?} uses {name}, which /metrics does not have",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 12, "the dashboard queries {used} metrics");
}
