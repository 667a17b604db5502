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
    /// Deletes the account and all its data (roster, offline, vCard). `NotFound` if absent.
    async fn delete_account(&self, jid: &BareJid) -> Result<()>;
    /// Accounts of one domain, sorted.
    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>>;
    async fn account_exists(&self, jid: &BareJid) -> Result<bool>;
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

#[async_trait]
pub trait OfflineStore: Send + Sync + 'static {
    /// Appends, unless the owner already holds `quota` messages (`QuotaExceeded`).
    async fn push(&self, owner: &BareJid, stamp_ms: u64, xml: &str, quota: usize) -> Result<u64>;
    /// Every stored message, oldest first (not removed).
    async fn list(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>>;
    /// Removes the messages with id <= `up_to` (after they were delivered).
    async fn remove_up_to(&self, owner: &BareJid, up_to: u64) -> Result<()>;
    async fn count(&self, owner: &BareJid) -> Result<usize>;
}

#[async_trait]
pub trait VcardStore: Send + Sync + 'static {
    /// The stored `<vCard xmlns='vcard-temp'>` as XML, if any.
    async fn get_vcard(&self, owner: &BareJid) -> Result<Option<String>>;
    /// Replaces the vCard (an empty vCard element is stored as given).
    async fn set_vcard(&self, owner: &BareJid, xml: &str) -> Result<()>;
}

/// All stores of one backend, as trait objects.
#[derive(Clone)]
pub struct Storage {
    pub accounts: Arc<dyn AccountStore>,
    pub rosters: Arc<dyn RosterStore>,
    pub offline: Arc<dyn OfflineStore>,
    pub vcards: Arc<dyn VcardStore>,
}
