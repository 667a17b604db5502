//! The gRPC adapters' metrics, recorded through the OpenTelemetry global meter (the binary
//! decides where they go: Prometheus `/metrics`, OTLP):
//!
//! - `relais.grpc.client.duration` (histogram, seconds; `method`, `outcome`): how long a call
//!   waited for its answer: `route` (a unary `Route` call) and the answered `Attach` requests
//!   `open`, `enable_sm` and `resume`. Outcomes: `ok`, `error` (the peer answered with an
//!   error), `timeout` (no answer in time), `unavailable` (the peer could not be reached or
//!   the stream broke).
//! - `relais.grpc.queue.depth` (gauge, messages; `direction`, `peer`): messages waiting in an
//!   `Attach` stream's outbound queue: `edge_to_session` per session node an edge is attached
//!   to (`peer` = its address), `session_to_edge` per attached edge on a session node (`peer`
//!   = the edge's id). Read when the metrics are collected, from probes each stream registers.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, ObservableGauge};

/// The `method` attribute of `relais.grpc.client.duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Route,
    Open,
    EnableSm,
    SmCount,
    Resume,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Route => "route",
            Method::Open => "open",
            Method::EnableSm => "enable_sm",
            Method::SmCount => "sm_count",
            Method::Resume => "resume",
        }
    }
}

/// The `outcome` attribute of `relais.grpc.client.duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Timeout,
    Unavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The `direction` attribute of `relais.grpc.queue.depth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    EdgeToSession,
    SessionToEdge,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::EdgeToSession => "edge_to_session",
            Direction::SessionToEdge => "session_to_edge",
        }
    }
}

struct Instruments {
    client_duration: Histogram<f64>,
    /// Kept so the callback stays registered for the life of the process.
    _queue_depth: ObservableGauge<u64>,
}

/// Latency buckets for calls between nodes, from a same-host round trip to a timeout.
const DURATION_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("relais.grpc");
        Instruments {
            client_duration: meter
                .f64_histogram("relais.grpc.client.duration")
                .with_unit("s")
                .with_description("Time a gRPC call to another node waited for its answer")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            _queue_depth: meter
                .u64_observable_gauge("relais.grpc.queue.depth")
                .with_description("Messages waiting in an Attach stream's outbound queue")
                .with_callback(|obs| {
                    for (direction, peer, depth) in observe_queues() {
                        obs.observe(
                            depth,
                            &[
                                KeyValue::new("direction", direction.as_str()),
                                KeyValue::new("peer", peer),
                            ],
                        );
                    }
                })
                .build(),
        }
    })
}

/// Records one call that started at `started`.
pub(crate) fn client_call(method: Method, outcome: Outcome, started: Instant) {
    instruments().client_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("method", method.as_str()),
            KeyValue::new("outcome", outcome.as_str()),
        ],
    );
}

/// Reads one queue's depth; `None` once the queue is gone (the probe is then dropped).
type Depth = Box<dyn Fn() -> Option<u64> + Send + Sync>;

struct Probe {
    direction: Direction,
    peer: String,
    depth: Depth,
}

fn probes() -> &'static Mutex<Vec<Probe>> {
    static P: Mutex<Vec<Probe>> = Mutex::new(Vec::new());
    &P
}

/// Registers a queue for `relais.grpc.queue.depth`. `depth` must hold the queue weakly and
/// answer `None` once it is gone.
pub(crate) fn register_queue(
    direction: Direction,
    peer: impl Into<String>,
    depth: impl Fn() -> Option<u64> + Send + Sync + 'static,
) {
    // The gauge exists as soon as there is something to observe.
    let _ = instruments();
    let mut all = probes().lock().unwrap_or_else(PoisonError::into_inner);
    // Forget the queues that are gone, so an edge that reattaches often leaves nothing behind.
    all.retain(|p| (p.depth)().is_some());
    all.push(Probe {
        direction,
        peer: peer.into(),
        depth: Box::new(depth),
    });
}

/// The live queues and their depths.
fn observe_queues() -> Vec<(Direction, String, u64)> {
    let mut all = probes().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::with_capacity(all.len());
    all.retain(|p| match (p.depth)() {
        Some(d) => {
            out.push((p.direction, p.peer.clone(), d));
            true
        }
        None => false,
    });
    out
}

/// Messages waiting in a bounded queue, from its sender.
pub(crate) fn queued<T>(tx: &tokio::sync::mpsc::Sender<T>) -> u64 {
    tx.max_capacity().saturating_sub(tx.capacity()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn gone_queues_are_forgotten_and_live_ones_observed() {
        let live = Arc::new(AtomicU64::new(3));
        let weak = Arc::downgrade(&live);
        register_queue(Direction::SessionToEdge, "metrics-test-edge", move || {
            weak.upgrade().map(|d| d.load(Ordering::Relaxed))
        });
        let gone = Arc::new(AtomicU64::new(9));
        let weak_gone = Arc::downgrade(&gone);
        register_queue(Direction::EdgeToSession, "metrics-test-node", move || {
            weak_gone.upgrade().map(|d| d.load(Ordering::Relaxed))
        });
        drop(gone);
        let seen = observe_queues();
        let mine: Vec<_> = seen
            .iter()
            .filter(|(_, peer, _)| peer.starts_with("metrics-test-"))
            .collect();
        assert_eq!(
            mine,
            vec![&(Direction::SessionToEdge, "metrics-test-edge".to_owned(), 3)]
        );
        live.store(5, Ordering::Relaxed);
        assert!(
            observe_queues()
                .iter()
                .any(|(_, p, d)| p == "metrics-test-edge" && *d == 5)
        );
    }

    #[tokio::test]
    async fn queued_counts_waiting_messages() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(8);
        assert_eq!(queued(&tx), 0);
        assert!(tx.send(1).await.is_ok());
        assert!(tx.send(2).await.is_ok());
        assert_eq!(queued(&tx), 2);
        rx.recv().await;
        assert_eq!(queued(&tx), 1);
    }
}
