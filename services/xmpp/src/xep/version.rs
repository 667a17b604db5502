//! XEP-0092: Software Version, `<query xmlns='jabber:iq:version'>` with name, version, os.

use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

/// The answer to a software version request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub os: Option<String>,
}

impl Version {
    /// The (empty) request payload.
    pub fn request() -> Element {
        Element::new("query", ns::VERSION)
    }
}

impl TryFrom<&Element> for Version {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "query", ns::VERSION)?;
        let child = |name: &str| el.get_child(name, ns::VERSION).map(Element::text);
        let name = child("name").ok_or(XepError::MissingChild("name"))?;
        let version = child("version").ok_or(XepError::MissingChild("version"))?;
        if name.is_empty() {
            return Err(XepError::BadValue("name"));
        }
        if version.is_empty() {
            return Err(XepError::BadValue("version"));
        }
        Ok(Version {
            name,
            version,
            os: child("os").filter(|os| !os.is_empty()),
        })
    }
}

impl From<Version> for Element {
    fn from(v: Version) -> Element {
        let mut q = Element::new("query", ns::VERSION)
            .child(Element::new("name", ns::VERSION).text_node(v.name))
            .child(Element::new("version", ns::VERSION).text_node(v.version));
        if let Some(os) = v.os {
            q.append_child(Element::new("os", ns::VERSION).text_node(os));
        }
        q
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let v = Version {
            name: "Relais".into(),
            version: "0.1.0".into(),
            os: Some("Linux".into()),
        };
        let el = Element::from(v.clone());
        assert_eq!(
            el.to_string(),
            "<query xmlns=\"jabber:iq:version\"><name>Relais</name><version>0.1.0</version>\
             <os>Linux</os></query>"
        );
        assert_eq!(Version::try_from(&el), Ok(v));
        let no_os = Version {
            name: "n".into(),
            version: "v".into(),
            os: None,
        };
        let el = Element::from(no_os.clone());
        assert!(el.get_child("os", ns::VERSION).is_none());
        assert_eq!(Version::try_from(&el), Ok(no_os));
        assert!(std::mem::size_of::<Version>() <= 72);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Version::try_from(&Version::request()),
            Err(XepError::MissingChild("name"))
        );
        let only_name = Version::request().child(Element::new("name", ns::VERSION).text_node("x"));
        assert_eq!(
            Version::try_from(&only_name),
            Err(XepError::MissingChild("version"))
        );
        let empty_name = Version::request()
            .child(Element::new("name", ns::VERSION))
            .child(Element::new("version", ns::VERSION).text_node("1"));
        assert_eq!(
            Version::try_from(&empty_name),
            Err(XepError::BadValue("name"))
        );
        // Children in another namespace do not count.
        let wrong_ns = Version::request()
            .child(Element::new("name", "urn:other").text_node("x"))
            .child(Element::new("version", ns::VERSION).text_node("1"));
        assert_eq!(
            Version::try_from(&wrong_ns),
            Err(XepError::MissingChild("name"))
        );
        assert_eq!(
            Version::try_from(&Element::new("query", ns::TIME)),
            Err(XepError::WrongElement("query"))
        );
    }
}
