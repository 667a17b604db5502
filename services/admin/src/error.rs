//! The admin API's error, with a code per kind that both transports map: to a gRPC status
//! (in `proto`) and to an HTTP status with a JSON body (in [`crate::http`]).

/// A small code per error kind. Its name (`as_str`) is the `code` of the JSON errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unsupported,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unsupported,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status of the JSON mapping.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::FailedPrecondition => 412,
            ErrorCode::Unsupported => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A malformed argument: a bad JID or domain, an empty password, an unknown condition.
    #[error("{0}")]
    InvalidArgument(String),
    /// No token, or one the server does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's scope does not cover the operation.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is refused in the current state (a domain's account limit is reached).
    #[error("{0}")]
    FailedPrecondition(String),
    /// This server cannot do it (for example domains that come from the config file).
    #[error("{0}")]
    Unsupported(String),
    /// Storage or a node cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            AdminError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AdminError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            AdminError::NotFound(_) => ErrorCode::NotFound,
            AdminError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            AdminError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            AdminError::Unsupported(_) => ErrorCode::Unsupported,
            AdminError::Unavailable(_) => ErrorCode::Unavailable,
            AdminError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message without the variant's prefix (what travels on the wire).
    pub fn message(&self) -> &str {
        match self {
            AdminError::InvalidArgument(m)
            | AdminError::Unauthenticated(m)
            | AdminError::PermissionDenied(m)
            | AdminError::NotFound(m)
            | AdminError::AlreadyExists(m)
            | AdminError::FailedPrecondition(m)
            | AdminError::Unsupported(m)
            | AdminError::Unavailable(m)
            | AdminError::Internal(m) => m,
        }
    }

    /// The error of kind `code` with `message` (the inverse of `code` and `message`).
    pub fn from_code(code: ErrorCode, message: String) -> AdminError {
        match code {
            ErrorCode::InvalidArgument => AdminError::InvalidArgument(message),
            ErrorCode::Unauthenticated => AdminError::Unauthenticated(message),
            ErrorCode::PermissionDenied => AdminError::PermissionDenied(message),
            ErrorCode::NotFound => AdminError::NotFound(message),
            ErrorCode::AlreadyExists => AdminError::AlreadyExists(message),
            ErrorCode::FailedPrecondition => AdminError::FailedPrecondition(message),
            ErrorCode::Unsupported => AdminError::Unsupported(message),
            ErrorCode::Unavailable => AdminError::Unavailable(message),
            ErrorCode::Internal => AdminError::Internal(message),
        }
    }

    /// A storage error in words, `what` naming the object (`alice@example.org`).
    pub fn storage(e: storage::StorageError, what: &str) -> AdminError {
        use storage::StorageError as S;
        match e {
            S::NotFound => AdminError::NotFound(format!("{what} does not exist")),
            S::AlreadyExists => AdminError::AlreadyExists(format!("{what} already exists")),
            S::QuotaExceeded => {
                AdminError::FailedPrecondition(format!("quota exceeded for {what}"))
            }
            S::Unavailable(m) => AdminError::Unavailable(format!("storage: {m}")),
            S::Corrupt(m) => AdminError::Internal(format!("corrupt data for {what}: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_distinct_names_and_round_trip() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(c.as_str()), Some(c));
            let e = AdminError::from_code(c, "m".into());
            assert_eq!(e.code(), c);
            assert_eq!(e.message(), "m");
        }
        assert_eq!(ErrorCode::from_name("nope"), None);
    }

    #[test]
    fn http_statuses_follow_the_kind() {
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
        assert_eq!(ErrorCode::Unauthenticated.http_status(), 401);
        assert_eq!(ErrorCode::PermissionDenied.http_status(), 403);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::AlreadyExists.http_status(), 409);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        for c in ErrorCode::ALL {
            let s = c.http_status();
            assert!((400..600).contains(&s), "{c:?}");
        }
    }

    #[test]
    fn storage_errors_name_the_object() {
        let e = AdminError::storage(storage::StorageError::AlreadyExists, "a@example.org");
        assert_eq!(e.code(), ErrorCode::AlreadyExists);
        assert_eq!(e.to_string(), "a@example.org already exists");
        let e = AdminError::storage(storage::StorageError::Unavailable("locked".into()), "x");
        assert_eq!(e.code(), ErrorCode::Unavailable);
    }
}
