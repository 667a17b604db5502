//! The session directory: where each bound resource lives.
//!
//! Full JID -> [`DirectoryEntry`] (edge node, connection id, session node, priority,
//! availability); bare JID -> its resources. The Redis implementation is [`RedisDirectory`];
//! its module documentation describes keys, liveness, the janitor and restart recovery.

use async_trait::async_trait;
use tokio::sync::watch;
use xmpp::{BareJid, FullJid};

use crate::codec::{Reader, Writer};
use crate::error::{ClusterError, Result};
use crate::node::NodeId;

mod redis;
pub use self::redis::{DirectoryConfig, RedisDirectory};

/// Where one bound resource lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirectoryEntry {
    /// The edge node holding the client's connection.
    pub edge_node: NodeId,
    /// The connection's id on that edge.
    pub connection_id: u64,
    /// The session node holding the session (the node that registered the entry).
    pub session_node: NodeId,
    /// The presence priority (RFC 6121 §4.7.2.3).
    pub priority: i8,
    /// Whether the resource has sent available presence.
    pub available: bool,
}

/// An entry the janitor removed because its session node died, so the caller can send
/// unavailable presence on its behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweptEntry {
    pub jid: FullJid,
    pub entry: DirectoryEntry,
}

/// The directory as seen by one node. Every write is made on behalf of this node: an entry's
/// `session_node` must be [`Directory::node_id`].
#[async_trait]
pub trait Directory: Send + Sync {
    /// The session node this handle writes for.
    fn node_id(&self) -> &NodeId;

    /// Records a bound resource, replacing any entry for the same full JID. Returns the entry it
    /// replaced if that one belonged to a live node (a resource conflict to resolve).
    async fn register(
        &self,
        jid: &FullJid,
        entry: &DirectoryEntry,
    ) -> Result<Option<DirectoryEntry>>;

    /// Changes priority and availability of an entry this node registered. Returns false when
    /// there is none (never registered, unregistered, or now owned by another node).
    async fn update(&self, jid: &FullJid, priority: i8, available: bool) -> Result<bool>;

    /// Removes an entry this node registered and returns it; an entry another node has since
    /// registered for the same full JID is left alone (`None`).
    async fn unregister(&self, jid: &FullJid) -> Result<Option<DirectoryEntry>>;

    /// The entry of one full JID, if its session node is alive.
    async fn lookup(&self, jid: &FullJid) -> Result<Option<DirectoryEntry>>;

    /// All resources of a bare JID whose session nodes are alive, sorted by resource.
    async fn resources(&self, jid: &BareJid) -> Result<Vec<(String, DirectoryEntry)>>;

    /// Writes this node's live sessions again, after [`Directory::resets`] reported that Redis
    /// lost them. Entries must belong to this node.
    async fn republish(&self, entries: &[(FullJid, DirectoryEntry)]) -> Result<()>;

    /// Removes the entries of dead nodes and returns them. Safe to call from every node: each
    /// dead node is claimed by one caller at a time.
    async fn sweep(&self) -> Result<Vec<SweptEntry>>;

    /// A counter of detected data losses (a Redis restart or flush, or this node having been
    /// declared dead). Each change means: call [`Directory::republish`] with every live session.
    fn resets(&self) -> watch::Receiver<u64>;
}

const ENTRY_VERSION: u8 = 1;

/// `version, len, session node` — the prefix that identifies the node owning an entry.
fn node_prefix(node: &NodeId) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(2 + node.as_str().len() + 4);
    w.u8(ENTRY_VERSION).str8(node.as_str())?;
    Ok(w.into_bytes())
}

/// `version, len, session node, incarnation` — the prefix of the entries one incarnation of a
/// node wrote.
fn owner_prefix(node: &NodeId, incarnation: u32) -> Result<Vec<u8>> {
    let mut p = node_prefix(node)?;
    p.extend_from_slice(&incarnation.to_le_bytes());
    Ok(p)
}

/// The last two bytes of an encoded entry: priority and flags. Fixed at the end so a script can
/// rewrite them without decoding the rest.
fn tail(priority: i8, available: bool) -> [u8; 2] {
    [priority.to_le_bytes()[0], u8::from(available)]
}

/// Layout: version (1), session node (len + bytes), incarnation (u32 LE), edge node
/// (len + bytes), connection id (LEB128), priority (i8), flags (bit 0: available).
/// Typically 20–30 bytes.
fn encode_entry(entry: &DirectoryEntry, incarnation: u32) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(
        2 + entry.session_node.as_str().len() + 4 + 1 + entry.edge_node.as_str().len() + 12,
    );
    w.u8(ENTRY_VERSION)
        .str8(entry.session_node.as_str())?
        .u32(incarnation)
        .str8(entry.edge_node.as_str())?
        .varint(entry.connection_id);
    let mut bytes = w.into_bytes();
    bytes.extend_from_slice(&tail(entry.priority, entry.available));
    Ok(bytes)
}

/// Returns the entry and the incarnation of the node that wrote it.
fn decode_entry(bytes: &[u8]) -> Result<(DirectoryEntry, u32)> {
    let mut r = Reader::new(bytes, "directory entry");
    let v = r.u8()?;
    if v != ENTRY_VERSION {
        return Err(ClusterError::Corrupt(format!(
            "directory entry: unknown version {v}"
        )));
    }
    let session_node = NodeId::new(r.str8()?)?;
    let incarnation = r.u32()?;
    let edge_node = NodeId::new(r.str8()?)?;
    let connection_id = r.varint()?;
    let priority = i8::from_le_bytes([r.u8()?]);
    let flags = r.u8()?;
    r.finish()?;
    Ok((
        DirectoryEntry {
            edge_node,
            connection_id,
            session_node,
            priority,
            available: flags & 1 != 0,
        },
        incarnation,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry() -> DirectoryEntry {
        DirectoryEntry {
            edge_node: NodeId::new("edge-3").unwrap(),
            connection_id: 1_234_567,
            session_node: NodeId::new("session-1").unwrap(),
            priority: -5,
            available: true,
        }
    }

    #[test]
    fn entries_round_trip_compactly() {
        for (e, inc) in [
            (entry(), 7),
            (
                DirectoryEntry {
                    connection_id: u64::MAX,
                    priority: i8::MIN,
                    available: false,
                    ..entry()
                },
                u32::MAX,
            ),
        ] {
            let bytes = encode_entry(&e, inc).unwrap();
            assert_eq!(decode_entry(&bytes).unwrap(), (e, inc));
        }
        // version + "session-1" + incarnation + "edge-3" + 3-byte varint + priority + flags
        assert_eq!(
            encode_entry(&entry(), 7).unwrap().len(),
            1 + 10 + 4 + 7 + 3 + 2
        );
    }

    #[test]
    fn prefixes_and_tail_sit_where_the_scripts_expect_them() {
        let e = entry();
        let bytes = encode_entry(&e, 9).unwrap();
        assert!(bytes.starts_with(&node_prefix(&e.session_node).unwrap()));
        assert!(bytes.starts_with(&owner_prefix(&e.session_node, 9).unwrap()));
        assert!(!bytes.starts_with(&owner_prefix(&e.session_node, 10).unwrap()));
        // A node whose id extends another's does not share its prefix (the length differs).
        let longer = NodeId::new("session-10").unwrap();
        assert!(!bytes.starts_with(&node_prefix(&longer).unwrap()));
        assert!(bytes.ends_with(&tail(e.priority, e.available)));
        let mut rewritten = bytes[..bytes.len() - 2].to_vec();
        rewritten.extend_from_slice(&tail(100, false));
        let (d, _) = decode_entry(&rewritten).unwrap();
        assert_eq!((d.priority, d.available), (100, false));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bytes = encode_entry(&entry(), 1).unwrap();
        for n in 0..bytes.len() {
            assert!(decode_entry(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_entry(&extra).is_err());
        let mut version = bytes;
        version[0] = 2;
        assert_eq!(
            decode_entry(&version).unwrap_err().code(),
            crate::ErrorCode::Corrupt
        );
        assert!(decode_entry(&[1, 2, b'{', b'}', 0, 0, 0, 0]).is_err());
    }
}
