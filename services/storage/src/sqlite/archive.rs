//! The message archive on SQLite.
//!
//! # Ids
//!
//! An archive id is `stamp_ms << ARCHIVE_SEQ_BITS | seq`, stored as the table's integer
//! primary key and shown to clients as 13 characters of Crockford base32 (fixed width, so
//! the strings sort like the numbers). The worker thread runs one job at a time, so each
//! append takes `max(stamp << SEQ_BITS, last id + 1)`: ids are unique, strictly increasing,
//! and their time part never goes backwards (a stamp older than the last append's is raised
//! to it). Time filters are therefore id ranges, and the archive time needs no column.
//!
//! # Group commit
//!
//! Every append is durable before it is acknowledged, and an fsync per message would cap the
//! archive at a few hundred messages per second. Appends therefore go through a queue: the
//! append that finds it empty schedules one flush job on the worker, and that job writes
//! everything queued by the time it runs in a single transaction, then acknowledges each
//! append. Under load many messages share one commit; alone, an append costs what it would
//! have anyway.
//!
//! # Queries
//!
//! Every read goes through the partial index of live rows, `(owner, id)` or
//! `(owner, with_jid, id)`, as one range scan bounded by the filter and the page cursor, with
//! a `LIMIT` of one more than the page (to know whether the page is the last). The count of
//! an unfiltered query comes from `archive_counts`, kept up to date by every write; a
//! filtered count scans the same index range without touching the table. A query by `ids`
//! first checks which ids are selected reading only their `with_jid` (by primary key), then
//! reads the XML of the page's rows only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use xmpp::BareJid;

use super::{EXPIRE_BATCH, SqliteStore, db_err, immediate, parse_jid};
use crate::{
    ArchiveDefault, ArchiveFilter, ArchiveMetadata, ArchivePage, ArchivePrefs, ArchiveResult,
    ArchiveStore, ArchivedMessage, ArchivedRef, Direction, NewArchived, Result, StorageError,
};

/// Bits of an id below the millisecond time: over a million appends per millisecond.
const SEQ_BITS: u32 = 20;
/// The largest time (ms) an id can hold (year 2248).
const MAX_MS: u64 = (i64::MAX as u64) >> SEQ_BITS;
const ID_LEN: usize = 13;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The external form of an id.
pub(crate) fn encode_id(id: i64) -> String {
    let v = id.max(0).unsigned_abs();
    (0..ID_LEN)
        .rev()
        .map(|i| {
            // 13 digits of 5 bits cover 65 bits; the top digit holds the last 4.
            let digit = (v >> (i * 5)) & 31;
            char::from(ALPHABET[usize::try_from(digit).unwrap_or(0)])
        })
        .collect()
}

/// Parses an external id; `None` when it is not one this store could have made.
pub(crate) fn decode_id(s: &str) -> Option<i64> {
    if s.len() != ID_LEN {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        let digit = ALPHABET.iter().position(|a| *a == c)?;
        v = v.checked_mul(32)?.checked_add(u64::try_from(digit).ok()?)?;
    }
    i64::try_from(v).ok()
}

fn stamp_of(id: i64) -> u64 {
    id.max(0).unsigned_abs() >> SEQ_BITS
}

fn direction_code(d: Direction) -> i64 {
    match d {
        Direction::Incoming => 0,
        Direction::Outgoing => 1,
    }
}

fn parse_direction(v: i64) -> Result<Direction> {
    match v {
        0 => Ok(Direction::Incoming),
        1 => Ok(Direction::Outgoing),
        other => Err(StorageError::Corrupt(format!(
            "unknown archive direction {other}"
        ))),
    }
}

fn default_name(d: ArchiveDefault) -> &'static str {
    match d {
        ArchiveDefault::Always => "always",
        ArchiveDefault::Never => "never",
        ArchiveDefault::Roster => "roster",
    }
}

fn parse_default(s: &str) -> Result<ArchiveDefault> {
    match s {
        "always" => Ok(ArchiveDefault::Always),
        "never" => Ok(ArchiveDefault::Never),
        "roster" => Ok(ArchiveDefault::Roster),
        other => Err(StorageError::Corrupt(format!(
            "unknown archive default {other:?}"
        ))),
    }
}

/// JIDs joined by newlines (a prepared JID never holds a control character).
fn join_jids(jids: &[BareJid]) -> String {
    jids.iter()
        .map(BareJid::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

fn split_jids(s: &str) -> Result<Vec<BareJid>> {
    s.split('\n')
        .filter(|j| !j.is_empty())
        .map(parse_jid)
        .collect()
}

/// The lowest id at or after `ms`.
fn lower_of_ms(ms: u64) -> i64 {
    if ms > MAX_MS {
        i64::MAX
    } else {
        i64::try_from(ms << SEQ_BITS).unwrap_or(i64::MAX)
    }
}

/// The highest id at or before the end of millisecond `ms`.
fn upper_of_ms(ms: u64) -> i64 {
    if ms >= MAX_MS {
        i64::MAX
    } else {
        i64::try_from(((ms + 1) << SEQ_BITS) - 1).unwrap_or(i64::MAX)
    }
}

/// Resolves an id given by a client: it must name a row of this owner's archive (live or a
/// tombstone, which still marks a position).
fn known_id(tx: &Transaction<'_>, owner: &str, id: &str) -> Result<i64> {
    let Some(n) = decode_id(id) else {
        return Err(StorageError::NotFound);
    };
    let found = tx
        .prepare_cached("SELECT owner FROM archive WHERE id = ?1")
        .map_err(db_err)?
        .query_row([n], |r| r.get::<_, String>(0))
        .optional()
        .map_err(db_err)?;
    match found {
        Some(o) if o == owner => Ok(n),
        _ => Err(StorageError::NotFound),
    }
}

/// An inclusive id range.
#[derive(Clone, Copy)]
struct Range {
    lo: i64,
    hi: i64,
}

impl Range {
    const ALL: Range = Range {
        lo: i64::MIN,
        hi: i64::MAX,
    };

    fn after(&mut self, id: i64) {
        self.lo = self.lo.max(id.saturating_add(1));
    }

    fn before(&mut self, id: i64) {
        self.hi = self.hi.min(id.saturating_sub(1));
    }

    fn is_all(&self) -> bool {
        self.lo == i64::MIN && self.hi == i64::MAX
    }
}

struct Row {
    id: i64,
    with: String,
    direction: i64,
    xml: String,
}

#[cfg(test)]
thread_local! {
    /// Full rows (with the message XML) read on this thread, for the tests of what a query
    /// reads.
    static ROWS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    #[cfg(test)]
    ROWS_READ.with(|n| n.set(n.get() + 1));
    Ok(Row {
        id: r.get(0)?,
        with: r.get(1)?,
        direction: r.get(2)?,
        xml: r.get(3)?,
    })
}

fn decode_row(row: Row) -> Result<ArchivedMessage> {
    Ok(ArchivedMessage {
        id: encode_id(row.id),
        stamp_ms: stamp_of(row.id),
        with: parse_jid(&row.with)?,
        direction: parse_direction(row.direction)?,
        xml: row.xml,
    })
}

/// The live rows of one owner in `range` (and with `with`, if given), ascending or
/// descending, at most `limit`.
fn scan(
    tx: &Transaction<'_>,
    owner: &str,
    with: Option<&str>,
    range: Range,
    descending: bool,
    limit: usize,
) -> Result<Vec<Row>> {
    let order = if descending { "DESC" } else { "ASC" };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match with {
        Some(w) => {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT id, with_jid, direction, xml FROM archive
                     WHERE owner = ?1 AND with_jid = ?2 AND removed = 0
                       AND id BETWEEN ?3 AND ?4
                     ORDER BY id {order} LIMIT ?5"
                ))
                .map_err(db_err)?;
            stmt.query_map(params![owner, w, range.lo, range.hi, limit], read_row)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
        }
        None => {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT id, with_jid, direction, xml FROM archive
                     WHERE owner = ?1 AND removed = 0 AND id BETWEEN ?2 AND ?3
                     ORDER BY id {order} LIMIT ?4"
                ))
                .map_err(db_err)?;
            stmt.query_map(params![owner, range.lo, range.hi, limit], read_row)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
        }
    };
    rows.map_err(db_err)
}

/// How many live rows the filter selects.
fn count(tx: &Transaction<'_>, owner: &str, with: Option<&str>, range: Range) -> Result<usize> {
    let n: i64 = match with {
        None if range.is_all() => tx
            .prepare_cached("SELECT live FROM archive_counts WHERE owner = ?1")
            .map_err(db_err)?
            .query_row([owner], |r| r.get(0))
            .optional()
            .map_err(db_err)?
            .unwrap_or(0),
        None => tx
            .prepare_cached(
                "SELECT count(*) FROM archive
                 WHERE owner = ?1 AND removed = 0 AND id BETWEEN ?2 AND ?3",
            )
            .map_err(db_err)?
            .query_row(params![owner, range.lo, range.hi], |r| r.get(0))
            .map_err(db_err)?,
        Some(w) => tx
            .prepare_cached(
                "SELECT count(*) FROM archive
                 WHERE owner = ?1 AND with_jid = ?2 AND removed = 0 AND id BETWEEN ?3 AND ?4",
            )
            .map_err(db_err)?
            .query_row(params![owner, w, range.lo, range.hi], |r| r.get(0))
            .map_err(db_err)?,
    };
    usize::try_from(n).map_err(|_| StorageError::Corrupt(format!("invalid archive count {n}")))
}

fn add_live(tx: &Transaction<'_>, owner: &str, delta: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO archive_counts (owner, live) VALUES (?1, ?2)
         ON CONFLICT (owner) DO UPDATE SET live = live + excluded.live",
    )
    .map_err(db_err)?
    .execute(params![owner, delta])
    .map_err(db_err)?;
    Ok(())
}

fn run_query(
    conn: &mut Connection,
    owner: &str,
    filter: &ArchiveFilter,
    page: &ArchivePage,
) -> Result<ArchiveResult> {
    let tx = conn.transaction().map_err(db_err)?;
    let with = filter.with.as_ref().map(BareJid::as_str);

    // The selection, before paging.
    let mut selection = Range::ALL;
    if let Some(ms) = filter.start_ms {
        selection.lo = lower_of_ms(ms);
    }
    if let Some(ms) = filter.end_ms {
        selection.hi = upper_of_ms(ms);
    }
    if let Some(id) = &filter.after_id {
        selection.after(known_id(&tx, owner, id)?);
    }
    if let Some(id) = &filter.before_id {
        selection.before(known_id(&tx, owner, id)?);
    }
    // The page within it.
    let mut window = selection;
    if let Some(id) = &page.after {
        window.after(known_id(&tx, owner, id)?);
    }
    if let Some(id) = &page.before {
        window.before(known_id(&tx, owner, id)?);
    }
    let backwards = page.before.is_some() || (page.after.is_none() && page.from_end);

    if !filter.ids.is_empty() {
        let mut wanted = Vec::with_capacity(filter.ids.len());
        for id in &filter.ids {
            wanted.push(known_id(&tx, owner, id)?);
        }
        wanted.sort_unstable();
        wanted.dedup();
        // First which of the ids are selected (without reading any message), then only the
        // page's rows: a request for 1,000 ids with a page of 10 reads 10 messages.
        let mut probe = tx
            .prepare_cached(
                "SELECT with_jid FROM archive WHERE id = ?1 AND owner = ?2 AND removed = 0",
            )
            .map_err(db_err)?;
        let mut selected = Vec::new();
        for id in wanted
            .into_iter()
            .filter(|id| (selection.lo..=selection.hi).contains(id))
        {
            if let Some(w) = probe
                .query_row(params![id, owner], |r| r.get::<_, String>(0))
                .optional()
                .map_err(db_err)?
                && with.is_none_or(|x| x == w)
            {
                selected.push(id);
            }
        }
        let count = selected.len();
        let mut in_window: Vec<i64> = selected
            .into_iter()
            .filter(|id| (window.lo..=window.hi).contains(id))
            .collect();
        let complete = in_window.len() <= page.max;
        if backwards {
            let skip = in_window.len().saturating_sub(page.max);
            in_window.drain(..skip);
        } else {
            in_window.truncate(page.max);
        }
        let mut fetch = tx
            .prepare_cached(
                "SELECT id, with_jid, direction, xml FROM archive
                 WHERE id = ?1 AND owner = ?2 AND removed = 0",
            )
            .map_err(db_err)?;
        let mut items = Vec::with_capacity(in_window.len());
        for id in in_window {
            if let Some(row) = fetch
                .query_row(params![id, owner], read_row)
                .optional()
                .map_err(db_err)?
            {
                items.push(decode_row(row)?);
            }
        }
        return Ok(ArchiveResult {
            items,
            complete,
            count,
        });
    }

    let mut rows = if window.lo > window.hi {
        Vec::new()
    } else {
        scan(
            &tx,
            owner,
            with,
            window,
            backwards,
            page.max.saturating_add(1),
        )?
    };
    let complete = rows.len() <= page.max;
    rows.truncate(page.max);
    if backwards {
        rows.reverse();
    }
    let count = if selection.lo > selection.hi {
        0
    } else {
        count(&tx, owner, with, selection)?
    };
    let items = rows
        .into_iter()
        .map(decode_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(ArchiveResult {
        items,
        complete,
        count,
    })
}

fn boundary(conn: &Connection, owner: &str, descending: bool) -> Result<Option<(String, u64)>> {
    let sql = if descending {
        "SELECT id FROM archive WHERE owner = ?1 AND removed = 0 ORDER BY id DESC LIMIT 1"
    } else {
        "SELECT id FROM archive WHERE owner = ?1 AND removed = 0 ORDER BY id ASC LIMIT 1"
    };
    let id: Option<i64> = conn
        .prepare_cached(sql)
        .map_err(db_err)?
        .query_row([owner], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    Ok(id.map(|id| (encode_id(id), stamp_of(id))))
}

/// One append waiting for the group commit.
struct Pending {
    owner: String,
    domain: String,
    with: String,
    direction: i64,
    xml: String,
    /// The lowest id the message may get (its stamp).
    floor: i64,
    reply: tokio::sync::oneshot::Sender<Result<ArchivedRef>>,
}

/// The appends waiting for the next group commit.
#[derive(Default)]
pub(super) struct AppendQueue(Mutex<Vec<Pending>>);

impl AppendQueue {
    /// Queues one append; true when the queue was empty (the caller must schedule a flush).
    fn push(&self, p: Pending) -> bool {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        q.push(p);
        q.len() == 1
    }

    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Writes every queued append in one transaction and answers each. On the worker thread.
fn flush_appends(conn: &mut Connection, queue: &AppendQueue) {
    let batch = queue.take();
    if batch.is_empty() {
        return;
    }
    match write_batch(conn, &batch) {
        Ok(refs) => {
            tracing::trace!(appends = batch.len(), "archive group commit");
            for (p, r) in batch.into_iter().zip(refs) {
                // The caller may be gone; the message is archived all the same.
                let _ = p.reply.send(Ok(r));
            }
        }
        Err(e) => {
            tracing::warn!(appends = batch.len(), error = %e, "archive group commit failed");
            let msg = e.to_string();
            for p in batch {
                let err = match &e {
                    StorageError::Corrupt(_) => StorageError::Corrupt(msg.clone()),
                    _ => StorageError::Unavailable(msg.clone()),
                };
                let _ = p.reply.send(Err(err));
            }
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Pending]) -> Result<Vec<ArchivedRef>> {
    let tx = immediate(conn)?;
    let mut last: Option<i64> = tx
        .prepare_cached("SELECT max(id) FROM archive")
        .map_err(db_err)?
        .query_row([], |r| r.get(0))
        .map_err(db_err)?;
    let mut refs = Vec::with_capacity(batch.len());
    let mut live: HashMap<&str, i64> = HashMap::new();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO archive (id, owner, domain, with_jid, direction, xml)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err)?;
        for p in batch {
            let id =
                match last {
                    Some(l) => p.floor.max(l.checked_add(1).ok_or_else(|| {
                        StorageError::Unavailable("archive ids exhausted".into())
                    })?),
                    None => p.floor,
                };
            insert
                .execute(params![id, p.owner, p.domain, p.with, p.direction, p.xml])
                .map_err(db_err)?;
            last = Some(id);
            *live.entry(p.owner.as_str()).or_default() += 1;
            refs.push(ArchivedRef {
                id: encode_id(id),
                stamp_ms: stamp_of(id),
            });
        }
    }
    for (owner, n) in live {
        add_live(&tx, owner, n)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(refs)
}

/// Deletes one batch of a domain's rows older than `cutoff` (an id). Returns how many.
fn expire_batch(conn: &mut Connection, domain: &str, cutoff: i64) -> Result<usize> {
    let tx = immediate(conn)?;
    let victims: Vec<(i64, String, bool)> = tx
        .prepare_cached(
            "SELECT id, owner, removed FROM archive WHERE domain = ?1 AND id < ?2
             ORDER BY id LIMIT ?3",
        )
        .map_err(db_err)?
        .query_map(params![domain, cutoff, EXPIRE_BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let mut live: HashMap<String, i64> = HashMap::new();
    {
        let mut del = tx
            .prepare_cached("DELETE FROM archive WHERE id = ?1")
            .map_err(db_err)?;
        for (id, owner, removed) in &victims {
            del.execute([id]).map_err(db_err)?;
            if !removed {
                *live.entry(owner.clone()).or_default() += 1;
            }
        }
    }
    for (owner, n) in live {
        add_live(&tx, &owner, -n)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(victims.len())
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn append(&self, owner: &BareJid, msg: &NewArchived<'_>) -> Result<ArchivedRef> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            owner: owner.as_str().to_owned(),
            domain: owner.domain().to_owned(),
            with: msg.with.as_str().to_owned(),
            direction: direction_code(msg.direction),
            xml: msg.xml.to_owned(),
            floor: lower_of_ms(msg.stamp_ms.min(MAX_MS)),
            reply,
        };
        if self.appends.push(pending) {
            let queue = Arc::clone(&self.appends);
            if let Err(e) = self.submit(Box::new(move |conn| flush_appends(conn, &queue))) {
                // Nobody will flush: fail everything queued (the replies are dropped).
                drop(self.appends.take());
                return Err(e);
            }
        }
        answer
            .await
            .map_err(|_| StorageError::Unavailable("storage job failed".into()))?
    }

    async fn query(
        &self,
        owner: &BareJid,
        filter: &ArchiveFilter,
        page: &ArchivePage,
    ) -> Result<ArchiveResult> {
        let owner = owner.as_str().to_owned();
        let filter = filter.clone();
        let page = page.clone();
        self.call(move |conn| run_query(conn, &owner, &filter, &page))
            .await
    }

    async fn metadata(&self, owner: &BareJid) -> Result<ArchiveMetadata> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            Ok(ArchiveMetadata {
                first: boundary(conn, &owner, false)?,
                last: boundary(conn, &owner, true)?,
            })
        })
        .await
    }

    async fn get_prefs(&self, owner: &BareJid) -> Result<Option<ArchivePrefs>> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            let row: Option<(String, String, String)> = conn
                .prepare_cached(
                    "SELECT default_mode, always_jids, never_jids FROM archive_prefs
                     WHERE owner = ?1",
                )
                .map_err(db_err)?
                .query_row([&owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(db_err)?;
            let Some((default, always, never)) = row else {
                return Ok(None);
            };
            Ok(Some(ArchivePrefs {
                default: parse_default(&default)?,
                always: split_jids(&always)?,
                never: split_jids(&never)?,
            }))
        })
        .await
    }

    async fn set_prefs(&self, owner: &BareJid, prefs: &ArchivePrefs) -> Result<()> {
        let owner = owner.as_str().to_owned();
        let default = default_name(prefs.default);
        let always = join_jids(&prefs.always);
        let never = join_jids(&prefs.never);
        self.call(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO archive_prefs (owner, default_mode, always_jids, never_jids)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner) DO UPDATE SET default_mode = excluded.default_mode,
                     always_jids = excluded.always_jids, never_jids = excluded.never_jids",
                params![owner, default, always, never],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, default, "archive preferences stored");
            Ok(())
        })
        .await
    }

    async fn remove(&self, owner: &BareJid, id: &str) -> Result<()> {
        let owner = owner.as_str().to_owned();
        let Some(n) = decode_id(id) else {
            return Err(StorageError::NotFound);
        };
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let changed = tx
                .execute(
                    "UPDATE archive SET removed = 1, xml = ''
                     WHERE id = ?1 AND owner = ?2 AND removed = 0",
                    params![n, owner],
                )
                .map_err(db_err)?;
            if changed == 0 {
                return Err(StorageError::NotFound);
            }
            add_live(&tx, &owner, -1)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, id = n, "archived message removed");
            Ok(())
        })
        .await
    }

    async fn expire(&self, domain: &str, older_than_ms: u64) -> Result<u64> {
        let domain = BareJid::domain_only(domain)
            .map(|j| j.domain().to_owned())
            .unwrap_or_else(|_| domain.to_owned());
        let cutoff = lower_of_ms(older_than_ms);
        let mut total = 0u64;
        loop {
            let d = domain.clone();
            // One batch per job: appends and queries interleave with a long expiry.
            let n = self
                .call(move |conn| expire_batch(conn, &d, cutoff))
                .await?;
            total += n as u64;
            if n < EXPIRE_BATCH {
                break;
            }
        }
        tracing::debug!(domain = %domain, older_than_ms, removed = total, "archive expired");
        Ok(total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_fixed_width_and_sort_like_numbers() {
        let samples = [
            0i64,
            1,
            31,
            32,
            1 << SEQ_BITS,
            lower_of_ms(1_700_000_000_000),
            lower_of_ms(1_700_000_000_000) + 1,
            i64::MAX,
        ];
        let encoded: Vec<String> = samples.iter().map(|&n| encode_id(n)).collect();
        for (n, e) in samples.iter().zip(&encoded) {
            assert_eq!(e.len(), ID_LEN);
            assert_eq!(decode_id(e), Some(*n));
        }
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        assert_eq!(stamp_of(lower_of_ms(1_700_000_000_000)), 1_700_000_000_000);
        assert_eq!(stamp_of(upper_of_ms(1_700_000_000_000)), 1_700_000_000_000);
    }

    #[test]
    fn an_ids_query_reads_only_the_rows_of_its_page() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut conn).unwrap();
        let owner = "alice@example.org";
        let base = lower_of_ms(1_700_000_000_000);
        for n in 0..200i64 {
            conn.execute(
                "INSERT INTO archive (id, owner, domain, with_jid, direction, xml)
                 VALUES (?1, ?2, 'example.org', 'bob@example.org', 0, ?3)",
                params![
                    base + n,
                    owner,
                    format!("<message><body>{n}</body></message>")
                ],
            )
            .unwrap();
        }
        let ids: Vec<String> = (0..200).map(|n| encode_id(base + n)).collect();
        let filter = ArchiveFilter {
            ids: ids.clone(),
            ..ArchiveFilter::default()
        };
        for (page, first) in [
            (
                ArchivePage {
                    max: 10,
                    ..ArchivePage::default()
                },
                0,
            ),
            (
                ArchivePage {
                    max: 10,
                    from_end: true,
                    ..ArchivePage::default()
                },
                190,
            ),
        ] {
            let before = ROWS_READ.with(std::cell::Cell::get);
            let r = run_query(&mut conn, owner, &filter, &page).unwrap();
            let read = ROWS_READ.with(std::cell::Cell::get) - before;
            assert_eq!(read, 10, "read {read} messages for a page of 10");
            assert_eq!(r.count, 200);
            assert!(!r.complete);
            let got: Vec<&str> = r.items.iter().map(|m| m.id.as_str()).collect();
            let want: Vec<&str> = ids[first..first + 10].iter().map(String::as_str).collect();
            assert_eq!(got, want);
        }
    }

    /// Every archive statement reads through an index: the plan never scans a table.
    #[test]
    fn statements_use_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut conn).unwrap();
        let statements = [
            "SELECT id, with_jid, direction, xml FROM archive
             WHERE owner = ?1 AND removed = 0 AND id BETWEEN ?2 AND ?3 ORDER BY id DESC LIMIT ?4",
            "SELECT id, with_jid, direction, xml FROM archive
             WHERE owner = ?1 AND with_jid = ?2 AND removed = 0 AND id BETWEEN ?3 AND ?4
             ORDER BY id ASC LIMIT ?5",
            "SELECT count(*) FROM archive
             WHERE owner = ?1 AND removed = 0 AND id BETWEEN ?2 AND ?3",
            "SELECT count(*) FROM archive
             WHERE owner = ?1 AND with_jid = ?2 AND removed = 0 AND id BETWEEN ?3 AND ?4",
            "SELECT id FROM archive WHERE owner = ?1 AND removed = 0 ORDER BY id DESC LIMIT 1",
            "SELECT id, owner, removed FROM archive WHERE domain = ?1 AND id < ?2
             ORDER BY id LIMIT ?3",
            "SELECT owner FROM archive WHERE id = ?1",
            "SELECT with_jid FROM archive WHERE id = ?1 AND owner = ?2 AND removed = 0",
            "SELECT max(id) FROM archive",
            "DELETE FROM archive WHERE owner = ?1 AND removed = 0",
            "DELETE FROM archive WHERE owner = ?1 AND removed = 1",
            "DELETE FROM offline_messages WHERE id IN (
                 SELECT id FROM offline_messages WHERE stamp_ms < ?1 LIMIT ?2)",
        ];
        for sql in statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let full_scan = plan
                .iter()
                .any(|l| l.starts_with("SCAN") && !l.contains("INDEX"));
            assert!(!full_scan, "{sql}\n{plan:#?}");
            assert!(
                plan.iter().any(|l| l.starts_with("SEARCH")),
                "{sql}\n{plan:#?}"
            );
        }
    }

    #[test]
    fn foreign_ids_do_not_decode() {
        for bad in [
            "",
            "0123",
            "0000000000000I",
            "000000000000I",
            "000000000000u",
            "ZZZZZZZZZZZZZ",
            "8000000000000",
            "ÀÀÀÀÀÀÀÀÀÀÀÀÀ",
        ] {
            assert_eq!(decode_id(bad), None, "{bad}");
        }
    }
}
