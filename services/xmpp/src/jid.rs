//! RFC 7622 addresses. CONTRACT STUB: the helper implementing this file keeps every public
//! signature below and replaces the `todo!()` bodies.
//!
//! - localpart: PRECIS UsernameCaseMapped (precis-profiles), 1..=1023 bytes after preparation;
//! - domainpart: IDNA to Unicode + lowercase (idna crate), IP literals allowed, 1..=1023 bytes,
//!   a trailing dot removed;
//! - resourcepart: PRECIS OpaqueString, 1..=1023 bytes.
//! Parsing splits per RFC 7622 §3.2 (first `/` starts the resource, then the last `@` before it).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("empty domainpart")]
    EmptyDomain,
    #[error("empty localpart")]
    EmptyLocal,
    #[error("empty resourcepart")]
    EmptyResource,
    #[error("part too long")]
    TooLong,
    #[error("invalid localpart")]
    InvalidLocal,
    #[error("invalid domainpart")]
    InvalidDomain,
    #[error("invalid resourcepart")]
    InvalidResource,
    #[error("expected a full jid")]
    NotFull,
}

/// `[local@]domain`, prepared. Cheap to clone and hash; Display gives the canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BareJid {
    _todo: String,
}

/// `[local@]domain/resource`, prepared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FullJid {
    _todo: String,
}

/// Either kind, as found in a `to` or `from` attribute.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Jid {
    Bare(BareJid),
    Full(FullJid),
}

impl BareJid {
    /// Builds and prepares a bare JID from its parts.
    pub fn new(_local: Option<&str>, _domain: &str) -> Result<Self, JidError> {
        todo!()
    }
    /// A domain-only JID.
    pub fn domain_only(_domain: &str) -> Result<Self, JidError> {
        todo!()
    }
    pub fn local(&self) -> Option<&str> {
        todo!()
    }
    pub fn domain(&self) -> &str {
        todo!()
    }
    pub fn as_str(&self) -> &str {
        todo!()
    }
    pub fn with_resource(&self, _resource: &str) -> Result<FullJid, JidError> {
        todo!()
    }
}

impl FullJid {
    pub fn new(_local: Option<&str>, _domain: &str, _resource: &str) -> Result<Self, JidError> {
        todo!()
    }
    pub fn bare(&self) -> BareJid {
        todo!()
    }
    pub fn local(&self) -> Option<&str> {
        todo!()
    }
    pub fn domain(&self) -> &str {
        todo!()
    }
    pub fn resource(&self) -> &str {
        todo!()
    }
    pub fn as_str(&self) -> &str {
        todo!()
    }
}

impl Jid {
    pub fn bare(&self) -> BareJid {
        todo!()
    }
    pub fn resource(&self) -> Option<&str> {
        todo!()
    }
    pub fn domain(&self) -> &str {
        todo!()
    }
    pub fn as_str(&self) -> &str {
        todo!()
    }
}

impl FromStr for BareJid {
    type Err = JidError;
    /// Accepts only a bare JID (a resource is an error: `InvalidResource`).
    fn from_str(_s: &str) -> Result<Self, JidError> {
        todo!()
    }
}
impl FromStr for FullJid {
    type Err = JidError;
    /// Accepts only a full JID (`NotFull` otherwise).
    fn from_str(_s: &str) -> Result<Self, JidError> {
        todo!()
    }
}
impl FromStr for Jid {
    type Err = JidError;
    fn from_str(_s: &str) -> Result<Self, JidError> {
        todo!()
    }
}
impl fmt::Display for BareJid {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}
impl fmt::Display for FullJid {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}
impl fmt::Display for Jid {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}
impl From<FullJid> for Jid {
    fn from(j: FullJid) -> Self {
        Jid::Full(j)
    }
}
impl From<BareJid> for Jid {
    fn from(j: BareJid) -> Self {
        Jid::Bare(j)
    }
}
