//! The session service. CONTRACT STUB for the public API: keep every public item; implement
//! `LocalSessionService` (modules of your choosing under `src/`).
//!
//! The edge authenticates and binds, then talks to this service only through the
//! [`SessionService`] trait; the session delivers back to the edge only through the
//! [`ClientSink`] it was given. In a cluster both cross gRPC; here they are in-process.

use std::sync::Arc;

use async_trait::async_trait;
use xmpp::{Element, FullJid, StreamErrorCondition};

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
    async fn open(&self, jid: FullJid, sink: Arc<dyn ClientSink>) -> Result<SessionToken, SessionError>;

    /// A stanza (message, presence or iq, namespace `jabber:client`) from the client. The edge
    /// has already validated and stamped `from` with the full JID.
    async fn stanza(&self, jid: &FullJid, token: SessionToken, stanza: Element) -> Result<(), SessionError>;

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
    _todo: (),
}

impl LocalSessionService {
    pub fn new(
        _config: SessionConfig,
        _storage: storage::Storage,
        _router: Arc<dyn router::Router>,
    ) -> Arc<Self> {
        todo!()
    }
}

#[async_trait]
impl SessionService for LocalSessionService {
    async fn open(&self, _jid: FullJid, _sink: Arc<dyn ClientSink>) -> Result<SessionToken, SessionError> {
        todo!()
    }
    async fn stanza(&self, _jid: &FullJid, _token: SessionToken, _stanza: Element) -> Result<(), SessionError> {
        todo!()
    }
    async fn close(&self, _jid: &FullJid, _token: SessionToken) {
        todo!()
    }
}
