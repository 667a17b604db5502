//! One element type per XEP. Each has `TryFrom<&Element>` (rejecting bad input with a
//! `XepError`), `From<T> for Element`, and tests for round-trip, size, and bad input.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XepError {
    #[error("wrong element: expected {0}")]
    WrongElement(&'static str),
    #[error("missing attribute {0}")]
    MissingAttr(&'static str),
    #[error("bad value for {0}")]
    BadValue(&'static str),
}
