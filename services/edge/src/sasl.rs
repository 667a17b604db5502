//! SASL negotiation (RFC 6120 §6) on top of the SCRAM machines of the protocol library:
//! which mechanisms a connection offers, the PLAIN message format, and the failure elements.

use xmpp::scram::{ChannelBinding, ScramHash, ScramServer};
use xmpp::{Element, ns};

/// SASL failure conditions (RFC 6120 §6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslFailure {
    Aborted,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    pub fn to_element(self) -> Element {
        Element::new("failure", ns::SASL).child(Element::new(self.as_str(), ns::SASL))
    }

    /// Whether this failure counts as a wrong-credentials attempt for brute-force protection.
    pub fn is_credential_failure(self) -> bool {
        matches!(
            self,
            SaslFailure::NotAuthorized | SaslFailure::InvalidAuthzid
        )
    }
}

impl From<xmpp::scram::ScramError> for SaslFailure {
    fn from(e: xmpp::scram::ScramError) -> Self {
        use xmpp::scram::ScramError;
        match e {
            ScramError::Malformed => SaslFailure::MalformedRequest,
            ScramError::InvalidAuthzid => SaslFailure::InvalidAuthzid,
            ScramError::NotAuthorized | ScramError::ChannelBinding => SaslFailure::NotAuthorized,
            ScramError::Prep => SaslFailure::NotAuthorized,
        }
    }
}

/// A mechanism a connection can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Scram { hash: ScramHash, plus: bool },
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Scram { hash, plus } => hash.mechanism(plus),
            Mechanism::Plain => "PLAIN",
        }
    }
}

/// The mechanisms offered on a TLS-protected stream, strongest first. -PLUS only when the
/// connection can export `tls-exporter` channel-binding data.
pub fn offered(channel_binding: bool, allow_plain: bool) -> Vec<Mechanism> {
    let mut out = Vec::with_capacity(5);
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        if channel_binding {
            out.push(Mechanism::Scram { hash, plus: true });
        }
    }
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        out.push(Mechanism::Scram { hash, plus: false });
    }
    if allow_plain {
        out.push(Mechanism::Plain);
    }
    out
}

/// `<mechanisms/>` plus the XEP-0440 channel-binding advertisement.
pub fn features(mechs: &[Mechanism], channel_binding: bool) -> Vec<Element> {
    let mut list = Element::new("mechanisms", ns::SASL);
    for m in mechs {
        list.append_child(Element::new("mechanism", ns::SASL).text_node(m.name()));
    }
    let mut out = vec![list];
    if channel_binding {
        out.push(
            Element::new("sasl-channel-binding", ns::SASL_CB)
                .child(Element::new("channel-binding", ns::SASL_CB).attr("type", "tls-exporter")),
        );
    }
    out
}

/// Starts a SCRAM exchange for an offered mechanism.
pub fn scram_server(
    hash: ScramHash,
    plus: bool,
    exporter: Option<Vec<u8>>,
    plus_advertised: bool,
    iterations: u32,
) -> ScramServer {
    ScramServer::new(
        hash,
        plus,
        ChannelBinding {
            tls_exporter: exporter,
            plus_advertised,
        },
    )
    .with_fake_iterations(iterations)
}

/// A decoded PLAIN message (RFC 4616): `[authzid] NUL authcid NUL passwd`.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage {
    pub authzid: Option<String>,
    pub authcid: String,
    pub password: String,
}

pub fn parse_plain(data: &[u8]) -> Result<PlainMessage, SaslFailure> {
    let mut parts = data.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| SaslFailure::IncorrectEncoding)
    };
    let authzid = text(authzid)?;
    let authcid = text(authcid)?;
    if authcid.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(PlainMessage {
        authzid: (!authzid.is_empty()).then_some(authzid),
        authcid,
        password: text(password)?,
    })
}

/// Decodes the base64 payload of `<auth/>` or `<response/>`. `=` is an empty response.
pub fn decode_payload(el: &Element) -> Result<Vec<u8>, SaslFailure> {
    use base64::Engine;
    let text = el.text();
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| SaslFailure::IncorrectEncoding)
}

pub fn encode_payload(data: &[u8]) -> String {
    use base64::Engine;
    if data.is_empty() {
        return "=".to_owned();
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_parsing() {
        let m = parse_plain(b"\0alice\0secret").ok();
        assert_eq!(
            m,
            Some(PlainMessage {
                authzid: None,
                authcid: "alice".into(),
                password: "secret".into()
            })
        );
        let m = parse_plain(b"alice@x\0alice\0s")
            .ok()
            .and_then(|m| m.authzid);
        assert_eq!(m.as_deref(), Some("alice@x"));
        assert_eq!(
            parse_plain(b"alice\0secret"),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            parse_plain(b"\0\0secret"),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            parse_plain(b"\0a\0b\0c"),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            parse_plain(b"\0a\xff\0b"),
            Err(SaslFailure::IncorrectEncoding)
        );
    }

    #[test]
    fn offers_plus_only_with_channel_binding() {
        let with: Vec<_> = offered(true, true)
            .into_iter()
            .map(Mechanism::name)
            .collect();
        assert_eq!(
            with,
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        let without: Vec<_> = offered(false, false)
            .into_iter()
            .map(Mechanism::name)
            .collect();
        assert_eq!(without, ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        let f = features(&offered(true, false), true);
        assert_eq!(f.len(), 2);
        assert!(f[1].get_child("channel-binding", ns::SASL_CB).is_some());
    }

    #[test]
    fn payload_codec() {
        let el = Element::new("auth", ns::SASL).text_node(encode_payload(b"n,,n=u,r=x"));
        assert_eq!(decode_payload(&el).ok(), Some(b"n,,n=u,r=x".to_vec()));
        let empty = Element::new("auth", ns::SASL).text_node("=");
        assert_eq!(decode_payload(&empty).ok(), Some(Vec::new()));
        let bad = Element::new("auth", ns::SASL).text_node("***");
        assert_eq!(decode_payload(&bad), Err(SaslFailure::IncorrectEncoding));
    }
}
