//! The CQL schema: migration files, their parsing, and `migrate`.
//!
//! The files in `services/storage/cql/` are embedded at build time, named `NNN_name.cql`,
//! applied in version order. `schema_migrations` records one row per applied version with the
//! file's checksum. Every statement of a file is idempotent (`IF NOT EXISTS`), so a migration
//! interrupted half-way (or run by two nodes at once) is safely applied again; the version row
//! is written after the file's last statement and the schema agreement.

use scylla::client::session::Session;

use super::config::ScyllaConfig;
use super::{exec_err, unavailable};
use crate::{Result, StorageError};

/// (file name, content), in any order: [`migrations`] sorts and checks them.
const FILES: &[(&str, &str)] = &[
    ("001_initial.cql", include_str!("../../cql/001_initial.cql")),
    ("002_domains.cql", include_str!("../../cql/002_domains.cql")),
    (
        "003_offline_size.cql",
        include_str!("../../cql/003_offline_size.cql"),
    ),
];

/// One migration file, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: String,
    pub statements: Vec<String>,
    /// FNV-1a of the content: a released file must never change.
    pub checksum: i64,
}

/// Parses `NNN_name.cql` into (version, name).
pub fn parse_file_name(file: &str) -> Option<(i32, String)> {
    let stem = file.strip_suffix(".cql")?;
    let (num, name) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    let version: i32 = num.parse().ok()?;
    (version > 0).then(|| (version, name.to_owned()))
}

/// Splits a CQL script into statements: `--` and `//` line comments and `/* */` block comments
/// are dropped, `;` ends a statement unless inside a '...' string or a "..." identifier.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            cur.push(c);
            if c == q {
                // A doubled quote is an escaped quote, still inside.
                if chars.peek() == Some(&q) {
                    cur.push(q);
                    chars.next();
                } else {
                    quote = None;
                }
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                cur.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                cur.push('\n');
            }
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                cur.push('\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                cur.push(' ');
            }
            ';' => {
                let stmt = normalize(&cur);
                if !stmt.is_empty() {
                    out.push(stmt);
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let stmt = normalize(&cur);
    if !stmt.is_empty() {
        out.push(stmt);
    }
    out
}

/// Trims each line and drops blank ones.
fn normalize(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn checksum(s: &str) -> i64 {
    // 64-bit FNV-1a, stored as a bigint.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Parses and orders `files`; versions must be 1, 2, 3... without gap or duplicate.
pub fn parse_migrations(files: &[(&str, &str)]) -> Result<Vec<Migration>> {
    let mut out = Vec::with_capacity(files.len());
    for (file, content) in files {
        let (version, name) = parse_file_name(file).ok_or_else(|| {
            StorageError::Corrupt(format!("migration file {file:?} is not NNN_name.cql"))
        })?;
        let statements = split_statements(content);
        if statements.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "migration file {file:?} holds no statement"
            )));
        }
        out.push(Migration {
            version,
            name,
            statements,
            checksum: checksum(content),
        });
    }
    out.sort_by_key(|m| m.version);
    for (i, m) in out.iter().enumerate() {
        let want = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if m.version != want {
            return Err(StorageError::Corrupt(format!(
                "migration versions must be 1..{} without gaps: found {} at position {want}",
                out.len(),
                m.version
            )));
        }
    }
    Ok(out)
}

/// The migrations of this build.
pub fn migrations() -> Result<Vec<Migration>> {
    parse_migrations(FILES)
}

/// The schema version this build creates and understands.
pub fn latest_version() -> i32 {
    i32::try_from(FILES.len()).unwrap_or(i32::MAX)
}

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY, name text, checksum bigint, applied_ms bigint)";
const SELECT_MIGRATIONS: &str = "SELECT version, checksum FROM schema_migrations";
const INSERT_MIGRATION: &str = "INSERT INTO schema_migrations (version, name, checksum, applied_ms)
    VALUES (?, ?, ?, ?)";

/// Creates the keyspace if needed and applies every pending migration, idempotently. Returns
/// the schema version. Refuses a keyspace migrated by a newer build, or whose applied files
/// differ from this build's. Leaves the session using the keyspace.
pub async fn migrate(session: &Session, cfg: &ScyllaConfig) -> Result<i32> {
    cfg.validate()?;
    let all = migrations()?;
    session
        .query_unpaged(cfg.create_keyspace_cql(), ())
        .await
        .map_err(exec_err)?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| unavailable(format!("schema agreement: {e}")))?;
    session
        .use_keyspace(cfg.keyspace.as_str(), false)
        .await
        .map_err(|e| unavailable(format!("cannot use keyspace {}: {e}", cfg.keyspace)))?;
    session
        .query_unpaged(CREATE_MIGRATIONS_TABLE, ())
        .await
        .map_err(exec_err)?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| unavailable(format!("schema agreement: {e}")))?;

    let applied: Vec<(i32, Option<i64>)> = session
        .query_unpaged(SELECT_MIGRATIONS, ())
        .await
        .map_err(exec_err)?
        .into_rows_result()
        .map_err(|e| StorageError::Corrupt(format!("schema_migrations: {e}")))?
        .rows::<(i32, Option<i64>)>()
        .map_err(|e| StorageError::Corrupt(format!("schema_migrations: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| StorageError::Corrupt(format!("schema_migrations: {e}")))?;
    let latest = latest_version();
    let current = check_applied(&applied, &all)?;
    if current == latest {
        return Ok(current);
    }
    let insert = session
        .prepare(INSERT_MIGRATION)
        .await
        .map_err(|e| unavailable(format!("cannot prepare the migration record: {e}")))?;
    for m in all.iter().filter(|m| m.version > current) {
        for stmt in &m.statements {
            session
                .query_unpaged(stmt.as_str(), ())
                .await
                .map_err(|e| {
                    unavailable(format!("migration {} ({}) failed: {e}", m.version, m.name))
                })?;
        }
        session
            .await_schema_agreement()
            .await
            .map_err(|e| unavailable(format!("schema agreement: {e}")))?;
        session
            .execute_unpaged(&insert, (m.version, &m.name, m.checksum, super::now_ms()))
            .await
            .map_err(exec_err)?;
        tracing::info!(version = m.version, name = %m.name, keyspace = %cfg.keyspace, "scylla schema migrated");
    }
    Ok(latest)
}

/// The highest applied version, after checking the applied rows against this build.
pub fn check_applied(applied: &[(i32, Option<i64>)], all: &[Migration]) -> Result<i32> {
    let latest = i32::try_from(all.len()).unwrap_or(i32::MAX);
    let mut current = 0;
    for (version, sum) in applied {
        if *version > latest {
            return Err(StorageError::Unavailable(format!(
                "keyspace schema version {version} is newer than the latest version {latest} \
                 this build supports: upgrade relais"
            )));
        }
        let Some(m) = all.iter().find(|m| m.version == *version) else {
            return Err(StorageError::Corrupt(format!(
                "unknown schema version {version}"
            )));
        };
        if *sum != Some(m.checksum) {
            return Err(StorageError::Corrupt(format!(
                "schema version {version} ({}) was applied from a different file",
                m.name
            )));
        }
        current = current.max(*version);
    }
    // Versions are applied in order: every version up to the highest must be there.
    for v in 1..=current {
        if !applied.iter().any(|(a, _)| *a == v) {
            return Err(StorageError::Corrupt(format!(
                "schema version {v} is missing below applied version {current}"
            )));
        }
    }
    Ok(current)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("001_initial.cql"),
            Some((1, "initial".into()))
        );
        assert_eq!(
            parse_file_name("12_pep_items.cql"),
            Some((12, "pep_items".into()))
        );
        for bad in [
            "initial.cql",
            "001_.cql",
            "_x.cql",
            "000_zero.cql",
            "001_x.sql",
            "0a1_x.cql",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn statements_split_on_semicolons_outside_strings_and_comments() {
        let script = "-- a comment; with a semicolon\n\
            CREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY); // trailing; comment\n\
            /* block; comment */ INSERT INTO a (k) VALUES ('x;''y');\n\
            CREATE TABLE IF NOT EXISTS \"we;ird\" (k int PRIMARY KEY)\n";
        assert_eq!(
            split_statements(script),
            [
                "CREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY)",
                "INSERT INTO a (k) VALUES ('x;''y')",
                "CREATE TABLE IF NOT EXISTS \"we;ird\" (k int PRIMARY KEY)",
            ]
        );
        assert!(split_statements("-- only a comment\n;;\n").is_empty());
    }

    #[test]
    fn migrations_are_ordered_and_gapless() {
        let files = [
            (
                "002_b.cql",
                "CREATE TABLE IF NOT EXISTS b (k int PRIMARY KEY);",
            ),
            (
                "001_a.cql",
                "CREATE TABLE IF NOT EXISTS a (k int PRIMARY KEY);",
            ),
        ];
        let m = parse_migrations(&files).unwrap();
        assert_eq!(m.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(m[0].name, "a");
        assert!(parse_migrations(&[("002_b.cql", "SELECT 1;")]).is_err());
        assert!(parse_migrations(&[("001_a.cql", "x;"), ("001_b.cql", "y;")]).is_err());
        assert!(parse_migrations(&[("001_a.cql", "-- nothing\n")]).is_err());
        assert!(parse_migrations(&[("a.cql", "x;")]).is_err());
    }

    #[test]
    fn the_shipped_schema_is_idempotent_and_scan_free() {
        let all = migrations().unwrap();
        assert_eq!(all.len(), usize::try_from(latest_version()).unwrap());
        let tables: Vec<&String> = all.iter().flat_map(|m| &m.statements).collect();
        assert!(tables.len() >= 14, "{tables:#?}");
        for stmt in tables {
            let upper = stmt.to_ascii_uppercase();
            assert!(upper.starts_with("CREATE TABLE IF NOT EXISTS "), "{stmt}");
            // No secondary index or materialized view: every read names its partition.
            assert!(
                !upper.contains("INDEX") && !upper.contains("MATERIALIZED"),
                "{stmt}"
            );
        }
    }

    #[test]
    fn applied_versions_are_checked() {
        let all = migrations().unwrap();
        let sum = Some(all[0].checksum);
        assert_eq!(check_applied(&[], &all).unwrap(), 0);
        assert_eq!(check_applied(&[(1, sum)], &all).unwrap(), 1);
        let newer = latest_version() + 1;
        let err = check_applied(&[(1, sum), (newer, Some(0))], &all).unwrap_err();
        assert!(err.to_string().contains("newer than the latest"), "{err}");
        assert!(matches!(
            check_applied(&[(1, Some(12345))], &all),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            check_applied(&[(1, None)], &all),
            Err(StorageError::Corrupt(_))
        ));
    }
}
