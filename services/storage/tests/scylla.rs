//! The conformance suite against a real ScyllaDB (or Cassandra 4+), when
//! `RELAIS_SCYLLA_URI` is set, e.g.
//!
//! ```text
//! docker run --name scylla -d -p 9042:9042 scylladb/scylla --smp 1 --developer-mode 1
//! RELAIS_SCYLLA_URI=127.0.0.1:9042 cargo test -p storage --features scylla
//! ```
//!
//! Each test gets a fresh keyspace (random name), dropped when the test ends. Without the
//! variable every test reports `SKIPPED` on stderr (written past the test harness's capture,
//! so it shows in the output) and returns.
#![cfg(feature = "scylla")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use storage::scylla::{self, Replication, ScyllaConfig};
use storage::suite::TestBackend;

const URI_VAR: &str = "RELAIS_SCYLLA_URI";

/// The configured URI, or `None` after reporting the skip.
fn uri_or_skip(test: &str) -> Option<String> {
    match std::env::var(URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => Some(uri),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {URI_VAR} is not set (see README: start ScyllaDB with Docker)"
            );
            None
        }
    }
}

fn config(uri: &str, keyspace: &str) -> ScyllaConfig {
    let cassandra = std::env::var("RELAIS_SCYLLA_CASSANDRA").is_ok_and(|v| v == "1");
    ScyllaConfig {
        hosts: ScyllaConfig::hosts_from_uri(uri).unwrap(),
        keyspace: keyspace.to_owned(),
        replication: Replication::Simple {
            replication_factor: 1,
        },
        // Short buckets, so the suite's messages (spread over days) cross buckets.
        archive_bucket_days: 1,
        disable_tablets: !cassandra,
        ..ScyllaConfig::default()
    }
}

/// Drops the test's keyspace when the test ends (even on failure).
struct DropKeyspace {
    uri: String,
    keyspace: String,
}

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let cfg = config(&self.uri, &self.keyspace);
        // Drop runs inside the test's runtime: use a thread with its own.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let session = scylla::connect(&cfg).await?;
                session
                    .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", cfg.keyspace), ())
                    .await
                    .map_err(|e| storage::StorageError::Unavailable(e.to_string()))?;
                Ok::<_, storage::StorageError>(())
            })
        });
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = writeln!(std::io::stderr(), "cannot drop {}: {e}", self.keyspace);
            }
            Err(_) => {
                let _ = writeln!(std::io::stderr(), "cannot drop {}", self.keyspace);
            }
        }
    }
}

fn fresh_keyspace() -> String {
    format!("relais_test_{:016x}", rand::random::<u64>())
}

async fn backend(uri: String) -> TestBackend {
    let keyspace = fresh_keyspace();
    let cfg = config(&uri, &keyspace);
    let storage = scylla::open(&cfg).await.unwrap();
    let reopen_cfg = cfg.clone();
    TestBackend {
        storage,
        reopen: Some(Box::new(move || {
            let cfg = reopen_cfg.clone();
            Box::pin(async move { scylla::open(&cfg).await })
        })),
        guard: Box::new(DropKeyspace { uri, keyspace }),
    }
}

// The constructor is a block, not an async block: its `return` leaves the test itself.
storage::storage_test_suite!(
    scylla_suite,
    {
        // libtest names each test's thread after the test.
        let test = std::thread::current()
            .name()
            .unwrap_or("scylla_suite")
            .to_owned();
        let Some(uri) = uri_or_skip(&test) else {
            return;
        };
        backend(uri)
    },
    durable
);

/// `migrate` on an up-to-date keyspace changes nothing and reports the same version; data
/// written in between is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let Some(uri) = uri_or_skip("migrate_is_idempotent") else {
        return;
    };
    let keyspace = fresh_keyspace();
    let _guard = DropKeyspace {
        uri: uri.clone(),
        keyspace: keyspace.clone(),
    };
    let cfg = config(&uri, &keyspace);
    let session = scylla::connect(&cfg).await.unwrap();
    assert_eq!(
        scylla::migrate(&session, &cfg).await.unwrap(),
        scylla::latest_version()
    );
    let storage = scylla::open(&cfg).await.unwrap();
    let alice: xmpp::BareJid = "alice@example.com".parse().unwrap();
    storage
        .vcards
        .set_vcard(&alice, "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    assert_eq!(
        scylla::migrate(&session, &cfg).await.unwrap(),
        scylla::latest_version()
    );
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(rows, usize::try_from(scylla::latest_version()).unwrap());
    assert!(storage.vcards.get_vcard(&alice).await.unwrap().is_some());
}

/// The bucket length is fixed by the keyspace's first open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_length_is_fixed_at_first_open() {
    let Some(uri) = uri_or_skip("bucket_length_is_fixed_at_first_open") else {
        return;
    };
    let keyspace = fresh_keyspace();
    let _guard = DropKeyspace {
        uri: uri.clone(),
        keyspace: keyspace.clone(),
    };
    let cfg = config(&uri, &keyspace);
    let first = scylla::open(&cfg).await.unwrap();
    let alice: xmpp::BareJid = "alice@example.com".parse().unwrap();
    let bob: xmpp::BareJid = "bob@example.com".parse().unwrap();
    let day = 86_400_000u64;
    let mut ids = Vec::new();
    for d in 0..5 {
        let r = first
            .archive
            .append(
                &alice,
                &storage::NewArchived {
                    with: &bob,
                    stamp_ms: 1_700_000_000_000 + d * day,
                    direction: storage::Direction::Incoming,
                    xml: "<message/>",
                },
            )
            .await
            .unwrap();
        ids.push(r.id);
    }
    // Reopened with another bucket length, the stored one is kept: everything is found.
    let other = ScyllaConfig {
        archive_bucket_days: 30,
        ..cfg
    };
    let second = scylla::open(&other).await.unwrap();
    let r = second
        .archive
        .query(
            &alice,
            &storage::ArchiveFilter::default(),
            &storage::ArchivePage::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(r.count, 5);
}
