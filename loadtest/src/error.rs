//! The load generator's error type. Every failure is counted in the report under its `kind`.

use xmpp::parser::ParseError;

/// A small, stable classification of failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad flags or scenario file.
    Config,
    /// A scenario that is not implemented yet.
    Unsupported,
    /// TCP connect (or source address bind) failed.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// A read or write failed, or the server closed the connection.
    Io,
    /// An operation took longer than its timeout.
    Timeout,
    /// The server sent XML the parser rejected.
    Xml,
    /// The server sent a stream error.
    StreamError,
    /// SASL authentication failed.
    Auth,
    /// Stream negotiation went somewhere unexpected (missing feature, odd reply).
    Negotiation,
    /// Reading /proc failed.
    Proc,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("scenario {0} is not implemented yet")]
    Unsupported(&'static str),
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("tls handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("xml error: {0}")]
    Xml(#[from] ParseError),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("negotiation failed: {0}")]
    Negotiation(&'static str),
    #[error("cannot read /proc for pid {pid}: {source}")]
    Proc { pid: u32, source: std::io::Error },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config(_) => ErrorCode::Config,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::Connect(_) => ErrorCode::Connect,
            Error::Tls(_) => ErrorCode::Tls,
            Error::Io(_) | Error::Closed => ErrorCode::Io,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Xml(_) => ErrorCode::Xml,
            Error::Stream(_) => ErrorCode::StreamError,
            Error::Auth(_) => ErrorCode::Auth,
            Error::Negotiation(_) => ErrorCode::Negotiation,
            Error::Proc { .. } => ErrorCode::Proc,
        }
    }

    /// The label this error is counted under in "errors by kind" (stable, low cardinality).
    pub fn kind(&self) -> String {
        match self {
            Error::Config(_) => "config".into(),
            Error::Unsupported(s) => format!("unsupported/{s}"),
            Error::Connect(e) => format!("connect/{}", io_kind(e)),
            Error::Tls(_) => "tls".into(),
            Error::Io(e) => format!("io/{}", io_kind(e)),
            Error::Closed => "closed-by-server".into(),
            Error::Timeout(stage) => format!("timeout/{stage}"),
            Error::Xml(e) => format!("xml/{}", e.condition().as_str()),
            Error::Stream(c) => format!("stream-error/{c}"),
            Error::Auth(c) => format!("auth/{c}"),
            Error::Negotiation(s) => format!("negotiation/{s}"),
            Error::Proc { .. } => "proc".into(),
        }
    }
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::ConnectionAborted => "aborted".into(),
        K::BrokenPipe => "broken-pipe".into(),
        K::AddrInUse => "addr-in-use".into(),
        K::AddrNotAvailable => "addr-not-available".into(),
        K::UnexpectedEof => "eof".into(),
        K::TimedOut => "timed-out".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_labels() {
        let refused = Error::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind(), "connect/refused");
        assert_eq!(refused.code(), ErrorCode::Connect);
        assert_eq!(Error::Timeout("login").kind(), "timeout/login");
        assert_eq!(
            Error::Auth("not-authorized".into()).kind(),
            "auth/not-authorized"
        );
        assert_eq!(Error::Closed.code(), ErrorCode::Io);
        let xml = Error::Xml(ParseError::RestrictedXml("comment"));
        assert_eq!(xml.kind(), "xml/restricted-xml");
    }
}
