//! Node identities, roles and members.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{ClusterError, Result};

/// The identity of one node (a Kubernetes pod name, a host name, an operator-chosen name).
///
/// 1..=200 bytes of ASCII letters, digits and `. _ - :`. That covers pod names, host names and
/// IP literals, and keeps ids safe inside Redis keys: no `{`/`}` (Redis Cluster hash tags), no
/// `#` (the directory's `node#incarnation` separator), no spaces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub const MAX_LEN: usize = 200;

    pub fn new(id: &str) -> Result<Self> {
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(NodeId(Arc::from(id)))
        } else {
            Err(ClusterError::InvalidNodeId(id.escape_debug().to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        NodeId::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.0)
    }
}

/// The three clustered roles (see ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Edge,
    Session,
    Router,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Edge, Role::Session, Role::Router];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Session => "session",
            Role::Router => "router",
        }
    }
}

impl FromStr for Role {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "edge" => Ok(Role::Edge),
            "session" => Ok(Role::Session),
            "router" => Ok(Role::Router),
            other => Err(ClusterError::Config(format!("unknown role: {other}"))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live node of one role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: NodeId,
    pub role: Role,
    /// The advertised gRPC address, `host:port` (IPv6 hosts in brackets); callers add the
    /// scheme.
    pub addr: String,
}

impl Member {
    pub fn new(id: NodeId, role: Role, addr: impl Into<String>) -> Self {
        Member {
            id,
            role,
            addr: addr.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn node_ids_accept_pod_names_and_ips_and_refuse_key_metacharacters() {
        for ok in [
            "session-0",
            "relais-session-7f9c.local",
            "10.0.0.1",
            "fe80::1",
            "a_b",
        ] {
            assert_eq!(NodeId::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a{b}", "a#1", "a b", "a/b", "é", &"x".repeat(201)] {
            let err = NodeId::new(bad).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("edges".parse::<Role>().is_err());
    }
}
