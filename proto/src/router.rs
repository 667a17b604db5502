//! `relais.router.v1.Router`: [`GrpcRouter`] implements [`Router`] on a remote router, and
//! [`RouterGrpcServer`] serves an `Arc<dyn Router>`.
//!
//! Each routed stanza needs its own answer (a `no route` is bounced to its sender). Nodes
//! send them on `RouteStream`: [`LANES`] long-lived streams per peer, a stanza's lane chosen
//! by its recipient so one recipient's stanzas keep their order, each request answered by the
//! reply with its `seq`. A per-stanza unary call cost about 40 µs of CPU on each side (an
//! HTTP/2 stream, headers, trailers); a message on an open stream costs a DATA frame. A peer
//! without `RouteStream` (`Unimplemented`) gets unary `Route` calls. Errors travel in the
//! reply (`RouteReply.error`); a gRPC status other than OK, or a broken stream, means the
//! peer could not be reached.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use router::{RouteError, Router};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use xmpp::Element;

use crate::context;
use crate::error::ProtoError;
use crate::metrics::{self, Method, Outcome};
use crate::pb::relais::router::v1 as pb;
use crate::pb::relais::router::v1::router_client::RouterClient;
use crate::pb::relais::router::v1::router_server::{Router as RouterRpc, RouterServer};
use crate::wire::{element_to_bytes, kind_name, meta_of, parse_element};

/// Streams per peer. Stanzas for one recipient always take the same lane.
pub const LANES: usize = 4;
/// Requests waiting on one lane before `route` waits for room.
const LANE_QUEUE: usize = 1024;
/// How long one stanza waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::RouteReply>>>>;

/// Why a call to a peer got no answer, and whether the peer can have the stanza.
#[derive(Debug)]
enum CallError {
    /// The request never left this process (no stream could be opened to the peer, or its
    /// queue was closed before the request went in): another peer may be offered it.
    NotSent(Status),
    /// The request was handed to the peer's stream and no answer came (the stream broke,
    /// the answer timed out, or a unary call failed in flight): the peer may have delivered
    /// it, so it must not be offered to another.
    Unconfirmed(Status),
}

impl CallError {
    fn status(&self) -> &Status {
        match self {
            CallError::NotSent(s) | CallError::Unconfirmed(s) => s,
        }
    }

    fn into_route_error(self) -> RouteError {
        match self {
            CallError::NotSent(s) => {
                RouteError::Unavailable(format!("{:?}: {}", s.code(), s.message()))
            }
            CallError::Unconfirmed(s) => {
                RouteError::Unconfirmed(format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }
}

/// One open `RouteStream`.
struct Link {
    tx: mpsc::Sender<pb::RouteRequest>,
    pending: Pending,
    next_seq: AtomicU64,
    dead: Arc<AtomicBool>,
}

/// A [`Router`] on a remote router (or a session node's delivery endpoint).
#[derive(Clone)]
pub struct GrpcRouter {
    client: RouterClient<Channel>,
    lanes: Arc<[tokio::sync::Mutex<Option<Arc<Link>>>]>,
    /// The peer answered `Unimplemented` to `RouteStream`: unary calls only.
    unary_only: Arc<AtomicBool>,
}

impl std::fmt::Debug for GrpcRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRouter").finish_non_exhaustive()
    }
}

impl GrpcRouter {
    /// A router at `endpoint`; connects on first use.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self, ProtoError> {
        Self::connect_lazy_with(endpoint, &crate::ClientConfig::default())
    }

    /// A router at `endpoint` reached as `config` says (TLS, timeouts, keepalive); connects
    /// on first use.
    pub fn connect_lazy_with(
        endpoint: impl Into<String>,
        config: &crate::ClientConfig,
    ) -> Result<Self, ProtoError> {
        let channel = crate::channel(endpoint.into(), config)?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        GrpcRouter {
            client: RouterClient::new(channel),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(None)).collect(),
            unary_only: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The open stream of `lane`, opening it if needed. `Ok(None)`: the peer has no
    /// `RouteStream`.
    async fn link(&self, lane: usize) -> Result<Option<Arc<Link>>, Status> {
        let Some(slot) = self.lanes.get(lane) else {
            return Ok(None);
        };
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref()
            && !link.dead.load(Ordering::Acquire)
        {
            return Ok(Some(Arc::clone(link)));
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let mut client = self.client.clone();
        let inbound = match client.route_stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                self.unary_only.store(true, Ordering::Release);
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_replies(
            inbound,
            Arc::clone(&pending),
            Arc::clone(&dead),
        ));
        let link = Arc::new(Link {
            tx,
            pending,
            next_seq: AtomicU64::new(1),
            dead,
        });
        *slot = Some(Arc::clone(&link));
        Ok(Some(link))
    }

    /// Routes one request and returns the peer's reply; `Err` when no answer came, saying
    /// whether the peer can have received the request.
    async fn call(&self, req: pb::RouteRequest) -> Result<pb::RouteReply, CallError> {
        let started = Instant::now();
        let res = if self.unary_only.load(Ordering::Acquire) {
            self.unary(req).await
        } else {
            self.streamed(req).await
        };
        let outcome = match &res {
            Ok(pb::RouteReply {
                result: Some(pb::route_reply::Result::Ok(_)),
                ..
            }) => Outcome::Ok,
            Ok(_) => Outcome::Error,
            Err(e) if e.status().code() == tonic::Code::DeadlineExceeded => Outcome::Timeout,
            Err(_) => Outcome::Unavailable,
        };
        metrics::client_call(Method::Route, outcome, started);
        res
    }

    async fn unary(&self, req: pb::RouteRequest) -> Result<pb::RouteReply, CallError> {
        let mut client = self.client.clone();
        // A failed unary call cannot tell "never connected" from "lost in flight".
        client
            .route(req)
            .await
            .map(Response::into_inner)
            .map_err(CallError::Unconfirmed)
    }

    async fn streamed(&self, mut req: pb::RouteRequest) -> Result<pb::RouteReply, CallError> {
        let lane = lane_of(req.meta.as_ref().map_or("", |m| m.to.as_str()));
        // The stream opens before the request is queued on it: a failure here means the
        // peer never saw the request.
        let Some(link) = self.link(lane).await.map_err(CallError::NotSent)? else {
            return self.unary(req).await;
        };
        let seq = link.next_seq.fetch_add(1, Ordering::Relaxed);
        req.seq = seq;
        let (tx, rx) = oneshot::channel();
        lock(&link.pending).insert(seq, tx);
        if link.tx.send(req).await.is_err() {
            lock(&link.pending).remove(&seq);
            link.dead.store(true, Ordering::Release);
            return Err(CallError::NotSent(Status::unavailable(
                "route stream closed",
            )));
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // The stream broke before the answer: whether the peer took the stanza is unknown,
            // as for a unary call that failed in flight.
            Ok(Err(_)) => Err(CallError::Unconfirmed(Status::unavailable(
                "route stream broke before the answer",
            ))),
            Err(_) => {
                lock(&link.pending).remove(&seq);
                Err(CallError::Unconfirmed(Status::deadline_exceeded(
                    "no answer on the route stream",
                )))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lane of a recipient: its bare JID, hashed.
fn lane_of(to: &str) -> usize {
    let bare = to.split_once('/').map_or(to, |(b, _)| b);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bare.hash(&mut h);
    // The remainder is below LANES.
    (h.finish() % LANES as u64) as usize
}

/// Delivers each reply to the request waiting for it; when the stream ends, marks the link
/// dead and fails what is still waiting (their senders are dropped).
async fn read_replies(
    mut inbound: Streaming<pb::RouteReply>,
    pending: Pending,
    dead: Arc<AtomicBool>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(reply)) => {
                if let Some(tx) = lock(&pending).remove(&reply.seq) {
                    let _ = tx.send(reply);
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(error = %status, "route stream broke");
                break;
            }
        }
    }
    dead.store(true, Ordering::Release);
    lock(&pending).clear();
}

#[async_trait]
impl Router for GrpcRouter {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        let req = pb::RouteRequest {
            xml: element_to_bytes(&stanza),
            meta: Some(meta_of(&stanza)),
            metadata: context::inject(),
            seq: 0,
        };
        let reply = match self.call(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e.status(), "router call failed");
                return Err(e.into_route_error());
            }
        };
        match reply.result {
            Some(pb::route_reply::Result::Ok(_)) => Ok(()),
            Some(pb::route_reply::Result::Error(e)) => Err(
                match pb::RouteCode::try_from(e.code).unwrap_or(pb::RouteCode::Unspecified) {
                    pb::RouteCode::NoRoute => RouteError::NoRoute(e.message),
                    pb::RouteCode::Unavailable => RouteError::Unavailable(e.message),
                    pb::RouteCode::Unconfirmed => RouteError::Unconfirmed(e.message),
                    pb::RouteCode::InvalidArgument | pb::RouteCode::Unspecified => {
                        RouteError::Unavailable(format!("router refused the stanza: {}", e.message))
                    }
                },
            ),
            None => Err(RouteError::Unavailable(
                "malformed answer from the router".to_owned(),
            )),
        }
    }
}

/// Serves `relais.router.v1.Router` over a [`Router`].
#[derive(Clone)]
pub struct RouterGrpcServer {
    router: Arc<dyn Router>,
    stop: watch::Sender<bool>,
}

impl RouterGrpcServer {
    pub fn new(router: Arc<dyn Router>) -> Self {
        RouterGrpcServer {
            router,
            stop: watch::channel(false).0,
        }
    }

    /// Ends every `RouteStream`, now and later (peers reconnect elsewhere). Call it before a
    /// graceful shutdown of the server, which otherwise waits for the streams.
    pub fn close_streams(&self) {
        self.stop.send_replace(true);
    }

    /// The routes to add to a tonic server (see [`crate::serve`]).
    pub fn routes(&self) -> Routes {
        Routes::new(RouterServer::new(Served(self.clone())))
    }

    /// `routes` with this service added (to share a server with another service).
    pub fn add_to(&self, routes: Routes) -> Routes {
        routes.add_service(RouterServer::new(Served(self.clone())))
    }
}

fn error_reply(code: pb::RouteCode, message: String) -> pb::RouteReply {
    pb::RouteReply {
        result: Some(pb::route_reply::Result::Error(pb::RouteError {
            code: code as i32,
            message,
        })),
        seq: 0,
    }
}

type ReplyStream = ReceiverStream<Result<pb::RouteReply, Status>>;

/// Serves one `RouteStream`: requests handled in order, each reply tagged with its `seq`,
/// until the peer ends the stream or `stop` turns true.
fn serve_stream<F, Fut>(
    mut inbound: Streaming<pb::RouteRequest>,
    mut stop: watch::Receiver<bool>,
    handle: F,
) -> ReplyStream
where
    F: Fn(pb::RouteRequest) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = pb::RouteReply> + Send,
{
    let (tx, rx) = mpsc::channel(LANE_QUEUE);
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                m = inbound.message() => match m {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(error = %status, "route stream from a peer broke");
                        break;
                    }
                },
            };
            let seq = req.seq;
            let mut reply = handle(req).await;
            reply.seq = seq;
            if tx.send(Ok(reply)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// What serves one routed stanza: the session node's delivery or the router's relay.
#[async_trait]
trait Handle: Clone + Send + Sync + 'static {
    async fn handle(&self, req: pb::RouteRequest) -> pb::RouteReply;
    fn stop(&self) -> watch::Receiver<bool>;
}

/// `relais.router.v1.Router` over a [`Handle`]: unary calls and streams alike.
#[derive(Clone)]
struct Served<H>(H);

#[async_trait]
impl<H: Handle> RouterRpc for Served<H> {
    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteReply>, Status> {
        Ok(Response::new(self.0.handle(request.into_inner()).await))
    }

    type RouteStreamStream = ReplyStream;

    async fn route_stream(
        &self,
        request: Request<Streaming<pb::RouteRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        // A stopping server refuses new streams outright, so the caller knows the stanzas it
        // has not sent yet never arrived here and can offer them to another node.
        if *self.0.stop().borrow() {
            return Err(Status::unavailable("shutting down"));
        }
        let h = self.0.clone();
        Ok(Response::new(serve_stream(
            request.into_inner(),
            self.0.stop(),
            move |req| {
                let h = h.clone();
                async move { h.handle(req).await }
            },
        )))
    }
}

#[async_trait]
impl Handle for RouterGrpcServer {
    fn stop(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    async fn handle(&self, req: pb::RouteRequest) -> pb::RouteReply {
        let parent = context::extract(&req.metadata);
        let el = match parse_element(&req.xml) {
            Ok(el) => el,
            Err(e) => {
                tracing::info!(error = %e, "unparsable stanza to route");
                return error_reply(
                    pb::RouteCode::InvalidArgument,
                    "unparsable stanza".to_owned(),
                );
            }
        };
        // The router's spans (for example the session service's `session.route`) continue
        // the sender's trace.
        match context::within(parent, self.router.route(el)).await {
            Ok(()) => pb::RouteReply {
                result: Some(pb::route_reply::Result::Ok(pb::RouteOk {})),
                seq: 0,
            },
            Err(RouteError::NoRoute(domain)) => error_reply(pb::RouteCode::NoRoute, domain),
            Err(RouteError::Unavailable(m)) => error_reply(pb::RouteCode::Unavailable, m),
            Err(RouteError::Unconfirmed(m)) => error_reply(pb::RouteCode::Unconfirmed, m),
        }
    }
}

/// Where a relaying router sends a stanza: the candidates for its recipient, best first.
pub trait RelayTargets: Send + Sync + 'static {
    /// The routers that can take a stanza addressed to `to` (the owning session node first,
    /// then the nodes that would own it if that one were gone), or why there is no route.
    fn targets(&self, to: &str) -> Result<Vec<GrpcRouter>, RouteError>;
}

/// Serves `relais.router.v1.Router` as a relay: each stanza goes on to the first target of
/// [`RelayTargets`] that answers, as received — its XML is never parsed here, only the
/// routing metadata is read. A target that provably did not get the stanza (no stream to it
/// could be opened) is skipped for the next one; a target that got it and did not answer is
/// not (the stanza may have been delivered): the sender gets `UNCONFIRMED` and bounces it.
/// So one stanza never reaches two owners.
#[derive(Clone)]
pub struct RelayGrpcServer {
    targets: Arc<dyn RelayTargets>,
    stop: watch::Sender<bool>,
}

impl RelayGrpcServer {
    pub fn new(targets: Arc<dyn RelayTargets>) -> Self {
        RelayGrpcServer {
            targets,
            stop: watch::channel(false).0,
        }
    }

    /// Ends every `RouteStream` (see [`RouterGrpcServer::close_streams`]).
    pub fn close_streams(&self) {
        self.stop.send_replace(true);
    }

    /// The routes to add to a tonic server (see [`crate::serve`]).
    pub fn routes(&self) -> Routes {
        Routes::new(RouterServer::new(Served(self.clone())))
    }
}

#[async_trait]
impl Handle for RelayGrpcServer {
    fn stop(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    async fn handle(&self, req: pb::RouteRequest) -> pb::RouteReply {
        let parent = context::extract(&req.metadata);
        let (kind, ty) = req
            .meta
            .as_ref()
            .map_or(("unknown", ""), |m| (kind_name(m.kind), m.r#type.as_str()));
        let span = tracing::info_span!(
            target: session::TRACE_TARGET,
            "router.relay",
            "stanza.kind" = kind,
            "stanza.type" = (!ty.is_empty()).then_some(ty),
            mode = "relay",
        );
        if context::is_remote(&parent) {
            // Fails only when the span is disabled (no exporter): nothing to link then.
            let _ = span.set_parent(parent);
        }
        self.relay(req).instrument(span).await
    }
}

impl RelayGrpcServer {
    async fn relay(&self, mut req: pb::RouteRequest) -> pb::RouteReply {
        let to = req.meta.as_ref().map(|m| m.to.as_str()).unwrap_or_default();
        let targets = match self.targets.targets(to) {
            Ok(t) => t,
            Err(RouteError::NoRoute(d)) => return error_reply(pb::RouteCode::NoRoute, d),
            Err(RouteError::Unavailable(m)) => return error_reply(pb::RouteCode::Unavailable, m),
            Err(RouteError::Unconfirmed(m)) => return error_reply(pb::RouteCode::Unconfirmed, m),
        };
        // The next hop continues this hop's span; without one (no exporter here), the
        // sender's context goes on unchanged.
        let here = context::inject();
        if !here.is_empty() {
            req.metadata = here;
        }
        for target in targets {
            match target.call(req.clone()).await {
                Ok(reply) => return reply,
                Err(CallError::NotSent(status)) => {
                    let to = req.meta.as_ref().map(|m| m.to.as_str()).unwrap_or_default();
                    tracing::warn!(to, error = %status, "relay target unreachable; trying the next");
                }
                // The target may have delivered it: offering it to the next owner could
                // deliver it twice. The sender bounces it instead.
                Err(CallError::Unconfirmed(status)) => {
                    let to = req.meta.as_ref().map(|m| m.to.as_str()).unwrap_or_default();
                    tracing::warn!(to, error = %status, "relay target did not confirm; not retrying");
                    return error_reply(pb::RouteCode::Unconfirmed, status.message().to_owned());
                }
            }
        }
        error_reply(
            pb::RouteCode::Unavailable,
            "no session node could take the stanza".to_owned(),
        )
    }
}
