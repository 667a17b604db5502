//! Durability of acknowledged messages in the cluster (issue 10): pairs of stream-managed
//! clients exchange messages at a steady rate through 2 edges, 2 session nodes, a router and
//! Redis; one process is killed with SIGKILL in the middle; some receivers had lost their
//! connection before and wait for resumption. The clients behave as XEP-0198 asks (and as
//! Conversations does): after a lost stream they resume through the other edge, or log in
//! again and re-send what the server never acknowledged.
//!
//! Checked: every message the server acknowledged to its sender is delivered to its
//! receiver; a message delivered twice is either one the sender re-sent (it was never
//! acknowledged) or the same delivery again (same XEP-0359 stanza-id: a copy the receiver had
//! not acknowledged when its session died, which XEP-0198 §5 counts as undelivered).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tests::client::{Client, Incoming, NS_SM, body, chat};
use tests::cluster::{Cluster, ClusterOpts};
use xmpp::Element;
use xmpp::scram::ScramHash;

const PAIRS: usize = 20;
const ROUNDS: usize = 30;
/// The round after which the process is killed.
const KILL_AT: usize = 12;
/// Every how many rounds senders ask for an acknowledgement.
const R_EVERY: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Victim {
    Edge,
    SessionNode,
    Router,
}

/// One client, its stream (if any) and its XEP-0198 bookkeeping.
struct Peer {
    local: String,
    client: Option<Client>,
    resume_id: Option<String>,
    /// Message ids sent on the current stream (resumption continues the stream).
    sent: Vec<String>,
    /// How many of `sent` the server acknowledged.
    acked: usize,
    /// Stanzas received on the current stream (our `h`), kept when the stream dies.
    h_in: u32,
}

impl Peer {
    fn new(local: String) -> Self {
        Peer {
            local,
            client: None,
            resume_id: None,
            sent: Vec::new(),
            acked: 0,
            h_in: 0,
        }
    }

    fn password(&self) -> String {
        format!("{}-pw", self.local)
    }
}

/// Logs in (bind, SM with resumption, available presence) through `edge`.
async fn login(c: &Cluster, p: &mut Peer, edge: usize) {
    let mut cl = c.login_at(edge, &p.local, &p.password(), "r").await;
    cl.go_online().await;
    let en = cl.sm_enable(true).await;
    assert!(en.is("enabled", NS_SM), "{en}");
    p.resume_id = en.get_attr("id").map(str::to_owned);
    p.h_in = 0;
    p.client = Some(cl);
}

/// Tries `<resume/>` through `edge`; true when the session was resumed. On success the
/// server's `h` acknowledges what it had, and the sender re-sends the rest on the stream.
async fn resume(c: &Cluster, p: &mut Peer, edge: usize) -> bool {
    let h_in = p.h_in;
    let Some(id) = p.resume_id.clone() else {
        return false;
    };
    let mut cl = c.connect_to(edge).await;
    cl.auth_scram(&p.local, &p.password(), ScramHash::Sha256, false)
        .await
        .unwrap();
    let answer = cl.sm_resume(&id, h_in, None).await;
    if !answer.is("resumed", NS_SM) {
        return false;
    }
    let h: usize = answer.get_attr("h").unwrap().parse().unwrap();
    p.acked = p.acked.max(h.min(p.sent.len()));
    for id in &p.sent[p.acked..] {
        cl.send(&message_to(&partner(&p.local), id)).await;
    }
    p.client = Some(cl);
    true
}

fn partner(local: &str) -> String {
    match local.strip_prefix('s') {
        Some(n) => format!("r{n}"),
        None => format!("s{}", &local[1..]),
    }
}

fn message_to(local: &str, id: &str) -> Element {
    let mut m = chat(&format!("{local}@localhost"), id);
    m.set_attr("id", id);
    m
}

/// What receivers saw: per message id, the stanza-ids it was delivered with.
type Seen = BTreeMap<String, Vec<Option<String>>>;

fn record(seen: &mut Seen, el: &Element) {
    if el.name() != "message" {
        return;
    }
    let Some(id) = body(el) else { return };
    let sid = el
        .children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0"))
        .and_then(|c| c.get_attr("id"))
        .map(str::to_owned);
    seen.entry(id).or_default().push(sid);
}

/// Reads what a receiver has (briefly), acknowledging each stanza; drops a dead stream.
async fn drain_receiver(p: &mut Peer, seen: &mut Seen, wait: Duration) {
    let Some(cl) = p.client.as_mut() else { return };
    loop {
        match cl.recv_timeout(wait).await {
            None => return,
            Some(Incoming::Stanza(el)) => {
                if el.is("r", NS_SM) {
                    cl.sm_ack().await;
                    continue;
                }
                record(seen, &el);
                if el.name() == "message" {
                    cl.sm_ack().await;
                }
            }
            Some(Incoming::Closed | Incoming::StreamError(_)) => {
                p.h_in = cl.sm_h().unwrap_or(0);
                p.client = None;
                return;
            }
        }
    }
}

/// Reads a sender's acknowledgements and bounces (briefly); drops a dead stream.
async fn drain_sender(p: &mut Peer, bounced: &mut BTreeSet<String>, wait: Duration) {
    let Some(cl) = p.client.as_mut() else { return };
    loop {
        match cl.recv_timeout(wait).await {
            None => return,
            Some(Incoming::Stanza(el)) => {
                if el.is("a", NS_SM) {
                    let h: usize = el.get_attr("h").unwrap().parse().unwrap();
                    assert!(h <= p.sent.len(), "acknowledged {h} of {}", p.sent.len());
                    p.acked = p.acked.max(h);
                } else if el.is("r", NS_SM) {
                    cl.sm_ack().await;
                } else if el.name() == "message" && el.get_attr("type") == Some("error") {
                    bounced.extend(el.get_attr("id").map(str::to_owned));
                }
            }
            Some(Incoming::Closed | Incoming::StreamError(_)) => {
                p.h_in = cl.sm_h().unwrap_or(0);
                p.client = None;
                return;
            }
        }
    }
}

/// Brings back every client whose stream ended.
async fn recover(
    c: &Cluster,
    senders: &mut [Peer],
    receivers: &mut [Peer],
    edge: usize,
    resent: &mut BTreeSet<String>,
) {
    for p in senders.iter_mut() {
        if p.client.is_some() {
            continue;
        }
        if !resume(c, p, edge).await {
            let pending: Vec<String> = p.sent[p.acked..].to_vec();
            p.sent.truncate(p.acked);
            login(c, p, edge).await;
            let base = p.sent.len();
            let cl = p.client.as_mut().unwrap();
            for id in &pending {
                cl.send(&message_to(&partner(&p.local), id)).await;
                resent.insert(id.clone());
            }
            // Counting starts again on the new stream.
            p.sent.extend(pending);
            let a = cl.sm_request().await;
            let h: usize = a.get_attr("h").unwrap().parse().unwrap();
            p.acked = base + h;
        }
    }
    for p in receivers.iter_mut() {
        if p.client.is_none() && !resume(c, p, edge).await {
            login(c, p, edge).await;
        }
    }
}

async fn run(victim: Victim) {
    let mut c = Cluster::start(ClusterOpts::default());
    let mut senders: Vec<Peer> = (0..PAIRS).map(|i| Peer::new(format!("s{i}"))).collect();
    let mut receivers: Vec<Peer> = (0..PAIRS).map(|i| Peer::new(format!("r{i}"))).collect();
    for p in senders.iter().chain(&receivers) {
        c.add_user(&p.local, &p.password());
    }
    // Senders on edge 0, receivers on edge 1: every message crosses both edges, and both
    // session nodes when the accounts are placed apart.
    for p in &mut senders {
        login(&c, p, 0).await;
    }
    for p in &mut receivers {
        login(&c, p, 1).await;
    }
    // Every fourth receiver loses its connection and waits for resumption.
    for (i, p) in receivers.iter_mut().enumerate() {
        if i % 4 == 0 {
            let cl = p.client.take().unwrap();
            p.h_in = cl.sm_h().unwrap_or(0);
            cl.kill();
        }
    }
    let mut seen = Seen::new();
    let mut resent = BTreeSet::new();
    let mut bounced = BTreeSet::new();
    let short = Duration::from_millis(2);
    for round in 0..ROUNDS {
        if round == KILL_AT {
            match victim {
                Victim::Edge => c.edges[1].process.kill(),
                Victim::SessionNode => c.sessions[0].process.kill(),
                Victim::Router => c.router.as_mut().unwrap().process.kill(),
            }
        }
        for p in &mut senders {
            let Some(cl) = p.client.as_mut() else {
                continue;
            };
            let id = format!("{}-{round}", p.local);
            cl.send(&message_to(&partner(&p.local), &id)).await;
            p.sent.push(id);
            if round % R_EVERY == R_EVERY - 1 {
                cl.send(&Element::new("r", NS_SM)).await;
            }
        }
        for p in &mut senders {
            drain_sender(p, &mut bounced, short).await;
        }
        for p in &mut receivers {
            drain_receiver(p, &mut seen, short).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everyone still connected asks for (senders) or gives (receivers) a last ack.
    for p in &mut senders {
        if let Some(cl) = p.client.as_mut() {
            cl.send(&Element::new("r", NS_SM)).await;
        }
        drain_sender(p, &mut bounced, Duration::from_millis(100)).await;
    }

    // Let the cluster notice the death (membership TTL and its grace).
    let settle = Duration::from_millis(c.opts.ttl_ms * 2 + c.opts.heartbeat_ms * 4);
    tokio::time::sleep(settle).await;
    let edge = match victim {
        Victim::Edge => 0,
        _ => 1,
    };
    // Recovery, as clients do it: resume, else log in again and re-send what was not
    // acknowledged; then read until nothing more comes, recovering any stream that ends late.
    for _ in 0..10 {
        recover(&c, &mut senders, &mut receivers, edge, &mut resent).await;
        for p in &mut senders {
            if let Some(cl) = p.client.as_mut() {
                cl.send(&Element::new("r", NS_SM)).await;
            }
            drain_sender(p, &mut bounced, Duration::from_millis(50)).await;
        }
        for p in &mut receivers {
            drain_receiver(p, &mut seen, Duration::from_millis(50)).await;
        }
    }
    assert!(
        senders.iter().chain(&receivers).all(|p| p.client.is_some()),
        "some clients could not get back\n{}",
        c.logs()
    );

    let mut acked_total = 0;
    let mut missing = Vec::new();
    for p in &senders {
        for id in &p.sent[..p.acked] {
            acked_total += 1;
            if !seen.contains_key(id) && !bounced.contains(id) {
                missing.push(id.clone());
            }
        }
    }
    let mut bad_twice = Vec::new();
    let mut redelivered = 0;
    for (id, sids) in &seen {
        if sids.len() < 2 {
            continue;
        }
        let distinct: BTreeSet<&Option<String>> = sids.iter().collect();
        if distinct.len() == 1 && sids[0].is_some() {
            // The same delivery again: not acknowledged by the receiver before its session died.
            redelivered += 1;
        } else if !resent.contains(id) {
            bad_twice.push((id.clone(), sids.clone()));
        }
    }
    println!(
        "{victim:?}: {acked_total} acknowledged, {} delivered, {} bounced, {} re-sent by senders, {redelivered} redelivered",
        seen.len(),
        bounced.len(),
        resent.len()
    );
    assert!(
        acked_total >= PAIRS * KILL_AT,
        "too few messages were acknowledged ({acked_total}) for the test to mean anything"
    );
    assert!(
        missing.is_empty(),
        "{victim:?}: {} acknowledged messages were lost: {missing:?}\n{}",
        missing.len(),
        c.logs()
    );
    assert!(
        bad_twice.is_empty(),
        "{victim:?}: delivered twice as different messages: {bad_twice:?}"
    );
    // Nothing arrived that nobody sent.
    let sent: BTreeSet<&String> = senders.iter().flat_map(|p| &p.sent).collect();
    assert!(seen.keys().all(|id| sent.contains(id)));
}

#[tokio::test]
async fn kill_a_session_node_loses_no_acknowledged_message() {
    run(Victim::SessionNode).await;
}

#[tokio::test]
async fn kill_the_receivers_edge_loses_no_acknowledged_message() {
    run(Victim::Edge).await;
}

#[tokio::test]
async fn kill_the_router_loses_no_acknowledged_message() {
    run(Victim::Router).await;
}
