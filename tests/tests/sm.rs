//! XEP-0198 stream management against the real binary: acknowledgements, resumption after
//! an abrupt connection loss, and what happens to a session that is never resumed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tests::Server;
use tests::client::{Client, Incoming, NS_SM, body, chat};
use xmpp::scram::ScramHash;
use xmpp::{Element, StreamErrorCondition, ns};

fn server_with(users: &[&str], toml: &str) -> Server {
    let s = Server::start_with(toml);
    for u in users {
        s.add_user(u, &format!("{u}-pw"));
    }
    s
}

fn ping_server() -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("to", "localhost")
        .child(Element::new("ping", ns::PING))
}

/// A round trip through the server, so everything sent before has been routed.
async fn sync(c: &mut Client) {
    let pong = c.iq(ping_server()).await;
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
}

async fn next_message(c: &mut Client) -> Element {
    c.recv_matching(|e| e.name() == "message").await
}

/// Waits until the server logged `needle` (bounded); true if it did.
async fn wait_for_log(s: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if s.log().iter().any(|l| l.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn enable_acks_and_requests_round_trip() {
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    let mut b = s.login("bob", "bob-pw", "b").await;
    let features = b.features.clone().unwrap();
    assert!(features.get_child("sm", NS_SM).is_some(), "{features}");

    let enabled = b.sm_enable(false).await;
    assert!(enabled.is("enabled", NS_SM), "{enabled}");
    assert_eq!(enabled.get_attr("id"), None);
    assert_eq!(enabled.get_attr("resume"), None);
    b.go_online().await;

    for n in 1..=3 {
        a.send(&chat("bob@localhost", &format!("m{n}"))).await;
    }
    for n in 1..=3 {
        assert_eq!(
            body(&next_message(&mut b).await).as_deref(),
            Some(format!("m{n}").as_str())
        );
    }
    // The server asks for acknowledgements of what it sent.
    let r = b.recv_matching(|e| e.is("r", NS_SM)).await;
    assert_eq!(r.attrs().count(), 0, "{r}");
    b.sm_ack().await;

    // Our own request: bob sent the roster get and his presence since <enable/>.
    let answer = b.sm_request().await;
    assert_eq!(answer.get_attr("h"), Some("2"), "{answer}");
    sync(&mut b).await;
    let answer = b.sm_request().await;
    assert_eq!(answer.get_attr("h"), Some("3"), "{answer}");

    // Acknowledging more than was ever sent ends the stream.
    let too_many = b.sm_h().unwrap() + 1000;
    b.sm_ack_h(too_many).await;
    assert_eq!(
        b.expect_stream_end().await,
        Some(StreamErrorCondition::UndefinedCondition)
    );
}

#[tokio::test]
async fn resume_after_an_abrupt_loss_delivers_exactly_the_missed_messages() {
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    a.go_online().await;
    let mut b = s.login("bob", "bob-pw", "phone").await;
    let enabled = b.sm_enable(true).await;
    assert!(enabled.is("enabled", NS_SM), "{enabled}");
    assert_eq!(enabled.get_attr("resume"), Some("true"));
    assert_eq!(enabled.get_attr("max"), Some("300"));
    let id = enabled.get_attr("id").unwrap().to_owned();
    b.go_online().await;

    a.send(&chat("bob@localhost", "m1")).await;
    a.send(&chat("bob@localhost", "m2")).await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("m1"));
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("m2"));
    let h = b.sm_h().unwrap();
    let jid = b.jid.clone();
    b.kill();

    a.send(&chat("bob@localhost", "m3")).await;
    a.send(&chat("bob@localhost", "m4")).await;
    sync(&mut a).await;

    let mut b2 = s.connect().await;
    b2.auth_scram("bob", "bob-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
    let resumed = b2.sm_resume(&id, h, jid.clone()).await;
    assert!(resumed.is("resumed", NS_SM), "{resumed}");
    assert_eq!(resumed.get_attr("previd"), Some(id.as_str()));
    // The server had received bob's roster get and presence.
    assert_eq!(resumed.get_attr("h"), Some("2"));
    let m3 = next_message(&mut b2).await;
    assert_eq!(body(&m3).as_deref(), Some("m3"));
    assert_eq!(m3.get_attr("from"), Some("alice@localhost/a"));
    assert_eq!(body(&next_message(&mut b2).await).as_deref(), Some("m4"));
    b2.expect_none(Duration::from_millis(500), |e| e.name() == "message")
        .await;

    // The resumed session is the same full JID, in both directions.
    b2.send(&chat("alice@localhost", "back")).await;
    let back = next_message(&mut a).await;
    assert_eq!(back.get_attr("from"), Some("bob@localhost/phone"));
    assert_eq!(body(&back).as_deref(), Some("back"));
    a.send(&chat("bob@localhost", "m5")).await;
    assert_eq!(body(&next_message(&mut b2).await).as_deref(), Some("m5"));
    // Counting continues: everything so far can be acknowledged.
    b2.sm_ack().await;
    sync(&mut b2).await;
    b2.close().await;
}

#[tokio::test]
async fn resume_with_a_wrong_id_fails_and_the_stream_can_still_bind() {
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    let enabled = a.sm_enable(true).await;
    let alice_id = enabled.get_attr("id").unwrap().to_owned();

    let mut b = s.connect().await;
    b.auth_scram("bob", "bob-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
    // An id nobody issued, then alice's real one: neither is bob's.
    for id in ["bm90IGFuIGlk", alice_id.as_str()] {
        let failed = b.sm_resume(id, 0, None).await;
        assert!(failed.is("failed", NS_SM), "{failed}");
        assert!(
            failed
                .get_child("item-not-found", ns::STANZAS_ERR)
                .is_some(),
            "{failed}"
        );
    }
    let jid = b.bind(Some("b")).await;
    assert_eq!(jid.as_str(), "bob@localhost/b");
    sync(&mut b).await;
    // Alice's session was not disturbed.
    sync(&mut a).await;
}

#[tokio::test]
async fn a_session_never_resumed_leaves_its_messages_offline() {
    let s = server_with(&["alice", "bob"], "[session]\nsm_resume_secs = 1\n");
    let mut a = s.login("alice", "alice-pw", "a").await;
    let mut b = s.login("bob", "bob-pw", "b").await;
    let enabled = b.sm_enable(true).await;
    assert_eq!(enabled.get_attr("max"), Some("1"));
    b.go_online().await;
    a.send(&chat("bob@localhost", "seen, never acknowledged"))
        .await;
    assert!(body(&next_message(&mut b).await).is_some());
    b.kill();
    a.send(&chat("bob@localhost", "sent while detached")).await;
    sync(&mut a).await;
    assert!(
        wait_for_log(&s, "detached session expired").await,
        "no expiry logged"
    );

    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;
    let m1 = next_message(&mut b).await;
    let m2 = next_message(&mut b).await;
    assert_eq!(body(&m1).as_deref(), Some("seen, never acknowledged"));
    assert_eq!(body(&m2).as_deref(), Some("sent while detached"));
    for m in [&m1, &m2] {
        assert_eq!(m.get_attr("from"), Some("alice@localhost/a"));
        assert!(m.get_child("delay", ns::DELAY).is_some(), "{m}");
    }
}

#[tokio::test]
async fn a_clean_close_stores_unacknowledged_messages() {
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    let mut b = s.login("bob", "bob-pw", "b").await;
    b.sm_enable(false).await;
    b.go_online().await;
    a.send(&chat("bob@localhost", "unacknowledged")).await;
    assert!(body(&next_message(&mut b).await).is_some());
    b.close().await;
    sync(&mut a).await;

    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;
    let m = next_message(&mut b).await;
    assert_eq!(body(&m).as_deref(), Some("unacknowledged"));
    assert!(m.get_child("delay", ns::DELAY).is_some(), "{m}");
}

#[tokio::test]
async fn an_idle_managed_stream_is_probed_with_r_not_a_ping() {
    let s = server_with(&["bob"], "[limits]\nping_interval_secs = 1\n");
    let mut b = s.login("bob", "bob-pw", "b").await;
    b.sm_enable(true).await;
    // Nothing counted was sent, so the first thing after idling is the probe.
    match b.recv().await {
        Incoming::Stanza(r) => assert!(r.is("r", NS_SM), "expected <r/>, got {r}"),
        other => panic!("expected <r/>, got {other:?}"),
    }
    b.sm_ack().await;
    sync(&mut b).await;
    // The pong was counted on both sides.
    let answer = b.sm_request().await;
    assert_eq!(answer.get_attr("h"), Some("1"), "{answer}");
}

#[tokio::test]
async fn enable_before_bind_and_twice_fail() {
    let s = server_with(&["bob"], "");
    let mut b = s.connect().await;
    b.auth_scram("bob", "bob-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
    let early = b.sm_enable(false).await;
    assert!(early.is("failed", NS_SM), "{early}");
    assert!(
        early
            .get_child("unexpected-request", ns::STANZAS_ERR)
            .is_some()
    );
    b.bind(Some("b")).await;
    assert!(b.sm_enable(false).await.is("enabled", NS_SM));
    let twice = b.sm_enable(false).await;
    assert!(twice.is("failed", NS_SM), "{twice}");
    sync(&mut b).await;
}

/// Logs `bob` in with stream management enabled before his initial presence (as
/// Conversations and Monal do), answers every `<r/>` and acknowledges, and collects message
/// bodies until `n` arrived. Panics if the stream ends.
async fn sm_login_and_collect(s: &Server, n: usize) -> (Client, Vec<String>) {
    let mut b = s.login("bob", "bob-pw", "b").await;
    let enabled = b.sm_enable(true).await;
    assert!(enabled.is("enabled", NS_SM), "{enabled}");
    b.send(&Element::new("presence", ns::CLIENT)).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            got.len()
        );
        match b.recv().await {
            Incoming::Stanza(el) if el.is("r", NS_SM) => b.sm_ack().await,
            Incoming::Stanza(el) => {
                if el.name() == "message"
                    && let Some(text) = body(&el)
                {
                    got.push(text);
                }
            }
            other => panic!("the stream ended after {} messages: {other:?}", got.len()),
        }
    }
    (b, got)
}

#[tokio::test]
async fn a_thousand_offline_messages_reach_a_client_that_enables_sm_before_presence() {
    // Issue 10: this client was closed with <policy-violation/> after 855 messages, and every
    // later login the same way.
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    for i in 0..1000 {
        a.send(&chat(
            "bob@localhost",
            &format!("{i:04} {}", "x".repeat(55)),
        ))
        .await;
    }
    sync(&mut a).await;
    let (mut b, got) = sm_login_and_collect(&s, 1000).await;
    let expected: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
    let firsts: Vec<String> = got.iter().map(|t| t[..4].to_owned()).collect();
    assert_eq!(firsts, expected);
    // Still connected, and nothing more comes twice.
    sync(&mut b).await;
    b.expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn three_large_offline_messages_reach_a_stream_managed_client() {
    let s = server_with(&["alice", "bob"], "");
    let mut a = s.login("alice", "alice-pw", "a").await;
    for i in 0..3 {
        a.send(&chat(
            "bob@localhost",
            &format!("{i} {}", "y".repeat(200 * 1024)),
        ))
        .await;
    }
    sync(&mut a).await;
    let (mut b, got) = sm_login_and_collect(&s, 3).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|t| t.len() > 200 * 1024));
    sync(&mut b).await;
}
