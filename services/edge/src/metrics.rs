//! The edge's metrics, recorded through the OpenTelemetry global meter (the binary decides
//! where they go: Prometheus `/metrics`, OTLP). Names follow OpenTelemetry conventions; the
//! Prometheus exporter turns `relais.edge.connections.open` into `relais_edge_connections_open`.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, UpDownCounter};
use xmpp::{Element, ns};

pub struct EdgeMetrics {
    /// Client connections accepted, by listener.
    pub connections_accepted: Counter<u64>,
    /// Client connections open now, by listener.
    pub connections_open: UpDownCounter<i64>,
    /// Stanzas received from clients, by kind.
    pub stanzas_in: Counter<u64>,
    /// Stanzas written to clients.
    pub stanzas_out: Counter<u64>,
    /// Failed SASL attempts.
    pub auth_failures: Counter<u64>,
    /// Successful logins.
    pub auth_successes: Counter<u64>,
    /// SASL attempts the brute-force limiter let through to a password check.
    pub auth_checks: Counter<u64>,
    /// SASL attempts the limiter refused (too many queued from one network).
    pub auth_throttled: Counter<u64>,
    /// Streams closed with a stream error, by condition.
    pub stream_errors: Counter<u64>,
}

/// The instruments, created on first use after the binary installed its meter provider.
pub fn get() -> &'static EdgeMetrics {
    static M: OnceLock<EdgeMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let meter = opentelemetry::global::meter("relais.edge");
        EdgeMetrics {
            connections_accepted: meter
                .u64_counter("relais.edge.connections.accepted")
                .with_description("Client connections accepted")
                .build(),
            connections_open: meter
                .i64_up_down_counter("relais.edge.connections.open")
                .with_description("Client connections open now")
                .build(),
            stanzas_in: meter
                .u64_counter("relais.edge.stanzas.received")
                .with_description("Stanzas received from clients, by kind")
                .build(),
            stanzas_out: meter
                .u64_counter("relais.edge.stanzas.sent")
                .with_description("Stanzas written to clients")
                .build(),
            auth_failures: meter
                .u64_counter("relais.edge.auth.failures")
                .with_description("Failed SASL authentication attempts")
                .build(),
            auth_successes: meter
                .u64_counter("relais.edge.auth.successes")
                .with_description("Successful SASL authentications")
                .build(),
            auth_checks: meter
                .u64_counter("relais.edge.auth.checks")
                .with_description("SASL attempts admitted to a password check")
                .build(),
            auth_throttled: meter
                .u64_counter("relais.edge.auth.throttled")
                .with_description("SASL attempts refused by the brute-force limiter")
                .build(),
            stream_errors: meter
                .u64_counter("relais.edge.stream_errors")
                .with_description("Streams closed with a stream error, by condition")
                .build(),
        }
    })
}

/// The three stanza kinds, as a metric attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    /// The kind of a `jabber:client` stanza; `None` for anything else (nonzas).
    pub fn of(el: &Element) -> Option<Self> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }

    /// The attribute set, built once (no allocation per stanza).
    pub fn attrs(self) -> &'static [KeyValue] {
        static ATTRS: OnceLock<[[KeyValue; 1]; 3]> = OnceLock::new();
        let all =
            ATTRS.get_or_init(|| ["message", "presence", "iq"].map(|k| [KeyValue::new("kind", k)]));
        match self {
            StanzaKind::Message => &all[0],
            StanzaKind::Presence => &all[1],
            StanzaKind::Iq => &all[2],
        }
    }
}
