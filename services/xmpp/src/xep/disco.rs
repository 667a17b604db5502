//! XEP-0030: Service Discovery. `<query xmlns='http://jabber.org/protocol/disco#info'>` with
//! identities and features, and `<query xmlns='http://jabber.org/protocol/disco#items'>` with
//! items. An empty query (the request) parses to empty lists.

use super::{XepError, expect};
use crate::element::Element;
use crate::jid::Jid;
use crate::ns;

/// One `<identity/>` of a disco#info result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub category: String,
    pub type_: String,
    pub name: Option<String>,
    pub lang: Option<String>,
}

impl Identity {
    pub fn new(category: &str, type_: &str, name: Option<&str>) -> Self {
        Identity {
            category: category.to_owned(),
            type_: type_.to_owned(),
            name: name.map(str::to_owned),
            lang: None,
        }
    }
}

/// A disco#info query or result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoInfo {
    pub node: Option<String>,
    pub identities: Vec<Identity>,
    pub features: Vec<String>,
}

impl DiscoInfo {
    /// True when the result lists this feature.
    pub fn has_feature(&self, var: &str) -> bool {
        self.features.iter().any(|f| f == var)
    }
}

fn non_empty_attr(el: &Element, name: &'static str) -> Result<String, XepError> {
    match el.get_attr(name) {
        None => Err(XepError::MissingAttr(name)),
        Some("") => Err(XepError::BadValue(name)),
        Some(v) => Ok(v.to_owned()),
    }
}

impl TryFrom<&Element> for DiscoInfo {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "query", ns::DISCO_INFO)?;
        let mut info = DiscoInfo {
            node: el.get_attr("node").map(str::to_owned),
            ..Default::default()
        };
        for child in el.children().filter(|c| c.ns() == ns::DISCO_INFO) {
            match child.name() {
                "identity" => info.identities.push(Identity {
                    category: non_empty_attr(child, "category")?,
                    type_: non_empty_attr(child, "type")?,
                    name: child.get_attr("name").map(str::to_owned),
                    lang: child.get_attr("xml:lang").map(str::to_owned),
                }),
                "feature" => info.features.push(non_empty_attr(child, "var")?),
                _ => {}
            }
        }
        Ok(info)
    }
}

impl From<DiscoInfo> for Element {
    fn from(info: DiscoInfo) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        if let Some(node) = info.node {
            q.set_attr("node", node);
        }
        for id in info.identities {
            let mut e = Element::new("identity", ns::DISCO_INFO)
                .attr("category", id.category)
                .attr("type", id.type_);
            if let Some(name) = id.name {
                e.set_attr("name", name);
            }
            if let Some(lang) = id.lang {
                e.set_attr("xml:lang", lang);
            }
            q.append_child(e);
        }
        for var in info.features {
            q.append_child(Element::new("feature", ns::DISCO_INFO).attr("var", var));
        }
        q
    }
}

/// One `<item/>` of a disco#items result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoItem {
    pub jid: Jid,
    pub node: Option<String>,
    pub name: Option<String>,
}

/// A disco#items query or result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoItems {
    pub node: Option<String>,
    pub items: Vec<DiscoItem>,
}

impl TryFrom<&Element> for DiscoItems {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "query", ns::DISCO_ITEMS)?;
        let mut items = Vec::new();
        for child in el.children().filter(|c| c.is("item", ns::DISCO_ITEMS)) {
            let jid = child.get_attr("jid").ok_or(XepError::MissingAttr("jid"))?;
            items.push(DiscoItem {
                jid: jid.parse().map_err(|_| XepError::BadValue("jid"))?,
                node: child.get_attr("node").map(str::to_owned),
                name: child.get_attr("name").map(str::to_owned),
            });
        }
        Ok(DiscoItems {
            node: el.get_attr("node").map(str::to_owned),
            items,
        })
    }
}

impl From<DiscoItems> for Element {
    fn from(items: DiscoItems) -> Element {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        if let Some(node) = items.node {
            q.set_attr("node", node);
        }
        for item in items.items {
            let mut e = Element::new("item", ns::DISCO_ITEMS).attr("jid", item.jid.as_str());
            if let Some(node) = item.node {
                e.set_attr("node", node);
            }
            if let Some(name) = item.name {
                e.set_attr("name", name);
            }
            q.append_child(e);
        }
        q
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn server_info() -> DiscoInfo {
        DiscoInfo {
            node: None,
            identities: vec![
                Identity::new("server", "im", Some("Relais")),
                Identity {
                    lang: Some("fr".into()),
                    ..Identity::new("server", "im", Some("Relais FR"))
                },
            ],
            features: vec![ns::DISCO_INFO.into(), ns::PING.into(), ns::VERSION.into()],
        }
    }

    #[test]
    fn info_round_trip_and_size() {
        let info = server_info();
        let el = Element::from(info.clone());
        assert_eq!(el.children().count(), 5);
        let first = el.get_child("identity", ns::DISCO_INFO).unwrap();
        assert_eq!(first.get_attr("category"), Some("server"));
        assert_eq!(first.get_attr("type"), Some("im"));
        assert_eq!(first.get_attr("name"), Some("Relais"));
        assert_eq!(DiscoInfo::try_from(&el), Ok(info.clone()));
        assert!(info.has_feature(ns::PING));
        assert!(!info.has_feature(ns::VCARD));
        // The request is an empty query, possibly with a node.
        let req = Element::new("query", ns::DISCO_INFO).attr("node", "n");
        let parsed = DiscoInfo::try_from(&req).unwrap();
        assert_eq!(parsed.node.as_deref(), Some("n"));
        assert!(parsed.identities.is_empty() && parsed.features.is_empty());
        assert_eq!(Element::from(parsed), req);
        assert!(std::mem::size_of::<DiscoInfo>() <= 80);
        assert!(std::mem::size_of::<Identity>() <= 96);
    }

    #[test]
    fn info_rejects_bad_input() {
        let q = || Element::new("query", ns::DISCO_INFO);
        let no_cat = q().child(Element::new("identity", ns::DISCO_INFO).attr("type", "im"));
        assert_eq!(
            DiscoInfo::try_from(&no_cat),
            Err(XepError::MissingAttr("category"))
        );
        let no_type =
            q().child(Element::new("identity", ns::DISCO_INFO).attr("category", "server"));
        assert_eq!(
            DiscoInfo::try_from(&no_type),
            Err(XepError::MissingAttr("type"))
        );
        let no_var = q().child(Element::new("feature", ns::DISCO_INFO));
        assert_eq!(
            DiscoInfo::try_from(&no_var),
            Err(XepError::MissingAttr("var"))
        );
        let empty_var = q().child(Element::new("feature", ns::DISCO_INFO).attr("var", ""));
        assert_eq!(
            DiscoInfo::try_from(&empty_var),
            Err(XepError::BadValue("var"))
        );
        assert_eq!(
            DiscoInfo::try_from(&Element::new("query", ns::DISCO_ITEMS)),
            Err(XepError::WrongElement("query"))
        );
        // Extension children (XEP-0128 forms) are ignored.
        let ext = q().child(Element::new("x", "jabber:x:data"));
        assert_eq!(DiscoInfo::try_from(&ext), Ok(DiscoInfo::default()));
    }

    #[test]
    fn items_round_trip_and_size() {
        let items = DiscoItems {
            node: None,
            items: vec![
                DiscoItem {
                    jid: "conference.example.com".parse().unwrap(),
                    node: None,
                    name: Some("Rooms".into()),
                },
                DiscoItem {
                    jid: "pubsub.example.com".parse().unwrap(),
                    node: Some("n1".into()),
                    name: None,
                },
            ],
        };
        let el = Element::from(items.clone());
        assert_eq!(
            el.to_string(),
            "<query xmlns=\"http://jabber.org/protocol/disco#items\">\
             <item jid=\"conference.example.com\" name=\"Rooms\"/>\
             <item jid=\"pubsub.example.com\" node=\"n1\"/></query>"
        );
        assert_eq!(DiscoItems::try_from(&el), Ok(items));
        let empty = Element::new("query", ns::DISCO_ITEMS);
        assert_eq!(DiscoItems::try_from(&empty), Ok(DiscoItems::default()));
        assert!(std::mem::size_of::<DiscoItems>() <= 56);
        assert!(std::mem::size_of::<DiscoItem>() <= 88);
    }

    #[test]
    fn items_reject_bad_input() {
        let q = Element::new("query", ns::DISCO_ITEMS).child(Element::new("item", ns::DISCO_ITEMS));
        assert_eq!(DiscoItems::try_from(&q), Err(XepError::MissingAttr("jid")));
        let q = Element::new("query", ns::DISCO_ITEMS)
            .child(Element::new("item", ns::DISCO_ITEMS).attr("jid", "a@"));
        assert_eq!(DiscoItems::try_from(&q), Err(XepError::BadValue("jid")));
        assert_eq!(
            DiscoItems::try_from(&Element::new("query", ns::DISCO_INFO)),
            Err(XepError::WrongElement("query"))
        );
    }
}
