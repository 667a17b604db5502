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

use crate::{Credentials, Result, RosterItem, Storage, StorageError, Subscription};

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
                vcard_set_replace_get,
                concurrent_writers,
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
            .push(j, 1, "<message xmlns='jabber:client'/>", 10)
            .await
            .unwrap();
        s.vcards
            .set_vcard(j, "<vCard xmlns='vcard-temp'/>")
            .await
            .unwrap();
    }
    s.accounts.delete_account(&alice).await.unwrap();

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
        ids.push(s.offline.push(&alice, *stamp, xml, 100).await.unwrap());
        if i == 0 {
            // Interleave another owner's message.
            s.offline.push(&bob, 5, "<message/>", 100).await.unwrap();
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
                .push(&alice, i as u64, &format!("<m n='{i}'/>"), quota)
                .await
                .unwrap(),
        );
    }
    assert_eq!(s.offline.count(&alice).await.unwrap(), quota);
    match s.offline.push(&alice, 99, "<over/>", quota).await {
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
    s.offline.push(&alice, 4, "<m/>", quota + 1).await.unwrap();
    s.offline
        .push(&jid("bob@example.com"), 1, "<m/>", 1)
        .await
        .unwrap();
    // Freeing one slot admits exactly one message.
    s.offline.remove_up_to(&alice, ids[1]).await.unwrap();
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);
    s.offline.push(&alice, 5, "<m/>", quota).await.unwrap();
    assert_err(
        s.offline.push(&alice, 6, "<m/>", quota).await,
        crate::ErrorCode::QuotaExceeded,
    );
    // A zero quota admits nothing.
    assert_err(
        s.offline
            .push(&jid("carol@example.com"), 1, "<m/>", 0)
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
        ids.push(s.offline.push(&alice, i, "<m/>", 100).await.unwrap());
    }
    let bob_id = s.offline.push(&bob, 0, "<b/>", 100).await.unwrap();

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
    let next = s.offline.push(&alice, 9, "<m/>", 100).await.unwrap();
    assert!(next > ids[4] && next > bob_id);
    assert_eq!(s.offline.count(&bob).await.unwrap(), 1);
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
                ids.push(s.offline.push(&owner, 1, &xml, usize::MAX).await.unwrap());
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
    let id = s.offline.push(&alice, 42, "<message/>", 10).await.unwrap();
    s.vcards
        .set_vcard(&alice, "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    drop(s);

    let s = reopen().await.unwrap();
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
    assert!(s.offline.push(&alice, 43, "<m/>", 10).await.unwrap() > id);

    // And a second reopen sees the writes of the first.
    drop(s);
    let s = reopen().await.unwrap();
    assert_eq!(s.rosters.get_roster(&alice).await.unwrap().1.len(), 2);
    assert_eq!(s.offline.count(&alice).await.unwrap(), 2);
    drop(s);
    drop(guard);
}
