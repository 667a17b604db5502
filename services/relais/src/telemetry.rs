//! Logs, traces and metrics.
//!
//! - Logs: `tracing` with structured fields to stderr, filtered by `log.level` or `RUST_LOG`.
//! - Traces: when `telemetry.otlp_endpoint` is set, spans are exported over OTLP/gRPC, and the
//!   W3C trace-context propagator is installed so spans continue across nodes. The per-stanza
//!   spans (target [`session::TRACE_TARGET`]: `edge.stanza`, `session.route`, `router.relay`,
//!   `edge.deliver`) go to the exporter only; without one they are disabled where they are
//!   created. The span exporter batches (`OTEL_BSP_SCHEDULE_DELAY` and the other standard
//!   `OTEL_BSP_*` variables apply).
//! - Metrics: every crate records through the OpenTelemetry global meter; this process serves
//!   them as Prometheus text on `/metrics` and, with an OTLP endpoint, pushes them there too.
//! - Resource: `service.name` is `telemetry.service_name`, suffixed with the roles in a
//!   cluster (`relais-edge`, `relais-session`, `relais-router`), plus `relais.role` and
//!   `service.instance.id` (the node id), so each process of a trace is told apart.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp exporter: {0}")]
    Otlp(String),
    #[error("prometheus exporter: {0}")]
    Prometheus(String),
}

/// What `init` set up; `shutdown` flushes exporters.
pub struct Telemetry {
    registry: prometheus::Registry,
    meters: SdkMeterProvider,
    tracer: Option<SdkTracerProvider>,
}

/// Who this process is, for the telemetry resource.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `telemetry.service_name`.
    pub service_name: String,
    /// The roles this process runs (`all` standalone).
    pub roles: Vec<String>,
    /// The cluster node id, when clustered.
    pub node_id: Option<String>,
}

impl Identity {
    /// `service_name`, or `service_name-role[-role…]` for cluster roles.
    pub fn service(&self) -> String {
        let cluster: Vec<&str> = self
            .roles
            .iter()
            .map(String::as_str)
            .filter(|r| *r != "all")
            .collect();
        if cluster.is_empty() {
            self.service_name.clone()
        } else {
            format!("{}-{}", self.service_name, cluster.join("-"))
        }
    }

    fn resource(&self) -> Resource {
        let mut b = Resource::builder()
            .with_service_name(self.service())
            .with_attribute(KeyValue::new("relais.role", self.roles.join(",")));
        if let Some(id) = &self.node_id {
            b = b.with_attribute(KeyValue::new("service.instance.id", id.clone()));
        }
        b.build()
    }
}

/// The user's log filter (`RUST_LOG`, else `log.level`).
fn user_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn with_directive(filter: EnvFilter, directive: &str) -> EnvFilter {
    match directive.parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// The subscriber: logs to stderr as the user's filter says, except the per-stanza spans
/// (unless the filter names their target); with a tracer, everything the user's filter lets
/// through plus the per-stanza spans goes to OpenTelemetry.
fn subscriber(
    level: &str,
    tracer: Option<&SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let mut fmt_filter = user_filter(level);
    if !spec.contains(session::TRACE_TARGET) {
        fmt_filter = with_directive(fmt_filter, &format!("{}=off", session::TRACE_TARGET));
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(fmt_filter);
    // A list rather than an `Option` layer: a `None` layer would count as a layer that wants
    // everything, and enable the per-stanza spans the log filter turned off.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![fmt.boxed()];
    if let Some(provider) = tracer {
        let filter = with_directive(
            user_filter(level),
            &format!("{}=info", session::TRACE_TARGET),
        );
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("relais"))
                .with_filter(filter)
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers)
}

pub fn init(
    level: &str,
    otlp_endpoint: Option<&str>,
    identity: &Identity,
) -> Result<Telemetry, TelemetryError> {
    let resource = identity.resource();
    let registry = prometheus::Registry::new();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prom);
    let mut tracer = None;
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        meters = meters.with_reader(
            PeriodicReader::builder(metric_exporter)
                .with_interval(Duration::from_secs(15))
                .build(),
        );
        let span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        tracer = Some(
            SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(span_exporter)
                .build(),
        );
    }
    let meters = meters.build();
    opentelemetry::global::set_meter_provider(meters.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    if let Some(provider) = &tracer {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    // A second init (tests that serve twice in one process) keeps the first subscriber.
    let _ = subscriber(level, tracer.as_ref()).try_init();
    Ok(Telemetry {
        registry,
        meters,
        tracer,
    })
}

/// Registers the session service's gauges (`relais.session.sm.unacked`: delivered stanzas
/// waiting for a XEP-0198 acknowledgement, over all sessions of this node). The gauge reads
/// the service while it lives.
pub fn observe_session(svc: &Arc<session::LocalSessionService>) {
    let weak: Weak<session::LocalSessionService> = Arc::downgrade(svc);
    let _gauge = opentelemetry::global::meter("relais.session")
        .u64_observable_gauge("relais.session.sm.unacked")
        .with_description("Delivered stanzas waiting for a stream management acknowledgement")
        .with_callback(move |obs| {
            if let Some(svc) = weak.upgrade() {
                obs.observe(svc.sm_unacked(), &[]);
            }
        })
        .build();
}

impl Telemetry {
    /// The current metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer {
            let _ = t.shutdown();
        }
        let _ = self.meters.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(roles: &[&str], node: Option<&str>) -> Identity {
        Identity {
            service_name: "relais".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            node_id: node.map(str::to_owned),
        }
    }

    #[test]
    fn each_role_exports_under_its_own_service_name() {
        assert_eq!(identity(&["all"], None).service(), "relais");
        assert_eq!(identity(&["edge"], Some("e1")).service(), "relais-edge");
        assert_eq!(
            identity(&["session", "router"], Some("s1")).service(),
            "relais-session-router"
        );
        let r = identity(&["router"], Some("router-1")).resource();
        let get = |k: &'static str| r.get(&opentelemetry::Key::from_static_str(k));
        assert_eq!(
            get("service.name").map(|v| v.to_string()).as_deref(),
            Some("relais-router")
        );
        assert_eq!(
            get("relais.role").map(|v| v.to_string()).as_deref(),
            Some("router")
        );
        assert_eq!(
            get("service.instance.id").map(|v| v.to_string()).as_deref(),
            Some("router-1")
        );
    }

    fn stanza_span_disabled() -> bool {
        tracing::info_span!(target: session::TRACE_TARGET, "edge.stanza").is_disabled()
    }

    #[test]
    fn stanza_spans_are_off_without_an_exporter_and_on_with_one() {
        let without = subscriber("info", None);
        assert!(tracing::subscriber::with_default(
            without,
            stanza_span_disabled
        ));
        // Ordinary spans still reach the log.
        let without = subscriber("info", None);
        assert!(!tracing::subscriber::with_default(without, || {
            tracing::info_span!("other").is_disabled()
        }));
        let provider = SdkTracerProvider::builder().build();
        let with = subscriber("warn", Some(&provider));
        assert!(!tracing::subscriber::with_default(
            with,
            stanza_span_disabled
        ));
    }
}
