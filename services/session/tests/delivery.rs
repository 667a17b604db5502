//! Sessions, addressing, messages, offline storage and IQs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use session::{ErrorCode, SessionConfig, SessionError, SessionService, ToClient};
use xmpp::xep::time::parse_datetime;
use xmpp::{Element, StanzaErrorCondition, StreamErrorCondition, ns};

#[tokio::test]
async fn open_replaces_the_same_full_jid_with_conflict() {
    let env = Env::new();
    let mut old = env.online("alice@localhost/r", 0).await;
    let mut new = env.login("alice@localhost/r").await;
    assert_ne!(old.token, new.token);
    assert_eq!(
        old.drain(),
        vec![ToClient::Close(StreamErrorCondition::Conflict)]
    );
    // The old token no longer works, and its late close does not end the new session.
    let err = env
        .svc
        .stanza(&old.jid, old.token, pres(None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::NoSession));
    assert_eq!(err.code(), ErrorCode::NotFound);
    old.close().await;
    let pong = new
        .iq(iq("get", Some("localhost"), Element::new("ping", ns::PING)))
        .await;
    assert!(is_type(&pong, "iq", Some("result")));
}

#[tokio::test]
async fn tokens_are_unique_and_resources_limited() {
    let env = Env::with(SessionConfig {
        max_resources: 2,
        ..SessionConfig::default()
    });
    let a = env.login("alice@localhost/1").await;
    let b = env.login("alice@localhost/2").await;
    assert_ne!(a.token, b.token);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = env
        .svc
        .open("alice@localhost/3".parse().unwrap(), Arc::new(Recorder(tx)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceConstraint);
    // Replacing an existing resource is still allowed at the limit.
    let c = env.login("alice@localhost/2").await;
    assert_ne!(c.token, b.token);
}

#[tokio::test]
async fn live_state_is_released_when_everyone_leaves() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    befriend(&mut a, &mut b).await;
    b.send(msg("ghost@localhost", Some("chat"), Some("hi")))
        .await;
    assert!(env.svc.live_users() >= 2);
    a.close().await;
    b.close().await;
    assert_eq!(env.svc.live_users(), 0);
}

#[tokio::test]
async fn bare_messages_go_to_the_highest_non_negative_priority() {
    let env = Env::new();
    let a = env.online("alice@localhost/a", 0).await;
    let mut hi = env.online("bob@localhost/hi", 5).await;
    let mut lo = env.online("bob@localhost/lo", 1).await;
    hi.drain();
    a.send(msg("bob@localhost", Some("chat"), Some("one")))
        .await;
    let m = hi.one();
    assert_eq!(m.get_attr("from"), Some("alice@localhost/a"));
    assert_eq!(m.get_attr("to"), Some("bob@localhost"));
    lo.nothing();

    // Equal priorities: every one of them.
    let mut eq = env.online("bob@localhost/eq", 5).await;
    hi.drain();
    lo.drain();
    a.send(msg("bob@localhost", None, Some("two"))).await;
    assert_eq!(hi.one().name(), "message");
    assert_eq!(eq.one().name(), "message");
    lo.nothing();

    // A full JID reaches that resource whatever its priority.
    a.send(msg("bob@localhost/lo", Some("chat"), Some("three")))
        .await;
    assert_eq!(lo.one().get_attr("to"), Some("bob@localhost/lo"));
    hi.nothing();
    eq.nothing();
}

#[tokio::test]
async fn negative_priority_only_means_offline_storage() {
    let env = Env::new();
    let a = env.online("alice@localhost/a", 0).await;
    let mut neg = env.online("bob@localhost/neg", -1).await;
    a.send(msg("bob@localhost", Some("chat"), Some("stored")))
        .await;
    neg.nothing();
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    // Headlines to the bare JID go to non-negative resources only: none here.
    a.send(msg("bob@localhost", Some("headline"), Some("news")))
        .await;
    neg.nothing();
    // A bound but not yet available resource gets no bare-JID messages either.
    let mut quiet = env.login("bob@localhost/quiet").await;
    a.send(msg("bob@localhost", Some("chat"), Some("also stored")))
        .await;
    quiet.nothing();
    assert_eq!(env.offline_count("bob@localhost").await, 2);
    // Raising the priority delivers what was stored.
    neg.send(available(0)).await;
    let got: Vec<_> = neg
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(env.offline_count("bob@localhost").await, 0);
}

#[tokio::test]
async fn offline_messages_are_stored_and_delivered_with_delay() {
    let env = Env::new();
    env.account("bob@localhost").await;
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(msg("bob@localhost", Some("chat"), Some("first")))
        .await;
    a.send(msg("bob@localhost/gone", Some("chat"), Some("second")))
        .await;
    // Without a body (a chat state): dropped silently; so are headlines.
    a.send(
        Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("type", "chat")
            .child(Element::new(
                "composing",
                "http://jabber.org/protocol/chatstates",
            )),
    )
    .await;
    a.send(msg("bob@localhost", Some("headline"), Some("news")))
        .await;
    a.nothing();
    assert_eq!(env.offline_count("bob@localhost").await, 2);

    let mut b = env.login("bob@localhost/b").await;
    b.nothing();
    b.send(available(0)).await;
    let msgs: Vec<_> = b
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(msgs.len(), 2);
    let bodies: Vec<String> = msgs
        .iter()
        .map(|m| m.get_child("body", ns::CLIENT).unwrap().text())
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    for m in &msgs {
        assert_eq!(m.get_attr("from"), Some("alice@localhost/a"));
        let delay = m.get_child("delay", ns::DELAY).expect("delay");
        assert_eq!(delay.get_attr("from"), Some("localhost"));
        let stamp = delay.get_attr("stamp").unwrap();
        // XEP-0082 UTC, no later than now (the message was stored before this login).
        assert!(stamp.ends_with('Z'), "{stamp}");
        let when = parse_datetime(stamp).unwrap_or_else(|| panic!("bad stamp {stamp}"));
        assert!(
            when <= std::time::SystemTime::now() && when > before,
            "{stamp}"
        );
    }
    assert_eq!(env.offline_count("bob@localhost").await, 0);
    // A second login finds nothing more.
    let mut b2 = env.login("bob@localhost/b2").await;
    b2.send(available(0)).await;
    assert!(b2.stanzas().iter().all(|s| s.name() != "message"));
}

#[tokio::test]
async fn offline_quota_bounces_instead_of_dropping() {
    let env = Env::with(SessionConfig {
        offline_quota: 2,
        ..SessionConfig::default()
    });
    env.account("bob@localhost").await;
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(msg("bob@localhost", Some("chat"), Some("1"))).await;
    a.send(msg("bob@localhost", None, Some("2"))).await;
    a.nothing();
    a.send(msg("bob@localhost", Some("chat"), Some("3"))).await;
    let err = a.one();
    assert_eq!(
        condition(&err),
        Some(StanzaErrorCondition::ResourceConstraint)
    );
    assert_eq!(err.get_attr("from"), Some("bob@localhost"));
    assert_eq!(err.get_attr("to"), Some("alice@localhost/a"));
    assert_eq!(err.get_attr("id"), Some("m1"));
    let e = err.get_child("error", ns::CLIENT).unwrap();
    assert_eq!(e.get_attr("type"), Some("wait"));
    let text = e.get_child("text", ns::STANZAS_ERR).map(Element::text);
    assert_eq!(text.as_deref(), Some("offline storage full"));
    assert_eq!(env.offline_count("bob@localhost").await, 2);
}

#[tokio::test]
async fn failing_connection_falls_back_to_other_resources_then_offline() {
    let env = Env::new();
    let a = env.online("alice@localhost/a", 0).await;
    let clogged: xmpp::FullJid = "bob@localhost/clogged".parse().unwrap();
    env.account("bob@localhost").await;
    let t = env
        .svc
        .open(clogged.clone(), Arc::new(Clogged))
        .await
        .unwrap();
    env.svc.stanza(&clogged, t, available(10)).await.unwrap();
    a.send(msg("bob@localhost", Some("chat"), Some("x"))).await;
    assert_eq!(env.offline_count("bob@localhost").await, 1, "not lost");
    let mut ok = env.online("bob@localhost/ok", 1).await;
    // ok's own login flushed the stored one; the next goes to ok although clogged ranks higher.
    a.send(msg("bob@localhost", Some("chat"), Some("y"))).await;
    assert_eq!(ok.one().get_child("body", ns::CLIENT).unwrap().text(), "y");
}

#[tokio::test]
async fn groupchat_headline_and_error_rules() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b1 = env.online("bob@localhost/1", 3).await;
    let mut b2 = env.online("bob@localhost/2", 0).await;
    let mut bn = env.online("bob@localhost/n", -5).await;
    b1.drain();
    b2.drain();
    // groupchat to a bare JID: service-unavailable.
    a.send(msg("bob@localhost", Some("groupchat"), Some("g")))
        .await;
    assert_eq!(
        condition(&a.one()),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    // groupchat to an unbound full JID: the same; to a bound one: delivered.
    a.send(msg("bob@localhost/none", Some("groupchat"), Some("g")))
        .await;
    assert_eq!(
        condition(&a.one()),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    a.send(msg("bob@localhost/2", Some("groupchat"), Some("g")))
        .await;
    assert_eq!(b2.one().get_attr("type"), Some("groupchat"));
    // headline to the bare JID: every available non-negative resource.
    a.send(msg("bob@localhost", Some("headline"), Some("h")))
        .await;
    b1.one();
    b2.one();
    bn.nothing();
    // headline to an unbound full JID: dropped.
    a.send(msg("bob@localhost/none", Some("headline"), Some("h")))
        .await;
    // chat to an unbound full JID: as if to the bare JID.
    a.send(msg("bob@localhost/none", Some("chat"), Some("c")))
        .await;
    assert_eq!(b1.one().get_attr("to"), Some("bob@localhost/none"));
    b2.nothing();
    // errors to a bare JID or an unbound full JID: dropped, never answered.
    a.send(msg("bob@localhost", Some("error"), None)).await;
    a.send(msg("bob@localhost/none", Some("error"), None)).await;
    a.send(msg("nobody@localhost", Some("error"), None)).await;
    a.nothing();
    b1.nothing();
    b2.nothing();
    bn.nothing();
}

#[tokio::test]
async fn messages_to_missing_users_remote_domains_and_bad_jids() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    a.send(msg("nobody@localhost", Some("chat"), Some("x")))
        .await;
    let e = a.one();
    assert_eq!(
        condition(&e),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    assert_eq!(e.get_attr("from"), Some("nobody@localhost"));
    // The error keeps the original payload.
    assert_eq!(e.get_child("body", ns::CLIENT).unwrap().text(), "x");

    a.send(msg("bob@elsewhere.example", Some("chat"), Some("x")))
        .await;
    assert_eq!(
        condition(&a.one()),
        Some(StanzaErrorCondition::RemoteServerNotFound)
    );
    let r = a
        .iq(iq(
            "get",
            Some("elsewhere.example"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::RemoteServerNotFound)
    );
    // Presence to a remote domain fails quietly.
    a.send(pres(Some("bob@elsewhere.example"), None)).await;
    a.nothing();

    for bad in ["@localhost", "a@", "a@localhost/"] {
        a.send(msg(bad, Some("chat"), Some("x"))).await;
        assert_eq!(
            condition(&a.one()),
            Some(StanzaErrorCondition::JidMalformed),
            "{bad}"
        );
        let r = a
            .iq(iq("get", Some(bad), Element::new("ping", ns::PING)))
            .await;
        assert_eq!(
            condition(&r),
            Some(StanzaErrorCondition::JidMalformed),
            "{bad}"
        );
        a.send(pres(Some(bad), None)).await;
        assert_eq!(
            condition(&a.one()),
            Some(StanzaErrorCondition::JidMalformed),
            "{bad}"
        );
        // Never an answer to an error.
        a.send(msg(bad, Some("error"), None)).await;
        a.nothing();
    }
}

#[tokio::test]
async fn message_without_to_goes_to_own_account() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut a2 = env.online("alice@localhost/b", 0).await;
    a.drain();
    let m = Element::new("message", ns::CLIENT)
        .attr("type", "chat")
        .child(Element::new("body", ns::CLIENT).text_node("note to self"));
    a.send(m).await;
    assert_eq!(a.one().get_attr("to"), Some("alice@localhost"));
    assert_eq!(a2.one().get_attr("from"), Some("alice@localhost/a"));
}

#[tokio::test]
async fn iq_to_the_server() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/a").await;
    let info = a
        .iq(iq(
            "get",
            Some("localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    assert!(is_type(&info, "iq", Some("result")));
    assert_eq!(info.get_attr("from"), Some("localhost"));
    assert_eq!(info.get_attr("to"), Some("alice@localhost/a"));
    assert_eq!(info.get_attr("id"), Some("q1"));
    let q = info.get_child("query", ns::DISCO_INFO).unwrap();
    let id = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(
        (id.get_attr("category"), id.get_attr("type")),
        (Some("server"), Some("im"))
    );
    let features: Vec<&str> = q.children().filter_map(|f| f.get_attr("var")).collect();
    for f in [
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::TIME,
        ns::VERSION,
        ns::VCARD,
        ns::OFFLINE,
        ns::ROSTER,
        ns::ROSTER_VER,
        ns::PRE_APPROVAL,
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }

    let items = a
        .iq(iq(
            "get",
            Some("localhost"),
            Element::new("query", ns::DISCO_ITEMS),
        ))
        .await;
    let q = items.get_child("query", ns::DISCO_ITEMS).unwrap();
    assert_eq!(q.children().count(), 0);

    let pong = a
        .iq(iq("get", Some("localhost"), Element::new("ping", ns::PING)))
        .await;
    assert!(is_type(&pong, "iq", Some("result")));
    assert!(pong.first_child().is_none());

    let v = a
        .iq(iq(
            "get",
            Some("localhost"),
            Element::new("query", ns::VERSION),
        ))
        .await;
    let q = v.get_child("query", ns::VERSION).unwrap();
    assert_eq!(q.get_child("name", ns::VERSION).unwrap().text(), "Relais");
    assert_eq!(
        q.get_child("version", ns::VERSION).unwrap().text(),
        env!("CARGO_PKG_VERSION")
    );

    let t = a
        .iq(iq("get", Some("localhost"), Element::new("time", ns::TIME)))
        .await;
    let time = t.get_child("time", ns::TIME).unwrap();
    assert_eq!(time.get_child("tzo", ns::TIME).unwrap().text(), "+00:00");
    let utc = time.get_child("utc", ns::TIME).unwrap().text();
    assert!(
        utc.ends_with('Z') && parse_datetime(&utc).is_some(),
        "{utc}"
    );

    let s = a
        .iq(iq(
            "set",
            Some("localhost"),
            Element::new("session", ns::SESSION),
        ))
        .await;
    assert!(is_type(&s, "iq", Some("result")));

    for payload in [
        Element::new("query", "urn:example:unknown"),
        Element::new("query", ns::DISCO_INFO)
            .attr("node", "x")
            .attr("bogus", "1"),
        Element::new("query", ns::ROSTER),
    ] {
        let r = a.iq(iq("get", Some("localhost"), payload.clone())).await;
        let want = if payload.ns() == ns::DISCO_INFO {
            StanzaErrorCondition::ItemNotFound
        } else {
            StanzaErrorCondition::ServiceUnavailable
        };
        assert_eq!(condition(&r), Some(want), "{payload}");
    }
    let r = a
        .iq(iq(
            "get",
            Some("localhost/res"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    // Results and errors to the server are dropped.
    a.send(
        Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "x")
            .attr("to", "localhost"),
    )
    .await;
    a.nothing();
}

#[tokio::test]
async fn version_can_be_turned_off() {
    let env = Env::with(SessionConfig {
        version_enabled: false,
        ..SessionConfig::default()
    });
    let mut a = env.login("alice@localhost/a").await;
    let r = a
        .iq(iq(
            "get",
            Some("localhost"),
            Element::new("query", ns::VERSION),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    let info = a
        .iq(iq(
            "get",
            Some("localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    let q = info.get_child("query", ns::DISCO_INFO).unwrap();
    assert!(q.children().all(|f| f.get_attr("var") != Some(ns::VERSION)));
}

#[tokio::test]
async fn malformed_iqs_get_bad_request_but_errors_get_nothing() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/a").await;
    let empty = Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("id", "e")
        .attr("to", "localhost");
    assert_eq!(
        condition(&a.iq(empty).await),
        Some(StanzaErrorCondition::BadRequest)
    );
    let two = iq("get", Some("localhost"), Element::new("ping", ns::PING))
        .child(Element::new("ping", ns::PING));
    assert_eq!(
        condition(&a.iq(two).await),
        Some(StanzaErrorCondition::BadRequest)
    );
    let untyped = Element::new("iq", ns::CLIENT)
        .attr("id", "u")
        .child(Element::new("ping", ns::PING));
    assert_eq!(
        condition(&a.iq(untyped).await),
        Some(StanzaErrorCondition::BadRequest)
    );
    let weird = iq("fetch", None, Element::new("ping", ns::PING));
    assert_eq!(
        condition(&a.iq(weird).await),
        Some(StanzaErrorCondition::BadRequest)
    );
    let noid = Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .child(Element::new("ping", ns::PING));
    assert_eq!(
        condition(&a.iq(noid).await),
        Some(StanzaErrorCondition::BadRequest)
    );
    a.send(
        Element::new("iq", ns::CLIENT)
            .attr("type", "error")
            .attr("id", "x"),
    )
    .await;
    a.nothing();
}

#[tokio::test]
async fn account_iqs() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/a").await;
    for to in [None, Some("alice@localhost")] {
        let pong = a.iq(iq("get", to, Element::new("ping", ns::PING))).await;
        assert!(is_type(&pong, "iq", Some("result")));
        assert_eq!(pong.get_attr("from"), to);
        let s = a
            .iq(iq("set", to, Element::new("session", ns::SESSION)))
            .await;
        assert!(is_type(&s, "iq", Some("result")));
        let info = a
            .iq(iq("get", to, Element::new("query", ns::DISCO_INFO)))
            .await;
        let id = info
            .get_child("query", ns::DISCO_INFO)
            .unwrap()
            .get_child("identity", ns::DISCO_INFO)
            .unwrap();
        assert_eq!(
            (id.get_attr("category"), id.get_attr("type")),
            (Some("account"), Some("registered"))
        );
        let items = a
            .iq(iq("get", to, Element::new("query", ns::DISCO_ITEMS)))
            .await;
        assert_eq!(
            items
                .get_child("query", ns::DISCO_ITEMS)
                .unwrap()
                .children()
                .count(),
            0
        );
        let unknown = a
            .iq(iq("get", to, Element::new("query", "urn:example:unknown")))
            .await;
        assert_eq!(
            condition(&unknown),
            Some(StanzaErrorCondition::ServiceUnavailable)
        );
        // An error stanza keeps the id and goes back to the sender.
        assert_eq!(unknown.get_attr("id"), Some("q1"));
        assert_eq!(unknown.get_attr("to"), Some("alice@localhost/a"));
    }
}

#[tokio::test]
async fn vcards_own_and_others() {
    let env = Env::new();
    let mut a = env.login("alice@localhost/a").await;
    let mut b = env.login("bob@localhost/b").await;
    let empty = a
        .iq(iq("get", None, Element::new("vCard", ns::VCARD)))
        .await;
    let v = empty.get_child("vCard", ns::VCARD).unwrap();
    assert_eq!(v.children().count(), 0);

    let card = Element::new("vCard", ns::VCARD)
        .child(Element::new("FN", ns::VCARD).text_node("Alice & Co"))
        .child(Element::new("NICKNAME", ns::VCARD).text_node("al"));
    let set = a.iq(iq("set", None, card.clone())).await;
    assert!(is_type(&set, "iq", Some("result")));
    let got = a
        .iq(iq("get", None, Element::new("vCard", ns::VCARD)))
        .await;
    assert_eq!(got.get_child("vCard", ns::VCARD), Some(&card));

    // Another user reads it through alice's bare JID, answered from it.
    let other = b
        .iq(iq(
            "get",
            Some("alice@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await;
    assert_eq!(other.get_attr("from"), Some("alice@localhost"));
    assert_eq!(other.get_child("vCard", ns::VCARD), Some(&card));
    a.nothing();
    // ...but cannot write it.
    let denied = b
        .iq(iq(
            "set",
            Some("alice@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await;
    assert_eq!(condition(&denied), Some(StanzaErrorCondition::Forbidden));
    let again = a
        .iq(iq("get", None, Element::new("vCard", ns::VCARD)))
        .await;
    assert_eq!(again.get_child("vCard", ns::VCARD), Some(&card));
    // A user without a vCard answers an empty one; a missing account, service-unavailable.
    let none = a
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await;
    assert_eq!(
        none.get_child("vCard", ns::VCARD)
            .unwrap()
            .children()
            .count(),
        0
    );
    let missing = a
        .iq(iq(
            "get",
            Some("ghost@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await;
    assert_eq!(
        condition(&missing),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn iq_to_other_accounts_and_resources() {
    let env = Env::new();
    let mut a = env.online("alice@localhost/a", 0).await;
    let mut b = env.online("bob@localhost/b", 0).await;
    // disco#info of an account: only for those with a subscription.
    let r = a
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    // ping to a bare JID: answered by the server for the account.
    let pong = a
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert!(is_type(&pong, "iq", Some("result")));
    assert_eq!(pong.get_attr("from"), Some("bob@localhost"));
    b.nothing();
    let other = a
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("query", "urn:example:x"),
        ))
        .await;
    assert_eq!(
        condition(&other),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    befriend(&mut a, &mut b).await;
    let r = a
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    assert!(is_type(&r, "iq", Some("result")), "{r}");

    // To a bound full JID: delivered; the answer is routed back.
    a.send(iq(
        "get",
        Some("bob@localhost/b"),
        Element::new("query", "urn:example:x"),
    ))
    .await;
    let got = b.one();
    assert_eq!(got.get_attr("from"), Some("alice@localhost/a"));
    b.send(
        Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "q1")
            .attr("to", "alice@localhost/a"),
    )
    .await;
    let back = a.one();
    assert!(is_type(&back, "iq", Some("result")));
    assert_eq!(back.get_attr("from"), Some("bob@localhost/b"));

    // To an unbound full JID: service-unavailable for requests, nothing for responses.
    let r = a
        .iq(iq(
            "get",
            Some("bob@localhost/gone"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    a.send(
        Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "z")
            .attr("to", "bob@localhost/gone"),
    )
    .await;
    a.nothing();
    let r = a
        .iq(iq(
            "get",
            Some("ghost@localhost"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
}
