//! Stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9).

use crate::element::Element;
use crate::ns;

/// The `type` attribute of a stanza error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

macro_rules! conditions {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            /// The element name of this condition.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Parses an element name into a condition.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}

conditions!(
    /// Stanza error conditions of RFC 6120 §8.3.3.
    StanzaErrorCondition {
        BadRequest => "bad-request",
        Conflict => "conflict",
        FeatureNotImplemented => "feature-not-implemented",
        Forbidden => "forbidden",
        Gone => "gone",
        InternalServerError => "internal-server-error",
        ItemNotFound => "item-not-found",
        JidMalformed => "jid-malformed",
        NotAcceptable => "not-acceptable",
        NotAllowed => "not-allowed",
        NotAuthorized => "not-authorized",
        PolicyViolation => "policy-violation",
        RecipientUnavailable => "recipient-unavailable",
        Redirect => "redirect",
        RegistrationRequired => "registration-required",
        RemoteServerNotFound => "remote-server-not-found",
        RemoteServerTimeout => "remote-server-timeout",
        ResourceConstraint => "resource-constraint",
        ServiceUnavailable => "service-unavailable",
        SubscriptionRequired => "subscription-required",
        UndefinedCondition => "undefined-condition",
        UnexpectedRequest => "unexpected-request",
    }
);

conditions!(
    /// Stream error conditions of RFC 6120 §4.9.3.
    StreamErrorCondition {
        BadFormat => "bad-format",
        BadNamespacePrefix => "bad-namespace-prefix",
        Conflict => "conflict",
        ConnectionTimeout => "connection-timeout",
        HostGone => "host-gone",
        HostUnknown => "host-unknown",
        ImproperAddressing => "improper-addressing",
        InternalServerError => "internal-server-error",
        InvalidFrom => "invalid-from",
        InvalidNamespace => "invalid-namespace",
        InvalidXml => "invalid-xml",
        NotAuthorized => "not-authorized",
        NotWellFormed => "not-well-formed",
        PolicyViolation => "policy-violation",
        RemoteConnectionFailed => "remote-connection-failed",
        Reset => "reset",
        ResourceConstraint => "resource-constraint",
        RestrictedXml => "restricted-xml",
        SeeOtherHost => "see-other-host",
        SystemShutdown => "system-shutdown",
        UndefinedCondition => "undefined-condition",
        UnsupportedEncoding => "unsupported-encoding",
        UnsupportedFeature => "unsupported-feature",
        UnsupportedStanzaType => "unsupported-stanza-type",
        UnsupportedVersion => "unsupported-version",
    }
);

impl StanzaErrorCondition {
    /// The error type RFC 6120 §8.3.3 suggests for this condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaErrorCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => {
                ErrorType::Modify
            }
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            InternalServerError | RecipientUnavailable | RemoteServerTimeout
            | ResourceConstraint | UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }

    /// The `<error/>` child for this condition, with an optional human-readable text.
    pub fn to_element(self, text: Option<&str>) -> Element {
        let mut err = Element::new("error", ns::CLIENT)
            .attr("type", self.default_type().as_str())
            .child(Element::new(self.as_str(), ns::STANZAS_ERR));
        if let Some(t) = text {
            err.append_child(
                Element::new("text", ns::STANZAS_ERR)
                    .attr("xml:lang", "en")
                    .text_node(t),
            );
        }
        err
    }
}

impl StreamErrorCondition {
    /// The `<stream:error/>` element for this condition.
    pub fn to_element(self, text: Option<&str>) -> Element {
        let mut err =
            Element::new("error", ns::STREAM).child(Element::new(self.as_str(), ns::STREAMS_ERR));
        if let Some(t) = text {
            err.append_child(
                Element::new("text", ns::STREAMS_ERR)
                    .attr("xml:lang", "en")
                    .text_node(t),
            );
        }
        err
    }

    /// The bytes written for this stream error (with the `stream:` prefix the stream header
    /// declared), without the closing `</stream:stream>`.
    pub fn to_stream_bytes(self, text: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"<stream:error><");
        out.extend_from_slice(self.as_str().as_bytes());
        out.extend_from_slice(b" xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>");
        if let Some(t) = text {
            out.extend_from_slice(
                b"<text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\" xml:lang=\"en\">",
            );
            out.extend_from_slice(quick_xml::escape::escape(t).as_bytes());
            out.extend_from_slice(b"</text>");
        }
        out.extend_from_slice(b"</stream:error>");
        out
    }
}

/// `<see-other-host/>` naming `host` (`host`, `host:port` or `[v6]:port`) as its character
/// data, as RFC 6120 §4.9.3.19 specifies.
pub fn see_other_host_bytes(host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(120 + host.len());
    out.extend_from_slice(
        b"<stream:error><see-other-host xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">",
    );
    out.extend_from_slice(quick_xml::escape::escape(host).as_bytes());
    out.extend_from_slice(b"</see-other-host></stream:error>");
    out
}

/// Turns a received stanza into the error reply RFC 6120 §8.3.1 describes: `from` and `to`
/// swapped, `type="error"`, the original payload kept, and an `<error/>` child added.
pub fn error_reply(stanza: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    let mut reply = Element::new(stanza.name(), stanza.ns());
    if let Some(id) = stanza.get_attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.get_attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.get_attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    for c in stanza.nodes() {
        if let crate::element::Node::Element(e) = c
            && !e.is("error", stanza.ns())
        {
            reply.append_child(e.clone());
        }
    }
    reply.append_child(cond.to_element(text));
    reply
}

/// Reads the condition out of an `<error/>` child of a stanza, if it has one.
pub fn stanza_error_condition(stanza: &Element) -> Option<StanzaErrorCondition> {
    let err = stanza.get_child("error", stanza.ns())?;
    err.children()
        .filter(|c| c.ns() == ns::STANZAS_ERR)
        .find_map(|c| StanzaErrorCondition::from_name(c.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses_and_keeps_payload() {
        let iq = Element::new("iq", ns::CLIENT)
            .attr("id", "1")
            .attr("type", "get")
            .attr("from", "a@x/r")
            .attr("to", "x")
            .child(Element::new("query", "urn:unknown"));
        let r = error_reply(&iq, StanzaErrorCondition::ServiceUnavailable, None);
        assert_eq!(r.get_attr("to"), Some("a@x/r"));
        assert_eq!(r.get_attr("from"), Some("x"));
        assert_eq!(r.get_attr("type"), Some("error"));
        assert!(r.get_child("query", "urn:unknown").is_some());
        assert_eq!(
            stanza_error_condition(&r),
            Some(StanzaErrorCondition::ServiceUnavailable)
        );
        let err = r.get_child("error", ns::CLIENT).map(|e| e.get_attr("type"));
        assert_eq!(err, Some(Some("cancel")));
    }

    #[test]
    fn conditions_round_trip_names() {
        for c in [
            StreamErrorCondition::RestrictedXml,
            StreamErrorCondition::SystemShutdown,
        ] {
            assert_eq!(StreamErrorCondition::from_name(c.as_str()), Some(c));
        }
        assert_eq!(StanzaErrorCondition::from_name("nope"), None);
        let bytes = StreamErrorCondition::Conflict.to_stream_bytes(Some("a<b"));
        let s = String::from_utf8_lossy(&bytes);
        assert!(s.contains("<conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"));
        assert!(s.contains("a&lt;b"));
    }
}
