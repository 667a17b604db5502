//! The session service: users' live state (resources, presence, roster) and delivery.
//!
//! Modules: `state` (per-user state and its sharded map), `route` (addressing, messages,
//! sessions), `iq` (IQs handled by the server), `presence` (broadcast, probes and the RFC 6121
//! subscription state machine of `subscription`), `build` (stanza builders), `clock`.
//!
//! The edge authenticates and binds, then talks to this service only through the
//! [`SessionService`] trait; the session delivers back to the edge only through the
//! [`ClientSink`] it was given. In a cluster both cross gRPC; here they are in-process.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use xmpp::{Element, FullJid, StreamErrorCondition};

mod build;
mod clock;
mod iq;
mod presence;
mod roster;
mod route;
mod state;
mod subscription;

/// What the session sends to one client connection.
#[derive(Clone, Debug, PartialEq)]
pub enum ToClient {
    /// A stanza to write to the client, `from`/`to` already set. Namespace `jabber:client`.
    Stanza(Element),
    /// Close the stream with this stream error (for example `<conflict/>` when a new session
    /// took this full JID).
    Close(StreamErrorCondition),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
    /// The connection's outbound queue is full (a slow client); the edge closes it.
    #[error("connection queue full")]
    Full,
}

/// The edge side of one bound session. `send` never blocks.
pub trait ClientSink: Send + Sync + 'static {
    fn send(&self, item: ToClient) -> Result<(), SinkError>;
}

/// Identifies one bound session, so a late `close` from a replaced connection cannot end
/// the session that replaced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionToken(pub u64);

/// A small code per error kind, mapped to XMPP errors (and later gRPC statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    ResourceConstraint,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The token does not name a live session (it was replaced or closed).
    #[error("no such session")]
    NoSession,
    /// A per-account limit (sessions per account) was hit.
    #[error("resource constraint: {0}")]
    ResourceConstraint(&'static str),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
}

impl SessionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::NoSession => ErrorCode::NotFound,
            SessionError::ResourceConstraint(_) => ErrorCode::ResourceConstraint,
            SessionError::Storage(_) => ErrorCode::Unavailable,
        }
    }
}

#[async_trait]
pub trait SessionService: Send + Sync + 'static {
    /// Registers a freshly bound resource. If the full JID is already bound, the old session
    /// gets `ToClient::Close(Conflict)` and is replaced (RFC 6120 §7.7.2.2).
    async fn open(
        &self,
        jid: FullJid,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SessionToken, SessionError>;

    /// A stanza (message, presence or iq, namespace `jabber:client`) from the client. The edge
    /// has already validated and stamped `from` with the full JID.
    async fn stanza(
        &self,
        jid: &FullJid,
        token: SessionToken,
        stanza: Element,
    ) -> Result<(), SessionError>;

    /// The connection ended. If the session had sent available presence and never
    /// unavailable, contacts get unavailable presence. A stale token is ignored.
    async fn close(&self, jid: &FullJid, token: SessionToken);
}

/// Settings of the local session service.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The domains this server hosts.
    pub domains: Vec<String>,
    /// Offline messages kept per account (XEP-0160); past it the sender gets an error.
    pub offline_quota: usize,
    /// Answer XEP-0092 version queries.
    pub version_enabled: bool,
    /// The most bound resources per account.
    pub max_resources: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            domains: vec!["localhost".to_owned()],
            offline_quota: 1000,
            version_enabled: true,
            max_resources: 16,
        }
    }
}

/// The in-process session service.
pub struct LocalSessionService {
    config: SessionConfig,
    /// `config.domains`, prepared like JID domainparts.
    domains: Vec<String>,
    storage: storage::Storage,
    router: Arc<dyn router::Router>,
    users: state::Users,
    next_token: AtomicU64,
    next_id: AtomicU64,
}

impl LocalSessionService {
    pub fn new(
        config: SessionConfig,
        storage: storage::Storage,
        router: Arc<dyn router::Router>,
    ) -> Arc<Self> {
        let domains = config
            .domains
            .iter()
            .map(|d| match xmpp::BareJid::domain_only(d) {
                Ok(j) => j.domain().to_owned(),
                Err(_) => d.to_lowercase(),
            })
            .collect();
        Arc::new(LocalSessionService {
            config,
            domains,
            storage,
            router,
            users: state::Users::new(),
            next_token: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
        })
    }

    /// How many users currently have live state (bound resources, or a stanza in flight).
    pub fn live_users(&self) -> usize {
        self.users.len()
    }
}

#[async_trait]
impl SessionService for LocalSessionService {
    async fn open(
        &self,
        jid: FullJid,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SessionToken, SessionError> {
        self.open_session(jid, sink).await
    }
    async fn stanza(
        &self,
        jid: &FullJid,
        token: SessionToken,
        stanza: Element,
    ) -> Result<(), SessionError> {
        self.client_stanza(jid, token, stanza).await
    }
    async fn close(&self, jid: &FullJid, token: SessionToken) {
        self.close_session(jid, token).await
    }
}
