//! The admin listener: the `[admin]` config section and the one port that serves the admin
//! API both as gRPC (`relais.admin.v1`, for `relais admin`) and as HTTP/JSON (for hosting
//! panels), optionally over TLS with client certificates.
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:5280"       # off when unset
//! # tls_cert = "/etc/relais/admin.crt"  # TLS on the admin port (with tls_key)
//! # tls_key = "/etc/relais/admin.key"
//! # client_ca = "/etc/relais/admin-ca.crt"  # require client certificates signed by it
//! [[admin.tokens]]
//! sha256 = "…"                    # `relais admin token` prints a token and its hash
//! scope = "global"                # or a domain name
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ::admin::{AdminService, Tokens};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::{Config, ConfigError, Validated};

/// The `[admin]` section.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// The admin API's address, like 127.0.0.1:5280 (gRPC and HTTP/JSON on one port). Off
    /// when unset.
    pub listen: Option<String>,
    /// Who may call it.
    pub tokens: Vec<TokenEntry>,
    /// TLS on the admin port: a PEM certificate chain (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (needs `tls_cert`).
    pub client_ca: Option<PathBuf>,
}

/// One `[[admin.tokens]]` entry: the token is never stored, only its SHA-256.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Lowercase or uppercase hex of the token's SHA-256.
    pub sha256: String,
    /// `global`, or the one domain the token may act on.
    pub scope: String,
}

/// The checked `[admin]` section, when the listener is on.
#[derive(Clone, Debug)]
pub struct AdminValidated {
    pub addr: SocketAddr,
    pub tokens: Arc<Tokens>,
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl AdminSection {
    /// Checks the section; `None` when the listener is off.
    pub fn validate(&self) -> Result<Option<AdminValidated>, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let tokens = Tokens::new(
            self.tokens
                .iter()
                .map(|t| (t.sha256.as_str(), t.scope.as_str())),
        )
        .map_err(|e| ConfigError::Invalid(format!("admin.tokens: {e}")))?;
        let Some(listen) = self
            .listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        else {
            if self.tls_cert.is_some() || self.client_ca.is_some() {
                return bad("admin.tls_cert and admin.client_ca need admin.listen".into());
            }
            return Ok(None);
        };
        let Ok(addr) = listen.parse::<SocketAddr>() else {
            return bad(format!(
                "admin.listen: `{listen}` is not an address like 127.0.0.1:5280"
            ));
        };
        if tokens.is_empty() {
            return bad(
                "admin.listen is set but there is no [[admin.tokens]] entry; create one with `relais admin token`"
                    .into(),
            );
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            }),
            (None, None) => {
                if self.client_ca.is_some() {
                    return bad("admin.client_ca needs admin.tls_cert and admin.tls_key".into());
                }
                None
            }
            _ => return bad("admin.tls_cert and admin.tls_key go together".into()),
        };
        if let Some(t) = &tls {
            for (what, p) in [("tls_cert", Some(&t.cert)), ("tls_key", Some(&t.key))]
                .into_iter()
                .chain([("client_ca", t.client_ca.as_ref())])
            {
                if let Some(p) = p
                    && !p.is_file()
                {
                    return bad(format!("admin.{what}: {} does not exist", p.display()));
                }
            }
        }
        Ok(Some(AdminValidated {
            addr,
            tokens: Arc::new(tokens),
            tls,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Starts the admin listener when `[admin] listen` is set: the local admin API of this
/// process (its storage, its session service) until `stop`.
///
/// Domains go to the durable domain store and the live registry (`StoredDomains`), so a change
/// reaches every role (they poll the store's version).
#[allow(clippy::too_many_arguments)]
pub async fn spawn(
    cfg: &Config,
    v: &Validated,
    store: storage::Storage,
    registry: Arc<session::Domains>,
    sessions: Arc<session::LocalSessionService>,
    node: &str,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), AdminListenError> {
    let Some(a) = cfg.admin.validate()? else {
        return Ok(());
    };
    let _ = v;
    let domains = Arc::new(StoredDomains {
        store: store.domains.clone(),
        registry,
    });
    let service: Arc<dyn AdminService> = ::admin::LocalAdmin::with_iterations(
        store,
        sessions,
        domains,
        node,
        cfg.auth.scram_iterations,
    );
    let app = app(service, a.tokens.clone());
    let listener = TcpListener::bind(a.addr)
        .await
        .map_err(|source| AdminListenError::Bind {
            addr: a.addr,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(a.addr);
    let mut stop = stop.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match &a.tls {
        None => {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::warn!(error = %e, "admin listener failed");
                }
            }));
        }
        Some(files) => {
            let acceptor = TlsAcceptor::from(tls_config(files)?);
            let tls = TlsListener::start(listener, acceptor, local);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(tls, app).with_graceful_shutdown(shutdown).await {
                    tracing::warn!(error = %e, "admin listener failed");
                }
            }));
        }
    }
    // A stable line on stdout, for scripts and tests that listen on port 0.
    println!("relais: admin listening on {local}");
    tracing::info!(%local, listener = "admin", tls = a.tls.is_some(), mtls = a.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), "listening");
    Ok(())
}

/// One router for both mappings: gRPC under `/relais.admin.v1.Admin/`, JSON under `/v1/`,
/// and a JSON 404 for anything else.
pub fn app(service: Arc<dyn AdminService>, tokens: Arc<Tokens>) -> axum::Router {
    let grpc = proto::AdminGrpcServer::new(service.clone(), tokens.clone())
        .routes()
        .into_axum_router();
    // tonic's router brings a gRPC `unimplemented` fallback; the JSON 404 replaces it (a
    // gRPC client reads an HTTP 404 as UNIMPLEMENTED all the same).
    ::admin::http::router(::admin::http::HttpState { service, tokens })
        .merge(grpc)
        .fallback(::admin::http::not_found)
}

fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, AdminListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |m: String| AdminListenError::Tls(m);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err(format!("cannot read {}: {e}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| err(format!("cannot read {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err(format!("cannot read {}: {e}", ca.display())))?;
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| err(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| err(format!("client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| err(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands axum finished TLS connections. Handshakes run in their own tasks
/// (with a time limit), so a slow or failing client never holds up the others.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor, local: SocketAddr) -> TlsListener {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = tx.closed() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "admin accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "admin tls handshake failed");
                        }
                        Err(_) => tracing::info!(%peer, "admin tls handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The admin API's domains: the storage's domain store and the live registry, through the
/// same functions as `relais domain …` (`session::domains`). Ending the sessions of a removed
/// domain and deleting a purged domain's accounts is `LocalAdmin`'s part.
struct StoredDomains {
    store: Arc<dyn storage::DomainStore>,
    registry: Arc<session::Domains>,
}

fn to_stored(s: &::admin::DomainSettings) -> storage::DomainSettings {
    storage::DomainSettings {
        registration_open: s.registration_open,
        archive_retention_days: s.archive_retention_days,
        max_accounts: s.max_accounts.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        max_sessions_per_account: s.max_sessions_per_account,
        offline_quota: s.offline_quota,
    }
}

fn from_stored(s: &storage::DomainSettings) -> ::admin::DomainSettings {
    ::admin::DomainSettings {
        registration_open: s.registration_open,
        archive_retention_days: s.archive_retention_days,
        max_accounts: s.max_accounts.map(u64::from),
        max_sessions_per_account: s.max_sessions_per_account,
        offline_quota: s.offline_quota,
    }
}

fn domain_error(e: session::domains::DomainError) -> ::admin::AdminError {
    use ::admin::AdminError;
    use session::domains::DomainErrorCode as C;
    let m = e.to_string();
    match e.code() {
        C::InvalidArgument => AdminError::InvalidArgument(m),
        C::AlreadyExists => AdminError::AlreadyExists(m),
        C::NotFound => AdminError::NotFound(m),
        C::FailedPrecondition => AdminError::FailedPrecondition(m),
        C::Unavailable => AdminError::Unavailable(m),
    }
}

#[async_trait::async_trait]
impl ::admin::DomainControl for StoredDomains {
    async fn list(&self) -> ::admin::Result<Vec<::admin::DomainInfo>> {
        Ok(self
            .registry
            .names()
            .into_iter()
            .map(|name| {
                let settings = self
                    .registry
                    .settings(&name)
                    .map(|s| from_stored(&s))
                    .unwrap_or_default();
                ::admin::DomainInfo { name, settings }
            })
            .collect())
    }

    async fn add(&self, domain: &str, settings: &::admin::DomainSettings) -> ::admin::Result<()> {
        session::domains::add_domain(
            self.store.as_ref(),
            &self.registry,
            domain,
            to_stored(settings),
        )
        .await
        .map(drop)
        .map_err(domain_error)
    }

    async fn update(
        &self,
        domain: &str,
        settings: &::admin::DomainSettings,
    ) -> ::admin::Result<()> {
        session::domains::update_domain(
            self.store.as_ref(),
            &self.registry,
            domain,
            to_stored(settings),
        )
        .await
        .map(drop)
        .map_err(domain_error)
    }

    async fn remove(&self, domain: &str) -> ::admin::Result<()> {
        session::domains::remove_domain(self.store.as_ref(), &self.registry, None, domain)
            .await
            .map(drop)
            .map_err(domain_error)
    }

    async fn purge(&self, domain: &str) -> ::admin::Result<()> {
        if self.registry.contains(domain) {
            self.remove(domain).await?;
        }
        session::domains::purge_domain(self.store.as_ref(), &self.registry, domain)
            .await
            .map(drop)
            .map_err(domain_error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn section(toml: &str) -> Result<Option<AdminValidated>, String> {
        let c = Config::parse(toml)?;
        c.admin.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn the_admin_listener_is_off_by_default() {
        assert!(section("").unwrap().is_none());
    }

    #[test]
    fn tokens_and_addresses_are_checked() {
        let h = ::admin::auth::token_sha256_hex("t");
        let ok = section(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nsha256 = \"{h}\"\nscope = \"global\"\n[[admin.tokens]]\nsha256 = \"{h}\"\nscope = \"example.org\"\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(ok.addr.ip().to_string(), "127.0.0.1");
        assert!(ok.tls.is_none());
        let e = section("[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(e.contains("relais admin token"), "{e}");
        let e = section("[admin]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("admin.listen"), "{e}");
        let e = section(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nsha256 = \"plain-token\"\nscope = \"global\"\n",
        )
        .unwrap_err();
        assert!(e.contains("64 hex"), "{e}");
        let e = section(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"/nonexistent.crt\"\n[[admin.tokens]]\nsha256 = \"{h}\"\nscope = \"global\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = section(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"/nonexistent.crt\"\ntls_key = \"/nonexistent.key\"\n[[admin.tokens]]\nsha256 = \"{h}\"\nscope = \"global\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = section("[admin]\ntoken = 1\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
