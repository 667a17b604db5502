//! XEP-0198 stream management in the session service: counting, acknowledgements, detach,
//! resumption, expiry to offline storage and the queue cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use session::{
    ErrorCode, NS_SM, SessionConfig, SessionError, SessionService, SmResumed, ToClient,
    resume_id_owner,
};
use tokio::sync::mpsc;
use xmpp::{Element, StreamErrorCondition, ns};

fn body(st: &Element) -> Option<String> {
    st.get_child("body", ns::CLIENT).map(Element::text)
}

fn bodies(items: &[Element]) -> Vec<String> {
    items.iter().filter_map(body).collect()
}

/// Enables stream management and checks the `<enabled/>` the client gets; returns the id.
async fn enable(c: &mut Client, resume: bool) -> Option<String> {
    let en = c.svc.enable_sm(&c.jid, c.token, resume).await.unwrap();
    let items = c.drain();
    let [ToClient::Stanza(marker)] = items.as_slice() else {
        panic!("expected only <enabled/>, got {items:?}");
    };
    assert!(marker.is("enabled", NS_SM), "{marker}");
    assert_eq!(marker.get_attr("id"), en.id.as_deref());
    if let Some(id) = &en.id {
        assert_eq!(marker.get_attr("resume"), Some("true"));
        assert_eq!(
            marker.get_attr("max"),
            Some(en.max_secs.to_string().as_str())
        );
        assert_eq!(resume_id_owner(id), Some(c.jid.bare()));
    }
    en.id
}

/// Resumes `id` as `bare` on a fresh recording sink.
async fn resume(
    env: &Env,
    bare: &str,
    id: &str,
    h: u32,
) -> Result<(SmResumed, Client), SessionError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let r = env
        .svc
        .sm_resume(&bare.parse().unwrap(), id, h, Arc::new(Recorder(tx)))
        .await?;
    let c = Client {
        svc: Arc::clone(&env.svc),
        jid: r.jid.clone(),
        token: r.token,
        rx,
    };
    Ok((r, c))
}

/// Waits (bounded) until `bare` holds `n` offline messages; the count is what is asserted.
async fn wait_offline(env: &Env, bare: &str, n: usize) -> usize {
    let mut count = 0;
    for _ in 0..400 {
        count = env.offline_count(bare).await;
        if count >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    count
}

#[tokio::test]
async fn enabled_is_delivered_in_order_and_enable_only_once() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let id = enable(&mut bob, true).await;
    assert!(id.is_some());
    let again = env
        .svc
        .enable_sm(&bob.jid, bob.token, true)
        .await
        .unwrap_err();
    assert_eq!(again.code(), ErrorCode::Unsupported);
    // Acknowledging before anything was sent is acknowledging too much.
    assert!(env.svc.sm_ack(&bob.jid, bob.token, 1).await.is_err());
    alice
        .send(msg("bob@localhost", Some("chat"), Some("one")))
        .await;
    assert_eq!(bodies(&bob.stanzas()), ["one"]);
    env.svc.sm_ack(&bob.jid, bob.token, 1).await.unwrap();
    // Not resumable when not asked for, nor with resumption switched off.
    let mut carol = env.online("carol@localhost/c", 0).await;
    assert_eq!(enable(&mut carol, false).await, None);
    let off = Env::with(SessionConfig {
        sm_resume_secs: 0,
        ..SessionConfig::default()
    });
    let mut dave = off.online("dave@localhost/d", 0).await;
    assert_eq!(enable(&mut dave, true).await, None);
    // A stale token cannot enable anything.
    let stale = env
        .svc
        .enable_sm(&bob.jid, session::SessionToken(u64::MAX), true)
        .await
        .unwrap_err();
    assert!(matches!(stale, SessionError::NoSession));
}

#[tokio::test]
async fn resume_resends_what_was_not_acknowledged_in_order() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let id = enable(&mut bob, true).await.unwrap();
    // Two stanzas from bob: the server's h.
    bob.send(pres(None, None)).await;
    bob.send(iq("get", None, Element::new("ping", ns::PING)))
        .await;
    let own = bob.stanzas().len() as u32; // presence echo and the pong
    for b in ["m1", "m2", "m3", "m4"] {
        alice
            .send(msg("bob@localhost", Some("chat"), Some(b)))
            .await;
    }
    assert_eq!(bodies(&bob.stanzas()), ["m1", "m2", "m3", "m4"]);
    // The client saw everything but acknowledged only through m2.
    env.svc.sm_ack(&bob.jid, bob.token, own + 2).await.unwrap();
    env.svc.detach(&bob.jid, bob.token).await;
    // Detached: still bound, deliveries are queued. The unacknowledged messages m3..m5 have
    // durable copies in offline storage (so a node's death cannot lose them); m1 and m2,
    // acknowledged, do not.
    alice
        .send(msg("bob@localhost", Some("chat"), Some("m5")))
        .await;
    bob.nothing();
    assert_eq!(env.offline_count("bob@localhost").await, 3);

    let (r, mut resumed) = resume(&env, "bob@localhost", &id, own + 2).await.unwrap();
    assert_eq!(r.jid, bob.jid);
    assert_ne!(r.token, bob.token);
    assert_eq!(r.server_h, 2);
    assert_eq!(bodies(&resumed.stanzas()), ["m3", "m4", "m5"]);
    // The old connection's token is dead; its late close changes nothing.
    let err = env
        .svc
        .stanza(&bob.jid, bob.token, pres(None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::NoSession));
    bob.close().await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("m6")))
        .await;
    assert_eq!(bodies(&resumed.stanzas()), ["m6"]);
    // Counting goes on from the resumed values: m3..m6 are unacknowledged.
    assert!(
        env.svc
            .sm_ack(&resumed.jid, resumed.token, own + 7)
            .await
            .is_err()
    );
    env.svc
        .sm_ack(&resumed.jid, resumed.token, own + 6)
        .await
        .unwrap();
    resumed.close().await;
    assert_eq!(env.offline_count("bob@localhost").await, 0);
}

#[tokio::test]
async fn resume_of_an_attached_session_closes_the_old_connection() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let id = enable(&mut bob, true).await.unwrap();
    alice
        .send(msg("bob@localhost", Some("chat"), Some("m1")))
        .await;
    assert_eq!(bodies(&bob.stanzas()), ["m1"]);
    let (_, mut resumed) = resume(&env, "bob@localhost", &id, 0).await.unwrap();
    assert_eq!(
        bob.drain(),
        vec![ToClient::Close(StreamErrorCondition::Conflict)]
    );
    assert_eq!(bodies(&resumed.stanzas()), ["m1"]);
}

#[tokio::test]
async fn resume_checks_the_account_the_id_and_h() {
    let env = Env::new();
    let mut bob = env.online("bob@localhost/b", 0).await;
    let _alice = env.online("alice@localhost/a", 0).await;
    let id = enable(&mut bob, true).await.unwrap();
    env.svc.detach(&bob.jid, bob.token).await;
    for (account, id, h) in [
        // Someone else's id, even a valid one.
        ("alice@localhost", id.as_str(), 0),
        ("bob@localhost", "garbage", 0),
        ("bob@localhost", "", 0),
        // A well-formed id of this account that was never issued.
        (
            "bob@localhost",
            "AAAAAAAAAAAAAAAAAAAAAGJvYkBsb2NhbGhvc3Q",
            0,
        ),
        // More than the server ever sent.
        ("bob@localhost", id.as_str(), 1),
    ] {
        let err = resume(&env, account, id, h).await.err().unwrap();
        assert!(matches!(err, SessionError::ResumeFailed(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::NotFound);
    }
    // None of that harmed the session.
    resume(&env, "bob@localhost", &id, 0).await.unwrap();
}

#[tokio::test]
async fn an_expired_session_ends_and_its_messages_go_offline() {
    let env = Env::with(SessionConfig {
        sm_resume_secs: 1,
        ..SessionConfig::default()
    });
    let mut alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    befriend(&mut alice, &mut bob).await;
    let id = enable(&mut bob, true).await.unwrap();
    alice
        .send(msg("bob@localhost/b", Some("chat"), Some("m1")))
        .await;
    alice
        .send(msg("bob@localhost", Some("headline"), Some("news")))
        .await;
    bob.stanzas();
    env.svc.detach(&bob.jid, bob.token).await;
    alice
        .send(msg("bob@localhost", Some("normal"), Some("m2")))
        .await;
    alice.send(msg("bob@localhost", Some("chat"), None)).await;

    // The queue is released when the session expires.
    for _ in 0..400 {
        if env.svc.sm_unacked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(env.svc.sm_unacked(), 0);
    assert_eq!(env.offline_count("bob@localhost").await, 2);
    // Closed as by `close`: contacts learn bob left, and the id is dead.
    let gone = alice.one();
    assert!(is_type(&gone, "presence", Some("unavailable")), "{gone}");
    assert_eq!(gone.get_attr("from"), Some("bob@localhost/b"));
    assert!(resume(&env, "bob@localhost", &id, 0).await.is_err());

    let mut again = env.login("bob@localhost/b").await;
    again.send(available(0)).await;
    let got: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&got), ["m1", "m2"]);
    assert_eq!(got[0].get_attr("from"), Some("alice@localhost/a"));
    assert_eq!(got[0].get_attr("to"), Some("bob@localhost/b"));
    assert_eq!(got[1].get_attr("to"), Some("bob@localhost"));
    for m in &got {
        assert_eq!(m.children().filter(|c| c.is("delay", ns::DELAY)).count(), 1);
    }
}

#[tokio::test]
async fn detached_sessions_keep_their_presence() {
    let env = Env::new();
    let mut alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    befriend(&mut alice, &mut bob).await;
    enable(&mut bob, true).await.unwrap();
    env.svc.detach(&bob.jid, bob.token).await;
    alice.nothing();
    // A probe still finds bob available.
    alice.send(pres(None, Some("unavailable"))).await;
    alice.send(available(0)).await;
    let seen = alice.stanzas();
    assert!(
        seen.iter().any(|p| p.name() == "presence"
            && p.get_attr("from") == Some("bob@localhost/b")
            && p.get_attr("type").is_none()),
        "{seen:#?}"
    );
    // What a detached session holds has its durable copy at once, and shutdown does not
    // store it a second time.
    alice
        .send(msg("bob@localhost", Some("chat"), Some("late")))
        .await;
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    env.svc.close_detached().await;
    assert_eq!(env.offline_count("bob@localhost").await, 1);
}

#[tokio::test]
async fn closing_a_stream_managed_session_stores_unacknowledged_messages() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    assert_eq!(enable(&mut bob, false).await, None);
    for b in ["m1", "m2", "m3"] {
        alice
            .send(msg("bob@localhost", Some("chat"), Some(b)))
            .await;
    }
    assert_eq!(bodies(&bob.stanzas()), ["m1", "m2", "m3"]);
    env.svc.sm_ack(&bob.jid, bob.token, 1).await.unwrap();
    // Not resumable: a lost connection is a close.
    env.svc.detach(&bob.jid, bob.token).await;
    assert_eq!(env.offline_count("bob@localhost").await, 2);
    assert_eq!(env.svc.live_users(), 1);

    let mut again = env.login("bob@localhost/b").await;
    again.send(available(0)).await;
    let got: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&got), ["m2", "m3"]);
}

#[tokio::test]
async fn offline_messages_stored_again_keep_one_delay_and_their_stamp() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    env.account("bob@localhost").await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("while away")))
        .await;
    let mut bob = env.login("bob@localhost/b").await;
    enable(&mut bob, false).await;
    bob.send(available(0)).await;
    let first: Vec<Element> = bob
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&first), ["while away"]);
    let stamp = |m: &Element| {
        m.get_child("delay", ns::DELAY)
            .and_then(|d| d.get_attr("stamp"))
            .map(str::to_owned)
    };
    // Never acknowledged: stored again on close.
    bob.close().await;
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    let mut again = env.login("bob@localhost/b").await;
    again.send(available(0)).await;
    let second: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&second), ["while away"]);
    assert_eq!(
        second[0]
            .children()
            .filter(|c| c.is("delay", ns::DELAY))
            .count(),
        1
    );
    assert_eq!(stamp(&second[0]), stamp(&first[0]));
}

#[tokio::test]
async fn binding_the_resource_again_stores_the_detached_sessions_messages() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let id = enable(&mut bob, true).await.unwrap();
    alice
        .send(msg("bob@localhost", Some("chat"), Some("m1")))
        .await;
    env.svc.detach(&bob.jid, bob.token).await;
    let _fresh = env.login("bob@localhost/b").await;
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    assert!(resume(&env, "bob@localhost", &id, 0).await.is_err());
}

#[tokio::test]
async fn over_the_cap_the_session_closes_and_nothing_is_lost() {
    let env = Env::with(SessionConfig {
        sm_max_unacked: 3,
        ..SessionConfig::default()
    });
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let id = enable(&mut bob, true).await.unwrap();
    for b in ["m1", "m2", "m3", "m4"] {
        alice
            .send(msg("bob@localhost", Some("chat"), Some(b)))
            .await;
    }
    let items = bob.drain();
    assert_eq!(
        items.last(),
        Some(&ToClient::Close(StreamErrorCondition::PolicyViolation))
    );
    let written: Vec<Element> = items
        .iter()
        .filter_map(|i| match i {
            ToClient::Stanza(e) => Some(e.clone()),
            ToClient::Close(_) => None,
        })
        .collect();
    assert_eq!(bodies(&written), ["m1", "m2", "m3"]);
    assert_eq!(wait_offline(&env, "bob@localhost", 4).await, 4);
    assert!(resume(&env, "bob@localhost", &id, 0).await.is_err());
    let mut again = env.login("bob@localhost/b").await;
    again.send(available(0)).await;
    let got: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&got), ["m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn a_second_bind_is_refused_by_the_session() {
    let env = Env::new();
    let mut bob = env.online("bob@localhost/b", 0).await;
    let bind =
        Element::new("bind", ns::BIND).child(Element::new("resource", ns::BIND).text_node("other"));
    let r = bob.iq(iq("set", None, bind)).await;
    assert_eq!(condition(&r), Some(xmpp::StanzaErrorCondition::NotAllowed));
}

/// Stores `n` chat messages for `to` while it is offline, each with a body of `size` bytes.
async fn fill_offline(env: &Env, to: &str, n: usize, size: usize) {
    env.account(to).await;
    let alice = env.online("alice@localhost/a", 0).await;
    for i in 0..n {
        let text = format!("{i:06}{}", "x".repeat(size.saturating_sub(6)));
        alice.send(msg(to, Some("chat"), Some(&text))).await;
    }
    assert_eq!(env.offline_count(to).await, n);
}

/// Logs `full` in with stream management enabled BEFORE its initial presence (as
/// Conversations and Monal do), then becomes available.
async fn sm_login_before_presence(env: &Env, full: &str) -> Client {
    let mut c = env.login(full).await;
    enable(&mut c, true).await;
    c.send(available(0)).await;
    c
}

/// Reads what the client got; panics on a stream close. Returns the message bodies and how
/// many stanzas there were in all (what the client's `h` counts).
fn take(c: &mut Client) -> (Vec<String>, u32) {
    let mut got = Vec::new();
    let mut n = 0u32;
    for item in c.drain() {
        match item {
            ToClient::Stanza(s) => {
                n += 1;
                if let Some(b) = body(&s) {
                    got.push(b);
                }
            }
            ToClient::Close(cond) => panic!("the session was closed with {cond:?}"),
        }
    }
    (got, n)
}

#[tokio::test]
async fn a_thousand_offline_messages_reach_a_client_that_enabled_sm_before_presence() {
    // The lock-out of issue 10: 1,000 small messages waiting, SM on before presence.
    let env = Env::new();
    fill_offline(&env, "bob@localhost", 1000, 60).await;
    let mut bob = sm_login_before_presence(&env, "bob@localhost/b").await;
    let (mut got, mut h) = take(&mut bob);
    // Paced: before any acknowledgement at most half the cap went out.
    assert!(
        got.len() <= 500 && !got.is_empty(),
        "{} before the first ack",
        got.len()
    );
    let mut rounds = 0;
    while got.len() < 1000 {
        rounds += 1;
        assert!(rounds < 100, "stalled at {} messages", got.len());
        env.svc.sm_ack(&bob.jid, bob.token, h).await.unwrap();
        let (more, n) = take(&mut bob);
        assert!(!more.is_empty(), "nothing after acking {h}");
        got.extend(more);
        h += n;
    }
    // All of them, once each, in order.
    let expected: Vec<String> = (0..1000).map(|i| format!("{i:06}")).collect();
    let prefixes: Vec<String> = got.iter().map(|b| b[..6].to_owned()).collect();
    assert_eq!(prefixes, expected);
    env.svc.sm_ack(&bob.jid, bob.token, h).await.unwrap();
    assert_eq!(env.offline_count("bob@localhost").await, 0);
    // Still connected and usable.
    let alice = env.online("alice@localhost/a2", 0).await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("live")))
        .await;
    assert_eq!(take(&mut bob).0, ["live"]);
}

#[tokio::test]
async fn three_large_offline_messages_go_one_ack_at_a_time() {
    let env = Env::new();
    fill_offline(&env, "bob@localhost", 3, 200 * 1024).await;
    let mut bob = sm_login_before_presence(&env, "bob@localhost/b").await;
    let mut got = Vec::new();
    let mut h = 0;
    for _ in 0..3 {
        let (more, n) = take(&mut bob);
        // Each one alone fills the room of half the 512 KiB cap.
        assert_eq!(more.len(), 1, "{} at once", more.len());
        got.extend(more);
        h += n;
        env.svc.sm_ack(&bob.jid, bob.token, h).await.unwrap();
    }
    assert_eq!(got.len(), 3);
    assert_eq!(env.offline_count("bob@localhost").await, 0);
}

#[tokio::test]
async fn a_client_that_never_acks_holds_half_the_cap_and_loses_nothing() {
    let env = Env::new();
    fill_offline(&env, "bob@localhost", 1000, 60).await;
    let mut bob = sm_login_before_presence(&env, "bob@localhost/b").await;
    let (got, _) = take(&mut bob);
    assert!(got.len() <= 500, "{}", got.len());
    // Nothing more comes without an acknowledgement, and the session is not closed.
    assert!(take(&mut bob).0.is_empty());
    assert!(env.svc.sm_unacked() <= 500);
    // Delivered but unacknowledged offline messages are still stored, once: closing the
    // session does not store them a second time.
    assert_eq!(env.offline_count("bob@localhost").await, 1000);
    bob.close().await;
    assert_eq!(env.offline_count("bob@localhost").await, 1000);
    // And the next login gets them all.
    let mut again = env.login("bob@localhost/b").await;
    again.send(available(0)).await;
    let got: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(got.len(), 1000);
    assert_eq!(env.offline_count("bob@localhost").await, 0);
}

#[tokio::test]
async fn a_dead_node_loses_no_message_its_sessions_held_unacknowledged() {
    // Node 1 owns bob; bob has stream management, one session attached and one detached
    // waiting for resumption. Node 1 dies (dropped without closing anything); node 2 over
    // the same storage (as the next owner in a cluster) gives bob every unacknowledged
    // message at his next login, and none he acknowledged.
    let storage = storage::sqlite::open_in_memory().unwrap();
    let node1 = Env::with_storage(SessionConfig::default(), storage.clone());
    let alice = node1.online("alice@localhost/a", 0).await;
    let mut phone = node1.online("bob@localhost/phone", 0).await;
    let mut laptop = node1.online("bob@localhost/laptop", 0).await;
    phone.drain();
    enable(&mut phone, true).await.unwrap();
    enable(&mut laptop, true).await.unwrap();
    for b in ["m1", "m2", "m3"] {
        alice
            .send(msg("bob@localhost", Some("chat"), Some(b)))
            .await;
    }
    assert_eq!(bodies(&phone.stanzas()), ["m1", "m2", "m3"]);
    assert_eq!(bodies(&laptop.stanzas()), ["m1", "m2", "m3"]);
    // The phone acknowledges m1; the laptop goes away and waits for resumption.
    node1.svc.sm_ack(&phone.jid, phone.token, 1).await.unwrap();
    node1.svc.detach(&laptop.jid, laptop.token).await;
    alice
        .send(msg("bob@localhost/laptop", Some("chat"), Some("m4")))
        .await;
    drop((alice, phone, laptop, node1));

    let node2 = Env::with_storage(SessionConfig::default(), storage);
    let mut again = node2.login("bob@localhost/tablet").await;
    again.send(available(0)).await;
    let got: Vec<Element> = again
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(bodies(&got), ["m2", "m3", "m4"]);
    assert_eq!(node2.offline_count("bob@localhost").await, 0);
}

#[tokio::test]
async fn another_resource_logging_in_does_not_take_deliveries_in_flight() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut phone = env.login("bob@localhost/phone").await;
    enable(&mut phone, true).await.unwrap();
    phone.send(available(5)).await;
    phone.drain();
    alice
        .send(msg("bob@localhost", Some("chat"), Some("m1")))
        .await;
    assert_eq!(bodies(&phone.stanzas()), ["m1"]);
    // A second resource (lower priority, no stream management) becomes available: the
    // durable copy of m1 is the phone's, not an offline message for it.
    let mut desk = env.online("bob@localhost/desk", 0).await;
    assert!(bodies(&desk.stanzas()).is_empty());
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    env.svc.sm_ack(&phone.jid, phone.token, 2).await.unwrap();
    assert_eq!(env.offline_count("bob@localhost").await, 0);
}
