//! Deployments the client scenarios run against, and the scenarios themselves, written
//! once: a standalone server, and a cluster whose two test users sit on different edges and
//! different session nodes.

use std::future::Future;

use crate::Server;
use crate::client::Client;
use crate::cluster::Cluster;

/// Where the scenario clients log in.
pub trait Deployment {
    /// The server's domain.
    fn domain(&self) -> &str;
    fn add_user(&self, local: &str, password: &str);
    /// A client logged in over STARTTLS with SCRAM-SHA-256 and bound to `resource`. In a
    /// cluster, each login of a user goes through the next edge.
    fn login(&self, local: &str, password: &str, resource: &str) -> impl Future<Output = Client>;
}

impl Deployment for Server {
    fn domain(&self) -> &str {
        &self.domain
    }
    fn add_user(&self, local: &str, password: &str) {
        Server::add_user(self, local, password);
    }
    fn login(&self, local: &str, password: &str, resource: &str) -> impl Future<Output = Client> {
        Server::login(self, local, password, resource)
    }
}

impl Deployment for Cluster {
    fn domain(&self) -> &str {
        &self.domain
    }
    fn add_user(&self, local: &str, password: &str) {
        Cluster::add_user(self, local, password);
    }
    fn login(&self, local: &str, password: &str, resource: &str) -> impl Future<Output = Client> {
        Cluster::login(self, local, password, resource)
    }
}

/// A standalone server with `users` (password `{user}-pw`).
pub fn standalone(users: &[&str]) -> Server {
    let s = Server::start();
    for u in users {
        s.add_user(u, &format!("{u}-pw"));
    }
    s
}

/// A cluster (2 edges, 2 session nodes, a router, Redis) with `users`; `alice` is owned by
/// the first session node and `bob` by the second.
pub fn cluster(users: &[&str]) -> Cluster {
    let c = Cluster::start(crate::cluster::ClusterOpts::default());
    for u in users {
        c.add_user(u, &format!("{u}-pw"));
    }
    c
}

/// The client scenarios of RFC 6120/6121 against a deployment: `$start(&users)` returns a
/// running [`Deployment`] with those users (password `{user}-pw`).
#[macro_export]
macro_rules! client_scenarios {
    ($start:path) => {
        mod client_scenarios {
            #![allow(clippy::unwrap_used, clippy::expect_used)]
            use std::time::Duration;

            use xmpp::{Element, StreamErrorCondition, ns};
            use $crate::client::{body, chat};
            use $crate::deploy::Deployment;

            fn iq_get(payload: Element) -> Element {
                Element::new("iq", ns::CLIENT)
                    .attr("type", "get")
                    .child(payload)
            }

            #[tokio::test]
            async fn same_resource_replaces_the_old_session_with_conflict() {
                let s = $start(&["alice", "bob"]);
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
                let s = $start(&["alice", "bob"]);
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
                let s = $start(&["alice", "bob"]);
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
                    .recv_matching(|e| {
                        e.name() == "presence" && e.get_attr("type") == Some("subscribe")
                    })
                    .await;
                assert_eq!(req.get_attr("from"), Some("alice@localhost"));
                b.send(
                    &Element::new("presence", ns::CLIENT)
                        .attr("to", "alice@localhost")
                        .attr("type", "subscribed"),
                )
                .await;
                let ok = a
                    .recv_matching(|e| {
                        e.name() == "presence" && e.get_attr("type") == Some("subscribed")
                    })
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
                a.recv_matching(|e| {
                    e.name() == "presence" && e.get_attr("type") == Some("subscribe")
                })
                .await;
                a.send(
                    &Element::new("presence", ns::CLIENT)
                        .attr("to", "bob@localhost")
                        .attr("type", "subscribed"),
                )
                .await;
                b.recv_matching(|e| {
                    e.name() == "presence" && e.get_attr("type") == Some("subscribed")
                })
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
                    .recv_matching(|e| {
                        e.name() == "presence" && e.get_child("show", ns::CLIENT).is_some()
                    })
                    .await;
                assert_eq!(away.get_attr("from"), Some("alice@localhost/a"));
                a.close().await;
                let gone = b
                    .recv_matching(|e| {
                        e.name() == "presence" && e.get_attr("type") == Some("unavailable")
                    })
                    .await;
                assert_eq!(gone.get_attr("from"), Some("alice@localhost/a"));
            }

            #[tokio::test]
            async fn messages_to_bare_and_full_jids() {
                let s = $start(&["alice", "bob"]);
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
                let s = $start(&["alice", "bob"]);
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
                let s = $start(&["alice", "bob"]);
                let mut a = s.login("alice", "alice-pw", "a").await;
                let vcard = Element::new("vCard", ns::VCARD)
                    .child(Element::new("FN", ns::VCARD).text_node("Alice A."));
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
                    .iq(iq_get(Element::new("query", "urn:example:nothing"))
                        .attr("to", "localhost"))
                    .await;
                assert_eq!(unknown.get_attr("type"), Some("error"));
                assert_eq!(
                    xmpp::error::stanza_error_condition(&unknown),
                    Some(xmpp::StanzaErrorCondition::ServiceUnavailable)
                );
            }
        }
    };
}
