//! TLS termination with rustls: TLS 1.2 and 1.3, several certificates chosen by SNI, ALPN for
//! HTTP/2. Certificates are read when a balancer starts or reloads; connections already
//! established keep the configuration they were accepted with, so a reload drops nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS settings of a balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// The certificates; the first one answers clients whose SNI matches none (or who send no
    /// SNI).
    pub certificates: Vec<CertPaths>,
    /// Add `Strict-Transport-Security: max-age=…` to responses.
    pub hsts: Option<Duration>,
    /// Also listen here for plain HTTP and answer every request with a redirect to https.
    pub redirect_from: Option<std::net::SocketAddr>,
    /// Offer HTTP/2 by ALPN.
    pub http2: bool,
}

/// A certificate the resolver can offer.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
}

/// Picks the first certificate valid for the client's SNI, else the first one.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Loaded>,
}

impl SniResolver {
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let first = self.certs.first().map(|c| c.key.clone());
        let Some(name) = sni.and_then(|s| ServerName::try_from(s).ok()) else {
            return first;
        };
        self.certs
            .iter()
            .find(|c| {
                c.key.end_entity_cert().is_ok_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .map(|c| c.key.clone())
            .or(first)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// Reads one chain and key; errors name the file.
fn load(paths: &CertPaths) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|e| describe(&paths.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| describe(&paths.cert, e))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in the file",
            paths.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| describe(&paths.key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("{} with {}: {e}", paths.cert.display(), paths.key.display()))?;
    Ok(Loaded { key: Arc::new(key) })
}

fn describe(path: &Path, e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("{}: {io}", path.display()),
        Error::NoItemsFound => format!("{}: no PEM item of the expected kind", path.display()),
        other => format!("{}: {other:?}", path.display()),
    }
}

/// Builds an acceptor from the files named in `spec` (read now).
pub fn acceptor(spec: &TlsSpec) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs = spec
        .certificates
        .iter()
        .map(load)
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err("tls needs at least one certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = if spec.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
