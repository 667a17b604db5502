//! Hostile input: one test per class. Each checks the stream error RFC 6120 prescribes, and
//! then that a normal client still logs in and chats on the same server, which has neither
//! crashed nor kept the hostile connection open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::Server;
use tests::client::{Client, Incoming, body, chat};
use xmpp::{Element, StreamErrorCondition, ns};

/// A server with two users, shared by the assertions of one test.
fn server() -> Server {
    let s = Server::start_with(
        "[limits]\nmax_stanza_bytes = 20000\nread_burst_bytes = 65536\nread_rate_bytes = 16384\nauth_timeout_secs = 2\n",
    );
    s.add_user("alice", "alice-pw");
    s.add_user("bob", "bob-pw");
    s
}

/// After the hostile client: a normal pair still chats, and the server holds no extra sockets.
async fn still_serving(s: &mut Server, fds_before: usize) {
    assert!(s.is_running(), "server died");
    let mut a = s.login("alice", "alice-pw", "check-a").await;
    let mut b = s.login("bob", "bob-pw", "check-b").await;
    b.send(&Element::new("presence", ns::CLIENT)).await;
    a.iq(Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("to", "localhost")
        .child(Element::new("ping", ns::PING)))
        .await;
    a.send(&chat("bob@localhost/check-b", "still here")).await;
    let m = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("still here"));
    a.close().await;
    b.close().await;
    // The hostile connection must be gone: allow the server a moment to reap it.
    let mut fds = s.open_fds();
    for _ in 0..50 {
        if fds <= fds_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = s.open_fds();
    }
    assert!(
        fds <= fds_before,
        "leaked descriptors: {fds} > {fds_before}"
    );
}

/// An authenticated, bound client that will send something hostile.
async fn bound(s: &Server) -> Client {
    let mut c = s.login("alice", "alice-pw", "hostile").await;
    c.go_online().await;
    c
}

async fn expect_error(c: &mut Client, cond: StreamErrorCondition) {
    assert_eq!(c.expect_stream_end().await, Some(cond));
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    let mut s = server();
    let fds = s.open_fds();
    let mut c = bound(&s).await;
    c.send_raw(b"<message><body>unclosed</message>").await;
    expect_error(&mut c, StreamErrorCondition::NotWellFormed).await;
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn dtd_and_entities_are_restricted_xml() {
    let mut s = server();
    let fds = s.open_fds();
    for evil in [
        &b"<!DOCTYPE foo [<!ENTITY x 'boom'>]>"[..],
        b"<message to='bob@localhost'><body>&x;</body></message>",
        b"<!-- a comment -->",
        b"<?evil processing?>",
    ] {
        let mut c = bound(&s).await;
        c.send_raw(evil).await;
        expect_error(&mut c, StreamErrorCondition::RestrictedXml).await;
    }
    // A billion-laughs header before the stream even starts.
    let mut c = Client::connect_tls_raw(s.c2s_tls, &s.domain, s.cert_der()).await;
    c.send_raw(b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").await;
    expect_error(&mut c, StreamErrorCondition::RestrictedXml).await;
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn oversized_stanza_is_a_policy_violation() {
    let mut s = server();
    let fds = s.open_fds();
    let mut c = bound(&s).await;
    let big = "x".repeat(30_000);
    c.send(&chat("bob@localhost", &big)).await;
    expect_error(&mut c, StreamErrorCondition::PolicyViolation).await;
    // Too deep, too.
    let mut c = bound(&s).await;
    let deep = format!(
        "<message to='bob@localhost'>{}{}</message>",
        "<x>".repeat(100),
        "</x>".repeat(100)
    );
    c.send_raw(deep.as_bytes()).await;
    expect_error(&mut c, StreamErrorCondition::PolicyViolation).await;
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn a_flood_is_slowed_down_not_dropped() {
    let mut s = server();
    let fds = s.open_fds();
    let mut a = bound(&s).await;
    let mut b = s.login("bob", "bob-pw", "flooded").await;
    b.send(&Element::new("presence", ns::CLIENT)).await;
    // 200 messages of ~1 KiB: well past the 64 KiB burst at 16 KiB/s, so the server must
    // pause reading (backpressure) but still deliver every single one, in order.
    let n = 200;
    let pad = "y".repeat(1000);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            a.send(&chat("bob@localhost/flooded", &format!("{i} {pad}")))
                .await;
        }
        a
    });
    for i in 0..n {
        let m = b.recv_matching(|e| e.name() == "message").await;
        let text = body(&m).unwrap();
        assert!(
            text.starts_with(&format!("{i} ")),
            "message {i} out of order: {}",
            &text[..10]
        );
    }
    let a = sender.await.unwrap();
    drop(a);
    drop(b);
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn invalid_jids_get_jid_malformed() {
    let mut s = server();
    let fds = s.open_fds();
    let mut c = bound(&s).await;
    let long_local = format!("{}@localhost", "a".repeat(1100));
    for bad in [
        "@localhost",
        "alice@",
        long_local.as_str(),
        "a\"b@localhost",
    ] {
        c.send(&chat(bad, "x")).await;
        let err = c
            .recv_matching(|e| e.name() == "message" && e.get_attr("type") == Some("error"))
            .await;
        assert_eq!(
            xmpp::error::stanza_error_condition(&err),
            Some(xmpp::StanzaErrorCondition::JidMalformed),
            "for to={bad}: {err}"
        );
    }
    // A bad resource at bind time is a bind error, not a crash.
    let mut d = s.connect().await;
    d.auth_scram("bob", "bob-pw", xmpp::scram::ScramHash::Sha256, false)
        .await
        .unwrap();
    let bind = Element::new("iq", ns::CLIENT).attr("type", "set").child(
        Element::new("bind", ns::BIND)
            .child(Element::new("resource", ns::BIND).text_node("x".repeat(2000))),
    );
    let r = d.iq(bind).await;
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
    drop((c, d));
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn spoofed_from_is_invalid_from() {
    let mut s = server();
    let fds = s.open_fds();
    let mut c = bound(&s).await;
    let spoof = chat("bob@localhost", "trust me").attr("from", "bob@localhost/evil");
    c.send(&spoof).await;
    expect_error(&mut c, StreamErrorCondition::InvalidFrom).await;
    // Its own bare JID as from is fine.
    let mut ok = bound(&s).await;
    ok.send(&chat("alice@localhost/hostile", "me").attr("from", "alice@localhost"))
        .await;
    let m = ok.recv_matching(|e| e.name() == "message").await;
    assert_eq!(
        m.get_attr("from"),
        Some("alice@localhost/hostile"),
        "stamped with the full jid"
    );
    drop(ok);
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn wrong_passwords_are_slowed_down_and_cut_off() {
    let mut s = server();
    let fds = s.open_fds();
    // Several connections of wrong guesses: each gets not-authorized; after the free allowance
    // the answers are delayed, and every stream is closed after three failures.
    for _ in 0..2 {
        let mut c = s.connect().await;
        for _ in 0..3 {
            let e = c
                .auth_scram("alice", "guess", xmpp::scram::ScramHash::Sha256, false)
                .await
                .unwrap_err();
            assert_eq!(e, "not-authorized");
        }
        assert_eq!(c.recv().await, Incoming::Closed);
    }
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn stanzas_before_auth_and_idle_unauthenticated_connections() {
    let mut s = server();
    let fds = s.open_fds();
    let mut c = s.connect().await;
    c.send(&chat("bob@localhost", "no auth")).await;
    expect_error(&mut c, StreamErrorCondition::NotAuthorized).await;
    // A connection that never authenticates is closed after auth_timeout_secs (2 s here).
    let mut idle = s.connect().await;
    let end = tokio::time::timeout(Duration::from_secs(10), idle.expect_stream_end())
        .await
        .unwrap();
    assert_eq!(end, Some(StreamErrorCondition::ConnectionTimeout));
    // Unknown host and bad namespace on the stream header.
    let mut h = Client::connect_tls_raw(s.c2s_tls, &s.domain, s.cert_der()).await;
    h.send_raw(b"<stream:stream to='elsewhere.example' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").await;
    expect_error(&mut h, StreamErrorCondition::HostUnknown).await;
    let mut n = Client::connect_tls_raw(s.c2s_tls, &s.domain, s.cert_der()).await;
    n.send_raw(b"<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='urn:wrong' version='1.0'>").await;
    expect_error(&mut n, StreamErrorCondition::InvalidNamespace).await;
    still_serving(&mut s, fds).await;
}
