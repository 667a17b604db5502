//! Live per-user state and the sharded map that holds it.
//!
//! Every user with at least one bound resource has one [`User`] behind an async mutex. The
//! mutex serializes everything that touches the user (resources, presence, roster cache and
//! the read-modify-write of roster items in storage), so the RFC 6121 Appendix A state
//! machine never races with itself. The service never holds two users' locks at once: what a
//! handler must deliver to someone else is queued and routed after the lock is released.
//!
//! Entries of users without resources are transient: the [`UserGuard`] removes them from the
//! map when dropped, so an idle offline account costs nothing here.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use storage::RosterItem;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use xmpp::{BareJid, Element, FullJid};

use crate::ClientSink;
use crate::sm::SmSink;

/// The most directed-presence targets remembered per resource.
pub(crate) const MAX_DIRECTED: usize = 256;

/// One bound resource.
pub(crate) struct Resource {
    pub jid: FullJid,
    pub token: u64,
    /// Where deliveries go: the connection's sink, or the `sm` wrapper around it.
    pub sink: Arc<dyn ClientSink>,
    /// XEP-0198 state, once the client enabled stream management (the same object as `sink`).
    pub sm: Option<Arc<SmSink>>,
    /// The last available presence the resource broadcast (without `to`), boxed so an idle
    /// resource without presence pays one pointer.
    pub presence: Option<Box<Element>>,
    /// Where the resource sent directed presence (RFC 6121 §4.6), as written in `to`.
    pub directed: Vec<String>,
    pub priority: i8,
    /// Sent available presence and not unavailable since.
    pub available: bool,
    /// Requested the roster, so gets roster pushes (RFC 6121 §2.1.6).
    pub interested: bool,
    /// Offline messages were already flushed to this resource during this availability.
    pub offline_done: bool,
    /// With stream management, offline messages are delivered a page at a time as the client
    /// acknowledges them: the last offline id handed over, while more may remain.
    pub offline_cursor: Option<u64>,
    /// Replaced a session that was available: contacts still see that presence, so an
    /// unavailable is owed even if this resource never sends presence itself.
    pub stale_presence: bool,
    /// When the resource was bound, milliseconds since the Unix epoch (for the admin API).
    pub since_ms: u64,
}

impl Resource {
    pub fn new(jid: FullJid, token: u64, sink: Arc<dyn ClientSink>) -> Self {
        Resource {
            jid,
            token,
            sink,
            sm: None,
            presence: None,
            directed: Vec::new(),
            priority: 0,
            available: false,
            interested: false,
            offline_done: false,
            offline_cursor: None,
            stale_presence: false,
            since_ms: crate::clock::now_ms(),
        }
    }

    /// Whether contacts currently believe this resource is online.
    pub fn announced(&self) -> bool {
        self.available || self.stale_presence
    }
}

/// The cached roster of an online user.
pub(crate) struct Roster {
    pub ver: u64,
    pub items: BTreeMap<BareJid, RosterItem>,
}

/// The live state of one user.
#[derive(Default)]
pub(crate) struct User {
    pub resources: Vec<Resource>,
    /// Loaded lazily (at the first presence broadcast or roster request) and kept coherent:
    /// every roster write for this user happens under this user's lock.
    pub roster: Option<Box<Roster>>,
    /// XEP-0313 preferences, read once per live entry and rewritten (under this user's lock)
    /// when the user sets them, so archiving does not ask the storage for every message.
    pub archive_prefs: Mutex<Option<Arc<storage::ArchivePrefs>>>,
    /// Set when the entry left the map; a task that waited on this lock retries.
    removed: bool,
}

impl User {
    pub fn resource(&self, jid: &FullJid) -> Option<&Resource> {
        self.resources.iter().find(|r| &r.jid == jid)
    }

    pub fn resource_mut(&mut self, jid: &FullJid) -> Option<&mut Resource> {
        self.resources.iter_mut().find(|r| &r.jid == jid)
    }

    pub fn available(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(|r| r.available)
    }
}

type Shard = Mutex<HashMap<BareJid, Arc<AsyncMutex<User>>>>;

/// The map of live users, split into shards so lookups on different users rarely contend.
pub(crate) struct Users {
    shards: Box<[Shard]>,
}

const SHARDS: usize = 64;

impl Users {
    pub fn new() -> Self {
        Users {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, bare: &BareJid) -> &Shard {
        let mut h = DefaultHasher::new();
        bare.hash(&mut h);
        // The remainder is below SHARDS, so the index is always in range.
        let idx = (h.finish() % SHARDS as u64) as usize;
        &self.shards[idx]
    }

    /// Locks the user, creating a transient entry if the user has none.
    pub async fn lock(&self, bare: &BareJid) -> UserGuard<'_> {
        loop {
            let entry = {
                let mut map = self
                    .shard(bare)
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match map.get(bare) {
                    Some(e) => Arc::clone(e),
                    None => {
                        let e = Arc::new(AsyncMutex::new(User::default()));
                        map.insert(bare.clone(), Arc::clone(&e));
                        e
                    }
                }
            };
            let guard = entry.lock_owned().await;
            if guard.removed {
                continue;
            }
            return UserGuard {
                users: self,
                bare: bare.clone(),
                guard,
            };
        }
    }

    /// Every user with an entry now (a snapshot).
    pub fn keys(&self) -> Vec<BareJid> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many users have an entry (online users plus transient ones being worked on).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Exclusive access to one user. Dropping it removes the user's entry if it has no
/// resources left (the roster cache goes with it).
pub(crate) struct UserGuard<'a> {
    users: &'a Users,
    bare: BareJid,
    guard: OwnedMutexGuard<User>,
}

impl UserGuard<'_> {
    pub fn bare(&self) -> &BareJid {
        &self.bare
    }
}

impl Deref for UserGuard<'_> {
    type Target = User;
    fn deref(&self) -> &User {
        &self.guard
    }
}

impl DerefMut for UserGuard<'_> {
    fn deref_mut(&mut self) -> &mut User {
        &mut self.guard
    }
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        if !self.guard.resources.is_empty() || self.guard.removed {
            return;
        }
        // Still holding the user's lock: anyone who got the Arc meanwhile waits, then sees
        // `removed` and looks the user up again.
        self.guard.removed = true;
        let mut map = self
            .users
            .shard(&self.bare)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ours = map
            .get(&self.bare)
            .is_some_and(|e| Arc::ptr_eq(e, OwnedMutexGuard::mutex(&self.guard)));
        if ours {
            map.remove(&self.bare);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_resource_state_is_compact() {
        // One idle resource: the struct plus its full JID; presence, directed targets and the
        // roster cost nothing until used.
        let size = std::mem::size_of::<Resource>();
        assert!(size <= 128, "Resource is {size} bytes");
        assert!(
            std::mem::size_of::<User>() <= 64,
            "User is {} bytes",
            std::mem::size_of::<User>()
        );
    }

    #[tokio::test]
    async fn transient_entries_leave_the_map() {
        let users = Users::new();
        let bare: BareJid = "a@example.com".parse().unwrap_or_else(|e| panic!("{e}"));
        {
            let g = users.lock(&bare).await;
            assert!(g.resources.is_empty());
            assert_eq!(users.len(), 1);
        }
        assert_eq!(users.len(), 0);
    }
}
