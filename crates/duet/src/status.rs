//! `duet status`: asks a running node's admin API and prints a table (or the raw JSON).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use duet_admin::Status;

/// A node's admin API and the token to show it, if any.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// `--token-file`, else `$DUET_TOKEN`, else `node.operator_token_file` of the config.
    pub token: Option<String>,
    /// With `admin.tls` in the config: HTTPS, trusting the certificate there.
    pub tls: Option<std::path::PathBuf>,
}

impl Target {
    /// From the command line: `admin` (else `node.admin` of `config`), `token_file`.
    pub fn new(
        config: &Path,
        admin: Option<SocketAddr>,
        token_file: Option<&Path>,
    ) -> Result<Target, String> {
        let loaded = duet_config::load(config);
        let addr = match (admin, &loaded) {
            (Some(a), _) => a,
            (None, Ok(c)) => c.node.admin,
            (None, Err(e)) => {
                return Err(format!(
                    "{e}\n(use --admin ADDR to query a node without its config)"
                ));
            }
        };
        let token = if let Some(f) = token_file {
            Some(crate::preflight::read_operator_token(f)?)
        } else if let Some(t) = std::env::var("DUET_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t)
        } else if let Ok(Some(f)) = loaded.as_ref().map(|c| c.node.operator_token_file.clone()) {
            Some(crate::preflight::read_operator_token(&f)?)
        } else {
            None
        };
        let tls = loaded
            .ok()
            .and_then(|c| c.admin)
            .and_then(|a| a.tls)
            .map(|t| t.cert);
        Ok(Target { addr, token, tls })
    }

    /// A connection to the API (TLS when the config says so), reads timing out after
    /// `timeout`.
    pub fn connect(&self, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(timeout))?;
        let Some(cert) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let config = tls_client(cert).map_err(std::io::Error::other)?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    /// Sends `method path` and returns the body of a 200 answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> std::io::Result<String> {
        let s = self.connect(Duration::from_secs(5))?;
        exchange(s, self.addr, method, path, token, body)
    }

    /// GET `path`: the body of a 200 answer.
    pub fn get(&self, path: &str) -> Result<String, String> {
        self.request("GET", path, self.token.as_deref(), "")
            .map_err(|e| self.explain(e))
    }

    /// POST `path` (needs a token).
    pub fn post(&self, path: &str) -> Result<String, String> {
        self.post_json(path, "")
    }

    /// POST `path` with a JSON `body` (needs a token).
    pub fn post_json(&self, path: &str, body: &str) -> Result<String, String> {
        let Some(token) = &self.token else {
            return Err(NO_TOKEN.into());
        };
        self.request("POST", path, Some(token), body)
            .map_err(|e| self.explain(e))
    }

    fn explain(&self, e: std::io::Error) -> String {
        let text = e.to_string();
        if text.contains(" 401 ") {
            let hint = if self.token.is_some() {
                "the token was not accepted"
            } else {
                NO_TOKEN
            };
            format!("{text}\n{hint}")
        } else if e.kind() == std::io::ErrorKind::Other {
            text
        } else {
            format!(
                "cannot reach the admin API at {}: {text}\nIs `duet run` running on this node?",
                self.addr
            )
        }
    }
}

const NO_TOKEN: &str = "this needs an admin API token: pass --token-file FILE or set DUET_TOKEN (`duet token new NAME ROLE` makes one), or set node.operator_token_file";

/// Runs `duet status --watch`: redraws the table every `every` seconds, in place, until
/// interrupted; a node that stops answering is said on the screen, not an exit.
pub fn watch(target: &Target, every: f64) -> i32 {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    loop {
        let screen = match target.get("/v1/status").and_then(|b| {
            serde_json::from_str::<Status>(&b).map_err(|e| format!("unexpected answer: {e}"))
        }) {
            Ok(s) => render(&s) + &render_events(&last_events(target)),
            Err(e) => format!("duet status: {e}\n"),
        };
        let mut out = std::io::stdout().lock();
        // Home and clear on a terminal; a separator line otherwise (a log, a pipe).
        let head = if tty {
            "\x1b[H\x1b[2J".to_string()
        } else {
            format!("--- {}\n", crate::events::utc(crate::witness::unix_ms()))
        };
        if write!(out, "{head}{screen}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 0;
        }
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

/// The node's last 10 events, or none when it does not say.
fn last_events(target: &Target) -> Vec<duet_admin::Event> {
    target
        .get("/v1/events?limit=10")
        .ok()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v["events"].clone()).ok())
        .unwrap_or_default()
}

/// Runs `duet status`; returns the exit code.
pub fn run(target: &Target, json: bool) -> i32 {
    let body = match target.get("/v1/status") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("duet status: {e}");
            return 1;
        }
    };
    let addr = target.addr;
    if json {
        println!("{body}");
        return 0;
    }
    match serde_json::from_str::<Status>(&body) {
        Ok(s) => {
            print!("{}", render(&s));
            // The last events, when the node keeps them.
            print!("{}", render_events(&last_events(target)));
            0
        }
        Err(e) => {
            eprintln!("duet status: unexpected answer from {addr}: {e}");
            1
        }
    }
}

/// Sends an operator `POST` to this node's admin API and prints the answer; returns the
/// exit code.
pub fn post(target: &Target, path: &str) -> i32 {
    match target.post(path) {
        Ok(body) => {
            println!("{}", body.trim());
            0
        }
        Err(e) => {
            eprintln!("duet: {e}");
            1
        }
    }
}

/// Runs `duet switchover`: asks this node's admin API, then (with `wait`) follows the
/// status until this node is a standby and `to` runs the primary. Returns the exit code.
pub fn switchover(target: &Target, to: Option<&str>, wait: bool) -> i32 {
    let path = match to {
        Some(t) => format!("/v1/switchover?to={t}"),
        None => "/v1/switchover".into(),
    };
    match target.post(&path) {
        Ok(body) => println!("{}", body.trim()),
        Err(e) => {
            eprintln!("duet switchover: {e}");
            return 1;
        }
    }
    if !wait {
        return 0;
    }
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(s) = target
            .get("/v1/status")
            .and_then(|b| serde_json::from_str::<Status>(&b).map_err(|e| e.to_string()))
        else {
            continue;
        };
        // A node without a database: the VRRP handover is done once asked.
        let Some(db) = s.database else { return 0 };
        if db.step != last {
            println!("  {}: {}", s.node, db.step);
            last = db.step.clone();
        }
        let new = db.peers.iter().find(|p| p.role == "primary");
        if db.role == "replica"
            && let Some(p) = new
        {
            println!(
                "done in {:.1} s: {} is primary (timeline {}), {} follows it",
                start.elapsed().as_secs_f64(),
                p.name,
                p.timeline,
                s.node
            );
            return 0;
        }
    }
    eprintln!("duet switchover: not finished after 60 s; see duet status");
    1
}

/// Minimal HTTP/1.0 GET; the admin API is local and small.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    http_request(addr, "GET", path, None)
}

/// Minimal HTTP/1.0 request with an optional operator token; the body of a 200 answer, or an
/// error with the status line and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    exchange(s, addr, method, path, token, "")
}

/// A connection to the admin API: plain TCP or TLS.
pub trait Stream: Read + Write + Send {}

impl<T: Read + Write + Send> Stream for T {}

/// A TLS client that trusts the admin API's own certificate (`admin.tls.cert`).
fn tls_client(cert: &Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).map_err(|e| format!("{}: {e}", cert.display()))? {
        let c = c.map_err(|e| format!("{}: {e}", cert.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// One HTTP/1.0 exchange on `s`.
fn exchange(
    mut s: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}{kind}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        return Err(std::io::Error::other(format!("{status_line}: {body}")));
    }
    Ok(body.to_string())
}

/// The "last events" lines of `duet status`.
pub fn render_events(events: &[duet_admin::Event]) -> String {
    if events.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nLAST EVENTS (duet events --follow for more)\n");
    for e in events {
        out.push_str(&format!(
            "  {} #{:<5} {}\n",
            crate::events::utc(e.unix_ms),
            e.seq,
            e.kind
        ));
    }
    out
}

/// The table `duet status` prints.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    if let Some(m) = &s.maintenance {
        out.push_str(&format!(
            "MAINTENANCE: automatic failover is off cluster-wide (by {}); POST /v1/maintenance {{\"enabled\": false}} ends it\n",
            m.by
        ));
    }
    out += &format!(
        "node {} (duet {}, up {})\n",
        s.node,
        s.version,
        duet_time::format_duration(Duration::from_secs(s.uptime_seconds as u64))
    );
    let header = [
        "INSTANCE", "STATE", "PRIO", "EFF", "VRID", "IFACE", "VIPS", "MASTER", "SINCE", "REASON",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for v in &s.vrrp {
        let master = if v.state == "MASTER" && v.vips_held.len() < v.vips.len() {
            "(this node, VIPs not all held)".to_string()
        } else if v.state == "MASTER" {
            "(this node)".to_string()
        } else {
            v.master.clone().unwrap_or_else(|| "-".into())
        };
        let reason = match (&v.fault, &v.veto) {
            (Some(f), _) => format!("fault: {f}"),
            (None, Some(why)) => format!("held back: {why}"),
            (None, None) => v.reason.clone(),
        };
        rows.push(vec![
            v.name.clone(),
            v.state.clone(),
            v.priority.to_string(),
            v.effective_priority.to_string(),
            v.vrid.to_string(),
            v.interface.clone(),
            v.vips.join(","),
            master,
            duet_time::format_duration(Duration::from_secs(v.in_state_seconds as u64)),
            reason,
        ]);
    }
    out.push_str(&table(rows));
    if let Some(c) = &s.cluster {
        out.push('\n');
        let mut rows = vec![
            ["PEER", "ADDRESS", "STATE", "LINKS", "TERM"]
                .map(String::from)
                .to_vec(),
        ];
        for p in &c.peers {
            let links: Vec<String> = p
                .links
                .iter()
                .enumerate()
                .map(|(n, up)| match (up, p.rtt_us.get(n).copied().flatten()) {
                    (false, _) => "silent".into(),
                    (true, None) => "up".into(),
                    (true, Some(us)) => format!("up {}", rtt(us)),
                })
                .collect();
            rows.push(vec![
                if p.name.is_empty() {
                    "?".into()
                } else {
                    p.name.clone()
                },
                p.address.clone(),
                if p.alive { "alive" } else { "silent" }.to_string(),
                links.join(","),
                p.term.to_string(),
            ]);
        }
        out.push_str(&table(rows));
        for p in c.peers.iter().filter(|p| p.config_differs) {
            out.push_str(&format!(
                "CONFIG DRIFT: {}'s cluster-wide config differs from this node's (duet diff-config --peer {})\n",
                p.name, p.name
            ));
        }
        if let Some(l) = &c.lease {
            let authority = if l.authority.is_empty() {
                "witness"
            } else {
                &l.authority
            };
            out.push_str(&format!(
                "{authority} {}: {} (term {})\n",
                l.witness,
                if l.valid {
                    format!(
                        "lease held, {} left",
                        duet_time::format_duration(Duration::from_millis(l.valid_for_ms))
                    )
                } else {
                    "no lease".to_string()
                },
                l.term
            ));
            if let Some(why) = &l.problem {
                out.push_str(&format!(
                    "DEGRADED: the {authority} cannot grant a lease: {why}\n"
                ));
            }
        }
    }
    if !s.services.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["SERVICE", "FOLLOWS", "KIND", "STATE", "NOTE"]
                .map(String::from)
                .to_vec(),
        ];
        for v in &s.services {
            let note = match (&v.stepped_down, v.waiting_for_peer, &v.error) {
                (Some(_), ..) => "stepped down".to_string(),
                (None, true, _) => "waiting for the peer to stop it".into(),
                (None, false, Some(e)) => e.clone(),
                _ => String::new(),
            };
            rows.push(vec![
                v.name.clone(),
                v.follows.clone(),
                v.kind.clone(),
                v.state.clone(),
                note,
            ]);
        }
        out.push_str(&table(rows));
        let mut said = Vec::new();
        for v in &s.services {
            if let Some(why) = &v.stepped_down
                && !said.contains(&&v.follows)
            {
                said.push(&v.follows);
                out.push_str(&format!(
                    "STEPPED DOWN: {} is not master here: {why}\n",
                    v.follows
                ));
            }
        }
    }
    if let Some(db) = &s.database {
        out.push('\n');
        out.push_str(&database(&s.node, db));
    } else if s.vrrp.is_empty() {
        out.push_str("(no vrrp instances)\n");
    }
    for b in &s.balancers {
        out.push_str(&format!(
            "\nbalancer {} ({} on {}), client errors {}\n",
            b.name, b.mode, b.bind, b.client_errors
        ));
        let mut rows = vec![
            [
                "BACKEND",
                "POOL",
                "STATE",
                "WEIGHT",
                "ACTIVE",
                "FORWARDED",
                "ERRORS",
                "WHY DOWN",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for be in &b.backends {
            let state = match (be.draining, be.up) {
                (true, _) => "draining",
                (false, true) => "up",
                (false, false) => "down",
            };
            let errors: Vec<String> = be
                .errors
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            rows.push(vec![
                be.address.clone(),
                be.pool.clone(),
                state.to_string(),
                be.weight.to_string(),
                be.active.to_string(),
                be.connections.to_string(),
                if errors.is_empty() {
                    "0".to_string()
                } else {
                    errors.join(", ")
                },
                be.down_reason.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&table(rows));
    }
    out
}

/// Left-aligned columns separated by two spaces.
/// The database rows of `duet status`: this node and its peers, like `patronictl list`.
fn database(node: &str, db: &duet_admin::DatabaseStatus) -> String {
    let mut rows = vec![
        ["DATABASE", "ROLE", "TIMELINE", "LSN", "LAG", "STATE"]
            .map(String::from)
            .to_vec(),
    ];
    let state = if db.role == "primary" {
        match (&db.sync_standby, db.writable) {
            (_, false) => "not writable (fenced or starting)".to_string(),
            (Some(s), true) => format!("writable, synchronous standby {s}"),
            (None, true) => "writable".to_string(),
        }
    } else if db.streaming {
        format!("streaming from {}", db.upstream.as_deref().unwrap_or("?"))
    } else {
        db.step.clone()
    };
    rows.push(vec![
        format!("{node} (this node)"),
        db.role.clone(),
        db.timeline.to_string(),
        db.lsn.clone(),
        db.lag_bytes.map_or("-".into(), |l| format!("{l} B")),
        state,
    ]);
    for p in &db.peers {
        rows.push(vec![
            p.name.clone(),
            p.role.clone(),
            p.timeline.to_string(),
            p.lsn.clone(),
            "-".into(),
            if p.alive { "heard" } else { "silent" }.into(),
        ]);
    }
    let mut out = table(rows);
    out.push_str(&format!("synchronous = {}", db.synchronous));
    if let Some(r) = &db.record {
        out.push_str(&format!("; witness record: {r}"));
    }
    out.push('\n');
    if let Some(p) = &db.progress {
        out.push_str(&format!("cloning: {p}\n"));
    }
    if let Some(r) = &db.refusal {
        out.push_str(&format!("NOT PROMOTABLE: {r}\n"));
    }
    if let Some(e) = &db.last_error {
        out.push_str(&format!("last error: {e}\n"));
    }
    if let Some(p) = &db.last_promotion {
        out.push_str(&format!("last promotion: {p}\n"));
    }
    out
}

/// A round trip for people: "0.21 ms", "12 ms".
fn rtt(us: u64) -> String {
    if us < 10_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{} ms", us / 1000)
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_events_are_listed_oldest_first_with_their_numbers() {
        assert_eq!(render_events(&[]), "");
        let e = |seq, unix_ms, to: &str| duet_admin::Event {
            seq,
            unix_ms,
            kind: duet_admin::EventKind::Vrrp {
                instance: "web".into(),
                from: "BACKUP".into(),
                to: to.into(),
                reason: "master down".into(),
                priority: 100,
            },
        };
        let text = render_events(&[
            e(7, 1_796_129_933_253, "MASTER"),
            e(8, 1_796_129_934_000, "FAULT"),
        ]);
        assert_eq!(
            text,
            "\nLAST EVENTS (duet events --follow for more)\n  2026-12-01 12:58:53.253 #7     web: BACKUP -> MASTER (master down), priority 100\n  2026-12-01 12:58:54.000 #8     web: BACKUP -> FAULT (master down), priority 100\n"
        );
    }

    #[test]
    fn peers_show_each_links_round_trip() {
        let s = Status {
            cluster: Some(duet_admin::ClusterStatus {
                peers: vec![duet_admin::PeerStatus {
                    name: "beta".into(),
                    address: "10.0.0.2".into(),
                    alive: true,
                    links: vec![true, true, false],
                    rtt_us: vec![Some(212), None, Some(90)],
                    config_hash: Some("00000000000000aa".into()),
                    config_differs: true,
                    term: 3,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&s);
        assert!(
            text.contains("up 0.21 ms,up,silent"),
            "timed, not yet timed, silent (a stale time is not shown): {text}"
        );
        assert!(
            text.contains(
                "CONFIG DRIFT: beta's cluster-wide config differs from this node's (duet diff-config --peer beta)"
            ),
            "{text}"
        );
        assert_eq!(rtt(48_700), "48 ms");
    }

    #[test]
    fn the_lease_line_names_who_grants_it() {
        let mut s = Status::default();
        let lease = |authority: &str, at: &str| duet_admin::LeaseStatus {
            authority: authority.into(),
            witness: at.into(),
            valid: true,
            valid_for_ms: 1500,
            term: 7,
            problem: None,
        };
        s.cluster = Some(duet_admin::ClusterStatus {
            lease: Some(lease("etcd", "https://10.0.0.21:2379")),
            ..Default::default()
        });
        let text = render(&s);
        assert!(
            text.contains("etcd https://10.0.0.21:2379: lease held, 1.5s left (term 7)"),
            "{text}"
        );
        // A status from a daemon that predates the field still reads as a witness.
        s.cluster = Some(duet_admin::ClusterStatus {
            lease: Some(lease("", "10.0.0.9:7947")),
            ..Default::default()
        });
        assert!(render(&s).contains("witness 10.0.0.9:7947: lease held"));
        // A witness that cannot grant says why, and the status says the cluster is degraded.
        s.cluster = Some(duet_admin::ClusterStatus {
            lease: Some(duet_admin::LeaseStatus {
                valid: false,
                problem: Some("cannot write its state file: Read-only file system".into()),
                ..lease("witness", "10.0.0.9:7947")
            }),
            ..Default::default()
        });
        let text = render(&s);
        assert!(
            text.contains("DEGRADED: the witness cannot grant a lease: cannot write its state file: Read-only file system"),
            "{text}"
        );
    }
}
