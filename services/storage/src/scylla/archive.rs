//! The message archive (XEP-0313) on ScyllaDB.
//!
//! # Writes
//!
//! An append is one logged batch: the message in `archive` (partition owner + bucket) and in
//! `archive_by_with` (owner + contact + bucket), plus the idempotent listing rows
//! (`archive_buckets`, `archive_with_buckets`, `archive_owners`). The batch log makes the two
//! copies all-or-nothing; every statement has a fixed id, so the batch is retried safely.
//!
//! # Reads
//!
//! See [`plan`](super::plan): a query reads the owner's bucket list for its range, then one
//! bounded, limited partition read per bucket in paging order until the page is full. The
//! count (`ArchiveResult::count`) is a `count(*)` per selected bucket, bounded by the same id
//! range: its cost grows with the number of selected messages (see the notes for the
//! per-bucket counters this leaves for later). Metadata reads the oldest (newest) bucket's
//! first (last) row, skipping emptied buckets.
//!
//! # Removal and retention
//!
//! `remove` moves the id to `archive_removed` (a tombstone that still works as a cursor).
//! `expire` walks the domain's owners (`archive_owners`, 16 shards), their buckets up to the
//! cutoff's, counts the older rows and range-deletes them.

use std::collections::BTreeSet;

use async_trait::async_trait;
use xmpp::BareJid;

use super::accounts::prepared_domain;
use super::ids::{ArchiveId, SHARDS, shard_of};
use super::plan::{IdRange, backwards, next_limit, plan_scans};
use super::rows::{
    ArchiveRow, PrefsRow, archived_from_row, default_name, direction_code, jid_strings,
    prefs_from_row, stored_id,
};
use super::{FLOOR_CACHE, ScyllaStore, now_ms, ttl_for};
use crate::{
    ArchiveFilter, ArchiveMetadata, ArchivePage, ArchivePrefs, ArchiveResult, ArchiveStore,
    ArchivedMessage, ArchivedRef, NewArchived, Result, StorageError,
};

impl ScyllaStore {
    /// The newest id stored for `owner` (live or removed), walking its buckets newest first.
    async fn newest_stored(&self, owner: &str) -> Result<Option<ArchiveId>> {
        let buckets: Vec<(i32,)> = self
            .all_rows(&self.st.archive_buckets_desc, (owner,))
            .await?;
        for (bucket,) in buckets {
            let live: Option<(String,)> =
                self.first(&self.st.archive_newest, (owner, bucket)).await?;
            let removed: Option<(String,)> = self
                .first(&self.st.archive_removed_newest, (owner, bucket))
                .await?;
            let mut newest = None;
            for (id,) in live.into_iter().chain(removed) {
                newest = newest.max(Some(stored_id(&id)?));
            }
            if newest.is_some() {
                return Ok(newest);
            }
        }
        Ok(None)
    }

    /// The lowest id the next append of `owner` may take, read once per owner and process.
    async fn floor(&self, owner: &str) -> Result<Option<ArchiveId>> {
        if let Some(f) = self.archive_state().floors.get(owner) {
            return Ok(Some(*f));
        }
        self.newest_stored(owner).await
    }

    /// Resolves an id given by a client: it must name a message of `owner`'s archive, live or
    /// removed.
    async fn known(&self, owner: &str, id: &str) -> Result<ArchiveId> {
        let Some(parsed) = ArchiveId::parse(id) else {
            return Err(StorageError::NotFound);
        };
        let canonical = parsed.to_string();
        let bucket = self.bucketing.bucket_of_id(parsed);
        let live: Option<ArchiveRow> = self
            .first(&self.st.archive_get, (owner, bucket, &canonical))
            .await?;
        if live.is_some() {
            return Ok(parsed);
        }
        let removed: Option<(String,)> = self
            .first(&self.st.archive_removed_get, (owner, bucket, &canonical))
            .await?;
        match removed {
            Some(_) => Ok(parsed),
            None => Err(StorageError::NotFound),
        }
    }

    /// The buckets listed for `owner` (and `with`) that `range` spans, ascending.
    async fn listed_buckets(
        &self,
        owner: &str,
        with: Option<&str>,
        range: IdRange,
    ) -> Result<Vec<i32>> {
        let (lo, hi) = range.bucket_bounds(&self.bucketing);
        let rows: Vec<(i32,)> = match with {
            None => {
                self.all_rows(&self.st.archive_buckets_range, (owner, lo, hi))
                    .await?
            }
            Some(w) => {
                self.all_rows(&self.st.archive_with_buckets_range, (owner, w, lo, hi))
                    .await?
            }
        };
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn query_ids(
        &self,
        owner: &str,
        filter: &ArchiveFilter,
        selection: IdRange,
        window: IdRange,
        page: &ArchivePage,
    ) -> Result<ArchiveResult> {
        let mut wanted = Vec::with_capacity(filter.ids.len());
        for id in &filter.ids {
            wanted.push(self.known(owner, id).await?);
        }
        wanted.sort_unstable();
        wanted.dedup();
        let with = filter.with.as_ref();
        let mut selected: Vec<(ArchiveId, ArchivedMessage)> = Vec::new();
        for id in wanted.into_iter().filter(|id| selection.contains(*id)) {
            let bucket = self.bucketing.bucket_of_id(id);
            let row: Option<ArchiveRow> = self
                .first(&self.st.archive_get, (owner, bucket, id.to_string()))
                .await?;
            if let Some(row) = row {
                let m = archived_from_row(row, bucket, &self.bucketing)?;
                if with.is_none_or(|w| *w == m.with) {
                    selected.push((id, m));
                }
            }
        }
        let count = selected.len();
        let mut in_window: Vec<ArchivedMessage> = selected
            .into_iter()
            .filter(|(id, _)| window.contains(*id))
            .map(|(_, m)| m)
            .collect();
        let complete = in_window.len() <= page.max;
        if backwards(page) {
            let skip = in_window.len().saturating_sub(page.max);
            in_window.drain(..skip);
        } else {
            in_window.truncate(page.max);
        }
        Ok(ArchiveResult {
            items: in_window,
            complete,
            count,
        })
    }

    /// Removes every archived message, tombstone, listing row and the preferences of `owner`.
    pub(super) async fn delete_archive(&self, owner: &BareJid) -> Result<()> {
        let key = owner.as_str();
        let buckets: Vec<(i32,)> = self.all_rows(&self.st.archive_buckets_asc, (key,)).await?;
        for (bucket,) in buckets {
            self.exec(&self.st.archive_delete_bucket, (key, bucket))
                .await?;
            self.exec(&self.st.archive_removed_delete_bucket, (key, bucket))
                .await?;
        }
        let with_buckets: Vec<(String, i32)> = self
            .all_rows(&self.st.archive_with_buckets_all, (key,))
            .await?;
        for (with, bucket) in with_buckets {
            self.exec(&self.st.archive_with_delete_bucket, (key, with, bucket))
                .await?;
        }
        self.exec(&self.st.archive_buckets_delete_all, (key,))
            .await?;
        self.exec(&self.st.archive_with_buckets_delete_all, (key,))
            .await?;
        self.exec(
            &self.st.archive_owner_delete,
            (owner.domain(), shard_of(key), key),
        )
        .await?;
        self.exec(&self.st.prefs_delete, (key,)).await?;
        Ok(())
    }

    /// Expires one bucket of one owner; returns how many rows went.
    async fn expire_bucket(
        &self,
        owner: &str,
        bucket: i32,
        cutoff: &str,
        whole: bool,
    ) -> Result<u64> {
        let live: Vec<(String, Option<String>)> = self
            .all_rows(&self.st.archive_older, (owner, bucket, cutoff))
            .await?;
        let removed: Vec<(String,)> = self
            .all_rows(&self.st.archive_removed_older, (owner, bucket, cutoff))
            .await?;
        let withs: BTreeSet<&str> = live.iter().filter_map(|(_, w)| w.as_deref()).collect();
        if !live.is_empty() {
            self.exec(&self.st.archive_delete_older, (owner, bucket, cutoff))
                .await?;
        }
        if !removed.is_empty() {
            self.exec(
                &self.st.archive_removed_delete_older,
                (owner, bucket, cutoff),
            )
            .await?;
        }
        for w in &withs {
            self.exec(
                &self.st.archive_with_delete_older,
                (owner, *w, bucket, cutoff),
            )
            .await?;
        }
        if whole {
            // The whole bucket is older than the cutoff: drop its listing rows too.
            for w in &withs {
                self.exec(&self.st.archive_with_bucket_delete, (owner, *w, bucket))
                    .await?;
            }
            self.exec(&self.st.archive_bucket_delete, (owner, bucket))
                .await?;
        }
        Ok((live.len() + removed.len()) as u64)
    }
}

#[async_trait]
impl ArchiveStore for ScyllaStore {
    async fn append(&self, owner: &BareJid, msg: &NewArchived<'_>) -> Result<ArchivedRef> {
        let key = owner.as_str();
        let stored_floor = self.floor(key).await?;
        let id = {
            let mut state = self.archive_state();
            let floor = state.floors.get(key).copied().max(stored_floor);
            let id = state.clock.next(msg.stamp_ms, floor);
            if state.floors.len() >= FLOOR_CACHE && !state.floors.contains_key(key) {
                state.floors.clear();
            }
            state.floors.insert(key.to_owned(), id);
            id
        };
        let id_s = id.to_string();
        let bucket = self.bucketing.bucket_of_id(id);
        let ttl = ttl_for(id.ms(), self.archive_ttl, now_ms());
        // A listing row outlives every message of its bucket.
        let bucket_secs =
            i32::try_from(u64::from(self.bucketing.days()) * 86_400).unwrap_or(i32::MAX);
        let list_ttl = if ttl == 0 {
            0
        } else {
            ttl.saturating_add(bucket_secs)
        };
        let with = msg.with.as_str();
        let direction = direction_code(msg.direction);
        self.batch(
            &self.batches.archive_append,
            (
                (key, bucket, &id_s, with, direction, msg.xml, ttl),
                (key, with, bucket, &id_s, direction, msg.xml, ttl),
                (key, bucket, list_ttl),
                (key, with, bucket, list_ttl),
                (owner.domain(), shard_of(key), key),
            ),
        )
        .await?;
        tracing::trace!(owner = %key, id = %id_s, bucket, "message archived");
        Ok(ArchivedRef {
            id: id_s,
            stamp_ms: id.ms(),
        })
    }

    async fn query(
        &self,
        owner: &BareJid,
        filter: &ArchiveFilter,
        page: &ArchivePage,
    ) -> Result<ArchiveResult> {
        let key = owner.as_str();
        let with = filter.with.as_ref().map(BareJid::as_str);
        let mut selection = IdRange::of_times(filter.start_ms, filter.end_ms);
        if let Some(id) = &filter.after_id {
            selection.after(self.known(key, id).await?);
        }
        if let Some(id) = &filter.before_id {
            selection.before(self.known(key, id).await?);
        }
        let mut window = selection;
        if let Some(id) = &page.after {
            window.after(self.known(key, id).await?);
        }
        if let Some(id) = &page.before {
            window.before(self.known(key, id).await?);
        }
        if !filter.ids.is_empty() {
            return self.query_ids(key, filter, selection, window, page).await;
        }
        let listed = if selection.is_empty() {
            Vec::new()
        } else {
            self.listed_buckets(key, with, selection).await?
        };
        let descending = backwards(page);
        let mut items: Vec<ArchivedMessage> = Vec::new();
        for scan in plan_scans(window, &listed, &self.bucketing, descending) {
            let Some(limit) = next_limit(page.max, items.len()) else {
                break;
            };
            let (lo, hi) = (scan.lo.to_string(), scan.hi.to_string());
            let rows: Vec<ArchiveRow> = match (with, descending) {
                (None, false) => {
                    self.rows(
                        &self.st.archive_scan_asc,
                        (key, scan.bucket, &lo, &hi, limit),
                    )
                    .await?
                }
                (None, true) => {
                    self.rows(
                        &self.st.archive_scan_desc,
                        (key, scan.bucket, &lo, &hi, limit),
                    )
                    .await?
                }
                (Some(w), false) => {
                    self.rows(
                        &self.st.archive_with_scan_asc,
                        (key, w, scan.bucket, &lo, &hi, limit),
                    )
                    .await?
                }
                (Some(w), true) => {
                    self.rows(
                        &self.st.archive_with_scan_desc,
                        (key, w, scan.bucket, &lo, &hi, limit),
                    )
                    .await?
                }
            };
            for row in rows {
                items.push(archived_from_row(row, scan.bucket, &self.bucketing)?);
            }
        }
        let complete = items.len() <= page.max;
        items.truncate(page.max);
        if descending {
            items.reverse();
        }
        let mut count: i64 = 0;
        for scan in plan_scans(selection, &listed, &self.bucketing, false) {
            let (lo, hi) = (scan.lo.to_string(), scan.hi.to_string());
            let n: Option<(i64,)> = match with {
                None => {
                    self.first(&self.st.archive_count, (key, scan.bucket, &lo, &hi))
                        .await?
                }
                Some(w) => {
                    self.first(&self.st.archive_with_count, (key, w, scan.bucket, &lo, &hi))
                        .await?
                }
            };
            count = count.saturating_add(n.map_or(0, |n| n.0));
        }
        let count = usize::try_from(count)
            .map_err(|_| StorageError::Corrupt(format!("invalid archive count {count}")))?;
        Ok(ArchiveResult {
            items,
            complete,
            count,
        })
    }

    async fn metadata(&self, owner: &BareJid) -> Result<ArchiveMetadata> {
        let key = owner.as_str();
        let mut meta = ArchiveMetadata::default();
        for (statement, list, slot) in [
            (&self.st.archive_oldest, &self.st.archive_buckets_asc, 0),
            (&self.st.archive_newest, &self.st.archive_buckets_desc, 1),
        ] {
            let buckets: Vec<(i32,)> = self.all_rows(list, (key,)).await?;
            for (bucket,) in buckets {
                let row: Option<(String,)> = self.first(statement, (key, bucket)).await?;
                if let Some((id,)) = row {
                    let parsed = stored_id(&id)?;
                    let found = Some((id, parsed.ms()));
                    if slot == 0 {
                        meta.first = found;
                    } else {
                        meta.last = found;
                    }
                    break;
                }
            }
        }
        Ok(meta)
    }

    async fn get_prefs(&self, owner: &BareJid) -> Result<Option<ArchivePrefs>> {
        let row: Option<PrefsRow> = self.first(&self.st.prefs_get, (owner.as_str(),)).await?;
        row.map(prefs_from_row).transpose()
    }

    async fn set_prefs(&self, owner: &BareJid, prefs: &ArchivePrefs) -> Result<()> {
        self.exec(
            &self.st.prefs_set,
            (
                owner.as_str(),
                default_name(prefs.default),
                jid_strings(&prefs.always),
                jid_strings(&prefs.never),
            ),
        )
        .await?;
        tracing::debug!(owner = %owner, default = default_name(prefs.default), "archive preferences stored");
        Ok(())
    }

    async fn remove(&self, owner: &BareJid, id: &str) -> Result<()> {
        let key = owner.as_str();
        let Some(parsed) = ArchiveId::parse(id) else {
            return Err(StorageError::NotFound);
        };
        let canonical = parsed.to_string();
        let bucket = self.bucketing.bucket_of_id(parsed);
        let row: Option<ArchiveRow> = self
            .first(&self.st.archive_get, (key, bucket, &canonical))
            .await?;
        let Some(row) = row else {
            return Err(StorageError::NotFound);
        };
        let with = row.1.ok_or_else(|| {
            StorageError::Corrupt(format!("archive row {canonical} without with_jid"))
        })?;
        let ttl = ttl_for(parsed.ms(), self.archive_ttl, now_ms());
        self.batch(
            &self.batches.archive_remove,
            (
                (key, bucket, &canonical),
                (key, &with, bucket, &canonical),
                (key, bucket, &canonical, ttl),
            ),
        )
        .await?;
        tracing::debug!(owner = %key, id = %canonical, "archived message removed");
        Ok(())
    }

    async fn expire(&self, domain: &str, older_than_ms: u64) -> Result<u64> {
        let domain = prepared_domain(domain);
        let cutoff = ArchiveId::lowest(older_than_ms).to_string();
        let cutoff_bucket = self.bucketing.bucket_of(older_than_ms);
        let mut total = 0u64;
        for shard in 0..SHARDS {
            let owners: Vec<(String,)> = self
                .all_rows(&self.st.archive_owner_list, (domain.as_str(), shard))
                .await?;
            for (owner,) in owners {
                let buckets: Vec<(i32,)> = self
                    .all_rows(
                        &self.st.archive_buckets_up_to,
                        (owner.as_str(), cutoff_bucket),
                    )
                    .await?;
                for (bucket,) in buckets {
                    total += self
                        .expire_bucket(&owner, bucket, &cutoff, bucket < cutoff_bucket)
                        .await?;
                }
            }
        }
        tracing::debug!(domain = %domain, older_than_ms, removed = total, "archive expired");
        Ok(total)
    }
}
