//! XEP-0077 in-band registration, before authentication: the stream feature, the form, and
//! the parsing and key derivation of a registration. The connection (`conn.rs`) runs the
//! exchange: rate limit, account creation, the answers.

use xmpp::scram::{self, ScramHash};
use xmpp::{BareJid, Element, StanzaErrorCondition};

/// The registration namespace (`<query/>`).
pub(crate) const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature's namespace.
pub(crate) const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// `<register xmlns='http://jabber.org/features/iq-register'/>`.
pub(crate) fn feature() -> Element {
    Element::new("register", NS_REGISTER_FEATURE)
}

/// The answer to a `get`: the fields to fill in.
pub(crate) fn form() -> Element {
    Element::new("query", NS_REGISTER)
        .child(
            Element::new("instructions", NS_REGISTER)
                .text_node("Choose a username and password to register with this server."),
        )
        .child(Element::new("username", NS_REGISTER))
        .child(Element::new("password", NS_REGISTER))
}

/// The account and password a `set` asks for. The error is the condition to answer with:
/// `<not-acceptable/>` for a missing or unusable field (XEP-0077 §3.1), `<not-allowed/>`
/// for a cancellation before authentication, `<bad-request/>` for anything else.
pub(crate) fn parse_set(
    query: &Element,
    domain: &str,
) -> Result<(BareJid, String), StanzaErrorCondition> {
    if query.get_child("remove", NS_REGISTER).is_some() {
        return Err(StanzaErrorCondition::NotAllowed);
    }
    let field = |name: &str| {
        query
            .get_child(name, NS_REGISTER)
            .map(Element::text)
            .filter(|t| !t.is_empty())
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return Err(StanzaErrorCondition::NotAcceptable);
    };
    let username = username.trim();
    if username.is_empty() || username.contains('@') || username.contains('/') {
        return Err(StanzaErrorCondition::NotAcceptable);
    }
    let jid =
        BareJid::new(Some(username), domain).map_err(|_| StanzaErrorCondition::NotAcceptable)?;
    if scram::prepare_password(&password).is_err() {
        return Err(StanzaErrorCondition::NotAcceptable);
    }
    Ok((jid, password))
}

/// SCRAM keys for both hashes with `iterations` rounds of PBKDF2 (slow on purpose: run it
/// off the reactor). `None` when the password does not survive PRECIS preparation.
pub(crate) fn credentials(password: &str, iterations: u32) -> Option<storage::Credentials> {
    let prepared = scram::prepare_password(password).ok()?;
    let keys = [ScramHash::Sha256, ScramHash::Sha1]
        .into_iter()
        .map(|h| scram::derive_keys(h, &prepared, &scram::new_salt(), iterations))
        .collect();
    Some(storage::Credentials { keys })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn set(fields: &[(&str, &str)]) -> Element {
        let mut q = Element::new("query", NS_REGISTER);
        for (n, v) in fields {
            q.append_child(Element::new(*n, NS_REGISTER).text_node(*v));
        }
        q
    }

    #[test]
    fn registrations_are_parsed_strictly() {
        let (jid, pw) = parse_set(
            &set(&[("username", "Alice"), ("password", "s3cret")]),
            "example.org",
        )
        .unwrap();
        assert_eq!(jid.as_str(), "alice@example.org");
        assert_eq!(pw, "s3cret");
        for bad in [
            set(&[("username", "alice")]),
            set(&[("password", "x")]),
            set(&[("username", ""), ("password", "x")]),
            set(&[("username", "a@b"), ("password", "x")]),
            set(&[("username", "a b\u{7}"), ("password", "x")]),
        ] {
            assert_eq!(
                parse_set(&bad, "example.org").unwrap_err(),
                StanzaErrorCondition::NotAcceptable,
                "{bad}"
            );
        }
        let remove = Element::new("query", NS_REGISTER).child(Element::new("remove", NS_REGISTER));
        assert_eq!(
            parse_set(&remove, "example.org").unwrap_err(),
            StanzaErrorCondition::NotAllowed
        );
        let creds = credentials("s3cret", 4096).unwrap();
        assert_eq!(creds.get(ScramHash::Sha256).unwrap().iterations, 4096);
        assert!(scram::verify_password(
            creds.get(ScramHash::Sha256).unwrap(),
            "s3cret"
        ));
        assert!(!scram::verify_password(
            creds.get(ScramHash::Sha1).unwrap(),
            "wrong"
        ));
    }
}
