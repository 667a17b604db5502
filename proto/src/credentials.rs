//! [`GrpcCredentials`]: the edge's [`AccountStore`], over `GetCredentials`.
//!
//! The edge reads credentials (one lookup per login; SCRAM runs on the edge) and creates
//! accounts for XEP-0077 in-band registration (`CreateAccount`), so that is all the session
//! protocol carries. Every other write or listing method returns
//! `StorageError::Unavailable("not available over the session protocol")`: account
//! administration goes to the session node's own store (the `relais user` command).
//!
//! [`GrpcDomains`] reads the stored hosted domains of a session node (`ListDomains`).

use async_trait::async_trait;
use storage::{AccountStore, Credentials, StorageError};
use tonic::transport::Channel;
use xmpp::BareJid;

use crate::error::{ProtoError, status_to_storage_error};
use crate::pb::relais::session::v1 as pb;
use crate::pb::relais::session::v1::session_client::SessionClient;
use crate::wire::credentials_from_wire;

const NOT_CARRIED: &str = "not available over the session protocol";

/// Reads SCRAM credentials from a session node.
#[derive(Clone, Debug)]
pub struct GrpcCredentials {
    client: SessionClient<Channel>,
}

impl GrpcCredentials {
    /// A store on the node at `endpoint`; connects on first use.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self, ProtoError> {
        Self::connect_lazy_with(endpoint, &crate::ClientConfig::default())
    }

    /// A store at `endpoint` reached as `config` says (TLS, timeouts); connects on first use.
    pub fn connect_lazy_with(
        endpoint: impl Into<String>,
        config: &crate::ClientConfig,
    ) -> Result<Self, ProtoError> {
        let channel = crate::channel(endpoint.into(), config)?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        GrpcCredentials {
            client: SessionClient::new(channel),
        }
    }
}

fn not_carried<T>() -> storage::Result<T> {
    Err(StorageError::Unavailable(NOT_CARRIED.to_owned()))
}

#[async_trait]
impl AccountStore for GrpcCredentials {
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> storage::Result<()> {
        let mut client = self.client.clone();
        let req = pb::CreateAccountRequest {
            jid: jid.to_string(),
            keys: crate::wire::credentials_to_wire(Some(creds.clone())).keys,
        };
        match client.create_account(req).await {
            Ok(_) => Ok(()),
            Err(status) => Err(status_to_storage_error(&status)),
        }
    }

    async fn set_credentials(&self, _jid: &BareJid, _creds: &Credentials) -> storage::Result<()> {
        not_carried()
    }

    async fn get_credentials(&self, jid: &BareJid) -> storage::Result<Option<Credentials>> {
        let mut client = self.client.clone();
        let req = pb::CredentialsRequest {
            jid: jid.to_string(),
        };
        match client.get_credentials(req).await {
            Ok(reply) => credentials_from_wire(reply.into_inner()),
            Err(status) => {
                tracing::warn!(jid = %jid, error = %status, "credentials lookup failed");
                Err(status_to_storage_error(&status))
            }
        }
    }

    async fn delete_account(&self, _jid: &BareJid) -> storage::Result<()> {
        not_carried()
    }

    async fn list_accounts(&self, _domain: &str) -> storage::Result<Vec<BareJid>> {
        not_carried()
    }

    async fn account_exists(&self, _jid: &BareJid) -> storage::Result<bool> {
        not_carried()
    }
}

/// The hosted domains stored on a session node, over `ListDomains` (edges and routers poll
/// it: they have no storage).
#[derive(Clone, Debug)]
pub struct GrpcDomains {
    client: SessionClient<Channel>,
}

impl GrpcDomains {
    /// A reader of the node at `endpoint`; connects on first use.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self, ProtoError> {
        Self::connect_lazy_with(endpoint, &crate::ClientConfig::default())
    }

    /// A reader at `endpoint` reached as `config` says (TLS, timeouts); connects on first use.
    pub fn connect_lazy_with(
        endpoint: impl Into<String>,
        config: &crate::ClientConfig,
    ) -> Result<Self, ProtoError> {
        let channel = crate::channel(endpoint.into(), config)?;
        Ok(GrpcDomains {
            client: SessionClient::new(channel),
        })
    }

    /// The node's domain version and, when it differs from `known_version`, every stored
    /// domain (removed ones included). `None` records: unchanged.
    pub async fn list(
        &self,
        known_version: u64,
    ) -> storage::Result<(u64, Option<Vec<storage::DomainRecord>>)> {
        let mut client = self.client.clone();
        let reply = client
            .list_domains(pb::ListDomainsRequest { known_version })
            .await
            .map_err(|s| status_to_storage_error(&s))?
            .into_inner();
        let records = reply.changed.then(|| {
            reply
                .domains
                .into_iter()
                .map(crate::wire::domain_from_wire)
                .collect()
        });
        Ok((reply.version, records))
    }
}
