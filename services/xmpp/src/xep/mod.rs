//! One element type per XEP. Each has `TryFrom<&Element>` (rejecting bad input with a
//! `XepError`), `From<T> for Element`, and tests for round-trip, size, and bad input.
//!
//! - [`ping`]: XEP-0199 `<ping/>`;
//! - [`version`]: XEP-0092 software version;
//! - [`time`]: XEP-0202 entity time, and XEP-0082 date-time formatting and parsing;
//! - [`delay`]: XEP-0203 delayed delivery;
//! - [`disco`]: XEP-0030 service discovery (info and items).

pub mod delay;
pub mod disco;
pub mod ping;
pub mod time;
pub mod version;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XepError {
    #[error("wrong element: expected {0}")]
    WrongElement(&'static str),
    #[error("missing attribute {0}")]
    MissingAttr(&'static str),
    #[error("bad value for {0}")]
    BadValue(&'static str),
    /// A required child element is absent.
    #[error("missing child {0}")]
    MissingChild(&'static str),
}

/// Checks the name and namespace of an element.
pub(crate) fn expect(el: &crate::Element, name: &'static str, ns: &str) -> Result<(), XepError> {
    if el.is(name, ns) {
        Ok(())
    } else {
        Err(XepError::WrongElement(name))
    }
}
