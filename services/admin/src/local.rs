//! [`LocalAdmin`]: the admin API over this process's storage, session service and domains.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use session::LocalSessionService;
use session::admin::SessionScope;
use storage::{Credentials, StorageError};
use xmpp::scram::{self, ScramHash};
use xmpp::{BareJid, StreamErrorCondition};

use crate::{
    AdminError, AdminService, DomainControl, DomainInfo, DomainSettings, DomainStats,
    KickCondition, KickTarget, Result, SessionFilter, SessionInfo, normalize_domain,
};

/// The admin API of one process. Sessions are this process's: in a cluster, a session node
/// lists and kicks the sessions of the accounts it owns (see ARCHITECTURE.md, "Operate").
pub struct LocalAdmin {
    storage: storage::Storage,
    sessions: Arc<LocalSessionService>,
    domains: Arc<dyn DomainControl>,
    /// This node's name in session listings.
    node: String,
    /// PBKDF2 iterations of the credentials it derives (`[auth] scram_iterations`).
    iterations: u32,
}

impl LocalAdmin {
    pub fn new(
        storage: storage::Storage,
        sessions: Arc<LocalSessionService>,
        domains: Arc<dyn DomainControl>,
        node: impl Into<String>,
    ) -> Arc<Self> {
        Self::with_iterations(storage, sessions, domains, node, scram::DEFAULT_ITERATIONS)
    }

    /// Like [`LocalAdmin::new`], deriving new credentials with `iterations` rounds.
    pub fn with_iterations(
        storage: storage::Storage,
        sessions: Arc<LocalSessionService>,
        domains: Arc<dyn DomainControl>,
        node: impl Into<String>,
        iterations: u32,
    ) -> Arc<Self> {
        Arc::new(LocalAdmin {
            storage,
            sessions,
            domains,
            node: node.into(),
            iterations,
        })
    }

    /// The settings of a hosted domain, or `NotFound`.
    async fn hosted(&self, domain: &str) -> Result<DomainSettings> {
        Ok(self.domains.get(domain).await?.settings)
    }

    async fn end_sessions(&self, scope: SessionScope, condition: StreamErrorCondition) -> usize {
        self.sessions.kick_all(&scope, condition).await
    }
}

/// SCRAM keys for both hashes; the password itself goes nowhere. Runs the key derivation
/// off the async threads.
async fn credentials(password: &str, iterations: u32) -> Result<Credentials> {
    if password.is_empty() {
        return Err(AdminError::InvalidArgument("the password is empty".into()));
    }
    let prepared = scram::prepare_password(password).map_err(|_| {
        AdminError::InvalidArgument("the password contains characters that are not allowed".into())
    })?;
    tokio::task::spawn_blocking(move || {
        let keys = [ScramHash::Sha256, ScramHash::Sha1]
            .into_iter()
            .map(|h| scram::derive_keys(h, &prepared, &scram::new_salt(), iterations))
            .collect();
        Credentials { keys }
    })
    .await
    .map_err(|e| AdminError::Internal(format!("key derivation failed: {e}")))
}

#[async_trait]
impl AdminService for LocalAdmin {
    async fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        self.domains.list().await
    }

    async fn get_domain(&self, domain: &str) -> Result<DomainInfo> {
        self.domains.get(&normalize_domain(domain)?).await
    }

    async fn add_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo> {
        let d = normalize_domain(domain)?;
        settings.validate()?;
        self.domains.add(&d, &settings).await?;
        tracing::info!(domain = %d, "domain added");
        self.domains.get(&d).await
    }

    async fn update_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo> {
        let d = normalize_domain(domain)?;
        settings.validate()?;
        self.domains.update(&d, &settings).await?;
        tracing::info!(domain = %d, "domain settings updated");
        self.domains.get(&d).await
    }

    async fn remove_domain(&self, domain: &str) -> Result<()> {
        let d = normalize_domain(domain)?;
        self.domains.remove(&d).await?;
        let ended = self
            .end_sessions(
                SessionScope::Domain(d.clone()),
                StreamErrorCondition::HostGone,
            )
            .await;
        tracing::info!(domain = %d, sessions_ended = ended, "domain removed");
        Ok(())
    }

    async fn purge_domain(&self, domain: &str) -> Result<()> {
        let d = normalize_domain(domain)?;
        let accounts = self
            .storage
            .accounts
            .list_accounts(&d)
            .await
            .map_err(|e| AdminError::storage(e, &d))?;
        match self.domains.purge(&d).await {
            Ok(()) => {}
            // A domain removed earlier: its accounts were kept, purge them now.
            Err(AdminError::NotFound(_)) if !accounts.is_empty() => {}
            Err(e) => return Err(e),
        }
        self.end_sessions(
            SessionScope::Domain(d.clone()),
            StreamErrorCondition::HostGone,
        )
        .await;
        let mut deleted = 0usize;
        for jid in &accounts {
            match self.storage.accounts.delete_account(jid).await {
                Ok(()) => deleted += 1,
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(AdminError::storage(e, jid.as_str())),
            }
        }
        tracing::info!(domain = %d, accounts_deleted = deleted, "domain purged");
        Ok(())
    }

    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>> {
        let d = normalize_domain(domain)?;
        self.hosted(&d).await?;
        self.storage
            .accounts
            .list_accounts(&d)
            .await
            .map_err(|e| AdminError::storage(e, &d))
    }

    async fn add_account(&self, jid: &BareJid, password: &str) -> Result<()> {
        if jid.local().is_none() {
            return Err(AdminError::InvalidArgument(format!(
                "`{jid}` has no localpart; use user@domain"
            )));
        }
        let settings = self.hosted(jid.domain()).await?;
        let creds = credentials(password, self.iterations).await?;
        if let Some(max) = settings.max_accounts {
            let n = self
                .storage
                .accounts
                .list_accounts(jid.domain())
                .await
                .map_err(|e| AdminError::storage(e, jid.domain()))?
                .len();
            if u64::try_from(n).unwrap_or(u64::MAX) >= max {
                return Err(AdminError::FailedPrecondition(format!(
                    "domain {} has reached its max_accounts ({max})",
                    jid.domain()
                )));
            }
        }
        self.storage
            .accounts
            .create_account(jid, &creds)
            .await
            .map_err(|e| AdminError::storage(e, jid.as_str()))?;
        tracing::info!(jid = %jid, "account created");
        Ok(())
    }

    async fn set_password(&self, jid: &BareJid, password: &str) -> Result<()> {
        self.hosted(jid.domain()).await?;
        let creds = credentials(password, self.iterations).await?;
        self.storage
            .accounts
            .set_credentials(jid, &creds)
            .await
            .map_err(|e| AdminError::storage(e, jid.as_str()))?;
        tracing::info!(jid = %jid, "password changed");
        Ok(())
    }

    async fn remove_account(&self, jid: &BareJid) -> Result<()> {
        let exists = self
            .storage
            .accounts
            .account_exists(jid)
            .await
            .map_err(|e| AdminError::storage(e, jid.as_str()))?;
        if !exists {
            return Err(AdminError::NotFound(format!("{jid} does not exist")));
        }
        let scope = SessionScope::Account(jid.clone());
        // The sessions end first, so none writes to the account while it is deleted; a
        // login that raced the deletion is ended after it.
        let mut ended = self
            .end_sessions(scope.clone(), StreamErrorCondition::NotAuthorized)
            .await;
        self.storage
            .accounts
            .delete_account(jid)
            .await
            .map_err(|e| AdminError::storage(e, jid.as_str()))?;
        ended += self
            .end_sessions(scope, StreamErrorCondition::NotAuthorized)
            .await;
        tracing::info!(jid = %jid, sessions_ended = ended, "account removed");
        Ok(())
    }

    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionInfo>> {
        let scope = match filter {
            SessionFilter::Domain(d) => {
                let d = normalize_domain(d)?;
                self.hosted(&d).await?;
                SessionScope::Domain(d)
            }
            SessionFilter::Account(a) => SessionScope::Account(a.clone()),
        };
        Ok(self
            .sessions
            .sessions(&scope)
            .await
            .into_iter()
            .map(|s| SessionInfo {
                jid: s.jid,
                node: self.node.clone(),
                connection: s.origin.map(|(edge, conn)| format!("{edge}#{conn}")),
                priority: s.priority,
                available: s.available,
                since_ms: s.since_ms,
            })
            .collect())
    }

    async fn kick(&self, target: &KickTarget, condition: KickCondition) -> Result<u32> {
        let cond = condition.stream_error();
        let n = match target {
            KickTarget::Session(jid) => usize::from(self.sessions.kick(jid, cond).await),
            KickTarget::Account(jid) => {
                self.end_sessions(SessionScope::Account(jid.clone()), cond)
                    .await
            }
        };
        if n == 0 {
            return Err(AdminError::NotFound(format!(
                "no session of {target} is bound on this node"
            )));
        }
        tracing::info!(target = %target, condition = condition.as_str(), sessions = n, "kicked by an administrator");
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn domain_stats(&self, domain: &str) -> Result<DomainStats> {
        let d = normalize_domain(domain)?;
        self.hosted(&d).await?;
        let accounts = self
            .storage
            .accounts
            .list_accounts(&d)
            .await
            .map_err(|e| AdminError::storage(e, &d))?
            .len();
        let sessions = self
            .sessions
            .sessions(&SessionScope::Domain(d.clone()))
            .await;
        let online: BTreeSet<BareJid> = sessions.iter().map(|s| s.jid.bare()).collect();
        Ok(DomainStats {
            domain: d,
            accounts: u64::try_from(accounts).unwrap_or(u64::MAX),
            online_accounts: u64::try_from(online.len()).unwrap_or(u64::MAX),
            sessions: u64::try_from(sessions.len()).unwrap_or(u64::MAX),
            messages_routed: None,
        })
    }
}
