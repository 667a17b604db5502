//! One element type per XEP. Each has `TryFrom<&Element>` (rejecting bad input with a
//! `XepError`), `From<T> for Element`, and tests for round-trip, size, and bad input.
//!
//! - [`ping`]: XEP-0199 `<ping/>`;
//! - [`version`]: XEP-0092 software version;
//! - [`time`]: XEP-0202 entity time, and XEP-0082 date-time formatting and parsing;
//! - [`delay`]: XEP-0203 delayed delivery;
//! - [`disco`]: XEP-0030 service discovery (info and items);
//! - [`data_form`]: XEP-0004 data forms (the subset MAM needs);
//! - [`rsm`]: XEP-0059 result set management;
//! - [`forward`]: XEP-0297 stanza forwarding;
//! - [`stanza_id`]: XEP-0359 unique and stable stanza ids;
//! - [`mam`]: XEP-0313 message archive management.

pub mod data_form;
pub mod delay;
pub mod disco;
pub mod forward;
pub mod mam;
pub mod ping;
pub mod rsm;
pub mod stanza_id;
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
