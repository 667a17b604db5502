//! This crate's error type, and the mappings between the domain errors (`SessionError`,
//! `RouteError`, `StorageError`) and gRPC statuses, both ways.

use router::RouteError;
use session::SessionError;
use storage::StorageError;
use tonic::{Code, Status};

/// A small code per error kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A malformed message or argument (bad JID, unparsable XML, bad endpoint).
    InvalidArgument,
    /// The peer cannot be reached, or the stream to it is down.
    Unavailable,
    /// The peer answered with an error.
    Rpc,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A message that cannot be decoded into the domain types.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// An endpoint URI that cannot be used.
    #[error("invalid endpoint: {0}")]
    Endpoint(String),
    /// The peer cannot be reached (connect failed, stream broke, retries exhausted).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The peer answered with a gRPC status other than OK.
    #[error("rpc failed ({code:?}): {message}")]
    Rpc { code: Code, message: String },
    /// Serving failed (the listener or the HTTP/2 server).
    #[error("server: {0}")]
    Serve(String),
}

impl ProtoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::Malformed(_) | ProtoError::Endpoint(_) => ErrorCode::InvalidArgument,
            ProtoError::Unavailable(_) | ProtoError::Serve(_) => ErrorCode::Unavailable,
            ProtoError::Rpc { .. } => ErrorCode::Rpc,
        }
    }
}

impl From<Status> for ProtoError {
    fn from(s: Status) -> Self {
        ProtoError::Rpc {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<ProtoError> for Status {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Malformed(m) => Status::invalid_argument(m),
            ProtoError::Endpoint(m) => Status::invalid_argument(m),
            ProtoError::Unavailable(m) => Status::unavailable(m),
            ProtoError::Rpc { code, message } => Status::new(code, message),
            ProtoError::Serve(m) => Status::internal(m),
        }
    }
}

/// Messages the session service uses in `&'static str` errors, so that they survive the
/// wire unchanged; anything else becomes the generic text of its variant.
const KNOWN_MESSAGES: &[&str] = &[
    "stream management",
    "stream management not enabled",
    "stream management already enabled",
    "h too large",
    "too many resources bound for this account",
    "malformed id",
    "not this account's session",
    "unknown or expired session",
    "session ended",
    "cannot resend to the new connection",
    "connection is being closed",
];

/// The `&'static str` for a message from the wire: the known text, or `fallback`.
pub(crate) fn known_message(msg: &str, fallback: &'static str) -> &'static str {
    KNOWN_MESSAGES
        .iter()
        .find(|k| **k == msg)
        .copied()
        .unwrap_or(fallback)
}

/// The gRPC status for a session error.
pub fn session_error_to_status(e: &SessionError) -> Status {
    let msg = match e {
        SessionError::ResourceConstraint(m)
        | SessionError::Unsupported(m)
        | SessionError::ResumeFailed(m) => (*m).to_owned(),
        other => other.to_string(),
    };
    match e {
        SessionError::NoSession => Status::not_found(msg),
        SessionError::ResourceConstraint(_) => Status::resource_exhausted(msg),
        SessionError::Storage(_) | SessionError::Unavailable(_) => Status::unavailable(msg),
        SessionError::Unsupported(_) => Status::unimplemented(msg),
        SessionError::ResumeFailed(_) => Status::failed_precondition(msg),
    }
}

/// The session error for a gRPC status (the inverse of [`session_error_to_status`] on its
/// codes; every other code means the service could not be reached or failed).
pub fn status_to_session_error(s: &Status) -> SessionError {
    match s.code() {
        Code::NotFound => SessionError::NoSession,
        Code::ResourceExhausted => SessionError::ResourceConstraint(known_message(
            s.message(),
            "resource constraint on the session node",
        )),
        Code::Unimplemented => SessionError::Unsupported(known_message(
            s.message(),
            "unsupported by the session node",
        )),
        Code::FailedPrecondition => SessionError::ResumeFailed(known_message(
            s.message(),
            "resumption refused by the session node",
        )),
        _ => SessionError::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The gRPC status for a route error.
pub fn route_error_to_status(e: &RouteError) -> Status {
    match e {
        RouteError::NoRoute(domain) => Status::not_found(domain.clone()),
        RouteError::Unavailable(m) => Status::unavailable(m.clone()),
        RouteError::Unconfirmed(m) => Status::deadline_exceeded(m.clone()),
    }
}

/// The route error for a gRPC status: `NOT_FOUND` is no route (the message is the domain),
/// `DEADLINE_EXCEEDED` unconfirmed, anything else unavailable.
pub fn status_to_route_error(s: &Status) -> RouteError {
    match s.code() {
        Code::NotFound => RouteError::NoRoute(s.message().to_owned()),
        Code::DeadlineExceeded => RouteError::Unconfirmed(s.message().to_owned()),
        _ => RouteError::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The gRPC status for a storage error.
pub fn storage_error_to_status(e: &StorageError) -> Status {
    let msg = e.to_string();
    match e {
        StorageError::NotFound => Status::not_found(msg),
        StorageError::AlreadyExists => Status::already_exists(msg),
        StorageError::QuotaExceeded => Status::resource_exhausted(msg),
        StorageError::Unavailable(_) => Status::unavailable(msg),
        StorageError::Corrupt(_) => Status::data_loss(msg),
    }
}

/// The storage error for a gRPC status.
pub fn status_to_storage_error(s: &Status) -> StorageError {
    match s.code() {
        Code::NotFound => StorageError::NotFound,
        Code::AlreadyExists => StorageError::AlreadyExists,
        Code::ResourceExhausted => StorageError::QuotaExceeded,
        Code::DataLoss => StorageError::Corrupt(s.message().to_owned()),
        _ => StorageError::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_survive_a_status_round_trip() {
        let cases = [
            SessionError::NoSession,
            SessionError::ResourceConstraint("too many resources bound for this account"),
            SessionError::Unsupported("h too large"),
            SessionError::ResumeFailed("unknown or expired session"),
            SessionError::Unavailable("down".to_owned()),
        ];
        for e in cases {
            let back = status_to_session_error(&session_error_to_status(&e));
            assert_eq!(back.code(), e.code(), "{e}");
            match (&e, &back) {
                (SessionError::ResourceConstraint(a), SessionError::ResourceConstraint(b))
                | (SessionError::Unsupported(a), SessionError::Unsupported(b))
                | (SessionError::ResumeFailed(a), SessionError::ResumeFailed(b)) => {
                    assert_eq!(a, b)
                }
                _ => {}
            }
        }
        // An unknown message keeps its kind with a generic text.
        let s = Status::unimplemented("something new");
        assert!(matches!(
            status_to_session_error(&s),
            SessionError::Unsupported("unsupported by the session node")
        ));
        assert!(matches!(
            status_to_session_error(&Status::deadline_exceeded("slow")),
            SessionError::Unavailable(_)
        ));
    }

    #[test]
    fn route_and_storage_errors_map_both_ways() {
        let e = status_to_route_error(&route_error_to_status(&RouteError::NoRoute(
            "elsewhere.example".into(),
        )));
        assert!(matches!(e, RouteError::NoRoute(ref d) if d == "elsewhere.example"));
        let e = status_to_route_error(&route_error_to_status(&RouteError::Unavailable("x".into())));
        assert_eq!(e.code(), router::ErrorCode::Unavailable);
        for e in [
            StorageError::NotFound,
            StorageError::AlreadyExists,
            StorageError::QuotaExceeded,
            StorageError::Unavailable("db".into()),
            StorageError::Corrupt("bad".into()),
        ] {
            assert_eq!(
                status_to_storage_error(&storage_error_to_status(&e)).code(),
                e.code()
            );
        }
        let s: Status = ProtoError::Malformed("bad jid".into()).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let p: ProtoError = Status::unavailable("gone").into();
        assert_eq!(p.code(), ErrorCode::Rpc);
    }
}
