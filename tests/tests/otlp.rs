//! Observability across nodes: a message from alice (edge 1, first session node) to bob
//! (edge 2, second session node) through the router is ONE trace, whose spans come from the
//! edge, session and router processes and link up parent to child; and the session node's
//! `/metrics` shows the gRPC series after traffic.
//!
//! The trace side runs a test OTLP collector: a tonic server implementing the OTLP trace (and
//! metrics, accepted and ignored) services of `opentelemetry-proto` on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tests::client::{Client, body, chat};
use tests::cluster::{Cluster, ClusterOpts};
use tests::http_get;
use tonic::{Request, Response, Status};
use xmpp::{Element, ns};

/// How long the spans of one message may take to reach the collector (the batch exporter
/// sends every few seconds).
const SPAN_WAIT: Duration = Duration::from_secs(20);

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    instance: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// The test collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let res = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = res.get("service.name").cloned().unwrap_or_default();
            let instance = res.get("service.instance.id").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        instance: instance.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
        self.0.lock().unwrap().extend(got);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()));
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            server.serve_with_incoming(incoming).await.unwrap();
        });
        addr
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

fn ping() -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("to", "localhost")
        .child(Element::new("ping", ns::PING))
}

/// A round trip through the server, so everything sent before has been handled.
async fn sync(c: &mut Client) {
    let pong = c.iq(ping()).await;
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
}

fn by_name<'a>(spans: &'a [Got], name: &str, key: &str, value: &str) -> Option<&'a Got> {
    spans
        .iter()
        .find(|s| s.name == name && s.attr(key) == Some(value))
}

/// The spans of the trace the chat message from alice started, once all six have arrived.
fn message_trace(spans: &[Got]) -> Option<Vec<Got>> {
    let root = spans.iter().find(|s| {
        s.name == "edge.stanza"
            && s.attr("stanza.kind") == Some("message")
            && s.attr("stanza.type") == Some("chat")
    })?;
    let trace: Vec<Got> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let names: HashSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let complete = trace.len() >= 6
        && [
            "edge.stanza",
            "session.route",
            "router.relay",
            "edge.deliver",
        ]
        .iter()
        .all(|n| names.contains(n));
    complete.then_some(trace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_edge_session_and_router() {
    let collector = Collector::default();
    let addr = collector.start().await;
    let c = Cluster::start(ClusterOpts {
        extra_toml: format!("[telemetry]\notlp_endpoint = \"http://{addr}\"\n"),
        ..ClusterOpts::default()
    });
    c.add_user("alice", "alice-pw");
    c.add_user("bob", "bob-pw");
    assert_eq!((c.owner_index("alice"), c.owner_index("bob")), (0, 1));
    let mut a = c.login_at(0, "alice", "alice-pw", "a").await;
    let mut b = c.login_at(1, "bob", "bob-pw", "b").await;
    sync(&mut a).await;
    sync(&mut b).await;

    a.send(&chat("bob@localhost/b", "a secret body")).await;
    let m = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("a secret body"));

    let deadline = Instant::now() + SPAN_WAIT;
    let trace = loop {
        if let Some(t) = message_trace(&collector.spans()) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the message's trace did not arrive complete; spans: {:#?}\n{}",
            collector.spans(),
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every process on the way exported under its own service name.
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for s in ["relais-edge", "relais-session", "relais-router"] {
        assert!(services.contains(s), "{s} missing from {services:?}");
    }

    // One root, and every other span's parent is in the trace.
    let ids: HashSet<&[u8]> = trace.iter().map(|s| s.span_id.as_slice()).collect();
    let roots: Vec<&Got> = trace.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{trace:#?}");
    assert_eq!(roots[0].name, "edge.stanza");
    for s in &trace {
        assert!(
            s.parent.is_empty() || ids.contains(s.parent.as_slice()),
            "{} has a parent outside the trace: {trace:#?}",
            s.name
        );
    }

    // The path, hop by hop: alice's edge, her session node, its peer routing, the router,
    // bob's session node, bob's edge.
    let edge_in = by_name(&trace, "edge.stanza", "stanza.kind", "message").unwrap();
    let route_a = by_name(&trace, "session.route", "origin", "client").unwrap();
    let out_a = by_name(&trace, "router.relay", "mode", "via_router").unwrap();
    let relay = by_name(&trace, "router.relay", "mode", "relay").unwrap();
    let route_b = by_name(&trace, "session.route", "origin", "peer").unwrap();
    let edge_out = by_name(&trace, "edge.deliver", "stanza.kind", "message").unwrap();
    let chain = [edge_in, route_a, out_a, relay, route_b, edge_out];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent, pair[0].span_id,
            "{} is not the child of {}: {trace:#?}",
            pair[1].name, pair[0].name
        );
    }
    let place = |s: &Got| (s.service.clone(), s.instance.clone());
    assert_eq!(place(edge_in), ("relais-edge".into(), "edge-1".into()));
    assert_eq!(place(edge_out), ("relais-edge".into(), "edge-2".into()));
    assert_eq!(place(relay), ("relais-router".into(), "router-1".into()));
    assert_eq!(place(route_a).1, c.sessions[0].id);
    assert_eq!(place(out_a).1, c.sessions[0].id);
    assert_eq!(place(route_b).1, c.sessions[1].id);
    for s in chain {
        assert_eq!(s.attr("stanza.kind"), Some("message"), "{s:?}");
        assert_eq!(s.attr("stanza.type"), Some("chat"), "{s:?}");
    }
    // Stanza bodies never become span data.
    for s in &collector.spans() {
        assert!(
            !s.attrs.values().any(|v| v.contains("secret")),
            "a body leaked into {s:?}"
        );
    }
}

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_of(c: &Cluster, node: &tests::cluster::Node) -> String {
    let http = node.process.addr("http");
    let (status, text) = http_get(http, "/metrics").await;
    assert_eq!(status, 200, "{text}\n{}", c.logs());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metrics_show_on_the_nodes_after_traffic() {
    let c = Cluster::start(ClusterOpts {
        extra_toml: "[telemetry]\nhttp = \"127.0.0.1:0\"\n".into(),
        ..ClusterOpts::default()
    });
    c.add_user("alice", "alice-pw");
    c.add_user("bob", "bob-pw");
    let mut a = c.login_at(0, "alice", "alice-pw", "a").await;
    let mut b = c.login_at(1, "bob", "bob-pw", "b").await;
    let enabled = b.sm_enable(false).await;
    assert_eq!(enabled.name(), "enabled", "{enabled}");
    for n in 0..2 {
        a.send(&chat("bob@localhost/b", &format!("m{n}"))).await;
        b.recv_matching(|e| e.name() == "message").await;
    }
    // Bob may hold a message before its Route call has returned to alice's node: a round
    // trip of alice's own (her stanzas are handled in order) waits for both calls.
    sync(&mut a).await;

    // Alice's session node: its calls to the router, its queue towards edge 1, and bob's
    // node (the second) holds the two messages he has not acknowledged yet.
    let first = metrics_of(&c, &c.sessions[0]).await;
    let routed = sample(
        &first,
        "relais_grpc_client_duration_seconds_count",
        &[("method", "route"), ("outcome", "ok")],
    );
    assert!(routed.is_some_and(|n| n >= 2.0), "{first}");
    assert!(
        sample(
            &first,
            "relais_grpc_queue_depth",
            &[("direction", "session_to_edge"), ("peer", "edge-1")]
        )
        .is_some(),
        "{first}"
    );
    let second = metrics_of(&c, &c.sessions[1]).await;
    assert_eq!(
        sample(&second, "relais_session_sm_unacked", &[]),
        Some(2.0),
        "{second}"
    );
    // The acknowledgement reaches the node before the ping behind it; the pong is the one
    // stanza then waiting for the next acknowledgement.
    b.sm_ack().await;
    sync(&mut b).await;
    let second = metrics_of(&c, &c.sessions[1]).await;
    assert_eq!(
        sample(&second, "relais_session_sm_unacked", &[]),
        Some(1.0),
        "{second}"
    );

    // The edges: answered opens and enable_sm, and their queue towards each session node.
    let edge = metrics_of(&c, &c.edges[1]).await;
    for method in ["open", "enable_sm"] {
        assert!(
            sample(
                &edge,
                "relais_grpc_client_duration_seconds_count",
                &[("method", method), ("outcome", "ok")]
            )
            .is_some_and(|n| n >= 1.0),
            "{method}: {edge}"
        );
    }
    assert!(
        sample(
            &edge,
            "relais_grpc_queue_depth",
            &[("direction", "edge_to_session")]
        )
        .is_some(),
        "{edge}"
    );
    // The router timed its calls to bob's node.
    let router = metrics_of(&c, c.router.as_ref().unwrap()).await;
    assert!(
        sample(
            &router,
            "relais_grpc_client_duration_seconds_count",
            &[("method", "route"), ("outcome", "ok")]
        )
        .is_some_and(|n| n >= 2.0),
        "{router}"
    );
}
