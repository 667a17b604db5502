//! The incremental stream parser. CONTRACT STUB: keep every public signature; replace the
//! `todo!()` bodies.
//!
//! Bytes are fed as they arrive from the socket, split anywhere (even one byte at a time);
//! `next_event` returns whole events. quick-xml tokenizes; this module resolves namespaces
//! itself (a scope stack that starts at the stream header), builds stanza trees, and enforces
//! RFC 6120 §11 restricted XML and the configured limits.

use crate::element::Element;
use crate::error::StreamErrorCondition;

/// Limits applied while parsing. Exceeding any of them is a `<policy-violation/>`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest stanza, in bytes of its serialized form as received (default 256 KiB).
    pub max_stanza_bytes: usize,
    /// The deepest element nesting inside a stanza, the stanza itself being depth 1 (default 32).
    pub max_depth: usize,
    /// The most attributes on one element (default 64).
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_stanza_bytes: 256 * 1024, max_depth: 32, max_attrs: 64 }
    }
}

/// The opening `<stream:stream>` tag as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The default namespace declared on the header (`jabber:client` for c2s).
    pub default_ns: String,
    /// Attributes other than namespace declarations (`to`, `from`, `version`, `xml:lang`, `id`).
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One whole event from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `<stream:stream ...>` (root element, `http://etherx.jabber.org/streams` namespace).
    Open(StreamHeader),
    /// A complete first-level child of the stream (a stanza, or a nonza such as `<starttls/>`),
    /// with resolved namespaces. Whitespace between stanzas is skipped (keepalives).
    Stanza(Element),
    /// `</stream:stream>`.
    Close,
}

/// Why the stream cannot go on; each maps to the stream error RFC 6120 prescribes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// DTD, entity declaration, entity reference other than the five predefined ones (and
    /// character references), comment, or processing instruction (the XML declaration at the
    /// very start is allowed).
    #[error("restricted xml: {0}")]
    RestrictedXml(&'static str),
    /// A stanza over the size limit, too deep, or with too many attributes.
    #[error("policy violation: {0}")]
    PolicyViolation(&'static str),
    /// Malformed XML: mismatched tags, bad syntax, invalid UTF-8 or characters.
    #[error("not well formed: {0}")]
    NotWellFormed(String),
    /// The root is not `stream` in `http://etherx.jabber.org/streams`.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// An undeclared namespace prefix.
    #[error("bad namespace prefix")]
    BadNamespacePrefix,
}

impl ParseError {
    pub fn condition(&self) -> StreamErrorCondition {
        match self {
            ParseError::RestrictedXml(_) => StreamErrorCondition::RestrictedXml,
            ParseError::PolicyViolation(_) => StreamErrorCondition::PolicyViolation,
            ParseError::NotWellFormed(_) => StreamErrorCondition::NotWellFormed,
            ParseError::InvalidNamespace => StreamErrorCondition::InvalidNamespace,
            ParseError::BadNamespacePrefix => StreamErrorCondition::BadNamespacePrefix,
        }
    }
}

/// The incremental parser for one stream. After an error, the parser is unusable.
#[derive(Debug)]
pub struct StreamParser {
    _todo: (),
}

impl StreamParser {
    pub fn new(_limits: Limits) -> Self {
        todo!()
    }

    /// Appends received bytes. Never fails; errors surface from `next_event`.
    pub fn feed(&mut self, _data: &[u8]) {
        todo!()
    }

    /// The next whole event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        todo!()
    }

    /// Forgets everything (state and buffered bytes) for a stream restart after STARTTLS or
    /// SASL success.
    pub fn reset(&mut self) {
        todo!()
    }

    /// Bytes received but not yet turned into events.
    pub fn buffered(&self) -> usize {
        todo!()
    }

    /// Releases spare buffer capacity (called when the connection goes idle).
    pub fn shrink(&mut self) {
        todo!()
    }
}
