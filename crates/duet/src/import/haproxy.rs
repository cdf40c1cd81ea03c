//! haproxy.cfg to duet.toml: every `frontend` and `listen` becomes a `[[balancer]]` with its
//! `default_backend`'s servers, `use_backend … if` host and path ACLs become routes, `bind …
//! ssl crt` becomes TLS (with the plain bind as the https redirect when the config redirects
//! it), and `balance`, `check inter rise fall`, `weight`, `maxconn`, `option httpchk`,
//! `http-check expect`, `cookie … insert`, timeouts and `retries` carry over. `defaults` apply
//! as HAProxy applies them.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Imported, q};

/// One line: its number and words (quotes and backslashes as HAProxy reads them).
#[derive(Debug, Clone)]
struct Line {
    n: usize,
    words: Vec<String>,
}

impl Line {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn text(&self) -> String {
        self.words.join(" ")
    }
}

fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    cur.push(d);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// A section: its kind (`frontend`, …), name, header line and body.
#[derive(Debug, Clone)]
struct Section {
    kind: String,
    name: String,
    line: Line,
    body: Vec<Line>,
}

fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = Line {
            n: i + 1,
            words: words(raw),
        };
        if line.words.is_empty() {
            continue;
        }
        let starts = !raw.starts_with([' ', '\t'])
            && matches!(
                line.key(),
                "global"
                    | "defaults"
                    | "frontend"
                    | "backend"
                    | "listen"
                    | "resolvers"
                    | "peers"
                    | "userlist"
                    | "mailers"
                    | "cache"
                    | "program"
                    | "http-errors"
                    | "ring"
            );
        if starts {
            out.push(Section {
                kind: line.key().to_string(),
                name: line.arg(1).unwrap_or_default().to_string(),
                line,
                body: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.body.push(line);
        }
    }
    out
}

/// HAProxy time: `5000` (ms), `5s`, `1m`, `500ms`, `1h` → duet duration text.
fn time(v: &str) -> Option<String> {
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        "us" => n / 1000,
        _ => return None,
    };
    Some(super::millis(ms))
}

/// Settings `defaults` and a proxy share.
#[derive(Debug, Clone, Default)]
struct Common {
    mode: Option<String>,
    balance: Option<(String, Option<String>)>,
    timeouts: BTreeMap<&'static str, String>,
    check_timeout: Option<String>,
    queue_timeout: Option<String>,
    retries: Option<u64>,
    httpchk: Option<String>,
    expect: Option<String>,
}

impl Common {
    /// Takes `l` if it is a shared setting; `false` otherwise.
    fn take(&mut self, l: &Line, out: &mut Imported) -> bool {
        match (l.key(), l.arg(1)) {
            ("mode", Some(m)) => self.mode = Some(m.to_string()),
            ("balance", Some(b)) => {
                self.balance = Some(match b {
                    "roundrobin" | "static-rr" => ("roundrobin".into(), None),
                    "leastconn" => ("leastconn".into(), None),
                    "random" => ("random".into(), None),
                    "source" => ("hash".into(), Some("source".into())),
                    "uri" => ("hash".into(), Some("uri".into())),
                    h if h.starts_with("hdr(") && h.ends_with(')') => (
                        "hash".into(),
                        Some(format!("header:{}", &h[4..h.len() - 1])),
                    ),
                    _ => {
                        out.note(l.n, l.text(), "no such algorithm in duet: round robin");
                        ("roundrobin".into(), None)
                    }
                });
            }
            ("timeout", Some(which)) => {
                let Some(v) = l.arg(2).and_then(time) else {
                    out.note(l.n, l.text(), "unreadable time");
                    return true;
                };
                match which {
                    "connect" => {
                        self.timeouts.insert("connect", v);
                    }
                    "client" => {
                        self.timeouts.insert("client", v);
                    }
                    "server" => {
                        self.timeouts.insert("server", v);
                    }
                    "http-keep-alive" => {
                        self.timeouts.insert("idle", v);
                    }
                    "check" => self.check_timeout = Some(v),
                    "queue" => self.queue_timeout = Some(v),
                    _ => out.note(l.n, l.text(), "no such timeout in duet"),
                }
            }
            ("retries", Some(n)) => self.retries = n.parse().ok(),
            ("option", Some("httpchk")) => {
                // option httpchk [METHOD] URI [VERSION]
                let uri = match l.words.len() {
                    2 => "/",
                    3 => l.arg(2).unwrap_or("/"),
                    _ => l.arg(3).unwrap_or("/"),
                };
                if l.words.len() > 3 && l.arg(2) != Some("GET") {
                    out.note(l.n, l.text(), "checks use GET");
                }
                self.httpchk = Some(uri.to_string());
            }
            ("http-check", Some("send")) => {
                if let Some(i) = l.words.iter().position(|w| w == "uri") {
                    self.httpchk = l.arg(i + 1).map(String::from);
                }
            }
            ("http-check", Some("expect")) => match (l.arg(2), l.arg(3)) {
                (Some("status"), Some(code)) => self.expect = Some(code.replace(':', "-")),
                _ => out.note(l.n, l.text(), "only status expectations are checked"),
            },
            _ => return false,
        }
        true
    }
}

/// A server line.
#[derive(Debug, Clone)]
struct Server {
    line: usize,
    address: String,
    weight: Option<u64>,
    maxconn: Option<u64>,
    check: bool,
    inter: Option<String>,
    rise: Option<u64>,
    fall: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Backend {
    common: Common,
    servers: Vec<Server>,
    cookie: Option<String>,
}

/// A server line's settings; `None` (with a note) when it cannot be a duet backend.
fn server(l: &Line, out: &mut Imported) -> Option<Server> {
    let addr = l.arg(2)?;
    let address = match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            let ip = host.trim_matches(['[', ']']);
            if ip.parse::<std::net::IpAddr>().is_err() {
                out.note(
                    l.n,
                    l.text(),
                    "host names are not resolved: write the server's address",
                );
                return None;
            }
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        }
        _ => {
            out.note(
                l.n,
                l.text(),
                "a server without an ip:port is not translated",
            );
            return None;
        }
    };
    let mut s = Server {
        line: l.n,
        address,
        weight: None,
        maxconn: None,
        check: false,
        inter: None,
        rise: None,
        fall: None,
    };
    let mut i = 3;
    while i < l.words.len() {
        let w = l.words[i].as_str();
        let v = l.arg(i + 1);
        match w {
            "check" => s.check = true,
            "backup" => {
                out.note(
                    l.n,
                    l.text(),
                    "no backup servers in duet: left out (add it as a normal backend, or keep it drained)",
                );
                return None;
            }
            "weight" => {
                s.weight = v.and_then(|v| v.parse().ok());
                i += 1;
            }
            "maxconn" => {
                s.maxconn = v.and_then(|v| v.parse().ok());
                i += 1;
            }
            "inter" => {
                s.inter = v.and_then(time);
                i += 1;
            }
            "rise" => {
                s.rise = v.and_then(|v| v.parse().ok());
                i += 1;
            }
            "fall" => {
                s.fall = v.and_then(|v| v.parse().ok());
                i += 1;
            }
            "cookie" => i += 1,
            "ssl" | "verify" | "ca-file" | "sni" | "alpn" => {
                out.note(
                    l.n,
                    format!("server … {w}"),
                    "duet speaks plain HTTP or TCP to backends",
                );
                if w != "ssl" {
                    i += 1;
                }
            }
            _ => {
                out.note(l.n, format!("server … {w}"), "server option not translated");
            }
        }
        i += 1;
    }
    if s.weight == Some(0) {
        out.note(
            l.n,
            l.text(),
            "weight 0 (no new traffic): imported with weight 1; drain it with the admin API",
        );
        s.weight = Some(1);
    }
    Some(s)
}

/// One condition of `use_backend … if`: (host, path) it matches.
#[derive(Debug, Clone, Default, PartialEq)]
struct Match {
    host: Option<String>,
    path: Option<String>,
}

/// An ACL's criterion, when duet can route by it.
fn acl_match(words: &[String]) -> Option<Vec<Match>> {
    let fetch = words.first()?.as_str();
    let values: Vec<&String> = words[1..].iter().filter(|w| !w.starts_with('-')).collect();
    if values.is_empty() {
        return None;
    }
    let each = |f: &dyn Fn(&str) -> Match| Some(values.iter().map(|v| f(v)).collect());
    match fetch {
        "hdr(host)" | "req.hdr(host)" => each(&|v| Match {
            host: Some(v.split(':').next().unwrap_or(v).to_string()),
            path: None,
        }),
        "hdr_end(host)" | "hdr_dom(host)" => each(&|v| Match {
            host: Some(format!("*.{}", v.trim_start_matches('.'))),
            path: None,
        }),
        "path_beg" | "path" => each(&|v| Match {
            host: None,
            path: Some(v.to_string()),
        }),
        _ => None,
    }
}

struct Frontend<'a> {
    section: &'a Section,
    common: Common,
    binds: Vec<(Line, String, Vec<String>)>,
    default_backend: Option<String>,
    uses: Vec<(Line, String, Vec<String>)>,
    acls: BTreeMap<String, (Line, Vec<String>)>,
    redirect_https: bool,
    own: Backend,
}

/// Translates a haproxy.cfg.
pub fn import(text: &str) -> Result<Imported, String> {
    let mut out = Imported::default();
    let all = sections(text);
    let mut defaults = Common::default();
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    let mut frontends = Vec::new();
    let mut node = None;
    for s in &all {
        match s.kind.as_str() {
            "global" => {
                for l in &s.body {
                    match l.key() {
                        "node" => node = l.arg(1).map(String::from),
                        _ => out.note(l.n, l.text(), "global setting without a duet equivalent"),
                    }
                }
            }
            "defaults" => {
                let mut d = defaults.clone();
                for l in &s.body {
                    if !d.take(l, &mut out) && !ignorable(l) {
                        out.note(l.n, l.text(), explain(l));
                    }
                }
                defaults = d;
            }
            "backend" => {
                let mut b = Backend {
                    common: defaults.clone(),
                    ..Backend::default()
                };
                backend_lines(&s.body, &mut b, &mut out, true);
                backends.insert(s.name.clone(), b);
            }
            "frontend" | "listen" => frontends.push((s, defaults.clone())),
            _ => out.note(
                s.line.n,
                s.line.text(),
                "section without a duet equivalent: not translated",
            ),
        }
    }
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Imported from haproxy.cfg by `duet import haproxy`; check it with `duet check`.\n\n[node]\nname = {}",
        q(node.as_deref().unwrap_or("lb1"))
    );
    if node.is_none() {
        out.note(
            0,
            "node",
            "no `node` in global: the node is named \"lb1\"; name it",
        );
    }
    for (s, d) in frontends {
        let mut f = Frontend {
            section: s,
            common: d.clone(),
            binds: Vec::new(),
            default_backend: None,
            uses: Vec::new(),
            acls: BTreeMap::new(),
            redirect_https: false,
            own: Backend {
                common: d,
                ..Backend::default()
            },
        };
        for l in &s.body {
            frontend_line(l, &mut f, &mut out);
        }
        if s.kind == "listen" {
            let body = s.body.clone();
            backend_lines(&body, &mut f.own, &mut out, false);
            if !f.own.servers.is_empty() {
                f.default_backend = Some(String::new());
            }
        }
        toml.push_str(&balancer(&f, &backends, &mut out));
    }
    out.toml = toml;
    out.notes.sort_by_key(|n| n.line);
    Ok(out)
}

/// Why a line duet does not translate is left out, when there is more to say than "not
/// translated".
fn explain(l: &Line) -> &'static str {
    match (l.key(), l.arg(1)) {
        ("option", Some("httplog" | "tcplog")) => {
            "access_log = \"stderr\" (or a path) writes one JSON line per request"
        }
        ("maxconn", _) => {
            "no frontend connection limit: backends' maxconn and the queue limit the load"
        }
        ("stats", _) => {
            "no stats page: the dashboard at the admin address and /metrics show the same"
        }
        ("http-request" | "http-response", _) => {
            "no header rules: duet adds X-Forwarded-For, X-Forwarded-Proto and Forwarded itself"
        }
        _ => "not translated",
    }
}

/// Lines that change nothing duet does differently.
fn ignorable(l: &Line) -> bool {
    matches!(
        (l.key(), l.arg(1)),
        (
            "option",
            Some("forwardfor" | "http-server-close" | "http-keep-alive" | "redispatch")
        ) | ("log", _)
            | ("option", Some("dontlognull"))
    )
}

fn backend_lines(body: &[Line], b: &mut Backend, out: &mut Imported, report: bool) {
    for l in body {
        if b.common.take(l, out) {
            continue;
        }
        match l.key() {
            "server" => b.servers.extend(server(l, out)),
            "cookie" => match (l.arg(1), l.arg(2)) {
                (Some(name), Some("insert")) => b.cookie = Some(name.to_string()),
                _ => out.note(
                    l.n,
                    l.text(),
                    "only inserted cookies: sticky = { cookie = NAME }",
                ),
            },
            "default-server" => out.note(
                l.n,
                l.text(),
                "write these on each server line (or in the balancer's check)",
            ),
            _ if ignorable(l) => {}
            _ if report => out.note(l.n, l.text(), explain(l)),
            _ => {}
        }
    }
}

fn frontend_line(l: &Line, f: &mut Frontend<'_>, out: &mut Imported) {
    if f.common.take(l, out) {
        return;
    }
    let listen = f.section.kind == "listen";
    match l.key() {
        "bind" => {
            let addr = l.arg(1).unwrap_or_default();
            let addr = match addr.rsplit_once(':') {
                Some(("" | "*", port)) => format!("0.0.0.0:{port}"),
                Some(("::" | "[::]", port)) => format!("[::]:{port}"),
                _ => addr.to_string(),
            };
            let mut crts = Vec::new();
            let mut i = 2;
            while i < l.words.len() {
                match l.words[i].as_str() {
                    "crt" => {
                        crts.extend(l.arg(i + 1).map(String::from));
                        i += 1;
                    }
                    "ssl" => {}
                    "alpn" => i += 1,
                    other => out.note(l.n, format!("bind … {other}"), "bind option not translated"),
                }
                i += 1;
            }
            f.binds.push((l.clone(), addr, crts));
        }
        "default_backend" => f.default_backend = l.arg(1).map(String::from),
        "use_backend" => {
            let cond: Vec<String> = l.words.iter().skip(2).cloned().collect();
            f.uses
                .push((l.clone(), l.arg(1).unwrap_or_default().to_string(), cond));
        }
        "acl" => {
            if let Some(name) = l.arg(1) {
                f.acls
                    .insert(name.to_string(), (l.clone(), l.words[2..].to_vec()));
            }
        }
        "http-request" | "redirect"
            if l.words.iter().any(|w| w == "scheme")
                && l.words.iter().any(|w| w == "https")
                && l.words.iter().any(|w| w.contains("ssl_fc")) =>
        {
            f.redirect_https = true;
        }
        "server" | "cookie" | "default-server" if listen => {}
        _ if ignorable(l) => {}
        _ => out.note(l.n, l.text(), explain(l)),
    }
}

/// The `[[balancer]]` for a frontend or listen section.
fn balancer(f: &Frontend<'_>, backends: &BTreeMap<String, Backend>, out: &mut Imported) -> String {
    let s = f.section;
    let lookup = |name: &str| -> Option<&Backend> {
        if name.is_empty() {
            Some(&f.own)
        } else {
            backends.get(name)
        }
    };
    let Some(default) = f.default_backend.as_deref() else {
        out.note(
            s.line.n,
            s.line.text(),
            "no default_backend (or servers): not translated",
        );
        return String::new();
    };
    let Some(main) = lookup(default) else {
        out.note(
            s.line.n,
            s.line.text(),
            format!("backend {default:?} does not exist"),
        );
        return String::new();
    };
    let mode = main
        .common
        .mode
        .clone()
        .or_else(|| f.common.mode.clone())
        .unwrap_or_else(|| "http".into());
    // The TLS bind, and the plain one it redirects from.
    let tls_bind = f.binds.iter().find(|(_, _, crts)| !crts.is_empty());
    let plain: Vec<_> = f
        .binds
        .iter()
        .filter(|(_, _, crts)| crts.is_empty())
        .collect();
    let (bind, redirect) = match (tls_bind, plain.as_slice()) {
        (Some(t), [p]) if f.redirect_https => (t, Some(p.1.clone())),
        (Some(t), rest) => {
            for p in rest {
                out.note(
                    p.0.n,
                    p.0.text(),
                    "one listener per balancer: make another balancer for it",
                );
            }
            (t, None)
        }
        (None, [first, rest @ ..]) => {
            for p in rest {
                out.note(
                    p.0.n,
                    p.0.text(),
                    "one listener per balancer: make another balancer for it",
                );
            }
            (*first, None)
        }
        (None, []) => {
            out.note(s.line.n, s.line.text(), "no bind: not translated");
            return String::new();
        }
    };
    let mut t = format!(
        "\n[[balancer]]\nname = {}\nbind = {}\nmode = {}\n",
        q(&s.name),
        q(&bind.1),
        q(&mode)
    );
    if let Some((algo, key)) = &main.common.balance {
        let _ = writeln!(t, "algorithm = {}", q(algo));
        if let Some(k) = key {
            let _ = writeln!(t, "hash_key = {}", q(k));
        }
    }
    let _ = writeln!(t, "backends = {}", servers(&main.servers));
    if let Some(r) = main.common.retries {
        let _ = writeln!(t, "retries = {r}");
    }
    // Checks: HAProxy sets them per server, duet per balancer (the first checked server's).
    let checked: Vec<&Server> = main.servers.iter().filter(|s| s.check).collect();
    if let Some(first) = checked.first() {
        let mut parts = Vec::new();
        if mode == "http"
            && let Some(p) = &main.common.httpchk
        {
            parts.push(format!("path = {}", q(p)));
            if let Some(e) = &main.common.expect {
                parts.push(format!("expect = {}", q(e)));
            }
        }
        parts.push(format!(
            "interval = {}",
            first.inter.clone().unwrap_or_else(|| "\"2s\"".into())
        ));
        if let Some(to) = &main.common.check_timeout {
            parts.push(format!("timeout = {to}"));
        }
        parts.push(format!("rise = {}", first.rise.unwrap_or(2)));
        parts.push(format!("fall = {}", first.fall.unwrap_or(3)));
        let _ = writeln!(t, "check = {{ {} }}", parts.join(", "));
        for other in main.servers.iter().filter(|x| {
            x.check != first.check
                || x.inter != first.inter
                || x.rise != first.rise
                || x.fall != first.fall
        }) {
            out.note(
                other.line,
                format!("server {}", other.address),
                "checks are per balancer in duet: this server is checked like the first checked one",
            );
        }
    }
    let timeouts: Vec<String> = main
        .common
        .timeouts
        .iter()
        .chain(f.common.timeouts.iter())
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !timeouts.is_empty() {
        let _ = writeln!(t, "timeouts = {{ {} }}", timeouts.join(", "));
    }
    if let Some(qt) = &main.common.queue_timeout {
        let _ = writeln!(t, "queue = {{ timeout = {qt} }}");
    }
    if let Some(c) = &main.cookie {
        let _ = writeln!(t, "sticky = {{ cookie = {} }}", q(c));
    }
    if !bind.2.is_empty() {
        let certs: Vec<String> = bind
            .2
            .iter()
            .map(|p| format!("{{ cert = {}, key = {} }}", q(p), q(p)))
            .collect();
        let _ = write!(t, "tls = {{ certificates = [{}]", certs.join(", "));
        if let Some(r) = redirect {
            let _ = write!(t, ", redirect_from = {}", q(&r));
        }
        t.push_str(" }\n");
    }
    // use_backend rules, in order, as routes.
    for (l, target, cond) in &f.uses {
        let Some(b) = lookup(target) else {
            out.note(l.n, l.text(), format!("backend {target:?} does not exist"));
            continue;
        };
        let Some(matches) = condition(cond, &f.acls) else {
            out.note(
                l.n,
                l.text(),
                "only routes by host and path prefix (ACLs joined by AND) are translated",
            );
            continue;
        };
        if b.common.balance != main.common.balance {
            out.note(l.n, l.text(), "a route uses its balancer's algorithm");
        }
        for m in matches {
            t.push_str("\n[[balancer.route]]\n");
            if let Some(h) = &m.host {
                let _ = writeln!(t, "host = {}", q(h));
            }
            if let Some(p) = &m.path {
                let _ = writeln!(t, "path = {}", q(p));
            }
            let _ = writeln!(t, "backends = {}", servers(&b.servers));
        }
    }
    t
}

/// `if a b` / `if { path_beg /x }`: every (host, path) the AND of the ACLs matches.
fn condition(cond: &[String], acls: &BTreeMap<String, (Line, Vec<String>)>) -> Option<Vec<Match>> {
    if cond.first().map(String::as_str) != Some("if") {
        return None;
    }
    let mut terms: Vec<Vec<Match>> = Vec::new();
    let mut i = 1;
    while i < cond.len() {
        match cond[i].as_str() {
            "{" => {
                let end = cond[i..].iter().position(|w| w == "}")? + i;
                terms.push(acl_match(&cond[i + 1..end])?);
                i = end + 1;
            }
            "||" | "or" => return None,
            w if w.starts_with('!') => return None,
            name => {
                terms.push(acl_match(&acls.get(name)?.1)?);
                i += 1;
            }
        }
    }
    // AND: combine host terms with path terms.
    let mut result = vec![Match::default()];
    for term in terms {
        let mut next = Vec::new();
        for r in &result {
            for m in &term {
                let host = match (&r.host, &m.host) {
                    (Some(_), Some(_)) => return None,
                    (a, b) => a.clone().or(b.clone()),
                };
                let path = match (&r.path, &m.path) {
                    (Some(_), Some(_)) => return None,
                    (a, b) => a.clone().or(b.clone()),
                };
                next.push(Match { host, path });
            }
        }
        result = next;
    }
    Some(result)
}

fn servers(list: &[Server]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|s| {
            let mut parts = vec![format!("address = {}", q(&s.address))];
            if let Some(w) = s.weight {
                parts.push(format!("weight = {}", w.min(256)));
            }
            if let Some(m) = s.maxconn {
                parts.push(format!("maxconn = {m}"));
            }
            format!("{{ {} }}", parts.join(", "))
        })
        .collect();
    format!("[\n  {},\n]", items.join(",\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A haproxy.cfg as people write them: defaults, an https frontend that redirects plain
    /// HTTP, host and path routing, health checks, cookies, a tcp listen section.
    /// (`tests/data/haproxy.cfg`, also imported and checked on a host by `tests/import.rs`.)
    const SAMPLE: &str = include_str!("../../tests/data/haproxy.cfg");

    #[test]
    fn a_realistic_haproxy_cfg_becomes_a_config_that_parses_and_says_what_it_left() {
        let got = import(SAMPLE).unwrap();
        let config = got.parsed();
        assert_eq!(config.balancer.len(), 2, "{}", got.toml);
        let www = &config.balancer[0];
        assert_eq!(www.name, "www");
        assert_eq!(www.bind.to_string(), "10.0.0.100:443");
        assert_eq!(www.backends.len(), 2, "the backup server is left out");
        assert_eq!(www.backends[1].weight, 20);
        assert_eq!(
            www.route.len(),
            3,
            "api by host, static by two prefixes: {}",
            got.toml
        );
        let text = &got.toml;
        for want in [
            r#"algorithm = "leastconn""#,
            r#"check = { path = "/health", expect = "200", interval = "2s", rise = 2, fall = 3 }"#,
            r#"timeouts = { client = "30s", connect = "5s", server = "30s" }"#,
            r#"sticky = { cookie = "SERVERID" }"#,
            r#"tls = { certificates = [{ cert = "/etc/haproxy/site.pem", key = "/etc/haproxy/site.pem" }], redirect_from = "0.0.0.0:80" }"#,
            r#"host = "api.example.com""#,
            r#"path = "/images/""#,
            "retries = 2",
            r#"mode = "tcp""#,
            r#"hash_key = "source""#,
            r#"timeouts = { client = "3600s", connect = "5s", server = "30s" }"#,
        ] {
            assert!(text.contains(want), "no {want} in\n{text}");
        }
        got.assert_notes(&[
            (3, "global setting"),
            (11, "access_log"),
            (17, "not translated"),
            (23, "no frontend connection limit"),
            (26, "no header rules"),
            (27, "its balancer's algorithm"),
            (29, "only routes by host and path prefix"),
            (39, "no backup servers"),
            (48, "host names are not resolved"),
            (61, "no default_backend"),
            (63, "no stats page"),
        ]);
    }

    #[test]
    fn times_and_conditions() {
        assert_eq!(time("5000").as_deref(), Some("\"5s\""));
        assert_eq!(time("250").as_deref(), Some("\"250ms\""));
        assert_eq!(time("2m").as_deref(), Some("\"120s\""));
        assert_eq!(time("soon"), None);
        let acls = BTreeMap::new();
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            condition(
                &w("if { hdr(host) -i a.example b.example } { path_beg /x }"),
                &acls
            ),
            Some(vec![
                Match {
                    host: Some("a.example".into()),
                    path: Some("/x".into())
                },
                Match {
                    host: Some("b.example".into()),
                    path: Some("/x".into())
                },
            ])
        );
        assert_eq!(condition(&w("if { src 10.0.0.1 }"), &acls), None);
        assert_eq!(condition(&w("unless { path_beg /x }"), &acls), None);
        assert_eq!(
            condition(&w("if { path_beg /a } || { path_beg /b }"), &acls),
            None
        );
    }
}
