//! Small builders and readers for the stanzas the session produces.

use storage::RosterItem;
use xmpp::parser::{Limits, StreamEvent, StreamParser};
use xmpp::{Element, ns};

use crate::subscription::SubState;

pub(crate) fn ty(st: &Element) -> Option<&str> {
    st.get_attr("type")
}

/// An IQ result for `iq`, addressed back to its sender, optionally with a payload.
pub(crate) fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).attr("type", "result");
    if let Some(id) = iq.get_attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = iq.get_attr("from") {
        r.set_attr("to", to);
    }
    if let Some(from) = iq.get_attr("to") {
        r.set_attr("from", from);
    }
    if let Some(p) = payload {
        r.append_child(p);
    }
    r
}

pub(crate) fn presence(from: &str, to: &str, ty: Option<&str>) -> Element {
    let mut p = Element::new("presence", ns::CLIENT)
        .attr("from", from)
        .attr("to", to);
    if let Some(t) = ty {
        p.set_attr("type", t);
    }
    p
}

/// A copy of `st` with new addresses.
pub(crate) fn readdress(st: &Element, from: &str, to: &str) -> Element {
    let mut c = st.clone();
    c.set_attr("from", from);
    c.set_attr("to", to);
    c
}

/// The `<priority/>` of an available presence (RFC 6121 §4.7.2.3); 0 when absent or invalid.
pub(crate) fn priority(pres: &Element) -> i8 {
    pres.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0)
}

/// Whether a roster item is shown to the user. An item that only records an unanswered
/// inbound request from someone the user never added stays hidden (as in ejabberd and
/// Prosody): RFC 6121 has no way to show Pending In in a roster.
pub(crate) fn visible(item: &RosterItem) -> bool {
    let s = SubState::of(item);
    !(s == SubState {
        pending_in: true,
        ..SubState::NONE
    } && item.name.is_none()
        && item.groups.is_empty())
}

/// The `<item/>` of a roster result or push (RFC 6121 §2.1.2).
pub(crate) fn roster_item(item: &RosterItem) -> Element {
    let mut e = Element::new("item", ns::ROSTER).attr("jid", item.jid.as_str());
    if let Some(n) = &item.name {
        e.set_attr("name", n.as_str());
    }
    e.set_attr("subscription", item.subscription.as_str());
    if item.ask_out {
        e.set_attr("ask", "subscribe");
    }
    if item.approved {
        e.set_attr("approved", "true");
    }
    for g in &item.groups {
        e.append_child(Element::new("group", ns::ROSTER).text_node(g.as_str()));
    }
    e
}

/// Parses one stored standalone element (an offline stanza, a vCard) written by
/// `Element`'s `Display`.
pub(crate) fn parse_stored(xml: &str) -> Option<Element> {
    let mut p = StreamParser::new(Limits {
        max_stanza_bytes: xml.len().saturating_add(1024),
        ..Limits::default()
    });
    p.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    p.feed(xml.as_bytes());
    loop {
        match p.next_event() {
            Ok(Some(StreamEvent::Open(_))) => continue,
            Ok(Some(StreamEvent::Stanza(e))) => return Some(e),
            Ok(Some(StreamEvent::Close)) | Ok(None) | Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::Subscription;

    fn jid(s: &str) -> xmpp::BareJid {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn roster_item_carries_state() {
        let mut it = RosterItem::new(jid("bob@example.com"));
        it.name = Some("Bob".into());
        it.groups = vec!["Friends".into(), "Work".into()];
        it.subscription = Subscription::From;
        it.ask_out = true;
        let e = roster_item(&it);
        assert_eq!(e.get_attr("jid"), Some("bob@example.com"));
        assert_eq!(e.get_attr("name"), Some("Bob"));
        assert_eq!(e.get_attr("subscription"), Some("from"));
        assert_eq!(e.get_attr("ask"), Some("subscribe"));
        assert_eq!(e.get_attr("approved"), None);
        let groups: Vec<String> = e.children().map(Element::text).collect();
        assert_eq!(groups, ["Friends", "Work"]);
    }

    #[test]
    fn hidden_only_when_nothing_but_pending_in() {
        let mut it = RosterItem::new(jid("eve@example.com"));
        assert!(visible(&it));
        it.pending_in = true;
        assert!(!visible(&it));
        it.name = Some("Eve".into());
        assert!(visible(&it));
        it.name = None;
        it.subscription = Subscription::To;
        assert!(visible(&it));
    }

    #[test]
    fn priority_defaults_to_zero() {
        let p = Element::new("presence", ns::CLIENT);
        assert_eq!(priority(&p), 0);
        let p = p.child(Element::new("priority", ns::CLIENT).text_node(" -5 "));
        assert_eq!(priority(&p), -5);
        let bad = Element::new("presence", ns::CLIENT)
            .child(Element::new("priority", ns::CLIENT).text_node("300"));
        assert_eq!(priority(&bad), 0);
    }

    #[test]
    fn stored_elements_parse_back() {
        let m = Element::new("message", ns::CLIENT)
            .attr("to", "a@b")
            .attr("type", "chat")
            .child(Element::new("body", ns::CLIENT).text_node("x < y & z"))
            .child(Element::new(
                "active",
                "http://jabber.org/protocol/chatstates",
            ));
        assert_eq!(parse_stored(&m.to_string()), Some(m));
        assert_eq!(parse_stored("<message"), None);
    }
}
