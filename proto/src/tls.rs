//! Mutual TLS between cluster roles. Every gRPC server of a cluster presents its node
//! certificate and requires a client certificate signed by the cluster CA; every client
//! presents its node certificate and accepts only a server certificate signed by the same CA
//! for the cluster's [`ClusterTls::server_name`]. Holding a certificate of the cluster CA is
//! what makes a process a member of the cluster: nothing else is checked on these calls.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The name every node certificate carries (as a DNS subject alternative name) unless the
/// configuration says otherwise. Clients check it instead of the peer's address, which in a
/// cluster is a pod IP or a host name that certificates cannot know in advance.
pub const DEFAULT_SERVER_NAME: &str = "relais-cluster";

/// How long a server waits for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the cluster TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(&'static str),
    #[error("the key holds no PEM private key")]
    NoKey,
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// The cluster CA, this node's certificate chain and key, and the name servers are checked
/// against. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    ca: Certificate,
    identity: Identity,
    server_name: String,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// From PEM text: the CA certificate(s), this node's certificate chain, its private key.
    pub fn from_pem(
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        server_name: &str,
    ) -> Result<Self, TlsError> {
        // Checked here so that a bad file stops the start, not the first call.
        let certs = |what: &'static str, pem: &[u8]| {
            let n = CertificateDer::pem_slice_iter(pem)
                .filter_map(Result::ok)
                .count();
            if n == 0 {
                Err(TlsError::NoCertificate(what))
            } else {
                Ok(())
            }
        };
        certs("the CA file", ca)?;
        certs("the certificate file", cert)?;
        PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::NoKey)?;
        if rustls::pki_types::ServerName::try_from(server_name).is_err() {
            return Err(TlsError::ServerName(server_name.to_owned()));
        }
        Ok(ClusterTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            server_name: server_name.to_owned(),
        })
    }

    /// Reads the three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path, server_name: &str) -> Result<Self, TlsError> {
        let read = |what: &'static str, p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                what,
                path: p.display().to_string(),
                source,
            })
        };
        Self::from_pem(
            &read("cluster CA", ca)?,
            &read("cluster certificate", cert)?,
            &read("cluster key", key)?,
            server_name,
        )
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// A server that requires a client certificate of the cluster CA.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        install_provider();
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(false)
            // A connection that stalls its handshake is dropped instead of holding a task.
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A client that presents this node's certificate and trusts only the cluster CA.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        install_provider();
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(self.server_name.clone())
    }
}

/// tonic builds its rustls configurations with the process's default provider: make it
/// aws-lc-rs (the only one this workspace's rustls is built with) before the first one.
fn install_provider() {
    // An error means a provider is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
