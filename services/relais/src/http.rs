//! The operations HTTP endpoint: `/healthz` (the process serves), `/readyz` (it accepts new
//! clients: listeners bound, not draining) and `/metrics` (Prometheus text). It listens on its
//! own address, never on a client port.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::telemetry::Telemetry;

/// Shared by the endpoint and the server: readiness and the metrics source.
pub struct OpsState {
    pub ready: AtomicBool,
    pub telemetry: Arc<Telemetry>,
}

impl OpsState {
    pub fn new(telemetry: Arc<Telemetry>) -> Arc<Self> {
        Arc::new(OpsState {
            ready: AtomicBool::new(false),
            telemetry,
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

pub fn router(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<OpsState>>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<Arc<OpsState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.telemetry.render(),
    )
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<OpsState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "ops endpoint failed");
    }
}
