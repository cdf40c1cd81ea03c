//! TLS termination and HTTP/2 from clients, with real rustls clients and hyper's HTTP/2
//! client: SNI across two certificates, TLS 1.2 and 1.3, HSTS, the plain-HTTP redirect,
//! certificate reload without dropping a connection, and h2 streams forwarded to HTTP/1.1
//! backends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duet_proxy::{BalancerSpec, CertPaths, Mode, Proxy, TlsSpec};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

mod common;

use common::h1::{backend, connect_to, exchange};

/// A self-signed certificate for `name`, written as PEM into `dir`.
struct Cert {
    der: CertificateDer<'static>,
    paths: CertPaths,
}

fn cert(dir: &Path, name: &str) -> Cert {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    Cert {
        der: c.cert.der().clone(),
        paths: CertPaths { cert, key },
    }
}

/// A scratch directory, removed when the test ends (passed or not).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("duet-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn tls_spec(backends: &[SocketAddr], certs: &[&Cert]) -> BalancerSpec {
    BalancerSpec {
        tls: Some(TlsSpec {
            certificates: certs.iter().map(|c| c.paths.clone()).collect(),
            hsts: Some(Duration::from_secs(3600)),
            redirect_from: Some("127.0.0.1:0".parse().unwrap()),
            http2: true,
        }),
        ..common::spec(Mode::Http, backends)
    }
}

/// A client that trusts only `trusted`, offers `alpn`, and speaks only `versions`.
fn client_config(
    trusted: &Cert,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One HTTP/1.1 request on a TLS stream; returns the raw response text.
async fn h1_request(tls: &mut TlsStream<TcpStream>, path: &str, host: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    // The test backends answer with a Content-Length; read until the whole body is in.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
    }
}

/// An HTTP/2 connection to the proxy at `addr` (trusting `cert`), through hyper's client.
async fn h2_sender(
    addr: SocketAddr,
    cert: &Cert,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = handshake(addr, client_config(cert, &[b"h2"], BOTH), "a.test")
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn sni_picks_the_certificate_and_tls_12_and_13_both_work() {
    let dir = temp_dir("sni");
    let (a, b) = (cert(&dir, "a.test"), cert(&dir, "b.test"));
    let web = backend("web");
    let p = Proxy::start(tls_spec(&[web.addr], &[&a, &b])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        for (name, cert) in [("a.test", &a), ("b.test", &b)] {
            // Trusting only that name's certificate: the handshake succeeds only if SNI chose it.
            for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
                let config = client_config(cert, &[b"http/1.1"], &[version]);
                let mut tls = handshake(addr, config, name).await.unwrap();
                let conn = tls.get_ref().1;
                assert_eq!(conn.peer_certificates().unwrap()[0], cert.der, "{name}");
                assert_eq!(conn.protocol_version(), Some(version.version));
                let text = h1_request(&mut tls, "/proto", name).await;
                assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
                assert!(text.ends_with("\r\n\r\nhttps"), "backend saw https: {text}");
                assert!(
                    text.contains("Strict-Transport-Security: max-age=3600\r\n"),
                    "{text}"
                );
            }
        }
        // A name no certificate covers gets the first one (and fails verification as b).
        let wrong = handshake(addr, client_config(&b, &[], BOTH), "c.test").await;
        assert!(
            wrong.is_err(),
            "c.test must not verify against b's certificate"
        );
        let first = handshake(addr, client_config(&a, &[], BOTH), "a.test").await;
        assert!(first.is_ok());
    });
}

#[test]
fn plain_http_on_the_redirect_listener_gets_a_308_to_https() {
    let dir = temp_dir("redirect");
    let a = cert(&dir, "a.test");
    let web = backend("web");
    let p = Proxy::start(tls_spec(&[web.addr], &[&a])).unwrap();
    let mut c = connect_to(p.redirect_addr().unwrap());
    let r = exchange(&mut c, "GET /x/y?z=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n");
    assert_eq!(r.status, "HTTP/1.1 308 Permanent Redirect");
    let port = p.local_addr().port();
    let want = format!("https://a.test:{port}/x/y?z=1");
    assert_eq!(r.header("location"), Some(want.as_str()));
}

#[test]
fn a_certificate_reload_keeps_open_connections_and_serves_the_new_one() {
    let dir = temp_dir("reload");
    let old = cert(&dir, "a.test");
    let web = backend("web");
    let spec = tls_spec(&[web.addr], &[&old]);
    let p = Proxy::start(spec.clone()).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut open = handshake(addr, client_config(&old, &[], BOTH), "a.test")
            .await
            .unwrap();
        assert!(h1_request(&mut open, "/", "a.test").await.ends_with("web"));
        // Renew: new key and certificate in the same files, then reload.
        let renewed = cert(&dir, "a.test");
        p.reload(spec.clone()).unwrap();
        let fresh = handshake(addr, client_config(&renewed, &[], BOTH), "a.test")
            .await
            .unwrap();
        assert_eq!(
            fresh.get_ref().1.peer_certificates().unwrap()[0],
            renewed.der
        );
        // The connection made before the reload still works.
        assert!(h1_request(&mut open, "/", "a.test").await.ends_with("web"));
        // A broken certificate file is refused and the running one stays.
        std::fs::write(&renewed.paths.cert, "not a certificate").unwrap();
        let err = p.reload(spec).unwrap_err();
        assert!(format!("{err:?}").contains("a.test.pem"), "{err:?}");
        let still = handshake(addr, client_config(&renewed, &[], BOTH), "a.test").await;
        assert!(still.is_ok());
    });
}

#[test]
fn an_h2_client_gets_concurrent_streams_forwarded_to_http1_backends() {
    let dir = temp_dir("h2");
    let a = cert(&dir, "a.test");
    let (x, y) = (backend("x"), backend("y"));
    let p = Proxy::start(tls_spec(&[x.addr, y.addr], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let tls = handshake(
            addr,
            client_config(&a, &[b"h2", b"http/1.1"], BOTH),
            "a.test",
        )
        .await
        .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let send = |method: &str, path: &str, body: &'static str| {
            let mut sender = sender.clone();
            let req = hyper::Request::builder()
                .method(method)
                .uri(format!("https://a.test{path}"))
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            async move {
                let res = sender.send_request(req).await.unwrap();
                let status = res.status();
                let version = res.version();
                let hsts = res.headers().get("strict-transport-security").cloned();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    version,
                    hsts,
                    String::from_utf8(body.to_vec()).unwrap(),
                )
            }
        };
        // Eight concurrent streams on one connection, spread over both backends.
        let streams: Vec<_> = (0..8).map(|_| tokio::spawn(send("GET", "/", ""))).collect();
        let mut all = Vec::new();
        for s in streams {
            all.push(s.await.unwrap());
        }
        let mut names: Vec<String> = all.iter().map(|r| r.3.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names, ["x", "y"]);
        for (status, version, hsts, _) in &all {
            assert_eq!(*status, 200);
            assert_eq!(*version, hyper::Version::HTTP_2);
            assert_eq!(hsts.as_ref().unwrap(), "max-age=3600");
        }
        let (status, _, _, body) = send("POST", "/echo", "a body sent over h2").await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "a body sent over h2")
        );
        let (_, _, _, proto) = send("GET", "/proto", "").await;
        assert_eq!(proto, "https");
        let (_, _, _, xff) = send("GET", "/xff", "").await;
        assert_eq!(xff, "127.0.0.1");
        let (_, _, _, chunked) = send("GET", "/chunked", "").await;
        assert!(chunked == "x!" || chunked == "y!", "{chunked}");
        let (status, _, _, _) = send("GET", "/500", "").await;
        assert_eq!(status, 500);
    });
}

/// Whether the server closes `tls` within `within` (a read ends or fails).
async fn closed_within(tls: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tls.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[test]
fn https_keep_alive_honours_the_idle_timeout_and_stop() {
    let dir = temp_dir("idle");
    let a = cert(&dir, "a.test");
    let web = backend("web");
    let p = Proxy::start(BalancerSpec {
        http_timeouts: duet_proxy::HttpTimeouts {
            idle: Duration::from_millis(300),
            ..Default::default()
        },
        ..tls_spec(&[web.addr], &[&a])
    })
    .unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let config = client_config(&a, &[b"http/1.1"], BOTH);
        // Idle past the timeout: closed (well before the 30 s client timeout).
        let mut idle = handshake(addr, config.clone(), "a.test").await.unwrap();
        assert!(h1_request(&mut idle, "/", "a.test").await.ends_with("web"));
        assert!(
            closed_within(&mut idle, Duration::from_secs(3)).await,
            "an idle https keep-alive connection outlived the 300 ms idle timeout"
        );
        // A stop closes idle connections at once.
        let mut open = handshake(addr, config, "a.test").await.unwrap();
        assert!(h1_request(&mut open, "/", "a.test").await.ends_with("web"));
        p.stop();
        assert!(
            closed_within(&mut open, Duration::from_millis(250)).await,
            "stop left an idle https connection open"
        );
    });
}

#[test]
fn h2_requests_are_access_logged_and_expect_continue_is_answered() {
    let dir = temp_dir("h2log");
    let a = cert(&dir, "a.test");
    let web = backend("web");
    let log_path = dir.join("access.log");
    let log = duet_proxy::access_log::AccessLog::open(log_path.to_str().unwrap()).unwrap();
    let p = Proxy::start(BalancerSpec {
        access_log: Some(log),
        ..tls_spec(&[web.addr], &[&a])
    })
    .unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut sender = h2_sender(addr, &a).await;
        let req = hyper::Request::builder()
            .method("POST")
            .uri("https://a.test/echo")
            .header("expect", "100-continue")
            .body(Full::new(Bytes::from_static(b"sent after 100")))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"sent after 100");
    });
    // The log thread writes shortly after.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(text.contains("\"proto\":\"h2\""), "{text}");
    assert!(text.contains("\"method\":\"POST\""), "{text}");
    assert!(text.contains("\"status\":200"), "{text}");
    assert!(
        text.contains(&format!("\"backend\":\"{}\"", web.addr)),
        "{text}"
    );
}

#[test]
fn h2_clients_get_the_backends_early_hints_before_the_response() {
    let dir = temp_dir("h2hints");
    let a = cert(&dir, "a.test");
    let hints = common::strict::early_hints();
    let p = Proxy::start(tls_spec(&[hints.addr], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let tls = handshake(addr, client_config(&a, &[b"h2"], BOTH), "a.test")
            .await
            .unwrap();
        let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri("https://a.test/page")
            .body(())
            .unwrap();
        let (mut response, _) = send.send_request(req, true).unwrap();
        let mut interim = Vec::new();
        while let Some(r) = std::future::poll_fn(|cx| response.poll_informational(cx)).await {
            let r = r.unwrap();
            interim.push((r.status(), r.headers().get("link").cloned()));
        }
        assert_eq!(interim.len(), 1, "{interim:?}");
        assert_eq!(interim[0].0, 103);
        assert_eq!(interim[0].1.as_ref().unwrap(), "</s.css>; rel=preload");
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"/page");
    });
}

#[test]
fn h2_bodies_larger_than_the_flow_control_window_pass_both_ways() {
    let dir = temp_dir("h2big");
    let a = cert(&dir, "a.test");
    let web = backend("web");
    let p = Proxy::start(tls_spec(&[web.addr], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut sender = h2_sender(addr, &a).await;
        // 1 MiB, 16 times the default window: both directions must wait for WINDOW_UPDATEs.
        let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        let req = hyper::Request::builder()
            .method("POST")
            .uri("https://a.test/echo")
            .body(Full::new(Bytes::from(big.clone())))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), big.len());
        assert!(body[..] == big[..], "the echo differs");
    });
}

#[test]
fn h2_header_lists_beyond_the_head_limit_are_refused_and_not_forwarded() {
    let dir = temp_dir("h2big-head");
    let a = cert(&dir, "a.test");
    let web = common::strict::echo(common::strict::Prefer::Length);
    let p = Proxy::start(tls_spec(&[web.addr], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut sender = h2_sender(addr, &a).await;
        let req = hyper::Request::builder()
            .uri("https://a.test/huge")
            .header("x-big", "a".repeat(32 * 1024))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = sender.send_request(req).await;
        // Refused one way or another (431, or the stream reset), never answered by the backend.
        if let Ok(res) = answer {
            assert_eq!(res.status(), 431);
        }
        // The connection still serves a normal request.
        let mut sender = h2_sender(addr, &a).await;
        let req = hyper::Request::builder()
            .uri("https://a.test/small")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    });
    assert_eq!(
        web.record.count("/huge"),
        0,
        "a 32 KiB header list was forwarded"
    );
}

/// An h2 client of the crate that shows resets and interim responses, on a TLS connection to
/// `addr`.
async fn raw_h2(addr: SocketAddr, cert: &Cert) -> h2::client::SendRequest<Bytes> {
    let tls = handshake(addr, client_config(cert, &[b"h2"], BOTH), "a.test")
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send.ready().await.unwrap()
}

#[test]
fn h2_clients_that_stall_their_bodies_get_408_and_are_not_blamed_on_the_backend() {
    let dir = temp_dir("h2stall");
    let a = cert(&dir, "a.test");
    let web = backend("web");
    let p = Proxy::start(BalancerSpec {
        http_timeouts: duet_proxy::HttpTimeouts {
            client: Duration::from_millis(300),
            ..Default::default()
        },
        ..tls_spec(&[web.addr], &[&a])
    })
    .unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut send = raw_h2(addr, &a).await;
        // More than the passive-failure threshold (3): each announces 1000 bytes, sends 10 and
        // then nothing, while the connection stays open.
        let mut streams = Vec::new();
        for _ in 0..5 {
            let req = hyper::Request::builder()
                .method("POST")
                .uri("https://a.test/echo")
                .header("content-length", "1000")
                .body(())
                .unwrap();
            let (response, mut body) = send.send_request(req, false).unwrap();
            body.send_data(Bytes::from_static(b"0123456789"), false)
                .unwrap();
            streams.push((response, body));
            send = send.ready().await.unwrap();
        }
        for (response, _body) in streams {
            let status = tokio::time::timeout(Duration::from_secs(5), response)
                .await
                .expect("no answer to a stalled body")
                .map(|r| r.status());
            assert_eq!(status.unwrap(), 408);
        }
    });
    let b = &p.backends()[0].backend;
    assert!(
        b.stats.up.load(std::sync::atomic::Ordering::Relaxed),
        "the backend was taken out for the clients' stalls"
    );
    let errors: u64 = duet_proxy::ErrorKind::ALL
        .iter()
        .map(|&k| b.stats.errors_of(k))
        .sum();
    assert_eq!(errors, 0);
}

#[test]
fn a_reset_h2_stream_lets_its_backend_connection_go() {
    let dir = temp_dir("h2reset");
    let a = cert(&dir, "a.test");
    // A backend that reads a request and then only waits: it sees duet close the connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut c, &mut buf);
        let t = std::time::Instant::now();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let eof = matches!(std::io::Read::read(&mut c, &mut buf), Ok(0));
        let _ = closed_tx.send((eof, t.elapsed()));
    });
    let p = Proxy::start(tls_spec(&[backend], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut send = raw_h2(addr, &a).await;
        let req = hyper::Request::builder()
            .uri("https://a.test/slow")
            .body(())
            .unwrap();
        let (_response, mut stream) = send.send_request(req, true).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.send_reset(h2::Reason::CANCEL);
        // The client stays connected: only its reset may end the backend's request.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(send);
    });
    let (eof, after) = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend never saw its connection end");
    assert!(
        eof && after < Duration::from_secs(2),
        "the backend connection stayed {after:?} after the client's reset"
    );
}

#[test]
fn h2_requests_follow_the_http1_rules_on_their_way_to_a_backend() {
    let dir = temp_dir("h2rules");
    let a = cert(&dir, "a.test");
    let web = common::strict::echo(common::strict::Prefer::Length);
    let p = Proxy::start(tls_spec(&[web.addr], &[&a])).unwrap();
    let addr = p.local_addr();
    rt().block_on(async {
        let mut send = raw_h2(addr, &a).await;
        // Split cookies are joined; Proxy-Authorization is for this hop only.
        let req = hyper::Request::builder()
            .uri("https://a.test/cookies")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .body(())
            .unwrap();
        let (response, _) = send.send_request(req, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
        // Userinfo in the authority and schemes other than http(s) are refused, as HTTP/1.1
        // refuses them.
        for uri in ["https://user@a.test/x", "ftp://a.test/x"] {
            let mut send = raw_h2(addr, &a).await;
            let req = hyper::Request::builder().uri(uri).body(()).unwrap();
            let (response, _) = send.send_request(req, true).unwrap();
            assert_eq!(response.await.unwrap().status(), 400, "{uri}");
        }
    });
    let seen = web.record.last("/cookies").expect("forwarded");
    assert_eq!(seen.values("cookie"), ["a=1; b=2"]);
    assert!(seen.values("proxy-authorization").is_empty(), "{seen:?}");
    assert_eq!(web.record.count("/x"), 0);
}
