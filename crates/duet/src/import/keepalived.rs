//! keepalived.conf to duet.toml: `global_defs` (router_id, notification email), `vrrp_script`,
//! `vrrp_track_file`, `vrrp_instance`, `vrrp_sync_group`, and LVS `virtual_server`s as tcp
//! balancers. keepalived's default VRRP version is 2, so instances come out as
//! `version = 2` (unless a fractional `advert_int` or `vrrp_version 3` says otherwise): a
//! duet node then speaks with the keepalived node it replaces, one node at a time.

use std::fmt::Write;

use super::{Imported, command, list, q, seconds};

/// A statement: its words, and its block when it opens one.
#[derive(Debug, Clone)]
struct Stmt {
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn text(&self) -> String {
        self.words.join(" ")
    }
    fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    End,
}

/// Words, braces and line ends; `#` and `!` start comments; quotes group words.
fn tokens(text: &str) -> Result<Vec<(usize, Tok)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '#' | '!' => break,
                c if c.is_whitespace() => {
                    chars.next();
                }
                '{' => {
                    chars.next();
                    out.push((n, Tok::Open));
                }
                '}' => {
                    chars.next();
                    out.push((n, Tok::Close));
                }
                '"' => {
                    chars.next();
                    let mut w = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(c) => w.push(c),
                            None => return Err(format!("{n}: an unterminated quote")),
                        }
                    }
                    out.push((n, Tok::Word(w)));
                }
                _ => {
                    let mut w = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || c == '{' || c == '}' || c == '#' || c == '!' {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    out.push((n, Tok::Word(w)));
                }
            }
        }
        out.push((n, Tok::End));
    }
    Ok(out)
}

fn parse(toks: &[(usize, Tok)], pos: &mut usize, nested: bool) -> Result<Vec<Stmt>, String> {
    let mut stmts = Vec::new();
    let mut cur: Option<Stmt> = None;
    while *pos < toks.len() {
        let (line, tok) = &toks[*pos];
        *pos += 1;
        match tok {
            Tok::Word(w) => cur
                .get_or_insert_with(|| Stmt {
                    line: *line,
                    words: Vec::new(),
                    block: None,
                })
                .words
                .push(w.clone()),
            Tok::End => stmts.extend(cur.take()),
            Tok::Open => {
                let mut s = cur.take().unwrap_or(Stmt {
                    line: *line,
                    words: Vec::new(),
                    block: None,
                });
                s.block = Some(parse(toks, pos, true)?);
                stmts.push(s);
            }
            Tok::Close => {
                stmts.extend(cur.take());
                if nested {
                    return Ok(stmts);
                }
                return Err(format!("{line}: a '}}' closes nothing"));
            }
        }
    }
    if nested {
        return Err("the file ends inside a block (a '}' is missing)".into());
    }
    stmts.extend(cur);
    Ok(stmts)
}

fn num(s: &Stmt, i: usize) -> Option<f64> {
    s.arg(i).and_then(|a| a.parse::<f64>().ok())
}

/// Translates a keepalived.conf.
pub fn import(text: &str) -> Result<Imported, String> {
    let toks = tokens(text)?;
    let top = parse(&toks, &mut 0, false)?;
    let mut out = Imported::default();
    let mut node_name = None;
    let mut version = None;
    let mut email_to = Vec::new();
    let mut email_from = None;
    let mut smtp = None;
    let mut scripts = String::new();
    let mut track_files: Vec<(String, String, i64)> = Vec::new();
    let mut instances = String::new();
    let mut groups = String::new();
    let mut balancers = String::new();
    // First the definitions instances refer to.
    for s in &top {
        match s.key() {
            "global_defs" => {
                for g in s.children() {
                    match g.key() {
                        "router_id" => node_name = g.arg(1).map(String::from),
                        "vrrp_version" => version = g.arg(1).and_then(|v| v.parse::<u8>().ok()),
                        "notification_email" => {
                            email_to.extend(g.children().iter().map(Stmt::text));
                        }
                        "notification_email_from" => email_from = g.arg(1).map(String::from),
                        "smtp_server" => smtp = g.arg(1).map(String::from),
                        "smtp_connect_timeout" => {}
                        "enable_script_security" | "script_user" => out.note(
                            g.line,
                            g.text(),
                            "duet runs track scripts and hooks as its own user; run them as another with sudo or setpriv in the command",
                        ),
                        "vrrp_strict" => out.note(
                            g.line,
                            g.text(),
                            "no strict mode: duet accepts traffic to the VIPs unless an instance says accept = false",
                        ),
                        _ => out.note(g.line, g.text(), "no duet equivalent"),
                    }
                }
            }
            "vrrp_script" => scripts.push_str(&script(s, &mut out)),
            "vrrp_track_file" => {
                let name = s.arg(1).unwrap_or_default().to_string();
                let mut path = String::new();
                let mut weight = 1;
                for c in s.children() {
                    match c.key() {
                        "file" => path = c.arg(1).unwrap_or_default().into(),
                        "weight" => weight = num(c, 1).unwrap_or(1.0) as i64,
                        _ => out.note(c.line, c.text(), "no duet equivalent"),
                    }
                }
                track_files.push((name, path, weight));
            }
            _ => {}
        }
    }
    for s in &top {
        match s.key() {
            "global_defs" | "vrrp_script" | "vrrp_track_file" => {}
            "vrrp_instance" => instances.push_str(&instance(s, version, &track_files, &mut out)),
            "vrrp_sync_group" => {
                let members: Vec<String> = s
                    .children()
                    .iter()
                    .filter(|c| c.key() == "group")
                    .flat_map(|c| c.children().iter().flat_map(|m| m.words.clone()))
                    .collect();
                for c in s.children().iter().filter(|c| c.key() != "group") {
                    out.note(
                        c.line,
                        c.text(),
                        "sync group hooks and options: put hooks on the instances",
                    );
                }
                let _ = writeln!(
                    groups,
                    "\n[sync_group.{}]\ninstances = {}",
                    q(s.arg(1).unwrap_or("group")),
                    list(&members)
                );
            }
            "virtual_server" => balancers.push_str(&virtual_server(s, &mut out)),
            "include" => out.note(
                s.line,
                s.text(),
                "not followed: import the included file too and merge the output",
            ),
            _ => out.note(s.line, s.text(), "no duet equivalent"),
        }
    }
    let name = node_name.unwrap_or_else(|| {
        out.note(
            0,
            "router_id",
            "missing: the node is named \"node1\"; name it",
        );
        "node1".into()
    });
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Imported from keepalived.conf by `duet import keepalived`; check it with `duet check`.\n\n[node]\nname = {}",
        q(&name)
    );
    if let (Some(from), false) = (&email_from, email_to.is_empty()) {
        let smtp = smtp.as_deref().unwrap_or("127.0.0.1");
        let smtp = if smtp.contains(':') {
            smtp.to_string()
        } else {
            format!("{smtp}:25")
        };
        let _ = writeln!(
            toml,
            "\n[alerts]\nemail = {{ smtp = {}, from = {}, to = {} }}",
            q(&smtp),
            q(from),
            list(&email_to)
        );
    }
    toml.push_str(&instances);
    toml.push_str(&scripts);
    toml.push_str(&groups);
    toml.push_str(&balancers);
    out.toml = toml;
    out.notes.sort_by_key(|n| n.line);
    Ok(out)
}

/// A `script` or hook line's command as a TOML argv (in `/bin/sh -c`, with a note, when it
/// needs a shell).
fn argv_of(c: &Stmt, out: &mut Imported) -> String {
    let (argv, shell) = command(&c.words[1..].join(" "));
    if shell {
        out.note(
            c.line,
            c.text(),
            "duet runs commands and hooks without a shell: wrapped in /bin/sh -c",
        );
    }
    list(&argv)
}

fn script(s: &Stmt, out: &mut Imported) -> String {
    let mut t = format!("\n[track_script.{}]\n", q(s.arg(1).unwrap_or("script")));
    for c in s.children() {
        match c.key() {
            "script" => {
                let _ = writeln!(t, "command = {}", argv_of(c, out));
            }
            "interval" | "timeout" => {
                if let Some(v) = num(c, 1) {
                    let _ = writeln!(t, "{} = {}", c.key(), seconds(v));
                }
            }
            "weight" => {
                let _ = writeln!(t, "weight = {}", num(c, 1).unwrap_or(0.0) as i64);
                if c.arg(2) == Some("reverse") {
                    out.note(c.line, c.text(), "reverse weights are not supported");
                }
            }
            "rise" | "fall" => {
                let _ = writeln!(t, "{} = {}", c.key(), num(c, 1).unwrap_or(1.0) as u64);
            }
            "user" => out.note(
                c.line,
                c.text(),
                "scripts run as duet's user; use sudo -u or setpriv in the command",
            ),
            _ => out.note(c.line, c.text(), "no duet equivalent"),
        }
    }
    t
}

fn instance(
    s: &Stmt,
    version: Option<u8>,
    track_files: &[(String, String, i64)],
    out: &mut Imported,
) -> String {
    let name = s.arg(1).unwrap_or("vrrp");
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| keys.push((k.to_string(), v));
    let mut interface = String::new();
    let mut advert = 1.0;
    let mut inst_version = version;
    let mut vips = Vec::new();
    let mut family = None;
    for c in s.children() {
        match c.key() {
            "interface" => {
                interface = c.arg(1).unwrap_or_default().to_string();
                push("interface", q(&interface));
            }
            "virtual_router_id" => push("vrid", c.arg(1).unwrap_or("0").into()),
            "priority" => push("priority", c.arg(1).unwrap_or("100").into()),
            "advert_int" => advert = num(c, 1).unwrap_or(1.0),
            "version" => inst_version = c.arg(1).and_then(|v| v.parse().ok()),
            "state" if c.arg(1) == Some("BACKUP") => {}
            "state" => out.note(
                c.line,
                c.text(),
                "every instance starts as BACKUP and priority decides who becomes MASTER",
            ),
            "nopreempt" => push("preempt", "false".into()),
            "preempt_delay" => push("preempt_delay", seconds(num(c, 1).unwrap_or(0.0))),
            "unicast_src_ip" | "mcast_src_ip" => {
                push("source", q(c.arg(1).unwrap_or_default()));
            }
            "unicast_peer" => {
                let peers: Vec<String> = c.children().iter().map(|p| p.key().to_string()).collect();
                for p in c.children().iter().filter(|p| p.words.len() > 1) {
                    out.note(p.line, p.text(), "per-peer options are not supported");
                }
                push("unicast_peers", list(&peers));
            }
            "virtual_ipaddress" => {
                for v in c.children() {
                    let addr = v.key();
                    let with_prefix = if addr.contains('/') {
                        addr.to_string()
                    } else if addr.contains(':') {
                        format!("{addr}/128")
                    } else {
                        format!("{addr}/32")
                    };
                    let v6 = addr.contains(':');
                    if family.is_some_and(|f| f != v6) {
                        out.note(
                            v.line,
                            v.text(),
                            "one address family per instance: make another instance for it",
                        );
                        continue;
                    }
                    family = Some(v6);
                    vips.push(with_prefix);
                    let mut i = 1;
                    while i < v.words.len() {
                        match v.arg(i) {
                            Some("dev") if v.arg(i + 1) == Some(interface.as_str()) => {}
                            Some("dev") => out.note(
                                v.line,
                                v.text(),
                                "duet puts the VIPs on the instance's interface; make an instance on the other interface for it",
                            ),
                            Some("label") => out.note(
                                v.line,
                                v.text(),
                                "address labels are not set (ip addr shows the VIP without one)",
                            ),
                            _ => out.note(v.line, v.text(), "address options are not set"),
                        }
                        i += 2;
                    }
                }
            }
            "virtual_ipaddress_excluded" | "virtual_routes" | "virtual_rules" => out.note(
                c.line,
                c.text(),
                "only VIPs are managed: add these with a notify hook",
            ),
            "track_interface" => {
                let items: Vec<String> = c
                    .children()
                    .iter()
                    .map(|t| match (t.arg(1), num(t, 2)) {
                        (Some("weight"), Some(w)) => {
                            format!("{{ name = {}, weight = {} }}", q(t.key()), w as i64)
                        }
                        _ => format!("{{ name = {} }}", q(t.key())),
                    })
                    .collect();
                push("track_interfaces", format!("[{}]", items.join(", ")));
            }
            "track_script" => {
                let names: Vec<String> = c.children().iter().map(|t| t.key().to_string()).collect();
                for t in c.children().iter().filter(|t| t.arg(1) == Some("weight")) {
                    out.note(
                        t.line,
                        t.text(),
                        "a per-instance weight: duet uses the script's own weight for every instance",
                    );
                }
                push("track_scripts", list(&names));
            }
            "track_file" => {
                let items: Vec<String> = c
                    .children()
                    .iter()
                    .filter_map(|t| {
                        let (_, path, weight) = track_files.iter().find(|(n, ..)| n == t.key())?;
                        let weight = match (t.arg(1), num(t, 2)) {
                            (Some("weight"), Some(w)) => w as i64,
                            _ => *weight,
                        };
                        Some(format!("{{ path = {}, weight = {weight} }}", q(path)))
                    })
                    .collect();
                push("track_files", format!("[{}]", items.join(", ")));
            }
            k @ ("notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop") => {
                push(k, argv_of(c, out));
            }
            "accept" => push("accept", "true".into()),
            "no_accept" => push("accept", "false".into()),
            "garp_master_repeat" => push("garp", format!("{{ count = {} }}", c.arg(1).unwrap_or("5"))),
            "garp_master_refresh" => {
                push("garp", format!("{{ refresh = {} }}", seconds(num(c, 1).unwrap_or(0.0))));
            }
            "authentication" => out.note(
                c.line,
                c.text(),
                "VRRP authentication is not supported (RFC 3768 deprecates it): remove it from the keepalived node while both run; duet's own heartbeats are authenticated (HMAC-SHA256)",
            ),
            "smtp_alert" => out.note(
                c.line,
                c.text(),
                "alerts are node-wide: [alerts] sends role changes",
            ),
            _ => out.note(c.line, c.text(), "no duet equivalent"),
        }
    }
    let v = inst_version.unwrap_or(2);
    let v = if v == 2 && advert.fract() != 0.0 {
        out.note(
            s.line,
            format!("advert_int {advert}"),
            "a fractional interval needs VRRPv3: version = 3 (keepalived must use vrrp_version 3 too)",
        );
        3
    } else {
        v
    };
    let mut t = format!(
        "\n[[vrrp]]\nname = {}\nversion = {v}\nadvert_interval = {}\n",
        q(name),
        seconds(advert)
    );
    // Two garp lines merge into one table.
    let garp: Vec<String> = keys
        .iter()
        .filter(|(k, _)| k == "garp")
        .map(|(_, v)| v.trim_matches(['{', '}', ' ']).to_string())
        .collect();
    for (k, v) in keys.iter().filter(|(k, _)| k != "garp") {
        let _ = writeln!(t, "{k} = {v}");
    }
    if !garp.is_empty() {
        let _ = writeln!(t, "garp = {{ {} }}", garp.join(", "));
    }
    let _ = writeln!(t, "vips = {}", list(&vips));
    t
}

fn virtual_server(s: &Stmt, out: &mut Imported) -> String {
    let (Some(ip), Some(port)) = (s.arg(1), s.arg(2)) else {
        out.note(
            s.line,
            s.text(),
            "fwmark and group virtual servers are not translated",
        );
        return String::new();
    };
    if ip == "fwmark" || ip == "group" {
        out.note(
            s.line,
            s.text(),
            "fwmark and group virtual servers are not translated",
        );
        return String::new();
    }
    let bind = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let mut algorithm = "roundrobin";
    let mut interval = None;
    let mut backends = Vec::new();
    for c in s.children() {
        match c.key() {
            "lb_algo" => {
                algorithm = match c.arg(1) {
                    Some("rr" | "wrr") => "roundrobin",
                    Some("lc" | "wlc" | "lblc" | "lblcr" | "sed" | "nq") => "leastconn",
                    Some("sh" | "mh" | "dh") => "hash",
                    _ => {
                        out.note(c.line, c.text(), "unknown scheduler: round robin");
                        "roundrobin"
                    }
                }
            }
            "lb_kind" => out.note(
                c.line,
                c.text(),
                "duet proxies connections (layer 4, tcp mode) instead of forwarding packets with IPVS: backends see duet's address (proxy_protocol.send gives them the client's) and answer through it",
            ),
            "protocol" if c.arg(1) == Some("TCP") => {}
            "protocol" => out.note(c.line, c.text(), "only TCP is balanced"),
            "delay_loop" => interval = num(c, 1),
            "persistence_timeout" => out.note(
                c.line,
                c.text(),
                "no persistence table: algorithm = \"hash\" keeps a client on one backend",
            ),
            "real_server" => {
                let (Some(rip), Some(rport)) = (c.arg(1), c.arg(2)) else {
                    continue;
                };
                let addr = if rip.contains(':') {
                    format!("[{rip}]:{rport}")
                } else {
                    format!("{rip}:{rport}")
                };
                let mut weight = 1;
                for r in c.children() {
                    match r.key() {
                        "weight" => weight = num(r, 1).unwrap_or(1.0) as i64,
                        "TCP_CHECK" => {}
                        "HTTP_GET" | "SSL_GET" => out.note(
                            r.line,
                            r.text(),
                            "a tcp balancer checks by connecting; for HTTP checks make it an http balancer with check.path",
                        ),
                        _ => out.note(r.line, r.text(), "no duet equivalent"),
                    }
                }
                if weight < 1 {
                    out.note(
                        c.line,
                        c.text(),
                        "weight 0 (no new connections): imported with weight 1; drain it with the admin API",
                    );
                    weight = 1;
                }
                backends.push(format!("{{ address = {}, weight = {} }}", q(&addr), weight.min(256)));
            }
            _ => out.note(c.line, c.text(), "no duet equivalent"),
        }
    }
    let mut t = format!(
        "\n[[balancer]]\nname = {}\nbind = {}\nmode = \"tcp\"\nalgorithm = {}\n",
        q(&format!("vs-{}", bind.replace([':', '[', ']', '.'], "-"))),
        q(&bind),
        q(algorithm)
    );
    if algorithm == "hash" {
        t.push_str("hash_key = \"source\"\n");
    }
    let _ = writeln!(t, "backends = [\n  {},\n]", backends.join(",\n  "));
    if let Some(i) = interval {
        let _ = writeln!(t, "check = {{ interval = {} }}", seconds(i));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keepalived.conf as people write them: two instances in a sync group, a script with a
    /// weight, a tracked interface, unicast, notify hooks, VIPs with dev and label, an LVS
    /// virtual server.
    /// (`tests/data/keepalived.conf`, also imported and checked on a host by `tests/import.rs`.)
    const SAMPLE: &str = include_str!("../../tests/data/keepalived.conf");

    #[test]
    fn a_realistic_keepalived_conf_becomes_a_config_that_parses_and_says_what_it_left() {
        let got = import(SAMPLE).unwrap();
        let config = got.parsed();
        assert_eq!(config.node.name, "LB1");
        assert_eq!(config.vrrp.len(), 3);
        let web = &config.vrrp[0];
        assert_eq!(
            (web.name.as_str(), web.vrid, web.priority),
            ("VI_WEB", 51, 150)
        );
        assert_eq!(
            web.version, 2,
            "keepalived's default version, to interoperate"
        );
        assert!(!web.preempt);
        assert_eq!(web.vips.len(), 2);
        assert_eq!(web.unicast_peers.len(), 1);
        assert_eq!(web.track_scripts, ["chk_nginx", "chk_api"]);
        assert_eq!(web.track_interfaces[0].weight, -30);
        let db = &config.vrrp[1];
        assert_eq!(db.version, 3, "as the instance says");
        assert_eq!(config.vrrp[2].version, 2);
        assert_eq!(config.track_script.len(), 2);
        assert_eq!(config.balancer.len(), 1);
        assert_eq!(config.balancer[0].backends.len(), 2);
        let text = &got.toml;
        assert!(
            text.contains(r#"command = ["/usr/bin/pgrep", "-x", "nginx"]"#),
            "{text}"
        );
        assert!(
            text.contains(r#"command = ["/bin/sh", "-c", "curl -fs http://127.0.0.1:8080/health | grep -q ok"]"#),
            "{text}"
        );
        assert_eq!(config.sync_group.len(), 1);
        assert_eq!(got.notes.len(), 10, "{:#?}", got.notes);
        assert!(text.contains(r#"notify_master = ["/etc/keepalived/notify.sh", "master"]"#));
        assert!(
            text.contains(r#"email = { smtp = "10.0.0.25:25""#),
            "{text}"
        );
        // Every setting left behind is reported with its line.
        got.assert_notes(&[
            (12, "own user"),
            (41, "authentication is not supported"),
            (46, "labels"),
            (54, "script's own weight"),
            (62, "priority decides"),
            (89, "put hooks on the instances"),
            (95, "proxies connections"),
            (96, "persistence"),
        ]);
    }

    #[test]
    fn a_command_that_needs_a_shell_gets_one_and_a_note() {
        let got = import(
            "global_defs {\n router_id a\n}\nvrrp_script s {\n script \"pidof nginx || exit 1\"\n}\n",
        )
        .unwrap();
        assert!(
            got.toml
                .contains(r#"command = ["/bin/sh", "-c", "pidof nginx || exit 1"]"#),
            "{}",
            got.toml
        );
        assert_eq!(got.notes.len(), 1);
        assert_eq!(got.notes[0].line, 5);
        assert!(got.notes[0].why.contains("without a shell"));
    }

    #[test]
    fn broken_files_are_refused_with_the_line() {
        assert!(
            import("vrrp_instance X {\n interface eth0\n")
                .unwrap_err()
                .contains("missing")
        );
        assert!(import("}\n").unwrap_err().starts_with("1:"));
        assert!(
            import("vrrp_script a {\n script \"x\n}")
                .unwrap_err()
                .starts_with("2:")
        );
    }
}
