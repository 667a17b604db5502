//! Malformed input on the wire, sent with the raw generated client to a real server over the
//! real session service: every bad message gets an error answer, never a panic, and the
//! server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xmpp::{Element, ns};

use crate::pb::relais::router::v1 as rpb;
use crate::pb::relais::router::v1::router_client::RouterClient;
use crate::pb::relais::session::v1 as pb;
use crate::pb::relais::session::v1::edge_message::Kind as E;
use crate::pb::relais::session::v1::session_client::SessionClient;
use crate::pb::relais::session::v1::session_message::Kind as S;

const HANG: Duration = Duration::from_secs(20);

async fn start() -> String {
    let storage = storage::sqlite::open_in_memory().unwrap();
    storage
        .accounts
        .create_account(
            &"alice@localhost".parse().unwrap(),
            &storage::Credentials { keys: vec![] },
        )
        .await
        .unwrap();
    let svc = session::LocalSessionService::new(
        session::SessionConfig::default(),
        storage.clone(),
        Arc::new(router::LocalRouter),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = crate::RouterGrpcServer::new(Arc::new(router::LocalRouter))
        .add_to(crate::SessionGrpcServer::new(svc, storage.accounts.clone()).routes());
    tokio::spawn(crate::serve(listener, routes, std::future::pending()));
    format!("http://{addr}")
}

struct Raw {
    tx: mpsc::Sender<pb::EdgeMessage>,
    rx: Streaming<pb::SessionMessage>,
}

fn msg(kind: E) -> pb::EdgeMessage {
    pb::EdgeMessage {
        kind: Some(kind),
        metadata: Default::default(),
    }
}

impl Raw {
    async fn attach(endpoint: &str, first: Option<pb::EdgeMessage>) -> Self {
        let mut client = SessionClient::connect(endpoint.to_owned()).await.unwrap();
        let (tx, rx) = mpsc::channel(16);
        if let Some(first) = first {
            tx.send(first).await.unwrap();
        }
        let rx = client
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Raw { tx, rx }
    }

    async fn hello(endpoint: &str) -> Self {
        let hello = msg(E::Hello(pb::Hello {
            edge_id: "raw".into(),
        }));
        Self::attach(endpoint, Some(hello)).await
    }

    async fn send(&self, kind: E) {
        self.tx.send(msg(kind)).await.unwrap();
    }

    async fn next(&mut self) -> S {
        tokio::time::timeout(HANG, self.rx.message())
            .await
            .expect("no answer")
            .expect("stream failed")
            .expect("stream ended")
            .kind
            .expect("empty message")
    }

    async fn open(&mut self, conn_id: u64, jid: &str) -> pb::opened::Result {
        self.send(E::Open(pb::Open {
            conn_id,
            full_jid: jid.into(),
        }))
        .await;
        match self.next().await {
            S::Opened(o) => {
                assert_eq!(o.conn_id, conn_id);
                o.result.unwrap()
            }
            other => panic!("expected opened, got {other:?}"),
        }
    }

    async fn stanza(&self, conn_id: u64, token: u64, xml: &[u8]) {
        self.send(E::Stanza(pb::Stanza {
            conn_id,
            token,
            xml: Bytes::copy_from_slice(xml),
            meta: None,
        }))
        .await;
    }
}

fn code(e: &pb::Error) -> pb::Code {
    pb::Code::try_from(e.code).unwrap()
}

fn ping_bytes(id: &str) -> Vec<u8> {
    Element::new("iq", ns::CLIENT)
        .attr("from", "alice@localhost/a")
        .attr("to", "localhost")
        .attr("type", "get")
        .attr("id", id)
        .child(Element::new("ping", ns::PING))
        .to_bytes_in("")
}

#[tokio::test]
async fn bad_input_gets_error_answers_and_the_stream_goes_on() {
    let endpoint = start().await;
    let mut raw = Raw::hello(&endpoint).await;

    // A bad JID in open.
    match raw.open(1, "not a jid@@/").await {
        pb::opened::Result::Error(e) => assert_eq!(code(&e), pb::Code::InvalidArgument),
        other => panic!("{other:?}"),
    }
    // A bare JID where a full one is needed.
    match raw.open(2, "alice@localhost").await {
        pb::opened::Result::Error(e) => assert_eq!(code(&e), pb::Code::InvalidArgument),
        other => panic!("{other:?}"),
    }
    // A good open; then the same connection id again.
    let pb::opened::Result::Token(token) = raw.open(3, "alice@localhost/a").await else {
        panic!("open failed");
    };
    match raw.open(3, "alice@localhost/b").await {
        pb::opened::Result::Error(e) => assert_eq!(code(&e), pb::Code::InvalidArgument),
        other => panic!("{other:?}"),
    }

    // Unparsable XML, two elements, a stanza the edge never sends, an unknown connection,
    // an empty message: each gets a failure.
    for bad in [
        &b"<iq type='get'"[..],
        b"<message/><message/>",
        b"<!DOCTYPE x>",
        b"\xff\xfe\xfd",
    ] {
        raw.stanza(3, token, bad).await;
        match raw.next().await {
            S::Failure(f) => {
                assert_eq!(f.conn_id, 3);
                assert_eq!(code(f.error.as_ref().unwrap()), pb::Code::InvalidArgument);
            }
            other => panic!("{other:?}"),
        }
    }
    let spoofed = Element::new("message", ns::CLIENT)
        .attr("from", "mallory@localhost/m")
        .attr("to", "alice@localhost")
        .to_bytes_in("");
    raw.stanza(3, token, &spoofed).await;
    assert!(
        matches!(raw.next().await, S::Failure(f) if code(f.error.as_ref().unwrap()) == pb::Code::InvalidArgument)
    );
    raw.stanza(99, token, &ping_bytes("x")).await;
    assert!(
        matches!(raw.next().await, S::Failure(f) if f.conn_id == 99 && code(f.error.as_ref().unwrap()) == pb::Code::NotFound)
    );
    raw.tx
        .send(pb::EdgeMessage {
            kind: None,
            metadata: Default::default(),
        })
        .await
        .unwrap();
    assert!(
        matches!(raw.next().await, S::Failure(f) if code(f.error.as_ref().unwrap()) == pb::Code::InvalidArgument)
    );
    // Enabling stream management on an unknown connection.
    raw.send(E::EnableSm(pb::EnableSm {
        conn_id: 77,
        token: 1,
        resume: true,
        req_id: 500,
    }))
    .await;
    assert!(
        matches!(raw.next().await, S::SmEnabled(e) if e.req_id == 500 && matches!(e.result, Some(pb::sm_enabled::Result::Error(_))))
    );
    // A resume with a bad account.
    raw.send(E::Resume(pb::Resume {
        conn_id: 8,
        account: "@@".into(),
        id: "x".into(),
        h: 0,
        req_id: 501,
    }))
    .await;
    assert!(
        matches!(raw.next().await, S::Resumed(r) if r.req_id == 501 && matches!(r.result, Some(pb::resumed::Result::Error(ref e)) if code(e) == pb::Code::InvalidArgument))
    );

    // The connection still works.
    raw.stanza(3, token, &ping_bytes("alive")).await;
    match raw.next().await {
        S::Deliver(d) => {
            assert_eq!(d.conn_id, 3);
            let el = crate::wire::parse_element(&d.xml).unwrap();
            assert_eq!(el.get_attr("id"), Some("alive"));
            assert_eq!(el.get_attr("type"), Some("result"));
        }
        other => panic!("{other:?}"),
    }
    // A stale token is the session's "no such session": the connection is closed.
    raw.stanza(3, token + 1000, &ping_bytes("stale")).await;
    assert!(
        matches!(raw.next().await, S::CloseConn(c) if c.conn_id == 3 && c.condition == "conflict")
    );
}

#[tokio::test]
async fn a_stream_without_hello_is_refused_and_others_are_unaffected() {
    let endpoint = start().await;
    let first = msg(E::Open(pb::Open {
        conn_id: 1,
        full_jid: "alice@localhost/a".into(),
    }));
    let mut rude = Raw::attach(&endpoint, Some(first)).await;
    let status = tokio::time::timeout(HANG, rude.rx.message())
        .await
        .unwrap()
        .expect_err("an error status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let mut polite = Raw::hello(&endpoint).await;
    assert!(matches!(
        polite.open(1, "alice@localhost/a").await,
        pb::opened::Result::Token(_)
    ));
}

#[tokio::test]
async fn bad_credentials_and_route_requests_are_answered_with_errors() {
    let endpoint = start().await;
    let mut client = SessionClient::connect(endpoint.clone()).await.unwrap();
    let status = client
        .get_credentials(pb::CredentialsRequest {
            jid: "@@bad".into(),
        })
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let mut router = RouterClient::connect(endpoint).await.unwrap();
    let reply = router
        .route(rpb::RouteRequest {
            xml: Bytes::from_static(b"<message"),
            meta: None,
            metadata: Default::default(),
            seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    match reply.result {
        Some(rpb::route_reply::Result::Error(e)) => {
            assert_eq!(e.code, rpb::RouteCode::InvalidArgument as i32)
        }
        other => panic!("{other:?}"),
    }
    // Still serving.
    let ok = client
        .get_credentials(pb::CredentialsRequest {
            jid: "alice@localhost".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.found);
}
