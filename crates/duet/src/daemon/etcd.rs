//! Leadership from etcd: the `[coordination]` backend.
//!
//! The cluster member asks for a lease exactly as it asks the witness (a
//! [`duet_cluster::lease::LeaseRequest`]); this task answers from etcd, over the v3 JSON
//! gateway (plain HTTP/1.1 or TLS; no gRPC, so no protoc in the build):
//!
//! - **acquire or renew**: keep an etcd lease alive (`/v3/lease/keepalive`, or
//!   `/v3/lease/grant` when there is none or it expired), then one transaction on
//!   `{prefix}/leader`: *if the key does not exist, put our name under our lease, else read
//!   it*. The key held under our lease is a grant; the key's `create_revision` is the term
//!   (fencing token): etcd revisions only grow, so every new leader has a higher term.
//! - **release**: revoke the lease, which deletes the key, so the next node need not wait for
//!   the TTL.
//! - **the database record** (with `[database]`) lives in `{prefix}/db`, as one line of JSON
//!   (`etcdctl get` shows it). Every lease transaction reads it too, so each answer carries the
//!   record as it was when the lease was granted or refused. Only the leader writes it: the
//!   write is a transaction that succeeds only while the leader key is held under this node's
//!   etcd lease with the record's term as its create revision, so a node that lost the key
//!   (frozen, cut off) cannot overwrite what its successor wrote.
//!
//! The member counts a lease from the moment it sent the request, and etcd from when it
//! received the keepalive, later: the node always believes its lease ends first. A request
//! that fails (etcd unreachable, no quorum there) gets no answer; the member's lease then runs
//! out on its own, and a MASTER without it steps down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duet_cluster::wire::DbRecord;
use duet_config::{CoordinationConfig, Endpoint};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub use super::input::EtcdAnswer as Answer;
use super::input::{Inbox, Input};

/// A request from the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Acquire or renew the leadership lease, or release it (`duration` zero).
    Lease {
        /// Echoed in the answer.
        request: u64,
        /// Zero: release.
        duration: Duration,
    },
    /// Keep this database record (only while this node holds the leader key).
    WriteRecord(DbRecord),
    /// Read the database record.
    ReadRecord,
}

/// While another node leads, ask again this often (so a released or expired key is taken
/// within this time).
pub const RETRY: Duration = Duration::from_millis(200);

/// Starts the client task; requests go in through the returned sender, answers come back to
/// the control loop as [`Input::Etcd`].
pub fn start(
    node: &str,
    cfg: &CoordinationConfig,
    inbox: Inbox,
) -> Result<mpsc::UnboundedSender<Request>, String> {
    let client = Client::new(node, cfg)?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, req_rx, inbox));
    Ok(req_tx)
}

async fn run(mut client: Client, mut rx: mpsc::UnboundedReceiver<Request>, inbox: Inbox) {
    let mut failures = 0u64;
    while let Some(first) = rx.recv().await {
        // Record requests are served in order. Of the lease requests only the newest matters
        // (the member ignores answers to older ones), but a release among them must still
        // happen; it comes after the record writes, which were sent while the lease was held.
        let mut records = Vec::new();
        let mut lease = None;
        let mut release = false;
        let mut next = Some(first);
        while let Some(req) = next {
            match req {
                Request::Lease { request, duration } => {
                    release |= duration.is_zero();
                    lease = Some((request, duration));
                }
                other => records.push(other),
            }
            next = rx.try_recv().ok();
        }
        let mut results = Vec::new();
        for req in records {
            let answer = match req {
                Request::WriteRecord(record) => client.write_record(&record).await,
                _ => client.read_record().await,
            };
            results.push(answer.map(Answer::Record));
        }
        if release && let Err(e) = client.release().await {
            tracing::warn!("etcd: releasing the leadership lease: {e}");
        }
        if let Some((request, _)) = lease.filter(|l| !l.1.is_zero()) {
            results.push(client.acquire(request).await);
        }
        for result in results {
            match result {
                Ok(answer) => {
                    if failures > 0 {
                        tracing::info!("etcd: reachable again");
                    }
                    failures = 0;
                    if inbox.send(Input::Etcd(answer)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    failures += 1;
                    // The first failure and then one in a hundred: the lease runs out
                    // meanwhile, and the verdict says so.
                    if failures % 100 == 1 {
                        tracing::warn!("etcd: {e}");
                    }
                }
            }
        }
    }
}

/// One etcd client: endpoints tried in turn, one kept-alive connection, one etcd lease.
struct Client {
    endpoints: Vec<Endpoint>,
    current: usize,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// `{prefix}/leader`, base64.
    key: String,
    /// `{prefix}/db`, base64.
    record_key: String,
    prefix: String,
    name: String,
    ttl: u64,
    lease: Option<String>,
    timeout: Duration,
}

impl Client {
    fn new(node: &str, cfg: &CoordinationConfig) -> Result<Client, String> {
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| duet_config::parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if endpoints.iter().any(|e| e.tls) {
            Some(tls_connector(cfg)?)
        } else {
            None
        };
        Ok(Client {
            endpoints,
            current: 0,
            tls,
            conn: None,
            key: base64(format!("{}/leader", cfg.prefix).as_bytes()),
            record_key: base64(format!("{}/db", cfg.prefix).as_bytes()),
            prefix: cfg.prefix.clone(),
            name: node.to_string(),
            ttl: cfg.lease.0.as_secs(),
            lease: None,
            // A third of the lease: a renewal that takes longer is no use.
            timeout: cfg.lease.0 / 3,
        })
    }

    async fn acquire(&mut self, request: u64) -> Result<Answer, String> {
        if let Some(id) = self.lease.clone() {
            let r = self
                .call("/v3/lease/keepalive", json!({ "ID": id }))
                .await?;
            // The gateway streams keepalive answers: {"result": {...}}; TTL 0 or none: expired.
            if int(&r["result"]["TTL"]) <= 0 {
                self.lease = None;
            }
        }
        if self.lease.is_none() {
            let r = self
                .call("/v3/lease/grant", json!({ "TTL": self.ttl.to_string() }))
                .await?;
            let id = r["ID"]
                .as_str()
                .ok_or_else(|| format!("lease grant without an ID: {r}"))?;
            self.lease = Some(id.to_string());
        }
        let lease = self.lease.clone().unwrap_or_default();
        let txn = json!({
            "compare": [{ "target": "CREATE", "key": self.key, "createRevision": "0" }],
            "success": [
                { "requestPut": {
                    "key": self.key, "value": base64(self.name.as_bytes()), "lease": lease } },
                { "requestRange": { "key": self.record_key } },
            ],
            "failure": [
                { "requestRange": { "key": self.key } },
                { "requestRange": { "key": self.record_key } },
            ],
        });
        let r = self.call("/v3/kv/txn", txn).await?;
        let record = self.record_in(&r["responses"][1]);
        let duration = Duration::from_secs(self.ttl);
        if r["succeeded"].as_bool() == Some(true) {
            return Ok(Answer::Granted {
                request,
                duration,
                term: int(&r["header"]["revision"]).max(0) as u64,
                record,
            });
        }
        let kv = &r["responses"][0]["response_range"]["kvs"][0];
        let term = int(&kv["create_revision"]).max(0) as u64;
        let holder = kv["value"]
            .as_str()
            .and_then(unbase64)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        if kv["lease"].as_str() == Some(lease.as_str()) && holder == self.name {
            return Ok(Answer::Granted {
                request,
                duration,
                term,
                record,
            });
        }
        // Held by another node (or by this node's previous run, until that lease expires), or
        // deleted between the compare and the read.
        Ok(Answer::Refused {
            request,
            holder,
            term,
            record,
        })
    }

    /// Writes `record` if this node holds the leader key under its etcd lease and the
    /// record's term is the key's create revision; answers with what etcd keeps afterwards.
    async fn write_record(&mut self, record: &DbRecord) -> Result<Option<DbRecord>, String> {
        let Some(lease) = self.lease.clone() else {
            tracing::warn!("etcd: database record not written: this node holds no etcd lease");
            return self.read_record().await;
        };
        let txn = json!({
            "compare": [
                { "target": "LEASE", "key": self.key, "lease": lease },
                { "target": "CREATE", "key": self.key,
                  "createRevision": record.term.to_string() },
            ],
            "success": [
                { "requestPut": {
                    "key": self.record_key, "value": base64(record_json(record).as_bytes()) } },
                { "requestRange": { "key": self.record_key } },
            ],
            "failure": [
                { "requestRange": { "key": self.record_key } },
                { "requestRange": { "key": self.record_key } },
            ],
        });
        let r = self.call("/v3/kv/txn", txn).await?;
        if r["succeeded"].as_bool() != Some(true) {
            tracing::warn!(
                "etcd: database record not written: the leader key is no longer this node's (term {})",
                record.term
            );
        }
        Ok(self.record_in(&r["responses"][1]))
    }

    async fn read_record(&mut self) -> Result<Option<DbRecord>, String> {
        let r = self
            .call("/v3/kv/range", json!({ "key": self.record_key }))
            .await?;
        Ok(self.record_in(&json!({ "response_range": r })))
    }

    /// The record in one range response of a transaction; an unreadable one is logged and
    /// counts as none (no standby is promoted on it).
    fn record_in(&self, response: &Value) -> Option<DbRecord> {
        let value = response["response_range"]["kvs"][0]["value"].as_str()?;
        match unbase64(value)
            .ok_or_else(|| "not base64".to_string())
            .and_then(|v| parse_record(&v))
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "etcd: {}/db holds no readable database record: {e}",
                    self.prefix
                );
                None
            }
        }
    }

    async fn release(&mut self) -> Result<(), String> {
        if let Some(id) = self.lease.take() {
            self.call("/v3/lease/revoke", json!({ "ID": id })).await?;
        }
        Ok(())
    }

    /// POSTs `body` to `path` on the current endpoint, moving to the next endpoint on failure.
    async fn call(&mut self, path: &str, body: Value) -> Result<Value, String> {
        let at = self.endpoints[self.current].clone();
        let result = tokio::time::timeout(self.timeout, self.post(&at, path, &body))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        result.map_err(|e| {
            self.conn = None;
            self.current = (self.current + 1) % self.endpoints.len();
            let scheme = if at.tls { "https" } else { "http" };
            format!("{scheme}://{}:{}{path}: {e}", at.host, at.port)
        })
    }

    async fn post(&mut self, at: &Endpoint, path: &str, body: &Value) -> Result<Value, String> {
        if self.conn.as_mut().is_none_or(|c| c.is_closed()) {
            self.conn = Some(self.connect(at).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        conn.ready().await.map_err(|e| causes(&e))?;
        let host = if at.host.contains(':') {
            format!("[{}]:{}", at.host, at.port)
        } else {
            format!("{}:{}", at.host, at.port)
        };
        let req = hyper::Request::post(path)
            .header("host", host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| causes(&e))?;
        let resp = conn.send_request(req).await.map_err(|e| causes(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| causes(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer ({e})"))
    }

    async fn connect(&self, at: &Endpoint) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((at.host.as_str(), at.port))
            .await
            .map_err(|e| causes(&e))?;
        let _ = tcp.set_nodelay(true);
        if at.tls {
            let Some(tls) = &self.tls else {
                return Err("no TLS configuration".into());
            };
            let name = ServerName::try_from(at.host.clone()).map_err(|e| causes(&e))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {}", causes(&e)))?;
            handshake(TokioIo::new(stream)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| causes(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub fn tls_connector(cfg: &CoordinationConfig) -> Result<tokio_rustls::TlsConnector, String> {
    let Some(ca) = &cfg.ca_file else {
        return Err("coordination.ca_file is required for https endpoints".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| causes(&e))?
        .with_root_certificates(roots);
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| causes(&e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// An error with its causes (`connection error: received fatal alert: BadCertificate`): hyper's
/// own message alone rarely says what went wrong.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The database record as `{prefix}/db` keeps it: one line of JSON, 64-bit numbers as
/// strings (as etcd's own JSON has them).
fn record_json(r: &DbRecord) -> String {
    json!({
        "system_id": r.system_id.to_string(),
        "primary": r.primary,
        "standby": r.standby,
        "term": r.term.to_string(),
    })
    .to_string()
}

fn parse_record(bytes: &[u8]) -> Result<DbRecord, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let text = |key: &str| {
        v[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{key:?} missing or not a string"))
    };
    let number = |key: &str| {
        text(key)?
            .parse::<u64>()
            .map_err(|e| format!("{key:?}: {e}"))
    };
    let record = DbRecord {
        system_id: number("system_id")?,
        primary: text("primary")?,
        standby: text("standby")?,
        term: number("term")?,
    };
    if record.primary.is_empty() {
        return Err("\"primary\" is empty".into());
    }
    Ok(record)
}

/// etcd's JSON carries 64-bit integers as strings.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (etcd's JSON carries keys and values so).
fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("/duet/leader", "L2R1ZXQvbGVhZGVy"),
            ("alpha", "YWxwaGE="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
            assert_eq!(unbase64(coded).unwrap(), plain.as_bytes());
        }
        assert_eq!(unbase64("a*b"), None);
    }

    #[test]
    fn errors_carry_their_causes() {
        let inner = std::io::Error::other("received fatal alert: CertificateRequired");
        let outer = std::io::Error::new(std::io::ErrorKind::ConnectionReset, inner);
        assert_eq!(causes(&outer), "received fatal alert: CertificateRequired");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection error")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrap(std::io::Error::other("certificate required"));
        assert_eq!(causes(&e), "connection error: certificate required");
    }

    #[test]
    fn records_round_trip_and_bad_ones_say_why() {
        let r = DbRecord {
            system_id: 7_350_000_000_000_000_001,
            primary: "alpha".into(),
            standby: "beta".into(),
            term: 42,
        };
        let text = record_json(&r);
        assert_eq!(
            text,
            r#"{"primary":"alpha","standby":"beta","system_id":"7350000000000000001","term":"42"}"#
        );
        assert_eq!(parse_record(text.as_bytes()), Ok(r));
        for (bad, why) in [
            ("", "not JSON"),
            ("{}", "\"system_id\" missing"),
            (
                r#"{"primary":"a","standby":"","system_id":"x","term":"1"}"#,
                "\"system_id\": invalid digit",
            ),
            (
                r#"{"primary":"","standby":"","system_id":"1","term":"1"}"#,
                "\"primary\" is empty",
            ),
            (
                r#"{"primary":"a","standby":3,"system_id":"1","term":"1"}"#,
                "\"standby\" missing or not a string",
            ),
        ] {
            let e = parse_record(bad.as_bytes()).unwrap_err();
            assert!(e.starts_with(why), "{bad}: {e}");
        }
    }

    #[test]
    fn integers_come_as_strings_or_numbers() {
        assert_eq!(int(&json!("7587899155695231749")), 7587899155695231749);
        assert_eq!(int(&json!(3)), 3);
        assert_eq!(int(&Value::Null), 0);
    }
}
