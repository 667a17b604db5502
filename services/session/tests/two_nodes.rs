//! Two session nodes of one cluster, in one process: real SQLite storage shared by both (as a
//! cluster shares its database), a `Locality` that splits the accounts between the nodes, and
//! a router that hands a stanza to the owning node's `deliver_from_peer`, as the gRPC router
//! does between processes. Everything RFC 6121 does must work the same across the split.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use common::*;
use router::{RouteError, Router};
use session::{LocalSessionService, Locality, SessionConfig};
use xmpp::{BareJid, Element, Jid, ns};

/// Accounts whose localpart starts with `a` live on node 0, the rest on node 1.
fn owner(account: &BareJid) -> usize {
    match account.local() {
        Some(l) if l.starts_with('a') => 0,
        _ => 1,
    }
}

struct Half(usize);

impl Locality for Half {
    fn is_local(&self, account: &BareJid) -> bool {
        owner(account) == self.0
    }
}

#[derive(Default)]
struct PeerRouter {
    nodes: OnceLock<[Weak<LocalSessionService>; 2]>,
}

#[async_trait]
impl Router for PeerRouter {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        let to = stanza.get_attr("to").and_then(|t| t.parse::<Jid>().ok());
        let Some(to) = to.filter(|j| j.domain() == "localhost") else {
            return Err(RouteError::NoRoute("elsewhere".into()));
        };
        let nodes = self
            .nodes
            .get()
            .ok_or_else(|| RouteError::Unavailable("no nodes".into()))?;
        let node = nodes[owner(&to.bare())]
            .upgrade()
            .ok_or_else(|| RouteError::Unavailable("node gone".into()))?;
        node.deliver_from_peer(stanza)
            .await
            .map_err(|e| RouteError::Unavailable(e.to_string()))
    }
}

/// Node environments for `alice` (node 0) and `bob` (node 1).
fn cluster() -> (Env, Env) {
    let storage = storage::sqlite::open_in_memory().unwrap();
    let router = Arc::new(PeerRouter::default());
    let make = |i| {
        let svc = LocalSessionService::with_locality(
            SessionConfig::default(),
            storage.clone(),
            router.clone(),
            Some(Arc::new(Half(i))),
        );
        Env {
            svc,
            storage: storage.clone(),
        }
    };
    let (a, b) = (make(0), make(1));
    let _ = router
        .nodes
        .set([Arc::downgrade(&a.svc), Arc::downgrade(&b.svc)]);
    (a, b)
}

fn presence_from<'a>(stanzas: &'a [Element], from: &str) -> Option<&'a Element> {
    stanzas
        .iter()
        .find(|s| s.name() == "presence" && s.get_attr("from") == Some(from))
}

#[tokio::test]
async fn subscription_presence_and_messages_cross_nodes() {
    let (na, nb) = cluster();
    let mut alice = na.online("alice@localhost/a", 0).await;
    let mut bob = nb.online("bob@localhost/b", 0).await;

    alice
        .send(pres(Some("bob@localhost"), Some("subscribe")))
        .await;
    let req = bob.stanzas();
    assert!(
        req.iter().any(|s| s.get_attr("type") == Some("subscribe")),
        "{req:#?}"
    );
    bob.send(pres(Some("alice@localhost"), Some("subscribed")))
        .await;
    let got = alice.stanzas();
    assert!(
        got.iter().any(|s| s.get_attr("type") == Some("subscribed")),
        "{got:#?}"
    );
    assert!(
        presence_from(&got, "bob@localhost/b").is_some(),
        "bob's presence after subscribed: {got:#?}"
    );
    bob.drain();

    // Both nodes wrote the shared roster of their own user.
    let item = na.item("alice@localhost", "bob@localhost").await.unwrap();
    assert_eq!(item.subscription, storage::Subscription::To);
    let item = nb.item("bob@localhost", "alice@localhost").await.unwrap();
    assert_eq!(item.subscription, storage::Subscription::From);

    // Bob's next presence reaches Alice (subscribed to him) through node 0; Alice's own does
    // not reach Bob, who has no subscription to her.
    bob.send(pres(None, None).child(Element::new("show", ns::CLIENT).text_node("dnd")))
        .await;
    let p = alice.stanzas();
    assert!(presence_from(&p, "bob@localhost/b").is_some(), "{p:#?}");
    bob.drain();
    alice
        .send(pres(None, None).child(Element::new("show", ns::CLIENT).text_node("away")))
        .await;
    let p = bob.stanzas();
    assert!(presence_from(&p, "alice@localhost/a").is_none(), "{p:#?}");

    alice
        .send(msg("bob@localhost", Some("chat"), Some("across")))
        .await;
    let m = bob.one();
    assert_eq!(m.get_attr("from"), Some("alice@localhost/a"));
    bob.send(msg("alice@localhost/a", Some("chat"), Some("back")))
        .await;
    let back = alice.stanzas();
    assert!(back.iter().any(|s| s.name() == "message"), "{back:#?}");

    // Bob leaves: alice (subscribed to him) sees unavailable, and messages go offline on
    // bob's node.
    bob.close().await;
    let gone = alice.stanzas();
    assert!(
        gone.iter()
            .any(|s| s.get_attr("type") == Some("unavailable")),
        "{gone:#?}"
    );
    alice
        .send(msg("bob@localhost", Some("chat"), Some("later")))
        .await;
    assert_eq!(nb.offline_count("bob@localhost").await, 1);
}

#[tokio::test]
async fn errors_and_iqs_come_back_across_nodes() {
    let (na, nb) = cluster();
    let mut alice = na.online("alice@localhost/a", 0).await;
    nb.account("zed@localhost").await;
    // An IQ to an offline full JID on the other node: service-unavailable comes back.
    let r = alice
        .iq(iq(
            "get",
            Some("zed@localhost/x"),
            Element::new("ping", ns::PING),
        ))
        .await;
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
    // A message to an account that exists nowhere bounces from the owning node.
    alice
        .send(msg("nobody@localhost", Some("chat"), Some("?")))
        .await;
    let err = alice.one();
    assert_eq!(err.get_attr("type"), Some("error"), "{err}");
    // A vCard on the other node is readable.
    let mut zed = nb.online("zed@localhost/z", 0).await;
    zed.iq(iq(
        "set",
        None,
        Element::new("vCard", ns::VCARD).child(Element::new("FN", ns::VCARD).text_node("Zed")),
    ))
    .await;
    let v = alice
        .iq(iq(
            "get",
            Some("zed@localhost"),
            Element::new("vCard", ns::VCARD),
        ))
        .await;
    assert!(
        v.get_child("vCard", ns::VCARD)
            .and_then(|c| c.get_child("FN", ns::VCARD))
            .is_some(),
        "{v}"
    );
}
