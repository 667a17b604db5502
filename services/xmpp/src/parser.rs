//! The incremental stream parser.
//!
//! Bytes are fed as they arrive from the socket, split anywhere (even one byte at a time);
//! `next_event` returns whole events. quick-xml tokenizes; this module resolves namespaces
//! itself (a scope stack that starts at the stream header), builds stanza trees, and enforces
//! RFC 6120 §11 restricted XML and the configured limits.

//!
//! How it works: received bytes are kept in one buffer. `next_event` runs a quick-xml reader
//! over the unconsumed part, applies every complete token to the stanza being built, and
//! remembers how far it got. When the buffer ends inside a token (a tag, a reference, a CDATA
//! section), the bytes of that token stay buffered and everything before them is released; a
//! text run that reaches the end of the buffer is taken as far as it is valid UTF-8. Consumed
//! bytes are never parsed again. A token still waiting for its end is followed by a small
//! scanner that mirrors quick-xml's rules (a `>` outside quotes for a tag, `]]>` for CDATA,
//! `?>` for a declaration, `;` for a reference) over the new bytes only, so the tokenizer runs
//! over a token once, when it is complete: the work is linear in the input however it is split.
//!
//! An unfinished stanza is not held as a tree: its closed parts are appended to a compact
//! byte tape (one tag byte, the local name, the namespace only where it differs from the
//! parent's, attributes, text), and the `Element` tree is built from the tape when the stanza
//! ends. A tiny element such as `<a/>` costs three bytes of tape instead of an `Element`.

use quick_xml::Reader;
use quick_xml::errors::{Error as XmlError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};

use crate::element::{Element, Node};
use crate::error::StreamErrorCondition;
use crate::ns;

/// Limits applied while parsing. Exceeding any of them is a `<policy-violation/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest stanza, in bytes of its serialized form as received (default 256 KiB). The
    /// stream header is held to the same limit.
    pub max_stanza_bytes: usize,
    /// The deepest element nesting inside a stanza, the stanza itself being depth 1 (default 32).
    pub max_depth: usize,
    /// The most attributes on one element (default 64).
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attrs: 64,
        }
    }
}

impl Limits {
    /// For a stream before authentication: what a client sends there (`<starttls/>`, SASL
    /// `<auth/>` and `<response/>`, an XEP-0077 registration form) is small and flat. 16 KiB
    /// per stanza (RFC 6120 §13.12 asks for at least 10,000 bytes), 16 deep, 32 attributes.
    pub fn prelogin() -> Self {
        Limits {
            max_stanza_bytes: 16 * 1024,
            max_depth: 16,
            max_attrs: 32,
        }
    }
}

/// What one stanza may contain and what an unfinished one may hold, for streams from the
/// network. Exceeding any of them is a `<policy-violation/>`. `Default` is unlimited (for
/// stanzas a trusted peer already checked); the edge uses [`TreeLimits::bound`] and, before
/// authentication, [`TreeLimits::prelogin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// The most elements in one stanza, the stanza itself included.
    pub max_elements: usize,
    /// The most character data in one stanza, in bytes after unescaping.
    pub max_text_bytes: usize,
    /// The most bytes the parser may hold for one unfinished stanza: its unconsumed input,
    /// its encoded tree and its pending text.
    pub max_held_bytes: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_elements: usize::MAX,
            max_text_bytes: usize::MAX,
            max_held_bytes: usize::MAX,
        }
    }
}

impl TreeLimits {
    /// For a bound stream: 10,000 elements, 256 KiB of text, 512 KiB held.
    pub fn bound() -> Self {
        TreeLimits {
            max_elements: 10_000,
            max_text_bytes: 256 * 1024,
            max_held_bytes: 512 * 1024,
        }
    }

    /// Before authentication: 128 elements, 8 KiB of text, 32 KiB held.
    pub fn prelogin() -> Self {
        TreeLimits {
            max_elements: 128,
            max_text_bytes: 8 * 1024,
            max_held_bytes: 32 * 1024,
        }
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
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug)]
enum State {
    /// Before the stream header.
    Prolog,
    /// Inside `<stream:stream>`.
    Stream,
    /// After `</stream:stream>`: everything else is ignored.
    Closed,
    /// After an error: every call returns it again.
    Failed(ParseError),
}

/// A token the buffer stops inside, and what has been seen of it: a scanner that follows
/// quick-xml's rules for where each kind of token ends, fed only with new bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// `<` and nothing after it yet.
    Lt,
    /// `<!`: the next byte says what it is (only CDATA may wait; the rest fail).
    Bang,
    /// A start or end tag: ends at a `>` outside a quoted attribute value.
    Tag(Quote),
    /// `<![`: ends at `]]>`; how many `]` (up to two) came just before.
    CData(u8),
    /// `<?` (the XML declaration): ends at `?>`; whether the last byte was `?`.
    Pi(bool),
    /// An entity or character reference: ends with `;` (or fails at `<` or `&`).
    Reference,
    /// Fallback should the scanner and the tokenizer ever disagree: retry at any `>`.
    Gt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    Outside,
    Single,
    Double,
}

impl Wait {
    /// Follows the token over `bytes`; the index of the first byte that may end it.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *self = match (*self, b) {
                (Wait::Lt, b'!') => Wait::Bang,
                (Wait::Lt, b'?') => Wait::Pi(true),
                (Wait::Lt, _) | (Wait::Tag(Quote::Outside), _) => match b {
                    b'>' => return Some(i),
                    b'\'' => Wait::Tag(Quote::Single),
                    b'"' => Wait::Tag(Quote::Double),
                    _ => Wait::Tag(Quote::Outside),
                },
                (Wait::Tag(Quote::Single), b'\'') | (Wait::Tag(Quote::Double), b'"') => {
                    Wait::Tag(Quote::Outside)
                }
                (Wait::Tag(q), _) => Wait::Tag(q),
                (Wait::Bang, b'[') => Wait::CData(0),
                // A comment, a DOCTYPE or junk: the tokenizer fails it at once.
                (Wait::Bang, _) => return Some(i),
                (Wait::CData(n), b']') => Wait::CData((n + 1).min(2)),
                (Wait::CData(2), b'>') => return Some(i),
                (Wait::CData(_), _) => Wait::CData(0),
                (Wait::Pi(true), b'>') => return Some(i),
                (Wait::Pi(_), _) => Wait::Pi(b == b'?'),
                (Wait::Reference, b';' | b'<' | b'&') => return Some(i),
                (Wait::Reference, _) => Wait::Reference,
                (Wait::Gt, b'>') => return Some(i),
                (Wait::Gt, _) => Wait::Gt,
            };
        }
        None
    }
}

/// An element of the current stanza that is still open.
#[derive(Debug)]
struct Open {
    /// The name as written, to match the end tag.
    qname: Box<str>,
    /// Where its namespace URI is written in the tape.
    ns: (usize, usize),
}

// The stanza tape: records of one tag byte and their fields, lengths as LEB128 varints.
/// `<x ...>`: name, the namespace URI unless `SAME_NS`, the attributes if `HAS_ATTRS`.
const OP_START: u8 = 0x01;
/// The element is in its parent's namespace (no URI written).
const SAME_NS: u8 = 0x02;
/// An attribute count and the (name, value) pairs follow.
const HAS_ATTRS: u8 = 0x04;
/// `<x/>`: no `OP_END` follows.
const EMPTY: u8 = 0x08;
/// Character data of the innermost open element: length and bytes.
const OP_TEXT: u8 = 0x10;
/// The innermost open element ends.
const OP_END: u8 = 0x20;

fn put_len(tape: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            tape.push(low);
            return;
        }
        tape.push(low | 0x80);
    }
}

fn put_str(tape: &mut Vec<u8>, s: &str) {
    put_len(tape, s.len());
    tape.extend_from_slice(s.as_bytes());
}

/// Reads the tape back. Every read is checked: a short or corrupt tape yields `None`.
struct TapeReader<'a> {
    tape: &'a [u8],
    pos: usize,
}

impl<'a> TapeReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.tape.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        let bytes = self.tape.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        std::str::from_utf8(bytes).ok()
    }
}

/// Builds the stanza a complete tape describes.
fn build(tape: &[u8]) -> Option<Element> {
    let mut r = TapeReader { tape, pos: 0 };
    let mut stack: Vec<Element> = Vec::new();
    let mut done = None;
    while done.is_none() {
        let op = r.byte()?;
        let closed = if op & OP_START != 0 {
            let name = r.str()?;
            let mut el = if op & SAME_NS != 0 {
                Element::new(name, stack.last()?.ns())
            } else {
                let uri = r.str()?;
                Element::new(name, uri)
            };
            if op & HAS_ATTRS != 0 {
                for _ in 0..r.len()? {
                    let k = r.str()?;
                    el.set_attr(k, r.str()?);
                }
            }
            if op & EMPTY != 0 {
                Some(el)
            } else {
                stack.push(el);
                None
            }
        } else if op == OP_TEXT {
            let text = r.str()?;
            stack.last_mut()?.push_node(Node::Text(text.to_owned()));
            None
        } else if op == OP_END {
            Some(stack.pop()?)
        } else {
            return None;
        };
        if let Some(el) = closed {
            match stack.last_mut() {
                Some(parent) => parent.append_child(el),
                None => done = Some(el),
            }
        }
    }
    // The stanza must be the whole tape.
    if r.pos != tape.len() {
        return None;
    }
    done
}

/// The result of one pass over the buffer.
struct Run {
    event: Option<StreamEvent>,
    consumed: usize,
    /// The data ends inside a token that starts at `consumed`; how its scan starts.
    wait: Option<Wait>,
}

impl Run {
    fn more(consumed: usize, wait: Option<Wait>) -> Self {
        Run {
            event: None,
            consumed,
            wait,
        }
    }
    fn event(event: StreamEvent, consumed: usize) -> Self {
        Run {
            event: Some(event),
            consumed,
            wait: None,
        }
    }
}

fn nwf(msg: &str) -> ParseError {
    ParseError::NotWellFormed(msg.to_owned())
}

/// The incremental parser for one stream. After an error, the parser is unusable.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    tree: TreeLimits,
    /// Received bytes; `buf[head..]` is not yet consumed.
    buf: Vec<u8>,
    head: usize,
    state: State,
    /// Something was consumed before the root (an XML declaration is then no longer allowed).
    seen_any: bool,
    /// The byte order mark opening the stream was consumed (another one is character data).
    seen_bom: bool,
    /// The root was an empty element: `Close` follows `Open`.
    pending_close: bool,
    /// In-scope namespace declarations, innermost last: (prefix, uri); prefix "" is the default.
    ns: Vec<(Box<str>, Box<str>)>,
    /// For each open element (root included), where its declarations start in `ns`.
    ns_marks: Vec<usize>,
    /// The root's name as written.
    root_qname: Box<str>,
    /// The open elements of the current stanza, stanza first.
    stack: Vec<Open>,
    /// The current stanza as far as it is parsed, encoded compactly (see `OP_START`).
    tape: Vec<u8>,
    /// Character data not yet written to the tape.
    text: String,
    /// Bytes of the current stanza consumed so far.
    stanza_bytes: usize,
    /// Elements of the current stanza so far.
    elements: usize,
    /// Character data of the current stanza so far, in bytes.
    text_bytes: usize,
    /// Bytes examined by the tokenizer and the token scanner, every pass counted.
    scanned: u64,
    /// The buffer stops inside a token: bytes of `buf[head..]` already scanned, and the
    /// scanner's state after them.
    wait: Option<(usize, Wait)>,
}

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            limits,
            tree: TreeLimits::default(),
            buf: Vec::new(),
            head: 0,
            state: State::Prolog,
            seen_any: false,
            seen_bom: false,
            pending_close: false,
            ns: Vec::new(),
            ns_marks: Vec::new(),
            root_qname: Box::default(),
            stack: Vec::new(),
            tape: Vec::new(),
            text: String::new(),
            stanza_bytes: 0,
            elements: 0,
            text_bytes: 0,
            scanned: 0,
            wait: None,
        }
    }

    /// Builder: limits what a stanza may contain and hold (unlimited otherwise).
    #[must_use]
    pub fn with_tree_limits(mut self, tree: TreeLimits) -> Self {
        self.tree = tree;
        self
    }

    /// Replaces all limits, for example with the bound-stream ones after authentication.
    /// They apply from the next byte parsed, to the stanza in progress too.
    pub fn set_limits(&mut self, limits: Limits, tree: TreeLimits) {
        self.limits = limits;
        self.tree = tree;
    }

    pub fn limits(&self) -> (&Limits, &TreeLimits) {
        (&self.limits, &self.tree)
    }

    /// How many bytes the tokenizer and the token scanner have examined so far, every pass
    /// counted: tests compare it with the bytes fed to prove the work is linear.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Appends received bytes. Never fails; errors surface from `next_event`.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, State::Closed | State::Failed(_)) {
            return;
        }
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Closed => {
                self.buf.clear();
                self.head = 0;
                return Ok(None);
            }
            State::Prolog | State::Stream => {}
        }
        if self.pending_close {
            self.close();
            return Ok(Some(StreamEvent::Close));
        }
        if let Some((seen, mut wait)) = self.wait {
            let unconsumed = self.buf.get(self.head..).unwrap_or_default();
            let fresh = unconsumed.get(seen..).unwrap_or_default();
            self.scanned += fresh.len() as u64;
            if wait.scan(fresh).is_none() {
                self.wait = Some((unconsumed.len(), wait));
                return self.check_pending().map(|()| None);
            }
            self.wait = None;
        }

        let buf = std::mem::take(&mut self.buf);
        let data_len = buf.len().saturating_sub(self.head);
        let result = self.run(buf.get(self.head..).unwrap_or_default());
        self.buf = buf;
        let run = match result {
            Ok(run) => run,
            Err(e) => return Err(self.fail(e)),
        };
        // An event ends the pass where it ends; otherwise the reader went to the end.
        self.scanned += if run.event.is_some() {
            run.consumed
        } else {
            data_len
        } as u64;
        self.head += run.consumed;
        if self.head >= self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        match run.event {
            Some(StreamEvent::Close) => {
                self.close();
                Ok(Some(StreamEvent::Close))
            }
            Some(ev) => Ok(Some(ev)),
            None => {
                if let Some(mut wait) = run.wait {
                    // Follow the pending token from its first byte; from now on only new
                    // bytes are scanned.
                    let tail = self.buf.get(self.head..).unwrap_or_default();
                    self.scanned += tail.len() as u64;
                    if wait.scan(tail.get(1..).unwrap_or_default()).is_some() {
                        wait = Wait::Gt;
                    }
                    self.wait = Some((tail.len(), wait));
                }
                self.check_pending().map(|()| None)
            }
        }
    }

    /// Forgets everything (state and buffered bytes) for a stream restart after STARTTLS or
    /// SASL success.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.state = State::Prolog;
        self.seen_any = false;
        self.seen_bom = false;
        self.pending_close = false;
        self.ns.clear();
        self.ns_marks.clear();
        self.root_qname = Box::default();
        self.stack.clear();
        self.tape.clear();
        self.text.clear();
        self.stanza_bytes = 0;
        self.elements = 0;
        self.text_bytes = 0;
        self.wait = None;
    }

    /// Bytes received but not yet turned into events: the unconsumed buffer plus the bytes
    /// of a stanza still being received.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.head + self.stanza_bytes
    }

    /// Releases spare buffer capacity (called when the connection goes idle).
    pub fn shrink(&mut self) {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.shrink_to_fit();
        self.tape.shrink_to_fit();
        self.text.shrink_to_fit();
        self.stack.shrink_to_fit();
        self.ns.shrink_to_fit();
        self.ns_marks.shrink_to_fit();
    }

    // -----------------------------------------------------------------------------------------

    fn close(&mut self) {
        self.pending_close = false;
        self.state = State::Closed;
        self.buf = Vec::new();
        self.head = 0;
        self.wait = None;
    }

    fn fail(&mut self, e: ParseError) -> ParseError {
        self.state = State::Failed(e.clone());
        self.buf = Vec::new();
        self.head = 0;
        self.stack = Vec::new();
        self.tape = Vec::new();
        self.text = String::new();
        self.ns = Vec::new();
        self.ns_marks = Vec::new();
        self.wait = None;
        e
    }

    /// The unconsumed bytes all belong to the current (unfinished) stanza or header.
    fn check_pending(&mut self) -> Result<(), ParseError> {
        let pending = self.buf.len() - self.head;
        if self.stanza_bytes + pending > self.limits.max_stanza_bytes {
            return Err(self.fail(ParseError::PolicyViolation("stanza too large")));
        }
        if self.held() > self.tree.max_held_bytes {
            return Err(self.fail(ParseError::PolicyViolation("stanza holds too much")));
        }
        Ok(())
    }

    /// Bytes held for the unfinished stanza: unconsumed input, tape and pending text.
    fn held(&self) -> usize {
        self.buf.len() - self.head + self.tape.len() + self.text.len()
    }

    fn count_text(&mut self, n: usize) -> Result<(), ParseError> {
        self.text_bytes += n;
        if self.text_bytes > self.tree.max_text_bytes {
            return Err(ParseError::PolicyViolation("too much text"));
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), ParseError> {
        self.stanza_bytes += n;
        if self.stanza_bytes > self.limits.max_stanza_bytes {
            return Err(ParseError::PolicyViolation("stanza too large"));
        }
        Ok(())
    }

    /// One pass over the unconsumed bytes, up to the next event or the end of the data.
    fn run(&mut self, data: &[u8]) -> Result<Run, ParseError> {
        let mut pos = 0;
        // The reader drops a byte order mark at the start of what it is given, which would
        // also throw the positions off: every U+FEFF there is taken here. Only the first
        // bytes of the stream may be a byte order mark; any other is character data.
        while data.get(pos..).is_some_and(|d| d.starts_with(UTF8_BOM)) {
            if pos == 0 && matches!(self.state, State::Prolog) && !self.seen_any && !self.seen_bom {
                self.seen_bom = true;
            } else {
                self.text_chunk(UTF8_BOM, false)?;
            }
            pos += UTF8_BOM.len();
        }
        let slice = data.get(pos..).unwrap_or_default();
        let base = pos;
        let mut reader = Reader::from_reader(slice);
        {
            let config = reader.config_mut();
            config.trim_text(false);
            config.check_end_names = false;
            config.allow_unmatched_ends = true;
            config.expand_empty_elements = false;
            config.allow_dangling_amp = false;
        }
        loop {
            let ev = reader.read_event();
            // Where the reader stands now (after a text run ending at markup, past the `<`).
            let at = base + slice.len() - reader.get_ref().len();
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return self.reader_error(&e, data.get(pos..).unwrap_or_default(), pos),
            };
            // A whole token is held to the size limit before it is interpreted, as it is while
            // it is still arriving (`check_pending`), so an oversized bad tag gets the same
            // error however its bytes were split. Not restricted XML (comments, PIs, DTDs):
            // those are refused from their first bytes when they arrive in pieces.
            if !matches!(
                ev,
                Event::Text(_)
                    | Event::Eof
                    | Event::PI(_)
                    | Event::Comment(_)
                    | Event::DocType(_)
                    | Event::Decl(_)
            ) && self.stanza_bytes + (at - pos) > self.limits.max_stanza_bytes
            {
                return Err(ParseError::PolicyViolation("stanza too large"));
            }
            match ev {
                Event::Eof => return Ok(Run::more(pos, None)),
                Event::Text(t) => {
                    let end = pos + t.len();
                    if end >= data.len() {
                        // The text may go on in the next bytes: take what is certain.
                        let used = self.text_chunk(&t, true)?;
                        return Ok(Run::more(pos + used, None));
                    }
                    self.text_chunk(&t, false)?;
                    pos = end;
                }
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    if self.stack.is_empty() {
                        return Err(nwf("character data outside a stanza"));
                    }
                    self.count(at - pos)?;
                    self.count_text(c.len_utf8())?;
                    self.text.push(c);
                    pos = at;
                }
                Event::CData(c) => {
                    if self.stack.is_empty() {
                        return Err(nwf("character data outside a stanza"));
                    }
                    let s = std::str::from_utf8(&c).map_err(|_| nwf("invalid utf-8"))?;
                    if !valid_chars(s) {
                        return Err(nwf("invalid character"));
                    }
                    self.count(at - pos)?;
                    self.count_text(s.len())?;
                    push_text(&mut self.text, s);
                    pos = at;
                }
                Event::Start(s) => {
                    if let Some(ev) = self.start(&s, false, at - pos)? {
                        return Ok(Run::event(ev, at));
                    }
                    pos = at;
                }
                Event::Empty(s) => {
                    if let Some(ev) = self.start(&s, true, at - pos)? {
                        return Ok(Run::event(ev, at));
                    }
                    pos = at;
                }
                Event::End(e) => {
                    if let Some(ev) = self.end(e.name().as_ref(), at - pos)? {
                        // Bytes after `</stream:stream>` are ignored.
                        let consumed = if ev == StreamEvent::Close {
                            data.len()
                        } else {
                            at
                        };
                        return Ok(Run::event(ev, consumed));
                    }
                    pos = at;
                }
                Event::Decl(_) => {
                    // `<?xml?>` or `<?xml-x ...?>` is not an XML declaration (and is refused
                    // as soon as it is seen when it arrives in pieces).
                    let raw = data.get(pos..at).unwrap_or_default();
                    if !matches!(self.state, State::Prolog)
                        || self.seen_any
                        || !may_be_xml_decl(raw)
                    {
                        return Err(ParseError::RestrictedXml("processing instruction"));
                    }
                    // Held to the limit like the header (and like a declaration still arriving).
                    if at - pos > self.limits.max_stanza_bytes {
                        return Err(ParseError::PolicyViolation("stanza too large"));
                    }
                    self.seen_any = true;
                    pos = at;
                }
                Event::PI(_) => return Err(ParseError::RestrictedXml("processing instruction")),
                Event::Comment(_) => return Err(ParseError::RestrictedXml("comment")),
                Event::DocType(_) => return Err(ParseError::RestrictedXml("doctype")),
            }
        }
    }

    /// Maps a reader error at `pos` (where the failing token starts, `tail` being the bytes
    /// from there) to "wait for more bytes" or a stream error.
    fn reader_error(&self, e: &XmlError, tail: &[u8], pos: usize) -> Result<Run, ParseError> {
        match e {
            XmlError::Syntax(SyntaxError::UnclosedTag | SyntaxError::UnclosedCData) => {
                Ok(Run::more(pos, Some(Wait::Lt)))
            }
            XmlError::Syntax(SyntaxError::InvalidBangMarkup) if tail == b"<!" => {
                Ok(Run::more(pos, Some(Wait::Lt)))
            }
            XmlError::Syntax(SyntaxError::UnclosedComment) => {
                Err(ParseError::RestrictedXml("comment"))
            }
            XmlError::Syntax(SyntaxError::UnclosedDoctype) => {
                Err(ParseError::RestrictedXml("doctype"))
            }
            XmlError::Syntax(SyntaxError::UnclosedPIOrXmlDecl) => {
                if matches!(self.state, State::Prolog) && !self.seen_any && may_be_xml_decl(tail) {
                    Ok(Run::more(pos, Some(Wait::Lt)))
                } else {
                    Err(ParseError::RestrictedXml("processing instruction"))
                }
            }
            XmlError::IllFormed(IllFormedError::UnclosedReference) => {
                let rest = tail.get(1..).unwrap_or_default();
                if tail.first() == Some(&b'&')
                    && !rest.iter().any(|b| matches!(b, b';' | b'<' | b'&'))
                {
                    Ok(Run::more(pos, Some(Wait::Reference)))
                } else {
                    Err(nwf("unescaped ampersand"))
                }
            }
            XmlError::IllFormed(e) => Err(ParseError::NotWellFormed(e.to_string())),
            e => Err(ParseError::NotWellFormed(e.to_string())),
        }
    }

    /// Character data. With `partial`, the run reaches the end of the buffer: an incomplete
    /// UTF-8 sequence or a CR (which may start CRLF) at its end is left for later. Returns the
    /// bytes consumed.
    fn text_chunk(&mut self, raw: &[u8], partial: bool) -> Result<usize, ParseError> {
        let s = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(e) if partial && e.error_len().is_none() => raw
                .get(..e.valid_up_to())
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| nwf("invalid utf-8"))?,
            Err(_) => return Err(nwf("invalid utf-8")),
        };
        let s = if partial {
            s.strip_suffix('\r').unwrap_or(s)
        } else {
            s
        };
        if self.stack.is_empty() {
            if !s.bytes().all(is_xml_space) {
                return Err(nwf("character data outside a stanza"));
            }
            if !s.is_empty() && matches!(self.state, State::Prolog) {
                self.seen_any = true;
            }
            return Ok(s.len());
        }
        if !valid_chars(s) {
            return Err(nwf("invalid character"));
        }
        self.count(s.len())?;
        self.count_text(s.len())?;
        push_text(&mut self.text, s);
        Ok(s.len())
    }

    /// A start tag (`empty` for `<x/>`) of `len` bytes. Returns the header or a finished stanza.
    fn start(
        &mut self,
        s: &BytesStart<'_>,
        empty: bool,
        len: usize,
    ) -> Result<Option<StreamEvent>, ParseError> {
        match self.state {
            State::Prolog => {
                if len > self.limits.max_stanza_bytes {
                    return Err(ParseError::PolicyViolation("stanza too large"));
                }
                let (qname, attrs) = self.scope(s)?;
                let (local, uri) = resolve(&self.ns, &qname, &attrs)?;
                if local != "stream" || uri != ns::STREAM {
                    return Err(ParseError::InvalidNamespace);
                }
                let default_ns = lookup(&self.ns, "").unwrap_or_default().to_owned();
                self.root_qname = qname;
                self.state = State::Stream;
                self.seen_any = true;
                self.pending_close = empty;
                Ok(Some(StreamEvent::Open(StreamHeader { default_ns, attrs })))
            }
            State::Stream => {
                if self.stack.is_empty() {
                    self.stanza_bytes = 0;
                    self.elements = 0;
                    self.text_bytes = 0;
                    self.tape.clear();
                }
                if self.stack.len() + 1 > self.limits.max_depth {
                    return Err(ParseError::PolicyViolation("stanza too deep"));
                }
                self.elements += 1;
                if self.elements > self.tree.max_elements {
                    return Err(ParseError::PolicyViolation("too many elements"));
                }
                self.count(len)?;
                let (qname, attrs) = self.scope(s)?;
                self.flush_text();
                let ns = self.encode_start(&qname, attrs, empty)?;
                if empty {
                    self.pop_scope();
                    self.closed()
                } else {
                    self.stack.push(Open { qname, ns });
                    Ok(None)
                }
            }
            State::Closed | State::Failed(_) => Ok(None),
        }
    }

    /// An end tag of `len` bytes. Returns a finished stanza or `Close`.
    fn end(&mut self, name: &[u8], len: usize) -> Result<Option<StreamEvent>, ParseError> {
        if !matches!(self.state, State::Stream) {
            return Err(nwf("end tag outside the stream"));
        }
        let name = std::str::from_utf8(name).map_err(|_| nwf("invalid utf-8"))?;
        let Some(top) = self.stack.last() else {
            if name == &*self.root_qname {
                return Ok(Some(StreamEvent::Close));
            }
            return Err(nwf("mismatched end tag"));
        };
        if name != &*top.qname {
            return Err(nwf("mismatched end tag"));
        }
        self.count(len)?;
        self.flush_text();
        if self.stack.pop().is_none() {
            return Err(nwf("mismatched end tag"));
        }
        self.pop_scope();
        self.tape.push(OP_END);
        self.closed()
    }

    /// An element was closed: when it was the stanza, builds it from the tape.
    fn closed(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        if !self.stack.is_empty() {
            return Ok(None);
        }
        self.stanza_bytes = 0;
        let el = build(&self.tape).ok_or_else(|| nwf("stanza could not be rebuilt"))?;
        self.tape.clear();
        if self.tape.capacity() > 16 * 1024 {
            // Do not keep a large stanza's tape for the small ones that follow.
            self.tape = Vec::new();
        }
        Ok(Some(StreamEvent::Stanza(el)))
    }

    fn flush_text(&mut self) {
        if !self.text.is_empty() && !self.stack.is_empty() {
            self.tape.push(OP_TEXT);
            put_str(&mut self.tape, &self.text);
            self.text.clear();
        }
    }

    fn pop_scope(&mut self) {
        if let Some(mark) = self.ns_marks.pop() {
            self.ns.truncate(mark);
        }
    }

    /// Writes a start tag to the tape, its name resolved in the current scope. Returns where
    /// its namespace URI is in the tape.
    fn encode_start(
        &mut self,
        qname: &str,
        attrs: Vec<(String, String)>,
        empty: bool,
    ) -> Result<(usize, usize), ParseError> {
        let (local, uri) = resolve(&self.ns, qname, &attrs)?;
        let parent = self.stack.last().map(|o| o.ns);
        let same = parent.filter(|&(a, b)| self.tape.get(a..b) == Some(uri.as_bytes()));
        let mut op = OP_START;
        if same.is_some() {
            op |= SAME_NS;
        }
        if !attrs.is_empty() {
            op |= HAS_ATTRS;
        }
        if empty {
            op |= EMPTY;
        }
        self.tape.push(op);
        put_str(&mut self.tape, local);
        let ns = match same {
            Some(ns) => ns,
            None => {
                put_len(&mut self.tape, uri.len());
                let at = self.tape.len();
                self.tape.extend_from_slice(uri.as_bytes());
                (at, self.tape.len())
            }
        };
        if !attrs.is_empty() {
            put_len(&mut self.tape, attrs.len());
            for (k, v) in &attrs {
                put_str(&mut self.tape, k);
                put_str(&mut self.tape, v);
            }
        }
        Ok(ns)
    }

    /// Opens the namespace scope of a start tag (its declarations) and checks its name and
    /// attributes. Returns its name as written and its other attributes, unescaped.
    fn scope(&mut self, s: &BytesStart<'_>) -> Result<(Box<str>, Attrs), ParseError> {
        let name = s.name();
        let qname = std::str::from_utf8(name.as_ref()).map_err(|_| nwf("invalid utf-8"))?;
        check_qname(qname)?;
        let mark = self.ns.len();
        let mut attrs: Vec<(String, String)> = Vec::new();
        for (n, attr) in s.attributes().enumerate() {
            if n >= self.limits.max_attrs {
                return Err(ParseError::PolicyViolation("too many attributes"));
            }
            let attr = attr.map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
            let key = std::str::from_utf8(attr.key.as_ref()).map_err(|_| nwf("invalid utf-8"))?;
            check_qname(key)?;
            let value = attribute_value(&attr.value)?;
            if key == "xmlns" {
                self.ns.push(("".into(), value.into()));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                if value.is_empty() || prefix == "xmlns" || (prefix == "xml") != (value == ns::XML)
                {
                    return Err(nwf("invalid namespace declaration"));
                }
                self.ns.push((prefix.into(), value.into()));
            } else {
                attrs.push((key.to_owned(), value));
            }
        }
        self.ns_marks.push(mark);
        Ok((qname.into(), attrs))
    }
}

/// Attributes as (name as written, unescaped value).
type Attrs = Vec<(String, String)>;

/// The innermost declaration of a namespace prefix ("" for the default namespace).
fn lookup<'a>(scope: &'a [(Box<str>, Box<str>)], prefix: &str) -> Option<&'a str> {
    if prefix == "xml" {
        return Some(ns::XML);
    }
    scope
        .iter()
        .rev()
        .find(|(p, _)| &**p == prefix)
        .map(|(_, uri)| &**uri)
}

/// Resolves an element name in `scope`, and checks that every prefixed attribute's prefix is
/// declared. Returns the local name and the namespace URI.
fn resolve<'a, 'q>(
    scope: &'a [(Box<str>, Box<str>)],
    qname: &'q str,
    attrs: &[(String, String)],
) -> Result<(&'q str, &'a str), ParseError> {
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, qname),
    };
    let uri = match prefix {
        None => lookup(scope, "").unwrap_or_default(),
        Some(p) => lookup(scope, p).ok_or(ParseError::BadNamespacePrefix)?,
    };
    for (k, _) in attrs {
        if let Some((p, _)) = k.split_once(':')
            && lookup(scope, p).is_none()
        {
            return Err(ParseError::BadNamespacePrefix);
        }
    }
    Ok((local, uri))
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A character XML 1.0 allows (`Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10_FFFF)
}

/// True when every character of `s` is an XML 1.0 `Char` (UTF-8 already excludes surrogates;
/// this rejects C0 controls other than tab, LF and CR, and U+FFFE / U+FFFF).
fn valid_chars(s: &str) -> bool {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c < 0x20 {
            if !matches!(c, b'\t' | b'\n' | b'\r') {
                return false;
            }
        } else if c == 0xEF
            && b.get(i + 1) == Some(&0xBF)
            && matches!(b.get(i + 2), Some(0xBE | 0xBF))
        {
            return false;
        }
    }
    true
}

/// Appends character data with XML end-of-line handling (CRLF and lone CR become LF).
fn push_text(out: &mut String, s: &str) {
    if !s.contains('\r') {
        out.push_str(s);
        return;
    }
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
}

/// A plausible start of the XML declaration `<?xml ...?>`.
fn may_be_xml_decl(tail: &[u8]) -> bool {
    const DECL: &[u8] = b"<?xml";
    if tail.len() <= DECL.len() {
        DECL.starts_with(tail)
    } else {
        tail.starts_with(DECL) && tail.get(DECL.len()).is_some_and(|&b| is_xml_space(b))
    }
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_alphanumeric() || matches!(c, '-' | '.')
}

fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// An element or attribute name: an NCName, or two joined by one `:`.
fn check_qname(name: &str) -> Result<(), ParseError> {
    let ok = match name.split_once(':') {
        Some((p, l)) => is_ncname(p) && is_ncname(l),
        None => is_ncname(name),
    };
    if ok { Ok(()) } else { Err(nwf("invalid name")) }
}

/// Resolves the inside of `&...;`: the five predefined entities and character references.
fn resolve_reference(name: &[u8]) -> Result<char, ParseError> {
    match name {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"quot" => Ok('"'),
        b"apos" => Ok('\''),
        [b'#', rest @ ..] => {
            let (radix, digits) = match rest {
                [b'x', hex @ ..] => (16, hex),
                dec => (10, dec),
            };
            let digits = std::str::from_utf8(digits).map_err(|_| nwf("bad character reference"))?;
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return Err(nwf("bad character reference"));
            }
            let c = u32::from_str_radix(digits, radix)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| nwf("bad character reference"))?;
            if !is_xml_char(c) {
                return Err(nwf("invalid character"));
            }
            Ok(c)
        }
        _ => match std::str::from_utf8(name) {
            Ok(n) if is_ncname(n) => Err(ParseError::RestrictedXml("entity reference")),
            _ => Err(nwf("bad reference")),
        },
    }
}

/// Unescapes and normalizes an attribute value as written between its quotes.
fn attribute_value(raw: &[u8]) -> Result<String, ParseError> {
    let s = std::str::from_utf8(raw).map_err(|_| nwf("invalid utf-8"))?;
    if s.contains('<') {
        return Err(nwf("'<' in attribute value"));
    }
    if !valid_chars(s) {
        return Err(nwf("invalid character"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        push_attr_text(&mut out, rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        let end = after.find(';').ok_or_else(|| nwf("unescaped ampersand"))?;
        out.push(resolve_reference(
            after.get(..end).unwrap_or_default().as_bytes(),
        )?);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    push_attr_text(&mut out, rest);
    Ok(out)
}

/// Attribute-value normalization (XML 1.0 §3.3.3): CRLF, CR, LF and tab become a space.
fn push_attr_text(out: &mut String, s: &str) {
    if !s.bytes().any(|b| matches!(b, b'\t' | b'\n' | b'\r')) {
        out.push_str(s);
        return;
    }
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(' ');
            }
            '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
        xml:lang='en'>";

    /// A header that fits small limits.
    const SHORT_HEADER: &str =
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

    fn transcript() -> Vec<u8> {
        let mut s = String::new();
        s.push('\u{FEFF}');
        s.push_str(HEADER);
        s.push_str("\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n ");
        s.push_str(
            "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism='SCRAM-SHA-1'>\
             biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
        );
        s.push_str(
            "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>balcony</resource></bind></iq> \t\r\n",
        );
        s.push_str(
            "<message to='romeo@example.net' type='chat' xml:lang='en' id='a&amp;b&#x27;c'>\
             <body>Wherefore art thou, Ромео? &lt;3 &amp; caf&#xE9; &#233;\r\nline2\rline3</body>\
             <x:delay xmlns:x='urn:xmpp:delay' stamp='2002-09-10T23:08:25Z'/>\
             <thread>t1</thread ></message>",
        );
        s.push_str(
            "<presence><show>away</show><status>in a &quot;meeting&quot; \u{1F600}</status>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/>\
             <x xmlns=''><![CDATA[<cdata & stuff>]]></x></presence>",
        );
        s.push_str(
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'><item jid='a@b' \
             name='A\tB\nC' note=\"1>0 '\"/></query></iq>",
        );
        s.push_str(
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        );
        s.push_str(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>gone</text></stream:error>",
        );
        s.push_str("  </stream:stream>trailing <garbage & stuff");
        s.into_bytes()
    }

    fn parser() -> StreamParser {
        StreamParser::new(Limits::default())
    }

    /// Feeds the chunks, collecting events until an error.
    fn run_chunks<'a>(
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
                    Err(e) => return (events, Some(e)),
                }
            }
        }
        (events, None)
    }

    fn parse_all(data: &[u8]) -> (Vec<StreamEvent>, Option<ParseError>) {
        run_chunks(&mut parser(), [data])
    }

    fn stanzas(events: &[StreamEvent]) -> Vec<&Element> {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Stanza(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Parses `HEADER` + `body` and returns the error (or panics if there is none).
    fn error_of(body: &[u8]) -> ParseError {
        let mut data = HEADER.as_bytes().to_vec();
        data.extend_from_slice(body);
        let (_, err) = parse_all(&data);
        err.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(body)))
    }

    fn first_stanza(body: &str) -> Element {
        let data = format!("{HEADER}{body}");
        let (events, err) = parse_all(data.as_bytes());
        assert_eq!(err, None, "{body}");
        stanzas(&events)
            .first()
            .map(|e| (*e).clone())
            .expect("a stanza")
    }

    /// Found by fuzzing the merged tree: a tab, newline or carriage return in an attribute
    /// value (from a character reference) was written literally and read back as a space
    /// (attribute-value normalization); a carriage return in text came back as a newline.
    #[test]
    fn whitespace_references_survive_a_round_trip() {
        let m =
            first_stanza("<message id='a&amp;b&#9;c&#10;d&#13;e'><body>x&#13;y</body></message>");
        assert_eq!(m.get_attr("id"), Some("a&b\tc\nd\re"));
        let again = first_stanza(&String::from_utf8_lossy(&m.to_bytes_in("jabber:client")));
        assert_eq!(again, m);
        assert_eq!(
            again.get_child("body", "jabber:client").map(Element::text),
            Some("x\ry".to_owned())
        );
    }

    #[test]
    fn full_session_whole() {
        let (events, err) = parse_all(&transcript());
        assert_eq!(err, None);
        assert_eq!(events.len(), 10);
        let StreamEvent::Open(h) = &events[0] else {
            panic!("no header")
        };
        assert_eq!(h.default_ns, "jabber:client");
        assert_eq!(h.get("to"), Some("example.com"));
        assert_eq!(h.get("version"), Some("1.0"));
        assert_eq!(h.get("xml:lang"), Some("en"));
        assert_eq!(h.attrs.len(), 3);
        assert_eq!(events.last(), Some(&StreamEvent::Close));

        let st = stanzas(&events);
        assert!(st[0].is("starttls", ns::TLS));
        assert!(st[1].is("auth", ns::SASL));
        assert_eq!(st[1].get_attr("mechanism"), Some("SCRAM-SHA-1"));
        assert!(st[1].text().starts_with("biws"));
        assert!(st[2].is("iq", ns::CLIENT));
        let bind = st[2].get_child("bind", ns::BIND).unwrap();
        assert_eq!(
            bind.get_child("resource", ns::BIND).unwrap().text(),
            "balcony"
        );

        let msg = st[3];
        assert!(msg.is("message", ns::CLIENT));
        assert_eq!(msg.get_attr("id"), Some("a&b'c"));
        assert_eq!(msg.get_attr("xml:lang"), Some("en"));
        assert_eq!(
            msg.get_child("body", ns::CLIENT).unwrap().text(),
            "Wherefore art thou, Ромео? <3 & café é\nline2\nline3"
        );
        let delay = msg.get_child("delay", ns::DELAY).unwrap();
        assert_eq!(delay.name(), "delay");
        assert_eq!(delay.get_attr("stamp"), Some("2002-09-10T23:08:25Z"));
        // The prefix declaration is not an attribute.
        assert_eq!(delay.attrs().count(), 1);
        assert_eq!(msg.get_child("thread", ns::CLIENT).unwrap().text(), "t1");

        let pres = st[4];
        assert_eq!(
            pres.get_child("status", ns::CLIENT).unwrap().text(),
            "in a \"meeting\" 😀"
        );
        assert!(
            pres.get_child("c", "http://jabber.org/protocol/caps")
                .is_some()
        );
        assert_eq!(pres.get_child("x", "").unwrap().text(), "<cdata & stuff>");

        let item = st[5]
            .get_child("query", ns::ROSTER)
            .unwrap()
            .get_child("item", ns::ROSTER);
        assert_eq!(item.unwrap().get_attr("name"), Some("A B C"));
        assert_eq!(item.unwrap().get_attr("note"), Some("1>0 '"));

        assert!(st[6].is("features", ns::STREAM));
        assert!(st[6].get_child("bind", ns::BIND).is_some());
        assert!(st[7].is("error", ns::STREAM));
        assert!(st[7].get_child("conflict", ns::STREAMS_ERR).is_some());
        assert_eq!(
            st[7].get_child("text", ns::STREAMS_ERR).unwrap().text(),
            "gone"
        );
    }

    #[test]
    fn full_session_one_byte_at_a_time() {
        let data = transcript();
        let whole = parse_all(&data);
        let mut p = parser();
        let bytes = run_chunks(&mut p, data.chunks(1));
        assert_eq!(bytes, whole);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn full_session_at_every_split_point() {
        let data = transcript();
        let whole = parse_all(&data);
        for i in 0..=data.len() {
            let (a, b) = data.split_at(i);
            assert_eq!(run_chunks(&mut parser(), [a, b]), whole, "split at {i}");
        }
        // And in three pieces around a multi-byte character and a CRLF.
        let cyr = data.windows(2).position(|w| w == "Р".as_bytes()).unwrap();
        let crlf = cyr + data[cyr..].windows(2).position(|w| w == b"\r\n").unwrap();
        for (i, j) in [(cyr + 1, cyr + 2), (crlf + 1, crlf + 2), (cyr, crlf + 1)] {
            let parts = [&data[..i], &data[i..j], &data[j..]];
            assert_eq!(run_chunks(&mut parser(), parts), whole);
        }
    }

    #[test]
    fn prefixes_and_header_namespaces() {
        let header = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
                      xmlns:db='jabber:server:dialback'>";
        let body = "<db:result from='a' to='b'>key</db:result>\
                    <foo:x xmlns:foo='urn:u' foo:attr='1'><foo:y/><z/></foo:x>\
                    <message xmlns:foo='urn:v'><foo:x/></message>";
        let (events, err) = parse_all(format!("{header}{body}").as_bytes());
        assert_eq!(err, None);
        let StreamEvent::Open(h) = &events[0] else {
            panic!()
        };
        assert_eq!(h.default_ns, "jabber:server");
        assert!(h.attrs.is_empty());
        let st = stanzas(&events);
        assert!(st[0].is("result", "jabber:server:dialback"));
        assert_eq!(st[0].text(), "key");
        assert!(st[1].is("x", "urn:u"));
        assert_eq!(st[1].get_attr("foo:attr"), Some("1"));
        assert!(st[1].get_child("y", "urn:u").is_some());
        assert!(st[1].get_child("z", "jabber:server").is_some());
        // A prefix declared on one stanza does not leak into the next.
        assert!(st[2].get_child("x", "urn:v").is_some());
        assert_eq!(error_of(b"<foo:x/>"), ParseError::BadNamespacePrefix);
        assert_eq!(
            error_of(b"<m xmlns:a='u'/><a:x/>"),
            ParseError::BadNamespacePrefix
        );
        assert_eq!(
            error_of(b"<m><a:x xmlns:b='u'/></m>"),
            ParseError::BadNamespacePrefix
        );
        assert_eq!(
            error_of(b"<m bad:attr='1'/>"),
            ParseError::BadNamespacePrefix
        );
        assert!(matches!(
            error_of(b"<m xmlns:a=''/>"),
            ParseError::NotWellFormed(_)
        ));
        assert!(matches!(
            error_of(b"<m xmlns:xml='urn:x'/>"),
            ParseError::NotWellFormed(_)
        ));
        assert_eq!(
            first_stanza("<m xml:lang='de'/>").get_attr("xml:lang"),
            Some("de")
        );
    }

    #[test]
    fn serialized_stanza_reparses_identically() {
        let msg = first_stanza(
            "<message to='a@b'><body>x &amp; y &lt; z</body><x:e xmlns:x='urn:e' k='&quot;'/></message>",
        );
        let bytes = msg.to_bytes_in(ns::CLIENT);
        let again = first_stanza(std::str::from_utf8(&bytes).unwrap());
        assert_eq!(again, msg);
    }

    #[test]
    fn root_must_be_stream_in_streams_namespace() {
        let bad = [
            "<stream:stream xmlns:stream='urn:wrong'>",
            "<stream xmlns='jabber:client'>",
            "<stream:foo xmlns:stream='http://etherx.jabber.org/streams'>",
            "<message xmlns='jabber:client'/>",
        ];
        for h in bad {
            assert_eq!(
                parse_all(h.as_bytes()).1,
                Some(ParseError::InvalidNamespace),
                "{h}"
            );
        }
        assert_eq!(
            parse_all(b"<stream:stream xmlns='jabber:client'>").1,
            Some(ParseError::BadNamespacePrefix)
        );
        // The streams namespace as the default namespace is acceptable XML.
        let (ev, err) =
            parse_all(b"<stream xmlns='http://etherx.jabber.org/streams'><x/></stream>");
        assert_eq!(err, None);
        assert_eq!(ev.len(), 3);
        assert!(stanzas(&ev)[0].is("x", ns::STREAM));
    }

    #[test]
    fn empty_root_opens_and_closes() {
        let (ev, err) = parse_all(
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'/>",
        );
        assert_eq!(err, None);
        assert!(matches!(ev[0], StreamEvent::Open(_)));
        assert_eq!(ev[1], StreamEvent::Close);
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn restricted_xml_is_rejected() {
        let comment = ParseError::RestrictedXml("comment");
        let pi = ParseError::RestrictedXml("processing instruction");
        let entity = ParseError::RestrictedXml("entity reference");
        let doctype = ParseError::RestrictedXml("doctype");
        assert_eq!(error_of(b"<!-- hi -->"), comment);
        assert_eq!(error_of(b"<message><!-- hi --></message>"), comment);
        // Detected before the comment is complete.
        assert_eq!(error_of(b"<message><!-- never ending"), comment);
        assert_eq!(error_of(b"<message><?pi data?></message>"), pi);
        assert_eq!(error_of(b"<?xml version='1.0'?>"), pi);
        assert_eq!(error_of(b"<message><body>&foo;</body></message>"), entity);
        assert_eq!(error_of(b"<message a='x&foo;y'/>"), entity);
        assert_eq!(error_of(b"<!DOCTYPE x>"), doctype);
        assert_eq!(
            parse_all(b"<!DOCTYPE stream [<!ENTITY x 'y'>]>").1,
            Some(doctype)
        );
        assert_eq!(parse_all(b"<!-- c --><stream:stream/>").1, Some(comment));
        assert_eq!(parse_all(b"<?php x?>").1, Some(pi));
        // Split anywhere, the entity reference is still caught.
        let mut data = HEADER.as_bytes().to_vec();
        data.extend_from_slice(b"<m>a&foo;b</m>");
        for i in 0..data.len() {
            let (a, b) = data.split_at(i);
            let (_, err) = run_chunks(&mut parser(), [a, b]);
            assert_eq!(err, Some(entity.clone()), "split at {i}");
        }
    }

    #[test]
    fn not_well_formed_input_is_rejected() {
        let cases: &[&[u8]] = &[
            b"<message></presence>",
            b"<message><body></message></body>",
            b"</message>",
            b"hello",
            b"<m>&#0;</m>",
            b"<m>&#x1;</m>",
            b"<m>&#xD800;</m>",
            b"<m>&#xFFFE;</m>",
            b"<m>&#;</m>",
            b"<m>&#xZZ;</m>",
            b"<m>&#99999999999;</m>",
            b"<m a='&#1;'/>",
            b"<m>\x01</m>",
            b"<m>\xEF\xBF\xBF</m>",
            b"<m a='\x02'/>",
            b"<m>a & b</m>",
            b"<m a='a & b'/>",
            b"<m a='<'/>",
            b"<m a='1' a='2'/>",
            b"<m a/>",
            b"<1m/>",
            b"<m>\xff</m>",
            b"<m a='\xc3\x28'/>",
            b"&amp;",
            b"<![CDATA[x]]>",
            b"</stream:foo>",
            b"<!x>",
        ];
        for body in cases {
            let err = error_of(body);
            assert!(
                matches!(err, ParseError::NotWellFormed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err.condition(), StreamErrorCondition::NotWellFormed);
        }
        assert!(matches!(
            parse_all(b"</stream:stream>").1,
            Some(ParseError::NotWellFormed(_))
        ));
        assert!(matches!(
            parse_all(b"junk").1,
            Some(ParseError::NotWellFormed(_))
        ));
    }

    #[test]
    fn invalid_utf8_split_across_feeds() {
        let mut p = parser();
        let (ev, err) = run_chunks(
            &mut p,
            [HEADER.as_bytes(), b"<m><body>ab\xC3", b"\xA9</body></m>"],
        );
        assert_eq!(err, None);
        assert_eq!(
            stanzas(&ev)[0]
                .get_child("body", ns::CLIENT)
                .unwrap()
                .text(),
            "abé"
        );

        let mut p = parser();
        let (_, err) = run_chunks(
            &mut p,
            [HEADER.as_bytes(), b"<m><body>ab\xC3", b"\x28</body></m>"],
        );
        assert!(matches!(err, Some(ParseError::NotWellFormed(_))));
        // Errors are sticky, and later bytes change nothing.
        p.feed(b"<m/>");
        assert_eq!(p.next_event(), Err(err.unwrap()));
    }

    #[test]
    fn whitespace_keepalives_are_skipped() {
        let mut p = parser();
        let (ev, err) = run_chunks(
            &mut p,
            [HEADER.as_bytes(), b" ", b"\n", b"\t \r\n", b"<m/>", b" "],
        );
        assert_eq!(err, None);
        assert_eq!(ev.len(), 2);
        assert_eq!(p.next_event(), Ok(None));
        // Whitespace inside a stanza is kept.
        let m = first_stanza("<m> <b>x</b> </m>");
        assert_eq!(m.nodes().len(), 3);
    }

    #[test]
    fn stanza_size_limit() {
        let limits = Limits {
            max_stanza_bytes: 100,
            ..Limits::default()
        };
        let big = format!("<m><b>{}</b></m>", "x".repeat(100));
        // Whole in one feed.
        let mut p = StreamParser::new(limits.clone());
        let (_, err) = run_chunks(&mut p, [SHORT_HEADER.as_bytes(), big.as_bytes()]);
        assert_eq!(err, Some(ParseError::PolicyViolation("stanza too large")));
        // One byte at a time.
        let mut p = StreamParser::new(limits.clone());
        let (_, err) = run_chunks(
            &mut p,
            [SHORT_HEADER.as_bytes()]
                .into_iter()
                .chain(big.as_bytes().chunks(1)),
        );
        assert_eq!(err, Some(ParseError::PolicyViolation("stanza too large")));
        assert_eq!(
            err.unwrap().condition(),
            StreamErrorCondition::PolicyViolation
        );

        // A never-ending start tag or text is caught long before it ends.
        for prefix in ["<m a='", "<m>", "<m><![CDATA[", "<m>&#x"] {
            let mut p = StreamParser::new(limits.clone());
            p.feed(SHORT_HEADER.as_bytes());
            assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
            p.feed(prefix.as_bytes());
            let mut fed = prefix.len();
            let err = loop {
                match p.next_event() {
                    Ok(None) => {}
                    other => break other,
                }
                p.feed(b"0000000000");
                fed += 10;
                assert!(fed < 1000, "{prefix}: no error after {fed} bytes");
            };
            assert_eq!(
                err,
                Err(ParseError::PolicyViolation("stanza too large")),
                "{prefix}"
            );
            assert!(fed <= 111, "{prefix}: {fed}");
        }

        // Many small stanzas in one buffer are fine, even when together over the limit.
        let small = "<m><b>0123456789</b></m>".repeat(50);
        let mut p = StreamParser::new(limits.clone());
        let (ev, err) = run_chunks(&mut p, [SHORT_HEADER.as_bytes(), small.as_bytes()]);
        assert_eq!(err, None);
        assert_eq!(ev.len(), 51);
        // Exactly at the limit is allowed.
        let exact = format!("<m>{}</m>", "y".repeat(100 - 7));
        let (ev, err) = run_chunks(
            &mut StreamParser::new(limits),
            [SHORT_HEADER.as_bytes(), exact.as_bytes()],
        );
        assert_eq!(err, None);
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn header_size_is_limited() {
        let limits = Limits {
            max_stanza_bytes: 64,
            ..Limits::default()
        };
        let mut p = StreamParser::new(limits.clone());
        p.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='");
        p.feed(&[b'x'; 100]);
        assert_eq!(
            p.next_event(),
            Err(ParseError::PolicyViolation("stanza too large"))
        );
        // Also when it arrives complete in one piece.
        let header = format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
            "x".repeat(100)
        );
        let (_, err) = run_chunks(&mut StreamParser::new(limits), [header.as_bytes()]);
        assert_eq!(err, Some(ParseError::PolicyViolation("stanza too large")));
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let ok = format!("{HEADER}<a><b><c/></b></a>");
        let (ev, err) = run_chunks(&mut StreamParser::new(limits.clone()), [ok.as_bytes()]);
        assert_eq!(err, None);
        assert_eq!(ev.len(), 2);
        let deep = format!("{HEADER}<a><b><c><d/></c></b></a>");
        let (_, err) = run_chunks(&mut StreamParser::new(limits), [deep.as_bytes()]);
        assert_eq!(err, Some(ParseError::PolicyViolation("stanza too deep")));
    }

    #[test]
    fn attribute_limit() {
        let limits = Limits {
            max_attrs: 3,
            ..Limits::default()
        };
        let header =
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
        let ok = format!("{header}<a x='1' y='2' xmlns:p='u'/>");
        let (ev, err) = run_chunks(&mut StreamParser::new(limits.clone()), [ok.as_bytes()]);
        assert_eq!(err, None);
        assert_eq!(ev.len(), 2);
        let many = format!("{header}<a><b w='0' x='1' y='2' z='3'/></a>");
        let (_, err) = run_chunks(&mut StreamParser::new(limits.clone()), [many.as_bytes()]);
        assert_eq!(
            err,
            Some(ParseError::PolicyViolation("too many attributes"))
        );
        // The header counts too.
        let (_, err) = run_chunks(&mut StreamParser::new(limits), [HEADER.as_bytes()]);
        assert_eq!(
            err,
            Some(ParseError::PolicyViolation("too many attributes"))
        );
    }

    #[test]
    fn bytes_after_close_are_ignored() {
        let mut p = parser();
        let data = format!("{HEADER}<m/></stream:stream><m/><<<&&&");
        let (ev, err) = run_chunks(&mut p, [data.as_bytes()]);
        assert_eq!(err, None);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[2], StreamEvent::Close);
        p.feed(b"<more/>");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn reset_after_starttls() {
        let mut p = parser();
        p.feed(HEADER.as_bytes());
        p.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01");
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
        assert!(
            matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(s))) if s.is("starttls", ns::TLS))
        );
        // The bytes after `<starttls/>` belong to the TLS handshake, never to this parser.
        assert_eq!(p.buffered(), 3);
        p.reset();
        assert_eq!(p.buffered(), 0);
        let header2 = HEADER.replace("jabber:client", "jabber:server");
        let (ev, err) = run_chunks(&mut p, [header2.as_bytes(), b"<m/>"]);
        assert_eq!(err, None);
        let StreamEvent::Open(h) = &ev[0] else {
            panic!()
        };
        assert_eq!(h.default_ns, "jabber:server");
        assert!(stanzas(&ev)[0].is("m", "jabber:server"));

        // Reset also recovers a failed parser.
        let mut p = parser();
        let (_, err) = run_chunks(&mut p, [b"junk".as_slice()]);
        assert!(err.is_some());
        p.reset();
        let (ev, err) = run_chunks(&mut p, [HEADER.as_bytes()]);
        assert_eq!((ev.len(), err), (1, None));
    }

    #[test]
    fn buffered_and_shrink() {
        let mut p = parser();
        p.feed(HEADER.as_bytes());
        assert_eq!(p.buffered(), HEADER.len());
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
        assert_eq!(p.buffered(), 0);
        let big = format!("<m><b>{}</b></m>", "z".repeat(50_000));
        p.feed(big.as_bytes());
        p.feed(b"<m");
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.buffered(), 2);
        assert!(p.buf.capacity() >= 50_000);
        p.shrink();
        assert!(p.buf.capacity() < 64);
        assert_eq!(p.buffered(), 2);
        p.feed(b"/>");
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
        // A partly received stanza counts as buffered.
        p.feed(b"<m><b>abc");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.buffered(), 9);
        assert_eq!(p.text, "abc");
        // A token cut short is not rescanned until a byte that can end it arrives.
        p.feed(b"</b");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.wait, Some((3, Wait::Tag(Quote::Outside))));
        p.feed(b"  ");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.wait, Some((5, Wait::Tag(Quote::Outside))));
        p.feed(b"></m>");
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(s)))
            if s.get_child("b", ns::CLIENT).map(Element::text).as_deref() == Some("abc")));
        assert!(p.wait.is_none());
        assert!(
            std::mem::size_of::<StreamParser>() <= 320,
            "{}",
            std::mem::size_of::<StreamParser>()
        );
    }

    #[test]
    fn xml_declaration_and_bom() {
        for prefix in [
            "",
            "\u{FEFF}",
            "<?xml version='1.0' encoding='UTF-8'?>",
            "\u{FEFF}<?xml version='1.0'?>\n",
        ] {
            let data =
                format!("{prefix}<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
            let (ev, err) = parse_all(data.as_bytes());
            assert_eq!((ev.len(), err), (1, None), "{prefix:?}");
        }
        assert_eq!(
            parse_all(b"\n<?xml version='1.0'?>").1,
            Some(ParseError::RestrictedXml("processing instruction"))
        );
        // U+FEFF inside character data is kept even where a buffer starts with it.
        let mut p = parser();
        let (ev, err) = run_chunks(
            &mut p,
            [HEADER.as_bytes(), b"<m>a", "\u{FEFF}b</m>".as_bytes()],
        );
        assert_eq!(err, None);
        assert_eq!(stanzas(&ev)[0].text(), "a\u{FEFF}b");
    }

    /// Found by fuzzing (fuzz/corpus/stream_parser/crash-oversized-end-tag): an oversized
    /// token that is also wrong in another way (an end tag before the stream, a mismatched end
    /// tag, a reference outside a stanza) was `<not-well-formed/>` when it arrived whole but
    /// `<policy-violation/>` when it arrived in pieces. The size limit now comes first either way.
    #[test]
    fn oversized_bad_token_gets_the_same_error_however_split() {
        let limits = Limits {
            max_stanza_bytes: 100,
            ..Limits::default()
        };
        let long = "z>".repeat(60);
        let cases = [
            // Before the stream header (the quote keeps the `>`s inside the tag).
            format!("</x y='{long}'>"),
            // A mismatched end tag inside a stanza.
            format!("{SHORT_HEADER}<m></n a='{long}'>"),
            // A reference outside a stanza.
            format!("{SHORT_HEADER}&{};", "a".repeat(120)),
        ];
        for case in &cases {
            for size in [case.len(), 1, 7] {
                let (_, err) = run_chunks(&mut parser_with(&limits), case.as_bytes().chunks(size));
                assert_eq!(
                    err,
                    Some(ParseError::PolicyViolation("stanza too large")),
                    "{case} in chunks of {size}"
                );
            }
        }
    }

    /// Found by fuzzing (fuzz/corpus/stream_parser/crash-double-bom, crash-feff-desync): a
    /// U+FEFF at the start of a run was dropped by the reader, which also shifted the parser's
    /// positions (later bytes were cut mid-character); a second byte order mark was accepted
    /// as an opening one when it arrived alone. After the first, U+FEFF is character data.
    #[test]
    fn second_byte_order_mark_is_refused_however_split() {
        let data = format!("\u{FEFF}\u{FEFF}{SHORT_HEADER}");
        for size in [data.len(), 3, 1, 4] {
            let (events, err) = run_chunks(&mut parser(), data.as_bytes().chunks(size));
            assert_eq!(events, [], "chunks of {size}");
            assert_eq!(
                err.map(|e| e.condition()),
                Some(StreamErrorCondition::NotWellFormed),
                "chunks of {size}"
            );
        }
        // Inside a stanza, U+FEFF is character data, however many and however split (the
        // reader would drop one at the start of a run and lose track of positions).
        let body = "<m>a\u{FEFF}\u{FEFF}\u{FEFF}b</m>";
        let data = format!("{SHORT_HEADER}{body}");
        for size in [data.len(), 1, 2, 4, 5] {
            let (events, err) = run_chunks(&mut parser(), data.as_bytes().chunks(size));
            assert_eq!(err, None, "chunks of {size}");
            assert_eq!(
                stanzas(&events).first().map(|m| m.text()).as_deref(),
                Some("a\u{FEFF}\u{FEFF}\u{FEFF}b"),
                "chunks of {size}"
            );
        }
        // One is fine, also on its own.
        let one = format!("\u{FEFF}{SHORT_HEADER}");
        for size in [one.len(), 3, 1] {
            let (events, err) = run_chunks(&mut parser(), one.as_bytes().chunks(size));
            assert_eq!((events.len(), err), (1, None), "chunks of {size}");
        }
    }

    /// Found by fuzzing (fuzz/corpus/stream_parser/crash-xml-pi): `<?xml?>` was taken as the
    /// XML declaration when it arrived whole, and refused when it arrived in pieces.
    #[test]
    fn xml_named_pi_is_not_a_declaration() {
        for pi in ["<?xml?>", "<?xml-stylesheet href='a'?>"] {
            let data = format!("{pi}{SHORT_HEADER}");
            for size in [data.len(), 1, 6] {
                let (events, err) = run_chunks(&mut parser(), data.as_bytes().chunks(size));
                assert_eq!(events, [], "{pi} in chunks of {size}");
                assert_eq!(
                    err,
                    Some(ParseError::RestrictedXml("processing instruction")),
                    "{pi} in chunks of {size}"
                );
            }
        }
    }

    /// Found by fuzzing (fuzz/corpus/stream_parser/crash-long-xml-decl): an XML declaration
    /// over the size limit was accepted when it arrived whole.
    #[test]
    fn xml_declaration_is_held_to_the_size_limit() {
        let limits = Limits {
            max_stanza_bytes: 64,
            ..Limits::default()
        };
        let decl = format!("<?xml version='1.0' x='{}'?>", "y".repeat(60));
        for size in [decl.len(), 1, 9] {
            let (_, err) = run_chunks(&mut parser_with(&limits), decl.as_bytes().chunks(size));
            assert_eq!(
                err,
                Some(ParseError::PolicyViolation("stanza too large")),
                "chunks of {size}"
            );
        }
    }

    fn parser_with(limits: &Limits) -> StreamParser {
        StreamParser::new(limits.clone())
    }

    /// Feeds `prefix`, then `body` one byte at a time, then `suffix`; returns the events, the
    /// error, the bytes fed and the bytes the parser scanned.
    fn trickle(
        prefix: &[u8],
        body: &[u8],
        suffix: &[u8],
    ) -> (Vec<StreamEvent>, Option<ParseError>, usize, u64) {
        let mut p = roomy();
        let chunks = [prefix].into_iter().chain(body.chunks(1)).chain([suffix]);
        let (ev, err) = run_chunks(&mut p, chunks);
        (
            ev,
            err,
            prefix.len() + body.len() + suffix.len(),
            p.scanned(),
        )
    }

    /// A parser with room for big tests, and the bound tree limits.
    fn roomy() -> StreamParser {
        StreamParser::new(Limits {
            max_stanza_bytes: 1 << 20,
            ..Limits::default()
        })
        .with_tree_limits(TreeLimits {
            max_elements: 1 << 20,
            max_text_bytes: 1 << 20,
            max_held_bytes: 4 << 20,
        })
    }

    fn with_tree(tree: TreeLimits) -> StreamParser {
        StreamParser::new(Limits::default()).with_tree_limits(tree)
    }

    /// What a trickle case feeds: name, prefix, the body fed byte by byte, suffix.
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);

    #[test]
    fn work_is_linear_for_tokens_trickled_byte_by_byte() {
        let n = 200_000;
        let gts = ">".repeat(n);
        let header = SHORT_HEADER.as_bytes();
        // A quoted attribute value full of `>`, the CDATA section full of `]>`, and an XML
        // declaration full of `>`, each fed one byte at a time: the tokenizer must not rescan
        // the pending token at every `>`.
        let attr = format!("{SHORT_HEADER}<m a='");
        let double = format!("<m a=\"{gts}\"/>");
        let cdata = format!("{SHORT_HEADER}<m><![CDATA[");
        let cdata_body = "]>".repeat(n / 2);
        let cases: [Case<'_>; 4] = [
            ("attribute", attr.as_bytes(), gts.as_bytes(), b"'/>"),
            ("attribute (double quotes)", header, double.as_bytes(), b""),
            ("cdata", cdata.as_bytes(), cdata_body.as_bytes(), b"]]></m>"),
            (
                "declaration",
                b"<?xml version='1.0' x='",
                gts.as_bytes(),
                b"'?>",
            ),
        ];
        for (what, prefix, body, suffix) in cases {
            let (ev, err, fed, scanned) = trickle(prefix, body, suffix);
            // The declaration is accepted (its attributes are not checked) and is no event.
            let want = if what == "declaration" { 0 } else { 2 };
            assert_eq!((ev.len(), err), (want, None), "{what}");
            assert!(
                scanned <= 4 * fed as u64,
                "{what}: scanned {scanned} bytes for {fed} fed"
            );
        }
        let (ev, _, _, _) = trickle(attr.as_bytes(), gts.as_bytes(), b"'/>");
        assert_eq!(stanzas(&ev)[0].get_attr("a").map(str::len), Some(n));
        let (ev, _, _, _) = trickle(cdata.as_bytes(), cdata_body.as_bytes(), b"]]></m>");
        assert_eq!(stanzas(&ev)[0].text(), cdata_body);
    }

    #[test]
    fn work_is_linear_for_a_normal_stream_at_any_split() {
        let data = transcript();
        let mut p = parser();
        let (ev, err) = run_chunks(&mut p, data.chunks(1));
        assert_eq!((ev.len(), err), (10, None));
        assert!(
            p.scanned() <= 4 * data.len() as u64,
            "byte by byte: scanned {} for {}",
            p.scanned(),
            data.len()
        );
        // Whole, the tokenizer sees each byte about once.
        let mut p = parser();
        run_chunks(&mut p, [data.as_slice()]);
        assert!(p.scanned() <= 2 * data.len() as u64, "{}", p.scanned());
        for size in [2, 3, 7, 64] {
            let mut p = parser();
            let (ev, err) = run_chunks(&mut p, data.chunks(size));
            assert_eq!((ev.len(), err), (10, None));
            assert!(p.scanned() <= 4 * data.len() as u64, "chunks of {size}");
        }
    }

    #[test]
    fn the_scanner_agrees_with_the_tokenizer() {
        // Tokens that end in unusual ways, split at every byte: the result is the same as
        // whole, so the scanner never waits past the real end of a token.
        let body = "<m a='>' b=\"'>\"><![CDATA[]]]]><![CDATA[]>]]]]></m><m></m ><x/>\
                    <y a='\"'/><m>&amp;&#x41;</m>";
        let data = format!("<?xml version='1.0'?>{SHORT_HEADER}{body}");
        let whole = parse_all(data.as_bytes());
        assert_eq!(whole.1, None);
        assert_eq!(whole.0.len(), 6);
        assert_eq!(stanzas(&whole.0)[0].text(), "]]]>]]");
        for i in 0..=data.len() {
            let (a, b) = data.as_bytes().split_at(i);
            assert_eq!(run_chunks(&mut parser(), [a, b]), whole, "split at {i}");
        }
        let mut p = parser();
        assert_eq!(run_chunks(&mut p, data.as_bytes().chunks(1)), whole);
        // Comments and doctypes still fail as soon as they are recognised.
        for evil in ["<!-", "<!D", "<!x"] {
            let mut p = parser();
            let mut fed = HEADER.as_bytes().to_vec();
            fed.extend_from_slice(evil.as_bytes());
            let (_, err) = run_chunks(&mut p, fed.chunks(1));
            assert!(err.is_some(), "{evil}");
        }
    }

    #[test]
    fn element_count_limit() {
        let limits = TreeLimits {
            max_elements: 10,
            ..TreeLimits::bound()
        };
        let ok = format!("{SHORT_HEADER}<m>{}</m>", "<a/>".repeat(9));
        let (ev, err) = run_chunks(&mut with_tree(limits.clone()), [ok.as_bytes()]);
        assert_eq!((ev.len(), err), (2, None));
        // The eleventh element fails the stanza at once, long before it ends, whole or split.
        let over = format!("{SHORT_HEADER}<m>{}", "<a/>".repeat(10));
        let err = Some(ParseError::PolicyViolation("too many elements"));
        let (_, e) = run_chunks(&mut with_tree(limits.clone()), [over.as_bytes()]);
        assert_eq!(e, err);
        let (_, e) = run_chunks(&mut with_tree(limits.clone()), over.as_bytes().chunks(1));
        assert_eq!(e, err);
        assert_eq!(
            e.unwrap().condition(),
            StreamErrorCondition::PolicyViolation
        );
        // The count is per stanza.
        let many = format!("{SHORT_HEADER}{}", "<m><a/><b/></m>".repeat(20));
        let (ev, err) = run_chunks(&mut with_tree(limits), [many.as_bytes()]);
        assert_eq!((ev.len(), err), (21, None));
    }

    #[test]
    fn text_limit() {
        let limits = TreeLimits {
            max_text_bytes: 10,
            ..TreeLimits::bound()
        };
        let err = Some(ParseError::PolicyViolation("too much text"));
        let ok = format!("{SHORT_HEADER}<m>01234<b>5678</b>9</m>");
        let (ev, e) = run_chunks(&mut with_tree(limits.clone()), [ok.as_bytes()]);
        assert_eq!((ev.len(), e), (2, None));
        // Counted across elements, references and CDATA, after unescaping.
        for body in [
            "<m>01234<b>5678</b>9A</m>",
            "<m>0123456789&amp;</m>",
            "<m>01234<![CDATA[567890]]></m>",
            "<m>&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;&#x41;</m>",
        ] {
            let data = format!("{SHORT_HEADER}{body}");
            let (_, e) = run_chunks(&mut with_tree(limits.clone()), [data.as_bytes()]);
            assert_eq!(e, err, "{body}");
            let (_, e) = run_chunks(&mut with_tree(limits.clone()), data.as_bytes().chunks(1));
            assert_eq!(e, err, "{body} byte by byte");
        }
        // Ten characters of four bytes each are 40 bytes.
        let data = format!("{SHORT_HEADER}<m>{}</m>", "😀".repeat(3));
        let (_, e) = run_chunks(&mut with_tree(limits), [data.as_bytes()]);
        assert_eq!(e, err);
    }

    #[test]
    fn held_memory_limit() {
        let limits = TreeLimits {
            max_held_bytes: 200,
            ..TreeLimits::bound()
        };
        let err = Some(ParseError::PolicyViolation("stanza holds too much"));
        // A whole stanza bigger than that is fine: only an unfinished one is held.
        let whole = format!("{SHORT_HEADER}<m>{}</m>", "<a/>".repeat(100));
        let (ev, e) = run_chunks(&mut with_tree(limits.clone()), [whole.as_bytes()]);
        assert_eq!((ev.len(), e), (2, None));
        // Held open, the same elements fail it, whole or trickled.
        let open = format!("{SHORT_HEADER}<m>{}", "<a/>".repeat(100));
        let (_, e) = run_chunks(&mut with_tree(limits.clone()), [open.as_bytes()]);
        assert_eq!(e, err);
        let (_, e) = run_chunks(&mut with_tree(limits.clone()), open.as_bytes().chunks(7));
        assert_eq!(e, err);
        // So does one long unfinished tag.
        let tag = format!("{SHORT_HEADER}<m a='{}", "x".repeat(300));
        let (_, e) = run_chunks(&mut with_tree(limits), [tag.as_bytes()]);
        assert_eq!(e, err);
    }

    #[test]
    fn an_unfinished_stanza_is_held_compactly() {
        // The finding: 240 KB of `<a/>` inside one unclosed element cost ~39x in trees.
        let n = 60_000;
        let mut p = roomy();
        p.feed(SHORT_HEADER.as_bytes());
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Open(_)))));
        let body = format!("<message>{}", "<a/>".repeat(n));
        for chunk in body.as_bytes().chunks(4096) {
            p.feed(chunk);
            assert_eq!(p.next_event(), Ok(None));
        }
        // Three bytes of tape per element, well under the four bytes received.
        assert!(p.held() <= body.len(), "{} > {}", p.held(), body.len());
        assert!(p.tape.capacity() <= 2 * body.len());
        assert!(p.stack.len() == 1);
        p.feed(b"</message>");
        let Ok(Some(StreamEvent::Stanza(m))) = p.next_event() else {
            panic!("no stanza")
        };
        assert_eq!(m.children().count(), n);
        assert!(m.children().all(|c| c.is("a", ns::CLIENT)));
        // The tape is released with the stanza.
        assert!(p.tape.capacity() <= 16 * 1024);
    }

    #[test]
    fn prelogin_limits_and_switching() {
        let (pre, tree) = (Limits::prelogin(), TreeLimits::prelogin());
        assert!(pre.max_stanza_bytes >= 10_000, "RFC 6120 §13.12");
        let (d, b) = (Limits::default(), TreeLimits::bound());
        assert!(pre.max_stanza_bytes < d.max_stanza_bytes && pre.max_depth < d.max_depth);
        assert!(tree.max_elements < b.max_elements && tree.max_text_bytes < b.max_text_bytes);
        assert!(tree.max_held_bytes < b.max_held_bytes);
        // A bound stanza fits its limits (bytes, elements, text and what is held).
        assert!(b.max_text_bytes >= d.max_stanza_bytes && b.max_held_bytes >= d.max_stanza_bytes);
        let form = format!(
            "{SHORT_HEADER}<iq><query>{}</query></iq>",
            "<a/>".repeat(200)
        );
        let (_, e) = run_chunks(
            &mut StreamParser::new(pre.clone()).with_tree_limits(tree.clone()),
            [form.as_bytes()],
        );
        assert_eq!(e, Some(ParseError::PolicyViolation("too many elements")));
        // After authentication the edge switches to the bound limits (on a reset parser).
        let mut p = StreamParser::new(pre).with_tree_limits(tree);
        p.reset();
        p.set_limits(Limits::default(), TreeLimits::bound());
        assert_eq!(p.limits(), (&Limits::default(), &TreeLimits::bound()));
        let (ev, e) = run_chunks(&mut p, [form.as_bytes()]);
        assert_eq!((ev.len(), e), (2, None));
        // Without tree limits (trusted input), nothing but the size counts.
        let many = format!("{SHORT_HEADER}<m>{}</m>", "<a/>".repeat(20_000));
        let (ev, e) = parse_all(many.as_bytes());
        assert_eq!((ev.len(), e), (2, None));
    }

    #[test]
    fn namespaces_survive_the_tape() {
        let m = first_stanza(
            "<m xmlns:p='urn:p'><x xmlns='urn:a' k='v' p:q='w'><y/>t<z xmlns='jabber:client'>\
             <w/></z></x><p:e/>tail</m>",
        );
        let x = m.get_child("x", "urn:a").unwrap();
        assert_eq!(x.get_attr("k"), Some("v"));
        assert_eq!(x.get_attr("p:q"), Some("w"));
        assert!(x.get_child("y", "urn:a").is_some());
        assert_eq!(x.text(), "t");
        let z = x.get_child("z", ns::CLIENT).unwrap();
        assert!(z.get_child("w", ns::CLIENT).is_some());
        assert!(m.get_child("e", "urn:p").is_some());
        assert_eq!(m.text(), "tail");
        // Long names and values need multi-byte lengths.
        let long = "v".repeat(70_000);
        let m = first_stanza(&format!("<m a='{long}'>{long}</m>"));
        assert_eq!(m.get_attr("a"), Some(long.as_str()));
        assert_eq!(m.text(), long);
        // A corrupt tape is refused, never a panic.
        assert_eq!(build(&[OP_START]), None);
        assert_eq!(build(&[OP_START | SAME_NS, 1, b'a']), None);
        assert_eq!(build(&[OP_TEXT, 1, b'a']), None);
        assert_eq!(build(&[OP_START | EMPTY, 1, b'a', 0, OP_END]), None);
        assert_eq!(build(&[0x40]), None);
        assert!(build(&[OP_START | EMPTY, 1, b'a', 0]).is_some());
    }
}
