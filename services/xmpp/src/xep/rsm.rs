//! XEP-0059: Result Set Management, `<set xmlns='http://jabber.org/protocol/rsm'>`.
//!
//! One type serves both directions: a request carries `max`, `after` or `before` (an empty
//! `<before/>` asks for the last page) and perhaps `index`; a response carries `first` (with
//! its optional `index` attribute), `last` and `count`.

use super::{XepError, expect};
use crate::element::Element;
use crate::ns;

/// A result set request or response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// The most items the requester wants in the page.
    pub max: Option<usize>,
    /// The page that ends just before this id; `Some("")` (an empty `<before/>`) is the last
    /// page of the whole set.
    pub before: Option<String>,
    /// The page that starts just after this id.
    pub after: Option<String>,
    /// The page that starts at this position of the set.
    pub index: Option<usize>,
    /// The id of the first item of the returned page.
    pub first: Option<String>,
    /// The position of `first` in the whole set.
    pub first_index: Option<usize>,
    /// The id of the last item of the returned page.
    pub last: Option<String>,
    /// The number of items in the whole set.
    pub count: Option<usize>,
}

fn number(el: &Element, what: &'static str) -> Result<usize, XepError> {
    el.text()
        .trim()
        .parse::<usize>()
        .map_err(|_| XepError::BadValue(what))
}

impl TryFrom<&Element> for Set {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "set", ns::RSM)?;
        let mut set = Set::default();
        for child in el.children().filter(|c| c.ns() == ns::RSM) {
            match child.name() {
                "max" => set.max = Some(number(child, "max")?),
                "before" => set.before = Some(child.text()),
                "after" => {
                    let after = child.text();
                    if after.is_empty() {
                        return Err(XepError::BadValue("after"));
                    }
                    set.after = Some(after);
                }
                "index" => set.index = Some(number(child, "index")?),
                "first" => {
                    set.first = Some(child.text());
                    set.first_index = match child.get_attr("index") {
                        Some(i) => Some(
                            i.trim()
                                .parse::<usize>()
                                .map_err(|_| XepError::BadValue("index"))?,
                        ),
                        None => None,
                    };
                }
                "last" => set.last = Some(child.text()),
                "count" => set.count = Some(number(child, "count")?),
                _ => {}
            }
        }
        Ok(set)
    }
}

fn text_child(name: &str, text: String) -> Element {
    let el = Element::new(name, ns::RSM);
    if text.is_empty() {
        el
    } else {
        el.text_node(text)
    }
}

impl From<Set> for Element {
    fn from(s: Set) -> Element {
        let mut el = Element::new("set", ns::RSM);
        if let Some(max) = s.max {
            el.append_child(text_child("max", max.to_string()));
        }
        if let Some(after) = s.after {
            el.append_child(text_child("after", after));
        }
        if let Some(before) = s.before {
            el.append_child(text_child("before", before));
        }
        if let Some(index) = s.index {
            el.append_child(text_child("index", index.to_string()));
        }
        if let Some(first) = s.first {
            let mut f = text_child("first", first);
            if let Some(i) = s.first_index {
                f.set_attr("index", i.to_string());
            }
            el.append_child(f);
        }
        if let Some(last) = s.last {
            el.append_child(text_child("last", last));
        }
        if let Some(count) = s.count {
            el.append_child(text_child("count", count.to_string()));
        }
        el
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let s = Set {
            max: Some(10),
            after: Some("09af3-cc343-b409f".into()),
            ..Set::default()
        };
        let el = Element::from(s.clone());
        assert_eq!(
            el.to_string(),
            "<set xmlns=\"http://jabber.org/protocol/rsm\"><max>10</max>\
             <after>09af3-cc343-b409f</after></set>"
        );
        assert_eq!(Set::try_from(&el), Ok(s));
    }

    #[test]
    fn empty_before_is_the_last_page() {
        let el = Element::new("set", ns::RSM)
            .child(Element::new("max", ns::RSM).text_node(" 5 "))
            .child(Element::new("before", ns::RSM));
        let s = Set::try_from(&el).unwrap();
        assert_eq!(s.max, Some(5));
        assert_eq!(s.before.as_deref(), Some(""));
        assert_eq!(s.after, None);
        let back = Element::from(s.clone());
        assert!(back.to_string().contains("<before/>"), "{back}");
        assert_eq!(Set::try_from(&back), Ok(s));
    }

    #[test]
    fn response_round_trip_and_size() {
        let s = Set {
            first: Some("a".into()),
            first_index: Some(20),
            last: Some("z".into()),
            count: Some(800),
            ..Set::default()
        };
        let el = Element::from(s.clone());
        assert_eq!(
            el.get_child("first", ns::RSM)
                .and_then(|f| f.get_attr("index")),
            Some("20")
        );
        assert_eq!(Set::try_from(&el), Ok(s));
        // A count-only answer (to max=0) has neither first nor last.
        let count_only = Set {
            count: Some(3),
            ..Set::default()
        };
        let el = Element::from(count_only.clone());
        assert_eq!(el.children().count(), 1);
        assert_eq!(Set::try_from(&el), Ok(count_only));
        assert!(std::mem::size_of::<Set>() <= 160);
    }

    #[test]
    fn rejects_bad_input() {
        let bad = |child: Element| Set::try_from(&Element::new("set", ns::RSM).child(child));
        assert_eq!(
            bad(Element::new("max", ns::RSM).text_node("-1")),
            Err(XepError::BadValue("max"))
        );
        assert_eq!(
            bad(Element::new("max", ns::RSM).text_node("ten")),
            Err(XepError::BadValue("max"))
        );
        assert_eq!(
            bad(Element::new("index", ns::RSM).text_node("")),
            Err(XepError::BadValue("index"))
        );
        assert_eq!(
            bad(Element::new("after", ns::RSM)),
            Err(XepError::BadValue("after"))
        );
        assert_eq!(
            bad(Element::new("first", ns::RSM)
                .attr("index", "x")
                .text_node("a")),
            Err(XepError::BadValue("index"))
        );
        assert_eq!(
            Set::try_from(&Element::new("set", "urn:other")),
            Err(XepError::WrongElement("set"))
        );
        // Elements of other namespaces are ignored.
        let el = Element::new("set", ns::RSM).child(Element::new("max", "urn:other"));
        assert_eq!(Set::try_from(&el), Ok(Set::default()));
    }
}
