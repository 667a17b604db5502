//! The Relais protocol library.
//!
//! Everything here is pure: no I/O, no async. The edge, session and router crates build on it.
//! - [`jid`]: RFC 7622 addresses as `BareJid` / `FullJid` newtypes, prepared with PRECIS.
//! - [`element`]: a small owned XML element tree and its serializer.
//! - [`parser`]: the incremental, restricted-XML stream parser (quick-xml underneath).
//! - [`scram`]: SCRAM-SHA-1/SHA-256 (RFC 5802, RFC 7677) for both server and client.
//! - [`ns`]: namespace constants. [`error`]: stanza and stream error conditions.
//! - [`xep`]: one element type per XEP.

pub mod element;
pub mod error;
pub mod jid;
pub mod ns;
pub mod parser;
pub mod scram;
pub mod xep;

pub use element::{Element, Node};
pub use error::{ErrorType, StanzaErrorCondition, StreamErrorCondition};
pub use jid::{BareJid, FullJid, Jid, JidError};
