//! The Redis directory against a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::{
    ClusterError, Directory, DirectoryConfig, DirectoryEntry, ErrorCode, NodeId, RedisClient,
    RedisConfig, RedisDirectory,
};
use common::{RedisServer, eventually};
use xmpp::{BareJid, FullJid};

/// Generous bound for things that should happen within one TTL (2 s here).
const WITHIN: Duration = Duration::from_secs(10);

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn full(s: &str) -> FullJid {
    s.parse().unwrap()
}

fn bare(s: &str) -> BareJid {
    s.parse().unwrap()
}

fn entry(session: &str, conn: u64) -> DirectoryEntry {
    DirectoryEntry {
        edge_node: node("edge-0"),
        connection_id: conn,
        session_node: node(session),
        priority: 0,
        available: true,
    }
}

fn config(id: &str) -> DirectoryConfig {
    let mut c = DirectoryConfig::new(node(id));
    c.heartbeat = Duration::from_millis(200);
    c.ttl = Duration::from_secs(2);
    c
}

async fn client(url: &str) -> RedisClient {
    let mut cfg = RedisConfig::new(url);
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.response_timeout = Duration::from_millis(500);
    RedisClient::connect(&cfg).await.unwrap()
}

async fn start(url: &str, id: &str) -> RedisDirectory {
    RedisDirectory::start(client(url).await, config(id))
        .await
        .unwrap()
}

async fn raw_hlen(url: &str, key: &str) -> i64 {
    let mut c = client(url).await;
    redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn register_lookup_resources_unregister() {
    let redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;

    let phone = full("alice@example.com/phone");
    let laptop = full("alice@example.com/laptop");
    assert_eq!(a.register(&phone, &entry("s1", 1)).await.unwrap(), None);
    assert_eq!(a.register(&laptop, &entry("s1", 2)).await.unwrap(), None);

    // Every node sees the same directory.
    for d in [&a, &b] {
        assert_eq!(d.lookup(&phone).await.unwrap(), Some(entry("s1", 1)));
        let res = d.resources(&bare("alice@example.com")).await.unwrap();
        assert_eq!(
            res,
            vec![
                ("laptop".to_owned(), entry("s1", 2)),
                ("phone".to_owned(), entry("s1", 1)),
            ]
        );
        assert!(
            d.resources(&bare("bob@example.com"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            d.lookup(&full("alice@example.com/tablet")).await.unwrap(),
            None
        );
    }

    // Registering again replaces and returns the previous live entry.
    assert_eq!(
        a.register(&phone, &entry("s1", 3)).await.unwrap(),
        Some(entry("s1", 1))
    );
    assert_eq!(b.lookup(&phone).await.unwrap(), Some(entry("s1", 3)));

    // Another node cannot unregister a's entry, and a's unregister returns what it removed.
    assert_eq!(b.unregister(&phone).await.unwrap(), None);
    assert_eq!(a.unregister(&phone).await.unwrap(), Some(entry("s1", 3)));
    assert_eq!(a.unregister(&phone).await.unwrap(), None);
    assert_eq!(b.lookup(&phone).await.unwrap(), None);
    assert_eq!(
        b.resources(&bare("alice@example.com")).await.unwrap(),
        vec![("laptop".to_owned(), entry("s1", 2))]
    );

    // A node writes only its own entries.
    let err = a.register(&phone, &entry("s2", 9)).await.unwrap_err();
    assert!(matches!(err, ClusterError::ForeignNode { .. }));
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    let err = a
        .republish(&[(phone.clone(), entry("s2", 9))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);

    // A resource moving to another node: the new owner's entry wins, and the old owner's
    // late unregister leaves it alone.
    assert_eq!(
        b.register(&laptop, &entry("s2", 5)).await.unwrap(),
        Some(entry("s1", 2))
    );
    assert_eq!(a.unregister(&laptop).await.unwrap(), None);
    assert_eq!(a.lookup(&laptop).await.unwrap(), Some(entry("s2", 5)));

    // Braces in a localpart are just characters.
    let braces = full("x{tag}y@example.com/r");
    a.register(&braces, &entry("s1", 7)).await.unwrap();
    assert_eq!(b.lookup(&braces).await.unwrap(), Some(entry("s1", 7)));
    assert_eq!(
        raw_hlen(&redis.url(), "relais:jid:{}x{tag}y@example.com").await,
        1
    );
}

#[tokio::test]
async fn priority_and_availability_updates() {
    let redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;
    let jid = full("carol@example.com/desk");
    a.register(&jid, &entry("s1", 42)).await.unwrap();

    assert!(a.update(&jid, -3, false).await.unwrap());
    let got = b.lookup(&jid).await.unwrap().unwrap();
    assert_eq!((got.priority, got.available), (-3, false));
    assert_eq!(got.connection_id, 42, "the rest of the entry is untouched");
    assert_eq!(got.edge_node, node("edge-0"));

    assert!(a.update(&jid, 127, true).await.unwrap());
    let got = b.lookup(&jid).await.unwrap().unwrap();
    assert_eq!((got.priority, got.available), (127, true));

    // Only the owner updates; an absent entry is reported.
    assert!(!b.update(&jid, 5, true).await.unwrap());
    assert_eq!(b.lookup(&jid).await.unwrap().unwrap().priority, 127);
    assert!(
        !a.update(&full("carol@example.com/none"), 1, true)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn dead_node_entries_vanish_and_the_janitor_sweeps_them() {
    let redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;

    let mut registered = BTreeSet::new();
    for i in 0..30 {
        let jid = full(&format!("user{i}@example.com/r{}", i % 3));
        a.register(&jid, &entry("s1", i)).await.unwrap();
        registered.insert(jid);
    }
    // One of a's resources is taken over by b before a dies: it must survive the sweep.
    let moved = full("user0@example.com/r0");
    b.register(&moved, &entry("s2", 100)).await.unwrap();
    registered.remove(&moved);
    // And one was cleanly unregistered: it must not be reported as swept.
    let gone = full("user1@example.com/r1");
    a.unregister(&gone).await.unwrap();
    registered.remove(&gone);

    let probe = full("user2@example.com/r2");
    assert!(b.lookup(&probe).await.unwrap().is_some());
    assert!(b.sweep().await.unwrap().is_empty(), "nobody is dead yet");

    // Crash: a stops heartbeating without cleaning up.
    drop(a);
    assert!(
        eventually(WITHIN, || async {
            b.lookup(&probe).await.unwrap().is_none()
        })
        .await,
        "a dead node's entries must disappear from lookups"
    );
    assert!(
        b.resources(&bare("user5@example.com"))
            .await
            .unwrap()
            .is_empty(),
        "filtered before any sweep"
    );
    assert_eq!(
        raw_hlen(&redis.url(), "relais:jid:{}user5@example.com").await,
        1
    );

    // The janitor claims the node once its expiry has passed by Redis's clock.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut swept = Vec::new();
    while swept.is_empty() && tokio::time::Instant::now() < deadline {
        swept = b.sweep().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swept_jids: BTreeSet<FullJid> = swept.iter().map(|s| s.jid.clone()).collect();
    assert_eq!(swept_jids, registered);
    assert!(swept.iter().all(|s| s.entry.session_node == node("s1")));
    assert_eq!(swept.len(), registered.len(), "each entry swept once");

    // The data is gone, the taken-over entry is not, and a second sweep finds nothing.
    assert_eq!(
        raw_hlen(&redis.url(), "relais:jid:{}user5@example.com").await,
        0
    );
    assert_eq!(b.lookup(&moved).await.unwrap(), Some(entry("s2", 100)));
    assert!(b.sweep().await.unwrap().is_empty());
}

#[tokio::test]
async fn graceful_retire_lets_the_janitor_sweep_at_once() {
    let redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;
    let jid = full("dave@example.com/r");
    a.register(&jid, &entry("s1", 1)).await.unwrap();
    a.retire().await.unwrap();
    // No need to wait for the TTL: the retired node is claimable at once.
    let swept = b.sweep().await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].jid, jid);
    assert_eq!(swept[0].entry, entry("s1", 1));
    assert_eq!(b.lookup(&jid).await.unwrap(), None);
}

#[tokio::test]
async fn redis_restart_fires_a_reset_and_republish_restores_entries() {
    let mut redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;
    let mut resets = a.resets();
    let before = a.incarnation();

    let sessions: Vec<(FullJid, DirectoryEntry)> = (0..10)
        .map(|i| (full(&format!("u{i}@example.com/res")), entry("s1", i)))
        .collect();
    for (j, e) in &sessions {
        a.register(j, e).await.unwrap();
    }

    redis.kill();
    // While Redis is down, operations fail with an error instead of hanging or panicking.
    let (j0, e0) = &sessions[0];
    let err = a.lookup(j0).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(a.register(j0, e0).await.is_err());
    assert!(b.resources(&j0.bare()).await.is_err());
    assert!(b.sweep().await.is_err());
    // Let a few heartbeats fail.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!resets.has_changed().unwrap());

    redis.restart();
    tokio::time::timeout(WITHIN, resets.changed())
        .await
        .expect("a reset is reported after redis comes back empty")
        .unwrap();
    assert_ne!(a.incarnation(), before);
    // The restart lost everything (the reconnect may take a moment).
    assert!(
        eventually(WITHIN, || async {
            b.lookup(j0).await.is_ok_and(|e| e.is_none())
        })
        .await
    );

    a.republish(&sessions).await.unwrap();
    for (j, e) in &sessions {
        assert_eq!(b.lookup(j).await.unwrap().as_ref(), Some(e));
    }
    // The retired incarnation is swept without touching the republished entries.
    let swept = b.sweep().await.unwrap();
    assert!(swept.is_empty(), "{swept:?}");
    assert_eq!(b.lookup(j0).await.unwrap().as_ref(), Some(e0));
    // b's own registration was lost too, so it reports a reset of its own.
    assert!(
        eventually(WITHIN, || async { *b.resets().borrow() >= 1 }).await,
        "every node detects the loss"
    );
}

#[tokio::test]
async fn losing_only_this_nodes_registration_recovers_without_flapping() {
    // A janitor on another node can declare a partitioned node dead while its data survives.
    // Simulated by deleting a's liveness member: a must notice, switch incarnation and, after
    // republishing, only the sessions that ended meanwhile are swept.
    let redis = RedisServer::start();
    let a = start(&redis.url(), "s1").await;
    let b = start(&redis.url(), "s2").await;
    let mut resets = a.resets();
    let kept = full("erin@example.com/kept");
    let ended = full("erin@example.com/ended");
    a.register(&kept, &entry("s1", 1)).await.unwrap();
    a.register(&ended, &entry("s1", 2)).await.unwrap();

    let member = format!("s1#{:08x}", a.incarnation());
    let mut c = client(&redis.url()).await;
    let removed: i64 = redis::cmd("ZREM")
        .arg("relais:{dir}:live")
        .arg(&member)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(removed, 1);

    tokio::time::timeout(WITHIN, resets.changed())
        .await
        .expect("reset reported")
        .unwrap();
    // The surviving entries carry the old incarnation, which is no longer live: readers stop
    // returning them once their cached expiry for it passes (at most one TTL).
    assert!(
        eventually(WITHIN, || async {
            b.lookup(&kept).await.unwrap().is_none()
        })
        .await
    );

    a.republish(&[(kept.clone(), entry("s1", 1))])
        .await
        .unwrap();
    assert_eq!(b.lookup(&kept).await.unwrap(), Some(entry("s1", 1)));
    let swept = b.sweep().await.unwrap();
    let jids: Vec<&FullJid> = swept.iter().map(|s| &s.jid).collect();
    assert_eq!(jids, vec![&ended]);
    assert_eq!(b.lookup(&kept).await.unwrap(), Some(entry("s1", 1)));
    assert_eq!(
        raw_hlen(&redis.url(), "relais:jid:{}erin@example.com").await,
        1
    );
}

#[tokio::test]
async fn bad_urls_are_configuration_errors() {
    let err = RedisClient::connect(&RedisConfig::new("http://localhost"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Config);
    let err = RedisClient::connect(&RedisConfig::new("redis+cluster://"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Config);
}
