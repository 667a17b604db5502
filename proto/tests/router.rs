//! `GrpcRouter` against `RouterGrpcServer`, and a session node that routes through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{HANG, chat, login};
use proto::{GrpcRouter, RouterGrpcServer, SessionGrpcServer};
use router::{RouteError, Router};
use session::{LocalSessionService, SessionConfig};
use tokio::net::TcpListener;
use xmpp::error::stanza_error_condition;
use xmpp::{Element, StanzaErrorCondition, ns};

async fn serve_router(router: Arc<dyn Router>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = RouterGrpcServer::new(router).routes();
    tokio::spawn(proto::serve(listener, routes, std::future::pending()));
    format!("http://{addr}")
}

/// Records what it routes; refuses one domain as unavailable.
#[derive(Default)]
struct Recording(Mutex<Vec<Element>>);

#[async_trait]
impl Router for Recording {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        if stanza.get_attr("to") == Some("x@busy.example") {
            return Err(RouteError::Unavailable("busy".into()));
        }
        self.0.lock().unwrap().push(stanza);
        Ok(())
    }
}

#[tokio::test]
async fn local_router_no_route_comes_back_as_no_route() {
    let endpoint = serve_router(Arc::new(router::LocalRouter)).await;
    let remote = GrpcRouter::connect_lazy(endpoint).unwrap();
    let m = Element::new("message", ns::CLIENT)
        .attr("from", "alice@localhost/a")
        .attr("to", "a@elsewhere.example");
    let err = remote.route(m).await.err();
    assert!(
        matches!(err, Some(RouteError::NoRoute(ref d)) if d == "elsewhere.example"),
        "{err:?}"
    );
    assert_eq!(
        err.map(|e| e.condition()),
        Some(StanzaErrorCondition::RemoteServerNotFound)
    );
}

#[tokio::test]
async fn routed_stanzas_arrive_intact() {
    let rec = Arc::new(Recording::default());
    let endpoint = serve_router(rec.clone()).await;
    let remote = GrpcRouter::connect_lazy(endpoint).unwrap();
    let m = chat("bob@elsewhere.example/r", "a < b & c")
        .attr("from", "alice@localhost/a")
        .child(Element::new("x", "urn:example:ext").attr("k", "v\"'"));
    remote.route(m.clone()).await.unwrap();
    assert_eq!(rec.0.lock().unwrap().as_slice(), [m]);
    let busy = Element::new("message", ns::CLIENT).attr("to", "x@busy.example");
    let err = remote.route(busy).await.err();
    assert!(
        matches!(err, Some(RouteError::Unavailable(ref m)) if m == "busy"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_router_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let remote = GrpcRouter::connect_lazy(format!("http://{addr}")).unwrap();
    let err = remote
        .route(Element::new("message", ns::CLIENT).attr("to", "a@b.example"))
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(err, Some(router::ErrorCode::Unavailable));
}

#[tokio::test]
async fn a_session_node_bounces_through_a_remote_router() {
    // Session node whose router is remote: the sender gets the bounce over its own stream.
    let router_endpoint = serve_router(Arc::new(router::LocalRouter)).await;
    let storage = storage::sqlite::open_in_memory().unwrap();
    let svc = LocalSessionService::new(
        SessionConfig::default(),
        storage.clone(),
        Arc::new(GrpcRouter::connect_lazy(router_endpoint).unwrap()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = SessionGrpcServer::new(svc, storage.accounts.clone()).routes();
    tokio::spawn(proto::serve(listener, routes, std::future::pending()));
    storage
        .accounts
        .create_account(
            &"alice@localhost".parse().unwrap(),
            &storage::Credentials { keys: vec![] },
        )
        .await
        .unwrap();
    let edge = proto::GrpcSessionClient::connect(format!("http://{addr}"), "edge")
        .await
        .unwrap();
    let mut alice = login(&edge, "alice@localhost/a").await;
    alice.send(chat("bob@elsewhere.example", "hello?")).await;
    let bounce = tokio::time::timeout(HANG, alice.until(|e| e.name() == "message"))
        .await
        .unwrap();
    assert_eq!(bounce.get_attr("type"), Some("error"));
    assert_eq!(bounce.get_attr("from"), Some("bob@elsewhere.example"));
    assert_eq!(
        stanza_error_condition(&bounce),
        Some(StanzaErrorCondition::RemoteServerNotFound)
    );
}
