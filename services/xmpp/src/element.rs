//! A small owned XML element tree.
//!
//! Every element carries its resolved namespace; attribute names are kept as written (namespace
//! declarations are not attributes here). Serialization always uses default-namespace form: an
//! element gets an `xmlns` attribute only when its namespace differs from its parent's, so a
//! stanza written into a `jabber:client` stream carries no redundant declarations.

use std::fmt;

use quick_xml::escape::{escape, partial_escape};

/// Writes an attribute value so that a parser reads back exactly `v`: besides the markup
/// characters, tab, newline and carriage return become character references, since XML
/// attribute-value normalization turns the literal characters into spaces (found by fuzzing).
fn write_attr_value(out: &mut Vec<u8>, v: &str) {
    let escaped = escape(v);
    if !escaped.contains(['\t', '\n', '\r']) {
        out.extend_from_slice(escaped.as_bytes());
        return;
    }
    for c in escaped.chars() {
        match c {
            '\t' => out.extend_from_slice(b"&#9;"),
            '\n' => out.extend_from_slice(b"&#10;"),
            '\r' => out.extend_from_slice(b"&#13;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Writes text content; a carriage return becomes a character reference, since XML
/// end-of-line handling turns a literal one into a newline.
fn write_text(out: &mut Vec<u8>, t: &str) {
    let escaped = partial_escape(t);
    if !escaped.contains('\r') {
        out.extend_from_slice(escaped.as_bytes());
        return;
    }
    for part in escaped.split_inclusive('\r') {
        match part.strip_suffix('\r') {
            Some(before) => {
                out.extend_from_slice(before.as_bytes());
                out.extend_from_slice(b"&#13;");
            }
            None => out.extend_from_slice(part.as_bytes()),
        }
    }
}

/// A child of an element: another element or character data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its namespace, attributes and children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: set an attribute.
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element.
    #[must_use]
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: append character data.
    #[must_use]
    pub fn text_node(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn set_ns(&mut self, ns: impl Into<String>) {
        self.ns = ns.into();
    }

    /// True when this element has this local name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    pub fn push_node(&mut self, node: Node) {
        self.children.push(node);
    }

    pub fn append_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|e| e.is(name, ns))
    }

    /// Removes every child element with this name and namespace.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// Removes every child element for which `f` is true.
    pub fn retain_children(&mut self, mut f: impl FnMut(&Element) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => f(e),
            Node::Text(_) => true,
        });
    }

    /// The concatenated direct character data of this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// The first child element, if any (for example the payload of an IQ).
    pub fn first_child(&self) -> Option<&Element> {
        self.children().next()
    }

    /// Serializes this element. `parent_ns` is the default namespace in scope where it is
    /// written: `jabber:client` for a stanza written into a client stream, `""` for a
    /// standalone document.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns != parent_ns {
            out.extend_from_slice(b" xmlns=\"");
            write_attr_value(out, self.ns.as_str());
            out.push(b'"');
        }
        for (k, v) in &self.attrs {
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            write_attr_value(out, v.as_str());
            out.push(b'"');
        }
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => write_text(out, t.as_str()),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Serializes this element as it would be written into a stream whose default namespace
    /// is `parent_ns`.
    pub fn to_bytes_in(&self, parent_ns: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out, parent_ns);
        out
    }

    /// A rough count of the heap bytes this tree holds, for limits and quotas.
    pub fn approx_size(&self) -> usize {
        let mut n = self.name.len() + self.ns.len() + 32;
        for (k, v) in &self.attrs {
            n += k.len() + v.len() + 16;
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.approx_size(),
                Node::Text(t) => t.len() + 8,
            };
        }
        n
    }
}

/// Displays the element as a standalone document fragment (with its `xmlns`).
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes_in("");
        f.write_str(&String::from_utf8_lossy(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_default_namespace_form() {
        let e = Element::new("iq", "jabber:client")
            .attr("type", "result")
            .attr("id", "a<\"b")
            .child(Element::new("ping", "urn:xmpp:ping"))
            .child(Element::new("x", "jabber:client").text_node("1 < 2 & 3 > 2"));
        assert_eq!(
            String::from_utf8(e.to_bytes_in("jabber:client")).unwrap_or_default(),
            "<iq type=\"result\" id=\"a&lt;&quot;b\"><ping xmlns=\"urn:xmpp:ping\"/><x>1 &lt; 2 &amp; 3 &gt; 2</x></iq>"
        );
        assert!(e.to_string().starts_with("<iq xmlns=\"jabber:client\""));
    }

    #[test]
    fn attribute_and_child_helpers() {
        let mut e = Element::new("message", "jabber:client").attr("to", "a@b");
        e.set_attr("to", "c@d");
        assert_eq!(e.get_attr("to"), Some("c@d"));
        assert_eq!(e.attrs().count(), 1);
        e.append_child(Element::new("body", "jabber:client").text_node("hi"));
        e.append_child(Element::new("delay", "urn:xmpp:delay"));
        assert_eq!(
            e.get_child("body", "jabber:client")
                .map(Element::text)
                .as_deref(),
            Some("hi")
        );
        e.remove_children("delay", "urn:xmpp:delay");
        assert!(e.get_child("delay", "urn:xmpp:delay").is_none());
        assert_eq!(e.remove_attr("to").as_deref(), Some("c@d"));
        assert_eq!(e.get_attr("to"), None);
    }
}
