//! The admin API of Relais: what a hosting panel or an operator can do to a running server.
//!
//! [`AdminService`] is the one trait (domains, accounts, sessions, statistics), in domain
//! types only. [`LocalAdmin`] implements it over the storage traits, the local session service
//! and a [`DomainControl`]; the `proto` crate carries it over gRPC (`relais.admin.v1`, its
//! `GrpcAdminClient` and `AdminGrpcServer`), and [`http`] maps it to HTTP/JSON, so a caller
//! cannot tell a local implementation from a remote one.
//!
//! Access is by bearer token ([`auth`]): the server keeps only the SHA-256 of each token and
//! its [`Scope`] (the whole server, or one domain). [`Scoped`] wraps a service and refuses what
//! the scope does not allow, so both transports enforce the same rules.

use async_trait::async_trait;
use xmpp::{BareJid, FullJid, StreamErrorCondition};

pub mod auth;
mod domains;
mod error;
pub mod http;
mod local;

pub use auth::{Scope, Scoped, Tokens};
pub use domains::{ConfiguredDomains, DomainControl, MemoryDomains};
pub use error::{AdminError, ErrorCode};
pub use local::LocalAdmin;

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// Per-domain settings. `None` means "the server-wide default" (from the `[session]` section)
/// or "no limit", as each field says.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainSettings {
    /// In-band registration (XEP-0077) is open to anyone.
    pub registration_open: bool,
    /// Days archived messages are kept; `None`: the server default.
    pub archive_retention_days: Option<u32>,
    /// The most accounts the domain may hold; `None`: no limit.
    pub max_accounts: Option<u64>,
    /// The most bound resources per account; `None`: the server default.
    pub max_sessions_per_account: Option<u32>,
    /// Offline messages kept per account; `None`: the server default.
    pub offline_quota: Option<u32>,
}

impl DomainSettings {
    /// Rejects values that make no sense (zero limits).
    pub fn validate(&self) -> Result<()> {
        let zero = |name: &str| {
            Err(AdminError::InvalidArgument(format!(
                "{name} must be at least 1 (leave it unset for the default)"
            )))
        };
        if self.archive_retention_days == Some(0) {
            return zero("archive_retention_days");
        }
        if self.max_sessions_per_account == Some(0) {
            return zero("max_sessions_per_account");
        }
        if self.offline_quota == Some(0) {
            return zero("offline_quota");
        }
        Ok(())
    }
}

/// A hosted domain and its settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DomainInfo {
    pub name: String,
    pub settings: DomainSettings,
}

/// Which sessions to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionFilter {
    Domain(String),
    Account(BareJid),
}

impl SessionFilter {
    pub fn domain(&self) -> &str {
        match self {
            SessionFilter::Domain(d) => d,
            SessionFilter::Account(a) => a.domain(),
        }
    }
}

/// One bound resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub jid: FullJid,
    /// The session node that holds the session (`standalone` for a single process).
    pub node: String,
    /// The edge node and its connection id, when the connection is on another process.
    pub connection: Option<String>,
    pub priority: i8,
    /// Sent available presence and not unavailable since.
    pub available: bool,
    /// When the resource was bound, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// The stream error a kicked connection gets. The default is `<policy-violation/>`: the
/// server's administrator decided this connection must end, which RFC 6120 §4.9.3.18 covers
/// ("violated some local service policy"). `<not-authorized/>` says the credentials are no
/// longer valid (an account removal uses it), `<system-shutdown/>` and `<reset/>` suit
/// maintenance (the client may reconnect at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KickCondition {
    #[default]
    PolicyViolation,
    NotAuthorized,
    SystemShutdown,
    Reset,
}

impl KickCondition {
    pub const VALID: &'static str = "policy-violation, not-authorized, system-shutdown, reset";

    pub fn as_str(self) -> &'static str {
        self.stream_error().as_str()
    }

    pub fn stream_error(self) -> StreamErrorCondition {
        match self {
            KickCondition::PolicyViolation => StreamErrorCondition::PolicyViolation,
            KickCondition::NotAuthorized => StreamErrorCondition::NotAuthorized,
            KickCondition::SystemShutdown => StreamErrorCondition::SystemShutdown,
            KickCondition::Reset => StreamErrorCondition::Reset,
        }
    }

    /// The condition named `name`; empty means the default.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim() {
            "" | "policy-violation" => Ok(KickCondition::PolicyViolation),
            "not-authorized" => Ok(KickCondition::NotAuthorized),
            "system-shutdown" => Ok(KickCondition::SystemShutdown),
            "reset" => Ok(KickCondition::Reset),
            other => Err(AdminError::InvalidArgument(format!(
                "unknown kick condition `{other}`; use one of {}",
                Self::VALID
            ))),
        }
    }
}

/// Whom to kick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KickTarget {
    /// One resource.
    Session(FullJid),
    /// Every resource of an account.
    Account(BareJid),
}

impl KickTarget {
    /// A full JID kicks one session, a bare one the whole account.
    pub fn parse(jid: &str) -> Result<Self> {
        let jid = jid.trim();
        if jid.contains('/') {
            let full: FullJid = jid.parse().map_err(|e| {
                AdminError::InvalidArgument(format!("`{jid}` is not a valid jid: {e}"))
            })?;
            if full.local().is_none() {
                return Err(AdminError::InvalidArgument(format!(
                    "`{jid}` has no localpart; use user@domain[/resource]"
                )));
            }
            Ok(KickTarget::Session(full))
        } else {
            Ok(KickTarget::Account(parse_account(jid)?))
        }
    }

    pub fn domain(&self) -> &str {
        match self {
            KickTarget::Session(j) => j.domain(),
            KickTarget::Account(j) => j.domain(),
        }
    }
}

impl std::fmt::Display for KickTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KickTarget::Session(j) => j.fmt(f),
            KickTarget::Account(j) => j.fmt(f),
        }
    }
}

/// Figures of one domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DomainStats {
    pub domain: String,
    pub accounts: u64,
    /// Accounts with at least one bound resource (on this node).
    pub online_accounts: u64,
    /// Bound resources (on this node).
    pub sessions: u64,
    /// Messages routed for the domain, when the server counts them (it does not yet).
    pub messages_routed: Option<u64>,
}

/// The admin API. Object-safe: servers hold an `Arc<dyn AdminService>`.
#[async_trait]
pub trait AdminService: Send + Sync + 'static {
    /// Every hosted domain, sorted by name.
    async fn list_domains(&self) -> Result<Vec<DomainInfo>>;
    /// `NotFound` when the domain is not hosted.
    async fn get_domain(&self, domain: &str) -> Result<DomainInfo>;
    /// `AlreadyExists` when it is hosted already.
    async fn add_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo>;
    /// Replaces the settings of a hosted domain.
    async fn update_domain(&self, domain: &str, settings: DomainSettings) -> Result<DomainInfo>;
    /// Stops hosting the domain (its live sessions end with `<host-gone/>`); its accounts
    /// and their data stay in storage.
    async fn remove_domain(&self, domain: &str) -> Result<()>;
    /// Stops hosting the domain and deletes every account of it with all their data.
    async fn purge_domain(&self, domain: &str) -> Result<()>;

    /// The accounts of a hosted domain, sorted.
    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>>;
    /// Creates an account; only SCRAM keys derived from `password` are stored.
    async fn add_account(&self, jid: &BareJid, password: &str) -> Result<()>;
    async fn set_password(&self, jid: &BareJid, password: &str) -> Result<()>;
    /// Deletes an account and all its data; its live sessions end with `<not-authorized/>`.
    async fn remove_account(&self, jid: &BareJid) -> Result<()>;

    async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionInfo>>;
    /// Ends the target's streams with `condition`; returns how many sessions ended (0 when
    /// none was bound).
    async fn kick(&self, target: &KickTarget, condition: KickCondition) -> Result<u32>;

    async fn domain_stats(&self, domain: &str) -> Result<DomainStats>;
}

/// A domain name as JIDs carry it (lowercased, IDNA), or `InvalidArgument`.
pub fn normalize_domain(domain: &str) -> Result<String> {
    let d = domain.trim();
    if d.is_empty() {
        return Err(AdminError::InvalidArgument("the domain is empty".into()));
    }
    BareJid::domain_only(d)
        .map(|j| j.domain().to_owned())
        .map_err(|e| AdminError::InvalidArgument(format!("`{d}` is not a valid domain: {e}")))
}

/// `user@domain`, or `InvalidArgument`.
pub fn parse_account(jid: &str) -> Result<BareJid> {
    let jid = jid.trim();
    let j: BareJid = jid.parse().map_err(|e| {
        AdminError::InvalidArgument(format!("`{jid}` is not a valid bare jid: {e}"))
    })?;
    if j.local().is_none() {
        return Err(AdminError::InvalidArgument(format!(
            "`{jid}` has no localpart; use user@domain"
        )));
    }
    Ok(j)
}

/// The account `local`@`domain`, or `InvalidArgument` (a localpart with `@` or `/` is not
/// one).
pub fn account(local: &str, domain: &str) -> Result<BareJid> {
    let domain = normalize_domain(domain)?;
    if local.is_empty() {
        return Err(AdminError::InvalidArgument("the localpart is empty".into()));
    }
    BareJid::new(Some(local), &domain).map_err(|e| {
        AdminError::InvalidArgument(format!("`{local}` is not a valid localpart: {e}"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    #[test]
    fn kick_conditions_parse_with_a_default_and_a_clear_error() {
        assert_eq!(
            KickCondition::parse("").unwrap(),
            KickCondition::PolicyViolation
        );
        assert_eq!(
            KickCondition::parse("not-authorized")
                .unwrap()
                .stream_error(),
            StreamErrorCondition::NotAuthorized
        );
        let e = KickCondition::parse("conflict").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("policy-violation"), "{e}");
    }

    #[test]
    fn kick_targets_are_full_or_bare_jids_with_a_localpart() {
        assert!(matches!(
            KickTarget::parse("a@example.org/phone").unwrap(),
            KickTarget::Session(j) if j.resource() == "phone"
        ));
        assert!(matches!(
            KickTarget::parse("a@example.org").unwrap(),
            KickTarget::Account(j) if j.as_str() == "a@example.org"
        ));
        for bad in ["example.org", "example.org/x", "a@@b", ""] {
            assert_eq!(
                KickTarget::parse(bad).unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn accounts_are_built_from_a_localpart_and_a_domain() {
        assert_eq!(
            account("Alice", "Example.ORG").unwrap().as_str(),
            "alice@example.org"
        );
        assert!(account("a@b", "example.org").is_err());
        assert!(account("a/b", "example.org").is_err());
        assert!(account("", "example.org").is_err());
        assert!(normalize_domain("bad domain").is_err());
    }

    #[test]
    fn zero_limits_are_refused() {
        let s = DomainSettings {
            offline_quota: Some(0),
            ..DomainSettings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("offline_quota")
        );
        assert!(DomainSettings::default().validate().is_ok());
    }
}

#[cfg(test)]
mod tests;
