//! Virtual hosting: the hosted domains at runtime, their settings, and the operations that
//! change them.
//!
//! [`Domains`] is the registry every role reads: the static domains of the configuration
//! (always hosted) plus the domains of the [`DomainStore`] that are not removed. It is a
//! `tokio::sync::watch` of an immutable snapshot (`Arc<DomainsSnapshot>`): a lookup borrows the
//! current snapshot (a shared read, no writer in the way except for the instant a reload swaps
//! it) and a change wakes every subscriber. Nodes with storage reload it by polling
//! [`DomainStore::domains_version`] ([`poll_store`]); edges and routers, which have no storage
//! in a cluster, poll a session node over gRPC and [`Domains::apply`] what it answers.
//!
//! The functions [`add_domain`], [`update_domain`], [`remove_domain`], [`purge_domain`] are
//! what an operator interface calls (the `relais domain` command, the admin API). They write
//! the store and reload the registry of the calling process at once; every other process
//! picks the change up at its next poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use storage::{AccountStore, Credentials, DomainRecord, DomainSettings, DomainStore, StorageError};
use tokio::sync::watch;
use xmpp::{BareJid, FullJid, StreamErrorCondition};

use crate::{LocalSessionService, SessionToken, ToClient};

/// One state of the hosted domains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainsSnapshot {
    /// The store version this snapshot reflects (0: nothing loaded from a store yet).
    pub version: u64,
    /// Every hosted domain (prepared names) and its settings.
    pub hosted: HashMap<String, DomainSettings>,
}

/// The hosted domains of this process, shared by the edge, the session service and the router.
pub struct Domains {
    /// The configured domains: always hosted, with their configured settings.
    statics: HashMap<String, DomainSettings>,
    tx: watch::Sender<Arc<DomainsSnapshot>>,
    /// One reload at a time (a poll and an operator's write may race).
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.snapshot();
        f.debug_struct("Domains")
            .field("version", &snap.version)
            .field("hosted", &snap.hosted.len())
            .finish()
    }
}

impl Domains {
    /// A registry of the configured domains (names are prepared here), each with its settings.
    pub fn new(statics: impl IntoIterator<Item = (String, DomainSettings)>) -> Arc<Self> {
        let statics: HashMap<String, DomainSettings> = statics
            .into_iter()
            .map(|(d, s)| (storage::prepare_domain(&d), s))
            .collect();
        let snap = DomainsSnapshot {
            version: 0,
            hosted: statics.clone(),
        };
        Arc::new(Domains {
            statics,
            tx: watch::Sender::new(Arc::new(snap)),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// A registry of configured domains with the default settings.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Arc<Self> {
        Self::new(
            names
                .into_iter()
                .map(|n| (n.as_ref().to_owned(), DomainSettings::default())),
        )
    }

    /// Whether `domain` (prepared, as in a parsed JID) is hosted now. Called per stanza.
    pub fn contains(&self, domain: &str) -> bool {
        self.tx.borrow().hosted.contains_key(domain)
    }

    /// The settings of a hosted domain.
    pub fn settings(&self, domain: &str) -> Option<DomainSettings> {
        self.tx.borrow().hosted.get(domain).copied()
    }

    /// Whether `domain` comes from the configuration (it cannot be removed at runtime).
    pub fn is_static(&self, domain: &str) -> bool {
        self.statics.contains_key(domain)
    }

    pub fn snapshot(&self) -> Arc<DomainsSnapshot> {
        Arc::clone(&self.tx.borrow())
    }

    /// Wakes on every change of the hosted domains or their settings.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DomainsSnapshot>> {
        self.tx.subscribe()
    }

    /// The store version last applied.
    pub fn version(&self) -> u64 {
        self.tx.borrow().version
    }

    /// The hosted domains, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tx.borrow().hosted.keys().cloned().collect();
        v.sort();
        v
    }

    /// Replaces the stored part of the registry with `records` (removed ones are skipped) at
    /// store `version`. Stored settings win over configured ones for the same domain. Returns
    /// whether the hosted domains or their settings changed (subscribers are woken only then).
    pub fn apply(&self, version: u64, records: &[DomainRecord]) -> bool {
        let mut hosted = self.statics.clone();
        hosted.reserve(records.len());
        for r in records.iter().filter(|r| !r.removed) {
            hosted.insert(r.domain.clone(), r.settings);
        }
        self.tx.send_if_modified(|cur| {
            if cur.hosted == hosted {
                if cur.version != version {
                    Arc::make_mut(cur).version = version;
                }
                false
            } else {
                *cur = Arc::new(DomainsSnapshot { version, hosted });
                true
            }
        })
    }

    /// Reloads from `store` when its version differs from the one applied. Returns whether
    /// the hosted domains changed.
    pub async fn reload(&self, store: &dyn DomainStore) -> Result<bool, StorageError> {
        let _one = self.reloading.lock().await;
        // The version first: a write that lands between the two reads makes the next poll
        // read again, never miss it.
        let version = store.domains_version().await?;
        if version == self.version() {
            return Ok(false);
        }
        let records = store.list_domains().await?;
        let changed = self.apply(version, &records);
        if changed {
            tracing::info!(
                version,
                hosted = self.tx.borrow().hosted.len(),
                "hosted domains reloaded"
            );
        }
        Ok(changed)
    }
}

/// Reloads `registry` from `store` every `period` until `stop` is true (standalone servers
/// and session nodes).
pub async fn poll_store(
    registry: Arc<Domains>,
    store: Arc<dyn DomainStore>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        match registry.reload(store.as_ref()).await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot reload the hosted domains");
            }
            Err(e) => tracing::debug!(error = %e, "cannot reload the hosted domains"),
        }
    }
}

/// A small code per error kind (for the admin API's statuses and the CLI's exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainErrorCode {
    InvalidArgument,
    AlreadyExists,
    NotFound,
    FailedPrecondition,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("`{0}` is not a valid domain name")]
    Invalid(String),
    #[error("domain {0} already exists")]
    AlreadyExists(String),
    #[error("domain {0} does not exist")]
    NotFound(String),
    #[error("domain {0} is still hosted: remove it before purging")]
    NotRemoved(String),
    #[error("domain {0} is configured in server.domains and cannot be removed at runtime")]
    Static(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl DomainError {
    pub fn code(&self) -> DomainErrorCode {
        match self {
            DomainError::Invalid(_) => DomainErrorCode::InvalidArgument,
            DomainError::AlreadyExists(_) => DomainErrorCode::AlreadyExists,
            DomainError::NotFound(_) => DomainErrorCode::NotFound,
            DomainError::NotRemoved(_) | DomainError::Static(_) => {
                DomainErrorCode::FailedPrecondition
            }
            DomainError::Storage(_) => DomainErrorCode::Unavailable,
        }
    }
}

/// The prepared name of a domain an operator typed, or `Invalid`.
pub fn parse_domain(name: &str) -> Result<String, DomainError> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() || trimmed.contains('*') || trimmed.contains('@') {
        return Err(DomainError::Invalid(name.to_owned()));
    }
    BareJid::domain_only(trimmed)
        .map(|j| j.domain().to_owned())
        .map_err(|_| DomainError::Invalid(name.to_owned()))
}

async fn reload_now(store: &dyn DomainStore, registry: &Domains) {
    if let Err(e) = registry.reload(store).await {
        tracing::warn!(error = %e, "stored the change but cannot reload the hosted domains");
    }
}

/// Hosts a new domain (or hosts a removed one again, with these settings). `AlreadyExists`
/// when it is hosted already.
pub async fn add_domain(
    store: &dyn DomainStore,
    registry: &Domains,
    name: &str,
    settings: DomainSettings,
) -> Result<DomainRecord, DomainError> {
    let domain = parse_domain(name)?;
    let stored = store.get_domain(&domain).await?;
    if registry.is_static(&domain) || stored.as_ref().is_some_and(|r| !r.removed) {
        return Err(DomainError::AlreadyExists(domain));
    }
    let record = store.put_domain(&domain, &settings).await?;
    tracing::info!(domain = %domain, "domain added");
    reload_now(store, registry).await;
    Ok(record)
}

/// Replaces the settings of a hosted domain (a configured one too: stored settings win).
pub async fn update_domain(
    store: &dyn DomainStore,
    registry: &Domains,
    name: &str,
    settings: DomainSettings,
) -> Result<DomainRecord, DomainError> {
    let domain = parse_domain(name)?;
    let stored = store.get_domain(&domain).await?;
    if !registry.is_static(&domain) && stored.as_ref().is_none_or(|r| r.removed) {
        return Err(DomainError::NotFound(domain));
    }
    let record = store.put_domain(&domain, &settings).await?;
    tracing::info!(domain = %domain, "domain settings updated");
    reload_now(store, registry).await;
    Ok(record)
}

/// Stops hosting a domain: it is marked removed (accounts and data kept), new streams for it
/// get `<host-unknown/>`, and when `sessions` is given its sessions there end at once with
/// `<host-gone/>` (other processes end theirs when their poll sees the change). Returns how
/// many sessions were closed here.
pub async fn remove_domain(
    store: &dyn DomainStore,
    registry: &Domains,
    sessions: Option<&LocalSessionService>,
    name: &str,
) -> Result<usize, DomainError> {
    let domain = parse_domain(name)?;
    if registry.is_static(&domain) {
        return Err(DomainError::Static(domain));
    }
    match store.remove_domain(&domain).await {
        Ok(()) => {}
        Err(StorageError::NotFound) => return Err(DomainError::NotFound(domain)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(domain = %domain, "domain removed");
    reload_now(store, registry).await;
    Ok(match sessions {
        Some(svc) => svc.close_domain(&domain).await,
        None => 0,
    })
}

/// Deletes a removed domain with every account of it and all their data. Returns how many
/// accounts were deleted.
pub async fn purge_domain(
    store: &dyn DomainStore,
    registry: &Domains,
    name: &str,
) -> Result<u64, DomainError> {
    let domain = parse_domain(name)?;
    if registry.is_static(&domain) {
        return Err(DomainError::Static(domain));
    }
    match store.get_domain(&domain).await? {
        None => return Err(DomainError::NotFound(domain)),
        Some(r) if !r.removed => return Err(DomainError::NotRemoved(domain)),
        Some(_) => {}
    }
    let n = match store.purge_domain(&domain).await {
        Ok(n) => n,
        // Purged (or hosted again) by someone else in between.
        Err(StorageError::NotFound) => return Err(DomainError::NotFound(domain)),
        Err(e) => return Err(e.into()),
    };
    tracing::info!(domain = %domain, accounts = n, "domain purged");
    reload_now(store, registry).await;
    Ok(n)
}

/// Every stored domain (removed ones included), sorted.
pub async fn list_domains(store: &dyn DomainStore) -> Result<Vec<DomainRecord>, DomainError> {
    Ok(store.list_domains().await?)
}

/// An [`AccountStore`] that enforces each domain's `max_accounts` on creation
/// (`QuotaExceeded`). Everything else goes straight to `inner`. Under concurrent creations
/// in a cluster the limit may be overshot by the number of racing creations.
pub struct LimitedAccounts {
    inner: Arc<dyn AccountStore>,
    registry: Arc<Domains>,
}

impl LimitedAccounts {
    pub fn new(inner: Arc<dyn AccountStore>, registry: Arc<Domains>) -> Arc<Self> {
        Arc::new(LimitedAccounts { inner, registry })
    }
}

#[async_trait]
impl AccountStore for LimitedAccounts {
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> storage::Result<()> {
        let max = self
            .registry
            .settings(jid.domain())
            .and_then(|s| s.max_accounts);
        if let Some(max) = max
            && self.inner.count_accounts(jid.domain()).await? >= u64::from(max)
        {
            tracing::info!(domain = %jid.domain(), max, "account limit of the domain reached");
            return Err(StorageError::QuotaExceeded);
        }
        self.inner.create_account(jid, creds).await
    }
    async fn set_credentials(&self, jid: &BareJid, creds: &Credentials) -> storage::Result<()> {
        self.inner.set_credentials(jid, creds).await
    }
    async fn get_credentials(&self, jid: &BareJid) -> storage::Result<Option<Credentials>> {
        self.inner.get_credentials(jid).await
    }
    async fn delete_account(&self, jid: &BareJid) -> storage::Result<()> {
        self.inner.delete_account(jid).await
    }
    async fn list_accounts(&self, domain: &str) -> storage::Result<Vec<BareJid>> {
        self.inner.list_accounts(domain).await
    }
    async fn account_exists(&self, jid: &BareJid) -> storage::Result<bool> {
        self.inner.account_exists(jid).await
    }
    async fn count_accounts(&self, domain: &str) -> storage::Result<u64> {
        self.inner.count_accounts(domain).await
    }
}

impl LocalSessionService {
    /// The hosted domains this service routes for.
    pub fn domains(&self) -> &Arc<Domains> {
        &self.registry
    }

    /// The most bound resources per account of `domain`.
    pub(crate) fn max_resources_for(&self, domain: &str) -> usize {
        self.registry
            .settings(domain)
            .and_then(|s| s.max_sessions_per_account)
            .map_or(self.config.max_resources, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            })
    }

    /// The offline quota of an account of `domain`: the domain's count (else the server's)
    /// and the server's byte quota.
    pub(crate) fn offline_quota_for(&self, domain: &str) -> storage::OfflineQuota {
        let messages = self
            .registry
            .settings(domain)
            .and_then(|s| s.offline_quota)
            .map_or(self.config.offline_quota, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            });
        storage::OfflineQuota {
            messages,
            bytes: self.config.offline_quota_bytes,
        }
    }

    /// The archive retention of `domain`, days (`None`: kept forever).
    pub(crate) fn archive_retention_for(&self, domain: &str) -> Option<u32> {
        self.registry
            .settings(domain)
            .and_then(|s| s.archive_retention_days)
            .or(self.config.archive_retention_days)
    }

    /// Ends every session of an account of `domain` with `<host-gone/>` (RFC 6120
    /// §4.9.3.6), as in `close` (contacts get unavailable presence, unacknowledged messages
    /// go offline). Returns how many sessions ended.
    pub async fn close_domain(&self, domain: &str) -> usize {
        let mut ended = Vec::<(FullJid, SessionToken)>::new();
        for bare in self.users.keys() {
            if bare.domain() != domain {
                continue;
            }
            let user = self.users.lock(&bare).await;
            for r in &user.resources {
                let _ = r.sink.send(ToClient::Close(StreamErrorCondition::HostGone));
                ended.push((r.jid.clone(), SessionToken(r.token)));
            }
        }
        for (jid, token) in &ended {
            self.close_session(jid, *token).await;
        }
        if !ended.is_empty() {
            tracing::info!(
                domain,
                sessions = ended.len(),
                "sessions of a removed domain closed"
            );
        }
        ended.len()
    }

    /// Follows the registry until `stop`: when a domain stops being hosted, its sessions
    /// here end with `<host-gone/>`.
    pub fn follow_domains(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let svc = Arc::downgrade(self);
        let mut rx = self.registry.subscribe();
        tokio::spawn(async move {
            let mut before = rx.borrow_and_update().clone();
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    r = rx.changed() => if r.is_err() { return },
                }
                let now = rx.borrow_and_update().clone();
                let gone: Vec<String> = before
                    .hosted
                    .keys()
                    .filter(|d| !now.hosted.contains_key(*d))
                    .cloned()
                    .collect();
                before = now;
                let Some(svc) = svc.upgrade() else { return };
                for d in gone {
                    svc.close_domain(&d).await;
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(domain: &str, removed: bool, open: bool) -> DomainRecord {
        DomainRecord {
            domain: domain.to_owned(),
            settings: DomainSettings {
                registration_open: open,
                ..DomainSettings::default()
            },
            removed,
            updated_ms: 1,
        }
    }

    #[test]
    fn statics_are_always_hosted_and_stored_domains_are_added() {
        let reg = Domains::from_names(["Example.ORG"]);
        assert!(reg.contains("example.org"), "static names are prepared");
        assert!(!reg.contains("b.example"));
        let mut rx = reg.subscribe();
        assert!(reg.apply(
            3,
            &[
                record("b.example", false, true),
                record("c.example", true, false)
            ]
        ));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(reg.contains("b.example"));
        assert!(!reg.contains("c.example"), "removed domains are not hosted");
        assert!(reg.settings("b.example").unwrap().registration_open);
        assert_eq!(reg.version(), 3);
        assert_eq!(reg.names(), ["b.example", "example.org"]);
        // Same content at a new version: no wake-up, but the version moves.
        assert!(!reg.apply(4, &[record("b.example", false, true)]));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(reg.version(), 4);
        // A stored record of a static domain overrides its settings; removing it there
        // does not stop hosting it.
        assert!(reg.apply(5, &[record("example.org", false, true)]));
        assert!(reg.settings("example.org").unwrap().registration_open);
        assert!(reg.apply(6, &[record("example.org", true, false)]));
        assert!(reg.contains("example.org"));
        assert!(!reg.settings("example.org").unwrap().registration_open);
        assert!(!reg.contains("b.example"));
    }

    #[test]
    fn domain_names_are_checked_and_prepared() {
        assert_eq!(
            parse_domain("Chat.Example.NET.").unwrap(),
            "chat.example.net"
        );
        for bad in ["", "*.example.org", "a@b", "bad domain", "x/y"] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn operations_write_the_store_and_reload() {
        let store = storage::sqlite::open_in_memory().unwrap();
        let reg = Domains::from_names(["static.example"]);
        let s = DomainSettings {
            max_accounts: Some(1),
            ..DomainSettings::default()
        };
        add_domain(store.domains.as_ref(), &reg, "New.Example", s)
            .await
            .unwrap();
        assert!(reg.contains("new.example"));
        assert_eq!(reg.settings("new.example").unwrap().max_accounts, Some(1));
        let err = add_domain(store.domains.as_ref(), &reg, "new.example", s)
            .await
            .unwrap_err();
        assert_eq!(err.code(), DomainErrorCode::AlreadyExists);
        let err = add_domain(store.domains.as_ref(), &reg, "static.example", s)
            .await
            .unwrap_err();
        assert_eq!(err.code(), DomainErrorCode::AlreadyExists);
        let err = update_domain(store.domains.as_ref(), &reg, "nope.example", s)
            .await
            .unwrap_err();
        assert_eq!(err.code(), DomainErrorCode::NotFound);
        update_domain(
            store.domains.as_ref(),
            &reg,
            "new.example",
            DomainSettings::default(),
        )
        .await
        .unwrap();
        assert_eq!(reg.settings("new.example").unwrap().max_accounts, None);

        // max_accounts through LimitedAccounts.
        update_domain(store.domains.as_ref(), &reg, "new.example", s)
            .await
            .unwrap();
        let accounts = LimitedAccounts::new(store.accounts.clone(), reg.clone());
        let creds = Credentials { keys: vec![] };
        accounts
            .create_account(&"a@new.example".parse().unwrap(), &creds)
            .await
            .unwrap();
        let over = accounts
            .create_account(&"b@new.example".parse().unwrap(), &creds)
            .await;
        assert!(matches!(over, Err(StorageError::QuotaExceeded)), "{over:?}");

        let err = purge_domain(store.domains.as_ref(), &reg, "new.example")
            .await
            .unwrap_err();
        assert_eq!(err.code(), DomainErrorCode::FailedPrecondition);
        let err = remove_domain(store.domains.as_ref(), &reg, None, "static.example")
            .await
            .unwrap_err();
        assert_eq!(err.code(), DomainErrorCode::FailedPrecondition);
        remove_domain(store.domains.as_ref(), &reg, None, "new.example")
            .await
            .unwrap();
        assert!(!reg.contains("new.example"));
        assert!(
            store
                .accounts
                .account_exists(&"a@new.example".parse().unwrap())
                .await
                .unwrap()
        );
        assert_eq!(
            purge_domain(store.domains.as_ref(), &reg, "new.example")
                .await
                .unwrap(),
            1
        );
        assert!(
            list_domains(store.domains.as_ref())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn another_writer_is_seen_by_reload() {
        let store = storage::sqlite::open_in_memory().unwrap();
        let reg = Domains::from_names(["static.example"]);
        assert!(!reg.reload(store.domains.as_ref()).await.unwrap());
        // Written behind the registry's back, as `relais domain add` in another process.
        store
            .domains
            .put_domain("late.example", &DomainSettings::default())
            .await
            .unwrap();
        assert!(!reg.contains("late.example"));
        assert!(reg.reload(store.domains.as_ref()).await.unwrap());
        assert!(reg.contains("late.example"));
        assert!(!reg.reload(store.domains.as_ref()).await.unwrap());
    }

    /// Not a timed assertion: prints what a lookup costs, one thread and all cores at once
    /// (`cargo test --release -p session lookup_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn lookup_cost() {
        let reg = Domains::from_names((0..10_000).map(|i| format!("d{i}.example")));
        let n = 2_000_000u32;
        let run = |reg: &Domains| {
            let start = std::time::Instant::now();
            let mut hits = 0u32;
            for i in 0..n {
                let d = if i % 2 == 0 {
                    "d4242.example"
                } else {
                    "nope.example"
                };
                hits += u32::from(std::hint::black_box(reg.contains(d)));
            }
            assert_eq!(hits, n / 2);
            start.elapsed().as_nanos() as f64 / f64::from(n)
        };
        println!("one thread: {:.1} ns per lookup", run(&reg));
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let per: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| run(&reg))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        println!("{threads} threads at once: {per:.1?} ns per lookup");
    }
}
