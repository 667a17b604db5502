//! Relais durable storage: the async store traits and their backends.
//!
//! Every write that acknowledges a client action is durable (committed, fsynced) before the
//! returned future resolves. Backends: `sqlite` (embedded, standalone mode). ScyllaDB comes later
//! behind the same traits; every backend runs the conformance suite of [`suite`] (feature
//! `testsuite`) through [`storage_test_suite!`].

use std::sync::Arc;

use async_trait::async_trait;
use xmpp::BareJid;
use xmpp::scram::{ScramHash, ScramKeys};

#[cfg(feature = "scylla")]
pub mod scylla;
pub mod sqlite;
#[cfg(any(test, feature = "testsuite"))]
pub mod suite;

/// A small code for each error kind, mapped by callers to gRPC statuses and XMPP errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    QuotaExceeded,
    Unavailable,
    Corrupt,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The backend cannot be reached or failed (I/O, database locked, task join failure).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StorageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::NotFound => ErrorCode::NotFound,
            StorageError::AlreadyExists => ErrorCode::AlreadyExists,
            StorageError::QuotaExceeded => ErrorCode::QuotaExceeded,
            StorageError::Unavailable(_) => ErrorCode::Unavailable,
            StorageError::Corrupt(_) => ErrorCode::Corrupt,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The SCRAM keys of one account, one set per hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub keys: Vec<ScramKeys>,
}

impl Credentials {
    pub fn get(&self, hash: ScramHash) -> Option<&ScramKeys> {
        self.keys.iter().find(|k| k.hash == hash)
    }
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// `AlreadyExists` when the account exists.
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> Result<()>;
    /// `NotFound` when the account does not exist.
    async fn set_credentials(&self, jid: &BareJid, creds: &Credentials) -> Result<()>;
    async fn get_credentials(&self, jid: &BareJid) -> Result<Option<Credentials>>;
    /// Deletes the account and all its data (roster, offline, vCard, archive). `NotFound` if
    /// absent.
    async fn delete_account(&self, jid: &BareJid) -> Result<()>;
    /// Accounts of one domain, sorted.
    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>>;
    async fn account_exists(&self, jid: &BareJid) -> Result<bool>;
    /// How many accounts `domain` has (for `max_accounts`). Backends answer without listing.
    async fn count_accounts(&self, domain: &str) -> Result<u64> {
        Ok(u64::try_from(self.list_accounts(domain).await?.len()).unwrap_or(u64::MAX))
    }
}

/// Per-domain settings of a hosted domain. `None` means the server's default (the
/// `[session]` section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainSettings {
    /// XEP-0077 in-band registration is offered on this domain's streams.
    pub registration_open: bool,
    /// XEP-0313: days archived messages are kept.
    pub archive_retention_days: Option<u32>,
    /// The most accounts the domain may have.
    pub max_accounts: Option<u32>,
    /// The most bound resources per account.
    pub max_sessions_per_account: Option<u32>,
    /// Offline messages kept per account.
    pub offline_quota: Option<u32>,
}

/// A domain as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRecord {
    /// The domain, prepared like a JID domainpart (lowercase, IDNA).
    pub domain: String,
    pub settings: DomainSettings,
    /// Removed: no longer hosted, its accounts and data kept until a purge.
    pub removed: bool,
    /// The last write, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// The hosted domains added at runtime (virtual hosting). Domains named in the configuration
/// are hosted whether or not they are stored here.
#[async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Creates or updates a domain; a removed domain is hosted again.
    async fn put_domain(&self, domain: &str, settings: &DomainSettings) -> Result<DomainRecord>;
    async fn get_domain(&self, domain: &str) -> Result<Option<DomainRecord>>;
    /// Every stored domain, removed ones included, sorted by name.
    async fn list_domains(&self) -> Result<Vec<DomainRecord>>;
    /// Marks a domain removed (its accounts and their data are kept). `NotFound` if absent.
    async fn remove_domain(&self, domain: &str) -> Result<()>;
    /// Deletes a removed domain and every account of it with all their data; returns how
    /// many accounts were deleted. `NotFound` unless the domain exists and is removed.
    async fn purge_domain(&self, domain: &str) -> Result<u64>;
    /// A value that changes on every write of this store (by any process or node); cheap
    /// enough to poll every few seconds. 0 before the first write.
    async fn domains_version(&self) -> Result<u64>;
}

/// The subscription of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

/// One roster item with the full RFC 6121 Appendix A state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: BareJid,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// Pending Out: we sent a subscribe the contact has not answered (`ask="subscribe"`).
    pub ask_out: bool,
    /// Pending In: the contact asked to subscribe and the user has not answered.
    pub pending_in: bool,
    /// Pre-approved (RFC 6121 §3.4): a subscribe from the contact is approved automatically.
    pub approved: bool,
}

impl RosterItem {
    pub fn new(jid: BareJid) -> Self {
        RosterItem {
            jid,
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask_out: false,
            pending_in: false,
            approved: false,
        }
    }
}

#[async_trait]
pub trait RosterStore: Send + Sync + 'static {
    /// The current version (0 for an empty, never-written roster) and every stored item,
    /// sorted by JID.
    async fn get_roster(&self, owner: &BareJid) -> Result<(u64, Vec<RosterItem>)>;
    async fn get_item(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>>;
    /// Inserts or replaces; returns the new roster version (strictly greater than before).
    async fn put_item(&self, owner: &BareJid, item: &RosterItem) -> Result<u64>;
    /// Removes; returns the new roster version. `NotFound` if there was no such item.
    async fn remove_item(&self, owner: &BareJid, contact: &BareJid) -> Result<u64>;
}

/// One stored offline stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Monotonic per store; used to delete after delivery.
    pub id: u64,
    /// When it was stored, milliseconds since the Unix epoch.
    pub stamp_ms: u64,
    /// The stanza as serialized XML (standalone form, with xmlns).
    pub xml: String,
}

/// How much one account may hold in offline storage: a count and a size (the bytes of the
/// stored XML), whichever is reached first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineQuota {
    pub messages: usize,
    pub bytes: usize,
}

impl OfflineQuota {
    /// A quota on the count alone.
    pub const fn messages(messages: usize) -> Self {
        OfflineQuota {
            messages,
            bytes: usize::MAX,
        }
    }

    /// Whether an owner holding `held` messages of `held_bytes` in all may take one more of
    /// `size` bytes.
    pub fn admits(&self, held: usize, held_bytes: usize, size: usize) -> bool {
        held < self.messages && held_bytes.saturating_add(size) <= self.bytes
    }
}

#[async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Appends, unless the owner's messages with this one would pass `quota` in count or in
    /// bytes (`QuotaExceeded`).
    async fn push(
        &self,
        owner: &BareJid,
        stamp_ms: u64,
        xml: &str,
        quota: OfflineQuota,
    ) -> Result<u64>;
    /// Every stored message, oldest first (not removed).
    async fn list(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>>;
    /// One page of the stored messages, oldest first: those with an id greater than `after`,
    /// at most `max_messages`, and no more once they add up to `max_bytes` of XML (but always
    /// the first one, whatever its size, so a page is never empty while messages remain).
    /// Reads only the rows it returns (and one more at most).
    async fn list_page(
        &self,
        owner: &BareJid,
        after: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>>;
    /// Removes the messages with id <= `up_to` (after they were delivered).
    async fn remove_up_to(&self, owner: &BareJid, up_to: u64) -> Result<()>;
    /// Removes the owner's messages with these ids (those that are not stored are ignored).
    async fn remove_ids(&self, owner: &BareJid, ids: &[u64]) -> Result<()>;
    async fn count(&self, owner: &BareJid) -> Result<usize>;
    /// Removes every owner's messages stored before `older_than_ms` (retention); returns how
    /// many were removed.
    async fn expire(&self, older_than_ms: u64) -> Result<u64>;
}

#[async_trait]
pub trait VcardStore: Send + Sync + 'static {
    /// The stored `<vCard xmlns='vcard-temp'>` as XML, if any.
    async fn get_vcard(&self, owner: &BareJid) -> Result<Option<String>>;
    /// Replaces the vCard (an empty vCard element is stored as given).
    async fn set_vcard(&self, owner: &BareJid, xml: &str) -> Result<()>;
}

/// Which side of a conversation an archived message came from, seen from the archive's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the owner.
    Incoming,
    /// Sent by the owner.
    Outgoing,
}

/// A message to archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArchived<'a> {
    /// The other party, bare.
    pub with: &'a BareJid,
    /// When it was archived, milliseconds since the Unix epoch.
    pub stamp_ms: u64,
    pub direction: Direction,
    /// The message as serialized XML (standalone form, with xmlns).
    pub xml: &'a str,
}

/// Where a message was archived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedRef {
    /// The archive id (the XEP-0359 stanza-id): unique in the store, and ordered like the
    /// messages (a later append gets a greater id, comparing as strings).
    pub id: String,
    /// The archive time. Stores keep times monotonic, so a stamp earlier than the previous
    /// append's is raised to it and ids and times always sort alike.
    pub stamp_ms: u64,
}

/// One archived message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub id: String,
    pub stamp_ms: u64,
    pub with: BareJid,
    pub direction: Direction,
    pub xml: String,
}

/// Which archived messages a query selects. Every given condition applies; `ids` (when not
/// empty) keeps only those messages. An id that names no message of this owner's archive, in
/// `after_id`, `before_id` or `ids`, fails the query with `NotFound`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    pub with: Option<BareJid>,
    /// At or after, milliseconds since the Unix epoch.
    pub start_ms: Option<u64>,
    /// At or before, milliseconds since the Unix epoch.
    pub end_ms: Option<u64>,
    /// Strictly after this id.
    pub after_id: Option<String>,
    /// Strictly before this id.
    pub before_id: Option<String>,
    pub ids: Vec<String>,
}

/// Which page of the selected messages a query returns (XEP-0059 semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    /// The most messages returned; 0 asks for the count only.
    pub max: usize,
    /// The page right after this id (paging forwards). An unknown id is `NotFound`.
    pub after: Option<String>,
    /// The page right before this id (paging backwards). An unknown id is `NotFound`.
    pub before: Option<String>,
    /// Without `after`/`before`: the last page instead of the first.
    pub from_end: bool,
}

impl Default for ArchivePage {
    fn default() -> Self {
        ArchivePage {
            max: 50,
            after: None,
            before: None,
            from_end: false,
        }
    }
}

/// The answer to an archive query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveResult {
    /// The page, oldest first.
    pub items: Vec<ArchivedMessage>,
    /// The page reaches the end of the selection in the direction of paging (the newest
    /// message when paging forwards, the oldest when paging backwards).
    pub complete: bool,
    /// How many messages the filter selects in all (ignoring the page).
    pub count: usize,
}

/// The oldest and newest message of an archive; both `None` when it is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveMetadata {
    /// (id, stamp_ms)
    pub first: Option<(String, u64)>,
    pub last: Option<(String, u64)>,
}

/// The default of [`ArchivePrefs`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveDefault {
    #[default]
    Always,
    Never,
    /// Only messages exchanged with roster contacts.
    Roster,
}

/// What an owner wants archived (XEP-0313 preferences).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePrefs {
    pub default: ArchiveDefault,
    pub always: Vec<BareJid>,
    pub never: Vec<BareJid>,
}

/// Each account's message archive (XEP-0313).
#[async_trait]
pub trait ArchiveStore: Send + Sync + 'static {
    /// Appends a message to `owner`'s archive and returns its new id.
    async fn append(&self, owner: &BareJid, msg: &NewArchived<'_>) -> Result<ArchivedRef>;
    /// One page of the messages `filter` selects. Removed messages are never returned nor
    /// counted.
    async fn query(
        &self,
        owner: &BareJid,
        filter: &ArchiveFilter,
        page: &ArchivePage,
    ) -> Result<ArchiveResult>;
    async fn metadata(&self, owner: &BareJid) -> Result<ArchiveMetadata>;
    /// `None` when the owner never set preferences.
    async fn get_prefs(&self, owner: &BareJid) -> Result<Option<ArchivePrefs>>;
    async fn set_prefs(&self, owner: &BareJid, prefs: &ArchivePrefs) -> Result<()>;
    /// Removes one message, leaving a tombstone (so a later retraction can be reported);
    /// `NotFound` when the owner's archive has no such (live) message.
    async fn remove(&self, owner: &BareJid, id: &str) -> Result<()>;
    /// Retention: deletes every message of the accounts of `domain` archived before
    /// `older_than_ms`, tombstones included, in batches that each hold the store briefly.
    /// Returns how many were deleted.
    async fn expire(&self, domain: &str, older_than_ms: u64) -> Result<u64>;
}

/// All stores of one backend, as trait objects.
#[derive(Clone)]
pub struct Storage {
    pub accounts: Arc<dyn AccountStore>,
    pub rosters: Arc<dyn RosterStore>,
    pub offline: Arc<dyn OfflineStore>,
    pub vcards: Arc<dyn VcardStore>,
    pub archive: Arc<dyn ArchiveStore>,
    pub domains: Arc<dyn DomainStore>,
}

/// The prepared form of a domain name (lowercase, IDNA), or the name lowercased when it is not
/// a valid domain (it then matches nothing stored).
pub fn prepare_domain(domain: &str) -> String {
    BareJid::domain_only(domain.trim_end_matches('.'))
        .map(|j| j.domain().to_owned())
        .unwrap_or_else(|_| domain.to_lowercase())
}
