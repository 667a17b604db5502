//! TLS for client connections: certificates per domain chosen by SNI, self-signed certificates
//! generated on first start when none is configured, and the two rustls server configurations
//! (STARTTLS on 5222, direct TLS with ALPN `xmpp-client` on 5223, XEP-0368).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The RFC 9266 exporter label for `tls-exporter` channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    #[error("bad pem in {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("unusable private key in {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot generate a certificate for {domain}: {reason}")]
    Generate { domain: String, reason: String },
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Where one domain's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSource {
    /// A domain name, or `*.example.org` for a wildcard certificate.
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loads a PEM certificate chain and private key into a rustls `CertifiedKey`.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    let signing = aws_lc_rs::sign::any_supported_type(&key_der).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Returns the certificate and key paths for `domain` inside `dir`, generating a self-signed
/// certificate there first if none exists yet. The flag says whether one was generated.
pub fn ensure_self_signed(dir: &Path, domain: &str) -> Result<(CertSource, bool), TlsError> {
    let cert = dir.join(format!("{domain}.crt"));
    let key = dir.join(format!("{domain}.key"));
    let source = CertSource {
        domain: domain.to_owned(),
        cert: cert.clone(),
        key: key.clone(),
    };
    if cert.exists() && key.exists() {
        return Ok((source, false));
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write {
        path: dir.to_owned(),
        source: e,
    })?;
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate {
        domain: domain.to_owned(),
        reason: e.to_string(),
    })?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| TlsError::Write {
        path: cert.clone(),
        source: e,
    })?;
    Ok((source, true))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| TlsError::Write {
        path: path.to_owned(),
        source: e,
    })?;
    f.write_all(data).map_err(|e| TlsError::Write {
        path: path.to_owned(),
        source: e,
    })
}

/// Certificates by domain, chosen by SNI. Exact names win over wildcards; a client that sends
/// no SNI (or an unknown name) gets the default domain's certificate. Domains can be added and
/// removed while the server runs.
#[derive(Default)]
pub struct CertStore {
    inner: RwLock<CertMap>,
}

#[derive(Default)]
struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// The name whose certificate is the default (replacing it replaces the default).
    default_name: Option<String>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = match self.inner.read() {
            Ok(m) => m.exact.keys().chain(m.wildcard.keys()).cloned().collect(),
            Err(_) => Vec::new(),
        };
        f.debug_struct("CertStore").field("names", &names).finish()
    }
}

impl CertStore {
    /// Adds or replaces the certificate for `name` (`*.example.org` for a wildcard). The first
    /// one added becomes the default.
    pub fn insert(&self, name: &str, key: CertifiedKey) {
        let key = Arc::new(key);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Ok(mut map) = self.inner.write() else {
            return;
        };
        if map.default.is_none() || map.default_name.as_deref() == Some(name.as_str()) {
            map.default = Some(key.clone());
            map.default_name = Some(name.clone());
        }
        match name.strip_prefix("*.") {
            Some(base) => map.wildcard.insert(base.to_owned(), key),
            None => map.exact.insert(name, key),
        };
    }

    pub fn remove(&self, name: &str) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Ok(mut map) = self.inner.write() else {
            return;
        };
        match name.strip_prefix("*.") {
            Some(base) => map.wildcard.remove(base),
            None => map.exact.remove(&name),
        };
    }

    /// The certificate a client asking for `name` gets.
    pub fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let map = self.inner.read().ok()?;
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = map.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = map.wildcard.get(parent)
            {
                return Some(k.clone());
            }
        }
        map.default.clone()
    }
}

#[derive(Debug)]
struct SniResolver(Arc<CertStore>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.lookup(hello.server_name())
    }
}

/// The rustls configurations of the two client listeners.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For STARTTLS on the plain port.
    pub starttls: Arc<ServerConfig>,
    /// For direct TLS, with ALPN `xmpp-client` (XEP-0368).
    pub direct: Arc<ServerConfig>,
    pub certs: Arc<CertStore>,
}

impl TlsConfigs {
    pub fn new(certs: Arc<CertStore>) -> Result<Self, TlsError> {
        let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, TlsError> {
            let provider = Arc::new(aws_lc_rs::default_provider());
            let mut cfg = ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SniResolver(certs.clone())));
            cfg.alpn_protocols = alpn;
            // Tickets keep resumption cheap; a shared in-memory session cache is bounded.
            cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
            Ok(Arc::new(cfg))
        };
        Ok(TlsConfigs {
            starttls: build(Vec::new())?,
            direct: build(vec![b"xmpp-client".to_vec()])?,
            certs,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("relais-tls-{}", std::process::id()));
        let (src, generated) = ensure_self_signed(&dir, "example.test").unwrap();
        assert!(generated);
        let (_, again) = ensure_self_signed(&dir, "example.test").unwrap();
        assert!(!again, "second start must reuse the stored certificate");
        let key = load_certified_key(&src.cert, &src.key).unwrap();
        let store = CertStore::default();
        store.insert("example.test", key);
        assert!(store.lookup(Some("EXAMPLE.test")).is_some());
        assert!(
            store.lookup(None).is_some(),
            "no SNI gets the default certificate"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wildcard_and_exact_selection() {
        let dir = std::env::temp_dir().join(format!("relais-tls-w-{}", std::process::id()));
        let (a, _) = ensure_self_signed(&dir, "a.test").unwrap();
        let (b, _) = ensure_self_signed(&dir, "b.test").unwrap();
        let store = CertStore::default();
        let ka = load_certified_key(&a.cert, &a.key).unwrap();
        let kb = load_certified_key(&b.cert, &b.key).unwrap();
        let kb_cert = kb.cert.clone();
        store.insert("a.test", ka);
        store.insert("*.b.test", kb);
        assert_eq!(store.lookup(Some("chat.b.test")).unwrap().cert, kb_cert);
        assert_ne!(
            store.lookup(Some("b.test")).unwrap().cert,
            kb_cert,
            "wildcard covers one label"
        );
        store.remove("*.b.test");
        assert_ne!(store.lookup(Some("chat.b.test")).unwrap().cert, kb_cert);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let err = load_certified_key(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        );
        assert!(matches!(err, Err(TlsError::Read { .. })), "{err:?}");
    }
}
