//! Rosters, subscriptions (RFC 6121 §3, Appendix A) and presence (RFC 6121 §4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use session::SessionService;
use storage::Subscription;
use xmpp::{Element, StanzaErrorCondition, ns};

fn ver_of(st: &Element) -> String {
    st.get_child("query", ns::ROSTER)
        .unwrap()
        .get_attr("ver")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn roster_set_get_remove_with_pushes_and_versions() {
    let env = Env::new();
    let mut r1 = env.login("alice@localhost/one").await;
    let mut r2 = env.login("alice@localhost/two").await;
    let mut r3 = env.login("alice@localhost/three").await;
    let first = r1.roster().await;
    assert!(is_type(&first, "iq", Some("result")));
    assert!(roster_items(&first).is_empty());
    let v0 = ver_of(&first);
    r2.roster().await;

    // Add: the requester gets the result then the push; every interested resource gets the
    // push; a resource that never asked for the roster gets nothing.
    r1.send(roster_set("bob@localhost", Some("Bob"), &["Friends"]))
        .await;
    let got = r1.stanzas();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(is_type(&got[0], "iq", Some("result")));
    assert_eq!(got[0].get_attr("id"), Some("q1"));
    assert_eq!(
        push_item(&got[1]),
        ("bob@localhost".into(), "none".into(), None, None)
    );
    let v1 = ver_of(&got[1]);
    assert_ne!(v1, v0);
    let pushed = r2.one();
    assert_eq!(push_item(&pushed).0, "bob@localhost");
    assert_eq!(pushed.get_attr("to"), Some("alice@localhost/two"));
    let item = pushed
        .get_child("query", ns::ROSTER)
        .unwrap()
        .get_child("item", ns::ROSTER)
        .unwrap();
    assert_eq!(item.get_attr("name"), Some("Bob"));
    assert_eq!(
        item.get_child("group", ns::ROSTER)
            .map(Element::text)
            .as_deref(),
        Some("Friends")
    );
    r3.nothing();

    // Versioning (RFC 6121 §2.6): current version -> empty result; old one -> full roster.
    let same = r1
        .iq(iq(
            "get",
            None,
            Element::new("query", ns::ROSTER).attr("ver", v1.as_str()),
        ))
        .await;
    assert!(is_type(&same, "iq", Some("result")));
    assert!(same.first_child().is_none(), "{same}");
    let full = r1
        .iq(iq(
            "get",
            None,
            Element::new("query", ns::ROSTER).attr("ver", v0.as_str()),
        ))
        .await;
    assert_eq!(
        roster_items(&full),
        [("bob@localhost".to_owned(), "none".to_owned())]
    );
    assert_eq!(ver_of(&full), v1);

    // Update keeps the item, bumps the version.
    r2.send(roster_set("bob@localhost", Some("Robert"), &[]))
        .await;
    let got = r2.stanzas();
    assert_eq!(got.len(), 2);
    let v2 = ver_of(&got[1]);
    assert_ne!(v2, v1);
    assert_eq!(push_item(&r1.one()).0, "bob@localhost");
    let stored = env.item("alice@localhost", "bob@localhost").await.unwrap();
    assert_eq!(stored.name.as_deref(), Some("Robert"));
    assert!(stored.groups.is_empty());

    // Remove: push with subscription="remove".
    r1.send(roster_remove("bob@localhost")).await;
    let got = r1.stanzas();
    assert_eq!(got.len(), 2);
    assert_eq!(push_item(&got[1]).1, "remove");
    assert_eq!(push_item(&r2.one()).1, "remove");
    assert!(env.item("alice@localhost", "bob@localhost").await.is_none());
    let again = r1.iq(roster_remove("bob@localhost")).await;
    assert_eq!(condition(&again), Some(StanzaErrorCondition::ItemNotFound));
    r3.nothing();
}

#[tokio::test]
async fn roster_set_errors() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/r").await;
    let two = iq(
        "set",
        None,
        Element::new("query", ns::ROSTER)
            .child(Element::new("item", ns::ROSTER).attr("jid", "b@localhost"))
            .child(Element::new("item", ns::ROSTER).attr("jid", "c@localhost")),
    );
    let cases = [
        (two, StanzaErrorCondition::BadRequest),
        (
            iq(
                "set",
                None,
                Element::new("query", ns::ROSTER).child(
                    Element::new("item", ns::ROSTER)
                        .attr("jid", "b@localhost")
                        .attr("subscription", "both"),
                ),
            ),
            StanzaErrorCondition::BadRequest,
        ),
        (
            roster_set("@localhost", None, &[]),
            StanzaErrorCondition::BadRequest,
        ),
        (
            roster_set("b@localhost/res", None, &[]),
            StanzaErrorCondition::BadRequest,
        ),
        (
            roster_set("b@localhost", None, &["x", "x"]),
            StanzaErrorCondition::BadRequest,
        ),
        (
            roster_set("b@localhost", None, &[""]),
            StanzaErrorCondition::NotAcceptable,
        ),
        (
            iq("set", None, Element::new("query", ns::ROSTER)),
            StanzaErrorCondition::BadRequest,
        ),
        (
            iq(
                "get",
                Some("bob@localhost"),
                Element::new("query", ns::ROSTER),
            ),
            StanzaErrorCondition::Forbidden,
        ),
        (
            iq(
                "set",
                Some("bob@localhost"),
                Element::new("query", ns::ROSTER)
                    .child(Element::new("item", ns::ROSTER).attr("jid", "c@localhost")),
            ),
            StanzaErrorCondition::Forbidden,
        ),
    ];
    env.account("bob@localhost").await;
    for (st, cond) in cases {
        let r = a.iq(st.clone()).await;
        assert_eq!(condition(&r), Some(cond), "for {st}");
        assert_eq!(r.get_attr("id"), Some("q1"));
    }
    let (ver, items) = env
        .storage
        .rosters
        .get_roster(&"alice@localhost".parse().unwrap())
        .await
        .unwrap();
    assert!(items.is_empty(), "nothing written: {items:?} at {ver}");
}

#[tokio::test]
async fn roster_to_own_bare_jid_works_like_no_to() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/r").await;
    let r = a
        .iq(iq(
            "get",
            Some("alice@localhost"),
            Element::new("query", ns::ROSTER),
        ))
        .await;
    assert!(is_type(&r, "iq", Some("result")));
    assert_eq!(r.get_attr("from"), Some("alice@localhost"));
    assert_eq!(r.get_attr("to"), Some("alice@localhost/r"));
}

#[tokio::test]
async fn full_subscription_handshake_then_presence_both_ways() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;

    // alice asks
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    assert_eq!(
        push_item(&a.one()),
        (
            "bob@localhost".into(),
            "none".into(),
            Some("subscribe".into()),
            None
        )
    );
    let req = b.one();
    assert!(is_type(&req, "presence", Some("subscribe")));
    assert_eq!(
        req.get_attr("from"),
        Some("alice@localhost"),
        "stamped with the bare JID"
    );
    assert_eq!(req.get_attr("to"), Some("bob@localhost"));
    // The pending request is not a visible roster item for bob.
    assert!(roster_items(&b.roster().await).is_empty());

    // bob approves: bob's item becomes from; alice's becomes to, she gets the subscribed and
    // then bob's current presence.
    b.send(pres(Some("alice@localhost"), Some("subscribed")))
        .await;
    assert_eq!(
        push_item(&b.one()),
        ("alice@localhost".into(), "from".into(), None, None)
    );
    let got = a.stanzas();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(
        push_item(&got[0]),
        ("bob@localhost".into(), "to".into(), None, None)
    );
    assert!(is_type(&got[1], "presence", Some("subscribed")));
    assert_eq!(got[1].get_attr("from"), Some("bob@localhost"));
    assert!(is_type(&got[2], "presence", None));
    assert_eq!(got[2].get_attr("from"), Some("bob@localhost/b"));

    // bob's presence now reaches alice, not the other way round.
    b.send(pres(None, None).child(Element::new("show", ns::CLIENT).text_node("away")))
        .await;
    let echo = b.one();
    assert_eq!(echo.get_attr("from"), Some("bob@localhost/b"));
    let p = a.one();
    assert_eq!(p.get_attr("from"), Some("bob@localhost/b"));
    assert_eq!(
        p.get_child("show", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("away")
    );
    a.send(available(1)).await;
    a.one(); // own echo only
    b.nothing();

    // bob asks back, alice approves: both.
    b.send(pres(Some("alice@localhost"), Some("subscribe")))
        .await;
    assert_eq!(push_item(&b.one()).2.as_deref(), Some("subscribe"));
    assert!(is_type(&a.one(), "presence", Some("subscribe")));
    a.send(pres(Some("bob@localhost"), Some("subscribed")))
        .await;
    assert_eq!(push_item(&a.one()).1, "both");
    let got = b.stanzas();
    assert_eq!(push_item(&got[0]).1, "both");
    assert!(is_type(&got[1], "presence", Some("subscribed")));
    assert_eq!(got[2].get_attr("from"), Some("alice@localhost/a"));
    assert_eq!(
        env.item("alice@localhost", "bob@localhost")
            .await
            .unwrap()
            .subscription,
        Subscription::Both
    );
    assert_eq!(
        env.item("bob@localhost", "alice@localhost")
            .await
            .unwrap()
            .subscription,
        Subscription::Both
    );

    // Presence flows both ways.
    a.send(available(2)).await;
    a.one();
    assert_eq!(b.one().get_attr("from"), Some("alice@localhost/a"));
    b.send(available(3)).await;
    b.one();
    assert_eq!(a.one().get_attr("from"), Some("bob@localhost/b"));
}

#[tokio::test]
async fn unsubscribe_and_unsubscribed_update_both_sides() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;

    // alice stops watching bob: alice both -> from, bob both -> to; alice gets bob's
    // unavailable (bob's server retracts his presence).
    a.send(pres(Some("bob@localhost"), Some("unsubscribe")))
        .await;
    let got = a.stanzas();
    assert_eq!(push_item(&got[0]).1, "from");
    assert!(
        got.iter()
            .any(|s| is_type(s, "presence", Some("unavailable"))
                && s.get_attr("from") == Some("bob@localhost/b"))
    );
    let got = b.stanzas();
    assert_eq!(push_item(&got[0]).1, "to");
    assert!(is_type(&got[1], "presence", Some("unsubscribe")));

    // bob stops watching alice too: bob to -> none; alice from -> none (she is told), and
    // alice's server retracts her presence from bob.
    b.send(pres(Some("alice@localhost"), Some("unsubscribe")))
        .await;
    let got = b.stanzas();
    assert_eq!(push_item(&got[0]).1, "none");
    assert!(
        got.iter()
            .any(|s| is_type(s, "presence", Some("unavailable"))
                && s.get_attr("from") == Some("alice@localhost/a"))
    );
    let got = a.stanzas();
    assert_eq!(push_item(&got[0]).1, "none");
    assert!(
        got.iter()
            .any(|s| is_type(s, "presence", Some("unsubscribe")))
    );

    // Nothing left: an unsubscribed changes nothing and is neither routed nor pushed.
    a.send(pres(Some("bob@localhost"), Some("unsubscribed")))
        .await;
    a.nothing();
    b.nothing();
    // Presence no longer flows.
    a.send(available(0)).await;
    a.one();
    b.nothing();
}

#[tokio::test]
async fn contact_revokes_with_unsubscribed() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    // bob revokes alice's subscription to him: alice first gets bob's unavailable, then the
    // unsubscribed and her push (both -> from).
    b.send(pres(Some("alice@localhost"), Some("unsubscribed")))
        .await;
    assert_eq!(push_item(&b.one()).1, "to");
    let got = a.stanzas();
    let unav = got
        .iter()
        .position(|s| {
            is_type(s, "presence", Some("unavailable"))
                && s.get_attr("from") == Some("bob@localhost/b")
        })
        .expect("unavailable from bob");
    let unsub = got
        .iter()
        .position(|s| is_type(s, "presence", Some("unsubscribed")))
        .expect("unsubscribed");
    assert!(unav < unsub);
    assert!(
        got.iter()
            .any(|s| s.name() == "iq" && push_item(s).1 == "from")
    );
}

#[tokio::test]
async fn denied_request_clears_pending_out_and_hidden_pending_in() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    a.drain();
    b.drain();
    assert!(
        env.item("bob@localhost", "alice@localhost")
            .await
            .unwrap()
            .pending_in
    );
    b.send(pres(Some("alice@localhost"), Some("unsubscribed")))
        .await;
    b.nothing(); // never visible, so nothing to push
    assert!(
        env.item("bob@localhost", "alice@localhost").await.is_none(),
        "forgotten"
    );
    let got = a.stanzas();
    assert_eq!(
        push_item(&got[0]),
        ("bob@localhost".into(), "none".into(), None, None)
    );
    assert!(is_type(&got[1], "presence", Some("unsubscribed")));
}

#[tokio::test]
async fn subscribe_when_already_subscribed_is_auto_answered() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    // No state change anywhere: bob is not asked again and nothing is pushed. Bob's server
    // answers subscribed for him, which changes nothing for alice either (not delivered),
    // and sends bob's presence.
    b.nothing();
    let got = a.stanzas();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(is_type(&got[0], "presence", None));
    assert_eq!(got[0].get_attr("from"), Some("bob@localhost/b"));
}

#[tokio::test]
async fn repeated_subscribe_is_not_delivered_twice() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    assert_eq!(a.stanzas().len(), 1);
    assert_eq!(b.stanzas().len(), 1);
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    a.nothing(); // None + Pending Out: no change, no push
    b.nothing(); // None + Pending In: no change, not delivered
}

#[tokio::test]
async fn subscribed_without_request_is_a_pre_approval() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    // bob pre-approves alice (RFC 6121 §3.4): a push with approved, nothing routed.
    b.send(pres(Some("alice@localhost"), Some("subscribed")))
        .await;
    assert_eq!(
        push_item(&b.one()),
        (
            "alice@localhost".into(),
            "none".into(),
            None,
            Some("true".into())
        )
    );
    a.nothing();
    // alice subscribes: bob is not asked; bob's item becomes from, alice's to, and alice
    // gets bob's presence.
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    assert_eq!(
        push_item(&b.one()),
        ("alice@localhost".into(), "from".into(), None, None)
    );
    let got = a.stanzas();
    assert_eq!(push_item(&got[0]).2.as_deref(), Some("subscribe"));
    assert_eq!(push_item(&got[1]).1, "to");
    assert!(is_type(&got[2], "presence", Some("subscribed")));
    assert_eq!(got[3].get_attr("from"), Some("bob@localhost/b"));
    assert_eq!(got.len(), 4);
}

#[tokio::test]
async fn pre_approval_can_be_cancelled() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    b.send(pres(Some("alice@localhost"), Some("subscribed")))
        .await;
    b.drain();
    b.send(pres(Some("alice@localhost"), Some("unsubscribed")))
        .await;
    assert_eq!(push_item(&b.one()).3, None);
    a.nothing();
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    assert!(
        is_type(&b.one(), "presence", Some("subscribe")),
        "asked again"
    );
}

#[tokio::test]
async fn pending_requests_are_delivered_at_each_login_until_answered() {
    let env = Env::new();
    env.account("bob@localhost").await;
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(pres(Some("bob@localhost"), Some("subscribe"))).await;
    a.drain();

    for _ in 0..2 {
        let mut b = env.login("bob@localhost/b").await;
        b.send(available(0)).await;
        let got = b.stanzas();
        let req: Vec<_> = got
            .iter()
            .filter(|s| is_type(s, "presence", Some("subscribe")))
            .collect();
        assert_eq!(req.len(), 1, "{got:#?}");
        assert_eq!(req[0].get_attr("from"), Some("alice@localhost"));
        b.close().await;
    }
    let mut b = env.login("bob@localhost/b").await;
    b.send(available(0)).await;
    b.drain();
    b.send(pres(Some("alice@localhost"), Some("subscribed")))
        .await;
    b.close().await;
    let mut b = env.login("bob@localhost/b").await;
    b.send(available(0)).await;
    let got = b.stanzas();
    assert!(
        got.iter()
            .all(|s| !is_type(s, "presence", Some("subscribe"))),
        "{got:#?}"
    );
}

#[tokio::test]
async fn subscription_to_a_nonexistent_user_is_dropped() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(pres(Some("ghost@localhost"), Some("subscribe")))
        .await;
    // Only alice's own push (pending out); no error comes back.
    let got = a.stanzas();
    assert_eq!(got.len(), 1);
    assert_eq!(push_item(&got[0]).2.as_deref(), Some("subscribe"));
    assert!(
        env.item("ghost@localhost", "alice@localhost")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn subscription_to_a_remote_contact_updates_the_local_side_only() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(pres(Some("bob@remote.example/x"), Some("subscribe")))
        .await;
    let got = a.stanzas();
    assert_eq!(got.len(), 1, "no bounce for presence: {got:#?}");
    assert_eq!(
        push_item(&got[0]).0,
        "bob@remote.example",
        "full JID treated as bare"
    );
}

#[tokio::test]
async fn initial_presence_probes_contacts_and_gets_resources() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    b.send(pres(None, None).child(Element::new("status", ns::CLIENT).text_node("here")))
        .await;
    b.drain();
    a.drain();

    // A second alice resource: gets its own echo, the other resource's presence, and bob's
    // presence as the probe answer. Bob and alice/a get its presence.
    let mut a2 = env.login("alice@localhost/second").await;
    a2.send(available(0)).await;
    let got = a2.stanzas();
    let froms: Vec<_> = got
        .iter()
        .map(|s| s.get_attr("from").unwrap().to_owned())
        .collect();
    assert!(
        froms.contains(&"alice@localhost/second".to_owned()),
        "{froms:?}"
    );
    assert!(froms.contains(&"alice@localhost/a".to_owned()), "{froms:?}");
    let bob = got
        .iter()
        .find(|s| s.get_attr("from") == Some("bob@localhost/b"))
        .unwrap();
    assert_eq!(bob.get_attr("to"), Some("alice@localhost/second"));
    assert_eq!(
        bob.get_child("status", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("here")
    );
    assert_eq!(a.one().get_attr("from"), Some("alice@localhost/second"));
    assert_eq!(b.one().get_attr("from"), Some("alice@localhost/second"));

    // With bob offline, the probe answer is unavailable from bob's bare JID.
    b.close().await;
    a.drain();
    a2.drain();
    let mut a3 = env.login("alice@localhost/third").await;
    a3.send(available(0)).await;
    let got = a3.stanzas();
    assert!(
        got.iter()
            .any(|s| is_type(s, "presence", Some("unavailable"))
                && s.get_attr("from") == Some("bob@localhost"))
    );
}

#[tokio::test]
async fn probes_from_non_subscribers_are_ignored() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    a.send(pres(Some("bob@localhost"), Some("probe"))).await;
    a.nothing();
    b.nothing();
    // After bob lets alice subscribe, her probe is answered.
    befriend(&mut a, &mut b).await;
    a.send(pres(Some("bob@localhost"), Some("probe"))).await;
    let got = a.one();
    assert_eq!(got.get_attr("from"), Some("bob@localhost/b"));
    b.nothing();
}

#[tokio::test]
async fn close_broadcasts_unavailable_to_contacts_resources_and_directed_targets() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut a2 = env.online("alice@localhost/a2", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    let mut c = env.online("carol@localhost/c", 0).await;
    befriend(&mut a, &mut b).await;
    a2.drain();
    // Directed presence to carol (no subscription).
    a.send(pres(Some("carol@localhost"), None)).await;
    assert_eq!(c.one().get_attr("from"), Some("alice@localhost/a"));
    a.close().await;
    for cl in [&mut a2, &mut b, &mut c] {
        let p = cl.one();
        assert!(is_type(&p, "presence", Some("unavailable")), "{p}");
        assert_eq!(p.get_attr("from"), Some("alice@localhost/a"));
    }
    // A stale token does nothing.
    let old = a2.token;
    a2.close().await;
    b.one();
    let again = env.login("alice@localhost/a2").await;
    env.svc.close(&again.jid, old).await;
    b.nothing();
}

#[tokio::test]
async fn explicit_unavailable_then_available_again_is_initial() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    a.send(pres(None, Some("unavailable"))).await;
    a.nothing();
    assert!(is_type(&b.one(), "presence", Some("unavailable")));
    a.send(available(0)).await;
    let got = a.stanzas();
    // own echo + bob's presence from the new probe
    assert!(
        got.iter()
            .any(|s| s.get_attr("from") == Some("bob@localhost/b")),
        "{got:#?}"
    );
    assert_eq!(b.one().get_attr("from"), Some("alice@localhost/a"));
}

#[tokio::test]
async fn directed_unavailable_forgets_the_target() {
    let env = Env::new();
    let a = env.online("alice@localhost/a", 0).await;
    let mut c = env.online("carol@localhost/c", 0).await;
    a.send(pres(Some("carol@localhost/c"), None)).await;
    c.one();
    a.send(pres(Some("carol@localhost/c"), Some("unavailable")))
        .await;
    assert!(is_type(&c.one(), "presence", Some("unavailable")));
    a.close().await;
    c.nothing();
}

#[tokio::test]
async fn replaced_session_keeps_presence_until_closed() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    // Same full JID again: no unavailable is broadcast on the takeover...
    let a2 = env.login("alice@localhost/a").await;
    b.nothing();
    // ...but when the new session ends without presence of its own, contacts learn it.
    a2.close().await;
    assert!(is_type(&b.one(), "presence", Some("unavailable")));
}

#[tokio::test]
async fn presence_to_a_full_jid_not_bound_is_dropped() {
    let env = Env::new();
    let a = env.online("alice@localhost/a", 0).await;
    let mut c = env.online("carol@localhost/c", 0).await;
    a.send(pres(Some("carol@localhost/elsewhere"), None)).await;
    c.nothing();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_on_shared_users_converge() {
    const N: usize = 12;
    let env = Env::new();
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(env.online(&format!("u{i}@localhost/r"), 0).await);
    }
    // Every user is in two pairs, (i-1, i) and (i, i+1), handled by concurrent tasks, while
    // everyone also exchanges messages.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let svc = std::sync::Arc::clone(&env.svc);
        let (a, b) = (&clients[i], &clients[(i + 1) % N]);
        let (aj, at, bj, bt) = (a.jid.clone(), a.token, b.jid.clone(), b.token);
        tasks.spawn(async move {
            let (ab, bb) = (aj.bare().to_string(), bj.bare().to_string());
            let steps = [
                (&aj, at, pres(Some(&bb), Some("subscribe"))),
                (&bj, bt, msg(&ab, Some("chat"), Some("hello"))),
                (&bj, bt, pres(Some(&ab), Some("subscribed"))),
                (&bj, bt, pres(Some(&ab), Some("subscribe"))),
                (&aj, at, msg(&bb, Some("chat"), Some("hi"))),
                (&aj, at, pres(Some(&bb), Some("subscribed"))),
            ];
            for (jid, token, st) in steps {
                svc.stanza(jid, token, st).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let prev = format!("u{}@localhost", (i + N - 1) % N);
        let next = format!("u{}@localhost", (i + 1) % N);
        let got = c.stanzas();
        let chats = got.iter().filter(|s| s.name() == "message").count();
        assert_eq!(chats, 2, "u{i} got {got:#?}");
        let mut items = roster_items(&c.roster().await);
        items.sort();
        let mut want = vec![
            (next.clone(), "both".to_owned()),
            (prev.clone(), "both".to_owned()),
        ];
        want.sort();
        assert_eq!(items, want, "u{i}");
        for contact in [&prev, &next] {
            let stored = env.item(&c.bare(), contact).await.unwrap();
            assert_eq!(stored.subscription, Subscription::Both);
            assert!(!stored.ask_out && !stored.pending_in && !stored.approved);
        }
    }
    // Presence now reaches both neighbours.
    clients[0].send(available(1)).await;
    assert_eq!(clients[1].one().get_attr("from"), Some("u0@localhost/r"));
    assert_eq!(
        clients[N - 1].one().get_attr("from"),
        Some("u0@localhost/r")
    );
    assert!(clients[2..N - 1].iter_mut().all(|c| c.drain().is_empty()));
}

#[tokio::test]
async fn a_full_roster_refuses_new_items_with_not_allowed() {
    let env = Env::with(session::SessionConfig {
        max_roster_items: 3,
        ..session::SessionConfig::default()
    });
    let mut a = env.login("alice@localhost/r").await;
    for n in 0..3 {
        let r = a
            .iq(roster_set(&format!("c{n}@localhost"), None, &[]))
            .await;
        assert!(is_type(&r, "iq", Some("result")), "{r}");
    }
    let r = a.iq(roster_set("c3@localhost", None, &[])).await;
    assert_eq!(condition(&r), Some(StanzaErrorCondition::NotAllowed), "{r}");
    assert!(env.item("alice@localhost", "c3@localhost").await.is_none());
    // Updating an item it holds still works; removing one makes room.
    let r = a.iq(roster_set("c0@localhost", Some("Zero"), &[])).await;
    assert!(is_type(&r, "iq", Some("result")), "{r}");
    let r = a.iq(roster_remove("c1@localhost")).await;
    assert!(is_type(&r, "iq", Some("result")), "{r}");
    let r = a.iq(roster_set("c3@localhost", None, &[])).await;
    assert!(is_type(&r, "iq", Some("result")), "{r}");
    // A stranger's subscription request cannot grow a full roster either.
    let mut stranger = env.online("mallory@localhost/x", 0).await;
    stranger.drain();
    stranger
        .send(pres(Some("alice@localhost"), Some("subscribe")))
        .await;
    assert!(
        env.item("alice@localhost", "mallory@localhost")
            .await
            .is_none()
    );
    let bounced = stranger
        .stanzas()
        .into_iter()
        .find(|s| s.name() == "presence" && s.get_attr("type") == Some("error"))
        .unwrap_or_else(|| panic!("the subscription request was not answered"));
    assert_eq!(
        condition(&bounced),
        Some(StanzaErrorCondition::ResourceConstraint),
        "{bounced}"
    );
    a.drain();
    // The user's own request to a new contact fails the same way.
    a.send(pres(Some("dave@localhost"), Some("subscribe")))
        .await;
    assert!(
        env.item("alice@localhost", "dave@localhost")
            .await
            .is_none()
    );
    let bounced = a
        .stanzas()
        .into_iter()
        .find(|s| s.name() == "presence" && s.get_attr("type") == Some("error"))
        .unwrap_or_else(|| panic!("the subscription was not refused"));
    assert_eq!(
        condition(&bounced),
        Some(StanzaErrorCondition::ResourceConstraint),
        "{bounced}"
    );
    let (_, items) = env
        .storage
        .rosters
        .get_roster(&"alice@localhost".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(items.len(), 3);
}
