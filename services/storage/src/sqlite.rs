//! The embedded SQLite backend (standalone mode).
//!
//! # Threading
//!
//! One dedicated OS thread owns the writing [`Connection`] and executes jobs received over a
//! channel; each async call sends a closure and awaits its result on a oneshot. This was chosen
//! over `spawn_blocking` + `Mutex<Connection>` because SQLite admits a single writer anyway, so a
//! pool would only add lock contention and park up to N blocking-pool threads on that mutex
//! while they wait; the dedicated thread serializes work in FIFO order without any lock, never
//! touches the async runtime's threads, and keeps the connection on one thread for its whole
//! life. All the stores share the same worker, which is what makes the in-memory database (one
//! connection, one database) visible to every store.
//!
//! Each queue is bounded: a caller takes one of [`QUEUE_SLOTS`] slots before queueing its job
//! (waiting asynchronously when all are taken) and the slot returns when the job has run, so a
//! burst of callers waits in their own futures, not in a growing queue. A file database also
//! has a second, read-only connection on its own thread (the reader lane) for credential
//! lookups: in WAL mode it reads the last commit while the writer writes and fsyncs, so a
//! login is never queued behind a burst of writes. An in-memory database (one connection,
//! one database) sends its reads to the writer.
//!
//! A job that was queued still runs if its caller's future is dropped: a write may be committed
//! even though nobody observed the acknowledgement, exactly as with a lost network reply.
//! When the last store handle is dropped, the channel closes, the worker drains the queue,
//! closes the connection and is joined.
//!
//! # Durability
//!
//! WAL journal with `synchronous=FULL`: a commit is fsynced before the job returns, so a
//! future that resolved `Ok` for a write reports a durable write.
//!
//! # Schema
//!
//! [`MIGRATIONS`] is an ordered list of SQL scripts; the schema version is the number of
//! scripts applied and is recorded in `schema_version`. Pending scripts are applied in one
//! immediate transaction at open. A database whose version is newer than this build knows is
//! refused.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use xmpp::BareJid;
use xmpp::scram::{ScramHash, ScramKeys};

use crate::{
    AccountStore, Credentials, OfflineMessage, OfflineQuota, OfflineStore, Result, RosterItem,
    RosterStore, Storage, StorageError, Subscription, VcardStore,
};

mod archive;
mod domains;

/// Rows deleted per transaction by retention jobs.
const EXPIRE_BATCH: usize = 1000;

/// How long a statement waits for a lock held by another connection (another process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one script per version: version N is reached by applying `MIGRATIONS[..N]`.
/// Append only; never edit a released script.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE accounts (
        jid        TEXT PRIMARY KEY NOT NULL,
        domain     TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX accounts_by_domain ON accounts (domain, jid);

    CREATE TABLE scram_credentials (
        jid        TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
        hash       TEXT NOT NULL CHECK (hash IN ('sha1', 'sha256')),
        salt       BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        stored_key BLOB NOT NULL,
        server_key BLOB NOT NULL,
        PRIMARY KEY (jid, hash)
    ) WITHOUT ROWID;

    CREATE TABLE roster_versions (
        owner   TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE roster_items (
        owner        TEXT NOT NULL,
        contact      TEXT NOT NULL,
        name         TEXT,
        subscription TEXT NOT NULL,
        ask_out      INTEGER NOT NULL,
        pending_in   INTEGER NOT NULL,
        approved     INTEGER NOT NULL,
        PRIMARY KEY (owner, contact)
    ) WITHOUT ROWID;

    CREATE TABLE roster_groups (
        owner   TEXT NOT NULL,
        contact TEXT NOT NULL,
        pos     INTEGER NOT NULL,
        name    TEXT NOT NULL,
        PRIMARY KEY (owner, contact, pos),
        FOREIGN KEY (owner, contact) REFERENCES roster_items (owner, contact) ON DELETE CASCADE
    ) WITHOUT ROWID;

    CREATE TABLE offline_messages (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        owner    TEXT NOT NULL,
        stamp_ms INTEGER NOT NULL,
        xml      TEXT NOT NULL
    );
    CREATE INDEX offline_by_owner ON offline_messages (owner, id);

    CREATE TABLE vcards (
        owner TEXT PRIMARY KEY NOT NULL,
        xml   TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: the message archive (XEP-0313) and offline retention.
    //
    // `id` is the archive time in milliseconds shifted left by ARCHIVE_SEQ_BITS plus a
    // sequence number, so it is unique, ordered like the messages, and carries the time (no
    // stamp column; time filters are id ranges). Live messages and tombstones (`removed = 1`,
    // left by a removal so a later retraction can be reported) are indexed apart: every
    // query reads live rows through a partial index, and counting one owner's archive never
    // touches the table.
    r#"
    CREATE TABLE archive (
        id        INTEGER PRIMARY KEY,
        owner     TEXT NOT NULL,
        domain    TEXT NOT NULL,
        with_jid  TEXT NOT NULL,
        direction INTEGER NOT NULL CHECK (direction IN (0, 1)),
        removed   INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
        xml       TEXT NOT NULL
    );
    CREATE INDEX archive_by_owner ON archive (owner, id) WHERE removed = 0;
    CREATE INDEX archive_by_with ON archive (owner, with_jid, id) WHERE removed = 0;
    CREATE INDEX archive_tombstones ON archive (owner, id) WHERE removed = 1;
    CREATE INDEX archive_by_domain ON archive (domain, id);

    CREATE TABLE archive_counts (
        owner TEXT PRIMARY KEY NOT NULL,
        live  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE archive_prefs (
        owner        TEXT PRIMARY KEY NOT NULL,
        default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
        always_jids  TEXT NOT NULL,
        never_jids   TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE INDEX offline_by_stamp ON offline_messages (stamp_ms);
    "#,
    // 3: hosted domains added at runtime, and the version every write of them bumps (polled
    // by the running server, which may not be the process that wrote).
    r#"
    CREATE TABLE domains (
        domain                   TEXT PRIMARY KEY NOT NULL,
        registration_open        INTEGER NOT NULL CHECK (registration_open IN (0, 1)),
        archive_retention_days   INTEGER,
        max_accounts             INTEGER,
        max_sessions_per_account INTEGER,
        offline_quota            INTEGER,
        removed                  INTEGER NOT NULL CHECK (removed IN (0, 1)),
        updated_ms               INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE domains_version (
        id      INTEGER PRIMARY KEY CHECK (id = 0),
        version INTEGER NOT NULL
    );
    INSERT INTO domains_version (id, version) VALUES (0, 0);
    "#,
    // 4: the size of each offline message, so the quota counts bytes as well as messages.
    // The owner index covers it: checking a quota never reads the messages themselves.
    r#"
    ALTER TABLE offline_messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE offline_messages SET size = length(CAST(xml AS BLOB));
    DROP INDEX offline_by_owner;
    CREATE INDEX offline_by_owner ON offline_messages (owner, id, size);
    "#,
];

/// The schema version this build creates and understands.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Opens (creating and migrating) the database at `path`, and returns every store.
pub fn open(path: &Path) -> Result<Storage> {
    let conn = Connection::open(path).map_err(|e| {
        StorageError::Unavailable(format!("cannot open database {}: {e}", path.display()))
    })?;
    let reader = Connection::open(path).map_err(|e| {
        StorageError::Unavailable(format!("cannot open database {}: {e}", path.display()))
    })?;
    let store = SqliteStore::start(conn, Some(reader), &path.display().to_string())?;
    Ok(store.into_storage())
}

/// An in-memory database, for tests.
pub fn open_in_memory() -> Result<Storage> {
    let conn = Connection::open_in_memory()
        .map_err(|e| StorageError::Unavailable(format!("cannot open in-memory database: {e}")))?;
    let store = SqliteStore::start(conn, None, ":memory:")?;
    Ok(store.into_storage())
}

/// Sets the connection options every connection of this backend uses.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // In-memory databases answer "memory": WAL does not apply to them.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StorageError::Unavailable(format!(
            "cannot enable the wal journal (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    Ok(())
}

/// Applies the pending migrations in one transaction. Returns the resulting version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db_err)?;
    let rows: i64 = tx
        .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if rows > 1 {
        return Err(StorageError::Corrupt(format!(
            "schema_version holds {rows} rows instead of one"
        )));
    }
    let current: i64 = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(db_err)?
        .unwrap_or(0);
    let latest = latest_version();
    if current > latest {
        return Err(StorageError::Unavailable(format!(
            "database schema version {current} is newer than the latest version {latest} \
             this build supports: upgrade relais or restore a matching database"
        )));
    }
    if current < 0 {
        return Err(StorageError::Corrupt(format!(
            "negative schema version {current}"
        )));
    }
    if current == latest {
        return Ok(current);
    }
    let start = usize::try_from(current).unwrap_or(usize::MAX);
    for (index, script) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(script).map_err(|e| {
            StorageError::Unavailable(format!("migration to version {} failed: {e}", index + 1))
        })?;
    }
    if rows == 0 {
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [latest])
            .map_err(db_err)?;
    } else {
        tx.execute("UPDATE schema_version SET version = ?1", [latest])
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    tracing::info!(from = current, to = latest, "storage schema migrated");
    Ok(latest)
}

/// Maps a rusqlite error: undecodable values and damaged files are `Corrupt`, the rest is
/// `Unavailable`.
fn db_err(e: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode as C;
    let corrupt = matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..)
    ) || matches!(
        e.sqlite_error_code(),
        Some(C::DatabaseCorrupt | C::NotADatabase)
    );
    if corrupt {
        StorageError::Corrupt(e.to_string())
    } else {
        StorageError::Unavailable(e.to_string())
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Jobs one lane holds (queued or running) before callers wait for a slot.
pub(crate) const QUEUE_SLOTS: usize = 1024;

/// One connection on its own thread, behind a bounded queue: a caller first takes one of
/// [`QUEUE_SLOTS`] slots (waiting asynchronously when all are taken, which is the
/// backpressure), and the slot is given back when its job has run.
struct Lane {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Lane {
    fn start(conn: Connection, name: &str, thread_name: &str) -> Result<Lane> {
        let (tx, rx) = mpsc::channel::<Job>();
        let db = name.to_owned();
        let thread = thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || worker(conn, rx, &db))
            .map_err(|e| StorageError::Unavailable(format!("cannot start storage thread: {e}")))?;
        Ok(Lane {
            tx: Some(tx),
            thread: Some(thread),
            slots: Arc::new(tokio::sync::Semaphore::new(QUEUE_SLOTS)),
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        let sender = self
            .tx
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("storage is closed".into()))?;
        sender
            .send(job)
            .map_err(|_| StorageError::Unavailable("storage thread stopped".into()))
    }

    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        // Waiting here queues nothing: a caller that gives up leaves no job behind.
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Unavailable("storage is closed".into()))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _slot = slot;
            // The caller may be gone; its result is then simply dropped.
            let _ = reply.send(f(conn));
        });
        self.send(job)?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("storage job failed".into()))?
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Closing the channel ends the worker once the queue is drained.
        drop(self.tx.take());
        if let Some(handle) = self.thread.take()
            && handle.thread().id() != thread::current().id()
            && handle.join().is_err()
        {
            tracing::error!("storage thread panicked");
        }
    }
}

/// The SQLite backend: the writer lane (every write and most reads), and for a file
/// database a reader lane for credential lookups, so logins are not stuck behind fsyncs.
struct SqliteStore {
    writer: Lane,
    reader: Option<Lane>,
    /// Archive appends waiting for the next group commit (see `archive`).
    appends: Arc<archive::AppendQueue>,
}

impl SqliteStore {
    /// Configures and migrates `conn` on the calling thread, then hands it to a new worker.
    /// `reader` is a second connection to the same file (WAL lets it read while the writer
    /// writes); an in-memory database has none.
    fn start(mut conn: Connection, reader: Option<Connection>, name: &str) -> Result<Arc<Self>> {
        configure(&conn)?;
        let version = migrate(&mut conn)?;
        let writer = Lane::start(conn, name, "storage-sqlite")?;
        let reader = match reader {
            Some(r) => {
                r.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
                r.pragma_update(None, "query_only", "ON").map_err(db_err)?;
                r.pragma_update(None, "foreign_keys", "ON")
                    .map_err(db_err)?;
                // One read now, so the reader opens its WAL files at start rather than at
                // the first login (the process's descriptors stay constant after start).
                r.query_row("SELECT count(*) FROM schema_version", [], |_| Ok(()))
                    .map_err(db_err)?;
                Some(Lane::start(r, name, "storage-sqlite-read")?)
            }
            None => None,
        };
        tracing::debug!(db = name, version, "sqlite storage opened");
        Ok(Arc::new(SqliteStore {
            writer,
            reader,
            appends: Arc::default(),
        }))
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

    /// Queues a job for the writer without waiting for it or for a slot (the archive's group
    /// commit: at most one such job is queued at a time).
    fn submit(&self, job: Job) -> Result<()> {
        self.writer.send(job)
    }

    /// Runs `f` on the writer thread and waits for its result.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.writer.call(f).await
    }

    /// Runs a read-only `f` on the reader thread (the writer's for an in-memory database).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.reader.as_ref().unwrap_or(&self.writer).call(f).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The lanes close and join their threads as they drop.
        drop(self.reader.take());
    }
}

fn worker(conn: Connection, rx: mpsc::Receiver<Job>, db: &str) {
    let mut conn = conn;
    while let Ok(job) = rx.recv() {
        // A panicking job drops its reply sender (the caller sees `Unavailable`) and its
        // transaction (rolled back); the worker keeps serving.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!(db, "storage job panicked");
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(db, error = %e, "closing the database failed");
    }
    tracing::debug!(db, "sqlite storage closed");
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A caller-supplied u64 as an SQLite integer (saturating: values above i64::MAX do not occur
/// for timestamps and ids).
fn to_sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative {what}: {v}")))
}

/// Deletes everything an account owns except its `accounts` row, inside `tx`.
fn delete_account_data(tx: &Transaction<'_>, key: &str) -> Result<()> {
    for sql in [
        "DELETE FROM scram_credentials WHERE jid = ?1",
        "DELETE FROM roster_groups WHERE owner = ?1",
        "DELETE FROM roster_items WHERE owner = ?1",
        "DELETE FROM roster_versions WHERE owner = ?1",
        "DELETE FROM offline_messages WHERE owner = ?1",
        "DELETE FROM vcards WHERE owner = ?1",
        "DELETE FROM archive WHERE owner = ?1 AND removed = 0",
        "DELETE FROM archive WHERE owner = ?1 AND removed = 1",
        "DELETE FROM archive_counts WHERE owner = ?1",
        "DELETE FROM archive_prefs WHERE owner = ?1",
    ] {
        tx.prepare_cached(sql)
            .map_err(db_err)?
            .execute([key])
            .map_err(db_err)?;
    }
    Ok(())
}

fn parse_jid(s: &str) -> Result<BareJid> {
    s.parse::<BareJid>()
        .map_err(|e| StorageError::Corrupt(format!("stored jid {s:?} is invalid: {e}")))
}

fn hash_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
    }
}

fn parse_hash(s: &str) -> Result<ScramHash> {
    match s {
        "sha1" => Ok(ScramHash::Sha1),
        "sha256" => Ok(ScramHash::Sha256),
        other => Err(StorageError::Corrupt(format!(
            "unknown scram hash {other:?}"
        ))),
    }
}

/// Writes every key set of `creds` for `jid` (a later entry for the same hash wins).
fn insert_credentials(tx: &Transaction<'_>, jid: &str, creds: &Credentials) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO scram_credentials (jid, hash, salt, iterations, stored_key, server_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (jid, hash) DO UPDATE SET salt = excluded.salt,
                 iterations = excluded.iterations, stored_key = excluded.stored_key,
                 server_key = excluded.server_key",
        )
        .map_err(db_err)?;
    for k in &creds.keys {
        stmt.execute(params![
            jid,
            hash_name(k.hash),
            k.salt,
            i64::from(k.iterations),
            k.stored_key,
            k.server_key
        ])
        .map_err(db_err)?;
    }
    Ok(())
}

/// Bumps and returns the roster version of `owner`, inside the caller's transaction.
fn bump_roster_version(tx: &Transaction<'_>, owner: &str) -> Result<u64> {
    let v: i64 = tx
        .query_row(
            "INSERT INTO roster_versions (owner, version) VALUES (?1, 1)
             ON CONFLICT (owner) DO UPDATE SET version = version + 1
             RETURNING version",
            [owner],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    from_sql_u64(v, "roster version")
}

/// The raw columns of a roster item row.
struct ItemRow {
    contact: String,
    name: Option<String>,
    subscription: String,
    ask_out: bool,
    pending_in: bool,
    approved: bool,
}

const ITEM_COLUMNS: &str = "contact, name, subscription, ask_out, pending_in, approved";

fn read_item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        contact: r.get(0)?,
        name: r.get(1)?,
        subscription: r.get(2)?,
        ask_out: r.get(3)?,
        pending_in: r.get(4)?,
        approved: r.get(5)?,
    })
}

fn decode_item(row: ItemRow, groups: Vec<String>) -> Result<RosterItem> {
    let subscription = Subscription::parse(&row.subscription).ok_or_else(|| {
        StorageError::Corrupt(format!("unknown subscription {:?}", row.subscription))
    })?;
    Ok(RosterItem {
        jid: parse_jid(&row.contact)?,
        name: row.name,
        groups,
        subscription,
        ask_out: row.ask_out,
        pending_in: row.pending_in,
        approved: row.approved,
    })
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> Result<()> {
        let key = jid.as_str().to_owned();
        let domain = jid.domain().to_owned();
        let creds = creds.clone();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let inserted = tx
                .execute(
                    "INSERT INTO accounts (jid, domain, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (jid) DO NOTHING",
                    params![key, domain, now_ms()],
                )
                .map_err(db_err)?;
            if inserted == 0 {
                return Err(StorageError::AlreadyExists);
            }
            insert_credentials(&tx, &key, &creds)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(jid = %key, "account created");
            Ok(())
        })
        .await
    }

    async fn set_credentials(&self, jid: &BareJid, creds: &Credentials) -> Result<()> {
        let key = jid.as_str().to_owned();
        let creds = creds.clone();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let exists = tx
                .query_row("SELECT 1 FROM accounts WHERE jid = ?1", [&key], |_| Ok(()))
                .optional()
                .map_err(db_err)?;
            if exists.is_none() {
                return Err(StorageError::NotFound);
            }
            tx.execute("DELETE FROM scram_credentials WHERE jid = ?1", [&key])
                .map_err(db_err)?;
            insert_credentials(&tx, &key, &creds)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(jid = %key, "credentials replaced");
            Ok(())
        })
        .await
    }

    async fn get_credentials(&self, jid: &BareJid) -> Result<Option<Credentials>> {
        let key = jid.as_str().to_owned();
        self.read(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let exists = tx
                .query_row("SELECT 1 FROM accounts WHERE jid = ?1", [&key], |_| Ok(()))
                .optional()
                .map_err(db_err)?;
            if exists.is_none() {
                return Ok(None);
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT hash, salt, iterations, stored_key, server_key
                     FROM scram_credentials WHERE jid = ?1 ORDER BY hash",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([&key], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(db_err)?;
            let mut keys = Vec::new();
            for row in rows {
                let (hash, salt, iterations, stored_key, server_key) = row.map_err(db_err)?;
                let iterations = u32::try_from(iterations).map_err(|_| {
                    StorageError::Corrupt(format!("invalid iteration count {iterations}"))
                })?;
                keys.push(ScramKeys {
                    hash: parse_hash(&hash)?,
                    salt,
                    iterations,
                    stored_key,
                    server_key,
                });
            }
            Ok(Some(Credentials { keys }))
        })
        .await
    }

    async fn delete_account(&self, jid: &BareJid) -> Result<()> {
        let key = jid.as_str().to_owned();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let deleted = tx
                .execute("DELETE FROM accounts WHERE jid = ?1", [&key])
                .map_err(db_err)?;
            if deleted == 0 {
                return Err(StorageError::NotFound);
            }
            delete_account_data(&tx, &key)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(jid = %key, "account deleted");
            Ok(())
        })
        .await
    }

    async fn count_accounts(&self, domain: &str) -> Result<u64> {
        let domain = crate::prepare_domain(domain);
        self.call(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM accounts WHERE domain = ?1")
                .map_err(db_err)?
                .query_row([&domain], |r| r.get(0))
                .map_err(db_err)?;
            from_sql_u64(n, "account count")
        })
        .await
    }

    async fn list_accounts(&self, domain: &str) -> Result<Vec<BareJid>> {
        // Compare against the prepared form the accounts were stored with.
        let domain = BareJid::domain_only(domain)
            .map(|j| j.domain().to_owned())
            .unwrap_or_else(|_| domain.to_owned());
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT jid FROM accounts WHERE domain = ?1 ORDER BY jid")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([&domain], |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse_jid(&row.map_err(db_err)?)?);
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn account_exists(&self, jid: &BareJid) -> Result<bool> {
        let key = jid.as_str().to_owned();
        self.read(move |conn| {
            let found = conn
                .query_row("SELECT 1 FROM accounts WHERE jid = ?1", [&key], |_| Ok(()))
                .optional()
                .map_err(db_err)?;
            Ok(found.is_some())
        })
        .await
    }
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn get_roster(&self, owner: &BareJid) -> Result<(u64, Vec<RosterItem>)> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM roster_versions WHERE owner = ?1",
                    [&owner],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .unwrap_or(0);
            let version = from_sql_u64(version, "roster version")?;

            let mut groups: HashMap<String, Vec<String>> = HashMap::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT contact, name FROM roster_groups WHERE owner = ?1
                         ORDER BY contact, pos",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([&owner], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(db_err)?;
                for row in rows {
                    let (contact, group) = row.map_err(db_err)?;
                    groups.entry(contact).or_default().push(group);
                }
            }

            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM roster_items WHERE owner = ?1 ORDER BY contact"
                ))
                .map_err(db_err)?;
            let rows = stmt.query_map([&owner], read_item_row).map_err(db_err)?;
            let mut items = Vec::new();
            for row in rows {
                let row = row.map_err(db_err)?;
                let item_groups = groups.remove(&row.contact).unwrap_or_default();
                items.push(decode_item(row, item_groups)?);
            }
            items.sort_by(|a, b| a.jid.cmp(&b.jid));
            Ok((version, items))
        })
        .await
    }

    async fn get_item(&self, owner: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>> {
        let owner = owner.as_str().to_owned();
        let contact = contact.as_str().to_owned();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let row = tx
                .query_row(
                    &format!(
                        "SELECT {ITEM_COLUMNS} FROM roster_items
                         WHERE owner = ?1 AND contact = ?2"
                    ),
                    [&owner, &contact],
                    read_item_row,
                )
                .optional()
                .map_err(db_err)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut stmt = tx
                .prepare_cached(
                    "SELECT name FROM roster_groups WHERE owner = ?1 AND contact = ?2
                     ORDER BY pos",
                )
                .map_err(db_err)?;
            let groups = stmt
                .query_map([&owner, &contact], |r| r.get::<_, String>(0))
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            decode_item(row, groups).map(Some)
        })
        .await
    }

    async fn put_item(&self, owner: &BareJid, item: &RosterItem) -> Result<u64> {
        let owner = owner.as_str().to_owned();
        let item = item.clone();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let contact = item.jid.as_str();
            tx.execute(
                "INSERT INTO roster_items
                     (owner, contact, name, subscription, ask_out, pending_in, approved)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name,
                     subscription = excluded.subscription, ask_out = excluded.ask_out,
                     pending_in = excluded.pending_in, approved = excluded.approved",
                params![
                    owner,
                    contact,
                    item.name,
                    item.subscription.as_str(),
                    item.ask_out,
                    item.pending_in,
                    item.approved
                ],
            )
            .map_err(db_err)?;
            tx.execute(
                "DELETE FROM roster_groups WHERE owner = ?1 AND contact = ?2",
                [&owner, contact],
            )
            .map_err(db_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO roster_groups (owner, contact, pos, name)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(db_err)?;
                for (pos, group) in item.groups.iter().enumerate() {
                    let pos = i64::try_from(pos).unwrap_or(i64::MAX);
                    stmt.execute(params![owner, contact, pos, group])
                        .map_err(db_err)?;
                }
            }
            let version = bump_roster_version(&tx, &owner)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, contact = %contact, version, "roster item stored");
            Ok(version)
        })
        .await
    }

    async fn remove_item(&self, owner: &BareJid, contact: &BareJid) -> Result<u64> {
        let owner = owner.as_str().to_owned();
        let contact = contact.as_str().to_owned();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "DELETE FROM roster_groups WHERE owner = ?1 AND contact = ?2",
                [&owner, &contact],
            )
            .map_err(db_err)?;
            let deleted = tx
                .execute(
                    "DELETE FROM roster_items WHERE owner = ?1 AND contact = ?2",
                    [&owner, &contact],
                )
                .map_err(db_err)?;
            if deleted == 0 {
                // Dropping the transaction rolls it back.
                return Err(StorageError::NotFound);
            }
            let version = bump_roster_version(&tx, &owner)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, contact = %contact, version, "roster item removed");
            Ok(version)
        })
        .await
    }
}

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push(
        &self,
        owner: &BareJid,
        stamp_ms: u64,
        xml: &str,
        quota: OfflineQuota,
    ) -> Result<u64> {
        let owner = owner.as_str().to_owned();
        let xml = xml.to_owned();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let (held, held_bytes): (i64, i64) = tx
                .query_row(
                    "SELECT count(*), coalesce(sum(size), 0) FROM offline_messages
                     WHERE owner = ?1",
                    [&owner],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db_err)?;
            let held = usize::try_from(held).unwrap_or(0);
            let held_bytes = usize::try_from(held_bytes).unwrap_or(0);
            if !quota.admits(held, held_bytes, xml.len()) {
                tracing::debug!(owner = %owner, held, held_bytes, ?quota, "offline quota reached");
                return Err(StorageError::QuotaExceeded);
            }
            let size = i64::try_from(xml.len()).unwrap_or(i64::MAX);
            let id: i64 = tx
                .query_row(
                    "INSERT INTO offline_messages (owner, stamp_ms, xml, size)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![owner, to_sql_u64(stamp_ms), xml, size],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            let id = from_sql_u64(id, "offline message id")?;
            tracing::debug!(owner = %owner, id, "offline message stored");
            Ok(id)
        })
        .await
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<OfflineMessage>> {
        self.list_page(owner, 0, usize::MAX, usize::MAX).await
    }

    async fn list_page(
        &self,
        owner: &BareJid,
        after: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, stamp_ms, xml FROM offline_messages WHERE owner = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3",
                )
                .map_err(db_err)?;
            let limit = i64::try_from(max_messages).unwrap_or(i64::MAX);
            let mut rows = stmt
                .query(params![owner, to_sql_u64(after), limit])
                .map_err(db_err)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            // Row by row, so nothing past the page is read.
            while let Some(row) = rows.next().map_err(db_err)? {
                let (id, stamp_ms, xml) = (
                    row.get::<_, i64>(0).map_err(db_err)?,
                    row.get::<_, i64>(1).map_err(db_err)?,
                    row.get::<_, String>(2).map_err(db_err)?,
                );
                bytes = bytes.saturating_add(xml.len());
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(OfflineMessage {
                    id: from_sql_u64(id, "offline message id")?,
                    stamp_ms: from_sql_u64(stamp_ms, "offline message stamp")?,
                    xml,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn remove_ids(&self, owner: &BareJid, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let owner = owner.as_str().to_owned();
        let ids = ids.to_vec();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let mut removed = 0;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM offline_messages WHERE owner = ?1 AND id = ?2")
                    .map_err(db_err)?;
                for id in &ids {
                    removed += stmt
                        .execute(params![owner, to_sql_u64(*id)])
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, removed, "offline messages removed by id");
            Ok(())
        })
        .await
    }

    async fn remove_up_to(&self, owner: &BareJid, up_to: u64) -> Result<()> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let removed = tx
                .execute(
                    "DELETE FROM offline_messages WHERE owner = ?1 AND id <= ?2",
                    params![owner, to_sql_u64(up_to)],
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, up_to, removed, "offline messages removed");
            Ok(())
        })
        .await
    }

    async fn count(&self, owner: &BareJid) -> Result<usize> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM offline_messages WHERE owner = ?1",
                    [&owner],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            usize::try_from(n).map_err(|_| StorageError::Corrupt(format!("invalid count {n}")))
        })
        .await
    }

    async fn expire(&self, older_than_ms: u64) -> Result<u64> {
        let cutoff = to_sql_u64(older_than_ms);
        let mut total = 0u64;
        loop {
            // One batch per job, so other work interleaves with a large expiry.
            let removed = self
                .call(move |conn| {
                    let tx = immediate(conn)?;
                    let n = tx
                        .execute(
                            "DELETE FROM offline_messages WHERE id IN (
                                 SELECT id FROM offline_messages WHERE stamp_ms < ?1 LIMIT ?2)",
                            params![cutoff, EXPIRE_BATCH],
                        )
                        .map_err(db_err)?;
                    tx.commit().map_err(db_err)?;
                    Ok(n)
                })
                .await?;
            total += removed as u64;
            if removed < EXPIRE_BATCH {
                break;
            }
        }
        tracing::debug!(older_than_ms, removed = total, "offline messages expired");
        Ok(total)
    }
}

#[async_trait]
impl VcardStore for SqliteStore {
    async fn get_vcard(&self, owner: &BareJid) -> Result<Option<String>> {
        let owner = owner.as_str().to_owned();
        self.call(move |conn| {
            conn.query_row("SELECT xml FROM vcards WHERE owner = ?1", [&owner], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn set_vcard(&self, owner: &BareJid, xml: &str) -> Result<()> {
        let owner = owner.as_str().to_owned();
        let xml = xml.to_owned();
        self.call(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO vcards (owner, xml) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET xml = excluded.xml",
                [&owner, &xml],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(owner = %owner, "vcard stored");
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::suite::TestBackend;

    fn file_backend() -> TestBackend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relais.db");
        let storage = open(&path).unwrap();
        TestBackend {
            storage,
            reopen: Some(Box::new(move || {
                let path = path.clone();
                Box::pin(async move { open(&path) })
            })),
            guard: Box::new(dir),
        }
    }

    crate::storage_test_suite!(in_memory, async {
        TestBackend {
            storage: open_in_memory().unwrap(),
            reopen: None,
            guard: Box::new(()),
        }
    });

    crate::storage_test_suite!(file, async { file_backend() }, durable);

    #[tokio::test]
    async fn credential_reads_are_not_stuck_behind_writes_and_the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relais.db");
        let conn = Connection::open(&path).unwrap();
        let reader = Connection::open(&path).unwrap();
        let store = SqliteStore::start(conn, Some(reader), "test").unwrap();
        let alice = jid("alice@example.org");
        let creds = Credentials {
            keys: vec![xmpp::scram::derive_keys(
                ScramHash::Sha256,
                "pw",
                b"salt",
                4096,
            )],
        };
        store.create_account(&alice, &creds).await.unwrap();
        // The writer is busy (a long write, held until we let it go).
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .call(move |_| {
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            })
        };
        while store.writer.slots.available_permits() == QUEUE_SLOTS {
            tokio::task::yield_now().await;
        }
        // More writers than the queue holds: they wait for a slot, the queue stays bounded.
        let mut waiting = Vec::new();
        for _ in 0..QUEUE_SLOTS + 10 {
            let store = Arc::clone(&store);
            waiting.push(tokio::spawn(async move {
                store
                    .call(|c| c.execute_batch("SELECT 1").map_err(db_err))
                    .await
            }));
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.writer.slots.available_permits(), 0);
        // A login's lookup still answers (the timeout only stops a hang).
        let read = tokio::time::timeout(Duration::from_secs(30), store.get_credentials(&alice))
            .await
            .unwrap_or_else(|_| panic!("the credentials read waited behind the writer"));
        assert_eq!(read.unwrap(), Some(creds));
        assert!(!busy.is_finished());
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(store.writer.slots.available_permits(), QUEUE_SLOTS);
    }

    fn stored_version(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap()
    }

    fn jid(s: &str) -> BareJid {
        s.parse().unwrap()
    }

    #[test]
    fn fresh_database_reports_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        drop(open(&path).unwrap());
        assert_eq!(stored_version(&path), latest_version());
        assert!(latest_version() >= 1);
    }

    #[test]
    fn migrating_an_up_to_date_database_does_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), latest_version());
        conn.execute(
            "INSERT INTO vcards (owner, xml) VALUES ('a@example.com', '<vCard/>')",
            [],
        )
        .unwrap();
        // A second run neither fails on existing tables nor touches data or the version row.
        assert_eq!(migrate(&mut conn).unwrap(), latest_version());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let vcards: i64 = conn
            .query_row("SELECT count(*) FROM vcards", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vcards, 1);
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(open(&path).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE schema_version SET version = ?1",
                [latest_version() + 1],
            )
            .unwrap();
        }
        let err = match open(&path) {
            Ok(_) => panic!("a newer schema must not open"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "database schema version {} is newer than the latest version {}",
                latest_version() + 1,
                latest_version()
            )),
            "unclear message: {msg}"
        );
        // The refused database is left as it was.
        assert_eq!(stored_version(&path), latest_version() + 1);
    }

    #[tokio::test]
    async fn connection_is_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("pragmas.db")).unwrap();
        let store = SqliteStore::start(conn, None, "pragmas").unwrap();
        let (mode, sync, fk) = store
            .call(|c| {
                let q = |sql: &str| {
                    c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
                        .map_err(db_err)
                };
                Ok((
                    q("PRAGMA journal_mode")?,
                    q("PRAGMA synchronous")?,
                    q("PRAGMA foreign_keys")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, rusqlite::types::Value::Text("wal".into()));
        // 2 = FULL.
        assert_eq!(sync, rusqlite::types::Value::Integer(2));
        assert_eq!(fk, rusqlite::types::Value::Integer(1));
    }

    #[tokio::test]
    async fn undecodable_rows_are_corrupt_not_panics() {
        let store =
            SqliteStore::start(Connection::open_in_memory().unwrap(), None, "corrupt").unwrap();
        let storage = store.clone().into_storage();
        let owner = jid("owner@example.com");
        store
            .call(|c| {
                c.execute_batch(
                    "INSERT INTO roster_items VALUES
                         ('owner@example.com', '', NULL, 'none', 0, 0, 0);
                     INSERT INTO roster_items VALUES
                         ('other@example.com', 'b@example.com', NULL, 'maybe', 0, 0, 0);
                     INSERT INTO accounts VALUES ('bad@example.com', 'example.com', 0);
                     INSERT INTO scram_credentials VALUES
                         ('bad@example.com', 'sha1', x'00', -1, x'00', x'00');
                     INSERT INTO accounts VALUES ('@', 'broken.example', 0);
                     INSERT INTO offline_messages (owner, stamp_ms, xml)
                         VALUES ('owner@example.com', -5, '<message/>');",
                )
                .map_err(db_err)
            })
            .await
            .unwrap();
        let corrupt = |r: Result<_>| matches!(r, Err(StorageError::Corrupt(_)));
        assert!(corrupt(
            storage.rosters.get_roster(&owner).await.map(|_| ())
        ));
        assert!(corrupt(
            storage
                .rosters
                .get_item(&jid("other@example.com"), &jid("b@example.com"))
                .await
                .map(|_| ())
        ));
        assert!(corrupt(
            storage
                .accounts
                .get_credentials(&jid("bad@example.com"))
                .await
                .map(|_| ())
        ));
        assert!(corrupt(
            storage
                .accounts
                .list_accounts("broken.example")
                .await
                .map(|_| ())
        ));
        assert!(corrupt(storage.offline.list(&owner).await.map(|_| ())));
        // The worker still serves after reporting corruption.
        assert_eq!(storage.offline.count(&owner).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn panicking_job_reports_unavailable_and_worker_survives() {
        let store =
            SqliteStore::start(Connection::open_in_memory().unwrap(), None, "panic").unwrap();
        let r: Result<()> = store.call(|_| panic!("job failure")).await;
        assert!(matches!(r, Err(StorageError::Unavailable(_))));
        let one: i64 = store
            .call(|c| c.query_row("SELECT 1", [], |r| r.get(0)).map_err(db_err))
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
}
