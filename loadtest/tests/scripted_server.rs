//! The load generator against a tiny scripted XMPP server in the same process (no Relais
//! needed): STARTTLS and direct TLS, SCRAM-SHA-1/256 (including server-final sent as a
//! challenge), bind, roster, presence echo, 1:1 routing. The server can be told to drop
//! messages, so the test checks that lost messages are counted as failed, not delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use loadtest::client::XmlStream;
use loadtest::config::{Chat, LoginStorm, Mech, Presence, Scenario, Target, TlsMode};
use loadtest::report::RunReport;
use loadtest::{RunOptions, run};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use xmpp::parser::StreamEvent;
use xmpp::scram::{ChannelBinding, ScramHash, ScramKeys, ScramServer, derive_keys};
use xmpp::{Element, ns};

const PASSWORD: &str = "scripted-pass";

#[derive(Clone, Copy)]
struct Behaviour {
    /// Drop every Nth message (0: none).
    drop_every: u64,
    /// Send server-final-message in a challenge, then success without data.
    final_in_challenge: bool,
}

struct State {
    acceptor: TlsAcceptor,
    keys: HashMap<&'static str, ScramKeys>,
    online: Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>,
    routed: AtomicU64,
    behaviour: Behaviour,
}

fn tls_acceptor() -> TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

const HEADER: &[u8] =
    b"<?xml version='1.0'?><stream:stream from='localhost' id='s1' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

async fn expect_open<S: AsyncRead + AsyncWrite + Unpin>(xs: &mut XmlStream<S>) -> Option<()> {
    match xs.next().await.ok()? {
        StreamEvent::Open(_) => Some(()),
        _ => None,
    }
}

async fn start(direct: bool, behaviour: Behaviour) -> (SocketAddr, Arc<State>) {
    let salt = b"0123456789abcdef";
    let keys = HashMap::from([
        (
            "SCRAM-SHA-1",
            derive_keys(ScramHash::Sha1, PASSWORD, salt, 4096),
        ),
        (
            "SCRAM-SHA-256",
            derive_keys(ScramHash::Sha256, PASSWORD, salt, 4096),
        ),
    ]);
    let state = Arc::new(State {
        acceptor: tls_acceptor(),
        keys,
        online: Mutex::new(HashMap::new()),
        routed: AtomicU64::new(0),
        behaviour,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let st = Arc::clone(&st);
            tokio::spawn(async move {
                let _ = serve(tcp, direct, st).await;
            });
        }
    });
    (addr, state)
}

async fn serve(tcp: tokio::net::TcpStream, direct: bool, st: Arc<State>) -> Option<()> {
    let tls = if direct {
        st.acceptor.accept(tcp).await.ok()?
    } else {
        let mut plain = XmlStream::new(tcp);
        expect_open(&mut plain).await?;
        plain.send(HEADER).await.ok()?;
        plain
            .send(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>")
            .await
            .ok()?;
        let el = plain.stanza().await.ok()?;
        if !el.is("starttls", ns::TLS) {
            return None;
        }
        plain
            .send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .ok()?;
        let (tcp, _) = plain.into_parts();
        st.acceptor.accept(tcp).await.ok()?
    };
    let mut xs = XmlStream::new(tls);
    expect_open(&mut xs).await?;
    xs.send(HEADER).await.ok()?;
    xs.send(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>SCRAM-SHA-256</mechanism></mechanisms></stream:features>")
        .await
        .ok()?;
    // SASL
    let auth = xs.stanza().await.ok()?;
    let mech = auth.get_attr("mechanism")?.to_string();
    let keys = st.keys.get(mech.as_str())?;
    let mut scram = ScramServer::new(keys.hash, false, ChannelBinding::default());
    let (user, _) = scram.client_first(&B64.decode(auth.text()).ok()?).ok()?;
    let first = B64.encode(scram.server_first(Some(keys)));
    xs.send(format!("<challenge xmlns='{}'>{first}</challenge>", ns::SASL).as_bytes())
        .await
        .ok()?;
    let resp = xs.stanza().await.ok()?;
    match scram.client_final(&B64.decode(resp.text()).ok()?) {
        Ok(v) if st.behaviour.final_in_challenge => {
            let v = B64.encode(v);
            xs.send(format!("<challenge xmlns='{}'>{v}</challenge>", ns::SASL).as_bytes())
                .await
                .ok()?;
            let empty = xs.stanza().await.ok()?;
            if !empty.is("response", ns::SASL) {
                return None;
            }
            xs.send(format!("<success xmlns='{}'/>", ns::SASL).as_bytes())
                .await
                .ok()?;
        }
        Ok(v) => {
            let v = B64.encode(v);
            xs.send(format!("<success xmlns='{}'>{v}</success>", ns::SASL).as_bytes())
                .await
                .ok()?;
        }
        Err(_) => {
            xs.send(
                format!(
                    "<failure xmlns='{}'><not-authorized/></failure></stream:stream>",
                    ns::SASL
                )
                .as_bytes(),
            )
            .await
            .ok()?;
            return None;
        }
    }
    xs.reset();
    expect_open(&mut xs).await?;
    xs.send(HEADER).await.ok()?;
    xs.send(b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>")
        .await
        .ok()?;
    let bind = xs.stanza().await.ok()?;
    let res = bind
        .get_child("bind", ns::BIND)?
        .get_child("resource", ns::BIND)?
        .text();
    let bare = format!("{user}@localhost");
    let full = format!("{bare}/{res}");
    let reply = Element::new("iq", ns::CLIENT)
        .attr("type", "result")
        .attr("id", bind.get_attr("id")?)
        .child(
            Element::new("bind", ns::BIND)
                .child(Element::new("jid", ns::BIND).text_node(full.clone())),
        );
    xs.send(&reply.to_bytes_in(ns::CLIENT)).await.ok()?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    st.online.lock().unwrap().insert(bare.clone(), tx);
    let result = session(&mut xs, &mut rx, &st, &full).await;
    st.online.lock().unwrap().remove(&bare);
    result
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    xs: &mut XmlStream<S>,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    st: &State,
    full: &str,
) -> Option<()> {
    loop {
        tokio::select! {
            n = xs.read_some() => {
                if n.ok()? == 0 {
                    return Some(());
                }
                while let Some(ev) = xs.poll_event().ok()? {
                    match ev {
                        StreamEvent::Close => {
                            xs.send(b"</stream:stream>").await.ok()?;
                            return Some(());
                        }
                        StreamEvent::Open(_) => return None,
                        StreamEvent::Stanza(mut el) => {
                            el.set_attr("from", full);
                            match el.name() {
                                "iq" => {
                                    let r = Element::new("iq", ns::CLIENT)
                                        .attr("type", "result")
                                        .attr("id", el.get_attr("id").unwrap_or(""))
                                        .child(Element::new("query", ns::ROSTER));
                                    xs.send(&r.to_bytes_in(ns::CLIENT)).await.ok()?;
                                }
                                "presence" if el.get_attr("to").is_none() => {
                                    xs.send(&el.to_bytes_in(ns::CLIENT)).await.ok()?;
                                }
                                "message" => {
                                    let n = st.routed.fetch_add(1, Ordering::Relaxed) + 1;
                                    let every = st.behaviour.drop_every;
                                    if every > 0 && n.is_multiple_of(every) {
                                        continue;
                                    }
                                    let to = el.get_attr("to").unwrap_or("").to_string();
                                    let peer = st.online.lock().unwrap().get(&to).cloned();
                                    if let Some(peer) = peer {
                                        let _ = peer.send(el.to_bytes_in(ns::CLIENT));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            out = rx.recv() => xs.send(&out?).await.ok()?,
        }
    }
}

fn target(addr: SocketAddr, tls: TlsMode, mech: Mech, password: &str) -> Target {
    Target {
        server: addr.to_string(),
        tls,
        mech,
        password: password.to_string(),
        sources: 3,
        timeout_secs: 10.0,
        ..Target::default()
    }
}

async fn run_one(target: Target, scenario: Scenario) -> RunReport {
    run(RunOptions {
        target,
        scenarios: vec![scenario],
        server_pids: vec![std::process::id()],
        max_time: Duration::from_secs(40),
        progress: false,
    })
    .await
    .unwrap()
}

fn chat(users: u32, rate: f64) -> Scenario {
    Scenario::Chat(Chat {
        users,
        contacts: 2,
        rate,
        duration_secs: 1.0,
        messages: None,
        body_bytes: 40,
        login_rate: 500.0,
        concurrency: 10,
        settle_secs: 0.1,
        drain_secs: 3.0,
        sm: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_starttls_delivers_everything() {
    let (addr, _st) = start(
        false,
        Behaviour {
            drop_every: 0,
            final_in_challenge: false,
        },
    )
    .await;
    let report = run_one(
        target(addr, TlsMode::Starttls, Mech::Auto, PASSWORD),
        chat(8, 200.0),
    )
    .await;
    let r = &report.scenarios[0];
    assert_eq!(r.ops["login"].succeeded, 8, "{r:#?}");
    assert_eq!(r.mechanisms.get("SCRAM-SHA-256"), Some(&8));
    let m = &r.ops["message"];
    assert_eq!(
        (m.attempted, m.succeeded, m.failed),
        (200, 200, 0),
        "{r:#?}"
    );
    assert_eq!(r.latency["message"].count, 200);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.ops["close"].succeeded, 8);
    assert!(
        r.server
            .as_ref()
            .unwrap()
            .cpu_ms_per_1000_messages
            .is_some()
    );
    assert!(r.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_messages_are_counted_as_failed() {
    let (addr, st) = start(
        true,
        Behaviour {
            drop_every: 10,
            final_in_challenge: false,
        },
    )
    .await;
    let mut s = chat(6, 300.0);
    if let Scenario::Chat(c) = &mut s {
        c.drain_secs = 1.0;
    }
    let report = run_one(target(addr, TlsMode::Direct, Mech::ScramSha1, PASSWORD), s).await;
    let r = &report.scenarios[0];
    let m = &r.ops["message"];
    assert_eq!(m.attempted, 300);
    assert_eq!(st.routed.load(Ordering::Relaxed), 300);
    assert_eq!((m.succeeded, m.failed), (270, 30), "{r:#?}");
    assert_eq!(r.errors.get("message/undelivered"), Some(&30));
    assert_eq!(r.mechanisms.get("SCRAM-SHA-1"), Some(&6));
    assert!(!r.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_storm_handles_final_in_challenge_and_bad_passwords() {
    let (addr, _st) = start(
        false,
        Behaviour {
            drop_every: 0,
            final_in_challenge: true,
        },
    )
    .await;
    let storm = Scenario::LoginStorm(LoginStorm {
        users: 5,
        rate: 100.0,
        concurrency: 3,
        rounds: 2,
    });
    let report = run_one(
        target(addr, TlsMode::Starttls, Mech::Auto, PASSWORD),
        storm.clone(),
    )
    .await;
    let r = &report.scenarios[0];
    let l = &r.ops["login"];
    assert_eq!((l.attempted, l.succeeded, l.failed), (10, 10, 0), "{r:#?}");
    assert_eq!(r.ops["close"].succeeded, 10);
    assert!(r.server.as_ref().unwrap().cpu_ms_per_login.is_some());

    let report = run_one(target(addr, TlsMode::Starttls, Mech::Auto, "wrong"), storm).await;
    let r = &report.scenarios[0];
    assert_eq!(r.ops["login"].failed, 10, "{r:#?}");
    assert_eq!(
        r.errors.get("login/auth/not-authorized"),
        Some(&10),
        "{:?}",
        r.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_echo_is_counted() {
    let (addr, _st) = start(
        true,
        Behaviour {
            drop_every: 0,
            final_in_challenge: false,
        },
    )
    .await;
    // The scripted server has no rosters: updates echo to the sender but reach no contact, and
    // subscription requests are never answered.
    let p = Scenario::Presence(Presence {
        users: 5,
        contacts: 1,
        rate: 50.0,
        duration_secs: 1.0,
        login_rate: 100.0,
        concurrency: 5,
        setup_timeout_secs: 0.5,
        drain_secs: 0.5,
    });
    let report = run_one(target(addr, TlsMode::Direct, Mech::Auto, PASSWORD), p).await;
    let r = &report.scenarios[0];
    let pr = &r.ops["presence"];
    assert_eq!(
        (pr.attempted, pr.succeeded, pr.failed),
        (50, 50, 0),
        "{r:#?}"
    );
    let d = &r.ops["presence-delivery"];
    assert_eq!(
        (d.attempted, d.succeeded, d.failed),
        (100, 0, 100),
        "{r:#?}"
    );
    assert_eq!(r.ops["subscribe"].failed, 10);
}
