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

// ---------------------------------------------------------------------------------------------
// Before login: bounded parser state and per-address connection caps. These speak raw XML on
// the plain (STARTTLS) port, from chosen loopback source addresses, as an attacker would.

const RAW_HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// What a raw connection saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Stream features: the server took the connection.
    Features,
    /// A stream error, then the end of the stream.
    Error(StreamErrorCondition),
    /// The socket closed without a stream error.
    Closed,
}

/// A raw connection and the parser of what the server sends on it.
struct Raw {
    tcp: tokio::net::TcpStream,
    parser: xmpp::parser::StreamParser,
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x).
async fn raw_from(addr: std::net::SocketAddr, from: &str) -> Raw {
    let sock = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
    sock.bind(format!("{from}:0").parse().unwrap())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let tcp = sock
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    Raw {
        tcp,
        parser: xmpp::parser::StreamParser::new(xmpp::parser::Limits::default()),
    }
}

/// Reads until features, a stream error or the end of the socket (10 s at most).
async fn seen(raw: &mut Raw) -> Seen {
    use tokio::io::AsyncReadExt;
    use xmpp::parser::StreamEvent;
    let Raw { tcp, parser: p } = raw;
    let mut buf = vec![0u8; 4096];
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return Seen::Closed;
            }
            p.feed(&buf[..n]);
            while let Ok(Some(ev)) = p.next_event() {
                let StreamEvent::Stanza(el) = ev else {
                    continue;
                };
                if el.is("features", ns::STREAM) {
                    return Seen::Features;
                }
                if el.is("error", ns::STREAM) {
                    let cond = el
                        .children()
                        .find_map(|c| StreamErrorCondition::from_name(c.name()))
                        .unwrap_or_else(|| panic!("stream error without condition: {el}"));
                    return Seen::Error(cond);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("nothing decisive from the server in 10 s"))
}

/// True when the server has closed `tcp` (reads to the end, 3 s at most).
async fn closed_by_server(raw: &mut Raw) -> bool {
    use tokio::io::AsyncReadExt;
    let tcp = &mut raw.tcp;
    let mut buf = vec![0u8; 4096];
    let drain = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .unwrap_or(false)
}

async fn write(raw: &mut Raw, data: &[u8]) {
    use tokio::io::AsyncWriteExt;
    // The server may already have closed a hostile connection.
    let _ = raw.tcp.write_all(data).await;
}

#[tokio::test]
async fn half_sent_stanzas_of_tiny_elements_are_cut_off_before_login() {
    // Long enough an auth timeout that the connections under the limit stay open meanwhile.
    let mut s = Server::start_with("[limits]\nmax_stanza_bytes = 20000\nauth_timeout_secs = 60\n");
    s.add_user("alice", "alice-pw");
    s.add_user("bob", "bob-pw");
    let fds = s.open_fds();
    // 30 connections (one per source address, so no per-address cap is involved), each
    // opening a stream and then sending an unclosed stanza of tiny elements, no TLS, no auth.
    // Under the pre-login element limit (128) they are held; over it, each is refused.
    let mut under = Vec::new();
    let mut over = Vec::new();
    for i in 0..30 {
        let mut c = raw_from(s.c2s, &format!("127.0.0.{}", 10 + i)).await;
        write(&mut c, RAW_HEADER).await;
        assert_eq!(seen(&mut c).await, Seen::Features);
        // `<message>` plus 128 `<a/>` is one element too many. The hostile bytes stop where
        // the limit is crossed, so the server has read them all when it closes (unread
        // bytes would turn its close into a reset that loses the stream error).
        let n = if i % 2 == 0 { 100 } else { 128 };
        let stanza = format!("<message to='bob@localhost'>{}", "<a/>".repeat(n));
        write(&mut c, stanza.as_bytes()).await;
        if i % 2 == 0 {
            under.push(c);
        } else {
            over.push(c);
        }
    }
    for c in &mut over {
        assert_eq!(
            seen(c).await,
            Seen::Error(StreamErrorCondition::PolicyViolation)
        );
        assert!(closed_by_server(c).await);
    }
    // The ones under the limit are still waiting for the end of their stanza.
    for c in &mut under {
        assert!(!closed_by_server(c).await, "closed under the limit");
    }
    // Text counts too: 8 KiB and one byte of character data before login is over the limit
    // although the stanza is under 16 KiB.
    let mut t = raw_from(s.c2s, "127.0.0.50").await;
    write(&mut t, RAW_HEADER).await;
    assert_eq!(seen(&mut t).await, Seen::Features);
    let text = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}",
        "x".repeat(8 * 1024 + 1)
    );
    write(&mut t, text.as_bytes()).await;
    assert_eq!(
        seen(&mut t).await,
        Seen::Error(StreamErrorCondition::PolicyViolation)
    );
    drop((under, over, t));

    // Once bound, the bound limits apply: 500 elements (over the pre-login 128) are fine.
    let mut a = bound(&s).await;
    let mut b = s.login("bob", "bob-pw", "many").await;
    b.send(&Element::new("presence", ns::CLIENT)).await;
    let mut m = chat("bob@localhost/many", "with many children");
    for _ in 0..500 {
        m.append_child(Element::new("x", "urn:example:tiny"));
    }
    a.send(&m).await;
    let got = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(got.children().filter(|c| c.name() == "x").count(), 500);
    drop((a, b));
    still_serving(&mut s, fds).await;
}

#[tokio::test]
async fn per_address_caps_refuse_the_next_connection() {
    let mut s = Server::start_with(
        "[limits]\nmax_stanza_bytes = 20000\nauth_timeout_secs = 30\n\
         max_connections_per_ip = 4\nmax_unauthenticated_per_ip = 2\n",
    );
    s.add_user("alice", "alice-pw");
    s.add_user("bob", "bob-pw");
    let fds = s.open_fds();
    // Two unauthenticated connections from one address are taken; the third is refused
    // with <policy-violation/> before it sends anything.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = raw_from(s.c2s, "127.0.0.5").await;
        write(&mut c, RAW_HEADER).await;
        assert_eq!(seen(&mut c).await, Seen::Features);
        held.push(c);
    }
    let mut refused = raw_from(s.c2s, "127.0.0.5").await;
    assert_eq!(
        seen(&mut refused).await,
        Seen::Error(StreamErrorCondition::PolicyViolation)
    );
    assert!(closed_by_server(&mut refused).await);
    // On the direct-TLS port the refusal is a plain close (no handshake is paid for).
    let mut tls = raw_from(s.c2s_tls, "127.0.0.5").await;
    assert_eq!(seen(&mut tls).await, Seen::Closed);
    // Another address still connects.
    let mut other = raw_from(s.c2s, "127.0.0.6").await;
    write(&mut other, RAW_HEADER).await;
    assert_eq!(seen(&mut other).await, Seen::Features);
    // Closing one releases its place.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut c = raw_from(s.c2s, "127.0.0.5").await;
        write(&mut c, RAW_HEADER).await;
        match seen(&mut c).await {
            Seen::Features => {
                again = Some(c);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(again.is_some(), "the released place was not given back");

    // The total cap counts authenticated connections too (the harness logs in from
    // 127.0.0.1): three logged in and one unauthenticated fill it.
    let logged: Vec<Client> = login_alice(&s, 3).await;
    let mut fourth = raw_from(s.c2s, "127.0.0.1").await;
    write(&mut fourth, RAW_HEADER).await;
    assert_eq!(seen(&mut fourth).await, Seen::Features);
    let mut fifth = raw_from(s.c2s, "127.0.0.1").await;
    assert_eq!(
        seen(&mut fifth).await,
        Seen::Error(StreamErrorCondition::PolicyViolation)
    );
    drop((logged, fourth, fifth, held, again, other, refused, tls));
    // Everything is released: a normal pair logs in from 127.0.0.1 again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serving(&mut s, fds).await;
}

/// `n` clients logged in as alice from 127.0.0.1, one after the other.
async fn login_alice(s: &Server, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(s.login("alice", "alice-pw", &format!("cap-{i}")).await);
    }
    out
}
