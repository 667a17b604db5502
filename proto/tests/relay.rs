//! The router's relay and the route streams when the network misbehaves: a TCP proxy between
//! the peers is cut (connections reset) or black-holed (bytes swallowed, sockets kept open).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{HANG, chat};
use proto::{ClientConfig, GrpcRouter, RelayGrpcServer, RelayTargets, RouterGrpcServer};
use router::{RouteError, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use xmpp::Element;

/// What the proxy does with the bytes of its connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    Forward,
    /// Reads and drops everything; the sockets stay open (a partition).
    BlackHole,
    /// Closes every connection (a crashed peer host).
    Cut,
}

/// A TCP proxy on 127.0.0.1 to `upstream`, controlled through `set`.
struct Proxy {
    addr: std::net::SocketAddr,
    wire: watch::Sender<Wire>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wire = watch::channel(Wire::Forward).0;
        let w = wire.clone();
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pipe(dr, uw, w.subscribe()));
                tokio::spawn(pipe(ur, dw, w.subscribe()));
            }
        });
        Proxy { addr, wire }
    }

    fn set(&self, w: Wire) {
        self.wire.send_replace(w);
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut wire: watch::Receiver<Wire>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = wire.wait_for(|w| *w == Wire::Cut) => return,
        };
        match *wire.borrow() {
            Wire::Forward => {}
            Wire::BlackHole => continue,
            Wire::Cut => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Records what it is given; can be told to hold its answer until released.
#[derive(Default)]
struct Target {
    got: Mutex<Vec<Element>>,
    arrived: Notify,
    hold: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Router for Target {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        self.got.lock().unwrap().push(stanza);
        self.arrived.notify_one();
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl Target {
    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

async fn serve(router: Arc<dyn Router>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = RouterGrpcServer::new(router).routes();
    tokio::spawn(proto::serve(listener, routes, std::future::pending()));
    addr
}

/// The relay's candidates, fixed.
struct Fixed(Vec<GrpcRouter>);

impl RelayTargets for Fixed {
    fn targets(&self, _to: &str) -> Result<Vec<GrpcRouter>, RouteError> {
        Ok(self.0.clone())
    }
}

async fn relay(targets: Vec<GrpcRouter>) -> GrpcRouter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = RelayGrpcServer::new(Arc::new(Fixed(targets))).routes();
    tokio::spawn(proto::serve(listener, routes, std::future::pending()));
    GrpcRouter::connect_lazy(format!("http://{addr}")).unwrap()
}

fn stanza(body: &str) -> Element {
    chat("bob@localhost/r", body).attr("from", "alice@localhost/a")
}

/// The first owner received the stanza and its connection died before it answered: the
/// relay must not offer the stanza to the next owner (two deliveries); the sender gets
/// `Unconfirmed`, which it bounces and does not retry elsewhere.
#[tokio::test]
async fn relay_never_offers_a_received_stanza_to_a_second_owner() {
    let first = Arc::new(Target::default());
    first.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let second = Arc::new(Target::default());
    let proxy = Proxy::start(serve(first.clone()).await).await;
    let second_addr = serve(second.clone()).await;
    let sender = relay(vec![
        GrpcRouter::connect_lazy(proxy.endpoint()).unwrap(),
        GrpcRouter::connect_lazy(format!("http://{second_addr}")).unwrap(),
    ])
    .await;
    let routed = tokio::spawn(async move { sender.route(stanza("once")).await });
    tokio::time::timeout(HANG, first.arrived.notified())
        .await
        .expect("the first owner gets the stanza");
    // The first owner's host vanishes before its answer.
    proxy.set(Wire::Cut);
    let res = tokio::time::timeout(HANG, routed)
        .await
        .expect("the relay answers")
        .unwrap();
    assert!(matches!(res, Err(RouteError::Unconfirmed(_))), "{res:?}");
    assert_eq!(first.count(), 1);
    assert_eq!(second.count(), 0, "the stanza reached a second owner");
}

/// The first owner cannot be reached at all (connection refused): it provably did not get
/// the stanza, so the relay offers it to the next owner.
#[tokio::test]
async fn relay_offers_the_next_owner_a_stanza_the_first_never_got() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let second = Arc::new(Target::default());
    let second_addr = serve(second.clone()).await;
    let sender = relay(vec![
        GrpcRouter::connect_lazy(format!("http://{closed}")).unwrap(),
        GrpcRouter::connect_lazy(format!("http://{second_addr}")).unwrap(),
    ])
    .await;
    let res = tokio::time::timeout(HANG, sender.route(stanza("next")))
        .await
        .expect("the relay answers");
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(second.count(), 1);
}

/// A partition (the peer's packets vanish, no reset) is noticed by the HTTP/2 keepalive:
/// the stanza waiting for its answer fails because the stream broke, not because its answer
/// timed out (which takes 10 s), and the next stanza goes over a new connection.
#[tokio::test]
async fn keepalive_notices_a_black_holed_peer() {
    let target = Arc::new(Target::default());
    let proxy = Proxy::start(serve(target.clone()).await).await;
    let config = ClientConfig {
        keepalive_interval: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    let remote = GrpcRouter::connect_lazy_with(proxy.endpoint(), &config).unwrap();
    remote.route(stanza("before")).await.unwrap();
    proxy.set(Wire::BlackHole);
    let res = tokio::time::timeout(HANG, remote.route(stanza("lost")))
        .await
        .expect("the call ends");
    match res {
        Err(RouteError::Unconfirmed(m)) => assert!(m.contains("broke"), "{m}"),
        other => panic!("expected a broken stream, got {other:?}"),
    }
    proxy.set(Wire::Forward);
    let res = tokio::time::timeout(HANG, remote.route(stanza("after")))
        .await
        .expect("the call ends");
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(target.count(), 2);
}
