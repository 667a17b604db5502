//! XEP-0313: Message Archive Management, namespace `urn:xmpp:mam:2` (with the `#extended`
//! fields `before-id`, `after-id`, `ids` and the archive `<metadata/>`).
//!
//! - [`Query`]: `<query queryid node>` with its filter (a data form), result set and
//!   `<flip-page/>`;
//! - [`MamResult`]: `<result queryid id><forwarded/></result>`, one archived message;
//! - [`Fin`]: `<fin complete stable><set/></fin>`, the end of a query;
//! - [`Prefs`]: archiving preferences; [`Metadata`]: the first and last archived message.

use std::time::SystemTime;

use super::data_form::{DataForm, Field, FormType};
use super::forward::Forwarded;
use super::rsm::Set;
use super::time::{format_datetime_millis, parse_stamp};
use super::{XepError, expect};
use crate::element::Element;
use crate::jid::{BareJid, Jid};
use crate::ns;

/// The filter fields of a query form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only messages exchanged with this JID.
    pub with: Option<Jid>,
    /// Only messages at or after this time.
    pub start: Option<SystemTime>,
    /// Only messages at or before this time.
    pub end: Option<SystemTime>,
    /// Only messages strictly before this archive id (#extended).
    pub before_id: Option<String>,
    /// Only messages strictly after this archive id (#extended).
    pub after_id: Option<String>,
    /// Only these archive ids (#extended).
    pub ids: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// A query of the archive (IQ set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Echoed in every result, so the client can tell queries apart.
    pub queryid: Option<String>,
    /// A pubsub node whose archive is queried.
    pub node: Option<String>,
    pub filter: Filter,
    pub set: Option<Set>,
    /// Return the page's items in reverse order.
    pub flip_page: bool,
}

/// The form a server offers for queries (the answer to an IQ get of `<query/>`).
pub fn query_form() -> DataForm {
    let mut form = DataForm::new(FormType::Form, Some(ns::MAM));
    form.fields = vec![
        Field::new("with", Some("jid-single")),
        Field::new("start", Some("text-single")),
        Field::new("end", Some("text-single")),
        Field::new("before-id", Some("text-single")),
        Field::new("after-id", Some("text-single")),
        Field::new("ids", Some("text-multi")),
    ];
    form
}

fn non_empty(v: Option<&str>, what: &'static str) -> Result<Option<String>, XepError> {
    match v {
        None => Ok(None),
        Some("") => Err(XepError::BadValue(what)),
        Some(s) => Ok(Some(s.to_owned())),
    }
}

fn parse_filter(form: &DataForm) -> Result<Filter, XepError> {
    if !matches!(form.type_, FormType::Submit | FormType::Form) {
        return Err(XepError::BadValue("type"));
    }
    if form.form_type.as_deref().is_some_and(|t| t != ns::MAM) {
        return Err(XepError::BadValue("FORM_TYPE"));
    }
    let mut filter = Filter::default();
    for f in &form.fields {
        if f.var == "ids" {
            for id in &f.values {
                if id.is_empty() {
                    return Err(XepError::BadValue("ids"));
                }
                filter.ids.push(id.clone());
            }
            continue;
        }
        let single = f.single()?.map(str::trim);
        match f.var.as_str() {
            "with" => {
                filter.with = match single {
                    Some(j) => Some(j.parse::<Jid>().map_err(|_| XepError::BadValue("with"))?),
                    None => None,
                }
            }
            "start" => {
                filter.start = match single {
                    Some(t) => Some(parse_stamp(t).ok_or(XepError::BadValue("start"))?),
                    None => None,
                }
            }
            "end" => {
                filter.end = match single {
                    Some(t) => Some(parse_stamp(t).ok_or(XepError::BadValue("end"))?),
                    None => None,
                }
            }
            "before-id" => filter.before_id = non_empty(single, "before-id")?,
            "after-id" => filter.after_id = non_empty(single, "after-id")?,
            _ => return Err(XepError::BadValue("field")),
        }
    }
    Ok(filter)
}

fn filter_form(filter: Filter) -> DataForm {
    let mut form = DataForm::new(FormType::Submit, Some(ns::MAM));
    let mut add = |var: &str, value: String| form.fields.push(Field::new(var, None).value(value));
    if let Some(w) = filter.with {
        add("with", w.as_str().to_owned());
    }
    if let Some(t) = filter.start {
        add("start", format_datetime_millis(t));
    }
    if let Some(t) = filter.end {
        add("end", format_datetime_millis(t));
    }
    if let Some(id) = filter.before_id {
        add("before-id", id);
    }
    if let Some(id) = filter.after_id {
        add("after-id", id);
    }
    if !filter.ids.is_empty() {
        let mut f = Field::new("ids", None);
        f.values = filter.ids;
        form.fields.push(f);
    }
    form
}

impl TryFrom<&Element> for Query {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "query", ns::MAM)?;
        let filter = match el.get_child("x", ns::DATA_FORMS) {
            Some(x) => parse_filter(&DataForm::try_from(x)?)?,
            None => Filter::default(),
        };
        let set = match el.get_child("set", ns::RSM) {
            Some(s) => Some(Set::try_from(s)?),
            None => None,
        };
        Ok(Query {
            queryid: el.get_attr("queryid").map(str::to_owned),
            node: el.get_attr("node").map(str::to_owned),
            filter,
            set,
            flip_page: el.get_child("flip-page", ns::MAM).is_some(),
        })
    }
}

impl From<Query> for Element {
    fn from(q: Query) -> Element {
        let mut el = Element::new("query", ns::MAM);
        if let Some(id) = q.queryid {
            el.set_attr("queryid", id);
        }
        if let Some(node) = q.node {
            el.set_attr("node", node);
        }
        if !q.filter.is_empty() {
            el.append_child(filter_form(q.filter).into());
        }
        if let Some(set) = q.set {
            el.append_child(set.into());
        }
        if q.flip_page {
            el.append_child(Element::new("flip-page", ns::MAM));
        }
        el
    }
}

/// One archived message sent to the querying client, inside a `<message/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MamResult {
    pub queryid: Option<String>,
    /// The archive id of the message.
    pub id: String,
    pub forwarded: Forwarded,
}

impl TryFrom<&Element> for MamResult {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "result", ns::MAM)?;
        let id = non_empty(el.get_attr("id"), "id")?.ok_or(XepError::MissingAttr("id"))?;
        let fwd = el
            .get_child("forwarded", ns::FORWARD)
            .ok_or(XepError::MissingChild("forwarded"))?;
        Ok(MamResult {
            queryid: el.get_attr("queryid").map(str::to_owned),
            id,
            forwarded: Forwarded::try_from(fwd)?,
        })
    }
}

impl From<MamResult> for Element {
    fn from(r: MamResult) -> Element {
        let mut el = Element::new("result", ns::MAM);
        if let Some(q) = r.queryid {
            el.set_attr("queryid", q);
        }
        el.attr("id", r.id).child(r.forwarded.into())
    }
}

/// The end of a query's results (the payload of the IQ result).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fin {
    /// The page reaches the end of the result set in the direction of paging.
    pub complete: bool,
    /// False when the results may change if the query is repeated (for example while the
    /// archive is being rewritten).
    pub stable: bool,
    pub set: Set,
}

fn parse_bool(v: Option<&str>, default: bool, what: &'static str) -> Result<bool, XepError> {
    match v {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(XepError::BadValue(what)),
    }
}

impl TryFrom<&Element> for Fin {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "fin", ns::MAM)?;
        let set = el
            .get_child("set", ns::RSM)
            .ok_or(XepError::MissingChild("set"))?;
        Ok(Fin {
            complete: parse_bool(el.get_attr("complete"), false, "complete")?,
            stable: parse_bool(el.get_attr("stable"), true, "stable")?,
            set: Set::try_from(set)?,
        })
    }
}

impl From<Fin> for Element {
    fn from(f: Fin) -> Element {
        let mut el = Element::new("fin", ns::MAM);
        if f.complete {
            el.set_attr("complete", "true");
        }
        if !f.stable {
            el.set_attr("stable", "false");
        }
        el.child(f.set.into())
    }
}

/// Which messages are archived by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultBehaviour {
    #[default]
    Always,
    Never,
    /// Only messages exchanged with contacts in the user's roster.
    Roster,
}

impl DefaultBehaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultBehaviour::Always => "always",
            DefaultBehaviour::Never => "never",
            DefaultBehaviour::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(DefaultBehaviour::Always),
            "never" => Some(DefaultBehaviour::Never),
            "roster" => Some(DefaultBehaviour::Roster),
            _ => None,
        }
    }
}

/// Archiving preferences: the default, and JIDs always or never archived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefs {
    pub default: DefaultBehaviour,
    pub always: Vec<BareJid>,
    pub never: Vec<BareJid>,
}

fn jid_list(el: Option<&Element>) -> Result<Vec<BareJid>, XepError> {
    let Some(el) = el else {
        return Ok(Vec::new());
    };
    el.children()
        .filter(|c| c.is("jid", ns::MAM))
        .map(|c| {
            c.text()
                .trim()
                .parse::<BareJid>()
                .map_err(|_| XepError::BadValue("jid"))
        })
        .collect()
}

impl TryFrom<&Element> for Prefs {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "prefs", ns::MAM)?;
        let default = el
            .get_attr("default")
            .ok_or(XepError::MissingAttr("default"))?;
        let default = DefaultBehaviour::parse(default).ok_or(XepError::BadValue("default"))?;
        Ok(Prefs {
            default,
            always: jid_list(el.get_child("always", ns::MAM))?,
            never: jid_list(el.get_child("never", ns::MAM))?,
        })
    }
}

impl From<Prefs> for Element {
    fn from(p: Prefs) -> Element {
        let list = |name: &str, jids: Vec<BareJid>| {
            let mut e = Element::new(name, ns::MAM);
            for j in jids {
                e.append_child(Element::new("jid", ns::MAM).text_node(j.as_str()));
            }
            e
        };
        Element::new("prefs", ns::MAM)
            .attr("default", p.default.as_str())
            .child(list("always", p.always))
            .child(list("never", p.never))
    }
}

/// One end of the archive: an archived message's id and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boundary {
    pub id: String,
    pub timestamp: SystemTime,
}

/// The first and last message of an archive (#extended); both absent when it is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub start: Option<Boundary>,
    pub end: Option<Boundary>,
}

fn boundary(el: Option<&Element>) -> Result<Option<Boundary>, XepError> {
    let Some(el) = el else {
        return Ok(None);
    };
    let id = non_empty(el.get_attr("id"), "id")?.ok_or(XepError::MissingAttr("id"))?;
    let ts = el
        .get_attr("timestamp")
        .ok_or(XepError::MissingAttr("timestamp"))?;
    let timestamp = parse_stamp(ts).ok_or(XepError::BadValue("timestamp"))?;
    Ok(Some(Boundary { id, timestamp }))
}

impl TryFrom<&Element> for Metadata {
    type Error = XepError;
    fn try_from(el: &Element) -> Result<Self, XepError> {
        expect(el, "metadata", ns::MAM)?;
        let start = boundary(el.get_child("start", ns::MAM))?;
        let end = boundary(el.get_child("end", ns::MAM))?;
        if start.is_some() != end.is_some() {
            return Err(XepError::MissingChild(if start.is_some() {
                "end"
            } else {
                "start"
            }));
        }
        Ok(Metadata { start, end })
    }
}

impl From<Metadata> for Element {
    fn from(m: Metadata) -> Element {
        let mut el = Element::new("metadata", ns::MAM);
        for (name, b) in [("start", m.start), ("end", m.end)] {
            if let Some(b) = b {
                el.append_child(
                    Element::new(name, ns::MAM)
                        .attr("id", b.id)
                        .attr("timestamp", format_datetime_millis(b.timestamp)),
                );
            }
        }
        el
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::delay::Delay;
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn field(var: &str, values: &[&str]) -> Element {
        let mut f = Element::new("field", ns::DATA_FORMS).attr("var", var);
        for v in values {
            f.append_child(Element::new("value", ns::DATA_FORMS).text_node(*v));
        }
        f
    }

    fn form(fields: Vec<Element>) -> Element {
        let mut x = Element::new("x", ns::DATA_FORMS)
            .attr("type", "submit")
            .child(field("FORM_TYPE", &[ns::MAM]).attr("type", "hidden"));
        for f in fields {
            x.append_child(f);
        }
        x
    }

    #[test]
    fn parses_the_xep_query_example() {
        let el = Element::new("query", ns::MAM)
            .attr("queryid", "f27")
            .child(form(vec![
                field("with", &["juliet@capulet.lit"]),
                field("start", &["2010-06-07T00:00:00Z"]),
                field("end", &["2010-07-07T13:23:54Z"]),
            ]))
            .child(
                Element::new("set", ns::RSM)
                    .child(Element::new("max", ns::RSM).text_node("10"))
                    .child(Element::new("before", ns::RSM)),
            )
            .child(Element::new("flip-page", ns::MAM));
        let q = Query::try_from(&el).unwrap();
        assert_eq!(q.queryid.as_deref(), Some("f27"));
        assert_eq!(
            q.filter.with.as_ref().map(Jid::as_str),
            Some("juliet@capulet.lit")
        );
        assert_eq!(q.filter.start, Some(at(1_275_868_800_000)));
        assert_eq!(q.filter.end, Some(at(1_278_509_034_000)));
        let set = q.set.clone().unwrap();
        assert_eq!((set.max, set.before.as_deref()), (Some(10), Some("")));
        assert!(q.flip_page);
        // Built back and parsed again, it is the same query.
        assert_eq!(Query::try_from(&Element::from(q.clone())), Ok(q));
    }

    #[test]
    fn query_round_trip_and_size() {
        let q = Query {
            queryid: Some("q1".into()),
            node: None,
            filter: Filter {
                with: None,
                start: None,
                end: Some(at(1_700_000_000_123)),
                before_id: Some("B".into()),
                after_id: Some("A".into()),
                ids: vec!["X".into(), "Y".into()],
            },
            set: None,
            flip_page: false,
        };
        let el = Element::from(q.clone());
        assert!(el.get_child("flip-page", ns::MAM).is_none());
        assert_eq!(Query::try_from(&el), Ok(q));
        // The empty query carries no form at all.
        let empty = Element::from(Query::default());
        assert_eq!(empty.children().count(), 0);
        assert_eq!(Query::try_from(&empty), Ok(Query::default()));
        assert!(std::mem::size_of::<Query>() <= 512);
    }

    #[test]
    fn query_rejects_bad_forms() {
        let bad = |fields: Vec<Element>| {
            Query::try_from(&Element::new("query", ns::MAM).child(form(fields)))
        };
        assert_eq!(
            bad(vec![field("with", &["a@b@c"])]),
            Err(XepError::BadValue("with"))
        );
        assert_eq!(
            bad(vec![field("start", &["yesterday"])]),
            Err(XepError::BadValue("start"))
        );
        assert_eq!(
            bad(vec![field("end", &["2010-13-01T00:00:00Z"])]),
            Err(XepError::BadValue("end"))
        );
        assert_eq!(
            bad(vec![field("after-id", &[""])]),
            Err(XepError::BadValue("after-id"))
        );
        assert_eq!(
            bad(vec![field("ids", &["a", ""])]),
            Err(XepError::BadValue("ids"))
        );
        assert_eq!(
            bad(vec![field("with", &["a@b", "c@d"])]),
            Err(XepError::BadValue("field"))
        );
        assert_eq!(
            bad(vec![field("{urn:example}colour", &["red"])]),
            Err(XepError::BadValue("field"))
        );
        let wrong_type = Element::new("query", ns::MAM).child(
            Element::new("x", ns::DATA_FORMS)
                .attr("type", "submit")
                .child(field("FORM_TYPE", &["urn:xmpp:mam:1"])),
        );
        assert_eq!(
            Query::try_from(&wrong_type),
            Err(XepError::BadValue("FORM_TYPE"))
        );
        let bad_set = Element::new("query", ns::MAM)
            .child(Element::new("set", ns::RSM).child(Element::new("max", ns::RSM)));
        assert_eq!(Query::try_from(&bad_set), Err(XepError::BadValue("max")));
        assert_eq!(
            Query::try_from(&Element::new("query", "urn:xmpp:mam:1")),
            Err(XepError::WrongElement("query"))
        );
    }

    #[test]
    fn the_offered_form_lists_every_filter() {
        let el = Element::from(query_form());
        let vars: Vec<&str> = el.children().filter_map(|f| f.get_attr("var")).collect();
        assert_eq!(
            vars,
            [
                "FORM_TYPE",
                "with",
                "start",
                "end",
                "before-id",
                "after-id",
                "ids"
            ]
        );
        assert_eq!(el.get_attr("type"), Some("form"));
    }

    #[test]
    fn result_round_trip_and_rejects() {
        let r = MamResult {
            queryid: Some("f27".into()),
            id: "28482-98726-73623".into(),
            forwarded: Forwarded {
                delay: Some(Delay::new(None, at(1_281_187_872_000))),
                stanza: Element::new("message", ns::CLIENT)
                    .attr("to", "juliet@capulet.lit/balcony")
                    .child(Element::new("body", ns::CLIENT).text_node("Call me")),
            },
        };
        let el = Element::from(r.clone());
        assert_eq!(el.get_attr("id"), Some("28482-98726-73623"));
        assert_eq!(MamResult::try_from(&el), Ok(r));
        assert!(std::mem::size_of::<MamResult>() <= 256);
        let no_id = Element::new("result", ns::MAM);
        assert_eq!(
            MamResult::try_from(&no_id),
            Err(XepError::MissingAttr("id"))
        );
        let no_fwd = Element::new("result", ns::MAM).attr("id", "x");
        assert_eq!(
            MamResult::try_from(&no_fwd),
            Err(XepError::MissingChild("forwarded"))
        );
    }

    #[test]
    fn fin_round_trip_and_rejects() {
        let f = Fin {
            complete: true,
            stable: true,
            set: Set {
                first: Some("a".into()),
                last: Some("b".into()),
                count: Some(2),
                ..Set::default()
            },
        };
        let el = Element::from(f.clone());
        assert_eq!(el.get_attr("complete"), Some("true"));
        assert_eq!(el.get_attr("stable"), None);
        assert_eq!(Fin::try_from(&el), Ok(f));
        let unstable = Fin {
            complete: false,
            stable: false,
            set: Set::default(),
        };
        let el = Element::from(unstable.clone());
        assert_eq!(el.get_attr("complete"), None);
        assert_eq!(Fin::try_from(&el), Ok(unstable));
        let bad = Element::new("fin", ns::MAM)
            .attr("complete", "yes")
            .child(Element::new("set", ns::RSM));
        assert_eq!(Fin::try_from(&bad), Err(XepError::BadValue("complete")));
        assert_eq!(
            Fin::try_from(&Element::new("fin", ns::MAM)),
            Err(XepError::MissingChild("set"))
        );
    }

    #[test]
    fn prefs_round_trip_and_rejects() {
        let p = Prefs {
            default: DefaultBehaviour::Roster,
            always: vec!["romeo@montague.lit".parse().unwrap()],
            never: vec!["montague@montague.lit".parse().unwrap()],
        };
        let el = Element::from(p.clone());
        assert_eq!(el.get_attr("default"), Some("roster"));
        assert_eq!(Prefs::try_from(&el), Ok(p));
        let el = Element::from(Prefs::default());
        assert_eq!(el.get_attr("default"), Some("always"));
        assert_eq!(Prefs::try_from(&el), Ok(Prefs::default()));
        assert!(std::mem::size_of::<Prefs>() <= 64);
        let no_default = Element::new("prefs", ns::MAM);
        assert_eq!(
            Prefs::try_from(&no_default),
            Err(XepError::MissingAttr("default"))
        );
        let bad_default = Element::new("prefs", ns::MAM).attr("default", "sometimes");
        assert_eq!(
            Prefs::try_from(&bad_default),
            Err(XepError::BadValue("default"))
        );
        let full_jid = Element::new("prefs", ns::MAM)
            .attr("default", "never")
            .child(
                Element::new("always", ns::MAM)
                    .child(Element::new("jid", ns::MAM).text_node("a@b/c")),
            );
        assert_eq!(Prefs::try_from(&full_jid), Err(XepError::BadValue("jid")));
    }

    #[test]
    fn metadata_round_trip_and_rejects() {
        let m = Metadata {
            start: Some(Boundary {
                id: "first".into(),
                timestamp: at(1_000),
            }),
            end: Some(Boundary {
                id: "last".into(),
                timestamp: at(2_500),
            }),
        };
        let el = Element::from(m.clone());
        assert_eq!(
            el.get_child("end", ns::MAM)
                .and_then(|e| e.get_attr("timestamp")),
            Some("1970-01-01T00:00:02.500Z")
        );
        assert_eq!(Metadata::try_from(&el), Ok(m));
        let empty = Element::from(Metadata::default());
        assert_eq!(empty.children().count(), 0);
        assert_eq!(Metadata::try_from(&empty), Ok(Metadata::default()));
        let half = Element::new("metadata", ns::MAM).child(
            Element::new("start", ns::MAM)
                .attr("id", "a")
                .attr("timestamp", "2020-01-01T00:00:00Z"),
        );
        assert_eq!(
            Metadata::try_from(&half),
            Err(XepError::MissingChild("end"))
        );
        let bad_ts = Element::new("metadata", ns::MAM)
            .child(
                Element::new("start", ns::MAM)
                    .attr("id", "a")
                    .attr("timestamp", "now"),
            )
            .child(
                Element::new("end", ns::MAM)
                    .attr("id", "b")
                    .attr("timestamp", "now"),
            );
        assert_eq!(
            Metadata::try_from(&bad_ts),
            Err(XepError::BadValue("timestamp"))
        );
    }
}
