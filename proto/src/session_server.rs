//! The session node's side of `relais.session.v1.Session`: [`SessionGrpcServer`] carries an
//! `Arc<dyn SessionService>` and an `Arc<dyn AccountStore>` to the edges.
//!
//! Per `Attach` stream: one bounded outbound queue, shared by every connection of the stream;
//! per connection, a [`ClientSink`] whose `send` is a `try_send` on that queue (full: the
//! session sees `SinkError::Full` and falls back as for any slow connection, so the session
//! never blocks), and a small task with its own bounded queue that applies the connection's
//! messages in order. Connections are independent of each other; when one connection's queue
//! is full, reading the stream waits (backpressure to the edge).
//!
//! When the stream ends (the edge went away, or [`SessionGrpcServer::close_streams`]), every
//! connection of the stream is *detached*, not closed: a session with XEP-0198 resumption
//! stays resumable, every other session ends as by `close`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use prost::bytes::Bytes;
use session::{ClientSink, SessionError, SessionService, SessionToken, SinkError, ToClient};
use storage::AccountStore;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use xmpp::{BareJid, FullJid, StreamErrorCondition, ns};

use crate::context;
use crate::error::storage_error_to_status;
use crate::metrics::{self, Direction};
use crate::pb::relais::session::v1 as pb;
use crate::pb::relais::session::v1::session_server::{Session, SessionServer};
use crate::wire::{
    credentials_to_wire, element_to_bytes, parse_element, session_error_to_wire, wire_error,
};

/// Settings of the session node's gRPC side.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Messages queued towards one edge (all its connections together). Default 4096.
    pub outbound_queue: usize,
    /// Messages queued for one connection's task. Default 64.
    pub conn_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            outbound_queue: 4096,
            conn_queue: 64,
        }
    }
}

/// Serves `relais.session.v1.Session` over a session service and an account store.
#[derive(Clone)]
pub struct SessionGrpcServer {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    service: Arc<dyn SessionService>,
    accounts: Arc<dyn AccountStore>,
    /// The stored hosted domains, for `ListDomains` (unset: answered UNIMPLEMENTED).
    domains: std::sync::OnceLock<Arc<dyn storage::DomainStore>>,
    config: ServerConfig,
    stop: watch::Sender<bool>,
}

type Out = mpsc::Sender<Result<pb::SessionMessage, Status>>;

impl SessionGrpcServer {
    pub fn new(service: Arc<dyn SessionService>, accounts: Arc<dyn AccountStore>) -> Self {
        Self::with_config(service, accounts, ServerConfig::default())
    }

    pub fn with_config(
        service: Arc<dyn SessionService>,
        accounts: Arc<dyn AccountStore>,
        config: ServerConfig,
    ) -> Self {
        SessionGrpcServer {
            inner: Arc::new(ServerInner {
                service,
                accounts,
                domains: std::sync::OnceLock::new(),
                config,
                stop: watch::channel(false).0,
            }),
        }
    }

    /// Serves `ListDomains` from `store` (set once; later calls are ignored).
    pub fn set_domains(&self, store: Arc<dyn storage::DomainStore>) {
        let _ = self.inner.domains.set(store);
    }

    /// The routes to add to a tonic server (see [`crate::serve`]).
    pub fn routes(&self) -> Routes {
        Routes::new(SessionServer::new(self.clone()))
    }

    /// Ends every `Attach` stream, now and later, with `UNAVAILABLE` (edges reconnect
    /// elsewhere or retry); their sessions are detached. Call it before a graceful shutdown
    /// of the server, which otherwise waits for the streams forever.
    pub fn close_streams(&self) {
        self.inner.stop.send_replace(true);
    }
}

fn message(kind: pb::session_message::Kind) -> pb::SessionMessage {
    pb::SessionMessage {
        kind: Some(kind),
        metadata: context::inject(),
    }
}

fn failure(conn_id: u64, req_id: u64, code: pb::Code, text: &str) -> pb::SessionMessage {
    message(pb::session_message::Kind::Failure(pb::Failure {
        conn_id,
        req_id,
        error: Some(wire_error(code, text)),
    }))
}

/// Sends a control message (an answer); a stream that is gone is not an error here.
async fn reply(out: &Out, msg: pb::SessionMessage) {
    if out.send(Ok(msg)).await.is_err() {
        tracing::debug!("answer dropped: the edge stream is gone");
    }
}

/// The sink of one connection: a non-blocking push onto the stream's queue. It holds the
/// queue weakly, so that sinks kept by the session service do not keep a finished stream
/// open.
struct StreamSink {
    conn_id: u64,
    edge_id: Arc<str>,
    out: mpsc::WeakSender<Result<pb::SessionMessage, Status>>,
}

impl ClientSink for StreamSink {
    fn origin(&self) -> Option<(String, u64)> {
        Some((self.edge_id.to_string(), self.conn_id))
    }

    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        let Some(out) = self.out.upgrade() else {
            return Err(SinkError::Closed);
        };
        let kind = match item {
            ToClient::Stanza(el) => pb::session_message::Kind::Deliver(pb::Deliver {
                conn_id: self.conn_id,
                xml: element_to_bytes(&el),
            }),
            ToClient::Close(cond) => pb::session_message::Kind::CloseConn(pb::CloseConn {
                conn_id: self.conn_id,
                condition: cond.as_str().to_owned(),
            }),
        };
        out.try_send(Ok(message(kind))).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SinkError::Full,
            mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
        })
    }
}

/// What a connection's task is asked to do, in order.
enum ConnOp {
    Stanza {
        token: u64,
        xml: Bytes,
        /// The trace context the edge sent with it.
        cx: opentelemetry::Context,
    },
    Close {
        token: u64,
    },
    Detach {
        token: u64,
    },
    EnableSm {
        token: u64,
        resume: bool,
        req_id: u64,
    },
    SmAck {
        token: u64,
        h: u32,
    },
    SmCount {
        token: u64,
        req_id: u64,
    },
}

/// How a connection starts.
enum First {
    Open(FullJid),
    Resume {
        account: BareJid,
        id: String,
        h: u32,
        req_id: u64,
    },
}

/// The connections of one stream: conn id -> (registration number, queue of its task).
type ConnMap = Arc<Mutex<HashMap<u64, (u64, mpsc::Sender<ConnOp>)>>>;

fn lock(map: &ConnMap) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, mpsc::Sender<ConnOp>)>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

struct StreamCtx {
    inner: Arc<ServerInner>,
    out: Out,
    conns: ConnMap,
    next_reg: AtomicU64,
    edge_id: Arc<str>,
}

#[async_trait]
impl Session for SessionGrpcServer {
    type AttachStream = ReceiverStream<Result<pb::SessionMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::EdgeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let inbound = request.into_inner();
        let (out, rx) = mpsc::channel(self.inner.config.outbound_queue.max(1));
        tokio::spawn(run_stream(Arc::clone(&self.inner), inbound, out));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_credentials(
        &self,
        request: Request<pb::CredentialsRequest>,
    ) -> Result<Response<pb::CredentialsReply>, Status> {
        let req = request.into_inner();
        let jid: BareJid = req.jid.parse().map_err(|e| {
            tracing::info!(error = %e, "credentials request with a bad jid");
            Status::invalid_argument("bad jid")
        })?;
        match self.inner.accounts.get_credentials(&jid).await {
            Ok(creds) => Ok(Response::new(credentials_to_wire(creds))),
            Err(e) => {
                tracing::warn!(jid = %jid, error = %e, "credentials lookup failed");
                Err(storage_error_to_status(&e))
            }
        }
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountReply>, Status> {
        let req = request.into_inner();
        let jid: BareJid = req
            .jid
            .parse()
            .map_err(|_| Status::invalid_argument("bad jid"))?;
        if jid.local().is_none() || req.keys.is_empty() {
            return Err(Status::invalid_argument(
                "an account needs a localpart and keys",
            ));
        }
        let creds = crate::wire::credentials_from_wire(pb::CredentialsReply {
            found: true,
            keys: req.keys,
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .ok_or_else(|| Status::invalid_argument("no keys"))?;
        match self.inner.accounts.create_account(&jid, &creds).await {
            Ok(()) => {
                tracing::info!(jid = %jid, "account created for an edge");
                Ok(Response::new(pb::CreateAccountReply {}))
            }
            Err(e) => {
                tracing::info!(jid = %jid, error = %e, "account creation refused");
                Err(storage_error_to_status(&e))
            }
        }
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsReply>, Status> {
        let Some(store) = self.inner.domains.get() else {
            return Err(Status::unimplemented("this node serves no domain list"));
        };
        let known = request.into_inner().known_version;
        let version = store
            .domains_version()
            .await
            .map_err(|e| storage_error_to_status(&e))?;
        if version == known {
            return Ok(Response::new(pb::ListDomainsReply {
                version,
                changed: false,
                domains: Vec::new(),
            }));
        }
        let records = store
            .list_domains()
            .await
            .map_err(|e| storage_error_to_status(&e))?;
        Ok(Response::new(pb::ListDomainsReply {
            version,
            changed: true,
            domains: records
                .into_iter()
                .map(crate::wire::domain_to_wire)
                .collect(),
        }))
    }
}

async fn run_stream(inner: Arc<ServerInner>, mut inbound: Streaming<pb::EdgeMessage>, out: Out) {
    let mut stop = inner.stop.subscribe();
    let edge_id = match inbound.message().await {
        Ok(Some(pb::EdgeMessage {
            kind: Some(pb::edge_message::Kind::Hello(h)),
            ..
        })) => h.edge_id,
        Ok(Some(_)) => {
            tracing::info!("attach stream without hello");
            let _ = out
                .send(Err(Status::invalid_argument(
                    "the first message must be hello",
                )))
                .await;
            return;
        }
        Ok(None) => return,
        Err(status) => {
            tracing::debug!(error = %status, "attach stream failed before hello");
            return;
        }
    };
    tracing::info!(edge = %edge_id, "edge attached");
    let queue = out.downgrade();
    metrics::register_queue(Direction::SessionToEdge, edge_id.clone(), move || {
        queue.upgrade().map(|tx| metrics::queued(&tx))
    });
    let ctx = Arc::new(StreamCtx {
        inner,
        out,
        conns: Arc::new(Mutex::new(HashMap::new())),
        next_reg: AtomicU64::new(1),
        edge_id: Arc::from(edge_id),
    });
    loop {
        tokio::select! {
            stopping = async { stop.wait_for(|s| *s).await.is_ok() } => {
                if stopping {
                    tracing::info!(edge = %ctx.edge_id, "closing the edge stream");
                    let _ = ctx
                        .out
                        .send(Err(Status::unavailable("session node is shutting down")))
                        .await;
                }
                break;
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => dispatch(&ctx, m).await,
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(edge = %ctx.edge_id, error = %status, "edge stream failed");
                    break;
                }
            },
        }
    }
    // Dropping every connection's queue makes its task detach the session.
    let n = {
        let mut conns = lock(&ctx.conns);
        let n = conns.len();
        conns.clear();
        n
    };
    tracing::info!(edge = %ctx.edge_id, connections = n, "edge detached");
}

async fn dispatch(ctx: &Arc<StreamCtx>, m: pb::EdgeMessage) {
    use pb::edge_message::Kind;
    let Some(kind) = m.kind else {
        tracing::info!(edge = %ctx.edge_id, "empty message from the edge");
        reply(
            &ctx.out,
            failure(0, 0, pb::Code::InvalidArgument, "empty message"),
        )
        .await;
        return;
    };
    match kind {
        Kind::Hello(_) => {
            tracing::info!(edge = %ctx.edge_id, "second hello ignored");
        }
        Kind::Open(o) => {
            let answer = |e: pb::Error| {
                message(pb::session_message::Kind::Opened(pb::Opened {
                    conn_id: o.conn_id,
                    result: Some(pb::opened::Result::Error(e)),
                }))
            };
            let jid: FullJid = match o.full_jid.parse() {
                Ok(j) => j,
                Err(e) => {
                    tracing::info!(edge = %ctx.edge_id, conn = o.conn_id, error = %e, "open with a bad jid");
                    reply(
                        &ctx.out,
                        answer(wire_error(pb::Code::InvalidArgument, "bad jid")),
                    )
                    .await;
                    return;
                }
            };
            if !start_conn(ctx, o.conn_id, First::Open(jid)) {
                let e = wire_error(pb::Code::InvalidArgument, "connection id in use");
                reply(&ctx.out, answer(e)).await;
            }
        }
        Kind::Resume(r) => {
            let answer = |e: pb::Error| {
                message(pb::session_message::Kind::Resumed(pb::Resumed {
                    req_id: r.req_id,
                    result: Some(pb::resumed::Result::Error(e)),
                }))
            };
            let account: BareJid = match r.account.parse() {
                Ok(j) => j,
                Err(e) => {
                    tracing::info!(edge = %ctx.edge_id, conn = r.conn_id, error = %e, "resume with a bad account");
                    reply(
                        &ctx.out,
                        answer(wire_error(pb::Code::InvalidArgument, "bad jid")),
                    )
                    .await;
                    return;
                }
            };
            let first = First::Resume {
                account,
                id: r.id,
                h: r.h,
                req_id: r.req_id,
            };
            if !start_conn(ctx, r.conn_id, first) {
                let e = wire_error(pb::Code::InvalidArgument, "connection id in use");
                reply(&ctx.out, answer(e)).await;
            }
        }
        Kind::Stanza(s) => {
            let op = ConnOp::Stanza {
                token: s.token,
                xml: s.xml,
                cx: context::extract(&m.metadata),
            };
            if !forward(ctx, s.conn_id, op, false).await {
                reply(
                    &ctx.out,
                    failure(s.conn_id, 0, pb::Code::NotFound, "no such connection"),
                )
                .await;
            }
        }
        Kind::Close(c) => {
            // Unknown: already gone, nothing to say.
            forward(ctx, c.conn_id, ConnOp::Close { token: c.token }, true).await;
        }
        Kind::Detach(d) => {
            forward(ctx, d.conn_id, ConnOp::Detach { token: d.token }, true).await;
        }
        Kind::EnableSm(e) => {
            let op = ConnOp::EnableSm {
                token: e.token,
                resume: e.resume,
                req_id: e.req_id,
            };
            if !forward(ctx, e.conn_id, op, false).await {
                let msg = message(pb::session_message::Kind::SmEnabled(pb::SmEnabled {
                    req_id: e.req_id,
                    result: Some(pb::sm_enabled::Result::Error(wire_error(
                        pb::Code::NotFound,
                        "no such session",
                    ))),
                }));
                reply(&ctx.out, msg).await;
            }
        }
        Kind::SmCount(c) => {
            let op = ConnOp::SmCount {
                token: c.token,
                req_id: c.req_id,
            };
            if !forward(ctx, c.conn_id, op, false).await {
                let msg = message(pb::session_message::Kind::SmCounted(pb::SmCounted {
                    req_id: c.req_id,
                    result: Some(pb::sm_counted::Result::Error(wire_error(
                        pb::Code::NotFound,
                        "no such session",
                    ))),
                }));
                reply(&ctx.out, msg).await;
            }
        }
        Kind::SmAck(a) => {
            let op = ConnOp::SmAck {
                token: a.token,
                h: a.h,
            };
            if !forward(ctx, a.conn_id, op, false).await {
                reply(
                    &ctx.out,
                    failure(a.conn_id, 0, pb::Code::NotFound, "no such connection"),
                )
                .await;
            }
        }
    }
}

/// Registers a connection and starts its task. False when the id is in use.
fn start_conn(ctx: &Arc<StreamCtx>, conn_id: u64, first: First) -> bool {
    let (tx, rx) = mpsc::channel(ctx.inner.config.conn_queue.max(1));
    let reg = ctx.next_reg.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = lock(&ctx.conns);
        if conns.contains_key(&conn_id) {
            tracing::info!(edge = %ctx.edge_id, conn = conn_id, "connection id in use");
            return false;
        }
        conns.insert(conn_id, (reg, tx));
    }
    tokio::spawn(run_conn(Arc::clone(ctx), conn_id, reg, first, rx));
    true
}

/// Hands an operation to a connection's task (waiting if its queue is full). With `last`,
/// the connection is unregistered. False when there is no such connection.
async fn forward(ctx: &StreamCtx, conn_id: u64, op: ConnOp, last: bool) -> bool {
    let tx = {
        let mut conns = lock(&ctx.conns);
        if last {
            conns.remove(&conn_id).map(|(_, tx)| tx)
        } else {
            conns.get(&conn_id).map(|(_, tx)| tx.clone())
        }
    };
    match tx {
        Some(tx) => tx.send(op).await.is_ok(),
        None => {
            tracing::debug!(edge = %ctx.edge_id, conn = conn_id, "message for an unknown connection");
            false
        }
    }
}

async fn run_conn(
    ctx: Arc<StreamCtx>,
    conn_id: u64,
    reg: u64,
    first: First,
    mut rx: mpsc::Receiver<ConnOp>,
) {
    let svc = Arc::clone(&ctx.inner.service);
    let sink: Arc<dyn ClientSink> = Arc::new(StreamSink {
        conn_id,
        edge_id: Arc::clone(&ctx.edge_id),
        out: ctx.out.downgrade(),
    });
    let started = match first {
        First::Open(jid) => {
            let res = svc.open(jid.clone(), sink).await;
            let result = match &res {
                Ok(t) => pb::opened::Result::Token(t.0),
                Err(e) => {
                    tracing::info!(edge = %ctx.edge_id, conn = conn_id, jid = %jid, error = %e, "open refused");
                    pb::opened::Result::Error(session_error_to_wire(e))
                }
            };
            let msg = message(pb::session_message::Kind::Opened(pb::Opened {
                conn_id,
                result: Some(result),
            }));
            reply(&ctx.out, msg).await;
            res.ok().map(|t| (jid, t))
        }
        First::Resume {
            account,
            id,
            h,
            req_id,
        } => {
            let res = svc.sm_resume(&account, &id, h, sink).await;
            let result = match &res {
                Ok(r) => pb::resumed::Result::Ok(pb::ResumedOk {
                    full_jid: r.jid.to_string(),
                    token: r.token.0,
                    server_h: r.server_h,
                }),
                Err(e) => {
                    tracing::info!(edge = %ctx.edge_id, conn = conn_id, account = %account, error = %e, "resume refused");
                    pb::resumed::Result::Error(session_error_to_wire(e))
                }
            };
            let msg = message(pb::session_message::Kind::Resumed(pb::Resumed {
                req_id,
                result: Some(result),
            }));
            reply(&ctx.out, msg).await;
            res.ok().map(|r| (r.jid, r.token))
        }
    };
    if let Some((jid, token)) = started {
        conn_loop(&ctx, conn_id, &jid, token, &mut rx).await;
    }
    let mut conns = lock(&ctx.conns);
    if conns.get(&conn_id).is_some_and(|(r, _)| *r == reg) {
        conns.remove(&conn_id);
    }
}

/// Applies a connection's operations in order until it ends. When its queue closes without
/// an explicit end (the stream is gone), the session is detached.
async fn conn_loop(
    ctx: &StreamCtx,
    conn_id: u64,
    jid: &FullJid,
    token: SessionToken,
    rx: &mut mpsc::Receiver<ConnOp>,
) {
    let svc = &ctx.inner.service;
    let close_conn = |cond: StreamErrorCondition| {
        message(pb::session_message::Kind::CloseConn(pb::CloseConn {
            conn_id,
            condition: cond.as_str().to_owned(),
        }))
    };
    while let Some(op) = rx.recv().await {
        match op {
            ConnOp::Stanza { token, xml, cx } => {
                let el = match parse_element(&xml) {
                    Ok(el) => el,
                    Err(e) => {
                        tracing::warn!(edge = %ctx.edge_id, conn = conn_id, jid = %jid, error = %e, "unparsable stanza from the edge");
                        let f = failure(conn_id, 0, pb::Code::InvalidArgument, "unparsable stanza");
                        reply(&ctx.out, f).await;
                        continue;
                    }
                };
                // The edge is the trust boundary; still, refuse what it never sends.
                let from_ok = el.get_attr("from") == Some(jid.as_str());
                if el.ns() != ns::CLIENT
                    || !matches!(el.name(), "message" | "presence" | "iq")
                    || !from_ok
                {
                    tracing::warn!(edge = %ctx.edge_id, conn = conn_id, jid = %jid, name = el.name(), "stanza the edge should not have sent");
                    let f = failure(
                        conn_id,
                        0,
                        pb::Code::InvalidArgument,
                        "not a client stanza of this session",
                    );
                    reply(&ctx.out, f).await;
                    continue;
                }
                // The session's `session.route` span continues the edge's trace.
                match context::within(cx, svc.stanza(jid, SessionToken(token), el)).await {
                    Ok(()) => {}
                    Err(SessionError::NoSession) => {
                        // Replaced or closed: the connection ends as the edge would end it.
                        reply(&ctx.out, close_conn(StreamErrorCondition::Conflict)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(edge = %ctx.edge_id, conn = conn_id, jid = %jid, error = %e, "session failed to take a stanza");
                        let msg = message(pb::session_message::Kind::Failure(pb::Failure {
                            conn_id,
                            req_id: 0,
                            error: Some(session_error_to_wire(&e)),
                        }));
                        reply(&ctx.out, msg).await;
                    }
                }
            }
            ConnOp::Close { token } => {
                svc.close(jid, SessionToken(token)).await;
                return;
            }
            ConnOp::Detach { token } => {
                svc.detach(jid, SessionToken(token)).await;
                return;
            }
            ConnOp::EnableSm {
                token,
                resume,
                req_id,
            } => {
                let result = match svc.enable_sm(jid, SessionToken(token), resume).await {
                    Ok(en) => pb::sm_enabled::Result::Ok(pb::SmEnabledOk {
                        id: en.id.unwrap_or_default(),
                        max_secs: en.max_secs,
                    }),
                    Err(e) => pb::sm_enabled::Result::Error(session_error_to_wire(&e)),
                };
                let msg = message(pb::session_message::Kind::SmEnabled(pb::SmEnabled {
                    req_id,
                    result: Some(result),
                }));
                reply(&ctx.out, msg).await;
            }
            ConnOp::SmCount { token, req_id } => {
                let result = match svc.sm_received(jid, SessionToken(token)).await {
                    Ok(h) => pb::sm_counted::Result::H(h),
                    Err(e) => pb::sm_counted::Result::Error(session_error_to_wire(&e)),
                };
                let msg = message(pb::session_message::Kind::SmCounted(pb::SmCounted {
                    req_id,
                    result: Some(result),
                }));
                reply(&ctx.out, msg).await;
            }
            ConnOp::SmAck { token, h } => match svc.sm_ack(jid, SessionToken(token), h).await {
                Ok(()) => {}
                Err(SessionError::NoSession) => {
                    reply(&ctx.out, close_conn(StreamErrorCondition::Conflict)).await;
                    return;
                }
                Err(e) => {
                    // What the edge does with a bad acknowledgement: end the stream. The
                    // session ends here, since the edge will not call close for it.
                    tracing::info!(edge = %ctx.edge_id, conn = conn_id, jid = %jid, h, error = %e, "bad acknowledgement");
                    svc.close(jid, SessionToken(token)).await;
                    reply(
                        &ctx.out,
                        close_conn(StreamErrorCondition::UndefinedCondition),
                    )
                    .await;
                    return;
                }
            },
        }
    }
    svc.detach(jid, token).await;
}
