//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! The targets check properties, not only "does not crash": the stream parser gives the same
//! events however its input is split, and every stanza it returns survives a serialize →
//! re-parse round trip; every XEP element type that accepts an element gives the same value
//! back after `From<T> for Element` and a trip through bytes; JIDs have one canonical form;
//! SCRAM accepts exactly the genuine exchange.

use xmpp::parser::{Limits, ParseError, StreamEvent, StreamParser};
use xmpp::{Element, Node};

/// The stream header the targets that parse a single element wrap it in.
pub const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

/// Limits generous enough that a re-serialized stanza (which may grow by escaping and
/// `xmlns` declarations) is never refused for its size.
pub fn roomy_limits() -> Limits {
    Limits {
        max_stanza_bytes: 1 << 24,
        max_depth: 1024,
        max_attrs: 1024,
        ..Limits::default()
    }
}

/// Feeds `chunks` one after the other, collecting events until the first error. After an
/// error, checks the parser keeps returning the same error.
pub fn run_chunks<'a>(
    p: &mut StreamParser,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<StreamEvent>, Option<ParseError>) {
    let mut events = Vec::new();
    for chunk in chunks {
        p.feed(chunk);
        loop {
            match p.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        p.next_event(),
                        Err(e.clone()),
                        "a failed parser must stay failed"
                    );
                    return (events, Some(e));
                }
            }
        }
    }
    (events, None)
}

/// The first stanza of `HEADER` + `body`, if the parser returns one.
pub fn first_stanza(body: &[u8]) -> Option<Element> {
    let mut p = StreamParser::new(roomy_limits());
    let (events, _) = run_chunks(&mut p, [HEADER, body]);
    events.into_iter().find_map(|e| match e {
        StreamEvent::Stanza(s) => Some(s),
        _ => None,
    })
}

/// Re-parses a serialized stanza inside a stream whose default namespace is `default_ns`.
/// Panics when the serializer's output is not accepted as exactly one stanza.
pub fn reparse(bytes: &[u8], default_ns: &str) -> Element {
    let mut doc = Vec::with_capacity(bytes.len() + 160);
    doc.extend_from_slice(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'");
    if !default_ns.is_empty() {
        doc.extend_from_slice(b" xmlns=\"");
        doc.extend_from_slice(quick_escape(default_ns).as_bytes());
        doc.push(b'"');
    }
    doc.push(b'>');
    doc.extend_from_slice(bytes);
    let mut p = StreamParser::new(roomy_limits());
    let (events, err) = run_chunks(&mut p, [doc.as_slice()]);
    if let Some(e) = err {
        panic!(
            "serialized stanza does not re-parse ({e}): {}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut stanzas = events.into_iter().filter_map(|e| match e {
        StreamEvent::Stanza(s) => Some(s),
        _ => None,
    });
    let first = stanzas.next().unwrap_or_else(|| {
        panic!(
            "no stanza re-parsed from {}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert!(
        stanzas.next().is_none(),
        "one stanza serialized, several parsed"
    );
    first
}

fn quick_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// The element with adjacent text nodes merged and empty ones dropped: how character data is
/// chunked into nodes is not part of an element's meaning.
pub fn normalize(el: &Element) -> Element {
    let mut out = Element::new(el.name(), el.ns());
    for (k, v) in el.attrs() {
        out.set_attr(k, v);
    }
    let mut text = String::new();
    for n in el.nodes() {
        match n {
            Node::Text(t) => text.push_str(t),
            Node::Element(c) => {
                if !text.is_empty() {
                    out.push_node(Node::Text(std::mem::take(&mut text)));
                }
                out.append_child(normalize(c));
            }
        }
    }
    if !text.is_empty() {
        out.push_node(Node::Text(text));
    }
    out
}

/// Every element of the tree, the root first, at most `max` of them.
pub fn descendants(root: &Element, max: usize) -> Vec<&Element> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < max {
        let el = out[i];
        for c in el.children() {
            if out.len() >= max {
                break;
            }
            out.push(c);
        }
        i += 1;
    }
    out
}
