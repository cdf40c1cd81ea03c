//! Prometheus text exposition (format 0.0.4) of a [`Status`].
//!
//! Hand-written: a few gauges and counters do not need a registry, and rendering straight from
//! the published snapshot keeps the daemon free of metric bookkeeping.

use std::fmt::Write;

use crate::{EventKind, Events, Status};

/// A metric name, its help text and how to read it from `T`.
type Metric<T, V> = (&'static str, &'static str, fn(&T) -> V);
/// A metric name, its type (`gauge` / `counter`), its help text and how to read it from `T`.
type KindedMetric<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

const STATES: [&str; 4] = ["INIT", "BACKUP", "MASTER", "FAULT"];

/// Renders every metric of the snapshot, and the event stream's counters.
pub fn render(s: &Status, events: &Events) -> String {
    let mut out = String::with_capacity(2048);
    let w = family(&mut out, "duet_up", "gauge", "1 while the daemon runs.");
    let mut lines = vec![w.line(&[("node", &s.node)], 1.0)];
    let w = family(
        &mut out,
        "duet_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    lines.push(w.line(&[], s.uptime_seconds));
    flush(&mut out, &mut lines);
    let w = family(
        &mut out,
        "duet_maintenance",
        "gauge",
        "1 while automatic failover is off cluster-wide (POST /v1/maintenance).",
    );
    lines.push(w.line(&[], f64::from(u8::from(s.maintenance.is_some()))));
    flush(&mut out, &mut lines);
    if !s.services.is_empty() {
        let w = family(
            &mut out,
            "duet_service_running",
            "gauge",
            "1 while the service runs on this node.",
        );
        for v in &s.services {
            lines.push(w.line(
                &[("service", &v.name), ("follows", &v.follows)],
                f64::from(u8::from(v.state == "running")),
            ));
        }
        flush(&mut out, &mut lines);
        let w = family(
            &mut out,
            "duet_service_stepped_down",
            "gauge",
            "1 while the service's group keeps this node from being master (duet service reset).",
        );
        for v in &s.services {
            lines.push(w.line(
                &[("service", &v.name), ("follows", &v.follows)],
                f64::from(u8::from(v.stepped_down.is_some())),
            ));
        }
        flush(&mut out, &mut lines);
    }

    let w = family(
        &mut out,
        "duet_vrrp_state",
        "gauge",
        "1 for the instance's current state (INIT, BACKUP, MASTER, FAULT).",
    );
    for v in &s.vrrp {
        for st in STATES {
            let on = if v.state == st { 1.0 } else { 0.0 };
            lines.push(w.line(&[("instance", &v.name), ("state", st)], on));
        }
    }
    flush(&mut out, &mut lines);

    let gauges: [Metric<crate::VrrpStatus, f64>; 3] = [
        ("duet_vrrp_priority", "Configured priority.", |v| {
            f64::from(v.priority)
        }),
        (
            "duet_vrrp_effective_priority",
            "Priority after tracking weights.",
            |v| f64::from(v.effective_priority),
        ),
        (
            "duet_vrrp_in_state_seconds",
            "Seconds since the last transition.",
            |v| v.in_state_seconds,
        ),
    ];
    for (name, help, get) in gauges {
        let w = family(&mut out, name, "gauge", help);
        for v in &s.vrrp {
            lines.push(w.line(&[("instance", &v.name)], get(v)));
        }
        flush(&mut out, &mut lines);
    }

    let w = family(
        &mut out,
        "duet_vrrp_master_seconds_total",
        "counter",
        "Seconds this node was MASTER of the instance (served its VIPs) since the daemon started: the availability counter.",
    );
    for v in &s.vrrp {
        lines.push(w.line(&[("instance", &v.name)], v.master_seconds));
    }
    flush(&mut out, &mut lines);

    let counters: [Metric<crate::VrrpCounters, u64>; 5] = [
        (
            "duet_vrrp_adverts_received_total",
            "Adverts received and processed.",
            |c| c.adverts_received,
        ),
        ("duet_vrrp_adverts_sent_total", "Adverts sent.", |c| {
            c.adverts_sent
        }),
        (
            "duet_vrrp_priority_zero_received_total",
            "Priority-0 adverts received.",
            |c| c.priority_zero_received,
        ),
        (
            "duet_vrrp_priority_zero_sent_total",
            "Priority-0 adverts sent.",
            |c| c.priority_zero_sent,
        ),
        (
            "duet_vrrp_became_master_total",
            "Transitions to MASTER.",
            |c| c.became_master,
        ),
    ];
    for (name, help, get) in counters {
        let w = family(&mut out, name, "counter", help);
        for v in &s.vrrp {
            lines.push(w.line(&[("instance", &v.name)], get(&v.counters) as f64));
        }
        flush(&mut out, &mut lines);
    }

    let w = family(
        &mut out,
        "duet_vrrp_dropped_total",
        "counter",
        "VRRP packets dropped, by reason; instance is empty when no instance matched.",
    );
    for v in &s.vrrp {
        for (reason, n) in &v.counters.dropped {
            lines.push(w.line(&[("instance", &v.name), ("reason", reason)], *n as f64));
        }
    }
    for (reason, n) in &s.unmatched_drops {
        lines.push(w.line(&[("instance", ""), ("reason", reason)], *n as f64));
    }
    flush(&mut out, &mut lines);

    if let Some(c) = &s.cluster {
        let w = family(
            &mut out,
            "duet_cluster_peer_alive",
            "gauge",
            "1 while heartbeats from the peer arrive on at least one link.",
        );
        for p in &c.peers {
            lines.push(w.line(
                &[("peer", &p.name), ("address", &p.address)],
                f64::from(u8::from(p.alive)),
            ));
        }
        flush(&mut out, &mut lines);
        let w = family(
            &mut out,
            "duet_cluster_link_up",
            "gauge",
            "1 while heartbeats from the peer arrive on the link.",
        );
        for p in &c.peers {
            for (n, up) in p.links.iter().enumerate() {
                let link = n.to_string();
                lines.push(w.line(
                    &[("peer", &p.name), ("link", &link)],
                    f64::from(u8::from(*up)),
                ));
            }
        }
        flush(&mut out, &mut lines);
        let w = family(
            &mut out,
            "duet_cluster_config_drift",
            "gauge",
            "1 while the peer's cluster-wide config differs from this node's (duet diff-config).",
        );
        for p in &c.peers {
            lines.push(w.line(&[("peer", &p.name)], f64::from(u8::from(p.config_differs))));
        }
        flush(&mut out, &mut lines);
        let w = family(
            &mut out,
            "duet_cluster_link_rtt_seconds",
            "gauge",
            "Heartbeat round trip to the peer on the link (smoothed), while the link is up.",
        );
        for p in &c.peers {
            for (n, rtt) in p.rtt_us.iter().enumerate() {
                if let Some(us) = rtt {
                    let link = n.to_string();
                    lines.push(w.line(&[("peer", &p.name), ("link", &link)], *us as f64 / 1e6));
                }
            }
        }
        flush(&mut out, &mut lines);
        if let Some(l) = &c.lease {
            let w = family(
                &mut out,
                "duet_cluster_lease_valid",
                "gauge",
                "1 while this node holds a valid witness lease.",
            );
            lines.push(w.line(&[("witness", &l.witness)], f64::from(u8::from(l.valid))));
            flush(&mut out, &mut lines);
            let w = family(
                &mut out,
                "duet_cluster_term",
                "gauge",
                "The term (fencing token) held or last learned.",
            );
            lines.push(w.line(&[], l.term as f64));
            flush(&mut out, &mut lines);
            let w = family(
                &mut out,
                "duet_cluster_degraded",
                "gauge",
                "1 while the lease authority says it cannot grant leases (see /v1/status).",
            );
            lines.push(w.line(
                &[("witness", &l.witness)],
                f64::from(u8::from(l.problem.is_some())),
            ));
            flush(&mut out, &mut lines);
        }
        let w = family(
            &mut out,
            "duet_cluster_dropped_total",
            "counter",
            "Cluster messages dropped, by reason.",
        );
        for (reason, n) in &c.dropped {
            lines.push(w.line(&[("reason", reason)], *n as f64));
        }
        flush(&mut out, &mut lines);
    }
    if let Some(db) = &s.database {
        database(&mut out, &mut lines, db);
    }
    let w = family(
        &mut out,
        "duet_control_inputs_dropped_total",
        "counter",
        "Datagrams (VRRP, heartbeat) dropped because the control loop's inbox was full.",
    );
    lines.push(w.line(&[], s.inputs_dropped as f64));
    flush(&mut out, &mut lines);
    let w = family(
        &mut out,
        "duet_vrrp_vips_held",
        "gauge",
        "VIPs of the instance configured on its interface by this node now.",
    );
    for v in &s.vrrp {
        lines.push(w.line(&[("instance", &v.name)], v.vips_held.len() as f64));
    }
    flush(&mut out, &mut lines);
    let w = family(
        &mut out,
        "duet_vrrp_vetoed",
        "gauge",
        "1 while the cluster layer does not allow MASTER for the instance.",
    );
    for v in &s.vrrp {
        lines.push(w.line(
            &[("instance", &v.name)],
            f64::from(u8::from(v.veto.is_some())),
        ));
    }
    flush(&mut out, &mut lines);

    let backend_metrics: [KindedMetric<crate::BackendStatus>; 5] = [
        (
            "duet_balancer_backend_up",
            "gauge",
            "1 while the backend takes new connections.",
            |b| f64::from(u8::from(b.up)),
        ),
        (
            "duet_balancer_backend_draining",
            "gauge",
            "1 while the operator drains the backend.",
            |b| f64::from(u8::from(b.draining)),
        ),
        (
            "duet_balancer_backend_connections_total",
            "counter",
            "Requests (http) or connections (tcp) forwarded.",
            |b| b.connections as f64,
        ),
        (
            "duet_balancer_backend_connect_errors_total",
            "counter",
            "Failed connects.",
            |b| b.connect_errors as f64,
        ),
        (
            "duet_balancer_backend_active",
            "gauge",
            "Requests or connections in flight now.",
            |b| f64::from(b.active),
        ),
    ];
    let backends = || {
        s.balancers
            .iter()
            .flat_map(|bal| bal.backends.iter().map(move |b| (bal, b)))
    };
    for (name, kind, help, get) in backend_metrics {
        let w = family(&mut out, name, kind, help);
        for (bal, b) in backends() {
            lines.push(w.line(&labels(bal, b), get(b)));
        }
        flush(&mut out, &mut lines);
    }
    let w = family(
        &mut out,
        "duet_balancer_backend_errors_total",
        "counter",
        "Failed requests or connections, by kind (connect, timeout, reset, bad_response, http_5xx).",
    );
    for (bal, b) in backends() {
        for (kind, n) in &b.errors {
            let mut l = labels(bal, b);
            l.push(("kind", kind));
            lines.push(w.line(&l, *n as f64));
        }
    }
    flush(&mut out, &mut lines);
    let name = "duet_balancer_backend_latency_seconds";
    let w = family(
        &mut out,
        name,
        "histogram",
        "Time from a request head to the backend's complete response (http mode).",
    );
    for (bal, b) in backends() {
        let h = &b.latency;
        let base = labels(bal, b);
        for (le, n) in &h.buckets {
            let le = le.to_string();
            let mut l = base.clone();
            l.push(("le", &le));
            lines.push(w.suffixed("_bucket", &l, *n as f64));
        }
        let mut l = base.clone();
        l.push(("le", "+Inf"));
        lines.push(w.suffixed("_bucket", &l, h.count as f64));
        lines.push(w.suffixed("_sum", &base, h.sum_seconds));
        lines.push(w.suffixed("_count", &base, h.count as f64));
    }
    flush(&mut out, &mut lines);
    let w = family(
        &mut out,
        "duet_balancer_client_errors_total",
        "counter",
        "Client connections closed because no backend could be reached.",
    );
    for bal in &s.balancers {
        lines.push(w.line(&[("balancer", &bal.name)], bal.client_errors as f64));
    }
    flush(&mut out, &mut lines);
    render_events(&mut out, events);
    out
}

fn render_events(out: &mut String, events: &Events) {
    let mut lines = Vec::new();
    let emitted = events.emitted();
    let w = family(
        out,
        "duet_events_total",
        "counter",
        "Events on this node's event stream since start, by type.",
    );
    for name in EventKind::NAMES {
        let n = emitted.get(name).copied().unwrap_or(0);
        lines.push(w.line(&[("type", name)], n as f64));
    }
    flush(out, &mut lines);
    let w = family(
        out,
        "duet_events_dropped_total",
        "counter",
        "Events a consumer (sse, alerts) lost because it fell behind the stream.",
    );
    for (consumer, n) in events.drops() {
        lines.push(w.line(&[("consumer", consumer)], n as f64));
    }
    flush(out, &mut lines);
}

/// The labels of a backend's samples.
/// The database's families: role, writability, timeline, lag, refusals, actions.
fn database(out: &mut String, lines: &mut Vec<String>, db: &crate::DatabaseStatus) {
    let w = family(
        out,
        "duet_database_role",
        "gauge",
        "1 for the role the server has now (primary, replica, stopped, starting, cloning).",
    );
    for role in ["primary", "replica", "stopped", "starting", "cloning"] {
        lines.push(w.line(&[("role", role)], f64::from(u8::from(db.role == role))));
    }
    flush(out, lines);
    for (name, help, value) in [
        (
            "duet_database_writable",
            "1 while the server accepts writes and this node may lead (what GET /primary says).",
            f64::from(u8::from(db.writable)),
        ),
        (
            "duet_database_timeline",
            "The server's timeline.",
            f64::from(db.timeline),
        ),
        (
            "duet_database_streaming",
            "1 while a replica streams from the primary.",
            f64::from(u8::from(db.streaming)),
        ),
        (
            "duet_database_promotable",
            "0 while this replica refuses promotion (it may lack acknowledged commits).",
            f64::from(u8::from(db.refusal.is_none())),
        ),
    ] {
        let w = family(out, name, "gauge", help);
        lines.push(w.line(&[], value));
        flush(out, lines);
    }
    if let Some(lag) = db.lag_bytes {
        let w = family(
            out,
            "duet_database_lag_bytes",
            "gauge",
            "How far this replica's received WAL trails the primary's last reported position.",
        );
        lines.push(w.line(&[], lag as f64));
        flush(out, lines);
    }
    let w = family(
        out,
        "duet_database_refusals_total",
        "counter",
        "Times this replica started refusing promotion.",
    );
    lines.push(w.line(&[], db.refusals as f64));
    flush(out, lines);
    let w = family(
        out,
        "duet_database_actions_total",
        "counter",
        "Actions carried out on the server, by kind (promotions, fences, rewinds, clones, errors…).",
    );
    for (action, n) in &db.counters {
        lines.push(w.line(&[("action", action)], *n as f64));
    }
    flush(out, lines);
}

fn labels<'a>(
    bal: &'a crate::BalancerStatus,
    b: &'a crate::BackendStatus,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("balancer", &bal.name),
        ("pool", &b.pool),
        ("backend", &b.address),
    ]
}

/// Writes a family's HELP and TYPE lines and returns a writer for its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> FamilyWriter {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    FamilyWriter { name: name.into() }
}

struct FamilyWriter {
    name: String,
}

impl FamilyWriter {
    fn line(&self, labels: &[(&str, &str)], value: f64) -> String {
        self.suffixed("", labels, value)
    }

    /// A sample of `name` + `suffix` (histograms: `_bucket`, `_sum`, `_count`).
    fn suffixed(&self, suffix: &str, labels: &[(&str, &str)], value: f64) -> String {
        let mut l = format!("{}{suffix}", self.name);
        if !labels.is_empty() {
            l.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    l.push(',');
                }
                let _ = write!(l, "{k}=\"{}\"", escape(v));
            }
            l.push('}');
        }
        let _ = write!(l, " {value}");
        l
    }
}

fn flush(out: &mut String, lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        out.push_str(&l);
        out.push('\n');
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{VrrpCounters, VrrpStatus};

    #[test]
    fn renders_cluster_peers_links_lease_and_vetoes() {
        let s = Status {
            vrrp: vec![VrrpStatus {
                name: "web".into(),
                veto: Some("no quorum".into()),
                ..Default::default()
            }],
            cluster: Some(crate::ClusterStatus {
                peers: vec![crate::PeerStatus {
                    name: "beta".into(),
                    address: "10.0.0.2".into(),
                    alive: true,
                    links: vec![true, false],
                    rtt_us: vec![Some(250), None],
                    config_hash: None,
                    config_differs: false,
                    term: 3,
                }],
                lease: Some(crate::LeaseStatus {
                    authority: "witness".into(),
                    witness: "10.0.0.9:7947".into(),
                    valid: true,
                    valid_for_ms: 1500,
                    term: 4,
                    problem: None,
                }),
                dropped: [("auth".to_string(), 2)].into(),
                config_hash: String::new(),
            }),
            ..Default::default()
        };
        let text = render(&s, &Events::default());
        for want in [
            "duet_cluster_peer_alive{peer=\"beta\",address=\"10.0.0.2\"} 1\n",
            "duet_cluster_link_up{peer=\"beta\",link=\"1\"} 0\n",
            "duet_cluster_link_rtt_seconds{peer=\"beta\",link=\"0\"} 0.00025\n",
            "duet_cluster_lease_valid{witness=\"10.0.0.9:7947\"} 1\n",
            "duet_cluster_degraded{witness=\"10.0.0.9:7947\"} 0\n",
            "duet_cluster_term 4\n",
            "duet_cluster_dropped_total{reason=\"auth\"} 2\n",
            "duet_vrrp_vetoed{instance=\"web\"} 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn renders_backend_errors_and_latency_histograms() {
        let backend = crate::BackendStatus {
            address: "10.0.0.1:80".into(),
            pool: "default".into(),
            up: true,
            errors: [("timeout".to_string(), 3)].into(),
            latency: crate::Histogram {
                buckets: vec![(0.001, 5), (0.01, 9)],
                count: 10,
                sum_seconds: 0.05,
            },
            ..Default::default()
        };
        let s = Status {
            balancers: vec![crate::BalancerStatus {
                name: "web".into(),
                backends: vec![backend],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s, &Events::default());
        let l = "balancer=\"web\",pool=\"default\",backend=\"10.0.0.1:80\"";
        for want in [
            format!("duet_balancer_backend_up{{{l}}} 1\n"),
            format!("duet_balancer_backend_errors_total{{{l},kind=\"timeout\"}} 3\n"),
            "# TYPE duet_balancer_backend_latency_seconds histogram\n".to_string(),
            format!("duet_balancer_backend_latency_seconds_bucket{{{l},le=\"0.001\"}} 5\n"),
            format!("duet_balancer_backend_latency_seconds_bucket{{{l},le=\"0.01\"}} 9\n"),
            format!("duet_balancer_backend_latency_seconds_bucket{{{l},le=\"+Inf\"}} 10\n"),
            format!("duet_balancer_backend_latency_seconds_sum{{{l}}} 0.05\n"),
            format!("duet_balancer_backend_latency_seconds_count{{{l}}} 10\n"),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn renders_the_database_role_lag_and_actions() {
        let s = Status {
            node: "beta".into(),
            database: Some(crate::DatabaseStatus {
                role: "replica".into(),
                timeline: 2,
                streaming: true,
                lag_bytes: Some(4096),
                refusal: Some("the record names no node".into()),
                refusals: 1,
                counters: [("rewinds".to_string(), 2)].into(),
                ..Default::default()
            }),
            ..Status::default()
        };
        let text = render(&s, &Events::default());
        for line in [
            "duet_database_role{role=\"replica\"} 1\n",
            "duet_database_role{role=\"primary\"} 0\n",
            "duet_database_writable 0\n",
            "duet_database_timeline 2\n",
            "duet_database_lag_bytes 4096\n",
            "duet_database_promotable 0\n",
            "duet_database_refusals_total 1\n",
            "duet_database_actions_total{action=\"rewinds\"} 2\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# TYPE duet_database_refusals_total counter"));
    }

    #[test]
    fn renders_state_priority_and_drops() {
        let mut counters = VrrpCounters {
            adverts_sent: 7,
            ..Default::default()
        };
        counters.dropped.insert("checksum".into(), 2);
        let s = Status {
            node: "al\"pha".into(),
            vrrp: vec![VrrpStatus {
                name: "web".into(),
                state: "MASTER".into(),
                priority: 150,
                effective_priority: 120,
                counters,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s, &Events::default());
        assert!(text.contains("duet_up{node=\"al\\\"pha\"} 1\n"), "{text}");
        assert!(text.contains("duet_vrrp_state{instance=\"web\",state=\"MASTER\"} 1\n"));
        assert!(text.contains("duet_vrrp_state{instance=\"web\",state=\"BACKUP\"} 0\n"));
        assert!(text.contains("duet_vrrp_effective_priority{instance=\"web\"} 120\n"));
        assert!(text.contains("duet_vrrp_adverts_sent_total{instance=\"web\"} 7\n"));
        assert!(text.contains("duet_vrrp_dropped_total{instance=\"web\",reason=\"checksum\"} 2\n"));
        assert!(text.contains("# TYPE duet_vrrp_dropped_total counter\n"));
    }
}
