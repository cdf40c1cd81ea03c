//! Who may call what, over a real admin server: every endpoint with no token, a wrong one and
//! each role; the audit log's lines; the limit on failed authentications; HTTPS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use duet_admin::auth::{Access, Role, Token, token_hash};
use duet_admin::{Options, Published};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> Vec<Token> {
    [
        ("grafana", Role::Viewer, VIEWER),
        ("ops", Role::Operator, OPERATOR),
        ("root", Role::Admin, ADMIN),
    ]
    .into_iter()
    .map(|(name, role, secret)| Token {
        name: name.into(),
        role,
        sha256: token_hash(secret),
    })
    .collect()
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("duet-access-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn server(audit: &std::path::Path, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let access = Access::new(tokens(), vec!["/primary".into()], false, Some(audit)).unwrap();
    let options = Options {
        access,
        operator: Some(Arc::new(|action| Ok(format!("did {action:?}")))),
        names: Vec::new(),
        tls,
    };
    duet_admin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Published::default()),
        options,
    )
    .unwrap()
}

/// The status code of `method path` with `token`, from 127.0.0.1.
fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    call_from([127, 0, 0, 1], addr, method, path, token, "")
}

/// The same from another loopback address (each has its own failed-authentication count).
fn call_from(
    from: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> u16 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn each_role_on_each_endpoint() {
    let d = dir("matrix");
    let audit = d.join("audit.jsonl");
    let addr = server(&audit, None);
    // Every route of the API document, with the role it needs; /primary is public here.
    let doc: serde_json::Value = serde_json::from_str(duet_admin::OPENAPI).unwrap();
    // The bodies of the routes that take one.
    let bodies = [("/v1/maintenance", r#"{"enabled": true}"#)];
    let mut endpoints: Vec<(String, String, Option<Role>, &str)> = Vec::new();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let path = template
                .replace("{balancer}", "web")
                .replace("{backend}", "10.0.0.1:80");
            let need = match op["x-duet-role"].as_str().unwrap() {
                "public" => None,
                _ if path == "/primary" => None,
                role => Some(role.parse::<Role>().unwrap()),
            };
            let body = match bodies.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => b,
                None if op["requestBody"].is_null() => "",
                None => panic!("{path} takes a body: add one to the matrix"),
            };
            endpoints.push((method.to_uppercase(), path, need, body));
        }
    }
    assert!(endpoints.len() >= 12, "{endpoints:?}");
    let callers: [(&str, Option<&str>, Option<Role>); 5] = [
        ("nobody", None, None),
        ("a wrong token", Some("not-a-token-of-ours"), None),
        ("viewer", Some(VIEWER), Some(Role::Viewer)),
        ("operator", Some(OPERATOR), Some(Role::Operator)),
        ("admin", Some(ADMIN), Some(Role::Admin)),
    ];
    let mut posts = 0;
    let mut unauthenticated = 0;
    for (row, (method, path, need, body)) in endpoints.iter().enumerate() {
        let (method, path, need) = (method.as_str(), path.as_str(), *need);
        for (who, token, role) in callers {
            let got = call_from([127, 0, 0, 10 + row as u8], addr, method, path, token, body);
            // The health endpoints answer 503 here: this node has no database.
            let ok = if path == "/primary" || path == "/replica" || path == "/read-only" {
                503
            } else {
                200
            };
            let want = match (need, role, token) {
                (None, _, _) => ok,
                (Some(_), None, _) => 401,
                (Some(need), Some(role), _) if role >= need => ok,
                (Some(_), Some(_), _) => 403,
            };
            assert_eq!(got, want, "{who}: {method} {path}");
            if method == "POST" {
                posts += 1;
            } else if want == 401 {
                unauthenticated += 1;
            }
        }
    }
    // Every POST (done or refused) and every failed authentication is one audit line.
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), posts + unauthenticated, "{text}");
    let reload_by_root = lines
        .iter()
        .find(|l| l["path"] == "/v1/reload" && l["who"] == "root")
        .expect("root's reload is audited");
    assert_eq!(reload_by_root["ok"], true);
    assert_eq!(reload_by_root["role"], "admin");
    assert!(
        reload_by_root["from"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0."),
        "{reload_by_root}"
    );
    assert_eq!(reload_by_root["status"], 200);
    assert!(
        reload_by_root["result"]
            .as_str()
            .unwrap()
            .contains("Reload"),
        "{reload_by_root}"
    );
    let refused = lines
        .iter()
        .find(|l| l["path"] == "/v1/reload" && l["status"] == 403)
        .expect("a refused reload is audited");
    assert_eq!(refused["ok"], false);
    assert!(
        refused["result"].as_str().unwrap().contains("needs admin"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn guessing_tokens_gets_an_address_refused_for_a_while() {
    let d = dir("limit");
    let addr = server(&d.join("audit.jsonl"), None);
    for n in 0..duet_admin::auth::MAX_FAILURES {
        assert_eq!(
            call(addr, "GET", "/v1/status", Some(&format!("guess-{n}"))),
            401
        );
    }
    // The right token from the same address is refused too, for now.
    assert_eq!(call(addr, "GET", "/v1/status", Some(VIEWER)), 429);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn over_https_the_same_rules_hold() {
    let d = dir("tls");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(d.join("admin.pem"), cert.cert.pem()).unwrap();
    std::fs::write(d.join("admin.key"), cert.signing_key.serialize_pem()).unwrap();
    let tls = duet_admin::tls::server_config(&d.join("admin.pem"), &d.join("admin.key")).unwrap();
    let addr = server(&d.join("audit.jsonl"), Some(tls));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let get = |token: Option<&str>| {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            tls,
            "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = tls.read_to_string(&mut text);
        text
    };
    assert!(get(Some(VIEWER)).starts_with("HTTP/1.1 200"));
    assert!(get(None).starts_with("HTTP/1.1 401"));
    // Plain HTTP to the HTTPS port gets nothing useful.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(plain, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("\"node\""));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn maintenance_takes_a_json_body_and_says_what_is_wrong_with_a_bad_one() {
    let d = dir("body");
    let audit = d.join("audit.jsonl");
    let addr = server(&audit, None);
    let post = |body: &str| {
        call_from(
            [127, 0, 0, 1],
            addr,
            "POST",
            "/v1/maintenance",
            Some(OPERATOR),
            body,
        )
    };
    assert_eq!(post(r#"{"enabled": false}"#), 200);
    for bad in [
        "",
        "nope",
        r#"{"enabled": "yes"}"#,
        &format!("{{\"x\": \"{}\"}}", "a".repeat(2000)),
    ] {
        assert_eq!(post(bad), 400, "{bad:?}");
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0]["result"],
        "did Maintenance { enabled: false, by: \"ops\" }"
    );
    assert!(
        lines[2]["result"]
            .as_str()
            .unwrap()
            .contains("{\"enabled\": true|false}"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
