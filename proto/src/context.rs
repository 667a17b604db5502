//! W3C trace context across the gRPC hops.
//!
//! Every message this crate sends gets its `metadata` map from [`inject`]: the current
//! OpenTelemetry context (the span of the stanza being handled, made current by
//! `tracing-opentelemetry` when its span is entered) written by the global text-map
//! propagator, which the binary sets to W3C `traceparent`/`tracestate`. Every message it
//! receives hands its map to [`extract`], and the receiver makes the handling span a child of
//! the result: either with `OpenTelemetrySpanExt::set_parent` on a span it opens itself, or by
//! running the handler [`within`] the context, so that the spans the handler opens (the
//! session service's `session.route`, the edge's `edge.deliver`) continue the trace.
//!
//! Without a tracing exporter no span is recording, the current context carries no span,
//! and both directions cost a thread-local read: no map entry is written or parsed.

use std::collections::HashMap;
use std::future::Future;

use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;

/// The metadata to attach to an outgoing message.
pub(crate) fn inject() -> HashMap<String, String> {
    Context::map_current(|cx| {
        let mut map = HashMap::new();
        if cx.span().span_context().is_valid() {
            opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut map));
        }
        map
    })
}

/// The context carried by the metadata of an incoming message (empty when it carries none).
pub(crate) fn extract(metadata: &HashMap<String, String>) -> Context {
    if metadata.is_empty() {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(metadata))
}

/// Whether `cx` names a remote span to continue.
pub(crate) fn is_remote(cx: &Context) -> bool {
    cx.span().span_context().is_valid()
}

/// Runs `fut` with `cx` as the current context, when it names a span to continue; the spans
/// opened inside become its children.
pub(crate) async fn within<F: Future>(cx: Context, fut: F) -> F::Output {
    if is_remote(&cx) {
        fut.with_context(cx).await
    } else {
        fut.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    fn install() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }

    fn remote_span() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn nothing_is_written_without_a_current_span() {
        install();
        assert!(inject().is_empty());
        assert!(!is_remote(&extract(&HashMap::new())));
    }

    #[test]
    fn the_current_span_travels_as_traceparent_and_comes_back() {
        install();
        let sc = remote_span();
        let _guard = Context::new().with_remote_span_context(sc.clone()).attach();
        let map = inject();
        assert_eq!(
            map.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = extract(&map);
        assert!(is_remote(&back));
        let got = back.span().span_context().clone();
        assert_eq!(got.trace_id(), sc.trace_id());
        assert_eq!(got.span_id(), sc.span_id());
        assert!(got.is_remote());
    }

    #[test]
    fn garbage_metadata_gives_an_empty_context() {
        install();
        let map = HashMap::from([("traceparent".to_owned(), "not-a-traceparent".to_owned())]);
        assert!(!is_remote(&extract(&map)));
    }

    #[tokio::test]
    async fn within_makes_the_remote_context_current() {
        install();
        let cx = Context::new().with_remote_span_context(remote_span());
        let seen = within(cx, async {
            Context::map_current(|c| c.span().span_context().trace_id())
        })
        .await;
        assert_eq!(seen, remote_span().trace_id());
        let outside = Context::map_current(|c| c.span().span_context().is_valid());
        assert!(!outside);
    }
}
