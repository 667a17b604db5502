//! Bearer tokens and their scopes.
//!
//! The server knows each token only by its SHA-256 ([`Tokens`]); a request presents the token
//! itself in `authorization: Bearer <token>` (gRPC metadata or HTTP header). The hash of the
//! presented token is compared with every configured hash in constant time, so neither the
//! comparison nor the search reveals how much of a hash matched. Failures are logged with
//! their reason, never with the token.
//!
//! A token's [`Scope`] is the whole server or one domain. [`Scoped`] applies it: a
//! domain-scoped token may manage its domain's accounts and sessions and read its statistics
//! and settings, sees only its domain in the domain list, and may not add, remove or purge
//! domains nor change any domain setting (those are the operator's limits: `max_accounts`,
//! `registration_open`, quotas, retention), which needs a global token.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xmpp::BareJid;

use crate::{
    AdminError, AdminService, DomainInfo, DomainSettings, DomainStats, KickCondition, KickTarget,
    Result, SessionFilter, SessionInfo, normalize_domain,
};

/// What a token may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Global,
    /// One domain (normalized like JID domainparts).
    Domain(String),
}

impl Scope {
    /// `global`, or a domain name.
    pub fn parse(s: &str) -> Result<Scope> {
        match s.trim() {
            "global" => Ok(Scope::Global),
            d => Ok(Scope::Domain(normalize_domain(d).map_err(|_| {
                AdminError::InvalidArgument(format!(
                    "scope `{d}` is neither `global` nor a valid domain"
                ))
            })?)),
        }
    }

    /// Whether the scope covers `domain` (normalized).
    pub fn covers(&self, domain: &str) -> bool {
        match self {
            Scope::Global => true,
            Scope::Domain(d) => d == domain,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Domain(d) => f.write_str(d),
        }
    }
}

/// The SHA-256 of `token`, as lowercase hex (what the config holds).
pub fn token_sha256_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A new random token: 32 bytes from the OS generator, as 64 hex characters.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

/// The configured tokens: SHA-256 hashes with their scopes.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Scope)>,
}

impl Tokens {
    /// Tokens from `(sha256 hex, scope)` pairs; `InvalidArgument` names the bad entry.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Tokens> {
        let mut out = Vec::new();
        for (i, (sha, scope)) in entries.into_iter().enumerate() {
            let Some(hash) = parse_hex32(sha) else {
                return Err(AdminError::InvalidArgument(format!(
                    "token {}: sha256 must be 64 hex characters (the SHA-256 of the token, not the token)",
                    i + 1
                )));
            };
            let scope = Scope::parse(scope)
                .map_err(|e| AdminError::InvalidArgument(format!("token {}: {e}", i + 1)))?;
            out.push((hash, scope));
        }
        Ok(Tokens { entries: out })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scope of the token in an `authorization` value (`Bearer <token>`), or
    /// `Unauthenticated`.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Scope> {
        let Some(value) = authorization else {
            tracing::warn!(reason = "missing", "admin authentication failed");
            return Err(AdminError::Unauthenticated(
                "missing bearer token (authorization: Bearer <token>)".into(),
            ));
        };
        let token = value
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            tracing::warn!(reason = "malformed", "admin authentication failed");
            return Err(AdminError::Unauthenticated(
                "malformed authorization; expected `Bearer <token>`".into(),
            ));
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, so the time taken does not depend on which one matched.
        let mut found: Option<&Scope> = None;
        for (hash, scope) in &self.entries {
            if bool::from(hash.ct_eq(&presented)) && found.is_none() {
                found = Some(scope);
            }
        }
        match found {
            Some(scope) => Ok(scope.clone()),
            None => {
                tracing::warn!(reason = "unknown token", "admin authentication failed");
                Err(AdminError::Unauthenticated("invalid token".into()))
            }
        }
    }
}

/// An [`AdminService`] restricted to a [`Scope`]; what the scope does not cover fails with
/// `PermissionDenied` before reaching the inner service.
pub struct Scoped {
    inner: Arc<dyn AdminService>,
    scope: Scope,
}

impl Scoped {
    pub fn new(inner: Arc<dyn AdminService>, scope: Scope) -> Self {
        Scoped { inner, scope }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn check(&self, domain: &str) -> Result<()> {
        if self.scope.covers(domain) {
            Ok(())
        } else {
            tracing::warn!(scope = %self.scope, domain, "admin request outside the token's scope");
            Err(AdminError::PermissionDenied(format!(
                "this token is limited to {} and cannot act on {domain}",
                self.scope
            )))
        }
    }

    fn check_domain(&self, domain: &str) -> Result<String> {
        let d = normalize_domain(domain)?;
        self.check(&d)?;
        Ok(d)
    }

    fn global_only(&self, what: &str) -> Result<()> {
        match &self.scope {
            Scope::Global => Ok(()),
            Scope::Domain(d) => {
                tracing::warn!(scope = %d, operation = what, "admin request needs a global token");
                Err(AdminError::PermissionDenied(format!(
                    "a token limited to {d} cannot {what}; use a global token"
                )))
            }
        }
    }
}

#[async_trait]
impl AdminService for Scoped {
    async fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let mut all = self.inner.list_domains().await?;
        all.retain(|d| self.scope.covers(&d.name));
        Ok(all)
    }

    async fn get_domain(&self, domain: &str) -> Result<DomainInfo> {
        let d = self.check_domain(domain)?;
        self.inner.get_domain(&d).await
    }

    async fn add_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo> {
        self.global_only("add domains")?;
        self.inner.add_domain(domain, settings).await
    }

    async fn update_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo> {
        let d = self.check_domain(domain)?;
        // Every domain setting is an operator limit (registration, account and session
        // caps, quotas, retention): a domain's own token may read them, not raise them.
        self.global_only("change domain settings (limits, registration, quotas, retention)")?;
        self.inner.update_domain(&d, settings).await
    }

    async fn remove_domain(&self, domain: &str) -> Result<()> {
        self.global_only("remove domains")?;
        self.inner.remove_domain(domain).await
    }

    async fn purge_domain(&self, domain: &str) -> Result<()> {
        self.global_only("purge domains")?;
        self.inner.purge_domain(domain).await
    }

    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>> {
        let d = self.check_domain(domain)?;
        self.inner.list_accounts(&d).await
    }

    async fn add_account(&self, jid: &BareJid, password: &str) -> Result<()> {
        self.check(jid.domain())?;
        self.inner.add_account(jid, password).await
    }

    async fn set_password(&self, jid: &BareJid, password: &str) -> Result<()> {
        self.check(jid.domain())?;
        self.inner.set_password(jid, password).await
    }

    async fn remove_account(&self, jid: &BareJid) -> Result<()> {
        self.check(jid.domain())?;
        self.inner.remove_account(jid).await
    }

    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionInfo>> {
        match filter {
            SessionFilter::Domain(d) => {
                let d = self.check_domain(d)?;
                self.inner.list_sessions(&SessionFilter::Domain(d)).await
            }
            SessionFilter::Account(a) => {
                self.check(a.domain())?;
                self.inner.list_sessions(filter).await
            }
        }
    }

    async fn kick(&self, target: &KickTarget, condition: KickCondition) -> Result<u32> {
        self.check(target.domain())?;
        self.inner.kick(target, condition).await
    }

    async fn domain_stats(&self, domain: &str) -> Result<DomainStats> {
        let d = self.check_domain(domain)?;
        self.inner.domain_stats(&d).await
    }
}
