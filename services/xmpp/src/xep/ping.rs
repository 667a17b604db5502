//! XEP-0199: XMPP Ping, `<ping xmlns='urn:xmpp:ping'/>`.

use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

/// The ping payload of an IQ get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ping;

impl TryFrom<&Element> for Ping {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "ping", ns::PING)?;
        Ok(Ping)
    }
}

impl From<Ping> for Element {
    fn from(_: Ping) -> Element {
        Element::new("ping", ns::PING)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let el = Element::from(Ping);
        assert_eq!(el.to_string(), "<ping xmlns=\"urn:xmpp:ping\"/>");
        assert_eq!(Ping::try_from(&el), Ok(Ping));
        assert_eq!(std::mem::size_of::<Ping>(), 0);
    }

    #[test]
    fn rejects_other_elements() {
        assert_eq!(
            Ping::try_from(&Element::new("ping", "urn:xmpp:pong")),
            Err(XepError::WrongElement("ping"))
        );
        assert_eq!(
            Ping::try_from(&Element::new("pong", ns::PING)),
            Err(XepError::WrongElement("ping"))
        );
    }
}
