//! The same code against a three-master Redis Cluster: every script's keys must share a slot,
//! and commands must route by key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cluster::{
    Directory, DirectoryConfig, DirectoryEntry, Member, Membership, NodeId, RedisClient,
    RedisConfig, RedisDirectory, RedisMembership, RedisMembershipConfig, Role,
};
use common::{RedisCluster, eventually};
use xmpp::FullJid;

const WITHIN: Duration = Duration::from_secs(10);

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn entry(session: &str, conn: u64) -> DirectoryEntry {
    DirectoryEntry {
        edge_node: node("edge-0"),
        connection_id: conn,
        session_node: node(session),
        priority: 1,
        available: true,
    }
}

async fn client(url: &str) -> RedisClient {
    let client = RedisClient::connect(&RedisConfig::new(url)).await.unwrap();
    assert!(matches!(client, RedisClient::Cluster(_)));
    client
}

async fn directory(url: &str, id: &str) -> RedisDirectory {
    let mut c = DirectoryConfig::new(node(id));
    c.heartbeat = Duration::from_millis(200);
    c.ttl = Duration::from_secs(2);
    RedisDirectory::start(client(url).await, c).await.unwrap()
}

#[tokio::test]
async fn directory_and_membership_work_on_redis_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let a = directory(&url, "s1").await;
    let b = directory(&url, "s2").await;

    // Enough distinct bare JIDs to land on every master.
    let jids: Vec<FullJid> = (0..40)
        .map(|i| format!("user{i}@example.com/r").parse().unwrap())
        .collect();
    for (i, j) in jids.iter().enumerate() {
        a.register(j, &entry("s1", i as u64)).await.unwrap();
    }
    assert!(a.update(&jids[0], 9, false).await.unwrap());
    let got = b.lookup(&jids[0]).await.unwrap().unwrap();
    assert_eq!((got.priority, got.available), (9, false));
    assert_eq!(b.resources(&jids[1].bare()).await.unwrap().len(), 1);
    assert_eq!(a.unregister(&jids[1]).await.unwrap(), Some(entry("s1", 1)));

    drop(a);
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut swept = Vec::new();
    while swept.is_empty() && tokio::time::Instant::now() < deadline {
        swept = b.sweep().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(swept.len(), jids.len() - 1);
    assert_eq!(b.lookup(&jids[2]).await.unwrap(), None);

    let cfg = RedisMembershipConfig {
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let me = Member::new(node("r1"), Role::Router, "10.0.0.9:7003");
    let r1 = RedisMembership::start(client(&url).await, Some(me.clone()), cfg.clone())
        .await
        .unwrap();
    let observer = RedisMembership::start(client(&url).await, None, cfg)
        .await
        .unwrap();
    assert_eq!(observer.members(Role::Router), vec![me]);
    r1.leave().await.unwrap();
    assert!(
        eventually(WITHIN, || async {
            observer.members(Role::Router).is_empty()
        })
        .await
    );
}
