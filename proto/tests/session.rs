//! `GrpcSessionClient` against `SessionGrpcServer` over a real loopback gRPC connection, with
//! the real session service behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use session::{SessionError, SessionService, ToClient};
use tokio::sync::mpsc;
use xmpp::{Element, FullJid, StreamErrorCondition, ns};

#[tokio::test]
async fn rfc6121_basics_across_the_wire() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    node.account("bob@localhost").await;
    node.friends("alice@localhost", "bob@localhost").await;
    let edge_a = node.edge("edge-a").await;
    let edge_b = node.edge("edge-b").await;
    let mut alice = login(&edge_a, "alice@localhost/phone").await;
    let mut bob = login(&edge_b, "bob@localhost/desk").await;

    // An IQ to the domain is answered by the session node, through the remote sink.
    alice.send(ping("p1")).await;
    let pong = alice.next_stanza().await;
    assert_eq!(pong.name(), "iq");
    assert_eq!(pong.ns(), ns::CLIENT);
    assert_eq!(pong.get_attr("type"), Some("result"));
    assert_eq!(pong.get_attr("id"), Some("p1"));
    assert_eq!(pong.get_attr("from"), Some("localhost"));
    assert_eq!(pong.get_attr("to"), Some("alice@localhost/phone"));

    // Presence: Alice comes online first, then Bob; Alice gets Bob's broadcast and Bob gets
    // Alice's presence (the answer to his probe).
    alice.send(available()).await;
    alice.sync().await;
    bob.send(available()).await;
    let seen_by_alice = alice
        .until(|e| e.name() == "presence" && e.get_attr("from") == Some("bob@localhost/desk"))
        .await;
    assert_eq!(seen_by_alice.get_attr("type"), None);
    let seen_by_bob = bob
        .until(|e| e.name() == "presence" && e.get_attr("from") == Some("alice@localhost/phone"))
        .await;
    assert_eq!(seen_by_bob.get_attr("type"), None);

    // A chat message to the bare JID reaches Bob's available resource on the other edge,
    // with its `from` and body intact (escaping included).
    alice.send(chat("bob@localhost", "hi <bob> & 'co'")).await;
    let m = bob.until(|e| e.name() == "message").await;
    assert_eq!(m.get_attr("from"), Some("alice@localhost/phone"));
    assert_eq!(body(&m).as_deref(), Some("hi <bob> & 'co'"));

    // Unavailable presence is broadcast too.
    bob.send(Element::new("presence", ns::CLIENT).attr("type", "unavailable"))
        .await;
    let gone = alice
        .until(|e| e.name() == "presence" && e.get_attr("from") == Some("bob@localhost/desk"))
        .await;
    assert_eq!(gone.get_attr("type"), Some("unavailable"));
    edge_b.close(&bob.jid, bob.token).await;
    assert_eq!(edge_b.connections(), 0);

    // Bob is offline now: a chat message goes to offline storage, and Bob gets it when he
    // comes back and sends initial presence.
    // Alice's stanzas are processed in order: once her ping is answered, the message is
    // stored.
    alice.send(chat("bob@localhost", "later")).await;
    alice.sync().await;
    let stored = node
        .storage
        .offline
        .count(&"bob@localhost".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let mut bob = login(&edge_b, "bob@localhost/desk").await;
    bob.send(available()).await;
    let m = bob.until(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("later"));
}

#[tokio::test]
async fn a_second_bind_of_the_same_resource_replaces_the_first() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    let edge_a = node.edge("edge-a").await;
    let edge_b = node.edge("edge-b").await;
    let mut old = login(&edge_a, "alice@localhost/r").await;
    let mut new = login(&edge_b, "alice@localhost/r").await;
    assert_eq!(
        old.next().await,
        ToClient::Close(StreamErrorCondition::Conflict)
    );
    // The replaced connection is forgotten on its edge: its token names nothing.
    assert_eq!(edge_a.connections(), 0);
    let err = edge_a.stanza(&old.jid, old.token, ping("x")).await.err();
    assert!(matches!(err, Some(SessionError::NoSession)), "{err:?}");
    // A late close from the old connection does not end the new session.
    edge_a.close(&old.jid, old.token).await;
    new.send(ping("still-here")).await;
    assert_eq!(new.next_stanza().await.get_attr("id"), Some("still-here"));
}

#[tokio::test]
async fn tokens_are_checked_against_the_jid() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    let edge = node.edge("edge").await;
    let alice = login(&edge, "alice@localhost/a").await;
    let other: FullJid = "mallory@localhost/a".parse().unwrap();
    let err = edge.stanza(&other, alice.token, ping("x")).await.err();
    assert!(matches!(err, Some(SessionError::NoSession)));
    // Stream management errors come back as the same error kind as in-process.
    let err = edge
        .sm_ack(&alice.jid, alice.token, 1)
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(err, Some(session::ErrorCode::Unsupported));
}

#[tokio::test]
async fn the_client_reattaches_after_the_server_restarts() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    node.account("bob@localhost").await;
    node.friends("alice@localhost", "bob@localhost").await;
    let edge_a = node.edge("edge-a").await;
    let edge_b = node.edge("edge-b").await;
    let mut alice = login(&edge_a, "alice@localhost/a").await;
    let mut bob = login(&edge_b, "bob@localhost/b").await;
    alice.send(available()).await;
    bob.send(available()).await;
    alice.sync().await;
    bob.sync().await;
    attached(&edge_a, 1).await;
    attached(&edge_b, 1).await;
    let (token_a, token_b) = (alice.token, bob.token);

    let node = node.restart().await;
    attached(&edge_a, 2).await;
    attached(&edge_b, 2).await;
    assert_eq!(edge_a.connections(), 1);
    assert_eq!(edge_b.connections(), 1);

    // The edge keeps its tokens; deliveries continue in both directions. Bob was made
    // available again by the replayed presence, so a bare-JID chat message reaches him
    // instead of offline storage.
    assert_eq!((alice.token, bob.token), (token_a, token_b));
    alice.send(chat("bob@localhost", "after the restart")).await;
    let m = bob
        .until(|e| e.name() == "message" && body(e).as_deref() == Some("after the restart"))
        .await;
    assert_eq!(m.get_attr("from"), Some("alice@localhost/a"));
    bob.send(chat("alice@localhost/a", "and back")).await;
    alice
        .until(|e| e.name() == "message" && body(e).as_deref() == Some("and back"))
        .await;
    assert_eq!(
        node.storage
            .offline
            .count(&"bob@localhost".parse().unwrap())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn giving_up_closes_every_connection_with_system_shutdown() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    let config = proto::ClientConfig {
        reconnect_attempts: 2,
        ..test_config()
    };
    let edge = node.edge_with("edge", config).await;
    let mut a1 = login(&edge, "alice@localhost/one").await;
    let mut a2 = login(&edge, "alice@localhost/two").await;
    attached(&edge, 1).await;
    node.stop().await;
    assert_eq!(
        a1.next().await,
        ToClient::Close(StreamErrorCondition::SystemShutdown)
    );
    assert_eq!(
        a2.next().await,
        ToClient::Close(StreamErrorCondition::SystemShutdown)
    );
    assert!(edge.is_dead());
    assert_eq!(edge.connections(), 0);
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = edge
        .open(
            "alice@localhost/three".parse().unwrap(),
            Arc::new(Recorder(tx)),
        )
        .await
        .err();
    assert!(matches!(err, Some(SessionError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn connect_fails_when_no_node_answers() {
    // A port that was free a moment ago.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = proto::ClientConfig {
        reconnect_attempts: 2,
        ..test_config()
    };
    let res =
        proto::GrpcSessionClient::connect_with(format!("http://{addr}"), "edge", config).await;
    assert!(matches!(res.err(), Some(proto::ProtoError::Unavailable(_))));
    let bad = proto::GrpcSessionClient::connect("not a uri", "edge").await;
    assert!(matches!(bad.err(), Some(proto::ProtoError::Endpoint(_))));
}

#[tokio::test]
async fn stream_management_enable_ack_and_resume_through_another_edge() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    node.account("bob@localhost").await;
    let edge_a = node.edge("edge-a").await;
    let edge_b = node.edge("edge-b").await;
    let mut alice = login(&edge_a, "alice@localhost/a").await;
    let mut bob = login(&edge_b, "bob@localhost/b").await;

    let enabled = edge_a
        .enable_sm(&alice.jid, alice.token, true)
        .await
        .unwrap();
    let id = enabled.id.clone().expect("a resumption id");
    assert!(enabled.max_secs > 0);
    let marker = alice.next_stanza().await;
    assert!(marker.is("enabled", "urn:xmpp:sm:3"), "{marker}");
    assert_eq!(marker.get_attr("id"), Some(id.as_str()));

    for n in 1..=3 {
        bob.send(chat("alice@localhost/a", &format!("m{n}"))).await;
        let m = alice.until(|e| e.name() == "message").await;
        assert_eq!(body(&m), Some(format!("m{n}")));
    }
    // Acknowledging more than was delivered is refused (the edge ends the stream).
    let err = edge_a.sm_ack(&alice.jid, alice.token, 4).await.err();
    assert!(
        matches!(err, Some(SessionError::Unsupported("h too large"))),
        "{err:?}"
    );
    edge_a.sm_ack(&alice.jid, alice.token, 1).await.unwrap();

    // Alice's connection is lost; the session waits, queueing.
    edge_a.detach(&alice.jid, alice.token).await;
    bob.send(chat("alice@localhost/a", "m4")).await;
    bob.sync().await;

    // She resumes through the other edge: everything after h=1 comes again, in order.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let resumed = edge_b
        .sm_resume(
            &"alice@localhost".parse().unwrap(),
            &id,
            1,
            Arc::new(Recorder(tx)),
        )
        .await
        .unwrap();
    assert_eq!(resumed.jid, alice.jid);
    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        match tokio::time::timeout(HANG, rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ToClient::Stanza(e) if e.name() == "message" => bodies.push(body(&e).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bodies, ["m2", "m3", "m4"]);
    // The resumed session is usable under its new local token.
    edge_b.sm_ack(&resumed.jid, resumed.token, 4).await.unwrap();
    let err = edge_b.sm_ack(&resumed.jid, resumed.token, 5).await.err();
    assert!(matches!(err, Some(SessionError::Unsupported(_))));
    // A wrong id is refused with the same error kind as in-process.
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = edge_b
        .sm_resume(
            &"alice@localhost".parse().unwrap(),
            "bogus",
            0,
            Arc::new(Recorder(tx)),
        )
        .await
        .err();
    assert!(
        matches!(err, Some(SessionError::ResumeFailed(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_resumable_session_is_resumed_on_reattach_without_duplicates() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    node.account("bob@localhost").await;
    let edge_a = node.edge("edge-a").await;
    let edge_b = node.edge("edge-b").await;
    let mut alice = login(&edge_a, "alice@localhost/a").await;
    let bob = login(&edge_b, "bob@localhost/b").await;
    edge_a
        .enable_sm(&alice.jid, alice.token, true)
        .await
        .unwrap();
    alice.until(|e| e.is("enabled", "urn:xmpp:sm:3")).await;
    for n in 1..=3 {
        bob.send(chat("alice@localhost/a", &format!("m{n}"))).await;
        alice.until(|e| e.name() == "message").await;
    }
    edge_a.sm_ack(&alice.jid, alice.token, 1).await.unwrap();
    attached(&edge_a, 1).await;
    attached(&edge_b, 1).await;

    let _node = node.restart().await;
    attached(&edge_a, 2).await;
    attached(&edge_b, 2).await;

    // m2 and m3 were delivered already: the node sends them again on resume, the client
    // skips them. The next message is the first thing Alice sees.
    bob.send(chat("alice@localhost/a", "m4")).await;
    let next = alice.next_stanza().await;
    assert_eq!(body(&next).as_deref(), Some("m4"), "{next}");
    // Counts stayed in step: acknowledging all four is accepted, five is not.
    edge_a.sm_ack(&alice.jid, alice.token, 4).await.unwrap();
    let err = edge_a.sm_ack(&alice.jid, alice.token, 5).await.err();
    assert!(matches!(
        err,
        Some(SessionError::Unsupported("h too large"))
    ));
    alice.send(ping("ok")).await;
    assert_eq!(alice.next_stanza().await.get_attr("id"), Some("ok"));
}

/// A sink with room for `n` items, like the edge's bounded queue.
struct Bounded(mpsc::Sender<ToClient>);

impl session::ClientSink for Bounded {
    fn send(&self, item: ToClient) -> Result<(), session::SinkError> {
        self.0.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => session::SinkError::Full,
            mpsc::error::TrySendError::Closed(_) => session::SinkError::Closed,
        })
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_detached_and_closed() {
    let node = Node::start().await;
    node.account("alice@localhost").await;
    node.account("bob@localhost").await;
    // Both on one edge: Bob's ping answer comes after Alice's deliveries on the same stream.
    let edge = node.edge("edge").await;
    let (tx, mut slow) = mpsc::channel(1);
    let alice: FullJid = "alice@localhost/a".parse().unwrap();
    let token = edge
        .open(alice.clone(), Arc::new(Bounded(tx)))
        .await
        .unwrap();
    let mut bob = login(&edge, "bob@localhost/b").await;
    bob.send(chat("alice@localhost/a", "m1")).await;
    bob.send(chat("alice@localhost/a", "m2")).await;
    bob.sync().await;

    // m1 filled the queue; m2 did not fit: the connection is being closed.
    let err = edge.stanza(&alice, token, ping("x")).await.err();
    assert!(matches!(err, Some(SessionError::Unavailable(_))), "{err:?}");
    let first = tokio::time::timeout(HANG, slow.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, ToClient::Stanza(ref e) if body(e).as_deref() == Some("m1")));
    let second = tokio::time::timeout(HANG, slow.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second,
        ToClient::Close(StreamErrorCondition::PolicyViolation)
    );
    // The session was detached on the node (without stream management: ended); Bob is the
    // only user left with live state.
    tokio::time::timeout(HANG, async {
        while node.svc.live_users() != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("alice's session never ended");
    assert_eq!(edge.connections(), 1);
}
