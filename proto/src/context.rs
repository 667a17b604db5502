//! The extension point for cross-cutting context (for example W3C trace context).
//!
//! Every message this crate sends gets its `metadata` map from [`inject`], and every message
//! it receives hands its map to [`extract`]. Both do nothing today. To propagate
//! OpenTelemetry context, make `inject` write the current context with a propagator and
//! `extract` set the parent of the span that handles the message; unary calls can carry the
//! same keys as gRPC request metadata. Nothing else in the crate needs to change.

use std::collections::HashMap;

/// The metadata to attach to an outgoing message.
pub(crate) fn inject() -> HashMap<String, String> {
    HashMap::new()
}

/// Called with the metadata of every incoming message.
pub(crate) fn extract(_metadata: &HashMap<String, String>) {}
