//! Hosted domains on SQLite. Every write bumps `domains_version` in the same transaction, so
//! a server polling the version sees writes made by another process (`relais domain ...`).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, db_err, delete_account_data, from_sql_u64, immediate, now_ms};
use crate::{DomainRecord, DomainSettings, DomainStore, Result, StorageError};

fn bump_version(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE domains_version SET version = version + 1 WHERE id = 0",
        [],
    )
    .map_err(db_err)?;
    Ok(())
}

fn opt_u32(v: Option<i64>, what: &str) -> Result<Option<u32>> {
    v.map(|n| u32::try_from(n).map_err(|_| StorageError::Corrupt(format!("invalid {what}: {n}"))))
        .transpose()
}

const COLUMNS: &str = "domain, registration_open, archive_retention_days, max_accounts, \
    max_sessions_per_account, offline_quota, removed, updated_ms";

type Row = (
    String,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    i64,
);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn decode(row: Row) -> Result<DomainRecord> {
    let (domain, registration_open, retention, max_accounts, max_sessions, quota, removed, at) =
        row;
    Ok(DomainRecord {
        domain,
        settings: DomainSettings {
            registration_open,
            archive_retention_days: opt_u32(retention, "archive_retention_days")?,
            max_accounts: opt_u32(max_accounts, "max_accounts")?,
            max_sessions_per_account: opt_u32(max_sessions, "max_sessions_per_account")?,
            offline_quota: opt_u32(quota, "offline_quota")?,
        },
        removed,
        updated_ms: from_sql_u64(at, "updated_ms")?,
    })
}

fn get(conn: &rusqlite::Connection, domain: &str) -> Result<Option<DomainRecord>> {
    let row = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM domains WHERE domain = ?1"))
        .map_err(db_err)?
        .query_row([domain], read_row)
        .optional()
        .map_err(db_err)?;
    row.map(decode).transpose()
}

#[async_trait]
impl DomainStore for SqliteStore {
    async fn put_domain(&self, domain: &str, settings: &DomainSettings) -> Result<DomainRecord> {
        let domain = crate::prepare_domain(domain);
        let s = *settings;
        self.call(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "INSERT INTO domains (domain, registration_open, archive_retention_days,
                     max_accounts, max_sessions_per_account, offline_quota, removed, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)
                 ON CONFLICT (domain) DO UPDATE SET
                     registration_open = excluded.registration_open,
                     archive_retention_days = excluded.archive_retention_days,
                     max_accounts = excluded.max_accounts,
                     max_sessions_per_account = excluded.max_sessions_per_account,
                     offline_quota = excluded.offline_quota,
                     removed = 0,
                     updated_ms = excluded.updated_ms",
                params![
                    domain,
                    s.registration_open,
                    s.archive_retention_days,
                    s.max_accounts,
                    s.max_sessions_per_account,
                    s.offline_quota,
                    now_ms()
                ],
            )
            .map_err(db_err)?;
            bump_version(&tx)?;
            let record = get(&tx, &domain)?
                .ok_or_else(|| StorageError::Unavailable("domain vanished after write".into()))?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(domain = %domain, "domain stored");
            Ok(record)
        })
        .await
    }

    async fn get_domain(&self, domain: &str) -> Result<Option<DomainRecord>> {
        let domain = crate::prepare_domain(domain);
        self.call(move |conn| get(conn, &domain)).await
    }

    async fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM domains ORDER BY domain"))
                .map_err(db_err)?;
            let rows = stmt.query_map([], read_row).map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode(row.map_err(db_err)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn remove_domain(&self, domain: &str) -> Result<()> {
        let domain = crate::prepare_domain(domain);
        self.call(move |conn| {
            let tx = immediate(conn)?;
            let n = tx
                .execute(
                    "UPDATE domains SET removed = 1, updated_ms = ?2 WHERE domain = ?1",
                    params![domain, now_ms()],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StorageError::NotFound);
            }
            bump_version(&tx)?;
            tx.commit().map_err(db_err)?;
            tracing::debug!(domain = %domain, "domain removed");
            Ok(())
        })
        .await
    }

    async fn purge_domain(&self, domain: &str) -> Result<u64> {
        let domain = crate::prepare_domain(domain);
        self.call(move |conn| {
            let tx = immediate(conn)?;
            match get(&tx, &domain)? {
                Some(r) if r.removed => {}
                _ => return Err(StorageError::NotFound),
            }
            let jids: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached("SELECT jid FROM accounts WHERE domain = ?1")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([&domain], |r| r.get::<_, String>(0))
                    .map_err(db_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(db_err)?
            };
            for jid in &jids {
                delete_account_data(&tx, jid)?;
            }
            tx.execute("DELETE FROM accounts WHERE domain = ?1", [&domain])
                .map_err(db_err)?;
            tx.execute("DELETE FROM domains WHERE domain = ?1", [&domain])
                .map_err(db_err)?;
            bump_version(&tx)?;
            tx.commit().map_err(db_err)?;
            tracing::info!(domain = %domain, accounts = jids.len(), "domain purged");
            Ok(u64::try_from(jids.len()).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn domains_version(&self) -> Result<u64> {
        self.call(move |conn| {
            let v: i64 = conn
                .prepare_cached("SELECT version FROM domains_version WHERE id = 0")
                .map_err(db_err)?
                .query_row([], |r| r.get(0))
                .map_err(db_err)?;
            from_sql_u64(v, "domains version")
        })
        .await
    }
}
