//! Rules that involve more than one value, and finding where in the file a value sits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use duet_vrrp::Version;
use toml::de::{DeTable, DeValue};

use crate::path;
use crate::schema::Config;

/// A step in the path to a value: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// A rule violation and where it is.
#[derive(Debug)]
pub(crate) struct Problem {
    pub path: Vec<Seg>,
    pub message: String,
}

/// Finds the span of a value by its path; falls back to the nearest existing parent.
pub(crate) struct Locator<'a> {
    root: Option<toml::Spanned<DeValue<'a>>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Locator<'a> {
        let root = DeTable::parse(text)
            .ok()
            .map(|t| toml::Spanned::new(t.span(), DeValue::Table(t.into_inner())));
        Locator { root }
    }

    pub fn span(&self, path: &[Seg]) -> Range<usize> {
        let Some(mut at) = self.root.as_ref() else {
            return 0..0;
        };
        for seg in path {
            let next = match seg {
                Seg::Key(k) => at.get_ref().get(k.as_str()),
                Seg::Index(i) => at.get_ref().get(*i),
            };
            match next {
                Some(v) => at = v,
                None => break,
            }
        }
        at.span()
    }
}

/// Checks every cross-value rule; returns all violations.
pub(crate) fn check(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |path: Vec<Seg>, message: String| out.push(Problem { path, message });

    if cfg.node.name.trim().is_empty() {
        bad(path!["node", "name"], "node name must not be empty".into());
    }
    check_names_and_ports(cfg, &mut bad);
    crate::database::check(cfg, &mut bad);
    crate::admin::check(cfg, &mut bad);
    crate::service::check(cfg, &mut bad);
    for (k, n) in cfg.node.admin_names.iter().enumerate() {
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            bad(
                path!["node", "admin_names", k],
                format!(
                    "admin name {n:?}: write a host name such as \"duet.example.net\" (letters, digits, '-' and '.', no port)"
                ),
            );
        }
    }
    let lifetime = cfg.node.vip_lifetime.0;
    if !lifetime.is_zero() && (lifetime.subsec_nanos() != 0 || lifetime > Duration::from_secs(3600))
    {
        bad(
            path!["node", "vip_lifetime"],
            "vip_lifetime must be whole seconds between 1s and 1h, or 0s for permanent VIPs".into(),
        );
    }

    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut vrids: BTreeMap<(&str, u8, bool), &str> = BTreeMap::new();
    for (i, v) in cfg.vrrp.iter().enumerate() {
        let at = |key: &str| path!["vrrp", i, key];
        if v.name.trim().is_empty() {
            bad(at("name"), "instance name must not be empty".into());
        } else if names.insert(&v.name, i).is_some() {
            bad(at("name"), format!("duplicate instance name {:?}", v.name));
        }
        if v.interface.trim().is_empty() {
            bad(at("interface"), "interface must not be empty".into());
        }
        if v.priority == 0 {
            bad(
                at("priority"),
                "priority must be 1..=255 (0 is reserved for a master that is leaving)".into(),
            );
        }
        // The same function the daemon builds its core with: what passes here lifts there.
        let version = match v.lift() {
            Ok(lifted) => Some(lifted.version),
            Err(problems) => {
                for (key, message) in problems {
                    bad(at(key), message);
                }
                match v.version {
                    2 => Some(Version::V2),
                    3 => Some(Version::V3),
                    _ => None,
                }
            }
        };
        if v.vips.is_empty() {
            bad(at("vips"), "at least one VIP is required".into());
        }
        let ipv6 = v.vips.first().is_some_and(|vip| vip.address.is_ipv6());
        for (j, vip) in v.vips.iter().enumerate() {
            if vip.address.is_ipv6() != ipv6 {
                bad(
                    path!["vrrp", i, "vips", j],
                    format!(
                        "VIP {vip} mixes address families; use one instance per family (RFC 9568 §5)"
                    ),
                );
            }
        }
        if ipv6 && version == Some(Version::V2) {
            bad(
                at("version"),
                "VRRPv2 is IPv4 only; IPv6 VIPs need version = 3".into(),
            );
        }
        if v.vips.len() > 255 {
            bad(at("vips"), "at most 255 VIPs per instance".into());
        }
        let family_ok = |a: &IpAddr| a.is_ipv6() == ipv6;
        for (j, peer) in v.unicast_peers.iter().enumerate() {
            if !family_ok(peer) {
                bad(
                    path!["vrrp", i, "unicast_peers", j],
                    format!("unicast peer {peer} is not in the VIPs' address family"),
                );
            }
        }
        if let Some(src) = v.source
            && !family_ok(&src)
        {
            bad(
                at("source"),
                format!("source {src} is not in the VIPs' address family"),
            );
        }
        if !v.vips.is_empty()
            && v.vrid != 0
            && let Some(other) = vrids.insert((&v.interface, v.vrid, ipv6), &v.name)
        {
            bad(
                at("vrid"),
                format!(
                    "vrid {} on {} is already used by instance {other:?}",
                    v.vrid, v.interface
                ),
            );
        }
        for (j, s) in v.track_scripts.iter().enumerate() {
            if !cfg.track_script.contains_key(s) {
                bad(
                    path!["vrrp", i, "track_scripts", j],
                    format!("unknown track script {s:?}; define it in [track_script.{s}]"),
                );
            }
        }
        for (j, t) in v.track_interfaces.iter().enumerate() {
            if t.name.trim().is_empty() {
                bad(
                    path!["vrrp", i, "track_interfaces", j],
                    "interface name must not be empty".into(),
                );
            }
        }
        if v.garp.count > 100 {
            bad(
                path!["vrrp", i, "garp", "count"],
                "garp count must be 0..=100".into(),
            );
        }
        if v.garp.interval.0 > Duration::from_secs(10) {
            bad(
                path!["vrrp", i, "garp", "interval"],
                "garp interval must be at most 10s".into(),
            );
        }
        if v.notify_timeout.0.is_zero() {
            bad(
                at("notify_timeout"),
                "notify_timeout must be above 0s".into(),
            );
        }
    }

    for (name, s) in &cfg.track_script {
        let at = |key: &str| path!["track_script", name.as_str(), key];
        if s.command.first().is_none_or(|c| c.is_empty()) {
            bad(at("command"), "command must name a program".into());
        }
        if s.interval.0.is_zero() {
            bad(at("interval"), "interval must be above 0s".into());
        }
        if s.timeout.0.is_zero() {
            bad(at("timeout"), "timeout must be above 0s".into());
        }
        if s.rise == 0 {
            bad(at("rise"), "rise must be at least 1".into());
        }
        if s.fall == 0 {
            bad(at("fall"), "fall must be at least 1".into());
        }
    }

    check_balancers(cfg, &mut bad);
    check_cluster(cfg, &mut bad);

    let mut grouped: BTreeSet<&str> = BTreeSet::new();
    for (name, g) in &cfg.sync_group {
        if g.instances.is_empty() {
            bad(
                path!["sync_group", name.as_str(), "instances"],
                "a sync group needs at least one instance".into(),
            );
        }
        for (j, inst) in g.instances.iter().enumerate() {
            let at = path!["sync_group", name.as_str(), "instances", j];
            if !names.contains_key(inst.as_str()) {
                bad(at, format!("unknown vrrp instance {inst:?}"));
            } else if !grouped.insert(inst) {
                bad(
                    at,
                    format!("instance {inst:?} is already in another sync group"),
                );
            }
        }
    }
    out
}

/// Names end up in logs, hooks' environment and metric labels: no control characters. Port 0
/// asks the kernel for any port, which nobody could then find: refused wherever duet binds or
/// connects.
fn check_names_and_ports(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    let mut name = |path: Vec<Seg>, what: &str, value: &str| {
        if value.chars().any(char::is_control) {
            bad(
                path,
                format!(
                    "{what} {value:?} holds a control character (a line break, a tab…): names must be plain text"
                ),
            );
        }
    };
    name(path!["node", "name"], "node name", &cfg.node.name);
    for (i, v) in cfg.vrrp.iter().enumerate() {
        name(path!["vrrp", i, "name"], "instance name", &v.name);
    }
    for (i, b) in cfg.balancer.iter().enumerate() {
        name(path!["balancer", i, "name"], "balancer name", &b.name);
        for (r, route) in b.route.iter().enumerate() {
            if let Some(host) = &route.host {
                name(path!["balancer", i, "route", r, "host"], "route host", host);
            }
        }
    }
    for key in cfg.track_script.keys() {
        name(
            path!["track_script", key.as_str()],
            "track script name",
            key,
        );
    }
    for key in cfg.sync_group.keys() {
        name(path!["sync_group", key.as_str()], "sync group name", key);
    }
    let mut port = |path: Vec<Seg>, addr: &std::net::SocketAddr| {
        if addr.port() == 0 {
            bad(
                path,
                format!("{addr} has port 0: give the port (\"{}:80\")", addr.ip()),
            );
        }
    };
    port(path!["node", "admin"], &cfg.node.admin);
    for (i, b) in cfg.balancer.iter().enumerate() {
        port(path!["balancer", i, "bind"], &b.bind);
        if let Some(r) = b.tls.as_ref().and_then(|t| t.redirect_from) {
            port(path!["balancer", i, "tls", "redirect_from"], &r);
        }
        for (j, be) in b.backends.iter().enumerate() {
            port(path!["balancer", i, "backends", j, "address"], &be.address);
        }
        for (r, route) in b.route.iter().enumerate() {
            for (j, be) in route.backends.iter().enumerate() {
                port(
                    path!["balancer", i, "route", r, "backends", j, "address"],
                    &be.address,
                );
            }
        }
    }
    if let Some(hb) = &cfg.heartbeat {
        for (i, l) in hb.links.iter().enumerate() {
            port(path!["heartbeat", "links", i, "local"], &l.local);
            for (j, p) in l.peers.iter().enumerate() {
                port(path!["heartbeat", "links", i, "peers", j], p);
            }
        }
    }
    if let Some(w) = &cfg.witness {
        port(path!["witness", "address"], &w.address);
    }
}

fn check_balancers(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    use crate::schema::BalancerMode;
    let mut names = BTreeSet::new();
    let mut binds = BTreeSet::new();
    for (i, b) in cfg.balancer.iter().enumerate() {
        let at = |key: &str| path!["balancer", i, key];
        if b.name.trim().is_empty() {
            bad(at("name"), "balancer name must not be empty".into());
        } else if !names.insert(b.name.as_str()) {
            bad(at("name"), format!("duplicate balancer name {:?}", b.name));
        }
        if !binds.insert(b.bind) {
            bad(
                at("bind"),
                format!("{} is already bound by another balancer", b.bind),
            );
        }
        check_backends(&b.backends, path!["balancer", i], bad);
        for (r, route) in b.route.iter().enumerate() {
            let at = |key: &str| path!["balancer", i, "route", r, key];
            if b.mode == BalancerMode::Tcp {
                bad(at("backends"), "routes need mode = \"http\"".into());
            }
            check_backends(&route.backends, path!["balancer", i, "route", r], bad);
            if !route.path.starts_with('/') || route.path.contains(char::is_whitespace) {
                bad(
                    at("path"),
                    format!(
                        "route path {:?} must start with / and hold no spaces",
                        route.path
                    ),
                );
            }
            if let Some(h) = &route.host {
                let name = h.strip_prefix("*.").unwrap_or(h);
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
                if !ok {
                    bad(
                        at("host"),
                        format!(
                            "route host {h:?}: write a name such as \"example.com\" or \"*.example.com\""
                        ),
                    );
                }
            }
        }
        match (b.mode, b.hash_key.as_deref()) {
            (_, None | Some("source")) => {}
            (BalancerMode::Tcp, Some(k)) => bad(
                at("hash_key"),
                format!("hash_key {k:?}: tcp mode can only hash \"source\""),
            ),
            (BalancerMode::Http, Some("uri")) => {}
            (BalancerMode::Http, Some(k)) => match k.strip_prefix("header:") {
                Some(name) if is_token(name) => {}
                _ => bad(
                    at("hash_key"),
                    format!("hash_key {k:?}: write \"source\", \"uri\" or \"header:NAME\""),
                ),
            },
        }
        if b.queue.timeout.0.is_zero() {
            bad(
                path!["balancer", i, "queue", "timeout"],
                "queue timeout must be above 0s".into(),
            );
        }
        if let Some(tls) = &b.tls {
            let at = |key: &str| path!["balancer", i, "tls", key];
            if b.mode == BalancerMode::Tcp {
                bad(
                    at("certificates"),
                    "tls termination needs mode = \"http\"".into(),
                );
            }
            if tls.certificates.is_empty() {
                bad(
                    at("certificates"),
                    "at least one certificate is required".into(),
                );
            }
            if tls.redirect_from == Some(b.bind) {
                bad(
                    at("redirect_from"),
                    "redirect_from must differ from bind".into(),
                );
            } else if let Some(r) = tls.redirect_from
                && !binds.insert(r)
            {
                bad(
                    at("redirect_from"),
                    format!("{r} is already bound by another balancer"),
                );
            }
        }
        if let Some(c) = &b.check {
            let at = |key: &str| path!["balancer", i, "check", key];
            match (b.mode, &c.path) {
                (BalancerMode::Tcp, Some(_)) => bad(
                    at("path"),
                    "tcp checks connect; path is for http mode".into(),
                ),
                (BalancerMode::Http, Some(p))
                    if !p.starts_with('/') || p.contains(char::is_whitespace) =>
                {
                    bad(
                        at("path"),
                        format!("check path {p:?} must start with / and hold no spaces"),
                    )
                }
                _ => {}
            }
            if c.expect_range().is_none() {
                bad(
                    at("expect"),
                    format!(
                        "expect {:?}: write a status range such as \"200-399\" or one code",
                        c.expect
                    ),
                );
            }
            if c.interval.0.is_zero() {
                bad(at("interval"), "interval must be above 0s".into());
            }
            if c.timeout.0.is_zero() {
                bad(at("timeout"), "timeout must be above 0s".into());
            }
            if c.rise == 0 || c.fall == 0 {
                bad(at("rise"), "rise and fall must be at least 1".into());
            }
        }
        for (k, s) in b.passive.on_status.iter().enumerate() {
            if crate::schema::status_range(s).is_none() {
                bad(
                    path!["balancer", i, "passive", "on_status", k],
                    format!(
                        "on_status {s:?}: write a status such as \"503\" or a range such as \"500-599\""
                    ),
                );
            }
        }
        if !(1024..=1024 * 1024).contains(&b.max_header_bytes) {
            bad(
                at("max_header_bytes"),
                "max_header_bytes must be 1024..=1048576".into(),
            );
        }
        if b.access_log.is_empty() {
            bad(
                at("access_log"),
                "access_log: \"off\", \"stderr\" or a file path".into(),
            );
        }
        if let Some(sticky) = &b.sticky {
            let token = is_token(&sticky.cookie);
            if b.mode == BalancerMode::Tcp {
                bad(
                    path!["balancer", i, "sticky"],
                    "sticky cookies need mode = \"http\"".into(),
                );
            } else if !token {
                bad(
                    path!["balancer", i, "sticky", "cookie"],
                    format!("cookie name {:?} is not a valid token", sticky.cookie),
                );
            }
        }
        let t = &b.timeouts;
        for (key, d) in [
            ("connect", t.connect.0),
            ("client", t.client.0),
            ("server", t.server.0),
            ("idle", t.idle.0),
        ] {
            if d.is_zero() {
                bad(
                    path!["balancer", i, "timeouts", key],
                    format!("{key} timeout must be above 0s"),
                );
            }
        }
    }
}

/// An HTTP token (RFC 9110 §5.6.2): header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// A pool's backends: at least one, weights 1..=256, no address twice.
fn check_backends(
    backends: &[crate::schema::BackendConfig],
    at: Vec<Seg>,
    bad: &mut impl FnMut(Vec<Seg>, String),
) {
    let under = |more: Vec<Seg>| at.iter().cloned().chain(more).collect::<Vec<Seg>>();
    if backends.is_empty() {
        bad(
            under(path!["backends"]),
            "at least one backend is required".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for (j, be) in backends.iter().enumerate() {
        if !(1..=256).contains(&be.weight) {
            bad(
                under(path!["backends", j, "weight"]),
                "weight must be 1..=256".into(),
            );
        }
        if !seen.insert(be.address) {
            bad(
                under(path!["backends", j, "address"]),
                format!("backend {} is listed twice", be.address),
            );
        }
    }
}

fn check_coordination(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    let Some(c) = &cfg.coordination else {
        return;
    };
    let at = |key: &str| path!["coordination", key];
    if cfg.heartbeat.is_none() {
        bad(
            at("backend"),
            "[coordination] needs [heartbeat] (peers still report their state and priority over it)".into(),
        );
    }
    if cfg.witness.is_some() {
        bad(
            at("backend"),
            "use either [witness] or [coordination], not both".into(),
        );
    }
    if c.endpoints.is_empty() {
        bad(
            at("endpoints"),
            "at least one etcd endpoint is required".into(),
        );
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        match crate::schema::parse_endpoint(e) {
            Err(why) => bad(path!["coordination", "endpoints", i], why),
            Ok(ep) if ep.tls && c.ca_file.is_none() => bad(
                path!["coordination", "endpoints", i],
                format!(
                    "{e:?} is https: coordination.ca_file must name the CA that signs etcd's certificate"
                ),
            ),
            Ok(_) => {}
        }
    }
    if !c.prefix.starts_with('/') || c.prefix.ends_with('/') {
        bad(
            at("prefix"),
            format!(
                "the prefix {:?} must start with '/' and not end with one",
                c.prefix
            ),
        );
    }
    let lease = c.lease.0;
    let lifetime = cfg.node.vip_lifetime.0;
    if lease.subsec_nanos() != 0 || lease < Duration::from_secs(2) {
        bad(
            at("lease"),
            format!(
                "etcd leases are whole seconds, at least 2s; got {}",
                duet_time::format_duration(lease)
            ),
        );
    } else if lifetime.is_zero() || lease < lifetime * 2 {
        bad(
            at("lease"),
            format!(
                "the lease ({}) must be at least twice node.vip_lifetime ({}, and not 0s): a lease counts only while it outlasts the VIP's lifetime (so a frozen node's VIP expires before another node can take over), and renewals need the rest",
                duet_time::format_duration(lease),
                duet_time::format_duration(lifetime)
            ),
        );
    }
    if c.cert_file.is_some() != c.key_file.is_some() {
        bad(
            at(if c.cert_file.is_some() {
                "cert_file"
            } else {
                "key_file"
            }),
            "cert_file and key_file go together".into(),
        );
    }
}

fn check_cluster(cfg: &Config, bad: &mut impl FnMut(Vec<Seg>, String)) {
    check_coordination(cfg, bad);
    if let Some(h) = &cfg.heartbeat {
        let at = |key: &str| path!["heartbeat", key];
        if h.interval.0 < Duration::from_millis(10) {
            bad(
                at("interval"),
                "heartbeat interval must be at least 10ms".into(),
            );
        }
        if h.misses == 0 {
            bad(at("misses"), "misses must be at least 1".into());
        }
        if h.links.is_empty() {
            bad(
                at("links"),
                "at least one link is required (two or more are recommended)".into(),
            );
        }
        let peers = h.links.first().map_or(0, |l| l.peers.len());
        let mut locals = BTreeSet::new();
        for (i, l) in h.links.iter().enumerate() {
            if l.peers.is_empty() {
                bad(
                    path!["heartbeat", "links", i, "peers"],
                    "a link needs at least one peer".into(),
                );
            } else if l.peers.len() != peers {
                bad(
                    path!["heartbeat", "links", i, "peers"],
                    format!(
                        "every link lists the same peers in the same order: link 0 has {peers}, this one {}",
                        l.peers.len()
                    ),
                );
            }
            if !locals.insert(l.local) {
                bad(
                    path!["heartbeat", "links", i, "local"],
                    format!("{} is used by another link", l.local),
                );
            }
        }
    }
    if let Some(w) = &cfg.witness {
        let at = |key: &str| path!["witness", key];
        match &cfg.heartbeat {
            None => bad(
                at("address"),
                "a witness needs [heartbeat] (it breaks ties between two nodes)".into(),
            ),
            Some(h) if h.links.first().is_some_and(|l| l.peers.len() != 1) => bad(
                at("address"),
                "a witness serves two-node clusters: each heartbeat link must list exactly one peer".into(),
            ),
            Some(_) => {}
        }
        let lifetime = cfg.node.vip_lifetime.0;
        if lifetime.is_zero() || w.lease.0 < lifetime * 2 {
            bad(
                at("lease"),
                format!(
                    "the lease ({}) must be at least twice node.vip_lifetime ({}, and not 0s): a lease counts only while it outlasts the VIP's lifetime (so a frozen node's VIP expires before another node can take over), and renewals need the rest",
                    duet_time::format_duration(w.lease.0),
                    duet_time::format_duration(lifetime)
                ),
            );
        }
    }
}
