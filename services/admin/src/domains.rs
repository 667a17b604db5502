//! [`DomainControl`]: what the admin API needs from the server's runtime domains.
//!
//! Runtime domains (a durable domain store, the session service's registry, certificates)
//! are built on another branch; this small trait is the seam. Until the lead wires that store
//! in, the binary uses [`ConfiguredDomains`] (the config file's domains, read-only) and the
//! tests use [`MemoryDomains`].

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::{AdminError, DomainInfo, DomainSettings, Result};

/// Adds, changes and removes hosted domains. Every `domain` is already normalized
/// ([`crate::normalize_domain`]) and every settings value validated.
#[async_trait]
pub trait DomainControl: Send + Sync + 'static {
    /// Every hosted domain, sorted by name.
    async fn list(&self) -> Result<Vec<DomainInfo>>;
    /// `NotFound` when the domain is not hosted.
    async fn get(&self, domain: &str) -> Result<DomainInfo> {
        self.list()
            .await?
            .into_iter()
            .find(|d| d.name == domain)
            .ok_or_else(|| not_hosted(domain))
    }
    /// `AlreadyExists` when it is hosted already.
    async fn add(&self, domain: &str, settings: &DomainSettings) -> Result<()>;
    /// `NotFound` when the domain is not hosted.
    async fn update(&self, domain: &str, settings: &DomainSettings) -> Result<()>;
    /// Stops hosting the domain; its accounts stay in storage.
    async fn remove(&self, domain: &str) -> Result<()>;
    /// Stops hosting the domain and deletes its accounts and all their data.
    async fn purge(&self, domain: &str) -> Result<()>;
}

pub(crate) fn not_hosted(domain: &str) -> AdminError {
    AdminError::NotFound(format!("domain {domain} is not hosted"))
}

/// Domains held in memory.
///
/// For tests only: it stands in for the durable domain store of the runtime-domains branch
/// until the lead wires that store in. `purge` forgets the domain here; deleting the
/// accounts' data is the store's job (see [`crate::LocalAdmin::purge_domain`]).
#[derive(Debug, Default)]
pub struct MemoryDomains {
    domains: Mutex<BTreeMap<String, DomainSettings>>,
}

impl MemoryDomains {
    pub fn new(domains: impl IntoIterator<Item = String>) -> Self {
        MemoryDomains {
            domains: Mutex::new(
                domains
                    .into_iter()
                    .map(|d| (d, DomainSettings::default()))
                    .collect(),
            ),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DomainSettings>> {
        self.domains.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DomainControl for MemoryDomains {
    async fn list(&self) -> Result<Vec<DomainInfo>> {
        Ok(self
            .map()
            .iter()
            .map(|(name, settings)| DomainInfo {
                name: name.clone(),
                settings: settings.clone(),
            })
            .collect())
    }

    async fn add(&self, domain: &str, settings: &DomainSettings) -> Result<()> {
        let mut map = self.map();
        if map.contains_key(domain) {
            return Err(AdminError::AlreadyExists(format!(
                "domain {domain} is already hosted"
            )));
        }
        map.insert(domain.to_owned(), settings.clone());
        Ok(())
    }

    async fn update(&self, domain: &str, settings: &DomainSettings) -> Result<()> {
        match self.map().get_mut(domain) {
            Some(s) => {
                *s = settings.clone();
                Ok(())
            }
            None => Err(not_hosted(domain)),
        }
    }

    async fn remove(&self, domain: &str) -> Result<()> {
        self.map()
            .remove(domain)
            .map(|_| ())
            .ok_or_else(|| not_hosted(domain))
    }

    async fn purge(&self, domain: &str) -> Result<()> {
        self.remove(domain).await
    }
}

/// The domains of the config file (`server.domains`), read-only: listing works, changes
/// answer `Unsupported` until runtime domains are wired in. Their settings are the server
/// defaults (`None` everywhere).
#[derive(Debug)]
pub struct ConfiguredDomains {
    domains: Vec<String>,
}

impl ConfiguredDomains {
    pub fn new(mut domains: Vec<String>) -> Self {
        domains.sort();
        domains.dedup();
        ConfiguredDomains { domains }
    }
}

fn read_only() -> AdminError {
    AdminError::Unsupported(
        "domains come from server.domains in the config file on this server; edit it and restart"
            .into(),
    )
}

#[async_trait]
impl DomainControl for ConfiguredDomains {
    async fn list(&self) -> Result<Vec<DomainInfo>> {
        Ok(self
            .domains
            .iter()
            .map(|d| DomainInfo {
                name: d.clone(),
                settings: DomainSettings::default(),
            })
            .collect())
    }
    async fn add(&self, _domain: &str, _settings: &DomainSettings) -> Result<()> {
        Err(read_only())
    }
    async fn update(&self, _domain: &str, _settings: &DomainSettings) -> Result<()> {
        Err(read_only())
    }
    async fn remove(&self, _domain: &str) -> Result<()> {
        Err(read_only())
    }
    async fn purge(&self, _domain: &str) -> Result<()> {
        Err(read_only())
    }
}
