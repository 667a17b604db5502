//! Accounts, rosters, offline queues and vCards on ScyllaDB.

use std::time::Duration;

use async_trait::async_trait;
use xmpp::BareJid;

use super::ids::{SHARDS, shard_of};
use super::rows::{
    self, CredentialsRow, OfflineRow, RosterRow, credentials_from_row, credentials_to_map,
    offline_from_row, roster_item_from_row, version_from,
};
use super::{CAS_ATTEMPTS, ScyllaStore, now_ms, to_i64, ttl_for, unavailable};
use crate::{
    AccountStore, Credentials, OfflineMessage, OfflineQuota, OfflineStore, Result, RosterItem,
    RosterStore, StorageError, VcardStore,
};

/// Offline messages deleted per statement by `expire`.
const EXPIRE_CHUNK: usize = 100;

/// The prepared form of a domain given by a caller, like the SQLite backend.
pub(super) fn prepared_domain(domain: &str) -> String {
    BareJid::domain_only(domain)
        .map(|j| j.domain().to_owned())
        .unwrap_or_else(|_| domain.to_owned())
}

/// Backoff between two attempts of a contended lightweight transaction: grows to ~50 ms,
/// jittered so contending writers spread out.
async fn backoff(attempt: u32) {
    let cap = 2u64.saturating_pow(attempt.min(6)).min(50);
    let ms = rand::random::<u64>() % (cap + 1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn contention(what: &str) -> StorageError {
    unavailable(format!(
        "{what}: gave up after {CAS_ATTEMPTS} conflicting attempts"
    ))
}

impl ScyllaStore {
    async fn account_row(&self, jid: &str) -> Result<Option<CredentialsRow>> {
        self.first::<CredentialsRow>(&self.st.account_get, (jid,))
            .await
    }

    async fn roster_version(&self, owner: &str) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> = self.first(&self.st.roster_version, (owner,)).await?;
        Ok(row.and_then(|r| r.0))
    }
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> Result<()> {
        let key = jid.as_str();
        let domain = jid.domain();
        let inserted = self
            .lwt(
                &self.st.account_insert,
                (key, domain, now_ms(), credentials_to_map(creds)),
            )
            .await?;
        if !inserted {
            return Err(StorageError::AlreadyExists);
        }
        self.exec(&self.st.domain_insert, (domain, shard_of(key), key))
            .await?;
        tracing::debug!(jid = %key, "account created");
        Ok(())
    }

    async fn set_credentials(&self, jid: &BareJid, creds: &Credentials) -> Result<()> {
        let key = jid.as_str();
        let updated = self
            .lwt(
                &self.st.account_set_credentials,
                (credentials_to_map(creds), key),
            )
            .await?;
        if !updated {
            return Err(StorageError::NotFound);
        }
        // Heals a listing row lost by a failed create.
        self.exec(&self.st.domain_insert, (jid.domain(), shard_of(key), key))
            .await?;
        tracing::debug!(jid = %key, "credentials replaced");
        Ok(())
    }

    async fn get_credentials(&self, jid: &BareJid) -> Result<Option<Credentials>> {
        match self.account_row(jid.as_str()).await? {
            None => Ok(None),
            Some(row) => credentials_from_row(row).map(Some),
        }
    }

    async fn delete_account(&self, jid: &BareJid) -> Result<()> {
        let key = jid.as_str();
        if self.account_row(key).await?.is_none() {
            return Err(StorageError::NotFound);
        }
        // The data first: a failure leaves the account in place, so the deletion is retried.
        self.exec(&self.st.roster_delete_all, (key,)).await?;
        self.exec(&self.st.offline_delete_all, (key,)).await?;
        self.exec(&self.st.offline_sizes_delete_all, (key,)).await?;
        self.exec(&self.st.offline_owner_delete, (shard_of(key), key))
            .await?;
        self.exec(&self.st.vcard_delete, (key,)).await?;
        self.exec(&self.st.private_delete_all, (key,)).await?;
        self.delete_archive(jid).await?;
        if !self.lwt(&self.st.account_delete, (key,)).await? {
            return Err(StorageError::NotFound);
        }
        self.exec(&self.st.domain_delete, (jid.domain(), shard_of(key), key))
            .await?;
        tracing::debug!(jid = %key, "account deleted");
        Ok(())
    }

    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>> {
        let domain = prepared_domain(domain);
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            let jids: Vec<(String,)> = self
                .all_rows(&self.st.domain_list, (domain.as_str(), shard))
                .await?;
            for (jid,) in jids {
                out.push(rows::parse_jid(&jid)?);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn account_exists(&self, jid: &BareJid) -> Result<bool> {
        Ok(self.account_row(jid.as_str()).await?.is_some())
    }

    async fn count_accounts(&self, domain: &str) -> Result<u64> {
        self.count_domain_accounts(&prepared_domain(domain)).await
    }
}

#[async_trait]
impl RosterStore for ScyllaStore {
    async fn get_roster(&self, owner: &BareJid) -> Result<(u64, Vec<RosterItem>)> {
        let rows: Vec<RosterRow> = self
            .all_rows(&self.st.roster_all, (owner.as_str(),))
            .await?;
        let mut version = 0;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            version = version.max(version_from(row.0)?);
            if let Some(item) = roster_item_from_row(row)? {
                items.push(item);
            }
        }
        items.sort_by(|a, b| a.jid.cmp(&b.jid));
        Ok((version, items))
    }

    async fn get_item(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>> {
        let row: Option<RosterRow> = self
            .first(&self.st.roster_item, (owner.as_str(), contact.as_str()))
            .await?;
        match row {
            None => Ok(None),
            Some(row) => roster_item_from_row(row),
        }
    }

    async fn put_item(&self, owner: &BareJid, item: &RosterItem) -> Result<u64> {
        let key = owner.as_str();
        let groups: Option<Vec<&str>> =
            (!item.groups.is_empty()).then(|| item.groups.iter().map(String::as_str).collect());
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.roster_version(key).await?;
            let next = version_from(current)?.saturating_add(1);
            let applied = self
                .lwt_batch(
                    &self.batches.roster_put,
                    (
                        (to_i64(next), key, current),
                        (
                            key,
                            item.jid.as_str(),
                            item.name.as_deref(),
                            item.subscription.as_str(),
                            item.ask_out,
                            item.pending_in,
                            item.approved,
                            &groups,
                        ),
                    ),
                )
                .await?;
            if applied {
                tracing::debug!(owner = %key, contact = %item.jid, version = next, "roster item stored");
                return Ok(next);
            }
            backoff(attempt).await;
        }
        Err(contention("roster update"))
    }

    async fn remove_item(&self, owner: &BareJid, contact: &BareJid) -> Result<u64> {
        let key = owner.as_str();
        for attempt in 0..CAS_ATTEMPTS {
            let row: Option<RosterRow> = self
                .first(&self.st.roster_item, (key, contact.as_str()))
                .await?;
            let Some(row) = row.filter(|r| r.1.is_some()) else {
                return Err(StorageError::NotFound);
            };
            let current = row.0;
            let next = version_from(current)?.saturating_add(1);
            let applied = self
                .lwt_batch(
                    &self.batches.roster_remove,
                    ((to_i64(next), key, current), (key, contact.as_str())),
                )
                .await?;
            if applied {
                tracing::debug!(owner = %key, contact = %contact, version = next, "roster item removed");
                return Ok(next);
            }
            backoff(attempt).await;
        }
        Err(contention("roster removal"))
    }
}

impl ScyllaStore {
    /// The ids of an owner's queued messages, in order.
    async fn offline_ids(&self, owner: &str) -> Result<Vec<i64>> {
        let rows: Vec<(Option<i64>,)> = self.all_rows(&self.st.offline_ids, (owner,)).await?;
        Ok(rows.into_iter().filter_map(|r| r.0).collect())
    }
}

#[async_trait]
impl OfflineStore for ScyllaStore {
    async fn push(
        &self,
        owner: &BareJid,
        stamp_ms: u64,
        xml: &str,
        quota: OfflineQuota,
    ) -> Result<u64> {
        let key = owner.as_str();
        if !quota.admits(0, 0, xml.len()) {
            return Err(StorageError::QuotaExceeded);
        }
        // One row more than the quota tells whether it is reached; the static-only row of an
        // emptied queue may take one more. Only ids and sizes are read, never the messages.
        let limit = i32::try_from(quota.messages.saturating_add(2)).unwrap_or(i32::MAX);
        let size = i32::try_from(xml.len()).unwrap_or(i32::MAX);
        let ttl = ttl_for(stamp_ms, self.offline_ttl, now_ms());
        for attempt in 0..CAS_ATTEMPTS {
            let head: Vec<(Option<i64>, Option<i64>)> =
                self.rows(&self.st.offline_head, (key, limit)).await?;
            let current = head.first().and_then(|r| r.0);
            let ids: std::collections::HashSet<i64> = head.iter().filter_map(|r| r.1).collect();
            let held = ids.len();
            let sizes: Vec<(i64, Option<i32>)> =
                self.rows(&self.st.offline_sizes, (key, limit)).await?;
            // Messages without a size row count as empty; sizes of removed messages not at all.
            let held_bytes = sizes
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(_, size)| usize::try_from(size.unwrap_or(0)).unwrap_or(0))
                .fold(0usize, usize::saturating_add);
            if !quota.admits(held, held_bytes, xml.len()) {
                tracing::debug!(owner = %key, held, held_bytes, ?quota, "offline quota reached");
                return Err(StorageError::QuotaExceeded);
            }
            let last = match current {
                None => 0,
                Some(v) => u64::try_from(v)
                    .map_err(|_| StorageError::Corrupt(format!("negative offline next_id {v}")))?,
            };
            let id = last.saturating_add(1);
            // The CAS on next_id fails if any other push got in since the read, so the quota
            // check above still holds when it applies.
            let applied = self
                .lwt_batch(
                    &self.batches.offline_push,
                    (
                        (to_i64(id), key, current),
                        (key, to_i64(id), to_i64(stamp_ms), xml, ttl),
                    ),
                )
                .await?;
            if applied {
                self.exec(&self.st.offline_size_insert, (key, to_i64(id), size, ttl))
                    .await?;
                self.exec(&self.st.offline_owner_insert, (shard_of(key), key))
                    .await?;
                tracing::debug!(owner = %key, id, "offline message stored");
                return Ok(id);
            }
            backoff(attempt).await;
        }
        Err(contention("offline push"))
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>> {
        let rows: Vec<OfflineRow> = self
            .all_rows(&self.st.offline_list, (owner.as_str(),))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(m) = offline_from_row(row)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn list_page(
        &self,
        owner: &BareJid,
        after: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let limit = i32::try_from(max_messages.max(1)).unwrap_or(i32::MAX);
        let rows: Vec<OfflineRow> = self
            .rows(
                &self.st.offline_page,
                (owner.as_str(), to_i64(after), limit),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in rows {
            if let Some(m) = offline_from_row(row)? {
                bytes = bytes.saturating_add(m.xml.len());
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn remove_up_to(&self, owner: &BareJid, up_to: u64) -> Result<()> {
        self.exec(
            &self.st.offline_remove_up_to,
            (owner.as_str(), to_i64(up_to)),
        )
        .await?;
        self.exec(
            &self.st.offline_sizes_remove_up_to,
            (owner.as_str(), to_i64(up_to)),
        )
        .await?;
        tracing::debug!(owner = %owner, up_to, "offline messages removed");
        Ok(())
    }

    async fn remove_ids(&self, owner: &BareJid, ids: &[u64]) -> Result<()> {
        for chunk in ids.chunks(EXPIRE_CHUNK) {
            let chunk: Vec<i64> = chunk.iter().map(|id| to_i64(*id)).collect();
            self.exec(&self.st.offline_delete_ids, (owner.as_str(), &chunk))
                .await?;
            self.exec(&self.st.offline_sizes_delete_ids, (owner.as_str(), &chunk))
                .await?;
        }
        Ok(())
    }

    async fn count(&self, owner: &BareJid) -> Result<usize> {
        Ok(self.offline_ids(owner.as_str()).await?.len())
    }

    async fn expire(&self, older_than_ms: u64) -> Result<u64> {
        let cutoff = to_i64(older_than_ms);
        let mut total = 0u64;
        for shard in 0..SHARDS {
            let owners: Vec<(String,)> =
                self.all_rows(&self.st.offline_owner_list, (shard,)).await?;
            for (owner,) in owners {
                let rows: Vec<OfflineRow> = self
                    .all_rows(&self.st.offline_list, (owner.as_str(),))
                    .await?;
                let victims: Vec<i64> = rows
                    .iter()
                    .filter_map(|(id, stamp, _)| match (id, stamp) {
                        (Some(id), Some(stamp)) if *stamp < cutoff => Some(*id),
                        _ => None,
                    })
                    .collect();
                for chunk in victims.chunks(EXPIRE_CHUNK) {
                    self.exec(&self.st.offline_delete_ids, (owner.as_str(), chunk))
                        .await?;
                    self.exec(&self.st.offline_sizes_delete_ids, (owner.as_str(), chunk))
                        .await?;
                }
                total += victims.len() as u64;
            }
        }
        tracing::debug!(older_than_ms, removed = total, "offline messages expired");
        Ok(total)
    }
}

#[async_trait]
impl VcardStore for ScyllaStore {
    async fn get_vcard(&self, owner: &BareJid) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            self.first(&self.st.vcard_get, (owner.as_str(),)).await?;
        match row {
            None => Ok(None),
            Some((Some(xml),)) => Ok(Some(xml)),
            Some((None,)) => Err(StorageError::Corrupt("vcard without xml".into())),
        }
    }

    async fn set_vcard(&self, owner: &BareJid, xml: &str) -> Result<()> {
        self.exec(&self.st.vcard_set, (owner.as_str(), xml)).await?;
        tracing::debug!(owner = %owner, "vcard stored");
        Ok(())
    }
}
