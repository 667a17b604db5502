//! `relais.router.v1.Router`: [`GrpcRouter`] implements [`Router`] on a remote router, and
//! [`RouterGrpcServer`] serves an `Arc<dyn Router>`.
//!
//! Unary calls, one per stanza: each routed stanza is independent and needs its own answer
//! (a `no route` is bounced to its sender), and HTTP/2 already multiplexes concurrent calls
//! on one connection. Errors travel in the reply (`RouteReply.error`); a gRPC status other
//! than OK means the router itself could not be reached.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use router::{RouteError, Router};
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use xmpp::Element;

use crate::context;
use crate::error::{ProtoError, status_to_route_error};
use crate::metrics::{self, Method, Outcome};
use crate::pb::relais::router::v1 as pb;
use crate::pb::relais::router::v1::router_client::RouterClient;
use crate::pb::relais::router::v1::router_server::{Router as RouterRpc, RouterServer};
use crate::wire::{element_to_bytes, kind_name, meta_of, parse_element};

/// A [`Router`] on a remote router.
#[derive(Clone, Debug)]
pub struct GrpcRouter {
    client: RouterClient<Channel>,
}

impl GrpcRouter {
    /// A router at `endpoint`; connects on first use.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self, ProtoError> {
        let d = crate::session_client::ClientConfig::default();
        let channel = crate::channel(
            endpoint.into(),
            d.connect_timeout,
            d.keepalive_interval,
            d.keepalive_timeout,
        )?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        GrpcRouter {
            client: RouterClient::new(channel),
        }
    }
}

/// One `Route` call, timed for `relais.grpc.client.duration`.
async fn call_route(
    client: &RouterClient<Channel>,
    req: pb::RouteRequest,
) -> Result<pb::RouteReply, Status> {
    let started = Instant::now();
    let mut client = client.clone();
    let res = client.route(req).await.map(Response::into_inner);
    let outcome = match &res {
        Ok(pb::RouteReply {
            result: Some(pb::route_reply::Result::Ok(_)),
        }) => Outcome::Ok,
        Ok(_) => Outcome::Error,
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => Outcome::Timeout,
        Err(_) => Outcome::Unavailable,
    };
    metrics::client_call(Method::Route, outcome, started);
    res
}

#[async_trait]
impl Router for GrpcRouter {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        let req = pb::RouteRequest {
            xml: element_to_bytes(&stanza),
            meta: Some(meta_of(&stanza)),
            metadata: context::inject(),
        };
        let reply = match call_route(&self.client, req).await {
            Ok(r) => r,
            Err(status) => {
                tracing::warn!(error = %status, "router call failed");
                return Err(status_to_route_error(&status));
            }
        };
        match reply.result {
            Some(pb::route_reply::Result::Ok(_)) => Ok(()),
            Some(pb::route_reply::Result::Error(e)) => Err(
                match pb::RouteCode::try_from(e.code).unwrap_or(pb::RouteCode::Unspecified) {
                    pb::RouteCode::NoRoute => RouteError::NoRoute(e.message),
                    pb::RouteCode::Unavailable => RouteError::Unavailable(e.message),
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
}

impl RouterGrpcServer {
    pub fn new(router: Arc<dyn Router>) -> Self {
        RouterGrpcServer { router }
    }

    /// The routes to add to a tonic server (see [`crate::serve`]).
    pub fn routes(&self) -> Routes {
        Routes::new(RouterServer::new(self.clone()))
    }

    /// `routes` with this service added (to share a server with another service).
    pub fn add_to(&self, routes: Routes) -> Routes {
        routes.add_service(RouterServer::new(self.clone()))
    }
}

fn error_reply(code: pb::RouteCode, message: String) -> pb::RouteReply {
    pb::RouteReply {
        result: Some(pb::route_reply::Result::Error(pb::RouteError {
            code: code as i32,
            message,
        })),
    }
}

#[async_trait]
impl RouterRpc for RouterGrpcServer {
    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteReply>, Status> {
        let req = request.into_inner();
        let parent = context::extract(&req.metadata);
        let el = match parse_element(&req.xml) {
            Ok(el) => el,
            Err(e) => {
                tracing::info!(error = %e, "unparsable stanza to route");
                return Ok(Response::new(error_reply(
                    pb::RouteCode::InvalidArgument,
                    "unparsable stanza".to_owned(),
                )));
            }
        };
        // The router's spans (for example the session service's `session.route`) continue
        // the sender's trace.
        let reply = match context::within(parent, self.router.route(el)).await {
            Ok(()) => pb::RouteReply {
                result: Some(pb::route_reply::Result::Ok(pb::RouteOk {})),
            },
            Err(RouteError::NoRoute(domain)) => error_reply(pb::RouteCode::NoRoute, domain),
            Err(RouteError::Unavailable(m)) => error_reply(pb::RouteCode::Unavailable, m),
        };
        Ok(Response::new(reply))
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
/// routing metadata is read. A target that cannot be reached is skipped for the next one.
#[derive(Clone)]
pub struct RelayGrpcServer {
    targets: Arc<dyn RelayTargets>,
}

impl RelayGrpcServer {
    pub fn new(targets: Arc<dyn RelayTargets>) -> Self {
        RelayGrpcServer { targets }
    }

    /// The routes to add to a tonic server (see [`crate::serve`]).
    pub fn routes(&self) -> Routes {
        Routes::new(RouterServer::new(self.clone()))
    }
}

#[async_trait]
impl RouterRpc for RelayGrpcServer {
    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteReply>, Status> {
        let req = request.into_inner();
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
        let reply = self.relay(req).instrument(span).await;
        Ok(Response::new(reply))
    }
}

impl RelayGrpcServer {
    async fn relay(&self, mut req: pb::RouteRequest) -> pb::RouteReply {
        let to = req.meta.as_ref().map(|m| m.to.as_str()).unwrap_or_default();
        let targets = match self.targets.targets(to) {
            Ok(t) => t,
            Err(RouteError::NoRoute(d)) => return error_reply(pb::RouteCode::NoRoute, d),
            Err(RouteError::Unavailable(m)) => return error_reply(pb::RouteCode::Unavailable, m),
        };
        // The next hop continues this hop's span; without one (no exporter here), the
        // sender's context goes on unchanged.
        let here = context::inject();
        if !here.is_empty() {
            req.metadata = here;
        }
        for target in targets {
            match call_route(&target.client, req.clone()).await {
                Ok(reply) => return reply,
                Err(status) => {
                    let to = req.meta.as_ref().map(|m| m.to.as_str()).unwrap_or_default();
                    tracing::warn!(to, error = %status, "relay target failed; trying the next");
                }
            }
        }
        error_reply(
            pb::RouteCode::Unavailable,
            "no session node could take the stanza".to_owned(),
        )
    }
}
