//! Conversions between the generated types and the domain types. Everything that reads a
//! value from the network returns an error instead of panicking.

use prost::bytes::Bytes;
use session::{SessionError, SmEnabled};
use storage::{Credentials, StorageError};
use xmpp::parser::{Limits, StreamEvent, StreamParser};
use xmpp::scram::{ScramHash, ScramKeys};
use xmpp::{Element, StreamErrorCondition};

use crate::error::{ProtoError, known_message};
use crate::pb::relais::session::v1 as pb;

/// The XEP-0198 namespace (the `<enabled/>` marker the session sends through the sink).
pub(crate) const NS_SM: &str = "urn:xmpp:sm:3";

const WRAP_OPEN: &[u8] =
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const WRAP_CLOSE: &[u8] = b"</stream:stream>";

/// Serializes a stanza for the wire: standalone form, with its `xmlns`.
pub(crate) fn element_to_bytes(el: &Element) -> Bytes {
    Bytes::from(el.to_bytes_in(""))
}

/// Parses exactly one element serialized by [`element_to_bytes`], with the stream parser
/// (restricted XML, namespaces resolved) over a synthetic stream wrapper. Anything but one
/// element (nothing, two elements, a stray close tag, text) is an error.
pub(crate) fn parse_element(xml: &[u8]) -> Result<Element, ProtoError> {
    let mut parser = StreamParser::new(Limits {
        // The sender already enforced its own limits; this one only bounds the work.
        max_stanza_bytes: xml.len().saturating_add(WRAP_OPEN.len()).max(1024),
        max_depth: 64,
        max_attrs: 256,
    });
    parser.feed(WRAP_OPEN);
    parser.feed(xml);
    parser.feed(WRAP_CLOSE);
    let bad = |m: &str| ProtoError::Malformed(format!("stanza xml: {m}"));
    match parser.next_event() {
        Ok(Some(StreamEvent::Open(_))) => {}
        Ok(_) => return Err(bad("no stream header")),
        Err(e) => return Err(bad(&e.to_string())),
    }
    let el = match parser.next_event() {
        Ok(Some(StreamEvent::Stanza(el))) => el,
        Ok(_) => return Err(bad("no element")),
        Err(e) => return Err(bad(&e.to_string())),
    };
    match parser.next_event() {
        Ok(Some(StreamEvent::Close)) => Ok(el),
        Ok(_) => Err(bad("more than one element")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

/// The routing metadata of a stanza.
pub(crate) fn meta_of(el: &Element) -> pb::StanzaMeta {
    let kind = match el.name() {
        "message" => pb::StanzaKind::Message,
        "presence" => pb::StanzaKind::Presence,
        "iq" => pb::StanzaKind::Iq,
        _ => pb::StanzaKind::Unspecified,
    };
    let attr = |n: &str| el.get_attr(n).unwrap_or_default().to_owned();
    pb::StanzaMeta {
        from: attr("from"),
        to: attr("to"),
        kind: kind as i32,
        r#type: attr("type"),
        id: attr("id"),
    }
}

/// The element name of a stanza kind from the wire (for span fields).
pub(crate) fn kind_name(kind: i32) -> &'static str {
    match pb::StanzaKind::try_from(kind) {
        Ok(pb::StanzaKind::Message) => "message",
        Ok(pb::StanzaKind::Presence) => "presence",
        Ok(pb::StanzaKind::Iq) => "iq",
        _ => "unknown",
    }
}

pub(crate) fn wire_error(code: pb::Code, message: impl Into<String>) -> pb::Error {
    pb::Error {
        code: code as i32,
        message: message.into(),
    }
}

/// A session error as it travels.
pub(crate) fn session_error_to_wire(e: &SessionError) -> pb::Error {
    let code = match e {
        SessionError::NoSession => pb::Code::NotFound,
        SessionError::ResourceConstraint(_) => pb::Code::ResourceConstraint,
        SessionError::Storage(_) => pb::Code::Storage,
        SessionError::Unsupported(_) => pb::Code::Unsupported,
        SessionError::ResumeFailed(_) => pb::Code::ResumeFailed,
        SessionError::Unavailable(_) => pb::Code::Unavailable,
    };
    let message = match e {
        SessionError::ResourceConstraint(m)
        | SessionError::Unsupported(m)
        | SessionError::ResumeFailed(m) => (*m).to_owned(),
        SessionError::Unavailable(m) => m.clone(),
        SessionError::Storage(StorageError::Unavailable(m) | StorageError::Corrupt(m)) => m.clone(),
        SessionError::Storage(s) => s.to_string(),
        SessionError::NoSession => e.to_string(),
    };
    wire_error(code, message)
}

/// A session error from the wire.
pub(crate) fn wire_to_session_error(e: &pb::Error) -> SessionError {
    let m = e.message.as_str();
    match pb::Code::try_from(e.code).unwrap_or(pb::Code::Unspecified) {
        pb::Code::NotFound => SessionError::NoSession,
        pb::Code::ResourceConstraint => SessionError::ResourceConstraint(known_message(
            m,
            "resource constraint on the session node",
        )),
        pb::Code::Unsupported => {
            SessionError::Unsupported(known_message(m, "unsupported by the session node"))
        }
        pb::Code::ResumeFailed => {
            SessionError::ResumeFailed(known_message(m, "resumption refused by the session node"))
        }
        pb::Code::Storage => SessionError::Storage(StorageError::Unavailable(m.to_owned())),
        pb::Code::Unavailable => SessionError::Unavailable(m.to_owned()),
        pb::Code::InvalidArgument | pb::Code::Internal | pb::Code::Unspecified => {
            SessionError::Unavailable(format!("session node refused the request: {m}"))
        }
    }
}

pub(crate) fn sm_enabled_from_wire(ok: &pb::SmEnabledOk) -> SmEnabled {
    SmEnabled {
        id: (!ok.id.is_empty()).then(|| ok.id.clone()),
        max_secs: ok.max_secs,
    }
}

/// A stream error condition by its element name; an unknown name is
/// `<undefined-condition/>`.
pub(crate) fn condition_from_wire(name: &str) -> StreamErrorCondition {
    StreamErrorCondition::from_name(name).unwrap_or(StreamErrorCondition::UndefinedCondition)
}

pub(crate) fn credentials_to_wire(creds: Option<Credentials>) -> pb::CredentialsReply {
    let Some(creds) = creds else {
        return pb::CredentialsReply {
            found: false,
            keys: Vec::new(),
        };
    };
    pb::CredentialsReply {
        found: true,
        keys: creds
            .keys
            .into_iter()
            .map(|k| pb::ScramKeys {
                hash: match k.hash {
                    ScramHash::Sha1 => pb::ScramHash::Sha1,
                    ScramHash::Sha256 => pb::ScramHash::Sha256,
                } as i32,
                salt: Bytes::from(k.salt),
                iterations: k.iterations,
                stored_key: Bytes::from(k.stored_key),
                server_key: Bytes::from(k.server_key),
            })
            .collect(),
    }
}

pub(crate) fn domain_to_wire(r: storage::DomainRecord) -> pb::DomainRecord {
    let s = r.settings;
    pb::DomainRecord {
        domain: r.domain,
        settings: Some(pb::DomainSettings {
            registration_open: s.registration_open,
            archive_retention_days: s.archive_retention_days,
            max_accounts: s.max_accounts,
            max_sessions_per_account: s.max_sessions_per_account,
            offline_quota: s.offline_quota,
        }),
        removed: r.removed,
        updated_ms: r.updated_ms,
    }
}

pub(crate) fn domain_from_wire(r: pb::DomainRecord) -> storage::DomainRecord {
    let s = r.settings.unwrap_or_default();
    storage::DomainRecord {
        domain: r.domain,
        settings: storage::DomainSettings {
            registration_open: s.registration_open,
            archive_retention_days: s.archive_retention_days,
            max_accounts: s.max_accounts,
            max_sessions_per_account: s.max_sessions_per_account,
            offline_quota: s.offline_quota,
        },
        removed: r.removed,
        updated_ms: r.updated_ms,
    }
}

pub(crate) fn credentials_from_wire(
    reply: pb::CredentialsReply,
) -> Result<Option<Credentials>, StorageError> {
    if !reply.found {
        return Ok(None);
    }
    let mut keys = Vec::with_capacity(reply.keys.len());
    for k in reply.keys {
        let hash = match pb::ScramHash::try_from(k.hash) {
            Ok(pb::ScramHash::Sha1) => ScramHash::Sha1,
            Ok(pb::ScramHash::Sha256) => ScramHash::Sha256,
            _ => {
                return Err(StorageError::Corrupt(format!(
                    "unknown scram hash {} from the session node",
                    k.hash
                )));
            }
        };
        keys.push(ScramKeys {
            hash,
            salt: k.salt.to_vec(),
            iterations: k.iterations,
            stored_key: k.stored_key.to_vec(),
            server_key: k.server_key.to_vec(),
        });
    }
    Ok(Some(Credentials { keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp::ns;

    #[test]
    fn elements_round_trip_through_bytes() {
        let el = Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("from", "alice@localhost/a")
            .attr("type", "chat")
            .child(Element::new("body", ns::CLIENT).text_node("1 < 2 & 'q' \"x\""))
            .child(Element::new("delay", "urn:xmpp:delay").attr("stamp", "2024"));
        let back = parse_element(&element_to_bytes(&el)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, el);
        // A namespace other than jabber:client survives too.
        let enabled = Element::new("enabled", NS_SM).attr("id", "x");
        assert_eq!(
            parse_element(&element_to_bytes(&enabled)).ok(),
            Some(enabled)
        );
    }

    #[test]
    fn anything_but_one_element_is_refused() {
        for bad in [
            &b""[..],
            b"<message",
            b"<message/><message/>",
            b"</stream:stream><message/>",
            b"text",
            b"<a><b></a>",
            b"<!DOCTYPE x><message/>",
            b"\xff\xfe",
        ] {
            assert!(
                parse_element(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn meta_copies_the_routing_attributes() {
        let el = Element::new("iq", ns::CLIENT)
            .attr("to", "localhost")
            .attr("type", "get")
            .attr("id", "p1");
        let m = meta_of(&el);
        assert_eq!(m.kind, pb::StanzaKind::Iq as i32);
        assert_eq!(
            (m.to.as_str(), m.r#type.as_str(), m.id.as_str()),
            ("localhost", "get", "p1")
        );
        assert!(m.from.is_empty());
    }

    #[test]
    fn session_errors_round_trip_on_the_wire() {
        for e in [
            SessionError::NoSession,
            SessionError::Unsupported("h too large"),
            SessionError::ResumeFailed("malformed id"),
            SessionError::Storage(StorageError::Unavailable("db".into())),
            SessionError::Unavailable("x".into()),
            SessionError::ResourceConstraint("too many resources bound for this account"),
        ] {
            let back = wire_to_session_error(&session_error_to_wire(&e));
            assert_eq!(back.to_string(), e.to_string());
        }
        let odd = wire_to_session_error(&pb::Error {
            code: 999,
            message: "?".into(),
        });
        assert!(matches!(odd, SessionError::Unavailable(_)));
    }

    #[test]
    fn unknown_scram_hash_is_corrupt_data() {
        let reply = pb::CredentialsReply {
            found: true,
            keys: vec![pb::ScramKeys {
                hash: 42,
                ..Default::default()
            }],
        };
        assert!(matches!(
            credentials_from_wire(reply),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            credentials_from_wire(pb::CredentialsReply::default()),
            Ok(None)
        ));
    }
}
