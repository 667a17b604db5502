//! Client scenarios against the real binary over real TLS (RFC 6120, RFC 6121).

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

tests::client_scenarios!(tests::deploy::standalone);

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
