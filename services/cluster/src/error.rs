//! The crate's error type.

/// A small code for each error kind, mapped by callers to gRPC statuses and log fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Redis (or the Kubernetes API) cannot be reached or failed; retrying later may succeed.
    Unavailable,
    /// A caller passed something this crate refuses (a bad node id, a foreign entry).
    InvalidInput,
    /// Stored data that cannot be decoded.
    Corrupt,
    /// A configuration value (a URL, a duration) is unusable.
    Config,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid node id: {0}")]
    InvalidNodeId(String),
    /// An entry whose session node is not the node this directory handle belongs to.
    #[error("entry belongs to session node {entry}, this handle is {local}")]
    ForeignNode { entry: String, local: String },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[cfg(feature = "kube")]
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

impl ClusterError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ClusterError::Redis(_) => ErrorCode::Unavailable,
            #[cfg(feature = "kube")]
            ClusterError::Kube(_) => ErrorCode::Unavailable,
            ClusterError::InvalidNodeId(_) | ClusterError::ForeignNode { .. } => {
                ErrorCode::InvalidInput
            }
            ClusterError::Corrupt(_) => ErrorCode::Corrupt,
            ClusterError::Config(_) => ErrorCode::Config,
        }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
