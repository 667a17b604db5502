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

/// Concurrent stanzas on the route streams: every one gets its own answer (by `seq`), and the
/// stanzas of one recipient arrive in the order they were sent, whatever lane they share.
#[tokio::test]
async fn streamed_routes_keep_each_recipients_order_and_answers() {
    let rec = Arc::new(Recording::default());
    let endpoint = serve_router(rec.clone()).await;
    let remote = GrpcRouter::connect_lazy(endpoint).unwrap();
    let mut tasks = Vec::new();
    for r in 0..12 {
        let remote = remote.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                let to = format!("user{r}@elsewhere.example/res");
                let m = chat(&to, &n.to_string()).attr("from", "alice@localhost/a");
                remote.route(m).await.unwrap();
                if n % 10 == 0 {
                    // An error answer on the same stream goes to its own caller only.
                    let busy = Element::new("message", ns::CLIENT).attr("to", "x@busy.example");
                    assert!(matches!(
                        remote.route(busy).await,
                        Err(RouteError::Unavailable(_))
                    ));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = rec.0.lock().unwrap().clone();
    assert_eq!(got.len(), 12 * 50);
    for r in 0..12 {
        let to = format!("user{r}@elsewhere.example/res");
        let bodies: Vec<String> = got
            .iter()
            .filter(|m| m.get_attr("to") == Some(to.as_str()))
            .map(|m| common::body(m).unwrap())
            .collect();
        let expected: Vec<String> = (0..50).map(|n| n.to_string()).collect();
        assert_eq!(bodies, expected, "order for {to}");
    }
}

/// A node that stops (SIGTERM) ends its route streams: a stanza in flight on a closing stream
/// fails at once, unconfirmed (the caller cannot know it was not taken); once the stream is
/// gone, the stopping node refuses new ones, so the next stanzas fail `Unavailable` (the
/// caller then tries the next node). None hangs and none is delivered.
#[tokio::test]
async fn closed_route_streams_fail_fast() {
    let rec = Arc::new(Recording::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = RouterGrpcServer::new(rec.clone());
    tokio::spawn(proto::serve(
        listener,
        server.routes(),
        std::future::pending(),
    ));
    let remote = GrpcRouter::connect_lazy(format!("http://{addr}")).unwrap();
    let m = chat("bob@elsewhere.example/r", "one").attr("from", "alice@localhost/a");
    remote.route(m.clone()).await.unwrap();
    server.close_streams();
    let mut last = None;
    for _ in 0..3 {
        let res = tokio::time::timeout(std::time::Duration::from_secs(5), remote.route(m.clone()))
            .await
            .expect("a closed stream must not hang");
        assert!(
            matches!(
                res,
                Err(RouteError::Unavailable(_) | RouteError::Unconfirmed(_))
            ),
            "{res:?}"
        );
        last = Some(res);
    }
    assert!(
        matches!(last, Some(Err(RouteError::Unavailable(_)))),
        "{last:?}"
    );
    assert_eq!(rec.0.lock().unwrap().len(), 1);
}
