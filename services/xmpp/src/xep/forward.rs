//! XEP-0297: Stanza Forwarding, `<forwarded xmlns='urn:xmpp:forward:0'>` holding an optional
//! XEP-0203 `<delay/>` and the forwarded stanza.

use super::delay::Delay;
use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

/// A forwarded stanza and when it was originally sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    pub delay: Option<Delay>,
    /// The stanza (`message`, `presence` or `iq`, namespace `jabber:client` or
    /// `jabber:server`).
    pub stanza: Element,
}

fn is_stanza(el: &Element) -> bool {
    matches!(el.name(), "message" | "presence" | "iq")
        && (el.ns() == ns::CLIENT || el.ns() == ns::SERVER)
}

impl TryFrom<&Element> for Forwarded {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "forwarded", ns::FORWARD)?;
        let delay = match el.get_child("delay", ns::DELAY) {
            Some(d) => Some(Delay::try_from(d)?),
            None => None,
        };
        let mut stanzas = el.children().filter(|c| is_stanza(c));
        let stanza = stanzas.next().ok_or(XepError::MissingChild("message"))?;
        if stanzas.next().is_some() {
            return Err(XepError::BadValue("forwarded"));
        }
        Ok(Forwarded {
            delay,
            stanza: stanza.clone(),
        })
    }
}

impl From<Forwarded> for Element {
    fn from(f: Forwarded) -> Element {
        let mut el = Element::new("forwarded", ns::FORWARD);
        if let Some(d) = f.delay {
            el.append_child(d.into());
        }
        el.child(f.stanza)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn message() -> Element {
        Element::new("message", ns::CLIENT)
            .attr("from", "romeo@montague.lit/orchard")
            .attr("to", "juliet@capulet.lit")
            .child(Element::new("body", ns::CLIENT).text_node("Hail"))
    }

    #[test]
    fn round_trip_and_size() {
        let f = Forwarded {
            delay: Some(Delay::new(
                None,
                UNIX_EPOCH + Duration::from_secs(1_281_187_872),
            )),
            stanza: message(),
        };
        let el = Element::from(f.clone());
        let text = el.to_string();
        assert!(
            text.starts_with(
                "<forwarded xmlns=\"urn:xmpp:forward:0\"><delay xmlns=\"urn:xmpp:delay\" \
                 stamp=\"2010-08-07T13:31:12Z\"/><message xmlns=\"jabber:client\""
            ),
            "{text}"
        );
        assert_eq!(Forwarded::try_from(&el), Ok(f));
        let bare = Forwarded {
            delay: None,
            stanza: message(),
        };
        assert_eq!(Forwarded::try_from(&Element::from(bare.clone())), Ok(bare));
        assert!(std::mem::size_of::<Forwarded>() <= 192);
    }

    #[test]
    fn rejects_bad_input() {
        let empty = Element::new("forwarded", ns::FORWARD);
        assert_eq!(
            Forwarded::try_from(&empty),
            Err(XepError::MissingChild("message"))
        );
        let foreign = Element::new("forwarded", ns::FORWARD)
            .child(Element::new("message", "urn:not-a-stanza"));
        assert_eq!(
            Forwarded::try_from(&foreign),
            Err(XepError::MissingChild("message"))
        );
        let two = Element::new("forwarded", ns::FORWARD)
            .child(message())
            .child(message());
        assert_eq!(
            Forwarded::try_from(&two),
            Err(XepError::BadValue("forwarded"))
        );
        let bad_delay = Element::new("forwarded", ns::FORWARD)
            .child(Element::new("delay", ns::DELAY))
            .child(message());
        assert_eq!(
            Forwarded::try_from(&bad_delay),
            Err(XepError::MissingAttr("stamp"))
        );
        assert_eq!(
            Forwarded::try_from(&Element::new("forwarded", ns::DELAY)),
            Err(XepError::WrongElement("forwarded"))
        );
    }
}
