//! The backend conformance suite, written once and run against every backend.
//!
//! A backend instantiates it with [`storage_test_suite!`](crate::storage_test_suite):
//!
//! ```ignore
//! storage::storage_test_suite!(scylla, async { make_scylla_backend().await });
//! // With `durable`, the suite also checks that data survives closing and reopening;
//! // `reopen` must then be `Some`.
//! storage::storage_test_suite!(scylla_durable, async { make_scylla_backend().await }, durable);
//! ```
//!
//! The constructor expression is evaluated once per test and must yield a fresh, empty
//! [`TestBackend`]. Outside this crate the module is compiled with the `testsuite` feature, and
//! the calling crate needs `tokio` (with the `macros` and multi-thread runtime features).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use xmpp::BareJid;
use xmpp::scram::{ScramHash, ScramKeys};

use crate::{
    ArchiveDefault, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveResult, Credentials,
    Direction, DomainSettings, NewArchived, OfflineQuota, Result, RosterItem, Storage,
    StorageError, Subscription,
};

/// Opens a new handle on the same data as the backend's `storage`.
pub type ReopenFn =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Storage>> + Send>> + Send + Sync>;

/// What a backend gives the suite for one test.
pub struct TestBackend {
    /// A fresh, empty store.
    pub storage: Storage,
    /// Reopens the same data after `storage` was dropped; required by the `durable` tests.
    pub reopen: Option<ReopenFn>,
    /// Kept alive for the whole test (a temporary directory, a container handle...).
    pub guard: Box<dyn Any + Send + Sync>,
}

/// Instantiates the conformance suite as a module `$name` of `#[tokio::test]`s.
/// `$ctor` is an expression of a future yielding a [`TestBackend`]; it is resolved inside the
/// generated module, which imports everything from its parent.
#[macro_export]
macro_rules! storage_test_suite {
    (@tests $ctor:expr; $($test:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let backend: $crate::suite::TestBackend = $ctor.await;
                $crate::suite::$test(&backend.storage).await;
            }
        )*
    };
    (@suite $name:ident, $ctor:expr, { $($extra:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::storage_test_suite!(@tests $ctor;
                account_create_get_exists,
                account_duplicate_is_rejected,
                account_set_credentials,
                account_delete,
                account_list_per_domain_sorted,
                credentials_round_trip_byte_exact,
                roster_empty_is_version_zero,
                roster_put_get_update,
                roster_sorted_by_jid,
                roster_remove,
                roster_groups_odd_characters,
                roster_owners_are_isolated,
                delete_account_cascades,
                offline_push_and_list_order,
                offline_quota_exact_boundary,
                offline_remove_up_to,
                offline_quota_counts_bytes,
                offline_pages,
                vcard_set_replace_get,
                concurrent_writers,
                offline_expire_removes_only_older,
                archive_empty,
                archive_append_query_remove,
                archive_exact_page_boundaries,
                archive_paging_covers_everything_once,
                archive_filters,
                archive_unknown_ids_are_not_found,
                archive_concurrent_writers,
                archive_retention,
                archive_prefs_round_trip,
                domains_crud,
                domains_remove_keeps_accounts,
                domains_purge_deletes_accounts,
                domains_version_changes_on_every_write,
            );

            $($extra)*
        }
    };
    ($name:ident, $ctor:expr $(,)?) => {
        $crate::storage_test_suite!(@suite $name, $ctor, {});
    };
    ($name:ident, $ctor:expr, durable $(,)?) => {
        $crate::storage_test_suite!(@suite $name, $ctor, {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn durable_across_reopen() {
                let backend: $crate::suite::TestBackend = $ctor.await;
                $crate::suite::durable_across_reopen(backend).await;
            }
        });
    };
}

fn jid(s: &str) -> BareJid {
    s.parse().expect("test jid")
}

/// Key material with every byte value pattern a text column would mangle.
fn keys(hash: ScramHash, seed: u8) -> ScramKeys {
    let len = match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    };
    let bytes = |offset: u8| -> Vec<u8> {
        (0..len)
            .map(|i: u8| i.wrapping_mul(37).wrapping_add(seed).wrapping_add(offset))
            .collect()
    };
    ScramKeys {
        hash,
        salt: vec![0x00, 0xff, b'\'', b'"', 0x1f, seed, 0x80, 0x00],
        iterations: 4096 + u32::from(seed),
        stored_key: bytes(0),
        server_key: bytes(128),
    }
}

fn creds(seed: u8) -> Credentials {
    Credentials {
        keys: vec![keys(ScramHash::Sha1, seed), keys(ScramHash::Sha256, seed)],
    }
}

fn item(contact: &str) -> RosterItem {
    RosterItem::new(jid(contact))
}

fn assert_err<T: std::fmt::Debug>(r: Result<T>, want: crate::ErrorCode) {
    match r {
        Err(e) => assert_eq!(e.code(), want, "unexpected error {e}"),
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
}

fn sorted_creds(mut c: Credentials) -> Credentials {
    c.keys.sort_by_key(|k| match k.hash {
        ScramHash::Sha1 => 0,
        ScramHash::Sha256 => 1,
    });
    c
}

pub async fn account_create_get_exists(s: &Storage) {
    let alice = jid("alice@example.com");
    assert!(!s.accounts.account_exists(&alice).await.unwrap());
    assert_eq!(s.accounts.get_credentials(&alice).await.unwrap(), None);

    s.accounts.create_account(&alice, &creds(1)).await.unwrap();
    assert!(s.accounts.account_exists(&alice).await.unwrap());
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(sorted_creds(got), creds(1));

    // Another account is unaffected.
    let bob = jid("bob@example.com");
    assert!(!s.accounts.account_exists(&bob).await.unwrap());

    // An account may hold no key at all.
    s.accounts
        .create_account(&bob, &Credentials { keys: vec![] })
        .await
        .unwrap();
    let got = s.accounts.get_credentials(&bob).await.unwrap().unwrap();
    assert!(got.keys.is_empty());
}

pub async fn account_duplicate_is_rejected(s: &Storage) {
    let alice = jid("alice@example.com");
    s.accounts.create_account(&alice, &creds(1)).await.unwrap();
    assert_err(
        s.accounts.create_account(&alice, &creds(2)).await,
        crate::ErrorCode::AlreadyExists,
    );
    // The first credentials are kept.
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(sorted_creds(got), creds(1));
    assert_eq!(
        s.accounts.list_accounts("example.com").await.unwrap(),
        vec![alice]
    );
}

pub async fn account_set_credentials(s: &Storage) {
    let alice = jid("alice@example.com");
    assert_err(
        s.accounts.set_credentials(&alice, &creds(1)).await,
        crate::ErrorCode::NotFound,
    );
    assert!(!s.accounts.account_exists(&alice).await.unwrap());

    s.accounts.create_account(&alice, &creds(1)).await.unwrap();
    s.accounts.set_credentials(&alice, &creds(9)).await.unwrap();
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(sorted_creds(got), creds(9));

    // Setting replaces the whole set: a hash that is not given any more is gone.
    let only256 = Credentials {
        keys: vec![keys(ScramHash::Sha256, 3)],
    };
    s.accounts.set_credentials(&alice, &only256).await.unwrap();
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(got, only256);
    assert!(got.get(ScramHash::Sha1).is_none());
}

pub async fn account_delete(s: &Storage) {
    let alice = jid("alice@example.com");
    assert_err(
        s.accounts.delete_account(&alice).await,
        crate::ErrorCode::NotFound,
    );
    s.accounts.create_account(&alice, &creds(1)).await.unwrap();
    s.accounts.delete_account(&alice).await.unwrap();
    assert!(!s.accounts.account_exists(&alice).await.unwrap());
    assert_eq!(s.accounts.get_credentials(&alice).await.unwrap(), None);
    assert!(
        s.accounts
            .list_accounts("example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_err(
        s.accounts.delete_account(&alice).await,
        crate::ErrorCode::NotFound,
    );
    // The name can be registered again, with fresh credentials.
    s.accounts.create_account(&alice, &creds(2)).await.unwrap();
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(sorted_creds(got), creds(2));
}

pub async fn account_list_per_domain_sorted(s: &Storage) {
    for j in [
        "zoe@example.com",
        "alice@example.com",
        "mallory@other.example",
        "bob@example.com",
        "carol@sub.example.com",
    ] {
        s.accounts.create_account(&jid(j), &creds(1)).await.unwrap();
    }
    let expected = vec![
        jid("alice@example.com"),
        jid("bob@example.com"),
        jid("zoe@example.com"),
    ];
    assert_eq!(
        s.accounts.list_accounts("example.com").await.unwrap(),
        expected
    );
    // The domain is matched in its prepared form.
    assert_eq!(
        s.accounts.list_accounts("EXAMPLE.com").await.unwrap(),
        expected
    );
    assert_eq!(
        s.accounts.list_accounts("other.example").await.unwrap(),
        vec![jid("mallory@other.example")]
    );
    assert!(
        s.accounts
            .list_accounts("nowhere.example")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn credentials_round_trip_byte_exact(s: &Storage) {
    let alice = jid("alice@example.com");
    let sha1 = ScramKeys {
        hash: ScramHash::Sha1,
        salt: (0..=255u8).collect(),
        iterations: u32::MAX,
        stored_key: vec![0x00; 20],
        server_key: vec![0xff; 20],
    };
    let sha256 = ScramKeys {
        hash: ScramHash::Sha256,
        salt: vec![0x00],
        iterations: 1,
        stored_key: (0..32u8).rev().collect(),
        server_key: (0..32u8).map(|b| b ^ 0xa5).collect(),
    };
    // Given in the reverse of the usual order.
    let given = Credentials {
        keys: vec![sha256.clone(), sha1.clone()],
    };
    s.accounts.create_account(&alice, &given).await.unwrap();
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(got.keys.len(), 2);
    assert_eq!(got.get(ScramHash::Sha1), Some(&sha1));
    assert_eq!(got.get(ScramHash::Sha256), Some(&sha256));
}

pub async fn roster_empty_is_version_zero(s: &Storage) {
    let alice = jid("alice@example.com");
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap(), (0, vec![]));
    assert_eq!(
        s.rosters
            .get_item(&alice, &jid("bob@example.com"))
            .await
            .unwrap(),
        None
    );
}

pub async fn roster_put_get_update(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let first = item("bob@example.com");
    let v1 = s.rosters.put_item(&alice, &first).await.unwrap();
    assert!(v1 > 0);
    assert_eq!(
        s.rosters.get_item(&alice, &bob).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap(),
        (v1, vec![first])
    );

    let updated = RosterItem {
        jid: bob.clone(),
        name: Some("Bob".into()),
        groups: vec!["Friends".into(), "Work".into()],
        subscription: Subscription::Both,
        ask_out: true,
        pending_in: true,
        approved: true,
    };
    let v2 = s.rosters.put_item(&alice, &updated).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(
        s.rosters.get_item(&alice, &bob).await.unwrap(),
        Some(updated.clone())
    );

    // Every subscription state and flag combination round-trips.
    for (i, sub) in [
        Subscription::None,
        Subscription::To,
        Subscription::From,
        Subscription::Both,
    ]
    .into_iter()
    .enumerate()
    {
        let it = RosterItem {
            jid: bob.clone(),
            name: None,
            groups: vec![],
            subscription: sub,
            ask_out: i % 2 == 0,
            pending_in: i % 3 == 0,
            approved: i == 2,
        };
        let v = s.rosters.put_item(&alice, &it).await.unwrap();
        assert_eq!(s.rosters.get_item(&alice, &bob).await.unwrap(), Some(it));
        assert_eq!(s.rosters.get_roster(&alice).await.unwrap().0, v);
    }
    // Replacing did not duplicate the item.
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap().1.len(), 1);
}

pub async fn roster_sorted_by_jid(s: &Storage) {
    let owner = jid("owner@example.com");
    let contacts = [
        "zed@example.com",
        "example.net",
        "alice@example.org",
        "bob@a.example",
        "alice@example.com",
        "émile@example.com",
    ];
    let mut last = 0;
    for c in contacts {
        let v = s.rosters.put_item(&owner, &item(c)).await.unwrap();
        assert!(v > last);
        last = v;
    }
    let (version, items) = s.rosters.get_roster(&owner).await.unwrap();
    assert_eq!(version, last);
    let got: Vec<BareJid> = items.into_iter().map(|i| i.jid).collect();
    let mut expected: Vec<BareJid> = contacts.iter().map(|c| jid(c)).collect();
    expected.sort();
    assert_eq!(got, expected);
}

pub async fn roster_remove(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let carol = jid("carol@example.com");
    let mut with_groups = item("bob@example.com");
    with_groups.groups = vec!["A".into(), "B".into()];
    s.rosters.put_item(&alice, &with_groups).await.unwrap();
    let v = s
        .rosters
        .put_item(&alice, &item("carol@example.com"))
        .await
        .unwrap();

    let v_removed = s.rosters.remove_item(&alice, &bob).await.unwrap();
    assert!(v_removed > v);
    assert_eq!(s.rosters.get_item(&alice, &bob).await.unwrap(), None);
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap(),
        (v_removed, vec![item("carol@example.com")])
    );

    // Removing an absent item fails and does not change the version.
    assert_err(
        s.rosters.remove_item(&alice, &bob).await,
        crate::ErrorCode::NotFound,
    );
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap().0, v_removed);

    // Emptying the roster still bumps the version: it never goes back.
    let v_empty = s.rosters.remove_item(&alice, &carol).await.unwrap();
    assert!(v_empty > v_removed);
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap(),
        (v_empty, vec![])
    );

    // Re-adding brings back no stale groups.
    let v_again = s
        .rosters
        .put_item(&alice, &item("bob@example.com"))
        .await
        .unwrap();
    assert!(v_again > v_empty);
    assert_eq!(
        s.rosters.get_item(&alice, &bob).await.unwrap(),
        Some(item("bob@example.com"))
    );
}

pub async fn roster_groups_odd_characters(s: &Storage) {
    let alice = jid("alice@example.com");
    let groups: Vec<String> = [
        "Friends",
        "",
        "a,b;c",
        "quote'\"",
        "  spaced  ",
        "日本語 🦀",
        "tab\tnew\nline",
        "unit\u{1f}separator",
        "back\\slash",
        "%_like",
        "Friends ",
        "friends",
    ]
    .iter()
    .map(|g| g.to_string())
    .collect();
    let mut it = item("bob@example.com");
    it.name = Some("Ünïcode 'name' \u{1f}".into());
    it.groups = groups.clone();
    s.rosters.put_item(&alice, &it).await.unwrap();
    let got = s
        .rosters
        .get_item(&alice, &jid("bob@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.groups, groups);
    assert_eq!(got, it);
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap().1,
        vec![it.clone()]
    );

    // Fewer groups replace the old set entirely.
    it.groups = vec!["Only".into()];
    s.rosters.put_item(&alice, &it).await.unwrap();
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap().1,
        vec![it.clone()]
    );
    it.groups.clear();
    s.rosters.put_item(&alice, &it).await.unwrap();
    assert_eq!(
        s.rosters
            .get_item(&alice, &jid("bob@example.com"))
            .await
            .unwrap(),
        Some(it)
    );
}

pub async fn roster_owners_are_isolated(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let mut a_item = item("carol@example.com");
    a_item.groups = vec!["A".into()];
    let mut b_item = item("carol@example.com");
    b_item.groups = vec!["B".into()];
    b_item.subscription = Subscription::To;

    s.rosters.put_item(&alice, &a_item).await.unwrap();
    let va = s
        .rosters
        .put_item(&alice, &item("dave@example.com"))
        .await
        .unwrap();
    let vb = s.rosters.put_item(&bob, &b_item).await.unwrap();
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap(),
        (va, vec![a_item.clone(), item("dave@example.com")])
    );
    assert_eq!(
        s.rosters.get_roster(&bob).await.unwrap(),
        (vb, vec![b_item.clone()])
    );
    s.rosters
        .remove_item(&bob, &jid("carol@example.com"))
        .await
        .unwrap();
    assert_eq!(
        s.rosters
            .get_item(&alice, &jid("carol@example.com"))
            .await
            .unwrap(),
        Some(a_item)
    );
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap().0, va);
}

pub async fn delete_account_cascades(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    for j in [&alice, &bob] {
        s.accounts.create_account(j, &creds(1)).await.unwrap();
        let mut it = item("carol@example.com");
        it.groups = vec!["G".into()];
        s.rosters.put_item(j, &it).await.unwrap();
        s.offline
            .push(
                j,
                1,
                "<message xmlns='jabber:client'/>",
                OfflineQuota::messages(10),
            )
            .await
            .unwrap();
        s.vcards
            .set_vcard(j, "<vCard xmlns='vcard-temp'/>")
            .await
            .unwrap();
        archive(s, j, "carol@example.com", 1, "<message/>").await;
        s.archive
            .set_prefs(
                j,
                &ArchivePrefs {
                    default: ArchiveDefault::Never,
                    ..ArchivePrefs::default()
                },
            )
            .await
            .unwrap();
    }
    s.accounts.delete_account(&alice).await.unwrap();
    assert_eq!(all(s, &alice).await.count, 0);
    assert_eq!(s.archive.metadata(&alice).await.unwrap().first, None);
    assert_eq!(s.archive.get_prefs(&alice).await.unwrap(), None);
    assert_eq!(all(s, &bob).await.count, 1);
    assert!(s.archive.get_prefs(&bob).await.unwrap().is_some());

    assert!(!s.accounts.account_exists(&alice).await.unwrap());
    assert_eq!(s.accounts.get_credentials(&alice).await.unwrap(), None);
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap(), (0, vec![]));
    assert!(s.offline.list(&alice).await.unwrap().is_empty());
    assert_eq!(s.offline.count(&alice).await.unwrap(), 0);
    assert_eq!(s.vcards.get_vcard(&alice).await.unwrap(), None);

    // The other account keeps everything.
    assert!(s.accounts.account_exists(&bob).await.unwrap());
    assert!(s.accounts.get_credentials(&bob).await.unwrap().is_some());
    let (v, items) = s.rosters.get_roster(&bob).await.unwrap();
    assert!(v > 0);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].groups, vec!["G".to_string()]);
    assert_eq!(s.offline.count(&bob).await.unwrap(), 1);
    assert!(s.vcards.get_vcard(&bob).await.unwrap().is_some());

    // A recreated account starts empty.
    s.accounts.create_account(&alice, &creds(2)).await.unwrap();
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap(), (0, vec![]));
    assert_eq!(s.offline.count(&alice).await.unwrap(), 0);
}

pub async fn offline_push_and_list_order(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    assert!(s.offline.list(&alice).await.unwrap().is_empty());
    let bodies = [
        (
            1_700_000_000_300u64,
            "<message xmlns='jabber:client' id='1'><body>a</body></message>",
        ),
        (
            1_700_000_000_100,
            "<message xmlns='jabber:client' id='2'><body>é&amp;</body></message>",
        ),
        (0, "<message xmlns='jabber:client' id='3'/>"),
    ];
    let mut ids = Vec::new();
    for (i, (stamp, xml)) in bodies.iter().enumerate() {
        ids.push(
            s.offline
                .push(&alice, *stamp, xml, OfflineQuota::messages(100))
                .await
                .unwrap(),
        );
        if i == 0 {
            // Interleave another owner's message.
            s.offline
                .push(&bob, 5, "<message/>", OfflineQuota::messages(100))
                .await
                .unwrap();
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );

    // Oldest (first stored) first, regardless of stamps.
    let list = s.offline.list(&alice).await.unwrap();
    assert_eq!(list.len(), 3);
    for ((msg, id), (stamp, xml)) in list.iter().zip(&ids).zip(&bodies) {
        assert_eq!(msg.id, *id);
        assert_eq!(msg.stamp_ms, *stamp);
        assert_eq!(msg.xml, *xml);
    }
    assert_eq!(s.offline.count(&alice).await.unwrap(), 3);
    // Listing does not remove.
    assert_eq!(s.offline.list(&alice).await.unwrap(), list);
    let bob_list = s.offline.list(&bob).await.unwrap();
    assert_eq!(bob_list.len(), 1);
    assert_eq!(bob_list[0].xml, "<message/>");
    assert_eq!(bob_list[0].stamp_ms, 5);
}

pub async fn offline_quota_exact_boundary(s: &Storage) {
    let alice = jid("alice@example.com");
    let quota = 3;
    let mut ids = Vec::new();
    for i in 0..quota {
        ids.push(
            s.offline
                .push(
                    &alice,
                    i as u64,
                    &format!("<m n='{i}'/>"),
                    OfflineQuota::messages(quota),
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(s.offline.count(&alice).await.unwrap(), quota);
    match s
        .offline
        .push(&alice, 99, "<over/>", OfflineQuota::messages(quota))
        .await
    {
        Err(StorageError::QuotaExceeded) => {}
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(s.offline.count(&alice).await.unwrap(), quota);
    assert!(
        s.offline
            .list(&alice)
            .await
            .unwrap()
            .iter()
            .all(|m| m.xml != "<over/>")
    );
    // A larger quota lets one more in; the quota is per owner.
    s.offline
        .push(&alice, 4, "<m/>", OfflineQuota::messages(quota + 1))
        .await
        .unwrap();
    s.offline
        .push(
            &jid("bob@example.com"),
            1,
            "<m/>",
            OfflineQuota::messages(1),
        )
        .await
        .unwrap();
    // Freeing one slot admits exactly one message.
    s.offline.remove_up_to(&alice, ids[1]).await.unwrap();
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);
    s.offline
        .push(&alice, 5, "<m/>", OfflineQuota::messages(quota))
        .await
        .unwrap();
    assert_err(
        s.offline
            .push(&alice, 6, "<m/>", OfflineQuota::messages(quota))
            .await,
        crate::ErrorCode::QuotaExceeded,
    );
    // A zero quota admits nothing.
    assert_err(
        s.offline
            .push(
                &jid("carol@example.com"),
                1,
                "<m/>",
                OfflineQuota::messages(0),
            )
            .await,
        crate::ErrorCode::QuotaExceeded,
    );
    assert_eq!(s.offline.count(&jid("carol@example.com")).await.unwrap(), 0);
}

pub async fn offline_remove_up_to(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let mut ids = Vec::new();
    for i in 0..5u64 {
        ids.push(
            s.offline
                .push(&alice, i, "<m/>", OfflineQuota::messages(100))
                .await
                .unwrap(),
        );
    }
    let bob_id = s
        .offline
        .push(&bob, 0, "<b/>", OfflineQuota::messages(100))
        .await
        .unwrap();

    s.offline.remove_up_to(&alice, ids[2]).await.unwrap();
    let left: Vec<u64> = s
        .offline
        .list(&alice)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, ids[3..].to_vec());
    // Another owner's messages are untouched, even with lower ids.
    assert_eq!(s.offline.list(&bob).await.unwrap()[0].id, bob_id);

    // Removing up to an already removed id is a no-op.
    s.offline.remove_up_to(&alice, ids[0]).await.unwrap();
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);

    // Ids are never reused after removal.
    s.offline.remove_up_to(&alice, u64::MAX).await.unwrap();
    assert_eq!(s.offline.count(&alice).await.unwrap(), 0);
    let next = s
        .offline
        .push(&alice, 9, "<m/>", OfflineQuota::messages(100))
        .await
        .unwrap();
    assert!(next > ids[4] && next > bob_id);
    assert_eq!(s.offline.count(&bob).await.unwrap(), 1);
}

pub async fn offline_quota_counts_bytes(s: &Storage) {
    let alice = jid("alice@example.com");
    let quota = OfflineQuota {
        messages: 100,
        bytes: 100,
    };
    let forty = "x".repeat(40);
    s.offline.push(&alice, 1, &forty, quota).await.unwrap();
    s.offline.push(&alice, 2, &forty, quota).await.unwrap();
    // 80 held + 40 would pass 100 bytes, though only 2 of 100 messages are held.
    assert_eq!(
        s.offline
            .push(&alice, 3, &forty, quota)
            .await
            .map_err(|e| e.code()),
        Err(crate::ErrorCode::QuotaExceeded)
    );
    // Exactly up to the byte quota is allowed.
    s.offline
        .push(&alice, 4, &"y".repeat(20), quota)
        .await
        .unwrap();
    assert_eq!(s.offline.count(&alice).await.unwrap(), 3);
    // One message larger than the whole quota never fits, even in an empty queue.
    let bob = jid("bob@example.com");
    assert_eq!(
        s.offline
            .push(&bob, 1, &"z".repeat(101), quota)
            .await
            .map_err(|e| e.code()),
        Err(crate::ErrorCode::QuotaExceeded)
    );
    // Removal frees the bytes.
    let first = s.offline.list(&alice).await.unwrap()[0].id;
    s.offline.remove_up_to(&alice, first).await.unwrap();
    s.offline.push(&alice, 5, &forty, quota).await.unwrap();
}

pub async fn offline_pages(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let mut ids = Vec::new();
    for i in 0..10u64 {
        let xml = format!("<m n='{i}'>{}</m>", "p".repeat(90));
        ids.push(
            s.offline
                .push(&alice, i, &xml, OfflineQuota::messages(100))
                .await
                .unwrap(),
        );
    }
    s.offline
        .push(&bob, 0, "<b/>", OfflineQuota::messages(100))
        .await
        .unwrap();
    let page_ids = |p: &[crate::OfflineMessage]| p.iter().map(|m| m.id).collect::<Vec<_>>();
    // By count.
    let p = s.offline.list_page(&alice, 0, 3, usize::MAX).await.unwrap();
    assert_eq!(page_ids(&p), ids[..3].to_vec());
    assert_eq!(p[0].stamp_ms, 0);
    // After a cursor.
    let p = s
        .offline
        .list_page(&alice, ids[2], 3, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page_ids(&p), ids[3..6].to_vec());
    // By bytes: each message is a little over 100 bytes, so 250 bytes hold two.
    let p = s.offline.list_page(&alice, ids[5], 100, 250).await.unwrap();
    assert_eq!(page_ids(&p), ids[6..8].to_vec());
    // The first message always comes, whatever its size.
    let p = s.offline.list_page(&alice, ids[7], 100, 1).await.unwrap();
    assert_eq!(page_ids(&p), ids[8..9].to_vec());
    // The end.
    let p = s
        .offline
        .list_page(&alice, ids[8], 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page_ids(&p), ids[9..].to_vec());
    assert!(
        s.offline
            .list_page(&alice, ids[9], 100, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // Pages cover the whole queue once, in order, and never another owner's messages.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let p = s.offline.list_page(&alice, after, 4, 300).await.unwrap();
        let Some(last) = p.last() else { break };
        after = last.id;
        seen.extend(page_ids(&p));
    }
    assert_eq!(seen, ids);
}

pub async fn vcard_set_replace_get(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    assert_eq!(s.vcards.get_vcard(&alice).await.unwrap(), None);
    let v1 = "<vCard xmlns='vcard-temp'><FN>Alice ✓</FN></vCard>";
    s.vcards.set_vcard(&alice, v1).await.unwrap();
    assert_eq!(
        s.vcards.get_vcard(&alice).await.unwrap().as_deref(),
        Some(v1)
    );
    let v2 = "<vCard xmlns='vcard-temp'><NICKNAME>al</NICKNAME></vCard>";
    s.vcards.set_vcard(&alice, v2).await.unwrap();
    assert_eq!(
        s.vcards.get_vcard(&alice).await.unwrap().as_deref(),
        Some(v2)
    );
    // An empty vCard is stored as given, not treated as a deletion.
    let empty = "<vCard xmlns='vcard-temp'/>";
    s.vcards.set_vcard(&alice, empty).await.unwrap();
    assert_eq!(
        s.vcards.get_vcard(&alice).await.unwrap().as_deref(),
        Some(empty)
    );
    assert_eq!(s.vcards.get_vcard(&bob).await.unwrap(), None);
}

pub async fn concurrent_writers(s: &Storage) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let owner = jid("busy@example.com");
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        let owner = owner.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut versions = Vec::new();
            for i in 0..PER_TASK {
                let xml = format!("<message id='{t}-{i}'/>");
                ids.push(
                    s.offline
                        .push(&owner, 1, &xml, OfflineQuota::messages(usize::MAX))
                        .await
                        .unwrap(),
                );
                let contact = jid(&format!("c{t}-{i}@example.com"));
                versions.push(
                    s.rosters
                        .put_item(&owner, &RosterItem::new(contact))
                        .await
                        .unwrap(),
                );
            }
            (ids, versions)
        }));
    }
    let mut ids = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for h in handles {
        let (i, v) = h.await.unwrap();
        // Within one task, later writes get larger ids and versions.
        assert!(i.windows(2).all(|w| w[0] < w[1]));
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        ids.extend(i);
        versions.extend(v);
    }
    let total = TASKS * PER_TASK;
    assert_eq!(ids.len(), total, "offline ids are not distinct");
    assert_eq!(versions.len(), total, "roster versions are not distinct");

    let list = s.offline.list(&owner).await.unwrap();
    assert_eq!(list.len(), total);
    assert_eq!(list.iter().map(|m| m.id).collect::<BTreeSet<_>>(), ids);
    let xmls: BTreeSet<&str> = list.iter().map(|m| m.xml.as_str()).collect();
    assert_eq!(xmls.len(), total);

    let (version, items) = s.rosters.get_roster(&owner).await.unwrap();
    assert_eq!(items.len(), total);
    assert_eq!(Some(&version), versions.last());
}

/// Data written and acknowledged is still there after the store is closed and reopened.
pub async fn durable_across_reopen(backend: TestBackend) {
    let TestBackend {
        storage: s,
        reopen,
        guard,
    } = backend;
    let reopen = reopen.expect("the durable suite needs a reopen function");
    let alice = jid("alice@example.com");
    let mut it = item("bob@example.com");
    it.name = Some("Bob".into());
    it.groups = vec!["Friends".into(), "x\u{1f}y".into()];
    it.subscription = Subscription::From;
    it.pending_in = true;

    s.accounts.create_account(&alice, &creds(7)).await.unwrap();
    let version = s.rosters.put_item(&alice, &it).await.unwrap();
    let id = s
        .offline
        .push(&alice, 42, "<message/>", OfflineQuota::messages(10))
        .await
        .unwrap();
    s.vcards
        .set_vcard(&alice, "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    let archived = archive(&s, &alice, "bob@example.com", 7, "<message id='a'/>").await;
    drop(s);

    let s = reopen().await.unwrap();
    let got = all(&s, &alice).await;
    assert_eq!(got.count, 1);
    assert_eq!(got.items[0].id, archived);
    assert_eq!(got.items[0].xml, "<message id='a'/>");
    // Archive ids keep growing across a restart, even for an older stamp.
    let next = archive(&s, &alice, "bob@example.com", 1, "<m/>").await;
    assert!(next > archived);
    assert!(s.accounts.account_exists(&alice).await.unwrap());
    let got = s.accounts.get_credentials(&alice).await.unwrap().unwrap();
    assert_eq!(sorted_creds(got), creds(7));
    assert_eq!(
        s.rosters.get_roster(&alice).await.unwrap(),
        (version, vec![it.clone()])
    );
    let list = s.offline.list(&alice).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id, list[0].stamp_ms, list[0].xml.as_str()),
        (id, 42, "<message/>")
    );
    assert_eq!(
        s.vcards.get_vcard(&alice).await.unwrap().as_deref(),
        Some("<vCard xmlns='vcard-temp'/>")
    );
    // Counters continue where they were.
    assert!(
        s.rosters
            .put_item(&alice, &item("c@example.com"))
            .await
            .unwrap()
            > version
    );
    assert!(
        s.offline
            .push(&alice, 43, "<m/>", OfflineQuota::messages(10))
            .await
            .unwrap()
            > id
    );

    // And a second reopen sees the writes of the first.
    drop(s);
    let s = reopen().await.unwrap();
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap().1.len(), 2);
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);
    drop(s);
    drop(guard);
}

pub async fn offline_expire_removes_only_older(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    for stamp in [100u64, 200, 300, 400] {
        s.offline
            .push(
                &alice,
                stamp,
                &format!("<m s='{stamp}'/>"),
                OfflineQuota::messages(100),
            )
            .await
            .unwrap();
    }
    s.offline
        .push(&bob, 150, "<b/>", OfflineQuota::messages(100))
        .await
        .unwrap();
    s.offline
        .push(&bob, 350, "<b2/>", OfflineQuota::messages(100))
        .await
        .unwrap();
    // Strictly older than the cutoff: the message stamped 300 stays.
    assert_eq!(s.offline.expire(300).await.unwrap(), 3);
    let left: Vec<u64> = s
        .offline
        .list(&alice)
        .await
        .unwrap()
        .iter()
        .map(|m| m.stamp_ms)
        .collect();
    assert_eq!(left, [300, 400]);
    let bob_left = s.offline.list(&bob).await.unwrap();
    assert_eq!(bob_left.len(), 1);
    assert_eq!(bob_left[0].xml, "<b2/>");
    assert_eq!(s.offline.expire(300).await.unwrap(), 0);
    // More than one batch.
    let carol = jid("carol@example.com");
    for i in 0..2500u64 {
        s.offline
            .push(
                &carol,
                10 + i % 7,
                "<m/>",
                OfflineQuota::messages(usize::MAX),
            )
            .await
            .unwrap();
    }
    assert_eq!(s.offline.expire(300).await.unwrap(), 2500);
    assert_eq!(s.offline.count(&carol).await.unwrap(), 0);
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);
}

/// Appends one outgoing message; returns its id.
async fn archive(s: &Storage, owner: &BareJid, with: &str, stamp_ms: u64, xml: &str) -> String {
    let with = jid(with);
    let r = s
        .archive
        .append(
            owner,
            &NewArchived {
                with: &with,
                stamp_ms,
                direction: Direction::Outgoing,
                xml,
            },
        )
        .await
        .unwrap();
    assert!(r.stamp_ms >= stamp_ms);
    r.id
}

async fn query(
    s: &Storage,
    owner: &BareJid,
    filter: &ArchiveFilter,
    page: ArchivePage,
) -> ArchiveResult {
    s.archive.query(owner, filter, &page).await.unwrap()
}

/// Everything (up to 10,000) in one page.
async fn all(s: &Storage, owner: &BareJid) -> ArchiveResult {
    let page = ArchivePage {
        max: 10_000,
        ..ArchivePage::default()
    };
    query(s, owner, &ArchiveFilter::default(), page).await
}

fn page(max: usize, after: Option<&str>, before: Option<&str>, from_end: bool) -> ArchivePage {
    ArchivePage {
        max,
        after: after.map(str::to_owned),
        before: before.map(str::to_owned),
        from_end,
    }
}

fn ids(r: &ArchiveResult) -> Vec<String> {
    r.items.iter().map(|m| m.id.clone()).collect()
}

/// `n` messages alternating between two contacts, stamped 1,000 ms apart from `base`.
async fn fill(s: &Storage, owner: &BareJid, n: usize, base: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let with = if i % 2 == 0 {
            "bob@example.com"
        } else {
            "carol@example.net"
        };
        let xml = format!("<message xmlns='jabber:client' id='{i}'><body>n{i}</body></message>");
        out.push(archive(s, owner, with, base + 1000 * i as u64, &xml).await);
    }
    out
}

pub async fn archive_empty(s: &Storage) {
    let alice = jid("alice@example.com");
    for p in [
        page(10, None, None, false),
        page(10, None, None, true),
        page(0, None, None, false),
    ] {
        let r = query(s, &alice, &ArchiveFilter::default(), p).await;
        assert!(r.items.is_empty());
        assert!(r.complete);
        assert_eq!(r.count, 0);
    }
    let m = s.archive.metadata(&alice).await.unwrap();
    assert_eq!((m.first, m.last), (None, None));
    assert_eq!(s.archive.get_prefs(&alice).await.unwrap(), None);
    assert_eq!(
        s.archive.expire("example.com", u64::MAX / 2).await.unwrap(),
        0
    );
}

pub async fn archive_append_query_remove(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let xml =
        "<message xmlns='jabber:client' to='bob@example.com'><body>é &amp; ✓</body></message>";
    let with = jid("bob@example.com");
    let first = s
        .archive
        .append(
            &alice,
            &NewArchived {
                with: &with,
                stamp_ms: 1_700_000_000_123,
                direction: Direction::Outgoing,
                xml,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.stamp_ms, 1_700_000_000_123);
    let alice_jid = jid("alice@example.com");
    let second = s
        .archive
        .append(
            &bob,
            &NewArchived {
                with: &alice_jid,
                stamp_ms: 1_700_000_000_124,
                direction: Direction::Incoming,
                xml,
            },
        )
        .await
        .unwrap();
    // A stamp earlier than the last append's is raised: ids and times order alike.
    let third = s
        .archive
        .append(
            &alice,
            &NewArchived {
                with: &with,
                stamp_ms: 5,
                direction: Direction::Incoming,
                xml: "<message/>",
            },
        )
        .await
        .unwrap();
    assert!(first.id < second.id && second.id < third.id);
    assert_eq!(third.stamp_ms, 1_700_000_000_124);

    let r = all(s, &alice).await;
    assert_eq!(r.count, 2);
    assert!(r.complete);
    assert_eq!(r.items.len(), 2);
    let m = &r.items[0];
    assert_eq!(
        (
            m.id.as_str(),
            m.stamp_ms,
            &m.with,
            m.direction,
            m.xml.as_str()
        ),
        (
            first.id.as_str(),
            first.stamp_ms,
            &with,
            Direction::Outgoing,
            xml
        )
    );
    assert_eq!(r.items[1].direction, Direction::Incoming);
    assert_eq!(r.items[1].xml, "<message/>");
    // Owners are isolated.
    let rb = all(s, &bob).await;
    assert_eq!(ids(&rb), vec![second.id.clone()]);
    assert_eq!(rb.items[0].with, alice_jid);

    let meta = s.archive.metadata(&alice).await.unwrap();
    assert_eq!(meta.first, Some((first.id.clone(), first.stamp_ms)));
    assert_eq!(meta.last, Some((third.id.clone(), third.stamp_ms)));

    // Removal leaves a tombstone: never returned nor counted, but still a valid cursor.
    s.archive.remove(&alice, &first.id).await.unwrap();
    let r = all(s, &alice).await;
    assert_eq!((ids(&r), r.count), (vec![third.id.clone()], 1));
    let meta = s.archive.metadata(&alice).await.unwrap();
    assert_eq!(meta.first.map(|f| f.0), Some(third.id.clone()));
    let after = query(
        s,
        &alice,
        &ArchiveFilter::default(),
        page(10, Some(&first.id), None, false),
    )
    .await;
    assert_eq!(ids(&after), vec![third.id.clone()]);
    assert_err(
        s.archive.remove(&alice, &first.id).await,
        crate::ErrorCode::NotFound,
    );
    // Another owner's message, or garbage, cannot be removed.
    assert_err(
        s.archive.remove(&alice, &second.id).await,
        crate::ErrorCode::NotFound,
    );
    assert_err(
        s.archive.remove(&alice, "nope").await,
        crate::ErrorCode::NotFound,
    );
    assert_eq!(all(s, &bob).await.count, 1);
}

pub async fn archive_exact_page_boundaries(s: &Storage) {
    let alice = jid("alice@example.com");
    let max = 4;
    let all_ids = fill(s, &alice, 3 * max, 1_000_000).await;
    let f = ArchiveFilter::default();
    // Forwards: the third page is full and complete; no empty page is needed.
    let p1 = query(s, &alice, &f, page(max, None, None, false)).await;
    assert_eq!(ids(&p1), all_ids[..max].to_vec());
    assert!(!p1.complete);
    assert_eq!(p1.count, 3 * max);
    let p2 = query(
        s,
        &alice,
        &f,
        page(max, p1.items.last().map(|m| m.id.as_str()), None, false),
    )
    .await;
    assert_eq!(ids(&p2), all_ids[max..2 * max].to_vec());
    assert!(!p2.complete);
    let p3 = query(
        s,
        &alice,
        &f,
        page(max, p2.items.last().map(|m| m.id.as_str()), None, false),
    )
    .await;
    assert_eq!(ids(&p3), all_ids[2 * max..].to_vec());
    assert!(p3.complete);
    // After the very last id: empty and complete.
    let p4 = query(
        s,
        &alice,
        &f,
        page(max, all_ids.last().map(String::as_str), None, false),
    )
    .await;
    assert!(p4.items.is_empty() && p4.complete);
    assert_eq!(p4.count, 3 * max);
    // Backwards from the end, the same pages mirrored.
    let b1 = query(s, &alice, &f, page(max, None, None, true)).await;
    assert_eq!(ids(&b1), all_ids[2 * max..].to_vec());
    assert!(!b1.complete);
    let b3 = query(s, &alice, &f, page(max, None, Some(&all_ids[max]), false)).await;
    assert_eq!(ids(&b3), all_ids[..max].to_vec());
    assert!(b3.complete);
    let b0 = query(s, &alice, &f, page(max, None, Some(&all_ids[0]), false)).await;
    assert!(b0.items.is_empty() && b0.complete);
    // A page as large as the archive is complete; one smaller is not.
    assert!(
        query(s, &alice, &f, page(3 * max, None, None, false))
            .await
            .complete
    );
    assert!(
        !query(s, &alice, &f, page(3 * max - 1, None, None, true))
            .await
            .complete
    );
    // max = 0: only the count.
    let c = query(s, &alice, &f, page(0, None, None, false)).await;
    assert!(c.items.is_empty());
    assert_eq!(c.count, 3 * max);
}

pub async fn archive_paging_covers_everything_once(s: &Storage) {
    let alice = jid("alice@example.com");
    let n = 23;
    let all_ids = fill(s, &alice, n, 2_000_000).await;
    // Interleave another owner's messages between pages.
    let bob = jid("bob@example.com");
    fill(s, &bob, 5, 3_000_000).await;
    let f = ArchiveFilter::default();
    for max in [1, 5, 7, 23, 50] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let r = query(s, &alice, &f, page(max, after.as_deref(), None, false)).await;
            assert!(r.items.len() <= max);
            assert_eq!(r.count, n);
            seen.extend(ids(&r));
            after = r.items.last().map(|m| m.id.clone());
            if r.complete {
                break;
            }
            assert!(after.is_some(), "an incomplete page must not be empty");
        }
        assert_eq!(seen, all_ids, "forwards with max {max}");

        let mut back: Vec<Vec<String>> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let r = query(
                s,
                &alice,
                &f,
                page(max, None, before.as_deref(), before.is_none()),
            )
            .await;
            // Each page is in archive order.
            assert!(r.items.windows(2).all(|w| w[0].id < w[1].id));
            before = r.items.first().map(|m| m.id.clone());
            back.push(ids(&r));
            if r.complete {
                break;
            }
        }
        back.reverse();
        assert_eq!(back.concat(), all_ids, "backwards with max {max}");
    }
}

pub async fn archive_filters(s: &Storage) {
    let alice = jid("alice@example.com");
    let base = 1_600_000_000_000;
    let all_ids = fill(s, &alice, 10, base).await;
    let bob = jid("bob@example.com");
    let with_bob = ArchiveFilter {
        with: Some(bob.clone()),
        ..ArchiveFilter::default()
    };
    let r = query(s, &alice, &with_bob, page(50, None, None, false)).await;
    let even: Vec<String> = all_ids.iter().step_by(2).cloned().collect();
    assert_eq!(ids(&r), even);
    assert_eq!(r.count, 5);
    assert!(r.items.iter().all(|m| m.with == bob));
    // Paging within a filter.
    let r = query(
        s,
        &alice,
        &with_bob,
        page(2, Some(&all_ids[2]), None, false),
    )
    .await;
    assert_eq!(ids(&r), [all_ids[4].clone(), all_ids[6].clone()]);
    assert_eq!(r.count, 5);
    assert!(!r.complete);
    let r = query(s, &alice, &with_bob, page(2, None, None, true)).await;
    assert_eq!(ids(&r), [all_ids[6].clone(), all_ids[8].clone()]);

    // Time bounds are inclusive, to the millisecond.
    let window = ArchiveFilter {
        start_ms: Some(base + 3000),
        end_ms: Some(base + 6000),
        ..ArchiveFilter::default()
    };
    let r = query(s, &alice, &window, page(50, None, None, false)).await;
    assert_eq!(ids(&r), all_ids[3..=6].to_vec());
    assert_eq!(r.count, 4);
    let late = ArchiveFilter {
        start_ms: Some(base + 6001),
        ..ArchiveFilter::default()
    };
    assert_eq!(
        ids(&query(s, &alice, &late, page(50, None, None, false)).await),
        all_ids[7..].to_vec()
    );
    let inverted = ArchiveFilter {
        start_ms: Some(base + 6000),
        end_ms: Some(base + 3000),
        ..ArchiveFilter::default()
    };
    let r = query(s, &alice, &inverted, page(50, None, None, false)).await;
    assert!(r.items.is_empty() && r.complete);
    assert_eq!(r.count, 0);
    let far = ArchiveFilter {
        start_ms: Some(u64::MAX),
        end_ms: Some(u64::MAX),
        ..ArchiveFilter::default()
    };
    assert_eq!(
        query(s, &alice, &far, page(50, None, None, false))
            .await
            .count,
        0
    );

    // after-id / before-id are exclusive, and combine with `with` and paging.
    let between = ArchiveFilter {
        after_id: Some(all_ids[1].clone()),
        before_id: Some(all_ids[8].clone()),
        ..ArchiveFilter::default()
    };
    let r = query(s, &alice, &between, page(50, None, None, false)).await;
    assert_eq!(ids(&r), all_ids[2..8].to_vec());
    assert_eq!(r.count, 6);
    let r = query(s, &alice, &between, page(4, None, None, true)).await;
    assert_eq!(ids(&r), all_ids[4..8].to_vec());
    assert!(!r.complete);
    assert_eq!(r.count, 6);
    let between_bob = ArchiveFilter {
        with: Some(bob.clone()),
        ..between.clone()
    };
    let r = query(s, &alice, &between_bob, page(50, None, None, false)).await;
    assert_eq!(
        ids(&r),
        [all_ids[2].clone(), all_ids[4].clone(), all_ids[6].clone()]
    );

    // ids: in archive order whatever the order asked, duplicates once, other filters apply.
    let pick = ArchiveFilter {
        ids: vec![
            all_ids[7].clone(),
            all_ids[2].clone(),
            all_ids[5].clone(),
            all_ids[2].clone(),
        ],
        ..ArchiveFilter::default()
    };
    let r = query(s, &alice, &pick, page(50, None, None, false)).await;
    assert_eq!(
        ids(&r),
        [all_ids[2].clone(), all_ids[5].clone(), all_ids[7].clone()]
    );
    assert_eq!(r.count, 3);
    assert!(r.complete);
    let r = query(s, &alice, &pick, page(2, None, None, false)).await;
    assert_eq!(ids(&r), [all_ids[2].clone(), all_ids[5].clone()]);
    assert!(!r.complete);
    let r = query(s, &alice, &pick, page(2, Some(&all_ids[5]), None, false)).await;
    assert_eq!(ids(&r), [all_ids[7].clone()]);
    assert!(r.complete);
    let r = query(s, &alice, &pick, page(1, None, None, true)).await;
    assert_eq!(ids(&r), [all_ids[7].clone()]);
    let pick_bob = ArchiveFilter {
        with: Some(bob),
        ..pick
    };
    let r = query(s, &alice, &pick_bob, page(50, None, None, false)).await;
    assert_eq!(ids(&r), [all_ids[2].clone()]);
    assert_eq!(r.count, 1);
}

pub async fn archive_unknown_ids_are_not_found(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let mine = fill(s, &alice, 3, 5_000_000).await;
    let theirs = fill(s, &bob, 1, 6_000_000).await;
    let missing = [
        "".to_owned(),
        "unknown".to_owned(),
        "0000000000000".to_owned(),
        theirs[0].clone(),
    ];
    let f = ArchiveFilter::default();
    for id in &missing {
        for p in [
            page(10, Some(id), None, false),
            page(10, None, Some(id), false),
        ] {
            assert_err(
                s.archive.query(&alice, &f, &p).await,
                crate::ErrorCode::NotFound,
            );
        }
        for filter in [
            ArchiveFilter {
                after_id: Some(id.clone()),
                ..ArchiveFilter::default()
            },
            ArchiveFilter {
                before_id: Some(id.clone()),
                ..ArchiveFilter::default()
            },
            ArchiveFilter {
                ids: vec![mine[0].clone(), id.clone()],
                ..ArchiveFilter::default()
            },
        ] {
            assert_err(
                s.archive
                    .query(&alice, &filter, &page(10, None, None, false))
                    .await,
                crate::ErrorCode::NotFound,
            );
        }
    }
    // The owner's own ids are fine.
    let r = query(s, &alice, &f, page(10, Some(&mine[0]), None, false)).await;
    assert_eq!(ids(&r), mine[1..].to_vec());
}

pub async fn archive_concurrent_writers(s: &Storage) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let owner = jid("busy@example.com");
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        let owner = owner.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..PER_TASK {
                let xml = format!("<message id='{t}-{i}'/>");
                let id = archive(&s, &owner, "peer@example.com", 1_000, &xml).await;
                got.push((id, xml));
            }
            got
        }));
    }
    let mut written = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "a task's ids go backwards"
        );
        written.extend(got);
    }
    written.sort();
    let distinct: BTreeSet<&String> = written.iter().map(|(id, _)| id).collect();
    assert_eq!(
        distinct.len(),
        TASKS * PER_TASK,
        "archive ids are not unique"
    );
    let r = all(s, &owner).await;
    assert_eq!(r.count, TASKS * PER_TASK);
    let stored: Vec<(String, String)> = r.items.into_iter().map(|m| (m.id, m.xml)).collect();
    // The archive lists every message once, in id order, with the xml it was given.
    assert_eq!(stored, written);
}

pub async fn archive_retention(s: &Storage) {
    let alice = jid("alice@example.com");
    let bob = jid("bob@example.com");
    let other = jid("zed@other.example");
    let day = 86_400_000u64;
    let t0 = 1_700_000_000_000u64;
    let mut alice_ids = Vec::new();
    for d in 0..4u64 {
        alice_ids.push(archive(s, &alice, "x@example.com", t0 + d * day, "<a/>").await);
        archive(s, &bob, "x@example.com", t0 + d * day + 1, "<b/>").await;
        archive(s, &other, "x@example.com", t0 + d * day + 2, "<o/>").await;
    }
    // A tombstone is expired too.
    s.archive
        .remove(&bob, &all(s, &bob).await.items[0].id)
        .await
        .unwrap();
    // Everything of example.com stored before day 2 goes; the message at exactly the
    // cutoff stays.
    let removed = s.archive.expire("EXAMPLE.com", t0 + 2 * day).await.unwrap();
    assert_eq!(removed, 4);
    let r = all(s, &alice).await;
    assert_eq!(ids(&r), alice_ids[2..].to_vec());
    assert_eq!(r.count, 2);
    assert_eq!(all(s, &bob).await.count, 2);
    assert_eq!(
        s.archive.metadata(&alice).await.unwrap().first.map(|f| f.0),
        Some(alice_ids[2].clone())
    );
    // Another domain is untouched.
    assert_eq!(all(s, &other).await.count, 4);
    assert_eq!(
        s.archive.expire("example.com", t0 + 2 * day).await.unwrap(),
        0
    );
    // Expired ids are unknown from then on.
    assert_err(
        s.archive
            .query(
                &alice,
                &ArchiveFilter::default(),
                &page(5, Some(&alice_ids[0]), None, false),
            )
            .await,
        crate::ErrorCode::NotFound,
    );
    // Several batches.
    let carol = jid("carol@example.com");
    for i in 0..2100u64 {
        archive(s, &carol, "x@example.com", t0 + 5 * day + i, "<c/>").await;
    }
    archive(s, &carol, "x@example.com", t0 + 7 * day, "<kept/>").await;
    assert_eq!(
        s.archive.expire("example.com", t0 + 6 * day).await.unwrap(),
        2100 + 4
    );
    let r = all(s, &carol).await;
    assert_eq!(r.count, 1);
    assert_eq!(r.items[0].xml, "<kept/>");
    assert_eq!(all(s, &alice).await.count, 0);
    assert_eq!(all(s, &other).await.count, 4);
}

pub async fn archive_prefs_round_trip(s: &Storage) {
    let alice = jid("alice@example.com");
    assert_eq!(s.archive.get_prefs(&alice).await.unwrap(), None);
    let prefs = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec![jid("bob@example.com"), jid("émile@example.com")],
        never: vec![jid("example.net")],
    };
    s.archive.set_prefs(&alice, &prefs).await.unwrap();
    assert_eq!(s.archive.get_prefs(&alice).await.unwrap(), Some(prefs));
    for default in [ArchiveDefault::Never, ArchiveDefault::Always] {
        let replaced = ArchivePrefs {
            default,
            always: vec![],
            never: vec![jid("carol@example.com")],
        };
        s.archive.set_prefs(&alice, &replaced).await.unwrap();
        assert_eq!(s.archive.get_prefs(&alice).await.unwrap(), Some(replaced));
    }
    assert_eq!(
        s.archive.get_prefs(&jid("bob@example.com")).await.unwrap(),
        None
    );
}

fn settings(open: bool, max_accounts: Option<u32>) -> DomainSettings {
    DomainSettings {
        registration_open: open,
        archive_retention_days: Some(30),
        max_accounts,
        max_sessions_per_account: Some(4),
        offline_quota: None,
    }
}

pub async fn domains_crud(s: &Storage) {
    assert!(s.domains.list_domains().await.unwrap().is_empty());
    assert_eq!(s.domains.get_domain("a.example").await.unwrap(), None);
    let a = s
        .domains
        .put_domain("A.Example", &settings(true, Some(10)))
        .await
        .unwrap();
    assert_eq!(a.domain, "a.example", "names are stored prepared");
    assert_eq!(a.settings, settings(true, Some(10)));
    assert!(!a.removed);
    assert!(a.updated_ms > 0);
    s.domains
        .put_domain("b.example", &DomainSettings::default())
        .await
        .unwrap();
    let got = s.domains.get_domain("a.example").await.unwrap().unwrap();
    assert_eq!(got.settings, a.settings);
    assert!(!got.removed);
    // Update: every setting replaced, unset ones back to the server default.
    let mut changed = settings(false, None);
    changed.offline_quota = Some(5000);
    s.domains.put_domain("a.example", &changed).await.unwrap();
    let got = s.domains.get_domain("a.example").await.unwrap().unwrap();
    assert_eq!(got.settings, changed);
    assert!(!got.settings.registration_open);
    assert_eq!(got.settings.max_accounts, None);
    let names: Vec<String> = s
        .domains
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.domain)
        .collect();
    assert_eq!(names, ["a.example", "b.example"]);
    // Remove marks; the record stays listed; put brings it back.
    s.domains.remove_domain("b.example").await.unwrap();
    let b = s.domains.get_domain("b.example").await.unwrap().unwrap();
    assert!(b.removed);
    assert_eq!(s.domains.list_domains().await.unwrap().len(), 2);
    assert_err(
        s.domains.remove_domain("nowhere.example").await,
        crate::ErrorCode::NotFound,
    );
    let back = s
        .domains
        .put_domain("b.example", &DomainSettings::default())
        .await
        .unwrap();
    assert!(!back.removed);
    assert!(
        !s.domains
            .get_domain("b.example")
            .await
            .unwrap()
            .unwrap()
            .removed
    );
}

pub async fn domains_remove_keeps_accounts(s: &Storage) {
    s.domains
        .put_domain("kept.example", &DomainSettings::default())
        .await
        .unwrap();
    let alice = jid("alice@kept.example");
    s.accounts.create_account(&alice, &creds(1)).await.unwrap();
    s.vcards
        .set_vcard(&alice, "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    assert_eq!(s.accounts.count_accounts("kept.example").await.unwrap(), 1);
    s.domains.remove_domain("kept.example").await.unwrap();
    assert!(s.accounts.account_exists(&alice).await.unwrap());
    assert!(s.vcards.get_vcard(&alice).await.unwrap().is_some());
    assert_eq!(s.accounts.count_accounts("kept.example").await.unwrap(), 1);
}

pub async fn domains_purge_deletes_accounts(s: &Storage) {
    s.domains
        .put_domain("gone.example", &DomainSettings::default())
        .await
        .unwrap();
    let alice = jid("alice@gone.example");
    let bob = jid("bob@gone.example");
    let other = jid("carol@stays.example");
    for j in [&alice, &bob, &other] {
        s.accounts.create_account(j, &creds(1)).await.unwrap();
        s.offline
            .push(
                j,
                1,
                "<message xmlns='jabber:client'/>",
                OfflineQuota::messages(10),
            )
            .await
            .unwrap();
        s.rosters
            .put_item(j, &item("dave@example.com"))
            .await
            .unwrap();
        archive(s, j, "dave@example.com", 1, "<message/>").await;
    }
    // A hosted domain is not purged.
    assert_err(
        s.domains.purge_domain("gone.example").await,
        crate::ErrorCode::NotFound,
    );
    assert_err(
        s.domains.purge_domain("never.example").await,
        crate::ErrorCode::NotFound,
    );
    assert!(s.accounts.account_exists(&alice).await.unwrap());
    s.domains.remove_domain("gone.example").await.unwrap();
    assert_eq!(s.domains.purge_domain("gone.example").await.unwrap(), 2);
    assert_eq!(s.domains.get_domain("gone.example").await.unwrap(), None);
    for j in [&alice, &bob] {
        assert!(!s.accounts.account_exists(j).await.unwrap());
        assert_eq!(s.offline.count(j).await.unwrap(), 0);
        assert_eq!(s.rosters.get_roster(j).await.unwrap(), (0, vec![]));
        assert_eq!(all(s, j).await.count, 0);
    }
    assert!(
        s.accounts
            .list_accounts("gone.example")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.accounts.count_accounts("gone.example").await.unwrap(), 0);
    // Another domain's account keeps everything.
    assert!(s.accounts.account_exists(&other).await.unwrap());
    assert_eq!(s.offline.count(&other).await.unwrap(), 1);
    assert_eq!(all(s, &other).await.count, 1);
}

pub async fn domains_version_changes_on_every_write(s: &Storage) {
    let mut seen = vec![s.domains.domains_version().await.unwrap()];
    let mut check = |v: u64| {
        assert!(!seen.contains(&v), "version {v} repeated: {seen:?}");
        seen.push(v);
    };
    s.domains
        .put_domain("v.example", &DomainSettings::default())
        .await
        .unwrap();
    check(s.domains.domains_version().await.unwrap());
    s.domains
        .put_domain("v.example", &settings(true, None))
        .await
        .unwrap();
    check(s.domains.domains_version().await.unwrap());
    s.domains.remove_domain("v.example").await.unwrap();
    check(s.domains.domains_version().await.unwrap());
    s.domains.purge_domain("v.example").await.unwrap();
    let last = s.domains.domains_version().await.unwrap();
    check(last);
    // Reads do not change it; a failed write need not either.
    s.domains.list_domains().await.unwrap();
    s.domains.get_domain("v.example").await.unwrap();
    assert_eq!(s.domains.domains_version().await.unwrap(), last);
}
