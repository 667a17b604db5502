//! Relais cluster plumbing, shared by the clustered edge, session and router roles.
//!
//! - [`placement`]: every bare JID has one owning session node, chosen by rendezvous hashing
//!   over the live session members ([`Placement`]).
//! - [`membership`]: the live members of each role and a `watch` of changes ([`Membership`]):
//!   a static list, Redis heartbeats ([`RedisMembership`]) or, with the `kube` feature,
//!   Kubernetes EndpointSlices (`KubeMembership`).
//! - [`directory`]: the session directory in Redis ([`Directory`], [`RedisDirectory`]): where each
//!   full JID is bound, with liveness by node heartbeat, a janitor for dead nodes and recovery
//!   from a Redis restart.
//!
//! [`RedisClient`] connects to one Redis server or a Redis Cluster with the same API.
//!
//! The `kube` feature (on by default) brings kube-client, kube-runtime and k8s-openapi (API
//! v1_33). Measured on two cores, cold debug build of this crate: 33 s without it, 74 s with it
//! (feature unification rebuilds shared dependencies); on top of an already-built workspace
//! (hyper, rustls and aws-lc already compiled) it adds about 43 s. Crates that never run in
//! Kubernetes can depend on this one with `default-features = false`.

mod codec;
pub mod directory;
mod error;
pub mod membership;
mod node;
pub mod placement;
mod redis_client;
#[cfg(test)]
mod slot;

pub use directory::{Directory, DirectoryConfig, DirectoryEntry, RedisDirectory, SweptEntry};
pub use error::{ClusterError, ErrorCode, Result};
#[cfg(feature = "kube")]
pub use membership::{KubeMembership, KubeRole, members_from_slice};
pub use membership::{
    MemberSet, Membership, RedisMembership, RedisMembershipConfig, StaticMembership,
};
pub use node::{Member, NodeId, Role};
pub use placement::Placement;
pub use redis_client::{RedisClient, RedisConfig};
