//! The edge's side of `relais.session.v1.Session`: [`GrpcSessionClient`] implements
//! [`SessionService`] over one `Attach` stream to one session node, so the edge cannot tell
//! it from the in-process service.
//!
//! # Connections and tokens
//!
//! Every `open` (and `sm_resume`) gets a connection id, unique for the life of the client,
//! and the edge's [`SessionToken`] *is* that id: a local token. The client keeps one small
//! entry per connection (the sink, the JID, the node's token, the last broadcast presence and
//! a few XEP-0198 counters) and maps the local token to the node's token on every call. So
//! when the node's token changes (re-attach, below) the edge never sees it, and never holds a
//! stale token.
//!
//! Deliveries (`deliver`) are parsed back into elements and pushed into the connection's
//! sink; `close_conn` becomes `ToClient::Close(condition)`. Messages to the node go through
//! one bounded queue: when it is full, `stanza` waits (backpressure) instead of buffering
//! without limit. `stanza`, `close`, `detach` and `sm_ack` are one-way; `open`, `enable_sm`
//! and `sm_resume` wait for their answer up to [`ClientConfig::answer_timeout`], then fail
//! with `SessionError::Unavailable`.
//!
//! # Stream breaks: re-attach, then give up
//!
//! When the stream breaks, calls wait (up to `answer_timeout`) while the client reconnects
//! with exponential backoff, at most [`ClientConfig::reconnect_attempts`] times in a row. On
//! a new stream it re-attaches every bound connection before it lets calls through:
//! - a plain session is opened again under the same full JID, and its last broadcast
//!   presence (if it was available) is sent again, so contacts and delivery rules see it
//!   online; directed presence and roster interest are not replayed;
//! - a session with XEP-0198 resumption is resumed with the last `h` the client
//!   acknowledged; of the stanzas the node sends again, those already delivered to the sink
//!   are skipped, so the client sees each stanza once and the counts stay in step;
//! - a session with stream management but no resumption, or whose re-attach the node
//!   refuses (for example a restarted node that lost its state), is closed with
//!   `<system-shutdown/>`.
//!
//! Stanzas in flight when the stream broke may be lost for sessions without stream
//! management (they are one-way messages); with resumption, unacknowledged deliveries are
//! not.
//!
//! **Fallback**: if every reconnect attempt fails, the client gives up for good: every
//! registered connection gets `ToClient::Close(SystemShutdown)` (clients reconnect, through
//! another edge or later), and every later call fails with `SessionError::Unavailable`.
//!
//! A connection whose sink is full when a delivery arrives (a client that does not read) is
//! detached on the node (a resumable session keeps what was not delivered) and closed with
//! `<policy-violation/>` as soon as its queue has room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::bytes::Bytes;
use session::{
    ClientSink, SessionError, SessionService, SessionToken, SinkError, SmEnabled, SmResumed,
    ToClient,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;
use xmpp::{BareJid, Element, FullJid, StreamErrorCondition};

use crate::context;
use crate::credentials::GrpcCredentials;
use crate::error::ProtoError;
use crate::metrics::{self, Direction, Method, Outcome};
use crate::pb::relais::session::v1 as pb;
use crate::pb::relais::session::v1::session_client::SessionClient;
use crate::wire::{
    NS_SM, condition_from_wire, element_to_bytes, meta_of, parse_element, sm_enabled_from_wire,
    wire_to_session_error,
};

/// Settings of the edge's session client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long `open`, `enable_sm` and `sm_resume` wait for their answer, and how long any
    /// call waits for a broken stream to come back. Default 10 s.
    pub answer_timeout: Duration,
    /// Reconnect attempts in a row before giving up (also for the first connect). Default 6.
    pub reconnect_attempts: u32,
    /// The first backoff; it doubles after each failed attempt. Default 100 ms.
    pub backoff_initial: Duration,
    /// The largest backoff. Default 5 s.
    pub backoff_max: Duration,
    /// Messages queued towards the node. Default 1024.
    pub outbound_queue: usize,
    /// TCP connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval, to notice a dead node on an idle stream. Default 20 s.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered. Default 10 s.
    pub keepalive_timeout: Duration,
    /// Mutual TLS with the cluster CA; `None` dials plain HTTP/2. Default `None`.
    pub tls: Option<crate::ClusterTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            answer_timeout: Duration::from_secs(10),
            reconnect_attempts: 6,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            outbound_queue: 1024,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A [`SessionService`] on a remote session node. Cheap to clone; the stream is shared and
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct GrpcSessionClient {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
    driver: JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.driver.abort();
        // Dropping the queue ends the stream; the node detaches what is left.
        self.inner.link.send_replace(Link::Dead);
    }
}

#[derive(Clone)]
enum Link {
    /// (Re)connecting: calls wait.
    Connecting,
    Up(mpsc::Sender<pb::EdgeMessage>),
    /// Given up (or dropped): calls fail.
    Dead,
}

struct Inner {
    edge_id: String,
    config: ClientConfig,
    channel: Channel,
    conns: Mutex<HashMap<u64, Conn>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    link: watch::Sender<Link>,
    /// Streams that came up (and re-attached), for logs, metrics and tests.
    attachments: AtomicU64,
}

/// One client connection, as the edge sees it.
struct Conn {
    /// `None` only while a resume is in flight.
    jid: Option<FullJid>,
    sink: Arc<dyn ClientSink>,
    /// The node's token on the current stream.
    remote: Option<u64>,
    /// The node accepted the session: re-attach it after a break.
    bound: bool,
    /// The sink overflowed; the connection is being closed.
    closing: bool,
    /// The last presence broadcast (no `to`) if it was available, replayed on re-attach.
    presence: Option<Bytes>,
    sm: Option<Box<SmTrack>>,
}

/// XEP-0198 counters of one connection, in step with the session's.
#[derive(Default)]
struct SmTrack {
    /// The resumption id, when resumable.
    id: Option<String>,
    /// The session's `<enabled/>` marker went by: deliveries count from here.
    counting: bool,
    /// The client's last `h`.
    acked: u32,
    /// Stanzas delivered to the sink (same base as `acked`).
    delivered: u32,
    /// Stanzas the node sends again on a re-attach that the sink already has.
    skip: u32,
}

/// Someone waiting for an answer; `conn_id` is the connection it is about.
struct Pending {
    conn_id: u64,
    tx: oneshot::Sender<Reply>,
}

enum Reply {
    Opened(Result<u64, pb::Error>),
    SmEnabled(Result<SmEnabled, pb::Error>),
    SmCounted(Result<u32, pb::Error>),
    Resumed(Result<(FullJid, u64, u32), pb::Error>),
    Failed(pb::Error),
    /// The stream broke before the answer came.
    Lost,
}

impl Reply {
    /// The outcome of an answered call, for `relais.grpc.client.duration`.
    fn outcome(&self) -> Outcome {
        match self {
            Reply::Opened(Ok(_))
            | Reply::SmEnabled(Ok(_))
            | Reply::SmCounted(Ok(_))
            | Reply::Resumed(Ok(_)) => Outcome::Ok,
            Reply::Opened(Err(_))
            | Reply::SmEnabled(Err(_))
            | Reply::SmCounted(Err(_))
            | Reply::Resumed(Err(_))
            | Reply::Failed(_) => Outcome::Error,
            Reply::Lost => Outcome::Unavailable,
        }
    }
}

type Attached = (mpsc::Sender<pb::EdgeMessage>, Streaming<pb::SessionMessage>);

/// The reader's handle on the queue to the node: weak, so that dropping the client (which
/// drops every strong handle) ends the stream even while the reader runs.
type Weak = mpsc::WeakSender<pb::EdgeMessage>;

fn edge_message(kind: pb::edge_message::Kind) -> pb::EdgeMessage {
    pb::EdgeMessage {
        kind: Some(kind),
        metadata: context::inject(),
    }
}

fn unavailable(msg: &str) -> SessionError {
    SessionError::Unavailable(msg.to_owned())
}

impl GrpcSessionClient {
    /// Connects to the session node at `endpoint` (for example `http://10.0.0.5:5300`) and
    /// opens the `Attach` stream, retrying as configured; `edge_id` names this edge in the
    /// node's logs.
    pub async fn connect(
        endpoint: impl Into<String>,
        edge_id: impl Into<String>,
    ) -> Result<Self, ProtoError> {
        Self::connect_with(endpoint, edge_id, ClientConfig::default()).await
    }

    pub async fn connect_with(
        endpoint: impl Into<String>,
        edge_id: impl Into<String>,
        config: ClientConfig,
    ) -> Result<Self, ProtoError> {
        let endpoint = endpoint.into();
        let peer = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let channel = crate::channel(endpoint, &config)?;
        let inner = Arc::new(Inner {
            edge_id: edge_id.into(),
            config,
            channel,
            conns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            link: watch::channel(Link::Connecting).0,
            attachments: AtomicU64::new(0),
        });
        let Some(first) = inner.reconnect(true).await else {
            return Err(ProtoError::Unavailable(
                "cannot attach to the session node".to_owned(),
            ));
        };
        let weak = Arc::downgrade(&inner);
        metrics::register_queue(Direction::EdgeToSession, peer, move || {
            let inner = weak.upgrade()?;
            let depth = match &*inner.link.borrow() {
                Link::Up(tx) => metrics::queued(tx),
                _ => 0,
            };
            Some(depth)
        });
        let driver = tokio::spawn(drive(Arc::clone(&inner), first));
        Ok(GrpcSessionClient {
            handle: Arc::new(Handle { inner, driver }),
        })
    }

    /// An account store for SCRAM on the edge, over the same connection.
    pub fn credentials(&self) -> GrpcCredentials {
        GrpcCredentials::from_channel(self.handle.inner.channel.clone())
    }

    /// How many client connections this client carries.
    pub fn connections(&self) -> usize {
        self.handle.inner.conns().len()
    }

    /// How many times a stream came up and was ready (1 after `connect`, one more after each
    /// successful re-attach).
    pub fn attachments(&self) -> u64 {
        self.handle.inner.attachments.load(Ordering::Relaxed)
    }

    /// True once the client gave up on the node (see the module docs).
    pub fn is_dead(&self) -> bool {
        matches!(*self.handle.inner.link.borrow(), Link::Dead)
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }
}

impl Inner {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The queue to the node once the stream is up; waits while reconnecting.
    async fn ready(&self) -> Result<mpsc::Sender<pb::EdgeMessage>, SessionError> {
        let mut rx = self.link.subscribe();
        let waited = tokio::time::timeout(
            self.config.answer_timeout,
            rx.wait_for(|l| !matches!(l, Link::Connecting)),
        )
        .await;
        match waited {
            Ok(Ok(link)) => match &*link {
                Link::Up(tx) => Ok(tx.clone()),
                _ => Err(unavailable("session node unreachable")),
            },
            Ok(Err(_)) => Err(unavailable("session client stopped")),
            Err(_) => Err(unavailable("session node unreachable")),
        }
    }

    /// The queue to the node if the stream is up now.
    fn current(&self) -> Option<mpsc::Sender<pb::EdgeMessage>> {
        match &*self.link.borrow() {
            Link::Up(tx) => Some(tx.clone()),
            _ => None,
        }
    }

    fn expect(&self, key: u64, conn_id: u64) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.pending().insert(key, Pending { conn_id, tx });
        rx
    }

    /// Waits for the answer to a `method` call sent at `started`, and records how long it
    /// took. A timeout leaves the pending entry, so that a late answer can still be cleaned up
    /// by the reader.
    async fn answer(
        &self,
        rx: oneshot::Receiver<Reply>,
        method: Method,
        started: Instant,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + self.config.answer_timeout;
        let (reply, timed_out) = Self::answer_timed(rx, deadline).await;
        let outcome = if timed_out {
            Outcome::Timeout
        } else {
            reply.outcome()
        };
        metrics::client_call(method, outcome, started);
        reply
    }

    async fn answer_by(rx: oneshot::Receiver<Reply>, deadline: tokio::time::Instant) -> Reply {
        Self::answer_timed(rx, deadline).await.0
    }

    /// The answer, and whether the deadline passed first.
    async fn answer_timed(
        rx: oneshot::Receiver<Reply>,
        deadline: tokio::time::Instant,
    ) -> (Reply, bool) {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => (r, false),
            Ok(Err(_)) => (Reply::Lost, false),
            Err(_) => (
                Reply::Failed(pb::Error {
                    code: pb::Code::Unavailable as i32,
                    message: "no answer from the session node".to_owned(),
                }),
                true,
            ),
        }
    }

    /// Removes a connection that did not come up; tells the node if it did meanwhile.
    async fn abandon(&self, conn_id: u64) {
        let conn = self.conns().remove(&conn_id);
        if let Some(Conn {
            remote: Some(token),
            ..
        }) = conn
            && let Some(tx) = self.current()
        {
            let _ = tx
                .send(edge_message(pb::edge_message::Kind::Close(pb::Close {
                    conn_id,
                    token,
                })))
                .await;
        }
    }

    /// One `Attach` attempt.
    async fn attach(&self) -> Result<Attached, ProtoError> {
        let (tx, rx) = mpsc::channel(self.config.outbound_queue.max(1));
        let hello = edge_message(pb::edge_message::Kind::Hello(pb::Hello {
            edge_id: self.edge_id.clone(),
        }));
        tx.try_send(hello)
            .map_err(|_| ProtoError::Unavailable("outbound queue".to_owned()))?;
        let mut client = SessionClient::new(self.channel.clone());
        let call = client.attach(ReceiverStream::new(rx));
        let wait = self.config.connect_timeout + self.config.answer_timeout;
        match tokio::time::timeout(wait, call).await {
            Ok(Ok(resp)) => Ok((tx, resp.into_inner())),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(ProtoError::Unavailable("attach timed out".to_owned())),
        }
    }

    /// Attach attempts with backoff; `None` when they all failed.
    async fn reconnect(&self, first: bool) -> Option<Attached> {
        let mut backoff = self.config.backoff_initial;
        let attempts = self.config.reconnect_attempts.max(1);
        for attempt in 1..=attempts {
            if !first || attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
            match self.attach().await {
                Ok(a) => {
                    tracing::info!(edge = %self.edge_id, attempt, "attached to the session node");
                    return Some(a);
                }
                Err(e) => {
                    tracing::warn!(edge = %self.edge_id, attempt, attempts, error = %e, "cannot attach to the session node");
                }
            }
        }
        None
    }

    /// Every waiting call learns that the stream broke.
    fn fail_pending(&self) {
        let drained: Vec<Pending> = self.pending().drain().map(|(_, p)| p).collect();
        for p in drained {
            let _ = p.tx.send(Reply::Lost);
        }
    }

    fn resolve(&self, key: u64, reply: Reply) -> Option<u64> {
        let p = self.pending().remove(&key)?;
        let conn_id = p.conn_id;
        let _ = p.tx.send(reply);
        Some(conn_id)
    }

    /// Gives up: every connection is closed with `<system-shutdown/>`.
    fn give_up(&self) {
        self.link.send_replace(Link::Dead);
        self.fail_pending();
        let conns: Vec<Conn> = self.conns().drain().map(|(_, c)| c).collect();
        tracing::error!(edge = %self.edge_id, connections = conns.len(), "giving up on the session node");
        for c in conns {
            let _ = c
                .sink
                .send(ToClient::Close(StreamErrorCondition::SystemShutdown));
        }
    }
}

/// Runs the streams: read until the stream breaks, reconnect, re-attach, until giving up.
async fn drive(inner: Arc<Inner>, first: Attached) {
    let mut next = Some(first);
    let mut reattach = false;
    loop {
        let Some((tx, inbound)) = next.take() else {
            return;
        };
        let alive = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read_loop(
            Arc::clone(&inner),
            inbound,
            tx.downgrade(),
            Arc::clone(&alive),
        ));
        if reattach {
            reattach_all(&inner, &tx).await;
        }
        let mut up = false;
        inner.link.send_modify(|l| {
            if alive.load(Ordering::Acquire) && !matches!(l, Link::Dead) {
                *l = Link::Up(tx);
                up = true;
            }
        });
        if up {
            inner.attachments.fetch_add(1, Ordering::Relaxed);
        }
        if reader.await.is_err() {
            tracing::warn!(edge = %inner.edge_id, "session stream reader failed");
        }
        if matches!(*inner.link.borrow(), Link::Dead) {
            return;
        }
        reattach = true;
        match inner.reconnect(false).await {
            Some(a) => next = Some(a),
            None => {
                inner.give_up();
                return;
            }
        }
    }
}

/// Reads one stream until it ends, then marks the link down.
async fn read_loop(
    inner: Arc<Inner>,
    mut inbound: Streaming<pb::SessionMessage>,
    tx: Weak,
    alive: Arc<AtomicBool>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(m)) => on_message(&inner, &tx, m),
            Ok(None) => {
                tracing::warn!(edge = %inner.edge_id, "session node ended the stream");
                break;
            }
            Err(status) => {
                tracing::warn!(edge = %inner.edge_id, error = %status, "session stream broke");
                break;
            }
        }
    }
    alive.store(false, Ordering::Release);
    inner.link.send_modify(|l| {
        if !matches!(l, Link::Dead) {
            *l = Link::Connecting;
        }
    });
    {
        let mut conns = inner.conns();
        for c in conns.values_mut() {
            c.remote = None;
        }
    }
    inner.fail_pending();
}

/// Sends without waiting from the reader (which must never block on its own stream); when
/// the queue is full, a task waits instead.
fn send_later(tx: &Weak, msg: pb::EdgeMessage) {
    let Some(tx) = tx.upgrade() else {
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(msg) {
        tokio::spawn(async move {
            let _ = tx.send(msg).await;
        });
    }
}

fn on_message(inner: &Arc<Inner>, tx: &Weak, m: pb::SessionMessage) {
    use pb::session_message::Kind;
    let Some(kind) = m.kind else {
        tracing::warn!(edge = %inner.edge_id, "empty message from the session node");
        return;
    };
    match kind {
        Kind::Opened(o) => on_opened(inner, tx, o),
        Kind::Deliver(d) => on_deliver(inner, tx, d, context::extract(&m.metadata)),
        Kind::CloseConn(c) => {
            let cond = condition_from_wire(&c.condition);
            let Some(conn) = inner.conns().remove(&c.conn_id) else {
                return;
            };
            tracing::debug!(edge = %inner.edge_id, conn = c.conn_id, condition = cond.as_str(), "session closed the connection");
            if let Some(token) = conn.remote {
                // Lets the node forget the connection (a stale token changes nothing).
                send_later(
                    tx,
                    edge_message(pb::edge_message::Kind::Close(pb::Close {
                        conn_id: c.conn_id,
                        token,
                    })),
                );
            }
            let _ = conn.sink.send(ToClient::Close(cond));
        }
        Kind::SmEnabled(e) => {
            let reply = match e.result {
                Some(pb::sm_enabled::Result::Ok(ok)) => Ok(sm_enabled_from_wire(&ok)),
                Some(pb::sm_enabled::Result::Error(err)) => Err(err),
                None => Err(bad_answer()),
            };
            if inner.resolve(e.req_id, Reply::SmEnabled(reply)).is_none() {
                tracing::debug!(edge = %inner.edge_id, req = e.req_id, "late sm_enabled");
            }
        }
        Kind::SmCounted(c) => {
            let reply = match c.result {
                Some(pb::sm_counted::Result::H(h)) => Ok(h),
                Some(pb::sm_counted::Result::Error(err)) => Err(err),
                None => Err(bad_answer()),
            };
            if inner.resolve(c.req_id, Reply::SmCounted(reply)).is_none() {
                tracing::debug!(edge = %inner.edge_id, req = c.req_id, "late sm_counted");
            }
        }
        Kind::Resumed(r) => on_resumed(inner, tx, r),
        Kind::Failure(f) => {
            let err = f.error.unwrap_or_else(bad_answer);
            let key = if f.req_id != 0 { f.req_id } else { f.conn_id };
            let waiting = inner.pending().contains_key(&key);
            if waiting {
                inner.resolve(key, Reply::Failed(err));
            } else {
                tracing::warn!(edge = %inner.edge_id, conn = f.conn_id, code = err.code, error = %err.message, "session node reported a failure");
            }
        }
    }
}

fn bad_answer() -> pb::Error {
    pb::Error {
        code: pb::Code::Internal as i32,
        message: "malformed answer".to_owned(),
    }
}

fn on_opened(inner: &Arc<Inner>, tx: &Weak, o: pb::Opened) {
    let reply = match o.result {
        Some(pb::opened::Result::Token(token)) => {
            let known = match inner.conns().get_mut(&o.conn_id) {
                Some(c) => {
                    c.remote = Some(token);
                    c.bound = true;
                    true
                }
                None => false,
            };
            if !known {
                // The open timed out on our side: end the session it created.
                tracing::debug!(edge = %inner.edge_id, conn = o.conn_id, "late open answer, closing");
                send_later(
                    tx,
                    edge_message(pb::edge_message::Kind::Close(pb::Close {
                        conn_id: o.conn_id,
                        token,
                    })),
                );
            }
            Ok(token)
        }
        Some(pb::opened::Result::Error(e)) => Err(e),
        None => Err(bad_answer()),
    };
    inner.resolve(o.conn_id, Reply::Opened(reply));
}

fn on_resumed(inner: &Arc<Inner>, tx: &Weak, r: pb::Resumed) {
    let conn_id = inner.pending().get(&r.req_id).map(|p| p.conn_id);
    let reply = match r.result {
        Some(pb::resumed::Result::Ok(ok)) => match ok.full_jid.parse::<FullJid>() {
            Ok(jid) => {
                let known = conn_id.is_some_and(|id| match inner.conns().get_mut(&id) {
                    Some(c) => {
                        c.jid = Some(jid.clone());
                        c.remote = Some(ok.token);
                        c.bound = true;
                        true
                    }
                    None => false,
                });
                if !known && let Some(id) = conn_id {
                    // Gave up waiting: leave the session resumable.
                    send_later(
                        tx,
                        edge_message(pb::edge_message::Kind::Detach(pb::Detach {
                            conn_id: id,
                            token: ok.token,
                        })),
                    );
                }
                Ok((jid, ok.token, ok.server_h))
            }
            Err(e) => {
                tracing::warn!(edge = %inner.edge_id, error = %e, "resumed with a bad jid");
                if let Some(id) = conn_id {
                    send_later(
                        tx,
                        edge_message(pb::edge_message::Kind::Detach(pb::Detach {
                            conn_id: id,
                            token: ok.token,
                        })),
                    );
                }
                Err(pb::Error {
                    code: pb::Code::Internal as i32,
                    message: "resumed with a bad jid".to_owned(),
                })
            }
        },
        Some(pb::resumed::Result::Error(e)) => Err(e),
        None => Err(bad_answer()),
    };
    inner.resolve(r.req_id, Reply::Resumed(reply));
}

/// A delivery for one connection. `cx` is the trace context the session node sent with it:
/// the connection's sink (the edge) opens its `edge.deliver` span in it.
fn on_deliver(inner: &Arc<Inner>, tx: &Weak, d: pb::Deliver, cx: opentelemetry::Context) {
    let el = match parse_element(&d.xml) {
        Ok(el) => el,
        Err(e) => {
            tracing::warn!(edge = %inner.edge_id, conn = d.conn_id, error = %e, "unparsable delivery");
            return;
        }
    };
    let mut conns = inner.conns();
    let Some(c) = conns.get_mut(&d.conn_id) else {
        tracing::debug!(edge = %inner.edge_id, conn = d.conn_id, "delivery for an unknown connection");
        return;
    };
    if c.closing {
        return;
    }
    let marker = el.is("enabled", NS_SM);
    if let Some(sm) = c.sm.as_mut()
        && sm.skip > 0
        && !marker
    {
        sm.skip -= 1;
        return;
    }
    let sent = {
        let _current = context::is_remote(&cx).then(|| cx.attach());
        c.sink.send(ToClient::Stanza(el))
    };
    match sent {
        Ok(()) => {
            if let Some(sm) = c.sm.as_mut() {
                if sm.counting {
                    sm.delivered = sm.delivered.wrapping_add(1);
                } else if marker {
                    sm.counting = true;
                    sm.acked = 0;
                    sm.delivered = 0;
                }
            }
        }
        Err(SinkError::Closed) => {
            tracing::debug!(edge = %inner.edge_id, conn = d.conn_id, "delivery to a closed connection");
        }
        Err(SinkError::Full) => {
            tracing::warn!(edge = %inner.edge_id, conn = d.conn_id, jid = ?c.jid, "client queue full; detaching the session");
            c.closing = true;
            c.bound = false;
            if let Some(token) = c.remote.take() {
                send_later(
                    tx,
                    edge_message(pb::edge_message::Kind::Detach(pb::Detach {
                        conn_id: d.conn_id,
                        token,
                    })),
                );
            }
            let sink = Arc::clone(&c.sink);
            let wait = inner.config.answer_timeout;
            tokio::spawn(close_when_room(
                Arc::downgrade(inner),
                d.conn_id,
                sink,
                wait,
            ));
        }
    }
}

/// Pushes `<policy-violation/>` into a full sink as soon as it has room (bounded wait), then
/// forgets the connection (the edge does not call `close` after a `Close`).
async fn close_when_room(
    inner: std::sync::Weak<Inner>,
    conn_id: u64,
    sink: Arc<dyn ClientSink>,
    wait: Duration,
) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match sink.send(ToClient::Close(StreamErrorCondition::PolicyViolation)) {
            Err(SinkError::Full) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break,
        }
    }
    if let Some(inner) = inner.upgrade() {
        let mut conns = inner.conns();
        if conns.get(&conn_id).is_some_and(|c| c.closing) {
            conns.remove(&conn_id);
        }
    }
}

/// What a re-attach does for one connection.
enum Plan {
    Open(FullJid),
    Resume {
        account: BareJid,
        id: String,
        h: u32,
    },
    Close,
}

/// Re-opens or resumes every bound connection on a new stream (see the module docs).
async fn reattach_all(inner: &Inner, tx: &mpsc::Sender<pb::EdgeMessage>) {
    let plans: Vec<(u64, Plan)> = {
        let mut conns = inner.conns();
        conns
            .iter_mut()
            .filter(|(_, c)| c.bound && !c.closing)
            .map(|(id, c)| {
                c.remote = None;
                let plan = match (&c.jid, c.sm.as_deref_mut()) {
                    (None, _) => Plan::Close,
                    (Some(jid), None) => Plan::Open(jid.clone()),
                    (Some(jid), Some(sm)) => match (&sm.id, sm.counting) {
                        (Some(id), true) => {
                            sm.skip = sm.delivered.wrapping_sub(sm.acked);
                            Plan::Resume {
                                account: jid.bare(),
                                id: id.clone(),
                                h: sm.acked,
                            }
                        }
                        _ => Plan::Close,
                    },
                };
                (*id, plan)
            })
            .collect()
    };
    if plans.is_empty() {
        return;
    }
    tracing::info!(edge = %inner.edge_id, connections = plans.len(), "re-attaching connections");
    let mut waits = Vec::with_capacity(plans.len());
    for (conn_id, plan) in plans {
        let (key, msg) = match plan {
            Plan::Close => {
                close_local(inner, conn_id, StreamErrorCondition::SystemShutdown);
                continue;
            }
            Plan::Open(jid) => (
                conn_id,
                pb::edge_message::Kind::Open(pb::Open {
                    conn_id,
                    full_jid: jid.to_string(),
                }),
            ),
            Plan::Resume { account, id, h } => {
                let req_id = inner.next_id();
                (
                    req_id,
                    pb::edge_message::Kind::Resume(pb::Resume {
                        conn_id,
                        account: account.to_string(),
                        id,
                        h,
                        req_id,
                    }),
                )
            }
        };
        let rx = inner.expect(key, conn_id);
        if tx.send(edge_message(msg)).await.is_err() {
            return; // The new stream broke already; the next round takes over.
        }
        waits.push((conn_id, rx));
    }
    // One deadline for all answers, however many connections there are.
    let deadline = tokio::time::Instant::now() + inner.config.answer_timeout;
    for (conn_id, rx) in waits {
        match Inner::answer_by(rx, deadline).await {
            Reply::Opened(Ok(token)) => {
                let presence = inner.conns().get(&conn_id).and_then(|c| c.presence.clone());
                if let Some(xml) = presence {
                    let meta = parse_element(&xml).ok().map(|el| meta_of(&el));
                    let msg = pb::edge_message::Kind::Stanza(pb::Stanza {
                        conn_id,
                        token,
                        xml,
                        meta,
                    });
                    if tx.send(edge_message(msg)).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Resumed(Ok(_)) => {}
            Reply::Lost => return,
            Reply::Opened(Err(e)) | Reply::Resumed(Err(e)) | Reply::Failed(e) => {
                tracing::info!(edge = %inner.edge_id, conn = conn_id, error = %e.message, "re-attach refused");
                close_local(inner, conn_id, StreamErrorCondition::SystemShutdown);
            }
            Reply::SmEnabled(_) | Reply::SmCounted(_) => {}
        }
    }
}

/// Forgets a connection and closes its client stream.
fn close_local(inner: &Inner, conn_id: u64, cond: StreamErrorCondition) {
    if let Some(c) = inner.conns().remove(&conn_id) {
        let _ = c.sink.send(ToClient::Close(cond));
    }
}

#[async_trait]
impl SessionService for GrpcSessionClient {
    async fn open(
        &self,
        jid: FullJid,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SessionToken, SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let conn_id = inner.next_id();
        inner.conns().insert(
            conn_id,
            Conn {
                jid: Some(jid.clone()),
                sink,
                remote: None,
                bound: false,
                closing: false,
                presence: None,
                sm: None,
            },
        );
        let rx = inner.expect(conn_id, conn_id);
        let msg = pb::edge_message::Kind::Open(pb::Open {
            conn_id,
            full_jid: jid.to_string(),
        });
        let started = Instant::now();
        if tx.send(edge_message(msg)).await.is_err() {
            metrics::client_call(Method::Open, Outcome::Unavailable, started);
            inner.pending().remove(&conn_id);
            inner.conns().remove(&conn_id);
            return Err(unavailable("session stream closed"));
        }
        match inner.answer(rx, Method::Open, started).await {
            Reply::Opened(Ok(_)) => Ok(SessionToken(conn_id)),
            Reply::Opened(Err(e)) | Reply::Failed(e) => {
                inner.abandon(conn_id).await;
                Err(wire_to_session_error(&e))
            }
            Reply::Lost | Reply::SmEnabled(_) | Reply::SmCounted(_) | Reply::Resumed(_) => {
                inner.abandon(conn_id).await;
                Err(unavailable("session stream lost"))
            }
        }
    }

    async fn stanza(
        &self,
        jid: &FullJid,
        token: SessionToken,
        stanza: Element,
    ) -> Result<(), SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let xml = element_to_bytes(&stanza);
        let remote = {
            let mut conns = inner.conns();
            let Some(c) = conns.get_mut(&token.0) else {
                return Err(SessionError::NoSession);
            };
            if c.jid.as_ref() != Some(jid) {
                return Err(SessionError::NoSession);
            }
            if c.closing {
                return Err(SessionError::Unavailable(
                    "connection is being closed".to_owned(),
                ));
            }
            let Some(remote) = c.remote else {
                return Err(unavailable("session is being re-attached"));
            };
            if stanza.name() == "presence" && stanza.get_attr("to").is_none() {
                match stanza.get_attr("type") {
                    None => c.presence = Some(xml.clone()),
                    Some("unavailable") => c.presence = None,
                    Some(_) => {}
                }
            }
            remote
        };
        let msg = pb::edge_message::Kind::Stanza(pb::Stanza {
            conn_id: token.0,
            token: remote,
            xml,
            meta: Some(meta_of(&stanza)),
        });
        tx.send(edge_message(msg))
            .await
            .map_err(|_| unavailable("session stream closed"))
    }

    async fn close(&self, jid: &FullJid, token: SessionToken) {
        end(self.inner(), jid, token, false).await;
    }

    async fn enable_sm(
        &self,
        jid: &FullJid,
        token: SessionToken,
        resume: bool,
    ) -> Result<SmEnabled, SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let req_id = inner.next_id();
        let remote = {
            let mut conns = inner.conns();
            let Some(c) = conns.get_mut(&token.0) else {
                return Err(SessionError::NoSession);
            };
            if c.jid.as_ref() != Some(jid) {
                return Err(SessionError::NoSession);
            }
            if c.sm.is_some() {
                return Err(SessionError::Unsupported(
                    "stream management already enabled",
                ));
            }
            let Some(remote) = c.remote else {
                return Err(unavailable("session is being re-attached"));
            };
            c.sm = Some(Box::default());
            remote
        };
        let rx = inner.expect(req_id, token.0);
        let msg = pb::edge_message::Kind::EnableSm(pb::EnableSm {
            conn_id: token.0,
            token: remote,
            resume,
            req_id,
        });
        let started = Instant::now();
        let reply = if tx.send(edge_message(msg)).await.is_err() {
            metrics::client_call(Method::EnableSm, Outcome::Unavailable, started);
            inner.pending().remove(&req_id);
            Reply::Lost
        } else {
            inner.answer(rx, Method::EnableSm, started).await
        };
        let mut conns = inner.conns();
        let conn = conns.get_mut(&token.0);
        match reply {
            Reply::SmEnabled(Ok(en)) => {
                if let Some(sm) = conn.and_then(|c| c.sm.as_mut()) {
                    sm.id = en.id.clone();
                }
                Ok(en)
            }
            other => {
                if let Some(c) = conn
                    && c.sm.as_ref().is_some_and(|sm| !sm.counting)
                {
                    c.sm = None;
                }
                Err(match other {
                    Reply::SmEnabled(Err(e)) | Reply::Failed(e) => wire_to_session_error(&e),
                    _ => unavailable("session stream lost"),
                })
            }
        }
    }

    async fn sm_received(&self, jid: &FullJid, token: SessionToken) -> Result<u32, SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let req_id = inner.next_id();
        let remote = {
            let conns = inner.conns();
            let Some(c) = conns.get(&token.0) else {
                return Err(SessionError::NoSession);
            };
            if c.jid.as_ref() != Some(jid) {
                return Err(SessionError::NoSession);
            }
            let Some(remote) = c.remote else {
                return Err(unavailable("session is being re-attached"));
            };
            remote
        };
        let rx = inner.expect(req_id, token.0);
        let msg = pb::edge_message::Kind::SmCount(pb::SmCount {
            conn_id: token.0,
            token: remote,
            req_id,
        });
        let started = Instant::now();
        if tx.send(edge_message(msg)).await.is_err() {
            metrics::client_call(Method::SmCount, Outcome::Unavailable, started);
            inner.pending().remove(&req_id);
            return Err(unavailable("session stream closed"));
        }
        match inner.answer(rx, Method::SmCount, started).await {
            Reply::SmCounted(Ok(h)) => Ok(h),
            Reply::SmCounted(Err(e)) | Reply::Failed(e) => Err(wire_to_session_error(&e)),
            _ => Err(unavailable("session stream lost")),
        }
    }

    async fn sm_ack(&self, jid: &FullJid, token: SessionToken, h: u32) -> Result<(), SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let remote = {
            let mut conns = inner.conns();
            let Some(c) = conns.get_mut(&token.0) else {
                return Err(SessionError::NoSession);
            };
            if c.jid.as_ref() != Some(jid) {
                return Err(SessionError::NoSession);
            }
            let Some(remote) = c.remote else {
                return Err(unavailable("session is being re-attached"));
            };
            let Some(sm) = c.sm.as_mut().filter(|sm| sm.counting) else {
                return Err(SessionError::Unsupported("stream management not enabled"));
            };
            // The same rule as the session's: no more than was delivered.
            if h.wrapping_sub(sm.acked) > sm.delivered.wrapping_sub(sm.acked) {
                return Err(SessionError::Unsupported("h too large"));
            }
            sm.acked = h;
            remote
        };
        let msg = pb::edge_message::Kind::SmAck(pb::SmAck {
            conn_id: token.0,
            token: remote,
            h,
        });
        tx.send(edge_message(msg))
            .await
            .map_err(|_| unavailable("session stream closed"))
    }

    async fn detach(&self, jid: &FullJid, token: SessionToken) {
        end(self.inner(), jid, token, true).await;
    }

    async fn sm_resume(
        &self,
        account: &BareJid,
        id: &str,
        h: u32,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SmResumed, SessionError> {
        let inner = self.inner();
        let tx = inner.ready().await?;
        let conn_id = inner.next_id();
        let req_id = inner.next_id();
        inner.conns().insert(
            conn_id,
            Conn {
                jid: None,
                sink,
                remote: None,
                bound: false,
                closing: false,
                presence: None,
                sm: Some(Box::new(SmTrack {
                    id: Some(id.to_owned()),
                    counting: true,
                    acked: h,
                    delivered: h,
                    skip: 0,
                })),
            },
        );
        let rx = inner.expect(req_id, conn_id);
        let msg = pb::edge_message::Kind::Resume(pb::Resume {
            conn_id,
            account: account.to_string(),
            id: id.to_owned(),
            h,
            req_id,
        });
        let started = Instant::now();
        if tx.send(edge_message(msg)).await.is_err() {
            metrics::client_call(Method::Resume, Outcome::Unavailable, started);
            inner.pending().remove(&req_id);
            inner.conns().remove(&conn_id);
            return Err(unavailable("session stream closed"));
        }
        match inner.answer(rx, Method::Resume, started).await {
            Reply::Resumed(Ok((jid, _, server_h))) => Ok(SmResumed {
                jid,
                token: SessionToken(conn_id),
                server_h,
            }),
            Reply::Resumed(Err(e)) | Reply::Failed(e) => {
                inner.conns().remove(&conn_id);
                Err(wire_to_session_error(&e))
            }
            Reply::Lost | Reply::Opened(_) | Reply::SmEnabled(_) | Reply::SmCounted(_) => {
                inner.conns().remove(&conn_id);
                Err(unavailable("session stream lost"))
            }
        }
    }
}

/// `close` and `detach`: forget the connection; tell the node if the stream is up (if it is
/// not, the node detached the session when the stream broke).
async fn end(inner: &Inner, jid: &FullJid, token: SessionToken, detach: bool) {
    let remote = {
        let mut conns = inner.conns();
        match conns.get(&token.0) {
            Some(c) if c.jid.as_ref() == Some(jid) => {}
            _ => return,
        }
        conns.remove(&token.0).and_then(|c| c.remote)
    };
    let (Some(remote), Some(tx)) = (remote, inner.current()) else {
        return;
    };
    let kind = if detach {
        pb::edge_message::Kind::Detach(pb::Detach {
            conn_id: token.0,
            token: remote,
        })
    } else {
        pb::edge_message::Kind::Close(pb::Close {
            conn_id: token.0,
            token: remote,
        })
    };
    if tx.send(edge_message(kind)).await.is_err() {
        tracing::debug!(conn = token.0, "end not sent: the session stream is gone");
    }
}
