//! The cluster-wide part of a config: what every node of a cluster must agree on, as a
//! canonical TOML text (sorted keys) and its hash. Nodes exchange the hash in their
//! heartbeats; a difference is config drift (`duet status`, `duet diff-config --peer NODE`).
//!
//! Cluster-wide: each VRRP instance's name, vrid, version, advert interval, VIPs, accept
//! mode and checksum; the heartbeat's interval, misses, policy and number of links; the
//! witness's address and lease; the coordination settings but its files; the balancers but
//! their access logs; the services but their commands; the database's kind, synchronous
//! mode, lag limit, parameters and write VIP address. Everything else is this node's own
//! (its name, priorities, interfaces, addresses, tokens, scripts, hooks, file paths).

use crate::schema::Config;

/// The cluster-wide part of `cfg` as canonical TOML.
pub fn cluster_view(cfg: &Config) -> String {
    let Ok(toml::Value::Table(mut all)) = toml::Value::try_from(cfg) else {
        return String::new();
    };
    for key in ["node", "admin", "alerts", "track_script"] {
        all.remove(key);
    }
    let keep_only = |v: &mut toml::Value, keys: &[&str]| {
        if let toml::Value::Table(t) = v {
            t.retain(|k, _| keys.contains(&k));
        }
    };
    let drop = |v: &mut toml::Value, keys: &[&str]| {
        if let toml::Value::Table(t) = v {
            t.retain(|k, _| !keys.contains(&k));
        }
    };
    if let Some(toml::Value::Array(vrrp)) = all.get_mut("vrrp") {
        for v in vrrp.iter_mut() {
            keep_only(
                v,
                &[
                    "name",
                    "vrid",
                    "version",
                    "advert_interval",
                    "vips",
                    "accept",
                    "v3_checksum",
                ],
            );
        }
    }
    if let Some(hb) = all.get_mut("heartbeat") {
        let links = hb
            .get("links")
            .and_then(|l| l.as_array())
            .map_or(0, |l| l.len());
        keep_only(hb, &["interval", "misses", "two_node_policy"]);
        if let toml::Value::Table(t) = hb {
            t.insert("links".into(), toml::Value::Integer(links as i64));
        }
    }
    if let Some(w) = all.get_mut("witness") {
        drop(w, &["key_file"]);
    }
    if let Some(c) = all.get_mut("coordination") {
        drop(c, &["ca_file", "cert_file", "key_file"]);
    }
    if let Some(toml::Value::Array(bs)) = all.get_mut("balancer") {
        for b in bs.iter_mut() {
            drop(b, &["access_log"]);
        }
    }
    if let Some(toml::Value::Array(ss)) = all.get_mut("service") {
        for s in ss.iter_mut() {
            drop(s, &["start", "stop", "monitor"]);
        }
    }
    if let Some(db) = all.get_mut("database") {
        keep_only(
            db,
            &[
                "kind",
                "synchronous",
                "maximum_lag_on_failover",
                "parameters",
                "write_vip",
            ],
        );
        if let Some(w) = db.get_mut("write_vip") {
            keep_only(w, &["address"]);
        }
    }
    toml::to_string_pretty(&toml::Value::Table(all)).unwrap_or_default()
}

/// A 64-bit FNV-1a hash of a view: equal views, equal hashes (it detects drift; it is not
/// a security measure: heartbeats are authenticated already).
pub fn view_hash(view: &str) -> u64 {
    view.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, priority: u8, local: &str, peer: &str, backends: &str) -> String {
        format!(
            r#"[node]
name = "{name}"

[[vrrp]]
name = "web"
interface = "eth0"
vrid = 51
priority = {priority}
vips = ["10.0.0.100/24"]
unicast_peers = ["{peer}"]

[heartbeat]
key_file = "/etc/duet/cluster.key"
links = [{{ local = "{local}:7946", peers = ["{peer}:7946"] }}]

[[balancer]]
name = "web"
bind = "10.0.0.100:80"
access_log = "/var/log/duet/{name}.log"
backends = [{backends}]
"#
        )
    }

    #[test]
    fn per_node_settings_do_not_count_and_shared_ones_do() {
        let b = r#"{ address = "10.0.1.1:80" }"#;
        let alpha = crate::parse("a", &node("alpha", 150, "10.0.0.11", "10.0.0.12", b)).unwrap();
        let beta = crate::parse("b", &node("beta", 100, "10.0.0.12", "10.0.0.11", b)).unwrap();
        let (va, vb) = (cluster_view(&alpha), cluster_view(&beta));
        assert_eq!(
            va, vb,
            "names, priorities, addresses and log paths are the node's own"
        );
        assert_eq!(view_hash(&va), view_hash(&vb));
        assert!(va.contains("vrid = 51") && va.contains("links = 1"), "{va}");
        assert!(!va.contains("priority") && !va.contains("alpha"), "{va}");

        let more = r#"{ address = "10.0.1.1:80" }, { address = "10.0.1.2:80" }"#;
        let gamma = crate::parse("c", &node("beta", 100, "10.0.0.12", "10.0.0.11", more)).unwrap();
        let vc = cluster_view(&gamma);
        assert_ne!(view_hash(&va), view_hash(&vc));
        assert!(vc.contains("10.0.1.2:80"));
    }
}
