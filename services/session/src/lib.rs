//! The session service: users' live state (resources, presence, roster) and delivery.
//!
//! Modules: `state` (per-user state and its sharded map), `route` (addressing, messages,
//! sessions), `iq` (IQs handled by the server), `presence` (broadcast, probes and the RFC 6121
//! subscription state machine of `subscription`), `sm` (XEP-0198 stream management: counters,
//! the unacknowledged queue, detach and resume), `build` (stanza builders), `clock`.
//!
//! The edge authenticates and binds, then talks to this service only through the
//! [`SessionService`] trait; the session delivers back to the edge only through the
//! [`ClientSink`] it was given. In a cluster both cross gRPC; here they are in-process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tracing::Instrument;
use xmpp::{BareJid, Element, FullJid, StreamErrorCondition};

pub mod admin;
mod build;
mod clock;
pub mod domains;
mod iq;
mod mam;
mod node;
mod presence;
mod roster;
mod route;
mod sm;
mod state;
mod subscription;

pub use domains::{Domains, DomainsSnapshot, LimitedAccounts};
pub use node::LiveResource;
pub use route::NOT_OWNER;
pub use sm::{NS_SM, resume_id_owner};

/// The `tracing` target of the per-stanza spans every role opens (`edge.stanza`,
/// `session.route`, `router.relay`, ...). The binary sends this target to the OpenTelemetry
/// exporter only, and only when one is configured: without it these spans are disabled at
/// their call site and cost next to nothing.
pub const TRACE_TARGET: &str = "relais_trace";

/// The span of one stanza's routing on a session node (`origin`: `client` or `peer`).
pub(crate) fn route_span(st: &Element, origin: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "session.route",
        "stanza.kind" = st.name(),
        "stanza.type" = st.get_attr("type"),
        origin,
    )
}

/// What the session sends to one client connection.
#[derive(Clone, Debug, PartialEq)]
pub enum ToClient {
    /// A stanza to write to the client, `from`/`to` already set. Namespace `jabber:client`;
    /// the one exception is XEP-0198's `<enabled/>`, which `enable_sm` sends this way so that
    /// it lands exactly where counting starts.
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

    /// The edge node and connection id behind this sink, when it crosses a cluster link
    /// (for the session directory).
    fn origin(&self) -> Option<(String, u64)> {
        None
    }
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
    Unsupported,
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
    /// The operation is not supported by this implementation.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// XEP-0198 resumption failed: unknown or expired id, or another account's (the edge
    /// answers `<failed><item-not-found/></failed>`).
    #[error("cannot resume: {0}")]
    ResumeFailed(&'static str),
    /// The session service cannot be reached (a gRPC stream is down).
    #[error("session service unavailable: {0}")]
    Unavailable(String),
}

impl SessionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::NoSession => ErrorCode::NotFound,
            SessionError::ResourceConstraint(_) => ErrorCode::ResourceConstraint,
            SessionError::Storage(_) | SessionError::Unavailable(_) => ErrorCode::Unavailable,
            SessionError::Unsupported(_) => ErrorCode::Unsupported,
            SessionError::ResumeFailed(_) => ErrorCode::NotFound,
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
    /// unavailable, contacts get unavailable presence. A stale token is ignored. With stream
    /// management, the messages the client never acknowledged go to offline storage
    /// (XEP-0198 §5: the server treats them as undelivered).
    async fn close(&self, jid: &FullJid, token: SessionToken);

    /// XEP-0198: the client sent `<enable/>` on this session. From now on the service counts
    /// the stanzas it delivers to this session, keeps each one until the client acknowledges
    /// it, and counts the stanzas it receives through `stanza`. With `resume`, it returns a
    /// resumption id (which names the bare JID, so a cluster can route a resume to the owning
    /// node) and how long a detached session is kept.
    ///
    /// The `<enabled/>` element is not written by the edge: the service sends it through the
    /// session's sink (as `ToClient::Stanza`), at the exact point from which it counts, so no
    /// stanza delivered just before or after can be miscounted. The edge writes it like any
    /// other item and only keeps the returned values. On error nothing was sent.
    async fn enable_sm(
        &self,
        _jid: &FullJid,
        _token: SessionToken,
        _resume: bool,
    ) -> Result<SmEnabled, SessionError> {
        Err(SessionError::Unsupported("stream management"))
    }

    /// XEP-0198: the client acknowledged `h` stanzas in total (`<a h='…'/>`). Acknowledged
    /// stanzas are forgotten; an `h` larger than what was sent is an error
    /// (`Unsupported("h too large")`), which the edge turns into `<undefined-condition/>`.
    async fn sm_ack(
        &self,
        _jid: &FullJid,
        _token: SessionToken,
        _h: u32,
    ) -> Result<(), SessionError> {
        Err(SessionError::Unsupported("stream management"))
    }

    /// XEP-0198: how many stanzas the session has taken from the client on this session (the
    /// `h` the edge answers an `<r/>` with). Every stanza the edge handed over before this
    /// call has been routed when it answers, so the count covers only stanzas the session
    /// node holds: the edge never acknowledges a stanza that a dying node may have lost.
    async fn sm_received(&self, _jid: &FullJid, _token: SessionToken) -> Result<u32, SessionError> {
        Err(SessionError::Unsupported("stream management"))
    }

    /// The connection was lost without a clean close. A session with resumable stream
    /// management stays bound (its presence unchanged) for its resumption time, queueing what
    /// arrives; after that it ends as in `close`, and every unacknowledged message goes to
    /// offline storage, never to the floor. Other sessions end as in `close` (which also
    /// stores the unacknowledged messages of a non-resumable stream-managed session).
    async fn detach(&self, jid: &FullJid, token: SessionToken) {
        self.close(jid, token).await;
    }

    /// XEP-0198 `<resume/>` on a new connection authenticated as `account`. On success the
    /// detached (or still attached: the old connection is closed) session moves to `sink`,
    /// everything the client has not acknowledged after `h` is sent again through `sink`, and
    /// the reply carries the full JID, a new token and the count of stanzas the server has
    /// received from the client (the edge answers `<resumed h='…'/>` with it).
    async fn sm_resume(
        &self,
        _account: &BareJid,
        _id: &str,
        _h: u32,
        _sink: Arc<dyn ClientSink>,
    ) -> Result<SmResumed, SessionError> {
        Err(SessionError::Unsupported("stream management"))
    }
}

/// The answer to `enable_sm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmEnabled {
    /// The resumption id, when resumption was requested and is allowed.
    pub id: Option<String>,
    /// Seconds a detached session is kept for resumption.
    pub max_secs: u32,
}

/// The answer to `sm_resume`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmResumed {
    pub jid: FullJid,
    pub token: SessionToken,
    /// Stanzas the server has received from the client on this session.
    pub server_h: u32,
}

/// Settings of the local session service.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The domains this server hosts.
    pub domains: Vec<String>,
    /// Offline messages kept per account (XEP-0160); past it the sender gets an error.
    pub offline_quota: usize,
    /// Bytes of offline messages kept per account (the stored XML); past it the sender gets
    /// an error as for the count.
    pub offline_quota_bytes: usize,
    /// Answer XEP-0092 version queries.
    pub version_enabled: bool,
    /// The most bound resources per account (a domain's `max_sessions_per_account` wins).
    pub max_resources: usize,
    /// XEP-0198: seconds a resumable session whose connection was lost stays bound, waiting
    /// for `<resume/>`. 0 disables resumption.
    pub sm_resume_secs: u32,
    /// XEP-0198: the most unacknowledged stanzas kept per session; past it the session is
    /// closed with `<policy-violation/>` (unacknowledged messages go to offline storage).
    pub sm_max_unacked: usize,
    /// XEP-0198: the most bytes (approximately) of unacknowledged stanzas kept per session.
    pub sm_max_unacked_bytes: usize,
    /// XEP-0198: a chat or normal message with a body delivered to a stream-managed session
    /// is first written to offline storage and removed when acknowledged, so that no
    /// acknowledged message dies with a session node's memory. Off: the unacknowledged queue
    /// is in memory only and reaches offline storage when the session ends cleanly.
    pub durable_sm_queue: bool,
    /// XEP-0313: archive 1:1 messages and answer MAM queries. Off: nothing is archived, MAM
    /// is not advertised and its queries get `<service-unavailable/>`.
    pub archive_enabled: bool,
    /// XEP-0313: days archived messages are kept (`expire_archive`); `None` keeps them.
    pub archive_retention_days: Option<u32>,
    /// Days offline messages are kept (`expire_offline`); `None` keeps them.
    pub offline_retention_days: Option<u32>,
    /// The most items one roster holds; adding past it is refused with `<not-allowed/>`.
    pub max_roster_items: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            domains: vec!["localhost".to_owned()],
            offline_quota: 1000,
            offline_quota_bytes: 10 * 1024 * 1024,
            version_enabled: true,
            max_resources: 16,
            sm_resume_secs: 300,
            sm_max_unacked: 1000,
            sm_max_unacked_bytes: 512 * 1024,
            durable_sm_queue: true,
            archive_enabled: true,
            archive_retention_days: None,
            offline_retention_days: None,
            max_roster_items: 1000,
        }
    }
}

/// Which session node owns an account, for a service that is one node of a cluster.
pub trait Locality: Send + Sync + 'static {
    /// True when this node owns `account` (its live state and delivery live here).
    fn is_local(&self, account: &BareJid) -> bool;
}

/// The in-process session service.
pub struct LocalSessionService {
    /// In a cluster, which accounts this node owns; `None` in standalone mode (all of them).
    locality: Option<Arc<dyn Locality>>,
    /// This service, for the tasks it spawns (resumption timeouts).
    me: Weak<LocalSessionService>,
    config: SessionConfig,
    /// The hosted domains (the configured ones, and those added at runtime).
    registry: Arc<Domains>,
    storage: storage::Storage,
    router: Arc<dyn router::Router>,
    users: state::Users,
    next_token: AtomicU64,
    next_id: AtomicU64,
    /// Unacknowledged XEP-0198 stanzas over all sessions (see [`Self::sm_unacked`]).
    sm_unacked: Arc<AtomicU64>,
}

impl LocalSessionService {
    pub fn new(
        config: SessionConfig,
        storage: storage::Storage,
        router: Arc<dyn router::Router>,
    ) -> Arc<Self> {
        Self::with_locality(config, storage, router, None)
    }

    /// A session service that is one node of a cluster: stanzas for accounts of hosted domains
    /// that `locality` says live on another node go to `router` (which carries them to the
    /// owning node's [`LocalSessionService::deliver_from_peer`]).
    pub fn with_locality(
        config: SessionConfig,
        storage: storage::Storage,
        router: Arc<dyn router::Router>,
        locality: Option<Arc<dyn Locality>>,
    ) -> Arc<Self> {
        let registry = Domains::from_names(&config.domains);
        Self::with_registry(config, storage, router, locality, registry)
    }

    /// As [`Self::with_locality`], hosting the domains of `registry` (shared with the edge
    /// and kept current by a poll) instead of a fixed `config.domains`.
    pub fn with_registry(
        config: SessionConfig,
        storage: storage::Storage,
        router: Arc<dyn router::Router>,
        locality: Option<Arc<dyn Locality>>,
        registry: Arc<Domains>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| LocalSessionService {
            me: me.clone(),
            config,
            registry,
            storage,
            router,
            locality,
            users: state::Users::new(),
            next_token: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            sm_unacked: Arc::default(),
        })
    }

    /// How many users currently have live state (bound resources, or a stanza in flight).
    pub fn live_users(&self) -> usize {
        self.users.len()
    }

    /// How many delivered stanzas wait for a XEP-0198 acknowledgement, over all sessions
    /// (detached ones included). A counter kept in step with the queues, cheap to read.
    pub fn sm_unacked(&self) -> u64 {
        self.sm_unacked.load(Ordering::Relaxed)
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
        let span = route_span(&stanza, "client");
        self.client_stanza(jid, token, stanza)
            .instrument(span)
            .await
    }
    async fn close(&self, jid: &FullJid, token: SessionToken) {
        self.close_session(jid, token).await
    }
    async fn enable_sm(
        &self,
        jid: &FullJid,
        token: SessionToken,
        resume: bool,
    ) -> Result<SmEnabled, SessionError> {
        self.sm_enable(jid, token, resume).await
    }
    async fn sm_ack(&self, jid: &FullJid, token: SessionToken, h: u32) -> Result<(), SessionError> {
        self.sm_ack_h(jid, token, h).await
    }
    async fn sm_received(&self, jid: &FullJid, token: SessionToken) -> Result<u32, SessionError> {
        self.sm_received_count(jid, token).await
    }
    async fn detach(&self, jid: &FullJid, token: SessionToken) {
        self.sm_detach(jid, token).await
    }
    async fn sm_resume(
        &self,
        account: &BareJid,
        id: &str,
        h: u32,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SmResumed, SessionError> {
        self.sm_resume_session(account, id, h, sink).await
    }
}
