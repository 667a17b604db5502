//! Hosted domains on ScyllaDB: one row per domain in 16 shards, and a one-row version that
//! every write replaces with a new random value (no counter: counters are not idempotent).

use super::ids::{SHARDS, shard_of};
use super::{ScyllaStore, now_ms};
use crate::{AccountStore, DomainRecord, DomainSettings, DomainStore, Result, StorageError};
use async_trait::async_trait;

/// The id of the single `domains_version` row.
const VERSION_ROW: i32 = 0;

type Row = (
    String,
    Option<bool>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<bool>,
    Option<i64>,
);

fn to_db(v: Option<u32>) -> Option<i32> {
    v.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

fn from_db(v: Option<i32>, what: &str) -> Result<Option<u32>> {
    v.map(|n| u32::try_from(n).map_err(|_| StorageError::Corrupt(format!("invalid {what}: {n}"))))
        .transpose()
}

fn decode(row: Row) -> Result<DomainRecord> {
    let (domain, open, retention, max_accounts, max_sessions, quota, removed, at) = row;
    Ok(DomainRecord {
        domain,
        settings: DomainSettings {
            registration_open: open.unwrap_or(false),
            archive_retention_days: from_db(retention, "archive_retention_days")?,
            max_accounts: from_db(max_accounts, "max_accounts")?,
            max_sessions_per_account: from_db(max_sessions, "max_sessions_per_account")?,
            offline_quota: from_db(quota, "offline_quota")?,
        },
        removed: removed.unwrap_or(false),
        updated_ms: u64::try_from(at.unwrap_or(0)).unwrap_or(0),
    })
}

impl ScyllaStore {
    async fn bump_domains_version(&self) -> Result<()> {
        // Positive and never 0 (0 is "never written").
        let v = i64::try_from(rand::random::<u64>() >> 1)
            .unwrap_or(1)
            .max(1);
        self.exec(&self.st.hosted_version_set, (VERSION_ROW, v))
            .await?;
        Ok(())
    }

    async fn hosted_get(&self, domain: &str) -> Result<Option<DomainRecord>> {
        let row: Option<Row> = self
            .first(&self.st.hosted_get, (shard_of(domain), domain))
            .await?;
        row.map(decode).transpose()
    }

    pub(super) async fn count_domain_accounts(&self, domain: &str) -> Result<u64> {
        let mut total = 0u64;
        for shard in 0..SHARDS {
            let row: Option<(i64,)> = self.first(&self.st.account_count, (domain, shard)).await?;
            total += row.map_or(0, |r| u64::try_from(r.0).unwrap_or(0));
        }
        Ok(total)
    }
}

#[async_trait]
impl DomainStore for ScyllaStore {
    async fn put_domain(&self, domain: &str, settings: &DomainSettings) -> Result<DomainRecord> {
        let domain = crate::prepare_domain(domain);
        let s = settings;
        let at = now_ms();
        self.exec(
            &self.st.hosted_put,
            (
                shard_of(&domain),
                domain.as_str(),
                s.registration_open,
                to_db(s.archive_retention_days),
                to_db(s.max_accounts),
                to_db(s.max_sessions_per_account),
                to_db(s.offline_quota),
                at,
            ),
        )
        .await?;
        self.bump_domains_version().await?;
        tracing::debug!(domain = %domain, "domain stored");
        Ok(DomainRecord {
            domain,
            settings: *settings,
            removed: false,
            updated_ms: u64::try_from(at).unwrap_or(0),
        })
    }

    async fn get_domain(&self, domain: &str) -> Result<Option<DomainRecord>> {
        self.hosted_get(&crate::prepare_domain(domain)).await
    }

    async fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            let rows: Vec<Row> = self.all_rows(&self.st.hosted_list, (shard,)).await?;
            for row in rows {
                out.push(decode(row)?);
            }
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }

    async fn remove_domain(&self, domain: &str) -> Result<()> {
        let domain = crate::prepare_domain(domain);
        let applied = self
            .lwt(
                &self.st.hosted_remove,
                (now_ms(), shard_of(&domain), domain.as_str()),
            )
            .await?;
        if !applied {
            return Err(StorageError::NotFound);
        }
        self.bump_domains_version().await?;
        tracing::debug!(domain = %domain, "domain removed");
        Ok(())
    }

    async fn purge_domain(&self, domain: &str) -> Result<u64> {
        let domain = crate::prepare_domain(domain);
        match self.hosted_get(&domain).await? {
            Some(r) if r.removed => {}
            _ => return Err(StorageError::NotFound),
        }
        // The accounts first: a failure leaves the domain row, so the purge can be retried.
        let mut deleted = 0u64;
        for jid in self.list_accounts(&domain).await? {
            match self.delete_account(&jid).await {
                Ok(()) => deleted += 1,
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        self.exec(&self.st.hosted_delete, (shard_of(&domain), domain.as_str()))
            .await?;
        self.bump_domains_version().await?;
        tracing::info!(domain = %domain, accounts = deleted, "domain purged");
        Ok(deleted)
    }

    async fn domains_version(&self) -> Result<u64> {
        let row: Option<(Option<i64>,)> = self
            .first(&self.st.hosted_version_get, (VERSION_ROW,))
            .await?;
        Ok(row
            .and_then(|r| r.0)
            .map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }
}
