//! The cluster: 2 edges, 2 session nodes, a router and a real redis-server on loopback.
//! The client scenarios of the standalone server run with the two users on different edges
//! and different session nodes; then failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

tests::client_scenarios!(tests::deploy::cluster);

use std::time::{Duration, Instant};

use tests::client::{Client, NS_SM, body, chat};
use tests::cluster::{Cluster, ClusterOpts, redis_server::raw_command};
use xmpp::scram::ScramHash;
use xmpp::{Element, StreamErrorCondition, ns};

fn cluster_with(users: &[&str], opts: ClusterOpts) -> Cluster {
    let c = Cluster::start(opts);
    for u in users {
        c.add_user(u, &format!("{u}-pw"));
    }
    c
}

fn presence(to: &str, ty: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .attr("to", to)
        .attr("type", ty)
}

/// The full subscription handshake both ways (RFC 6121 §3.1), both clients online.
async fn subscribe_both(a: &mut Client, a_bare: &str, b: &mut Client, b_bare: &str) {
    subscribe(a, a_bare, b, b_bare).await;
    subscribe(b, b_bare, a, a_bare).await;
}

/// `x` subscribes to `y`'s presence and `y` approves.
async fn subscribe(x: &mut Client, x_bare: &str, y: &mut Client, y_bare: &str) {
    x.send(&presence(y_bare, "subscribe")).await;
    y.recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribe"))
        .await;
    y.send(&presence(x_bare, "subscribed")).await;
    x.recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribed"))
        .await;
}

/// Alice through the first edge and Bob through the second, both with available presence.
async fn both_online(c: &Cluster) -> (Client, Client) {
    let mut a = c.login_at(0, "alice", "alice-pw", "a").await;
    let mut b = c.login_at(1, "bob", "bob-pw", "b").await;
    a.go_online().await;
    b.go_online().await;
    (a, b)
}

async fn next_message(c: &mut Client) -> Element {
    c.recv_matching(|e| e.name() == "message").await
}

/// A round trip through the server, so everything sent before has been routed.
async fn sync(c: &mut Client) {
    let ping = Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("to", "localhost")
        .child(Element::new("ping", ns::PING));
    let pong = c.iq(ping).await;
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
}

/// How many resources of `bare` the Redis directory lists.
fn directory_resources(c: &Cluster, bare: &str) -> Option<u64> {
    let reply = raw_command(c.redis.port, &format!("HLEN relais:jid:{{}}{bare}"))?;
    reply.trim().strip_prefix(':')?.parse().ok()
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test]
async fn edge_crash_stream_managed_client_resumes_through_the_other_edge() {
    let mut c = cluster_with(&["alice", "bob"], ClusterOpts::default());
    let mut a = c.login_at(0, "alice", "alice-pw", "phone").await;
    let enabled = a.sm_enable(true).await;
    assert!(enabled.is("enabled", NS_SM), "{enabled}");
    let id = enabled.get_attr("id").unwrap().to_owned();
    a.go_online().await;
    let mut b = c.login_at(1, "bob", "bob-pw", "b").await;
    b.go_online().await;
    b.send(&chat("alice@localhost/phone", "m1")).await;
    assert_eq!(body(&next_message(&mut a).await).as_deref(), Some("m1"));
    let h = a.sm_h().unwrap();
    let jid = a.jid.clone();

    // Alice's edge dies mid-conversation; bob keeps writing.
    c.edges[0].process.kill();
    b.send(&chat("alice@localhost/phone", "m2")).await;
    b.send(&chat("alice@localhost", "m3")).await;
    sync(&mut b).await;

    let mut a2 = c.connect_to(1).await;
    a2.auth_scram("alice", "alice-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
    let resumed = a2.sm_resume(&id, h, jid).await;
    assert!(resumed.is("resumed", NS_SM), "{resumed}\n{}", c.logs());
    assert_eq!(body(&next_message(&mut a2).await).as_deref(), Some("m2"));
    assert_eq!(body(&next_message(&mut a2).await).as_deref(), Some("m3"));
    a2.expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    // The resumed session works both ways.
    a2.send(&chat("bob@localhost", "back")).await;
    let back = next_message(&mut b).await;
    assert_eq!(back.get_attr("from"), Some("alice@localhost/phone"));
    b.send(&chat("alice@localhost/phone", "m4")).await;
    assert_eq!(body(&next_message(&mut a2).await).as_deref(), Some("m4"));
}

#[tokio::test]
async fn edge_crash_contacts_get_unavailable_and_the_directory_forgets() {
    let mut c = cluster_with(&["alice", "bob"], ClusterOpts::default());
    let (mut a, mut b) = both_online(&c).await;
    subscribe_both(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    assert!(
        wait_until(Duration::from_secs(10), || directory_resources(
            &c,
            "alice@localhost"
        ) == Some(1))
        .await,
        "alice never reached the directory"
    );

    c.edges[0].process.kill();
    let gone = b
        .recv_matching(|e| {
            e.name() == "presence"
                && e.get_attr("type") == Some("unavailable")
                && e.get_attr("from") == Some("alice@localhost/a")
        })
        .await;
    assert!(
        gone.get_attr("to")
            .is_some_and(|t| t.starts_with("bob@localhost"))
    );
    assert!(
        wait_until(Duration::from_secs(10), || directory_resources(
            &c,
            "alice@localhost"
        ) == Some(0))
        .await,
        "alice stayed in the directory"
    );
    // Bob's own session is untouched.
    sync(&mut b).await;
    assert!(
        wait_until(Duration::from_secs(5), || directory_resources(
            &c,
            "bob@localhost"
        ) == Some(1))
        .await,
        "bob left the directory: {:?}",
        directory_resources(&c, "bob@localhost")
    );
}

#[tokio::test]
async fn session_node_crash_users_log_in_again_and_nothing_acknowledged_is_lost() {
    let mut c = cluster_with(&["alice", "bob"], ClusterOpts::default());
    let (mut a, mut b) = both_online(&c).await;
    subscribe_both(&mut a, "alice@localhost", &mut b, "bob@localhost").await;
    assert_eq!(c.owner_index("alice"), 0);

    // Alice's session node dies. A message the server accepts meanwhile is not lost.
    c.sessions[0].process.kill();
    b.send(&chat("alice@localhost", "while you were away"))
        .await;
    sync(&mut b).await;
    // Bob hears that alice is gone (the janitor's unavailable presence).
    b.recv_matching(|e| {
        e.name() == "presence"
            && e.get_attr("type") == Some("unavailable")
            && e.get_attr("from") == Some("alice@localhost/a")
    })
    .await;
    // Alice's stream ends (the edge gave up on the node), and she logs in again: her account
    // now lives on the surviving node.
    assert_eq!(
        a.expect_stream_end().await,
        Some(StreamErrorCondition::SystemShutdown)
    );
    let ttl = Duration::from_millis(c.opts.ttl_ms * 2 + c.opts.heartbeat_ms * 2);
    tokio::time::sleep(ttl).await;
    let mut a2 = c.login_at(0, "alice", "alice-pw", "a").await;
    a2.go_online().await;
    let m = next_message(&mut a2).await;
    assert_eq!(body(&m).as_deref(), Some("while you were away"), "{m}");
    assert!(m.get_child("delay", ns::DELAY).is_some(), "{m}");
    b.send(&chat("alice@localhost/a", "hello again")).await;
    assert_eq!(
        body(&next_message(&mut a2).await).as_deref(),
        Some("hello again")
    );
    a2.send(&chat("bob@localhost/b", "hi")).await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("hi"));
}

#[tokio::test]
async fn redis_restart_rebuilds_the_directory_without_restarting_nodes() {
    let mut c = cluster_with(&["alice", "bob"], ClusterOpts::default());
    let (mut a, mut b) = both_online(&c).await;
    assert!(
        wait_until(Duration::from_secs(10), || {
            directory_resources(&c, "alice@localhost") == Some(1)
                && directory_resources(&c, "bob@localhost") == Some(1)
        })
        .await
    );
    c.redis.restart();
    assert_eq!(directory_resources(&c, "alice@localhost"), Some(0));
    assert!(
        wait_until(Duration::from_secs(15), || {
            directory_resources(&c, "alice@localhost") == Some(1)
                && directory_resources(&c, "bob@localhost") == Some(1)
        })
        .await,
        "the directory was not rebuilt\n{}",
        c.logs()
    );
    // Nobody was disconnected, and messages still cross nodes.
    a.send(&chat("bob@localhost/b", "after the restart")).await;
    assert_eq!(
        body(&next_message(&mut b).await).as_deref(),
        Some("after the restart")
    );
    b.send(&chat("alice@localhost/a", "still here")).await;
    assert_eq!(
        body(&next_message(&mut a).await).as_deref(),
        Some("still here")
    );
}

#[tokio::test]
async fn direct_session_to_session_routing_without_a_router() {
    let c = cluster_with(
        &["alice", "bob"],
        ClusterOpts {
            router: false,
            peer_routing: "direct",
            ..ClusterOpts::default()
        },
    );
    let mut a = c.login("alice", "alice-pw", "a").await;
    let mut b = c.login("bob", "bob-pw", "b").await;
    a.send(&chat("bob@localhost/b", "direct")).await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("direct"));
    b.send(&chat("alice@localhost/a", "reply")).await;
    assert_eq!(body(&next_message(&mut a).await).as_deref(), Some("reply"));
}

#[tokio::test]
async fn edge_drain_sends_clients_to_the_other_host() {
    let mut c = cluster_with(
        &["alice"],
        ClusterOpts {
            extra_toml: "see_other_host = \"xmpp.example.net:5222\"".into(),
            ..ClusterOpts::default()
        },
    );
    let mut a = c.login_at(0, "alice", "alice-pw", "a").await;
    sync(&mut a).await;
    let status = c.edges[0].process.stop();
    assert_eq!(
        a.expect_stream_end().await,
        Some(StreamErrorCondition::SeeOtherHost)
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The other edge still serves.
    let mut a2 = c.login_at(1, "alice", "alice-pw", "a").await;
    sync(&mut a2).await;
}

#[tokio::test]
async fn a_joining_session_node_takes_its_accounts_and_leaves_the_others_alone() {
    let mut c = cluster_with(&["alice", "bob"], ClusterOpts::default());
    // Bob's node leaves (SIGTERM: it leaves the membership at once; others apply the removal
    // after the grace period).
    let bob_node = c.sessions[1].id.clone();
    assert!(c.sessions[1].process.stop().is_some_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(
        c.opts.ttl_ms * 2 + c.opts.heartbeat_ms * 3,
    ))
    .await;
    let (mut a, mut b) = both_online(&c).await;
    a.send(&chat("bob@localhost/b", "one node")).await;
    assert_eq!(
        body(&next_message(&mut b).await).as_deref(),
        Some("one node")
    );

    // It comes back: Bob's account moves to it, so his stream ends and he logs in again;
    // Alice's account did not move and her stream is untouched.
    c.sessions[1] = c.spawn(&bob_node, "session");
    assert_eq!(
        b.expect_stream_end().await,
        Some(StreamErrorCondition::SystemShutdown)
    );
    sync(&mut a).await;
    let mut b2 = c.login_at(1, "bob", "bob-pw", "b").await;
    b2.go_online().await;
    a.send(&chat("bob@localhost/b", "two nodes")).await;
    assert_eq!(
        body(&next_message(&mut b2).await).as_deref(),
        Some("two nodes")
    );
    b2.send(&chat("alice@localhost/a", "back")).await;
    assert_eq!(body(&next_message(&mut a).await).as_deref(), Some("back"));
}
