//! RFC 7622 addresses.
//!
//! - localpart: PRECIS UsernameCaseMapped (precis-profiles), 1..=1023 bytes after preparation,
//!   none of `" & ' / : < > @`;
//! - domainpart: IDNA to Unicode + lowercase (idna crate), IPv4 and bracketed IPv6 literals
//!   allowed, 1..=1023 bytes, one trailing dot removed;
//! - resourcepart: PRECIS OpaqueString, 1..=1023 bytes.
//!
//! Parsing splits per RFC 7622 §3.2: the first `/` starts the resourcepart, then the first `@`
//! before it ends the localpart. A JID is stored as one shared canonical string plus offsets, so
//! clones are a reference-count increment and hashing or comparing touches one string.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// The largest prepared part, in bytes (RFC 7622 §3.1).
pub const MAX_PART_BYTES: usize = 1023;

/// Raw input longer than this is rejected before any Unicode processing: no preparation step
/// can shrink it to `MAX_PART_BYTES`.
const MAX_RAW_PART_BYTES: usize = 4 * MAX_PART_BYTES;

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
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BareJid {
    /// The canonical `[local@]domain`.
    s: Arc<str>,
    /// Byte length of the localpart; 0 means no localpart (a localpart is never empty).
    local_len: u16,
}

/// `[local@]domain/resource`, prepared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FullJid {
    /// The canonical `[local@]domain/resource`.
    s: Arc<str>,
    /// Byte length of the localpart; 0 means no localpart.
    local_len: u16,
    /// Byte offset of the `/` that starts the resourcepart.
    slash: u16,
}

/// Either kind, as found in a `to` or `from` attribute.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Jid {
    Bare(BareJid),
    Full(FullJid),
}

// ---------------------------------------------------------------------------------------------
// Preparation of the parts.

fn check_len(s: &str) -> Result<(), JidError> {
    if s.len() > MAX_PART_BYTES {
        Err(JidError::TooLong)
    } else {
        Ok(())
    }
}

/// Characters RFC 7622 §3.3.1 forbids in a localpart.
fn forbidden_in_local(c: char) -> bool {
    matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
}

fn prep_local(local: &str) -> Result<Cow<'_, str>, JidError> {
    if local.is_empty() {
        return Err(JidError::EmptyLocal);
    }
    if local.len() > MAX_RAW_PART_BYTES {
        return Err(JidError::TooLong);
    }
    // Fast path: lowercase ASCII letters, digits and a few harmless punctuation characters are
    // already in their UsernameCaseMapped form.
    let prepared = if local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        Cow::Borrowed(local)
    } else {
        UsernameCaseMapped::enforce(local).map_err(|_| JidError::InvalidLocal)?
    };
    if prepared.is_empty() {
        return Err(JidError::EmptyLocal);
    }
    if prepared.contains(forbidden_in_local) {
        return Err(JidError::InvalidLocal);
    }
    check_len(&prepared)?;
    Ok(prepared)
}

fn prep_domain(domain: &str) -> Result<Cow<'_, str>, JidError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    if domain.len() > MAX_RAW_PART_BYTES {
        return Err(JidError::TooLong);
    }
    if let Some(inner) = domain.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(JidError::InvalidDomain)?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| JidError::InvalidDomain)?;
        return Ok(Cow::Owned(format!("[{addr}]")));
    }
    if let Ok(addr) = domain.parse::<Ipv4Addr>() {
        return Ok(Cow::Owned(addr.to_string()));
    }
    // Fast path: an already-canonical LDH name needs no IDNA processing.
    let ldh = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let prepared = if ldh {
        Cow::Borrowed(domain)
    } else {
        let (out, res) = idna::uts46::Uts46::new().to_unicode(
            domain.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::CheckFirstLast,
        );
        if res.is_err() {
            return Err(JidError::InvalidDomain);
        }
        Cow::Owned(out.into_owned())
    };
    if prepared.split('.').any(str::is_empty) {
        return Err(JidError::InvalidDomain);
    }
    check_len(&prepared)?;
    Ok(prepared)
}

fn prep_resource(resource: &str) -> Result<Cow<'_, str>, JidError> {
    if resource.is_empty() {
        return Err(JidError::EmptyResource);
    }
    if resource.len() > MAX_RAW_PART_BYTES {
        return Err(JidError::TooLong);
    }
    // Fast path: printable ASCII without spaces is already in its OpaqueString form.
    let prepared = if resource.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(resource)
    } else {
        OpaqueString::enforce(resource).map_err(|_| JidError::InvalidResource)?
    };
    if prepared.is_empty() {
        return Err(JidError::EmptyResource);
    }
    check_len(&prepared)?;
    Ok(prepared)
}

/// Splits a JID string per RFC 7622 §3.2, before any preparation.
fn split(s: &str) -> (Option<&str>, &str, Option<&str>) {
    let (rest, resource) = match s.split_once('/') {
        Some((rest, res)) => (rest, Some(res)),
        None => (s, None),
    };
    let (local, domain) = match rest.split_once('@') {
        Some((local, domain)) => (Some(local), domain),
        None => (None, rest),
    };
    (local, domain, resource)
}

/// Offsets always fit: each part is at most 1023 bytes.
fn off(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn build_bare(local: Option<&str>, domain: &str) -> BareJid {
    match local {
        Some(l) => {
            let mut s = String::with_capacity(l.len() + 1 + domain.len());
            s.push_str(l);
            s.push('@');
            s.push_str(domain);
            BareJid {
                s: s.into(),
                local_len: off(l.len()),
            }
        }
        None => BareJid {
            s: domain.into(),
            local_len: 0,
        },
    }
}

fn build_full(local: Option<&str>, domain: &str, resource: &str) -> FullJid {
    let local_len = local.map_or(0, str::len);
    let mut s = String::with_capacity(local_len + 2 + domain.len() + resource.len());
    if let Some(l) = local {
        s.push_str(l);
        s.push('@');
    }
    s.push_str(domain);
    let slash = off(s.len());
    s.push('/');
    s.push_str(resource);
    FullJid {
        s: s.into(),
        local_len: off(local_len),
        slash,
    }
}

/// Parses and prepares any JID string.
fn parse_any(s: &str) -> Result<Jid, JidError> {
    let (local, domain, resource) = split(s);
    let local = local.map(prep_local).transpose()?;
    let domain = prep_domain(domain)?;
    match resource {
        None => Ok(Jid::Bare(build_bare(local.as_deref(), &domain))),
        Some(r) => {
            let r = prep_resource(r)?;
            Ok(Jid::Full(build_full(local.as_deref(), &domain, &r)))
        }
    }
}

// ---------------------------------------------------------------------------------------------

impl BareJid {
    /// Builds and prepares a bare JID from its parts.
    pub fn new(local: Option<&str>, domain: &str) -> Result<Self, JidError> {
        let local = local.map(prep_local).transpose()?;
        let domain = prep_domain(domain)?;
        Ok(build_bare(local.as_deref(), &domain))
    }
    /// A domain-only JID.
    pub fn domain_only(domain: &str) -> Result<Self, JidError> {
        Self::new(None, domain)
    }
    pub fn local(&self) -> Option<&str> {
        match self.local_len {
            0 => None,
            n => self.s.get(..usize::from(n)),
        }
    }
    pub fn domain(&self) -> &str {
        match self.local_len {
            0 => &self.s,
            n => self.s.get(usize::from(n) + 1..).unwrap_or_default(),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.s
    }
    pub fn with_resource(&self, resource: &str) -> Result<FullJid, JidError> {
        let r = prep_resource(resource)?;
        Ok(build_full(self.local(), self.domain(), &r))
    }
    /// True when this is a domain-only JID (no localpart).
    pub fn is_domain(&self) -> bool {
        self.local_len == 0
    }
}

impl FullJid {
    pub fn new(local: Option<&str>, domain: &str, resource: &str) -> Result<Self, JidError> {
        let local = local.map(prep_local).transpose()?;
        let domain = prep_domain(domain)?;
        let resource = prep_resource(resource)?;
        Ok(build_full(local.as_deref(), &domain, &resource))
    }
    pub fn bare(&self) -> BareJid {
        BareJid {
            s: self
                .s
                .get(..usize::from(self.slash))
                .unwrap_or_default()
                .into(),
            local_len: self.local_len,
        }
    }
    pub fn local(&self) -> Option<&str> {
        match self.local_len {
            0 => None,
            n => self.s.get(..usize::from(n)),
        }
    }
    pub fn domain(&self) -> &str {
        let start = match self.local_len {
            0 => 0,
            n => usize::from(n) + 1,
        };
        self.s
            .get(start..usize::from(self.slash))
            .unwrap_or_default()
    }
    pub fn resource(&self) -> &str {
        self.s
            .get(usize::from(self.slash) + 1..)
            .unwrap_or_default()
    }
    pub fn as_str(&self) -> &str {
        &self.s
    }
    /// The `[local@]domain` prefix of this JID's canonical string, without allocating.
    pub fn bare_str(&self) -> &str {
        self.s.get(..usize::from(self.slash)).unwrap_or_default()
    }
}

impl Jid {
    pub fn bare(&self) -> BareJid {
        match self {
            Jid::Bare(b) => b.clone(),
            Jid::Full(f) => f.bare(),
        }
    }
    pub fn resource(&self) -> Option<&str> {
        match self {
            Jid::Bare(_) => None,
            Jid::Full(f) => Some(f.resource()),
        }
    }
    pub fn domain(&self) -> &str {
        match self {
            Jid::Bare(b) => b.domain(),
            Jid::Full(f) => f.domain(),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Jid::Bare(b) => b.as_str(),
            Jid::Full(f) => f.as_str(),
        }
    }
    /// The localpart, if any.
    pub fn local(&self) -> Option<&str> {
        match self {
            Jid::Bare(b) => b.local(),
            Jid::Full(f) => f.local(),
        }
    }
    /// The full JID, when this is one.
    pub fn as_full(&self) -> Option<&FullJid> {
        match self {
            Jid::Bare(_) => None,
            Jid::Full(f) => Some(f),
        }
    }
}

impl FromStr for BareJid {
    type Err = JidError;
    /// Accepts only a bare JID (a resource is an error: `InvalidResource`).
    fn from_str(s: &str) -> Result<Self, JidError> {
        let (local, domain, resource) = split(s);
        if resource.is_some() {
            return Err(JidError::InvalidResource);
        }
        Self::new(local, domain)
    }
}
impl FromStr for FullJid {
    type Err = JidError;
    /// Accepts only a full JID (`NotFull` otherwise).
    fn from_str(s: &str) -> Result<Self, JidError> {
        match parse_any(s)? {
            Jid::Full(f) => Ok(f),
            Jid::Bare(_) => Err(JidError::NotFull),
        }
    }
}
impl FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Self, JidError> {
        parse_any(s)
    }
}
impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}
impl fmt::Display for FullJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.s)
    }
}
impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BareJid({:?})", &*self.s)
    }
}
impl fmt::Debug for FullJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FullJid({:?})", &*self.s)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Result<Jid, JidError> {
        s.parse()
    }

    #[test]
    fn valid_jids_are_canonicalized() {
        let cases = [
            ("alice@example.com", "alice@example.com"),
            ("Alice@Example.COM", "alice@example.com"),
            ("Alice@Example.COM/Res", "alice@example.com/Res"),
            ("example.com", "example.com"),
            ("example.com.", "example.com"),
            ("a@example.com./r", "a@example.com/r"),
            ("example.com/r", "example.com/r"),
            // Resource keeps `/` and `@` and case.
            ("a@b/c/d@e", "a@b/c/d@e"),
            ("b/@", "b/@"),
            ("a@b/ x y ", "a@b/ x y "),
            // Unicode width mapping of fullwidth letters in the localpart.
            ("\u{FF21}\u{FF22}@example.com", "ab@example.com"),
            // Unicode localpart and domain, case mapped.
            ("Ĵuliet@Ëxample.com", "ĵuliet@ëxample.com"),
            ("juliet@xn--bcher-kva.example", "juliet@bücher.example"),
            ("juliet@BÜCHER.example", "juliet@bücher.example"),
            ("κάθαρσις@example.com", "κάθαρσις@example.com"),
            // IP literals.
            ("a@192.168.0.1", "a@192.168.0.1"),
            ("a@[::1]/r", "a@[::1]/r"),
            ("a@[2001:DB8:0:0:0:0:0:1]", "a@[2001:db8::1]"),
            ("a.b-c_d@x-y.z", "a.b-c_d@x-y.z"),
        ];
        for (input, want) in cases {
            let j = jid(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(j.as_str(), want, "{input}");
            assert_eq!(j.to_string(), want);
            // Canonical forms are fixed points.
            assert_eq!(jid(want).unwrap(), j);
        }
    }

    #[test]
    fn invalid_jids_are_rejected() {
        let long = "a".repeat(1024);
        let max = "a".repeat(1023);
        let cases: Vec<(String, JidError)> = vec![
            ("".into(), JidError::EmptyDomain),
            ("@d".into(), JidError::EmptyLocal),
            ("a@".into(), JidError::EmptyDomain),
            ("a@/r".into(), JidError::EmptyDomain),
            ("d/".into(), JidError::EmptyResource),
            ("a@d/".into(), JidError::EmptyResource),
            (".".into(), JidError::EmptyDomain),
            ("a@d..".into(), JidError::InvalidDomain),
            ("a@.d".into(), JidError::InvalidDomain),
            ("a@x..y".into(), JidError::InvalidDomain),
            (format!("{long}@d"), JidError::TooLong),
            (format!("a@{long}"), JidError::TooLong),
            (format!("a@d/{long}"), JidError::TooLong),
            (format!("{}@d", "a".repeat(100_000)), JidError::TooLong),
            ("a b@d".into(), JidError::InvalidLocal),
            ("a\"b@d".into(), JidError::InvalidLocal),
            ("a&b@d".into(), JidError::InvalidLocal),
            ("a'b@d".into(), JidError::InvalidLocal),
            ("a:b@d".into(), JidError::InvalidLocal),
            ("a<b@d".into(), JidError::InvalidLocal),
            ("a>b@d".into(), JidError::InvalidLocal),
            // Fullwidth @ maps to @ by width mapping and is then forbidden.
            ("a\u{FF20}b@d".into(), JidError::InvalidLocal),
            ("a\u{0007}@d".into(), JidError::InvalidLocal),
            // The second `@` ends up in the domain.
            ("a@b@c".into(), JidError::InvalidDomain),
            ("a@exa mple.com".into(), JidError::InvalidDomain),
            ("a@exa_mple.com".into(), JidError::InvalidDomain),
            ("a@-example.com".into(), JidError::InvalidDomain),
            ("a@[::1".into(), JidError::InvalidDomain),
            ("a@[not-an-ip]".into(), JidError::InvalidDomain),
            ("a@[1.2.3.4]".into(), JidError::InvalidDomain),
            ("a@d/r\u{0000}".into(), JidError::InvalidResource),
            ("a@d/\u{0007}".into(), JidError::InvalidResource),
        ];
        for (input, want) in cases {
            assert_eq!(jid(&input).err(), Some(want), "{:.40}", input);
        }
        // The limits themselves are fine.
        assert!(jid(&format!("{max}@{max}/{max}")).is_ok());
    }

    #[test]
    fn accessors_and_kinds() {
        let f: FullJid = "Juliet@Capulet.lit/Balcony".parse().unwrap();
        assert_eq!(f.local(), Some("juliet"));
        assert_eq!(f.domain(), "capulet.lit");
        assert_eq!(f.resource(), "Balcony");
        assert_eq!(f.bare_str(), "juliet@capulet.lit");
        let b = f.bare();
        assert_eq!(b.as_str(), "juliet@capulet.lit");
        assert_eq!(b.local(), Some("juliet"));
        assert_eq!(b.domain(), "capulet.lit");
        assert!(!b.is_domain());
        assert_eq!(b.with_resource("Balcony").unwrap(), f);
        assert_eq!(b, "juliet@capulet.lit".parse::<BareJid>().unwrap());

        let d: FullJid = "capulet.lit/x".parse().unwrap();
        assert_eq!(d.local(), None);
        assert_eq!(d.domain(), "capulet.lit");
        assert_eq!(d.resource(), "x");
        assert!(d.bare().is_domain());
        assert_eq!(d.bare().domain(), "capulet.lit");

        let j: Jid = "a@b/c".parse().unwrap();
        assert_eq!(j.resource(), Some("c"));
        assert_eq!(j.domain(), "b");
        assert_eq!(j.local(), Some("a"));
        assert_eq!(j.bare().as_str(), "a@b");
        assert!(j.as_full().is_some());
        let j: Jid = "a@b".parse().unwrap();
        assert_eq!(j.resource(), None);
        assert!(matches!(j, Jid::Bare(_)));

        assert_eq!(
            "a@b/c".parse::<BareJid>().err(),
            Some(JidError::InvalidResource)
        );
        assert_eq!("a@b".parse::<FullJid>().err(), Some(JidError::NotFull));
        assert_eq!(
            BareJid::domain_only("Example.ORG.").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(
            BareJid::new(Some("@"), "d").err(),
            Some(JidError::InvalidLocal)
        );
        assert_eq!(
            BareJid::new(Some(""), "d").err(),
            Some(JidError::EmptyLocal)
        );
        assert_eq!(
            FullJid::new(None, "d", "").err(),
            Some(JidError::EmptyResource)
        );
        assert_eq!(FullJid::new(Some("X"), "D", "R").unwrap().as_str(), "x@d/R");
    }

    #[test]
    fn equality_hash_and_size() {
        use std::collections::HashSet;
        let a: BareJid = "ALICE@example.com".parse().unwrap();
        let b: BareJid = "alice@EXAMPLE.com.".parse().unwrap();
        assert_eq!(a, b);
        let set: HashSet<BareJid> = [a.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert!(a < "bob@example.com".parse().unwrap());
        assert!(std::mem::size_of::<BareJid>() <= 24);
        assert!(std::mem::size_of::<FullJid>() <= 24);
        assert!(std::mem::size_of::<Jid>() <= 32);
        assert_eq!(format!("{a:?}"), "BareJid(\"alice@example.com\")");
    }
}
