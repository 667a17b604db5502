//! Redis membership and placement against a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cluster::{
    Member, Membership, NodeId, Placement, RedisClient, RedisConfig, RedisMembership,
    RedisMembershipConfig, Role,
};
use common::{RedisServer, eventually};
use xmpp::BareJid;

const WITHIN: Duration = Duration::from_secs(10);

fn member(id: &str, role: Role) -> Member {
    Member::new(
        NodeId::new(id).unwrap(),
        role,
        format!("10.0.0.{}:7001", id.len()),
    )
}

fn config() -> RedisMembershipConfig {
    RedisMembershipConfig {
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn client(url: &str) -> RedisClient {
    let mut cfg = RedisConfig::new(url);
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.response_timeout = Duration::from_millis(500);
    RedisClient::connect(&cfg).await.unwrap()
}

async fn join(url: &str, me: Option<Member>) -> RedisMembership {
    RedisMembership::start(client(url).await, me, config())
        .await
        .unwrap()
}

fn ids(m: &dyn Membership, role: Role) -> Vec<String> {
    m.members(role).iter().map(|m| m.id.to_string()).collect()
}

#[tokio::test]
async fn members_join_by_heartbeat_and_leave_or_expire() {
    let redis = RedisServer::start();
    let url = redis.url();
    let s1 = join(&url, Some(member("s1", Role::Session))).await;
    // A node sees itself as soon as it has started.
    assert_eq!(ids(&s1, Role::Session), ["s1"]);

    let observer = join(&url, None).await;
    assert_eq!(ids(&observer, Role::Session), ["s1"]);
    assert_eq!(
        observer.members(Role::Session)[0],
        member("s1", Role::Session)
    );
    let mut changes = observer.watch();
    changes.mark_unchanged();

    let s2 = join(&url, Some(member("s2", Role::Session))).await;
    let e1 = join(&url, Some(member("e1", Role::Edge))).await;
    tokio::time::timeout(WITHIN, changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        eventually(WITHIN, || async {
            ids(&observer, Role::Session) == ["s1", "s2"] && ids(&observer, Role::Edge) == ["e1"]
        })
        .await
    );
    assert!(ids(&observer, Role::Router).is_empty());

    // Placement over what membership reports: every owner is a live session member.
    let placement = Placement::new(observer.members(Role::Session));
    for i in 0..50 {
        let jid: BareJid = format!("u{i}@example.com").parse().unwrap();
        let owner = placement.owner(&jid).unwrap();
        assert!(["s1", "s2"].contains(&owner.id.as_str()));
    }

    // A crash: s2 stops heartbeating and drops out after its TTL.
    drop(s2);
    assert!(eventually(WITHIN, || async { ids(&observer, Role::Session) == ["s1"] }).await);
    assert_eq!(ids(&observer, Role::Edge), ["e1"]);

    // A graceful leave removes the member without waiting for the TTL.
    e1.leave().await.unwrap();
    assert!(eventually(WITHIN, || async { ids(&observer, Role::Edge).is_empty() }).await);
    assert_eq!(ids(&s1, Role::Session), ["s1"]);
}

#[tokio::test]
async fn members_survive_a_redis_outage_and_come_back_after_a_restart() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let s1 = join(&url, Some(member("s1", Role::Session))).await;
    let observer = join(&url, None).await;
    assert_eq!(ids(&observer, Role::Session), ["s1"]);

    redis.kill();
    // Polls fail while Redis is down; the last snapshot stays rather than everyone "dying".
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ids(&observer, Role::Session), ["s1"]);

    redis.restart();
    // s1's heartbeats re-create its membership in the empty server; a newcomer sees it.
    let newcomer = eventually(WITHIN, || async {
        match RedisMembership::start(client(&url).await, None, config()).await {
            Ok(m) => ids(&m, Role::Session) == ["s1"],
            Err(_) => false,
        }
    })
    .await;
    assert!(newcomer);
    assert_eq!(ids(&s1, Role::Session), ["s1"]);
}

#[tokio::test]
async fn a_starting_node_fails_cleanly_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let mut cfg = RedisConfig::new(&url);
    cfg.connect_timeout = Duration::from_millis(300);
    let err = RedisClient::connect(&cfg).await.unwrap_err();
    assert_eq!(err.code(), cluster::ErrorCode::Unavailable);
}
