//! The ScyllaDB backend (also runs on Apache Cassandra 4+), behind the `scylla` feature.
//!
//! # Use
//!
//! [`open`] connects, applies pending migrations ([`migrate`], idempotent) and prepares every
//! statement; `relais storage migrate` calls [`connect`] then [`migrate`] alone.
//!
//! # Data model (schema in `services/storage/cql/`, sizes in `notes/scylla-notes.md`)
//!
//! | table | partition | rows per partition |
//! |---|---|---|
//! | `accounts` | jid | 1 |
//! | `accounts_by_domain` | (domain, shard of 16) | accounts of the domain / 16 |
//! | `roster` | owner | contacts (+ static `version`) |
//! | `offline` | owner | queued messages, at most the quota (+ static `next_id`) |
//! | `offline_owners` | shard of 16 | owners with a queue / 16 |
//! | `vcards`, `archive_prefs` | owner | 1 |
//! | `private_xml` | owner | namespaces |
//! | `archive`, `archive_removed` | (owner, bucket) | one owner's messages of one bucket |
//! | `archive_by_with` | (owner, contact, bucket) | the same, for one contact |
//! | `archive_buckets` | owner | buckets (one per 30 days by default) |
//! | `archive_with_buckets` | owner | contacts × buckets |
//! | `archive_owners` | (domain, shard of 16) | owners with an archive / 16 |
//! | `domains` | shard of 16 | hosted domains / 16 |
//! | `domains_version` | id (one row) | 1 |
//!
//! With 30-day buckets, an owner exchanging 1,000 messages a day of 1 KiB makes 30 MiB
//! archive partitions; the bucket length is the knob for heavier users.
//!
//! # Consistency
//!
//! Reads and writes use the configured level (LOCAL_QUORUM by default). Lightweight
//! transactions (account creation, credential changes and deletion; roster versions;
//! offline ids and quota) use SERIAL by default (LOCAL_SERIAL configurable): account names are
//! then unique across datacenters. Routing is token-aware, preferring `local_datacenter`.
//!
//! # Retention
//!
//! Archived and offline messages may carry a TTL (`archive_ttl_secs`, `offline_ttl_secs`).
//! The explicit `expire` calls of the traits still delete (and count) what is older than
//! their cutoff, walking the per-domain owner lists: with TTLs configured they mostly find
//! nothing left to do.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, PagerExecutionError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlValue;

use crate::{Result, Storage, StorageError};

mod accounts;
mod archive;
mod config;
mod domains;
pub mod ids;
pub mod plan;
pub mod rows;
pub mod schema;
pub mod statements;

pub use config::{ConsistencyLevel, Replication, ScyllaConfig, SerialLevel};
pub use schema::{latest_version, migrate};

use ids::{ArchiveClock, ArchiveId, Bucketing};
use statements::Statements;

/// The name of the bucket-length setting in `settings`.
const BUCKET_SETTING: &str = "archive_bucket_days";
/// Attempts of a lightweight-transaction loop under contention.
const CAS_ATTEMPTS: u32 = 64;

fn unavailable(msg: impl Into<String>) -> StorageError {
    StorageError::Unavailable(msg.into())
}

fn exec_err(e: ExecutionError) -> StorageError {
    unavailable(format!("scylla: {e}"))
}

fn pager_err(e: PagerExecutionError) -> StorageError {
    unavailable(format!("scylla: {e}"))
}

/// A result that cannot be read as the expected rows: the stored data or the schema is not
/// what this build wrote.
fn decode_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("scylla row: {e}"))
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A caller-supplied u64 as a bigint (saturating: larger values do not occur).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The TTL (seconds, 0 = none) of a row that should disappear `retention_secs` after
/// `stamp_ms`, written now: at least 1 so an already-late row still expires.
fn ttl_for(stamp_ms: u64, retention_secs: Option<u32>, now_ms: i64) -> i32 {
    let Some(retention) = retention_secs else {
        return 0;
    };
    let expires_ms = i128::from(stamp_ms) + i128::from(retention) * 1000;
    let left_secs = (expires_ms - i128::from(now_ms)) / 1000;
    i32::try_from(left_secs.clamp(1, i128::from(i32::MAX))).unwrap_or(i32::MAX)
}

fn consistency(level: ConsistencyLevel) -> Consistency {
    match level {
        ConsistencyLevel::One => Consistency::One,
        ConsistencyLevel::LocalOne => Consistency::LocalOne,
        ConsistencyLevel::Quorum => Consistency::Quorum,
        ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
        ConsistencyLevel::EachQuorum => Consistency::EachQuorum,
        ConsistencyLevel::All => Consistency::All,
    }
}

/// Connects to the cluster (token-aware, preferring the local datacenter).
pub async fn connect(cfg: &ScyllaConfig) -> Result<Session> {
    cfg.validate()?;
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &cfg.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let serial = match cfg.serial_consistency {
        SerialLevel::Serial => SerialConsistency::Serial,
        SerialLevel::LocalSerial => SerialConsistency::LocalSerial,
    };
    let profile = ExecutionProfile::builder()
        .consistency(consistency(cfg.consistency))
        .serial_consistency(Some(serial))
        .load_balancing_policy(policy.build())
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.hosts)
        .default_execution_profile_handle(profile.into_handle());
    if let Some(dc) = &cfg.local_datacenter {
        builder = builder.prefer_datacenter(dc.clone());
    }
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.user(user.as_str(), password.as_str());
    }
    let session = builder.build().await.map_err(|e| {
        unavailable(format!(
            "cannot connect to scylla at {}: {e}",
            cfg.hosts.join(",")
        ))
    })?;
    tracing::debug!(hosts = %cfg.hosts.join(","), "scylla session open");
    Ok(session)
}

/// Connects, migrates, prepares: every store on ScyllaDB.
pub async fn open(cfg: &ScyllaConfig) -> Result<Storage> {
    let session = connect(cfg).await?;
    migrate(&session, cfg).await?;
    let store = ScyllaStore::new(session, cfg).await?;
    Ok(Arc::new(store).into_storage())
}

/// In-process archive state: the id clock, and the newest id known per owner (read once per
/// owner after a start, so ids keep growing across restarts even for older stamps).
struct ArchiveState {
    clock: ArchiveClock,
    floors: std::collections::HashMap<String, ArchiveId>,
}

/// Owners whose newest id is remembered; beyond, the map is cleared (and re-read lazily).
const FLOOR_CACHE: usize = 100_000;

struct Batches {
    archive_append: Batch,
    archive_remove: Batch,
    roster_put: Batch,
    roster_remove: Batch,
    offline_push: Batch,
}

fn batch(kind: BatchType, idempotent: bool, parts: &[&PreparedStatement]) -> Batch {
    let mut b = Batch::new(kind);
    for p in parts {
        b.append_statement((*p).clone());
    }
    b.set_is_idempotent(idempotent);
    b
}

/// The ScyllaDB backend: one session and its prepared statements.
pub(crate) struct ScyllaStore {
    session: Session,
    st: Statements,
    batches: Batches,
    bucketing: Bucketing,
    archive_ttl: Option<u32>,
    offline_ttl: Option<u32>,
    archive: Mutex<ArchiveState>,
}

impl ScyllaStore {
    async fn new(session: Session, cfg: &ScyllaConfig) -> Result<Self> {
        session
            .use_keyspace(cfg.keyspace.as_str(), false)
            .await
            .map_err(|e| unavailable(format!("cannot use keyspace {}: {e}", cfg.keyspace)))?;
        let st = Statements::prepare(&session).await?;
        let bucketing = fixed_bucketing(&session, &st, cfg).await?;
        let batches = Batches {
            archive_append: batch(
                BatchType::Logged,
                true,
                &[
                    &st.archive_insert,
                    &st.archive_with_insert,
                    &st.archive_bucket_insert,
                    &st.archive_with_bucket_insert,
                    &st.archive_owner_insert,
                ],
            ),
            archive_remove: batch(
                BatchType::Logged,
                true,
                &[
                    &st.archive_delete_one,
                    &st.archive_with_delete_one,
                    &st.archive_removed_insert,
                ],
            ),
            roster_put: batch(
                BatchType::Logged,
                false,
                &[&st.roster_cas_version, &st.roster_put],
            ),
            roster_remove: batch(
                BatchType::Logged,
                false,
                &[&st.roster_cas_version, &st.roster_delete_item],
            ),
            offline_push: batch(
                BatchType::Logged,
                false,
                &[&st.offline_cas_next, &st.offline_insert],
            ),
        };
        let node: u32 = rand::random();
        tracing::info!(
            keyspace = %cfg.keyspace,
            bucket_days = bucketing.days(),
            node,
            "scylla storage opened"
        );
        Ok(ScyllaStore {
            session,
            st,
            batches,
            bucketing,
            archive_ttl: cfg.archive_ttl_secs,
            offline_ttl: cfg.offline_ttl_secs,
            archive: Mutex::new(ArchiveState {
                clock: ArchiveClock::new(node),
                floors: std::collections::HashMap::new(),
            }),
        })
    }

    fn into_storage(self: Arc<Self>) -> Storage {
        Storage {
            accounts: self.clone(),
            rosters: self.clone(),
            offline: self.clone(),
            vcards: self.clone(),
            archive: self.clone(),
            domains: self,
        }
    }

    async fn exec(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<QueryResult> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(exec_err)
    }

    /// Every row of a bounded read (one response).
    async fn rows<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.exec(st, values).await?;
        let rows = result.into_rows_result().map_err(decode_err)?;
        rows.rows::<R>()
            .map_err(decode_err)?
            .collect::<Result<Vec<R>, _>>()
            .map_err(decode_err)
    }

    async fn first<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.rows::<R>(st, values).await?.into_iter().next())
    }

    /// Every row of a read of unknown size, fetched page by page.
    async fn all_rows<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(st.clone(), values)
            .await
            .map_err(pager_err)?;
        let mut stream = pager.rows_stream::<R>().map_err(decode_err)?;
        let mut out = Vec::new();
        while let Some(row) = stream.next().await {
            out.push(row.map_err(|e| match e {
                scylla::client::pager::NextRowError::RowDeserializationError(d) => decode_err(d),
                other => unavailable(format!("scylla: {other}")),
            })?);
        }
        Ok(out)
    }

    async fn batch(&self, b: &Batch, values: impl BatchValues) -> Result<QueryResult> {
        self.session.batch(b, values).await.map_err(exec_err)
    }

    /// Runs a lightweight transaction; whether it was applied.
    async fn lwt(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<bool> {
        applied(self.exec(st, values).await?)
    }

    async fn lwt_batch(&self, b: &Batch, values: impl BatchValues) -> Result<bool> {
        applied(self.batch(b, values).await?)
    }
}

/// The `[applied]` column of a lightweight transaction's result.
fn applied(result: QueryResult) -> Result<bool> {
    let rows = result.into_rows_result().map_err(decode_err)?;
    let row = rows
        .maybe_first_row::<scylla::value::Row>()
        .map_err(decode_err)?
        .ok_or_else(|| decode_err("conditional statement returned no row"))?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(decode_err(format!("unexpected [applied] column {other:?}"))),
    }
}

/// Fixes the archive bucket length at the keyspace's first open; later opens use the stored
/// value (a different configured value only logs a warning: changing it would orphan data).
async fn fixed_bucketing(
    session: &Session,
    st: &Statements,
    cfg: &ScyllaConfig,
) -> Result<Bucketing> {
    let wanted = cfg.archive_bucket_days.to_string();
    session
        .execute_unpaged(&st.settings_init, (BUCKET_SETTING, &wanted))
        .await
        .map_err(exec_err)?;
    let stored: Option<(Option<String>,)> = session
        .execute_unpaged(&st.settings_get, (BUCKET_SETTING,))
        .await
        .map_err(exec_err)?
        .into_rows_result()
        .map_err(decode_err)?
        .maybe_first_row()
        .map_err(decode_err)?;
    let stored = stored
        .and_then(|r| r.0)
        .ok_or_else(|| unavailable("archive bucket setting missing after initialization"))?;
    let days: u32 = stored
        .parse()
        .map_err(|_| StorageError::Corrupt(format!("invalid stored bucket length {stored:?}")))?;
    if days != cfg.archive_bucket_days {
        tracing::warn!(
            configured = cfg.archive_bucket_days,
            stored = days,
            "archive_bucket_days differs from the keyspace's; using the keyspace's"
        );
    }
    Bucketing::new(days)
        .ok_or_else(|| StorageError::Corrupt(format!("invalid stored bucket length {days}")))
}

impl ScyllaStore {
    fn archive_state(&self) -> std::sync::MutexGuard<'_, ArchiveState> {
        self.archive.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ttls_count_from_the_stamp() {
        let now = 1_700_000_000_000i64;
        let stamp = 1_700_000_000_000u64;
        assert_eq!(ttl_for(stamp, None, now), 0);
        assert_eq!(ttl_for(stamp, Some(3600), now), 3600);
        // Stored an hour after its stamp: an hour less to live.
        assert_eq!(ttl_for(stamp, Some(7200), now + 3_600_000), 3600);
        // Already past its retention: the shortest TTL, never 0 (which would mean forever).
        assert_eq!(ttl_for(0, Some(60), now), 1);
        assert_eq!(ttl_for(u64::MAX, Some(u32::MAX), now), i32::MAX);
    }

    #[test]
    fn consistency_levels_map() {
        assert_eq!(
            consistency(ConsistencyLevel::default()),
            Consistency::LocalQuorum
        );
        assert_eq!(consistency(ConsistencyLevel::One), Consistency::One);
        assert_eq!(
            consistency(ConsistencyLevel::EachQuorum),
            Consistency::EachQuorum
        );
    }
}
