//! XEP-0359: Unique and Stable Stanza IDs: `<stanza-id xmlns='urn:xmpp:sid:0' by='…' id='…'/>`
//! (assigned by the entity named in `by`, usually the archive) and `<origin-id id='…'/>`
//! (assigned by the sender).

use super::{XepError, expect};
use crate::element::Element;
use crate::jid::Jid;
use crate::ns;

/// A stanza id assigned by `by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaId {
    pub by: Jid,
    pub id: String,
}

/// The id the originating client gave a stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginId {
    pub id: String,
}

fn id_attr(el: &Element) -> Result<String, XepError> {
    match el.get_attr("id") {
        None => Err(XepError::MissingAttr("id")),
        Some("") => Err(XepError::BadValue("id")),
        Some(id) => Ok(id.to_owned()),
    }
}

impl TryFrom<&Element> for StanzaId {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "stanza-id", ns::SID)?;
        let by = el.get_attr("by").ok_or(XepError::MissingAttr("by"))?;
        let by = by.parse::<Jid>().map_err(|_| XepError::BadValue("by"))?;
        Ok(StanzaId {
            by,
            id: id_attr(el)?,
        })
    }
}

impl From<StanzaId> for Element {
    fn from(s: StanzaId) -> Element {
        Element::new("stanza-id", ns::SID)
            .attr("by", s.by.as_str())
            .attr("id", s.id)
    }
}

impl TryFrom<&Element> for OriginId {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "origin-id", ns::SID)?;
        Ok(OriginId { id: id_attr(el)? })
    }
}

impl From<OriginId> for Element {
    fn from(o: OriginId) -> Element {
        Element::new("origin-id", ns::SID).attr("id", o.id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let s = StanzaId {
            by: "room@muc.example.com".parse().unwrap(),
            id: "0G8Y3K5RZTQ3C".into(),
        };
        let el = Element::from(s.clone());
        assert_eq!(
            el.to_string(),
            "<stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"room@muc.example.com\" id=\"0G8Y3K5RZTQ3C\"/>"
        );
        assert_eq!(StanzaId::try_from(&el), Ok(s));
        let o = OriginId {
            id: "de305d54-75b4-431b-adb2-eb6b9e546013".into(),
        };
        let el = Element::from(o.clone());
        assert_eq!(
            el.to_string(),
            "<origin-id xmlns=\"urn:xmpp:sid:0\" id=\"de305d54-75b4-431b-adb2-eb6b9e546013\"/>"
        );
        assert_eq!(OriginId::try_from(&el), Ok(o));
        assert!(std::mem::size_of::<StanzaId>() <= 96);
    }

    #[test]
    fn rejects_bad_input() {
        let el = Element::new("stanza-id", ns::SID).attr("id", "x");
        assert_eq!(StanzaId::try_from(&el), Err(XepError::MissingAttr("by")));
        let el = Element::new("stanza-id", ns::SID)
            .attr("by", "a@b@c")
            .attr("id", "x");
        assert_eq!(StanzaId::try_from(&el), Err(XepError::BadValue("by")));
        let el = Element::new("stanza-id", ns::SID)
            .attr("by", "example.com")
            .attr("id", "");
        assert_eq!(StanzaId::try_from(&el), Err(XepError::BadValue("id")));
        let el = Element::new("origin-id", ns::SID);
        assert_eq!(OriginId::try_from(&el), Err(XepError::MissingAttr("id")));
        let el = Element::new("origin-id", "urn:xmpp:sid:1").attr("id", "x");
        assert_eq!(
            OriginId::try_from(&el),
            Err(XepError::WrongElement("origin-id"))
        );
    }
}
