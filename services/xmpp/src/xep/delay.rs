//! XEP-0203: Delayed Delivery, `<delay xmlns='urn:xmpp:delay' from='...' stamp='...'>reason</delay>`.

use std::time::SystemTime;

use super::time::{format_stamp, parse_stamp};
use super::{XepError, expect};
use crate::element::Element;
use crate::jid::Jid;
use crate::ns;

/// When (and by whom) a stanza was delayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delay {
    /// The entity that delayed the stanza (the server for offline storage).
    pub from: Option<Jid>,
    /// When the stanza was originally sent or stored.
    pub stamp: SystemTime,
    /// Optional human-readable reason (the element's text).
    pub reason: Option<String>,
}

impl Delay {
    pub fn new(from: Option<Jid>, stamp: SystemTime) -> Self {
        Delay {
            from,
            stamp,
            reason: None,
        }
    }
}

impl TryFrom<&Element> for Delay {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "delay", ns::DELAY)?;
        let stamp = el.get_attr("stamp").ok_or(XepError::MissingAttr("stamp"))?;
        let stamp = parse_stamp(stamp).ok_or(XepError::BadValue("stamp"))?;
        let from = match el.get_attr("from") {
            Some(f) => Some(f.parse::<Jid>().map_err(|_| XepError::BadValue("from"))?),
            None => None,
        };
        let reason = Some(el.text()).filter(|t| !t.is_empty());
        Ok(Delay {
            from,
            stamp,
            reason,
        })
    }
}

impl From<Delay> for Element {
    fn from(d: Delay) -> Element {
        let mut el = Element::new("delay", ns::DELAY);
        if let Some(from) = d.from {
            el.set_attr("from", from.as_str());
        }
        el.set_attr("stamp", format_stamp(d.stamp));
        match d.reason {
            Some(r) => el.text_node(r),
            None => el,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn parses_the_xep_example() {
        let el = Element::new("delay", ns::DELAY)
            .attr("from", "capulet.com")
            .attr("stamp", "2002-09-10T23:08:25Z")
            .text_node("Offline Storage");
        let d = Delay::try_from(&el).unwrap();
        assert_eq!(d.from.as_ref().map(Jid::as_str), Some("capulet.com"));
        assert_eq!(d.stamp, UNIX_EPOCH + Duration::from_secs(1_031_699_305));
        assert_eq!(d.reason.as_deref(), Some("Offline Storage"));
        assert_eq!(Element::from(d), el);
    }

    #[test]
    fn round_trip_and_size() {
        let stamp = UNIX_EPOCH + Duration::from_millis(1_795_219_091_123);
        let d = Delay::new(Some("example.com".parse().unwrap()), stamp);
        let el = Element::from(d.clone());
        assert_eq!(
            el.to_string(),
            "<delay xmlns=\"urn:xmpp:delay\" from=\"example.com\" stamp=\"2026-11-20T23:58:11.123Z\"/>"
        );
        assert_eq!(Delay::try_from(&el), Ok(d));
        let bare = Delay::new(None, UNIX_EPOCH);
        let el = Element::from(bare.clone());
        assert_eq!(el.get_attr("stamp"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(el.get_attr("from"), None);
        assert_eq!(Delay::try_from(&el), Ok(bare));
        assert!(std::mem::size_of::<Delay>() <= 80);
    }

    #[test]
    fn rejects_bad_input() {
        let el = Element::new("delay", ns::DELAY);
        assert_eq!(Delay::try_from(&el), Err(XepError::MissingAttr("stamp")));
        let el = Element::new("delay", ns::DELAY).attr("stamp", "2002-09-10");
        assert_eq!(Delay::try_from(&el), Err(XepError::BadValue("stamp")));
        let el = Element::new("delay", ns::DELAY)
            .attr("stamp", "2002-09-10T23:08:25Z")
            .attr("from", "a@b@c");
        assert_eq!(Delay::try_from(&el), Err(XepError::BadValue("from")));
        let el = Element::new("x", "jabber:x:delay").attr("stamp", "20020910T23:08:25");
        assert_eq!(Delay::try_from(&el), Err(XepError::WrongElement("delay")));
    }
}
