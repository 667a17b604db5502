//! Relais's versioned gRPC API and the adapters that carry the role traits over it, so that a
//! caller cannot tell a local implementation from a remote one.
//!
//! The API lives in `proto/relais/{session,router}/v1/*.proto`; `build.rs` compiles it with
//! `protox` (no system `protoc`) and tonic's prost generator. The generated types stay
//! inside this crate: the public API speaks the domain types (`FullJid`, `Element`,
//! `SessionToken`, the traits' errors).
//!
//! - [`GrpcSessionClient`] (edge side) implements `session::SessionService` over one
//!   multiplexed `Attach` stream to a session node, with re-attach after a break;
//!   [`SessionGrpcServer`] (session node) serves an `Arc<dyn SessionService>`.
//! - [`GrpcCredentials`] implements `storage::AccountStore` for the edge (reads only).
//! - [`GrpcRouter`] implements `router::Router`; [`RouterGrpcServer`] serves one.
//! - [`GrpcAdminClient`] implements `admin::AdminService` (`relais.admin.v1`, bearer
//!   tokens); [`AdminGrpcServer`] serves an `Arc<dyn AdminService>` behind `admin::Tokens`.
//! - [`serve_with`] runs a tonic server for any of the servers' [`Routes`], with mutual TLS
//!   ([`ClusterTls`]) and HTTP/2 keepalive; clients take the same [`ClusterTls`] in
//!   [`ClientConfig`].
//!
//! Stanzas travel as serialized XML (`Element::to_bytes_in("")`) plus routing metadata, so
//! a router never needs to parse them. Every message has a `metadata` map, which carries the
//! W3C trace context of the stanza (see `context.rs`), so one trace follows a stanza across
//! edge, session nodes and router. `metrics.rs` records call latencies and queue depths.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};

pub use tonic::service::Routes;

mod admin_rpc;
mod context;
mod credentials;
mod error;
mod metrics;
mod router;
mod session_client;
mod session_server;
mod tls;
mod wire;

#[cfg(test)]
mod malformed_tests;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]
mod pb {
    pub mod relais {
        pub mod session {
            pub mod v1 {
                tonic::include_proto!("relais.session.v1");
            }
        }
        pub mod router {
            pub mod v1 {
                tonic::include_proto!("relais.router.v1");
            }
        }
        pub mod admin {
            pub mod v1 {
                tonic::include_proto!("relais.admin.v1");
            }
        }
    }
}

pub use admin_rpc::{
    AdminGrpcServer, GrpcAdminClient, admin_error_to_status, status_to_admin_error,
};
pub use credentials::{GrpcCredentials, GrpcDomains};
pub use error::{
    ErrorCode, ProtoError, route_error_to_status, session_error_to_status, status_to_route_error,
    status_to_session_error, status_to_storage_error, storage_error_to_status,
};
pub use router::{GrpcRouter, RelayGrpcServer, RelayTargets, RouterGrpcServer};
pub use session_client::{ClientConfig, GrpcSessionClient};
pub use session_server::{ServerConfig, SessionGrpcServer};
pub use tls::{ClusterTls, DEFAULT_SERVER_NAME, TlsError};

/// The encoded `FileDescriptorSet` of the whole API (for gRPC reflection and checks).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/relais_descriptor.bin"));

/// How a cluster gRPC server runs: TLS (required client certificates) or plain, and its
/// HTTP/2 keepalive, which notices a peer that vanished without closing its connection.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Mutual TLS with the cluster CA; `None` serves plain HTTP/2 (loopback, tests, or a
    /// private network the operator vouches for).
    pub tls: Option<ClusterTls>,
    /// HTTP/2 ping interval on every connection. Default 5 s.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed. Default 5 s.
    pub keepalive_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tls: None,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `routes` (for example `session.routes().add_service(...)`, or one server's) on
/// `listener` in plain HTTP/2 until `shutdown` resolves, then drains (see [`serve_with`]).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProtoError> {
    serve_with(listener, routes, &ServeConfig::default(), shutdown).await
}

/// Serves `routes` on `listener` as `config` says until `shutdown` resolves, then drains.
/// Long-lived `Attach` streams keep a drain waiting: call
/// [`SessionGrpcServer::close_streams`] first.
pub async fn serve_with(
    listener: TcpListener,
    routes: Routes,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProtoError> {
    let mut server = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout));
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(tls.server())
            .map_err(|e| ProtoError::Serve(format!("cluster tls: {e}")))?;
    }
    server
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| ProtoError::Serve(e.to_string()))
}

/// A lazily connecting channel to `uri` as `config` says. With TLS, an `http://` URI is
/// dialled as `https://` (cluster addresses are written without a scheme choice).
fn channel(uri: String, config: &ClientConfig) -> Result<Channel, ProtoError> {
    let uri = match (&config.tls, uri.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => uri,
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| ProtoError::Endpoint(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.client())
            .map_err(|e| ProtoError::Endpoint(format!("cluster tls: {e}")))?;
    }
    Ok(endpoint.connect_lazy())
}
