use super::*;
use std::time::Duration;

/// The `[node]`, `[[vrrp]]` and `[track_script.*]` keys of design.md's config contract.
const DESIGN_SAMPLE: &str = r#"
[node]
name = "alpha"
admin = "127.0.0.1:9900"          # admin API, /metrics, dashboard

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 51
priority = 150                    # 1..=254 (255 = address owner)
version = 3                       # 2 or 3
advert_interval = "100ms"         # v2: whole seconds
preempt = true
preempt_delay = "0s"
vips = ["10.10.10.10/24"]
unicast_peers = []                # empty: multicast 224.0.0.18 / ff02::12
v3_checksum = "pseudo-header"     # "pseudo-header" (keepalived default) or "rfc"; both accepted on receive
track_scripts = ["web_up"]
track_interfaces = [{ name = "eth1", weight = -20 }]   # weight 0: link down means FAULT
track_files = [{ path = "/run/duet/web.weight", weight = 1 }]
accept = true                     # answer traffic to the VIP (RFC default is false; keepalived's is true)
garp = { count = 5, interval = "10ms", refresh = "0s" }
notify = "/etc/duet/notify.sh"    # argv as keepalived: INSTANCE <name> <STATE> <priority>;
                                  # env DUET_OLD_STATE, DUET_REASON
notify_master = "/etc/duet/master.sh"   # also notify_backup, notify_fault, notify_stop
notify_timeout = "5s"

[track_script.web_up]
command = ["curl", "-fsS", "http://127.0.0.1/health"]
interval = "1s"
timeout = "1s"
rise = 2
fall = 3
weight = -30                      # 0: failure means FAULT
"#;

fn err(text: &str) -> String {
    parse("duet.toml", text).unwrap_err().to_string()
}

#[test]
fn design_sample_parses_as_written() {
    let cfg = parse("duet.toml", DESIGN_SAMPLE).unwrap();
    assert_eq!(cfg.node.name, "alpha");
    let v = &cfg.vrrp[0];
    assert_eq!((v.vrid, v.priority, v.version), (51, 150, 3));
    assert_eq!(v.advert_interval.0, Duration::from_millis(100));
    assert_eq!(v.vips[0].to_string(), "10.10.10.10/24");
    assert_eq!(v.track_interfaces[0].weight, -20);
    assert_eq!(v.garp.count, 5);
    assert_eq!(v.notify.as_ref().unwrap().0, vec!["/etc/duet/notify.sh"]);
    let s = &cfg.track_script["web_up"];
    assert_eq!((s.rise, s.fall, s.weight), (2, 3, -30));
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let text = "[node]\nname = \"a\"\nnmae = \"b\"\n";
    let e = err(text);
    assert!(e.starts_with("duet.toml:3:1: "), "{e}");
    assert!(e.contains("unknown field `nmae`"), "{e}");

    let text = "[node]\nname = \"a\"\n[[vrrp]]\nname = \"w\"\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvips = [\"10.0.0.1\"]\npremept = true\n";
    let e = err(text);
    assert!(e.starts_with("duet.toml:9:1: "), "{e}");
    assert!(e.contains("premept"), "{e}");

    let e = err("[node]\nname = \"a\"\n[balancr]\n");
    assert!(e.starts_with("duet.toml:3:"), "{e}");
}

#[test]
fn bad_values_point_at_the_value() {
    let base = "[node]\nname = \"a\"\n[[vrrp]]\nname = \"w\"\ninterface = \"eth0\"\nvrid = 1\npriority = 100\n";
    let e = err(&format!("{base}vips = [\"10.0.0.300/24\"]\n"));
    assert!(e.starts_with("duet.toml:8:"), "{e}");
    assert!(e.contains("not an IP address"), "{e}");

    let e = err(&format!(
        "{base}vips = [\"10.0.0.3\"]\nadvert_interval = \"100\"\n"
    ));
    assert!(e.starts_with("duet.toml:9:19: "), "{e}");
    assert!(e.contains("missing unit"), "{e}");

    let e = err(&format!("{base}vips = [\"10.0.0.3\"]\nvrid = 300\n"));
    assert!(e.contains("duet.toml:"), "{e}");
}

#[test]
fn cross_value_rules_point_at_the_key() {
    let text = r#"[node]
name = "a"

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 51
priority = 100
version = 2
advert_interval = "500ms"
vips = ["10.0.0.10/24"]
track_scripts = ["nope"]

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 51
priority = 0
vips = ["10.0.0.11/24", "2001:db8::1/64"]
"#;
    let e = err(text);
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines.contains(
            &"duet.toml:10:19: VRRPv2 advert_interval must be whole seconds 1s..=255s, got 500ms"
        ),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("duet.toml:12:18: unknown track script \"nope\"")),
        "{e}"
    );
    assert!(
        lines.contains(&"duet.toml:15:8: duplicate instance name \"web\""),
        "{e}"
    );
    assert!(
        lines.contains(&"duet.toml:17:8: vrid 51 on eth0 is already used by instance \"web\""),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("duet.toml:18:12: priority must be 1..=255")),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("duet.toml:19:25: VIP 2001:db8::1/64 mixes")),
        "{e}"
    );
}

#[test]
fn ipv6_needs_v3_and_matching_peers() {
    let text = r#"[node]
name = "a"
[[vrrp]]
name = "v6"
interface = "eth0"
vrid = 7
priority = 100
version = 2
advert_interval = "1s"
vips = ["2001:db8::10/64"]
unicast_peers = ["10.0.0.2"]
"#;
    let e = err(text);
    assert!(e.contains("duet.toml:8:11: VRRPv2 is IPv4 only"), "{e}");
    assert!(
        e.contains("duet.toml:11:18: unicast peer 10.0.0.2 is not in the VIPs' address family"),
        "{e}"
    );
}

#[test]
fn defaults_are_keepalived_like() {
    let cfg = parse(
        "x",
        "[node]\nname = \"a\"\n[[vrrp]]\nname = \"w\"\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvips = [\"10.0.0.1\"]\n",
    )
    .unwrap();
    let v = &cfg.vrrp[0];
    assert_eq!(v.version, 3);
    assert_eq!(v.advert_interval.0, Duration::from_secs(1));
    assert!(v.preempt && v.accept);
    assert_eq!(v.v3_checksum, V3Checksum::PseudoHeader);
    assert_eq!(v.vips[0].prefix, 32);
    assert_eq!(v.garp.count, 5);
    assert_eq!(cfg.node.admin.to_string(), "127.0.0.1:9900");
    assert_eq!(cfg.node.vip_lifetime.0, Duration::from_secs(1));
}

#[test]
fn sync_groups_reference_instances() {
    let text = r#"[node]
name = "a"
[[vrrp]]
name = "pub"
interface = "eth0"
vrid = 1
priority = 100
vips = ["10.0.0.1"]
[sync_group.edge]
instances = ["pub", "priv"]
"#;
    let e = err(text);
    assert!(
        e.contains("duet.toml:10:21: unknown vrrp instance \"priv\""),
        "{e}"
    );
}

/// Every key the schema can hold, as dotted paths (`vrrp.garp.count`), found by serialising a
/// config in which every optional value is set. A new field that is not set here fails to compile
/// (struct literals must be complete), so the list cannot silently miss a key.
pub(crate) fn all_schema_keys() -> Vec<String> {
    let full = Config {
        node: NodeConfig::default(),
        vrrp: vec![VrrpConfig {
            name: "w".into(),
            interface: "eth0".into(),
            vrid: 1,
            priority: 1,
            version: 3,
            advert_interval: Dur::default(),
            preempt: true,
            preempt_delay: Dur::default(),
            vips: vec!["10.0.0.1".parse().unwrap()],
            unicast_peers: vec!["10.0.0.2".parse().unwrap()],
            source: Some("10.0.0.3".parse().unwrap()),
            v3_checksum: V3Checksum::Rfc,
            track_scripts: vec!["s".into()],
            track_interfaces: vec![TrackInterfaceConfig {
                name: "eth1".into(),
                weight: 0,
            }],
            track_files: vec![TrackFileConfig {
                path: "/x".into(),
                weight: 1,
            }],
            accept: true,
            garp: GarpConfig::default(),
            notify: Some(Command(vec!["/n".into()])),
            notify_master: Some(Command(vec!["/n".into()])),
            notify_backup: Some(Command(vec!["/n".into()])),
            notify_fault: Some(Command(vec!["/n".into()])),
            notify_stop: Some(Command(vec!["/n".into()])),
            notify_timeout: Dur::default(),
        }],
        track_script: [(
            "NAME".to_string(),
            TrackScriptConfig {
                command: vec!["true".into()],
                interval: Dur::default(),
                timeout: Dur::default(),
                rise: 1,
                fall: 1,
                weight: 0,
            },
        )]
        .into(),
        sync_group: [(
            "NAME".to_string(),
            SyncGroupConfig {
                instances: vec!["w".into()],
            },
        )]
        .into(),
        balancer: vec![BalancerConfig {
            name: "b".into(),
            bind: "0.0.0.0:80".parse().unwrap(),
            mode: BalancerMode::Tcp,
            algorithm: BalancerAlgorithm::Hash,
            hash_key: Some("source".into()),
            backends: vec![BackendConfig {
                address: "10.0.0.1:80".parse().unwrap(),
                weight: 1,
                maxconn: 0,
            }],
            check: Some(CheckConfig {
                path: Some("/health".into()),
                expect: "200-399".into(),
                interval: Dur::default(),
                timeout: Dur::default(),
                rise: 1,
                fall: 1,
            }),
            passive: PassiveConfig::default(),
            slow_start: Dur::default(),
            timeouts: TimeoutsConfig::default(),
            retries: 1,
            proxy_protocol: ProxyProtocolConfig {
                accept: true,
                send: ProxySend::V2,
            },
            sticky: Some(StickyConfig {
                cookie: "SERVERID".into(),
            }),
            max_header_bytes: 16384,
            access_log: "stderr".into(),
            route: vec![RouteConfig {
                host: Some("a".into()),
                path: "/".into(),
                backends: vec![BackendConfig {
                    address: "10.0.0.2:80".parse().unwrap(),
                    weight: 1,
                    maxconn: 0,
                }],
            }],
            queue: QueueConfig::default(),
            tls: Some(TlsConfig {
                certificates: vec![CertificateConfig {
                    cert: "a".into(),
                    key: "b".into(),
                }],
                hsts: Some(Dur::default()),
                redirect_from: Some("0.0.0.0:80".parse().unwrap()),
                http2: true,
            }),
        }],
        heartbeat: Some(HeartbeatConfig {
            interval: Dur::default(),
            misses: 5,
            key_file: "k".into(),
            links: vec![LinkConfig {
                local: "10.0.0.1:7946".parse().unwrap(),
                peers: vec!["10.0.0.2:7946".parse().unwrap()],
            }],
            two_node_policy: TwoNodePolicy::Safe,
        }),
        witness: Some(WitnessConfig {
            address: "10.0.0.3:7947".parse().unwrap(),
            lease: Dur::default(),
            key_file: Some("k".into()),
        }),
        coordination: Some(CoordinationConfig {
            backend: CoordinationBackend::Etcd,
            endpoints: vec!["http://10.0.0.4:2379".into()],
            prefix: "/duet".into(),
            lease: Dur::default(),
            ca_file: Some("ca".into()),
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
        }),
        database: Some(DatabaseConfig {
            kind: DatabaseKind::Postgres,
            listen: "10.0.0.1:5432".parse().unwrap(),
            data_dir: "/d".into(),
            bin_dir: "/b".into(),
            os_user: "postgres".into(),
            superuser: "postgres".into(),
            replication_user: "replicator".into(),
            password_file: "/p".into(),
            allow: vec!["10.0.0.0/24".parse().unwrap()],
            synchronous: SyncMode::On,
            maximum_lag_on_failover: ByteSize(1),
            write_vip: Some(WriteVip {
                address: "10.0.0.9/24".parse().unwrap(),
                interface: "eth0".into(),
            }),
            parameters: [("NAME".to_string(), "1".to_string())].into(),
        }),
        admin: Some(crate::AdminConfig {
            tls: Some(crate::AdminTls {
                cert: "c".into(),
                key: "k".into(),
            }),
            tokens: vec![crate::TokenConfig {
                name: "ops".into(),
                role: crate::Role::Operator,
                sha256: crate::TokenHash([0; 32]),
            }],
            public: vec!["/primary".into()],
            audit_log: Some("/a".into()),
        }),
        alerts: Some(crate::AlertsConfig {
            webhook: Some(crate::WebhookConfig {
                url: "http://h:1/".into(),
                timeout: Dur(Duration::from_secs(1)),
            }),
            email: Some(crate::EmailConfig {
                smtp: "h:25".into(),
                from: "a@b".into(),
                to: vec!["c@d".into()],
                timeout: Dur(Duration::from_secs(1)),
            }),
            on: vec!["vrrp".into()],
            dedupe: Dur(Duration::from_secs(1)),
            per_minute: 1,
        }),
        service: vec![crate::ServiceConfig {
            name: "app".into(),
            follows: "w".into(),
            kind: crate::ServiceKind::Exec,
            start: Some(Command(vec!["/s".into()])),
            stop: Some(Command(vec!["/s".into()])),
            monitor: Some(Command(vec!["/s".into()])),
            unit: Some("u.service".into()),
            device: Some("/dev/x".into()),
            mountpoint: Some("/m".into()),
            fstype: Some("ext4".into()),
            options: Some("ro".into()),
            interval: Dur::default(),
            timeout: Dur::default(),
            restarts: 3,
            after: vec!["storage".into()],
        }],
    };
    let value = toml::Value::try_from(&full).unwrap();
    let mut keys = Vec::new();
    collect_keys(&value, "", &mut keys);
    keys
}

fn collect_keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let k = if k == "NAME" { "*" } else { k.as_str() };
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                if !matches!(v, toml::Value::Table(_)) || v.as_table().is_some_and(|t| t.is_empty())
                {
                    out.push(path.clone());
                }
                collect_keys(v, &path, out);
            }
        }
        toml::Value::Array(a) => {
            for item in a.iter().take(1) {
                collect_keys(item, prefix, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_key_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
        .expect("docs/config.md");
    let keys = all_schema_keys();
    assert!(keys.len() > 30, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md lacks these keys (write each as `dotted.key`): {missing:?}"
    );
}

#[test]
fn services_follow_an_instance_in_order_and_say_what_each_kind_needs() {
    let base = r#"[node]
name = "a"

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 1
priority = 100
vips = ["10.0.0.1/24"]

[[service]]
name = "app"
follows = "web"
kind = "exec"
start = ["/usr/local/bin/app", "start"]
stop = ["/usr/local/bin/app", "stop"]
monitor = ["/usr/local/bin/app", "check"]
after = ["storage"]

[[service]]
name = "storage"
follows = "web"
kind = "mount"
device = "10.0.0.5:/export"
mountpoint = "/srv/data"
fstype = "nfs"
options = "vers=4.2"

[[service]]
name = "proxy"
follows = "web"
kind = "systemd"
unit = "nginx.service"
after = ["app"]
"#;
    let cfg = parse("duet.toml", base).unwrap();
    let order: Vec<&str> = crate::service::start_order(&cfg, "web")
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(order, ["storage", "app", "proxy"]);
    assert_eq!(cfg.service[0].restarts, 3);
    assert_eq!(cfg.service[0].interval.0, Duration::from_secs(2));
    assert_eq!(cfg.service[0].timeout.0, Duration::from_secs(10));

    for (from, to, want) in [
        (
            "follows = \"web\"\nkind = \"exec\"",
            "follows = \"db\"\nkind = \"exec\"",
            "no [[vrrp]] instance has that name",
        ),
        (
            "unit = \"nginx.service\"",
            "unit = \"nginx.service\"\nstart = [\"/x\"]",
            "start does not apply to kind = \"systemd\"",
        ),
        ("fstype = \"nfs\"\n", "", "kind = \"mount\" needs fstype"),
        (
            "mountpoint = \"/srv/data\"",
            "mountpoint = \"srv\"",
            "absolute path",
        ),
        (
            "after = [\"app\"]",
            "after = [\"nothing\"]",
            "no service has that name",
        ),
        (
            "options = \"vers=4.2\"",
            "options = \"vers=4.2\"\nafter = [\"proxy\"]",
            "goes round in a circle",
        ),
        (
            "name = \"proxy\"",
            "name = \"app\"",
            "duplicate service name",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        let e = parse("duet.toml", &text).expect_err(want);
        let all: Vec<&str> = e.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert!(all.iter().any(|m| m.contains(want)), "{want}: {all:?}");
    }
}

#[test]
fn tcp_balancer_parses_and_http_only_features_say_so() {
    let text = r#"[node]
name = "lb"

[[balancer]]
name = "db"
bind = "0.0.0.0:5432"
mode = "tcp"
algorithm = "leastconn"
backends = [{ address = "10.0.0.11:5432" }, { address = "10.0.0.12:5432", weight = 2 }]
check = { interval = "1s" }
"#;
    let cfg = parse("duet.toml", text).unwrap();
    let b = &cfg.balancer[0];
    assert_eq!(b.algorithm, BalancerAlgorithm::Leastconn);
    assert_eq!(b.backends[1].weight, 2);
    assert_eq!(b.check.as_ref().unwrap().fall, 3);
    assert_eq!(b.retries, 1);

    let http = text.replace("mode = \"tcp\"", "mode = \"http\"");
    assert!(parse("duet.toml", &http).is_ok());
    let checked = http.replace(
        "check = { interval = \"1s\" }",
        "check = { path = \"/h\", expect = \"204\" }",
    );
    let cfg = parse("duet.toml", &checked).unwrap();
    assert_eq!(
        cfg.balancer[0].check.as_ref().unwrap().expect_range(),
        Some((204, 204))
    );
    let e = err(&http.replace(
        "check = { interval = \"1s\" }",
        "check = { path = \"/h\", expect = \"300-200\" }",
    ));
    assert!(e.contains("duet.toml:10:33: expect \"300-200\""), "{e}");
    let hashed = |key: &str| {
        http.replace(
            "algorithm = \"leastconn\"",
            &format!("algorithm = \"hash\"\nhash_key = \"{key}\""),
        )
    };
    assert!(parse("duet.toml", &hashed("uri")).is_ok());
    assert!(parse("duet.toml", &hashed("header:X-User")).is_ok());
    let e = err(&hashed("header:"));
    assert!(e.contains("duet.toml:9:12: hash_key \"header:\""), "{e}");
    let e = err(&text.replace(
        "algorithm = \"leastconn\"",
        "algorithm = \"hash\"\nhash_key = \"uri\"",
    ));
    assert!(e.contains("tcp mode can only hash \"source\""), "{e}");
    let e = err(&text.replace("check = { interval = \"1s\" }", "check = { path = \"/h\" }"));
    assert!(e.contains("duet.toml:10:18: tcp checks connect"), "{e}");
    let e = err(&text.replace("weight = 2", "weight = 0"));
    assert!(e.contains("duet.toml:9:"), "{e}");
}

#[test]
fn routes_queue_and_tls_parse_and_are_checked() {
    let text = r#"[node]
name = "lb"

[[balancer]]
name = "web"
bind = "0.0.0.0:443"
backends = [{ address = "10.0.0.11:80", maxconn = 100 }]
queue = { size = 50, timeout = "2s" }
tls = { certificates = [{ cert = "/etc/duet/a.pem", key = "/etc/duet/a.key" }], hsts = "24h", redirect_from = "0.0.0.0:80" }

[[balancer.route]]
host = "*.example.com"
path = "/api/"
backends = [{ address = "10.0.0.21:80" }]
"#;
    let cfg = parse("duet.toml", text).unwrap();
    let b = &cfg.balancer[0];
    assert_eq!(b.backends[0].maxconn, 100);
    assert_eq!(b.queue.size, 50);
    assert_eq!(b.route[0].host.as_deref(), Some("*.example.com"));
    let tls = b.tls.as_ref().unwrap();
    assert!(tls.http2);
    assert_eq!(tls.hsts.as_ref().unwrap().0, Duration::from_secs(86_400));

    let e = err(&text.replace("path = \"/api/\"", "path = \"api\""));
    assert!(e.contains("duet.toml:13:8: route path \"api\""), "{e}");
    let e = err(&text.replace("\"*.example.com\"", "\"a b\""));
    assert!(e.contains("duet.toml:12:8: route host"), "{e}");
    let e = err(&text.replace(
        "backends = [{ address = \"10.0.0.21:80\" }]",
        "backends = []",
    ));
    assert!(e.contains("duet.toml:14:12: at least one backend"), "{e}");
    let e = err(&text.replace("0.0.0.0:80\"", "0.0.0.0:443\""));
    assert!(e.contains("redirect_from must differ from bind"), "{e}");
    let e = err(&text.replace(
        "bind = \"0.0.0.0:443\"",
        "bind = \"0.0.0.0:443\"\nmode = \"tcp\"",
    ));
    assert!(e.contains("tls termination needs mode = \"http\""), "{e}");
    assert!(e.contains("routes need mode = \"http\""), "{e}");
}

#[test]
fn heartbeat_and_witness_parse_and_are_checked() {
    let text = r#"[node]
name = "alpha"

[heartbeat]
interval = "50ms"
key_file = "/etc/duet/cluster.key"
links = [
  { local = "10.10.10.11:7946", peers = ["10.10.10.12:7946"] },
  { local = "192.168.100.1:7946", peers = ["192.168.100.2:7946"] },
]

[witness]
address = "10.10.10.20:7947"
"#;
    let cfg = parse("duet.toml", text).unwrap();
    let h = cfg.heartbeat.as_ref().unwrap();
    assert_eq!(h.misses, 5);
    assert_eq!(h.two_node_policy, TwoNodePolicy::Safe);
    assert_eq!(
        cfg.witness.as_ref().unwrap().lease.0,
        Duration::from_secs(2)
    );

    let e = err(&text.replace(
        "address = \"10.10.10.20:7947\"",
        "address = \"10.10.10.20:7947\"\nlease = \"1s\"",
    ));
    assert!(
        e.contains("duet.toml:14:9: the lease (1s) must be at least twice node.vip_lifetime (1s"),
        "{e}"
    );
    let e = err(&text.replace(
        "peers = [\"192.168.100.2:7946\"]",
        "peers = [\"192.168.100.2:7946\", \"192.168.100.3:7946\"]",
    ));
    assert!(e.contains("every link lists the same peers"), "{e}");
    let three = text.replace(
        "peers = [\"10.10.10.12:7946\"]",
        "peers = [\"10.10.10.12:7946\", \"10.10.10.13:7946\"]",
    );
    let e = err(&three.replace(
        "peers = [\"192.168.100.2:7946\"]",
        "peers = [\"192.168.100.2:7946\", \"192.168.100.3:7946\"]",
    ));
    assert!(
        e.contains("duet.toml:13:11: a witness serves two-node clusters"),
        "{e}"
    );
    let e = err(&text.replace("[heartbeat]", "[heartbeat]\ntwo_node_policy = \"yolo\""));
    assert!(e.contains("duet.toml:5:19"), "{e}");
}

#[test]
fn coordination_parses_and_is_checked() {
    let text = r#"[node]
name = "alpha"

[heartbeat]
key_file = "/etc/duet/cluster.key"
links = [{ local = "10.10.10.11:7946", peers = ["10.10.10.12:7946", "10.10.10.13:7946"] }]

[coordination]
backend = "etcd"
endpoints = ["http://10.10.10.21:2379", "https://[fd00::21]:2379/"]
"#;
    let e = err(text);
    assert!(
        e.contains("duet.toml:10:41: \"https://[fd00::21]:2379/\" is https: coordination.ca_file must name the CA"),
        "{e}"
    );
    let text = &format!("{text}ca_file = \"/etc/duet/etcd-ca.pem\"\n");
    let cfg = parse("duet.toml", text).unwrap();
    let c = cfg.coordination.as_ref().unwrap();
    assert_eq!(c.prefix, "/duet");
    assert_eq!(c.lease.0, Duration::from_secs(3));
    assert_eq!(
        crate::parse_endpoint(&c.endpoints[1]).unwrap(),
        crate::Endpoint {
            tls: true,
            host: "fd00::21".into(),
            port: 2379
        }
    );

    let e = err(&text.replace("http://10.10.10.21:2379", "10.10.10.21:2379"));
    assert!(
        e.contains("duet.toml:10:14: \"10.10.10.21:2379\": an endpoint starts with http://"),
        "{e}"
    );
    let e = err(&text.replace(
        "backend = \"etcd\"",
        "backend = \"etcd\"\nlease = \"2500ms\"",
    ));
    assert!(
        e.contains("etcd leases are whole seconds, at least 2s; got 2.5s"),
        "{e}"
    );
    let e = err(&text.replace(
        "backend = \"etcd\"",
        "backend = \"etcd\"\nprefix = \"duet/\"",
    ));
    assert!(e.contains("must start with '/'"), "{e}");
    let e = err(&text.replace("backend = \"etcd\"", "backend = \"consul\""));
    assert!(e.contains("duet.toml:9:11"), "{e}");
    let e = err(&format!(
        "{text}\n[witness]\naddress = \"10.10.10.20:7947\"\n"
    ));
    assert!(
        e.contains("use either [witness] or [coordination], not both"),
        "{e}"
    );
    let e = err(&text.replace(
        "backend = \"etcd\"",
        "backend = \"etcd\"\ncert_file = \"/c\"",
    ));
    assert!(e.contains("cert_file and key_file go together"), "{e}");
}

/// The issue's `[database]` contract, with the cluster it needs.
const DATABASE_SAMPLE: &str = r#"[node]
name = "alpha"

[heartbeat]
key_file = "/etc/duet/cluster.key"
links = [{ local = "10.10.10.11:7946", peers = ["10.10.10.12:7946"] }]

[witness]
address = "10.10.10.20:7947"

[database]
kind = "postgres"
listen = "10.10.10.11:5432"          # this node's server; peers learn it through the cluster
data_dir = "/var/lib/duet/pg"         # empty or missing on first start: bootstrap (below)
bin_dir = "/usr/lib/postgresql/15/bin"
os_user = "postgres"                  # OS user that owns data_dir and runs the server (default "postgres")
superuser = "postgres"                # database roles; both get the password from password_file
replication_user = "replicator"
password_file = "/etc/duet/db.secret" # first line = password; never logged
allow = ["10.10.10.0/24"]             # networks allowed in for any role with scram-sha-256 (peers always are)
synchronous = "on"                    # off | on | strict
maximum_lag_on_failover = "1MB"       # for synchronous = "off"
write_vip = { address = "10.10.10.15/24", interface = "eth0" }   # optional; lives where the primary is
parameters = { max_connections = "200" }                          # passed to postgresql.conf
"#;

#[test]
fn the_database_contract_parses_as_written_without_vrrp() {
    let cfg = parse("duet.toml", DATABASE_SAMPLE).expect("valid");
    let db = cfg.database.expect("[database]");
    assert_eq!(db.synchronous, SyncMode::On);
    assert_eq!(db.maximum_lag_on_failover, ByteSize(1 << 20));
    assert_eq!(db.write_vip.unwrap().address.prefix, 24);
    assert_eq!(db.parameters["max_connections"], "200");
    assert!(cfg.vrrp.is_empty());
}

#[test]
fn database_mistakes_point_at_the_key() {
    // No cluster at all.
    let text = DATABASE_SAMPLE.replace("[heartbeat]", "[unused]");
    let e = err(&text);
    assert!(e.contains("unknown field") || e.contains("unused"), "{e}");
    let alone = "[node]\nname = \"a\"\n[database]\nkind = \"postgres\"\nlisten = \"10.0.0.1:5432\"\ndata_dir = \"/d\"\npassword_file = \"/p\"\n";
    let e = err(alone);
    assert!(
        e.starts_with("duet.toml:4:8:") && e.contains("needs a cluster"),
        "{e}"
    );
    // A parameter duet manages; a bad network; a role name that would need quoting.
    let e = err(&DATABASE_SAMPLE.replace("max_connections", "synchronous_standby_names"));
    assert!(
        e.contains("synchronous_standby_names is set by duet"),
        "{e}"
    );
    let e = err(&DATABASE_SAMPLE.replace("10.10.10.0/24", "10.10.10.1/24"));
    assert!(e.contains("did you mean 10.10.10.0/24"), "{e}");
    let e = err(&DATABASE_SAMPLE.replace("\"replicator\"", "\"Rep-1\""));
    assert!(e.contains("role name \"Rep-1\""), "{e}");
    let e = err(&DATABASE_SAMPLE.replace("synchronous = \"on\"", "synchronous = \"yes\""));
    assert!(
        e.ends_with("`yes` is not one of `off`, `on`, `strict`"),
        "{e}"
    );
    // Two nodes without a witness: only under the safe policy.
    let text = DATABASE_SAMPLE
        .replace("[witness]\naddress = \"10.10.10.20:7947\"\n", "")
        .replace("links = [", "two_node_policy = \"available\"\nlinks = [");
    let e = err(&text);
    assert!(e.contains("needs two_node_policy = \"safe\""), "{e}");
}
