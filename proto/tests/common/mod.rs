//! Test harness: a real tonic server on 127.0.0.1:0 over the real `LocalSessionService`
//! (in-memory SQLite, `LocalRouter`), edges-worth of `GrpcSessionClient`s, recording sinks.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::{ClientConfig, GrpcSessionClient, SessionGrpcServer};
use session::{
    ClientSink, LocalSessionService, SessionConfig, SessionService, SessionToken, SinkError,
    ToClient,
};
use storage::{Credentials, RosterItem, Storage, Subscription};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use xmpp::{BareJid, Element, FullJid, ns};

/// Guards against hangs only; no test asserts on time.
pub const HANG: Duration = Duration::from_secs(20);

/// Records everything sent to it.
pub struct Recorder(pub mpsc::UnboundedSender<ToClient>);

impl ClientSink for Recorder {
    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        self.0.send(item).map_err(|_| SinkError::Closed)
    }
}

/// A session node: the real service behind a real gRPC server.
pub struct Node {
    pub svc: Arc<LocalSessionService>,
    pub storage: Storage,
    pub addr: SocketAddr,
    server: SessionGrpcServer,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), proto::ProtoError>>,
}

impl Node {
    pub async fn start() -> Node {
        let storage = storage::sqlite::open_in_memory().unwrap();
        let svc = LocalSessionService::new(
            SessionConfig::default(),
            storage.clone(),
            Arc::new(router::LocalRouter),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(svc, storage, listener)
    }

    /// Serves the same service again on the same address (a restarted server task).
    pub async fn restart(self) -> Node {
        let (svc, storage, addr) = self.stop().await;
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(svc, storage, listener)
    }

    fn serve(svc: Arc<LocalSessionService>, storage: Storage, listener: TcpListener) -> Node {
        let addr = listener.local_addr().unwrap();
        let server = SessionGrpcServer::new(svc.clone(), storage.accounts.clone());
        let (stop, rx) = oneshot::channel::<()>();
        let routes = server.routes();
        let task = tokio::spawn(proto::serve(listener, routes, async move {
            let _ = rx.await;
        }));
        Node {
            svc,
            storage,
            addr,
            server,
            stop,
            task,
        }
    }

    /// Ends every stream and stops the server; returns what a restart needs.
    pub async fn stop(self) -> (Arc<LocalSessionService>, Storage, SocketAddr) {
        self.server.close_streams();
        let _ = self.stop.send(());
        tokio::time::timeout(HANG, self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
        (self.svc, self.storage, self.addr)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn edge(&self, name: &str) -> GrpcSessionClient {
        self.edge_with(name, test_config()).await
    }

    pub async fn edge_with(&self, name: &str, config: ClientConfig) -> GrpcSessionClient {
        GrpcSessionClient::connect_with(self.endpoint(), name, config)
            .await
            .unwrap()
    }

    pub async fn account(&self, bare: &str) {
        let jid: BareJid = bare.parse().unwrap();
        self.storage
            .accounts
            .create_account(&jid, &Credentials { keys: vec![] })
            .await
            .unwrap();
    }

    /// `a` and `b` are mutual contacts (subscription both).
    pub async fn friends(&self, a: &str, b: &str) {
        for (owner, contact) in [(a, b), (b, a)] {
            let mut item = RosterItem::new(contact.parse().unwrap());
            item.subscription = Subscription::Both;
            self.storage
                .rosters
                .put_item(&owner.parse().unwrap(), &item)
                .await
                .unwrap();
        }
    }
}

pub fn test_config() -> ClientConfig {
    ClientConfig {
        answer_timeout: Duration::from_secs(5),
        reconnect_attempts: 8,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

/// One client connection on an edge.
pub struct Client {
    pub edge: GrpcSessionClient,
    pub jid: FullJid,
    pub token: SessionToken,
    pub rx: mpsc::UnboundedReceiver<ToClient>,
}

pub async fn login(edge: &GrpcSessionClient, full: &str) -> Client {
    let jid: FullJid = full.parse().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let token = edge
        .open(jid.clone(), Arc::new(Recorder(tx)))
        .await
        .unwrap();
    Client {
        edge: edge.clone(),
        jid,
        token,
        rx,
    }
}

impl Client {
    /// Sends a stanza as the edge does: `from` stamped with the full JID.
    pub async fn send(&self, mut st: Element) {
        st.set_attr("from", self.jid.as_str());
        self.edge.stanza(&self.jid, self.token, st).await.unwrap();
    }

    /// The next item (waits; a hang fails the test).
    pub async fn next(&mut self) -> ToClient {
        tokio::time::timeout(HANG, self.rx.recv())
            .await
            .expect("nothing arrived")
            .expect("sink dropped")
    }

    pub async fn next_stanza(&mut self) -> Element {
        match self.next().await {
            ToClient::Stanza(e) => e,
            ToClient::Close(c) => panic!("unexpected close {c:?}"),
        }
    }

    /// The next stanza for which `f` holds, skipping others.
    pub async fn until(&mut self, f: impl Fn(&Element) -> bool) -> Element {
        loop {
            let e = self.next_stanza().await;
            if f(&e) {
                return e;
            }
        }
    }

    /// Round trip through the session: everything sent to this client before the answer to
    /// this ping has arrived when it returns; returns what came before it.
    pub async fn sync(&mut self) -> Vec<ToClient> {
        let id = format!("sync-{}", rand_id());
        self.send(ping(&id)).await;
        let mut before = Vec::new();
        loop {
            let item = self.next().await;
            if let ToClient::Stanza(e) = &item
                && e.name() == "iq"
                && e.get_attr("id") == Some(id.as_str())
            {
                return before;
            }
            before.push(item);
        }
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn ping(id: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("id", id)
        .attr("to", "localhost")
        .child(Element::new("ping", "urn:xmpp:ping"))
}

pub fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .attr("to", to)
        .attr("type", "chat")
        .attr("id", body)
        .child(Element::new("body", ns::CLIENT).text_node(body))
}

pub fn available() -> Element {
    Element::new("presence", ns::CLIENT)
}

pub fn body(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(Element::text)
}

/// Waits until `edge` has come up `n` times (re-attached after a break).
pub async fn attached(edge: &GrpcSessionClient, n: u64) {
    tokio::time::timeout(HANG, async {
        while edge.attachments() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("never re-attached");
}
