//! Client scenarios against the real binary over real TLS (RFC 6120, RFC 6121).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::Server;
use tests::client::{Client, Incoming, body, chat};
use xmpp::scram::ScramHash;
use xmpp::{Element, StreamErrorCondition, ns};

fn server_with_users(users: &[&str]) -> Server {
    let s = Server::start();
    for u in users {
        s.add_user(u, &format!("{u}-pw"));
    }
    s
}

fn iq_get(payload: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .child(payload)
}

#[tokio::test]
async fn login_over_starttls_and_direct_tls_with_each_scram() {
    let s = server_with_users(&["alice"]);
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        // STARTTLS on the plain port.
        let mut c = s.connect().await;
        let mechs = c.mechanisms();
        assert!(
            mechs.contains(&"SCRAM-SHA-256".to_owned())
                && mechs.contains(&"SCRAM-SHA-1".to_owned()),
            "{mechs:?}"
        );
        c.auth_scram("alice", "alice-pw", hash, false)
            .await
            .unwrap();
        let jid = c.bind(Some("laptop")).await;
        assert_eq!(jid.as_str(), "alice@localhost/laptop");
        c.close().await;

        // Direct TLS (XEP-0368) with ALPN.
        let mut d = Client::connect_direct(s.c2s_tls, "localhost", s.cert_der()).await;
        assert_eq!(d.alpn().as_deref(), Some(&b"xmpp-client"[..]));
        d.auth_scram("alice", "alice-pw", hash, false)
            .await
            .unwrap();
        d.bind(None).await;
        d.close().await;
    }
}

#[tokio::test]
async fn channel_binding_plus_variants_on_tls13() {
    let s = server_with_users(&["alice"]);
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        let mut c = s.connect().await;
        let f = c.features.clone().unwrap();
        let cb = f
            .get_child("sasl-channel-binding", ns::SASL_CB)
            .and_then(|x| x.first_child())
            .and_then(|x| x.get_attr("type"));
        assert_eq!(
            cb,
            Some("tls-exporter"),
            "XEP-0440 advertisement missing: {f}"
        );
        assert!(c.mechanisms().contains(&hash.mechanism(true).to_owned()));
        c.auth_scram("alice", "alice-pw", hash, true).await.unwrap();
        c.bind(None).await;
    }
    // On TLS 1.2 no -PLUS is offered (tls-exporter is only used on TLS 1.3 here).
    let mut p = Client::connect_plain(s.c2s, "localhost", s.cert_der()).await;
    p.send(&Element::new("starttls", ns::TLS)).await;
    assert!(p.recv_stanza().await.is("proceed", ns::TLS));
    p.upgrade(&[], true).await;
    assert_eq!(p.tls_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert!(
        p.mechanisms().iter().all(|m| !m.ends_with("-PLUS")),
        "{:?}",
        p.mechanisms()
    );
    p.auth_scram("alice", "alice-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn no_sasl_before_tls_and_plain_only_over_tls() {
    let s = server_with_users(&["alice"]);
    let mut c = Client::connect_plain(s.c2s, "localhost", s.cert_der()).await;
    let f = c.features.clone().unwrap();
    assert!(
        f.get_child("mechanisms", ns::SASL).is_none(),
        "mechanisms offered before TLS: {f}"
    );
    assert!(
        f.get_child("starttls", ns::TLS)
            .and_then(|t| t.get_child("required", ns::TLS))
            .is_some()
    );
    let err = c.auth_plain("alice", "alice-pw").await.unwrap_err();
    assert_eq!(err, "encryption-required");

    let mut t = s.connect().await;
    assert!(t.mechanisms().contains(&"PLAIN".to_owned()));
    t.auth_plain("alice", "alice-pw").await.unwrap();
    t.bind(None).await;
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_retries_are_limited() {
    let s = server_with_users(&["alice"]);
    let mut c = s.connect().await;
    assert_eq!(
        c.auth_scram("alice", "nope", ScramHash::Sha256, false)
            .await
            .unwrap_err(),
        "not-authorized"
    );
    // Unknown users fail the same way, at the same step.
    assert_eq!(
        c.auth_scram("mallory", "x", ScramHash::Sha256, false)
            .await
            .unwrap_err(),
        "not-authorized"
    );
    assert_eq!(
        c.auth_plain("alice", "nope").await.unwrap_err(),
        "not-authorized"
    );
    // Three failures: RFC 6120 §6.4.5 lets the server close the stream.
    assert_eq!(c.recv().await, Incoming::Closed);
    // The right password still works on a new connection.
    let mut ok = s.connect().await;
    ok.auth_scram("alice", "alice-pw", ScramHash::Sha256, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn same_resource_replaces_the_old_session_with_conflict() {
    let s = server_with_users(&["alice", "bob"]);
    let mut first = s.login("alice", "alice-pw", "phone").await;
    first.go_online().await;
    let mut second = s.login("alice", "alice-pw", "phone").await;
    assert_eq!(
        first.expect_stream_end().await,
        Some(StreamErrorCondition::Conflict)
    );
    second.go_online().await;
    // The new session receives what is sent to the full JID.
    let mut bob = s.login("bob", "bob-pw", "b").await;
    bob.send(&chat("alice@localhost/phone", "for the new one"))
        .await;
    let m = second.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("for the new one"));
}

#[tokio::test]
async fn roster_pushes_reach_every_interested_resource() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a1 = s.login("alice", "alice-pw", "one").await;
    let mut a2 = s.login("alice", "alice-pw", "two").await;
    a1.go_online().await;
    a2.go_online().await;
    let set = Element::new("iq", ns::CLIENT).attr("type", "set").child(
        Element::new("query", ns::ROSTER).child(
            Element::new("item", ns::ROSTER)
                .attr("jid", "bob@localhost")
                .attr("name", "Bob")
                .child(Element::new("group", ns::ROSTER).text_node("Friends")),
        ),
    );
    let r = a1.iq(set).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    for c in [&mut a1, &mut a2] {
        let push = c
            .recv_matching(|e| e.name() == "iq" && e.get_attr("type") == Some("set"))
            .await;
        let item = push
            .get_child("query", ns::ROSTER)
            .and_then(|q| q.get_child("item", ns::ROSTER))
            .unwrap();
        assert_eq!(item.get_attr("jid"), Some("bob@localhost"));
        assert_eq!(item.get_attr("name"), Some("Bob"));
        assert_eq!(item.get_attr("subscription"), Some("none"));
        // Acknowledge the push, as RFC 6121 §2.1.6 asks.
        let ack = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", push.get_attr("id").unwrap_or_default());
        c.send(&ack).await;
    }
    // Versioning: the roster carries a version, and asking with it gets an empty result.
    let full = a2
        .iq(iq_get(Element::new("query", ns::ROSTER).attr("ver", "")))
        .await;
    let q = full.get_child("query", ns::ROSTER).unwrap();
    let ver = q.get_attr("ver").unwrap().to_owned();
    assert_eq!(q.children().count(), 1);
    let again = a2
        .iq(iq_get(Element::new("query", ns::ROSTER).attr("ver", ver)))
        .await;
    assert_eq!(again.get_attr("type"), Some("result"));
    assert!(
        again
            .get_child("query", ns::ROSTER)
            .map(|q| q.children().count() == 0)
            .unwrap_or(true)
    );
}

/// The whole subscription handshake of RFC 6121 §3, then presence both ways.
#[tokio::test]
async fn subscription_handshake_then_presence_flows() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    let mut b = s.login("bob", "bob-pw", "b").await;
    a.go_online().await;
    b.go_online().await;

    a.send(
        &Element::new("presence", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("type", "subscribe"),
    )
    .await;
    let req = b
        .recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribe"))
        .await;
    assert_eq!(req.get_attr("from"), Some("alice@localhost"));
    b.send(
        &Element::new("presence", ns::CLIENT)
            .attr("to", "alice@localhost")
            .attr("type", "subscribed"),
    )
    .await;
    let ok = a
        .recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribed"))
        .await;
    assert_eq!(ok.get_attr("from"), Some("bob@localhost"));
    // Alice now gets Bob's current presence.
    let p = a
        .recv_matching(|e| {
            e.name() == "presence"
                && e.get_attr("type").is_none()
                && e.get_attr("from") == Some("bob@localhost/b")
        })
        .await;
    assert!(p.get_child("priority", ns::CLIENT).is_none());

    // And the other direction.
    b.send(
        &Element::new("presence", ns::CLIENT)
            .attr("to", "alice@localhost")
            .attr("type", "subscribe"),
    )
    .await;
    a.recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribe"))
        .await;
    a.send(
        &Element::new("presence", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("type", "subscribed"),
    )
    .await;
    b.recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("subscribed"))
        .await;

    // Both rosters say both.
    let roster = a.iq(iq_get(Element::new("query", ns::ROSTER))).await;
    let item = roster
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.get_child("item", ns::ROSTER))
        .unwrap();
    assert_eq!(item.get_attr("subscription"), Some("both"));

    // A status change reaches the contact; going offline sends unavailable.
    a.send(
        &Element::new("presence", ns::CLIENT)
            .child(Element::new("show", ns::CLIENT).text_node("away")),
    )
    .await;
    let away = b
        .recv_matching(|e| e.name() == "presence" && e.get_child("show", ns::CLIENT).is_some())
        .await;
    assert_eq!(away.get_attr("from"), Some("alice@localhost/a"));
    a.close().await;
    let gone = b
        .recv_matching(|e| e.name() == "presence" && e.get_attr("type") == Some("unavailable"))
        .await;
    assert_eq!(gone.get_attr("from"), Some("alice@localhost/a"));
}

#[tokio::test]
async fn messages_to_bare_and_full_jids() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    let mut b1 = s.login("bob", "bob-pw", "desk").await;
    let mut b2 = s.login("bob", "bob-pw", "phone").await;
    b1.send(
        &Element::new("presence", ns::CLIENT)
            .child(Element::new("priority", ns::CLIENT).text_node("5")),
    )
    .await;
    b2.send(
        &Element::new("presence", ns::CLIENT)
            .child(Element::new("priority", ns::CLIENT).text_node("1")),
    )
    .await;
    // Let both presences register (each resource sees the other's presence).
    b1.recv_matching(|e| {
        e.name() == "presence" && e.get_attr("from") == Some("bob@localhost/phone")
    })
    .await;

    a.send(&chat("bob@localhost/phone", "to the phone")).await;
    let m = b2.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("to the phone"));
    assert_eq!(
        m.get_attr("from"),
        Some("alice@localhost/a"),
        "the server stamps from"
    );

    a.send(&chat("bob@localhost", "to the bare jid")).await;
    let m = b1.recv_matching(|e| e.name() == "message").await;
    assert_eq!(
        body(&m).as_deref(),
        Some("to the bare jid"),
        "highest priority gets it"
    );
    b2.expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;

    // Nobody with that account: an error comes back.
    a.send(&chat("nobody@localhost", "hello?")).await;
    let err = a.recv_matching(|e| e.name() == "message").await;
    assert_eq!(err.get_attr("type"), Some("error"));
    assert_eq!(
        xmpp::error::stanza_error_condition(&err),
        Some(xmpp::StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn offline_messages_are_delivered_with_a_delay_at_next_login() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    a.send(&chat("bob@localhost", "while you were out")).await;
    a.send(&chat("bob@localhost", "second")).await;
    // Give the server a moment: there is no reply to wait for, so ping to synchronise.
    let pong = a
        .iq(iq_get(Element::new("ping", ns::PING)).attr("to", "localhost"))
        .await;
    assert_eq!(pong.get_attr("type"), Some("result"));

    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;
    let m1 = b.recv_matching(|e| e.name() == "message").await;
    let m2 = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m1).as_deref(), Some("while you were out"));
    assert_eq!(body(&m2).as_deref(), Some("second"));
    let delay = m1.get_child("delay", ns::DELAY).expect("XEP-0203 delay");
    assert_eq!(delay.get_attr("from"), Some("localhost"));
    assert!(
        delay
            .get_attr("stamp")
            .map(|s| s.ends_with('Z'))
            .unwrap_or(false),
        "{delay}"
    );
    b.close().await;
    // Delivered once: a second login gets nothing more.
    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;
    b.expect_none(Duration::from_millis(500), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn vcard_disco_ping_version_and_unknown_namespaces() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    let vcard =
        Element::new("vCard", ns::VCARD).child(Element::new("FN", ns::VCARD).text_node("Alice A."));
    let r = a
        .iq(Element::new("iq", ns::CLIENT)
            .attr("type", "set")
            .child(vcard))
        .await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let got = a.iq(iq_get(Element::new("vCard", ns::VCARD))).await;
    let fn_ = got
        .get_child("vCard", ns::VCARD)
        .and_then(|v| v.get_child("FN", ns::VCARD))
        .map(Element::text);
    assert_eq!(fn_.as_deref(), Some("Alice A."));
    // Another user reads it from the bare JID.
    let mut b = s.login("bob", "bob-pw", "b").await;
    let other = b
        .iq(iq_get(Element::new("vCard", ns::VCARD)).attr("to", "alice@localhost"))
        .await;
    assert_eq!(other.get_attr("from"), Some("alice@localhost"));
    assert!(
        other
            .get_child("vCard", ns::VCARD)
            .and_then(|v| v.get_child("FN", ns::VCARD))
            .is_some()
    );

    let info = a
        .iq(iq_get(Element::new("query", ns::DISCO_INFO)).attr("to", "localhost"))
        .await;
    let q = info.get_child("query", ns::DISCO_INFO).unwrap();
    let features: Vec<&str> = q
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.get_attr("var"))
        .collect();
    for f in [ns::DISCO_INFO, ns::PING, ns::VCARD, ns::VERSION, ns::TIME] {
        assert!(features.contains(&f), "missing {f} in {features:?}");
    }
    let identity = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(
        (identity.get_attr("category"), identity.get_attr("type")),
        (Some("server"), Some("im"))
    );
    let items = a
        .iq(iq_get(Element::new("query", ns::DISCO_ITEMS)).attr("to", "localhost"))
        .await;
    assert_eq!(items.get_attr("type"), Some("result"));

    let pong = a
        .iq(iq_get(Element::new("ping", ns::PING)).attr("to", "localhost"))
        .await;
    assert_eq!(pong.get_attr("type"), Some("result"));
    let version = a
        .iq(iq_get(Element::new("query", ns::VERSION)).attr("to", "localhost"))
        .await;
    let name = version
        .get_child("query", ns::VERSION)
        .and_then(|q| q.get_child("name", ns::VERSION))
        .map(Element::text);
    assert_eq!(name.as_deref(), Some("Relais"));
    let time = a
        .iq(iq_get(Element::new("time", ns::TIME)).attr("to", "localhost"))
        .await;
    assert!(
        time.get_child("time", ns::TIME)
            .and_then(|t| t.get_child("utc", ns::TIME))
            .is_some(),
        "{time}"
    );

    let unknown = a
        .iq(iq_get(Element::new("query", "urn:example:nothing")).attr("to", "localhost"))
        .await;
    assert_eq!(unknown.get_attr("type"), Some("error"));
    assert_eq!(
        xmpp::error::stanza_error_condition(&unknown),
        Some(xmpp::StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn version_can_be_switched_off() {
    let s = Server::start_with("[session]\nversion_enabled = false\n");
    s.add_user("alice", "pw");
    let mut a = s.login("alice", "pw", "a").await;
    let version = a
        .iq(iq_get(Element::new("query", ns::VERSION)).attr("to", "localhost"))
        .await;
    assert_eq!(
        xmpp::error::stanza_error_condition(&version),
        Some(xmpp::StanzaErrorCondition::ServiceUnavailable)
    );
}

#[tokio::test]
async fn sigterm_closes_streams_with_system_shutdown() {
    let mut s = server_with_users(&["alice"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    a.go_online().await;
    let status = tokio::task::spawn_blocking(move || {
        let st = s.stop();
        (st, s)
    });
    assert_eq!(
        a.expect_stream_end().await,
        Some(StreamErrorCondition::SystemShutdown)
    );
    let (st, _s) = status.await.unwrap();
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "clean exit expected: {st:?}"
    );
}

#[tokio::test]
async fn data_survives_a_restart() {
    let s = server_with_users(&["alice", "bob"]);
    let mut a = s.login("alice", "alice-pw", "a").await;
    a.send(&chat("bob@localhost", "kept across restarts")).await;
    a.iq(iq_get(Element::new("ping", ns::PING)).attr("to", "localhost"))
        .await;
    drop(a);
    let dir = s.stop_keep_data();
    let s = Server::start_in(dir, "");
    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;
    let m = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("kept across restarts"));
}
