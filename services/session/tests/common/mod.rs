//! Test harness: real in-memory SQLite storage, the local router, and recording sinks.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use session::{
    ClientSink, LocalSessionService, SessionConfig, SessionService, SessionToken, SinkError,
    ToClient,
};
use storage::{Credentials, Storage};
use tokio::sync::mpsc;
use xmpp::error::stanza_error_condition;
use xmpp::{BareJid, Element, FullJid, StanzaErrorCondition, ns};

/// Records everything sent to it.
pub struct Recorder(pub mpsc::UnboundedSender<ToClient>);

impl ClientSink for Recorder {
    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        self.0.send(item).map_err(|_| SinkError::Closed)
    }
}

/// A connection whose queue is always full.
pub struct Clogged;

impl ClientSink for Clogged {
    fn send(&self, _item: ToClient) -> Result<(), SinkError> {
        Err(SinkError::Full)
    }
}

pub struct Env {
    pub svc: Arc<LocalSessionService>,
    pub storage: Storage,
}

impl Env {
    pub fn new() -> Self {
        Self::with(SessionConfig::default())
    }

    pub fn with(config: SessionConfig) -> Self {
        Self::with_storage(config, storage::sqlite::open_in_memory().unwrap())
    }

    pub fn with_storage(config: SessionConfig, storage: Storage) -> Self {
        let svc = LocalSessionService::new(config, storage.clone(), Arc::new(router::LocalRouter));
        Env { svc, storage }
    }

    pub async fn account(&self, bare: &str) {
        let jid: BareJid = bare.parse().unwrap();
        self.storage
            .accounts
            .create_account(&jid, &Credentials { keys: vec![] })
            .await
            .unwrap();
    }

    /// Creates the account if needed and binds `full`.
    pub async fn login(&self, full: &str) -> Client {
        let jid: FullJid = full.parse().unwrap();
        if !self
            .storage
            .accounts
            .account_exists(&jid.bare())
            .await
            .unwrap()
        {
            self.account(jid.bare().as_str()).await;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let token = self
            .svc
            .open(jid.clone(), Arc::new(Recorder(tx)))
            .await
            .unwrap();
        Client {
            svc: Arc::clone(&self.svc),
            jid,
            token,
            rx,
        }
    }

    /// Logs in, becomes available with `prio`, and requests the roster; drains everything.
    pub async fn online(&self, full: &str, prio: i8) -> Client {
        let mut c = self.login(full).await;
        c.roster().await;
        c.send(available(prio)).await;
        c.drain();
        c
    }

    pub async fn offline_count(&self, bare: &str) -> usize {
        self.storage
            .offline
            .count(&bare.parse().unwrap())
            .await
            .unwrap()
    }

    pub async fn item(&self, owner: &str, contact: &str) -> Option<storage::RosterItem> {
        self.storage
            .rosters
            .get_item(&owner.parse().unwrap(), &contact.parse().unwrap())
            .await
            .unwrap()
    }
}

pub struct Client {
    pub svc: Arc<LocalSessionService>,
    pub jid: FullJid,
    pub token: SessionToken,
    pub rx: mpsc::UnboundedReceiver<ToClient>,
}

impl Client {
    pub fn bare(&self) -> String {
        self.jid.bare().to_string()
    }

    pub async fn send(&self, st: Element) {
        self.svc.stanza(&self.jid, self.token, st).await.unwrap();
    }

    pub async fn close(&self) {
        self.svc.close(&self.jid, self.token).await;
    }

    pub fn drain(&mut self) -> Vec<ToClient> {
        let mut out = Vec::new();
        while let Ok(item) = self.rx.try_recv() {
            out.push(item);
        }
        out
    }

    /// Every stanza received so far (panics on a stream close).
    pub fn stanzas(&mut self) -> Vec<Element> {
        self.drain()
            .into_iter()
            .map(|i| match i {
                ToClient::Stanza(e) => {
                    assert_eq!(e.ns(), ns::CLIENT, "{e}");
                    e
                }
                ToClient::Close(c) => panic!("unexpected close {c:?}"),
            })
            .collect()
    }

    pub fn one(&mut self) -> Element {
        let mut s = self.stanzas();
        assert_eq!(s.len(), 1, "expected one stanza, got {s:#?}");
        s.remove(0)
    }

    pub fn nothing(&mut self) {
        let s = self.drain();
        assert!(s.is_empty(), "expected nothing, got {s:#?}");
    }

    /// Sends an IQ and returns its one answer.
    pub async fn iq(&mut self, st: Element) -> Element {
        self.send(st).await;
        let r = self.one();
        assert_eq!(r.name(), "iq", "{r}");
        r
    }

    /// Requests the roster (becoming interested); returns the answer.
    pub async fn roster(&mut self) -> Element {
        self.iq(iq("get", None, Element::new("query", ns::ROSTER)))
            .await
    }
}

pub fn msg(to: &str, ty: Option<&str>, body: Option<&str>) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .attr("to", to)
        .attr("id", "m1");
    if let Some(t) = ty {
        m.set_attr("type", t);
    }
    if let Some(b) = body {
        m.append_child(Element::new("body", ns::CLIENT).text_node(b));
    }
    m
}

pub fn pres(to: Option<&str>, ty: Option<&str>) -> Element {
    let mut p = Element::new("presence", ns::CLIENT);
    if let Some(t) = to {
        p.set_attr("to", t);
    }
    if let Some(t) = ty {
        p.set_attr("type", t);
    }
    p
}

pub fn available(prio: i8) -> Element {
    pres(None, None).child(Element::new("priority", ns::CLIENT).text_node(prio.to_string()))
}

pub fn iq(ty: &str, to: Option<&str>, payload: Element) -> Element {
    let mut i = Element::new("iq", ns::CLIENT)
        .attr("type", ty)
        .attr("id", "q1")
        .child(payload);
    if let Some(t) = to {
        i.set_attr("to", t);
    }
    i
}

pub fn roster_set(jid: &str, name: Option<&str>, groups: &[&str]) -> Element {
    let mut item = Element::new("item", ns::ROSTER).attr("jid", jid);
    if let Some(n) = name {
        item.set_attr("name", n);
    }
    for g in groups {
        item.append_child(Element::new("group", ns::ROSTER).text_node(*g));
    }
    iq("set", None, Element::new("query", ns::ROSTER).child(item))
}

pub fn roster_remove(jid: &str) -> Element {
    let item = Element::new("item", ns::ROSTER)
        .attr("jid", jid)
        .attr("subscription", "remove");
    iq("set", None, Element::new("query", ns::ROSTER).child(item))
}

pub fn condition(st: &Element) -> Option<StanzaErrorCondition> {
    assert_eq!(st.get_attr("type"), Some("error"), "{st}");
    stanza_error_condition(st)
}

pub fn is_type(st: &Element, name: &str, ty: Option<&str>) -> bool {
    st.name() == name && st.get_attr("type") == ty
}

/// The roster push in `st`: (jid, subscription, ask, approved).
pub fn push_item(st: &Element) -> (String, String, Option<String>, Option<String>) {
    assert!(is_type(st, "iq", Some("set")), "not a push: {st}");
    let item = st
        .get_child("query", ns::ROSTER)
        .and_then(|q| q.get_child("item", ns::ROSTER))
        .unwrap_or_else(|| panic!("no item in {st}"));
    (
        item.get_attr("jid").unwrap().to_owned(),
        item.get_attr("subscription").unwrap().to_owned(),
        item.get_attr("ask").map(str::to_owned),
        item.get_attr("approved").map(str::to_owned),
    )
}

/// Items of a roster result: (jid, subscription).
pub fn roster_items(result: &Element) -> Vec<(String, String)> {
    result
        .get_child("query", ns::ROSTER)
        .map(|q| {
            q.children()
                .map(|i| {
                    (
                        i.get_attr("jid").unwrap().to_owned(),
                        i.get_attr("subscription").unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A mutual (both) subscription between two online, interested clients; drains both.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    let (ab, bb) = (a.bare(), b.bare());
    a.send(pres(Some(&bb), Some("subscribe"))).await;
    b.send(pres(Some(&ab), Some("subscribed"))).await;
    b.send(pres(Some(&ab), Some("subscribe"))).await;
    a.send(pres(Some(&bb), Some("subscribed"))).await;
    a.drain();
    b.drain();
}
