//! Every CQL statement the backend runs, prepared once at open.
//!
//! Rules (checked by the tests below): no `ALLOW FILTERING`; every `SELECT`, `UPDATE` and
//! `DELETE` restricts the full partition key with `=`; every archive read or delete names
//! `owner` and `bucket`. Lightweight transactions (`IF ...`) are marked non-idempotent (the
//! driver must not retry them blindly); everything else is idempotent.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::unavailable;
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Safe to retry or run speculatively.
    Idempotent,
    /// A lightweight transaction (Paxos, SERIAL consistency).
    Lwt,
}

macro_rules! statements {
    ($( $field:ident: $kind:ident = $cql:expr; )*) => {
        /// The prepared statements.
        pub struct Statements {
            $(pub $field: PreparedStatement,)*
        }

        /// (name, kind, CQL) of every statement.
        pub const ALL: &[(&str, Kind, &str)] = &[$((stringify!($field), Kind::$kind, $cql),)*];

        impl Statements {
            pub async fn prepare(session: &Session) -> Result<Self> {
                Ok(Statements {
                    $($field: prepare(session, stringify!($field), $cql, Kind::$kind).await?,)*
                })
            }
        }
    };
}

async fn prepare(
    session: &Session,
    name: &str,
    cql: &str,
    kind: Kind,
) -> Result<PreparedStatement> {
    let mut p = session
        .prepare(cql)
        .await
        .map_err(|e| unavailable(format!("cannot prepare {name}: {e}")))?;
    p.set_is_idempotent(kind == Kind::Idempotent);
    Ok(p)
}

/// A bounded, ordered, limited read of one archive partition.
macro_rules! scan_cql {
    ($table:literal, $with:literal, $order:literal) => {
        concat!(
            "SELECT id, with_jid, direction, xml FROM ",
            $table,
            " WHERE owner = ? ",
            $with,
            "AND bucket = ? AND id >= ? AND id <= ? ORDER BY id ",
            $order,
            " LIMIT ?"
        )
    };
}

statements! {
    // Settings.
    settings_init: Lwt = "INSERT INTO settings (name, value) VALUES (?, ?) IF NOT EXISTS";
    settings_get: Idempotent = "SELECT value FROM settings WHERE name = ?";

    // Accounts.
    account_insert: Lwt = "INSERT INTO accounts (jid, domain, created_ms, credentials) \
        VALUES (?, ?, ?, ?) IF NOT EXISTS";
    account_set_credentials: Lwt = "UPDATE accounts SET credentials = ? WHERE jid = ? IF EXISTS";
    account_get: Idempotent = "SELECT credentials FROM accounts WHERE jid = ?";
    account_delete: Lwt = "DELETE FROM accounts WHERE jid = ? IF EXISTS";
    domain_insert: Idempotent = "INSERT INTO accounts_by_domain (domain, shard, jid) VALUES (?, ?, ?)";
    domain_delete: Idempotent = "DELETE FROM accounts_by_domain WHERE domain = ? AND shard = ? AND jid = ?";
    domain_list: Idempotent = "SELECT jid FROM accounts_by_domain WHERE domain = ? AND shard = ?";

    // Rosters.
    roster_all: Idempotent = "SELECT version, contact, name, subscription, ask_out, pending_in, \
        approved, groups FROM roster WHERE owner = ?";
    roster_item: Idempotent = "SELECT version, contact, name, subscription, ask_out, pending_in, \
        approved, groups FROM roster WHERE owner = ? AND contact = ?";
    roster_version: Idempotent = "SELECT version FROM roster WHERE owner = ? LIMIT 1";
    roster_cas_version: Lwt = "UPDATE roster SET version = ? WHERE owner = ? IF version = ?";
    roster_put: Idempotent = "INSERT INTO roster (owner, contact, name, subscription, ask_out, \
        pending_in, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    roster_delete_item: Idempotent = "DELETE FROM roster WHERE owner = ? AND contact = ?";
    roster_delete_all: Idempotent = "DELETE FROM roster WHERE owner = ?";

    // Offline queues.
    offline_head: Idempotent = "SELECT next_id, id FROM offline WHERE owner = ? LIMIT ?";
    offline_sizes: Idempotent = "SELECT id, size FROM offline_sizes WHERE owner = ? LIMIT ?";
    offline_size_insert: Idempotent = "INSERT INTO offline_sizes (owner, id, size) VALUES (?, ?, ?) \
        USING TTL ?";
    offline_sizes_remove_up_to: Idempotent = "DELETE FROM offline_sizes WHERE owner = ? AND id <= ?";
    offline_sizes_delete_ids: Idempotent = "DELETE FROM offline_sizes WHERE owner = ? AND id IN ?";
    offline_sizes_delete_all: Idempotent = "DELETE FROM offline_sizes WHERE owner = ?";
    offline_cas_next: Lwt = "UPDATE offline SET next_id = ? WHERE owner = ? IF next_id = ?";
    offline_insert: Idempotent = "INSERT INTO offline (owner, id, stamp_ms, xml) VALUES (?, ?, ?, ?) \
        USING TTL ?";
    offline_list: Idempotent = "SELECT id, stamp_ms, xml FROM offline WHERE owner = ?";
    offline_page: Idempotent = "SELECT id, stamp_ms, xml FROM offline WHERE owner = ? AND id > ? \
        LIMIT ?";
    offline_ids: Idempotent = "SELECT id FROM offline WHERE owner = ?";
    offline_remove_up_to: Idempotent = "DELETE FROM offline WHERE owner = ? AND id <= ?";
    offline_delete_ids: Idempotent = "DELETE FROM offline WHERE owner = ? AND id IN ?";
    offline_delete_all: Idempotent = "DELETE FROM offline WHERE owner = ?";
    offline_owner_insert: Idempotent = "INSERT INTO offline_owners (shard, owner) VALUES (?, ?)";
    offline_owner_list: Idempotent = "SELECT owner FROM offline_owners WHERE shard = ?";
    offline_owner_delete: Idempotent = "DELETE FROM offline_owners WHERE shard = ? AND owner = ?";

    // vCards and private XML.
    vcard_get: Idempotent = "SELECT xml FROM vcards WHERE owner = ?";
    vcard_set: Idempotent = "INSERT INTO vcards (owner, xml) VALUES (?, ?)";
    vcard_delete: Idempotent = "DELETE FROM vcards WHERE owner = ?";
    private_delete_all: Idempotent = "DELETE FROM private_xml WHERE owner = ?";

    // Archive: appends (one logged batch).
    archive_insert: Idempotent = "INSERT INTO archive (owner, bucket, id, with_jid, direction, xml) \
        VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
    archive_with_insert: Idempotent = "INSERT INTO archive_by_with (owner, with_jid, bucket, id, \
        direction, xml) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
    archive_bucket_insert: Idempotent = "INSERT INTO archive_buckets (owner, bucket) VALUES (?, ?) \
        USING TTL ?";
    archive_with_bucket_insert: Idempotent = "INSERT INTO archive_with_buckets (owner, with_jid, \
        bucket) VALUES (?, ?, ?) USING TTL ?";
    archive_owner_insert: Idempotent = "INSERT INTO archive_owners (domain, shard, owner) \
        VALUES (?, ?, ?)";

    // Archive: bucket lists.
    archive_buckets_range: Idempotent = "SELECT bucket FROM archive_buckets WHERE owner = ? \
        AND bucket >= ? AND bucket <= ?";
    archive_buckets_desc: Idempotent = "SELECT bucket FROM archive_buckets WHERE owner = ? \
        ORDER BY bucket DESC";
    archive_buckets_asc: Idempotent = "SELECT bucket FROM archive_buckets WHERE owner = ? \
        ORDER BY bucket ASC";
    archive_with_buckets_range: Idempotent = "SELECT bucket FROM archive_with_buckets \
        WHERE owner = ? AND with_jid = ? AND bucket >= ? AND bucket <= ?";
    archive_with_buckets_all: Idempotent = "SELECT with_jid, bucket FROM archive_with_buckets \
        WHERE owner = ?";

    // Archive: reads, one partition each.
    archive_scan_asc: Idempotent = scan_cql!("archive", "", "ASC");
    archive_scan_desc: Idempotent = scan_cql!("archive", "", "DESC");
    archive_with_scan_asc: Idempotent = scan_cql!("archive_by_with", "AND with_jid = ? ", "ASC");
    archive_with_scan_desc: Idempotent = scan_cql!("archive_by_with", "AND with_jid = ? ", "DESC");
    archive_count: Idempotent = "SELECT count(*) FROM archive WHERE owner = ? AND bucket = ? \
        AND id >= ? AND id <= ?";
    archive_with_count: Idempotent = "SELECT count(*) FROM archive_by_with WHERE owner = ? \
        AND with_jid = ? AND bucket = ? AND id >= ? AND id <= ?";
    archive_get: Idempotent = "SELECT id, with_jid, direction, xml FROM archive \
        WHERE owner = ? AND bucket = ? AND id = ?";
    archive_removed_get: Idempotent = "SELECT id FROM archive_removed WHERE owner = ? \
        AND bucket = ? AND id = ?";
    archive_oldest: Idempotent = "SELECT id FROM archive WHERE owner = ? AND bucket = ? \
        ORDER BY id ASC LIMIT 1";
    archive_newest: Idempotent = "SELECT id FROM archive WHERE owner = ? AND bucket = ? \
        ORDER BY id DESC LIMIT 1";
    archive_removed_newest: Idempotent = "SELECT id FROM archive_removed WHERE owner = ? \
        AND bucket = ? ORDER BY id DESC LIMIT 1";

    // Archive: removal (one logged batch).
    archive_delete_one: Idempotent = "DELETE FROM archive WHERE owner = ? AND bucket = ? AND id = ?";
    archive_with_delete_one: Idempotent = "DELETE FROM archive_by_with WHERE owner = ? \
        AND with_jid = ? AND bucket = ? AND id = ?";
    archive_removed_insert: Idempotent = "INSERT INTO archive_removed (owner, bucket, id) \
        VALUES (?, ?, ?) USING TTL ?";

    // Archive: retention.
    archive_owner_list: Idempotent = "SELECT owner FROM archive_owners WHERE domain = ? AND shard = ?";
    archive_buckets_up_to: Idempotent = "SELECT bucket FROM archive_buckets WHERE owner = ? \
        AND bucket <= ?";
    archive_older: Idempotent = "SELECT id, with_jid FROM archive WHERE owner = ? AND bucket = ? \
        AND id < ?";
    archive_removed_older: Idempotent = "SELECT id FROM archive_removed WHERE owner = ? \
        AND bucket = ? AND id < ?";
    archive_delete_older: Idempotent = "DELETE FROM archive WHERE owner = ? AND bucket = ? AND id < ?";
    archive_with_delete_older: Idempotent = "DELETE FROM archive_by_with WHERE owner = ? \
        AND with_jid = ? AND bucket = ? AND id < ?";
    archive_removed_delete_older: Idempotent = "DELETE FROM archive_removed WHERE owner = ? \
        AND bucket = ? AND id < ?";
    archive_bucket_delete: Idempotent = "DELETE FROM archive_buckets WHERE owner = ? AND bucket = ?";
    archive_with_bucket_delete: Idempotent = "DELETE FROM archive_with_buckets WHERE owner = ? \
        AND with_jid = ? AND bucket = ?";

    // Archive: account deletion.
    archive_delete_bucket: Idempotent = "DELETE FROM archive WHERE owner = ? AND bucket = ?";
    archive_removed_delete_bucket: Idempotent = "DELETE FROM archive_removed WHERE owner = ? \
        AND bucket = ?";
    archive_with_delete_bucket: Idempotent = "DELETE FROM archive_by_with WHERE owner = ? \
        AND with_jid = ? AND bucket = ?";
    archive_buckets_delete_all: Idempotent = "DELETE FROM archive_buckets WHERE owner = ?";
    archive_with_buckets_delete_all: Idempotent = "DELETE FROM archive_with_buckets WHERE owner = ?";
    archive_owner_delete: Idempotent = "DELETE FROM archive_owners WHERE domain = ? AND shard = ? \
        AND owner = ?";

    // Archive preferences.
    prefs_get: Idempotent = "SELECT default_mode, always_jids, never_jids FROM archive_prefs \
        WHERE owner = ?";
    prefs_set: Idempotent = "INSERT INTO archive_prefs (owner, default_mode, always_jids, \
        never_jids) VALUES (?, ?, ?, ?)";
    prefs_delete: Idempotent = "DELETE FROM archive_prefs WHERE owner = ?";

    // Hosted domains (virtual hosting).
    hosted_put: Idempotent = "INSERT INTO domains (shard, domain, registration_open, \
        archive_retention_days, max_accounts, max_sessions_per_account, offline_quota, removed, \
        updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, false, ?)";
    hosted_get: Idempotent = "SELECT domain, registration_open, archive_retention_days, \
        max_accounts, max_sessions_per_account, offline_quota, removed, updated_ms FROM domains \
        WHERE shard = ? AND domain = ?";
    hosted_list: Idempotent = "SELECT domain, registration_open, archive_retention_days, \
        max_accounts, max_sessions_per_account, offline_quota, removed, updated_ms FROM domains \
        WHERE shard = ?";
    hosted_remove: Lwt = "UPDATE domains SET removed = true, updated_ms = ? WHERE shard = ? \
        AND domain = ? IF EXISTS";
    hosted_delete: Idempotent = "DELETE FROM domains WHERE shard = ? AND domain = ?";
    hosted_version_set: Idempotent = "INSERT INTO domains_version (id, version) VALUES (?, ?)";
    hosted_version_get: Idempotent = "SELECT version FROM domains_version WHERE id = ?";
    account_count: Idempotent = "SELECT count(*) FROM accounts_by_domain WHERE domain = ? \
        AND shard = ?";
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The partition key of each table, in order.
    const PARTITION_KEYS: &[(&str, &[&str])] = &[
        ("settings", &["name"]),
        ("accounts", &["jid"]),
        ("accounts_by_domain", &["domain", "shard"]),
        ("roster", &["owner"]),
        ("offline", &["owner"]),
        ("offline_owners", &["shard"]),
        ("offline_sizes", &["owner"]),
        ("vcards", &["owner"]),
        ("private_xml", &["owner"]),
        ("archive", &["owner", "bucket"]),
        ("archive_by_with", &["owner", "with_jid", "bucket"]),
        ("archive_removed", &["owner", "bucket"]),
        ("archive_buckets", &["owner"]),
        ("archive_with_buckets", &["owner"]),
        ("archive_owners", &["domain", "shard"]),
        ("archive_prefs", &["owner"]),
        ("domains", &["shard"]),
        ("domains_version", &["id"]),
    ];

    fn table_of(cql: &str) -> &str {
        let upper = cql.to_ascii_uppercase();
        let at = ["FROM ", "INTO ", "UPDATE "]
            .iter()
            .filter_map(|k| upper.find(k).map(|i| i + k.len()))
            .min()
            .unwrap();
        cql[at..].split_whitespace().next().unwrap()
    }

    fn where_clause(cql: &str) -> Option<&str> {
        let i = cql.find(" WHERE ")?;
        Some(&cql[i + 7..])
    }

    #[test]
    fn no_statement_filters_or_scans() {
        assert!(ALL.len() > 50);
        let mut names: Vec<&str> = ALL.iter().map(|s| s.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "duplicate statement names");
        for (name, _, cql) in ALL {
            let upper = cql.to_ascii_uppercase();
            assert!(!upper.contains("ALLOW FILTERING"), "{name}: {cql}");
            assert!(!upper.contains("TOKEN("), "{name}: {cql}");
            let table = table_of(cql);
            let keys = PARTITION_KEYS
                .iter()
                .find(|(t, _)| *t == table)
                .unwrap_or_else(|| panic!("{name}: unknown table {table}"))
                .1;
            if upper.starts_with("INSERT") {
                continue;
            }
            // Reads, updates and deletes name their whole partition key with `=`.
            let clause = where_clause(cql).unwrap_or_else(|| panic!("{name}: no WHERE: {cql}"));
            for key in keys {
                assert!(
                    clause.contains(&format!("{key} = ?")),
                    "{name}: partition key {key} not bound: {cql}"
                );
            }
        }
    }

    #[test]
    fn archive_statements_are_bounded_by_owner_and_bucket() {
        for (name, _, cql) in ALL {
            let table = table_of(cql);
            if !matches!(table, "archive" | "archive_by_with" | "archive_removed") {
                continue;
            }
            if let Some(clause) = where_clause(cql) {
                assert!(
                    clause.starts_with("owner = ? AND ") && clause.contains("bucket = ?"),
                    "{name}: {cql}"
                );
            }
            // Multi-row reads are limited or bounded by an id range.
            if cql.starts_with("SELECT") && !cql.contains("id = ?") {
                assert!(
                    cql.contains("LIMIT") || cql.contains("id <") || cql.contains("id >="),
                    "{name}: {cql}"
                );
            }
        }
    }

    #[test]
    fn only_conditional_statements_are_non_idempotent() {
        for (name, kind, cql) in ALL {
            let conditional = cql.contains(" IF ");
            assert_eq!(conditional, *kind == Kind::Lwt, "{name}: {cql}");
        }
        // Counters are never used (they are not idempotent and ignore TTLs).
        assert!(ALL.iter().all(|(_, _, cql)| !cql.contains(" + ")));
    }

    #[test]
    fn scan_statements_order_and_limit() {
        assert_eq!(
            scan_cql!("archive", "", "DESC"),
            "SELECT id, with_jid, direction, xml FROM archive WHERE owner = ? AND bucket = ? \
             AND id >= ? AND id <= ? ORDER BY id DESC LIMIT ?"
        );
    }
}
