//! XEP-0313 message archive management and XEP-0359 stanza ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use storage::{
    ArchiveFilter, ArchiveMetadata, ArchivePage, ArchivePrefs, ArchiveResult, ArchiveStore,
    ArchivedRef, NewArchived, StorageError,
};

use common::*;
use session::SessionConfig;
use xmpp::xep::mam::{Fin, MamResult, Metadata, Prefs, Query};
use xmpp::xep::rsm::Set;
use xmpp::xep::stanza_id::StanzaId;
use xmpp::{BareJid, Element, StanzaErrorCondition, ns};

/// What a MAM query returned: the result messages, and the IQ answer.
struct Answer {
    results: Vec<MamResult>,
    iq: Element,
}

impl Answer {
    fn fin(&self) -> Fin {
        assert!(is_type(&self.iq, "iq", Some("result")), "{}", self.iq);
        Fin::try_from(self.iq.get_child("fin", ns::MAM).expect("fin")).unwrap()
    }

    fn bodies(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|r| {
                r.forwarded
                    .stanza
                    .get_child("body", ns::CLIENT)
                    .map(Element::text)
                    .unwrap_or_default()
            })
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.results.iter().map(|r| r.id.clone()).collect()
    }
}

async fn mam(c: &mut Client, query: Query) -> Answer {
    mam_raw(c, iq("set", None, query.into())).await
}

async fn mam_raw(c: &mut Client, st: Element) -> Answer {
    c.send(st).await;
    let mut got = c.stanzas();
    let iq = got.pop().expect("an answer");
    assert_eq!(iq.name(), "iq", "{iq}");
    let me = c.bare();
    let results = got
        .into_iter()
        .map(|m| {
            assert_eq!(m.name(), "message", "{m}");
            assert_eq!(m.get_attr("from"), Some(me.as_str()));
            assert_eq!(m.get_attr("to"), Some(c.jid.as_str()));
            MamResult::try_from(m.get_child("result", ns::MAM).expect("result")).unwrap()
        })
        .collect();
    Answer { results, iq }
}

fn paged(max: Option<usize>, after: Option<&str>, before: Option<&str>) -> Query {
    Query {
        queryid: Some("q".into()),
        set: Some(Set {
            max,
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
            ..Set::default()
        }),
        ..Query::default()
    }
}

fn stanza_ids(m: &Element) -> Vec<StanzaId> {
    m.children()
        .filter(|c| c.is("stanza-id", ns::SID))
        .map(|c| StanzaId::try_from(c).unwrap())
        .collect()
}

fn with_child(m: Element, child: Element) -> Element {
    m.child(child)
}

/// Alice sends `n` chat messages "m0".."m{n-1}" to Bob, who receives them (drained).
async fn chat(alice: &Client, bob: &mut Client, n: usize) {
    for i in 0..n {
        alice
            .send(msg(&bob.bare(), Some("chat"), Some(&format!("m{i}"))))
            .await;
    }
    bob.drain();
}

#[tokio::test]
async fn both_sides_are_archived_and_the_recipient_gets_the_stanza_id() {
    let env = Env::new();
    let mut alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("hello")))
        .await;
    let got = bob.one();
    let sid = stanza_ids(&got);
    assert_eq!(sid.len(), 1, "{got}");
    assert_eq!(sid[0].by.as_str(), "bob@localhost");
    alice.nothing();

    let b = mam(&mut bob, Query::default()).await;
    assert_eq!(b.ids(), [sid[0].id.clone()]);
    let fwd = &b.results[0].forwarded;
    assert_eq!(fwd.stanza.get_attr("from"), Some("alice@localhost/a"));
    assert_eq!(b.bodies(), ["hello"]);
    assert!(fwd.delay.is_some());
    let fin = b.fin();
    assert!(fin.complete);
    assert_eq!(fin.set.count, Some(1));
    assert_eq!(fin.set.first.as_deref(), Some(sid[0].id.as_str()));
    assert_eq!(fin.set.last.as_deref(), Some(sid[0].id.as_str()));

    let a = mam(&mut alice, Query::default()).await;
    assert_eq!(a.bodies(), ["hello"]);
    assert_eq!(
        a.results[0].forwarded.stanza.get_attr("to"),
        Some("bob@localhost")
    );
    // Each archive assigns its own ids.
    assert_ne!(a.ids(), b.ids());
    assert_eq!(a.results[0].queryid, None);
}

#[tokio::test]
async fn offline_messages_are_archived_and_carry_their_stanza_id() {
    let env = Env::new();
    env.account("bob@localhost").await;
    let alice = env.online("alice@localhost/a", 0).await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("while away")))
        .await;
    assert_eq!(env.offline_count("bob@localhost").await, 1);
    let mut bob = env.login("bob@localhost/b").await;
    bob.send(available(0)).await;
    let delivered: Vec<Element> = bob
        .stanzas()
        .into_iter()
        .filter(|s| s.name() == "message")
        .collect();
    assert_eq!(delivered.len(), 1);
    let sid = stanza_ids(&delivered[0]);
    assert_eq!(sid.len(), 1);
    let b = mam(&mut bob, Query::default()).await;
    assert_eq!(b.ids(), [sid[0].id.clone()]);
    assert_eq!(b.bodies(), ["while away"]);
}

#[tokio::test]
async fn only_archivable_messages_are_archived() {
    let env = Env::new();
    let mut alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let to = "bob@localhost";
    let hint = |name: &str| Element::new(name, ns::HINTS);
    let state = Element::new("composing", "http://jabber.org/protocol/chatstates");
    for m in [
        msg(to, Some("headline"), Some("news")),
        msg(to, Some("error"), Some("oops")),
        msg(to, Some("chat"), None),
        with_child(msg(to, Some("chat"), None), state),
        with_child(msg(to, Some("chat"), Some("secret")), hint("no-store")),
        with_child(
            msg(to, Some("chat"), Some("fleeting")),
            hint("no-permanent-store"),
        ),
    ] {
        alice.send(m).await;
    }
    // Groupchat to an account bounces and is not archived either.
    alice.send(msg(to, Some("groupchat"), Some("room"))).await;
    for m in bob.stanzas() {
        assert!(stanza_ids(&m).is_empty(), "{m}");
    }
    alice.drain();
    assert!(mam(&mut bob, Query::default()).await.results.is_empty());
    assert!(mam(&mut alice, Query::default()).await.results.is_empty());

    // Normal messages with a body, and a store hint without one, are.
    alice.send(msg(to, None, Some("plain"))).await;
    alice
        .send(with_child(msg(to, Some("chat"), None), hint("store")))
        .await;
    let got = bob.stanzas();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| stanza_ids(m).len() == 1));
    let b = mam(&mut bob, Query::default()).await;
    assert_eq!(b.bodies(), ["plain", ""]);
    assert_eq!(mam(&mut alice, Query::default()).await.results.len(), 2);
}

#[tokio::test]
async fn forged_stanza_ids_are_removed() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let forged = |by: &str, id: &str| {
        Element::new("stanza-id", ns::SID)
            .attr("by", by)
            .attr("id", id)
    };
    let m = msg("bob@localhost", Some("chat"), Some("trust me"))
        .child(forged("bob@localhost", "fake1"))
        .child(forged("localhost", "fake2"))
        .child(forged("a@b@c", "fake3"))
        .child(forged("room@conference.example.org", "kept"));
    alice.send(m).await;
    let got = bob.one();
    let ids: Vec<(String, String)> = stanza_ids(&got)
        .into_iter()
        .map(|s| (s.by.as_str().to_owned(), s.id))
        .collect();
    assert_eq!(ids.len(), 2, "{got}");
    assert!(ids.contains(&("room@conference.example.org".into(), "kept".into())));
    let mine = ids.iter().find(|(by, _)| by == "bob@localhost").unwrap();
    assert_ne!(mine.1, "fake1");
    // The archived copies hold no forged id either.
    let b = mam(&mut bob, Query::default()).await;
    let archived = stanza_ids(&b.results[0].forwarded.stanza);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].id, "kept");
}

#[tokio::test]
async fn pages_forwards_and_backwards_through_everything() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    chat(&alice, &mut bob, 25).await;
    let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let a = mam(&mut bob, paged(Some(10), after.as_deref(), None)).await;
        pages += 1;
        assert!(a.results.iter().all(|r| r.queryid.as_deref() == Some("q")));
        let fin = a.fin();
        assert_eq!(fin.set.count, Some(25));
        seen.extend(a.bodies());
        after = fin.set.last.clone();
        if fin.complete {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    let mut pages_back: Vec<Vec<String>> = Vec::new();
    let mut before = String::new();
    loop {
        let a = mam(&mut bob, paged(Some(10), None, Some(&before))).await;
        let fin = a.fin();
        pages_back.push(a.bodies());
        if fin.complete {
            break;
        }
        before = fin.set.first.clone().unwrap();
    }
    assert_eq!(pages_back.len(), 3);
    assert_eq!(pages_back[0], expected[15..].to_vec());
    pages_back.reverse();
    assert_eq!(pages_back.concat(), expected);

    // flip-page: the last page, newest first; first and last follow the order sent.
    let mut flipped = paged(Some(3), None, Some(""));
    flipped.flip_page = true;
    let a = mam(&mut bob, flipped).await;
    assert_eq!(a.bodies(), ["m24", "m23", "m22"]);
    let fin = a.fin();
    assert_eq!(fin.set.first.as_deref(), Some(a.ids()[0].as_str()));
    assert_eq!(fin.set.last.as_deref(), Some(a.ids()[2].as_str()));
    assert!(!fin.complete);
}

#[tokio::test]
async fn default_page_is_50_and_max_is_clamped_to_250() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    chat(&alice, &mut bob, 260).await;
    let a = mam(&mut bob, Query::default()).await;
    assert_eq!(a.results.len(), 50);
    assert!(!a.fin().complete);
    assert_eq!(a.fin().set.count, Some(260));
    let a = mam(&mut bob, paged(Some(100_000), None, None)).await;
    assert_eq!(a.results.len(), 250);
    assert!(!a.fin().complete);
    // max=0 gives the count only.
    let a = mam(&mut bob, paged(Some(0), None, None)).await;
    assert!(a.results.is_empty());
    let fin = a.fin();
    assert_eq!(fin.set.count, Some(260));
    assert_eq!(fin.set.first, None);
}

#[tokio::test]
async fn form_filters_select_messages() {
    let env = Env::new();
    let mut alice = env.online("alice@localhost/a", 0).await;
    let carol = env.online("carol@localhost/c", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    chat(&alice, &mut bob, 3).await;
    chat(&carol, &mut bob, 2).await;
    alice.drain();
    let all = mam(&mut bob, paged(Some(50), None, None)).await;
    let ids = all.ids();
    assert_eq!(all.bodies(), ["m0", "m1", "m2", "m0", "m1"]);

    let mut q = Query::default();
    q.filter.with = Some("carol@localhost".parse().unwrap());
    let a = mam(&mut bob, q).await;
    assert_eq!(a.ids(), ids[3..].to_vec());
    assert_eq!(a.fin().set.count, Some(2));

    // A full JID in `with` selects by its bare JID.
    let mut q = Query::default();
    q.filter.with = Some("alice@localhost/a".parse().unwrap());
    assert_eq!(mam(&mut bob, q).await.ids(), ids[..3].to_vec());

    let mut q = Query::default();
    q.filter.after_id = Some(ids[0].clone());
    q.filter.before_id = Some(ids[4].clone());
    assert_eq!(mam(&mut bob, q).await.ids(), ids[1..4].to_vec());

    let mut q = Query::default();
    q.filter.ids = vec![ids[4].clone(), ids[1].clone()];
    assert_eq!(
        mam(&mut bob, q).await.ids(),
        [ids[1].clone(), ids[4].clone()]
    );

    // Time bounds: everything is within the last minute, nothing is in the future.
    let now = SystemTime::now();
    let mut q = Query::default();
    q.filter.start = Some(now - Duration::from_secs(60));
    assert_eq!(mam(&mut bob, q).await.ids(), ids);
    let mut q = Query::default();
    q.filter.start = Some(now + Duration::from_secs(60));
    let a = mam(&mut bob, q).await;
    assert!(a.results.is_empty());
    assert!(a.fin().complete);
    let mut q = Query::default();
    q.filter.end = Some(now - Duration::from_secs(60));
    assert!(mam(&mut bob, q).await.results.is_empty());
}

#[tokio::test]
async fn bad_queries_get_the_right_errors() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let mut carol = env.online("carol@localhost/c", 0).await;
    chat(&alice, &mut bob, 2).await;
    let alice_ids = mam(&mut carol, Query::default()).await.ids();
    assert!(alice_ids.is_empty());
    let bob_ids = mam(&mut bob, Query::default()).await.ids();

    let error = |a: &Answer| condition(&a.iq);
    // Unknown ids, in RSM and in the form, and another archive's ids.
    let a = mam(&mut bob, paged(Some(5), Some("nope"), None)).await;
    assert!(a.results.is_empty());
    assert_eq!(error(&a), Some(StanzaErrorCondition::ItemNotFound));
    let a = mam(&mut carol, paged(Some(5), None, Some(&bob_ids[0]))).await;
    assert_eq!(error(&a), Some(StanzaErrorCondition::ItemNotFound));
    let mut q = Query::default();
    q.filter.after_id = Some("0000000000000".into());
    assert_eq!(
        error(&mam(&mut bob, q).await),
        Some(StanzaErrorCondition::ItemNotFound)
    );
    let mut q = Query::default();
    q.filter.ids = vec![bob_ids[0].clone(), "missing".into()];
    assert_eq!(
        error(&mam(&mut bob, q).await),
        Some(StanzaErrorCondition::ItemNotFound)
    );

    // Malformed forms and sets.
    let field = |var: &str, v: &str| {
        Element::new("field", ns::DATA_FORMS)
            .attr("var", var)
            .child(Element::new("value", ns::DATA_FORMS).text_node(v))
    };
    let form = |f: Element| {
        Element::new("query", ns::MAM).child(
            Element::new("x", ns::DATA_FORMS)
                .attr("type", "submit")
                .child(field("FORM_TYPE", ns::MAM).attr("type", "hidden"))
                .child(f),
        )
    };
    for bad in [
        form(field("start", "last tuesday")),
        form(field("with", "@@")),
        form(field("colour", "blue")),
        Element::new("query", ns::MAM).child(
            Element::new("x", ns::DATA_FORMS)
                .attr("type", "submit")
                .child(field("FORM_TYPE", "urn:xmpp:mam:1")),
        ),
        Element::new("query", ns::MAM).child(
            Element::new("set", ns::RSM).child(Element::new("max", ns::RSM).text_node("-3")),
        ),
    ] {
        let a = mam_raw(&mut bob, iq("set", None, bad.clone())).await;
        assert!(a.results.is_empty());
        assert_eq!(error(&a), Some(StanzaErrorCondition::BadRequest), "{bad}");
    }
    let a = mam_raw(
        &mut bob,
        iq(
            "set",
            None,
            Element::new("query", ns::MAM).child(
                Element::new("set", ns::RSM).child(Element::new("index", ns::RSM).text_node("1")),
            ),
        ),
    )
    .await;
    assert_eq!(error(&a), Some(StanzaErrorCondition::FeatureNotImplemented));

    // Someone else's archive.
    for payload in [
        Element::from(Query::default()),
        Element::new("metadata", ns::MAM),
        Element::new("prefs", ns::MAM),
    ] {
        let a = mam_raw(
            &mut carol,
            iq("set", Some("bob@localhost"), payload.clone()),
        )
        .await;
        assert!(a.results.is_empty());
        assert_eq!(
            error(&a),
            Some(StanzaErrorCondition::Forbidden),
            "{payload}"
        );
    }
    // One's own bare JID as `to` works like no `to`.
    let a = mam_raw(
        &mut bob,
        iq("set", Some("bob@localhost"), Query::default().into()),
    )
    .await;
    assert_eq!(a.ids(), bob_ids);
}

#[tokio::test]
async fn form_metadata_and_disco() {
    let env = Env::new();
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;

    let r = bob
        .iq(iq("get", None, Element::new("query", ns::MAM)))
        .await;
    let x = r
        .get_child("query", ns::MAM)
        .and_then(|q| q.get_child("x", ns::DATA_FORMS))
        .expect("a form");
    let vars: Vec<&str> = x.children().filter_map(|f| f.get_attr("var")).collect();
    for v in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ] {
        assert!(vars.contains(&v), "{v} missing from {x}");
    }

    let meta = |r: &Element| {
        Metadata::try_from(r.get_child("metadata", ns::MAM).expect("metadata")).unwrap()
    };
    let r = bob
        .iq(iq("get", None, Element::new("metadata", ns::MAM)))
        .await;
    assert_eq!(meta(&r), Metadata::default());
    chat(&alice, &mut bob, 3).await;
    let ids = mam(&mut bob, Query::default()).await.ids();
    let r = bob
        .iq(iq("get", None, Element::new("metadata", ns::MAM)))
        .await;
    let m = meta(&r);
    assert_eq!(m.start.map(|b| b.id), Some(ids[0].clone()));
    assert_eq!(m.end.map(|b| b.id), Some(ids[2].clone()));

    let r = bob
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    let info = xmpp::xep::disco::DiscoInfo::try_from(r.get_child("query", ns::DISCO_INFO).unwrap())
        .unwrap();
    for f in [ns::MAM, ns::MAM_EXTENDED, ns::SID] {
        assert!(info.has_feature(f), "{f}");
    }
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let env = Env::new();
    let mut alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    let carol = env.online("carol@localhost/c", 0).await;

    let prefs_of = |r: &Element| Prefs::try_from(r.get_child("prefs", ns::MAM).unwrap()).unwrap();
    let r = bob
        .iq(iq("get", None, Element::new("prefs", ns::MAM)))
        .await;
    assert_eq!(prefs_of(&r), Prefs::default());

    // Never archive Carol.
    let never_carol = Prefs {
        never: vec!["carol@localhost".parse().unwrap()],
        ..Prefs::default()
    };
    let r = bob.iq(iq("set", None, never_carol.clone().into())).await;
    assert_eq!(prefs_of(&r), never_carol);
    let r = bob
        .iq(iq("get", None, Element::new("prefs", ns::MAM)))
        .await;
    assert_eq!(prefs_of(&r), never_carol);
    chat(&carol, &mut bob, 1).await;
    chat(&alice, &mut bob, 1).await;
    let a = mam(&mut bob, Query::default()).await;
    assert_eq!(a.results.len(), 1);
    assert_eq!(
        a.results[0].forwarded.stanza.get_attr("from"),
        Some("alice@localhost/a")
    );

    // Roster only: Alice becomes a contact, Carol stays a stranger (but is in `always`).
    let roster_only: Element = Prefs {
        default: xmpp::xep::mam::DefaultBehaviour::Roster,
        always: vec!["carol@localhost".parse().unwrap()],
        never: vec![],
    }
    .into();
    bob.iq(iq("set", None, roster_only)).await;
    let dave = env.online("dave@localhost/d", 0).await;
    befriend(&mut alice, &mut bob).await;
    chat(&alice, &mut bob, 1).await;
    chat(&carol, &mut bob, 1).await;
    chat(&dave, &mut bob, 1).await;
    let a = mam(&mut bob, Query::default()).await;
    let froms: Vec<&str> = a
        .results
        .iter()
        .filter_map(|r| r.forwarded.stanza.get_attr("from"))
        .collect();
    assert_eq!(
        froms,
        [
            "alice@localhost/a",
            "alice@localhost/a",
            "carol@localhost/c"
        ]
    );

    // A bad preference set is refused and changes nothing.
    let bad = Element::new("prefs", ns::MAM).attr("default", "sometimes");
    let r = bob.iq(iq("set", None, bad)).await;
    assert_eq!(condition(&r), Some(StanzaErrorCondition::BadRequest));
    let r = bob
        .iq(iq("get", None, Element::new("prefs", ns::MAM)))
        .await;
    assert_eq!(
        prefs_of(&r).default,
        xmpp::xep::mam::DefaultBehaviour::Roster
    );

    // Default never: nothing more, not even the sender's own copy.
    let never: Element = Prefs {
        default: xmpp::xep::mam::DefaultBehaviour::Never,
        ..Prefs::default()
    }
    .into();
    alice.iq(iq("set", None, never)).await;
    let before = mam(&mut alice, Query::default()).await.results.len();
    chat(&alice, &mut bob, 1).await;
    assert_eq!(
        mam(&mut alice, Query::default()).await.results.len(),
        before
    );
}

#[tokio::test]
async fn retention_expires_old_archives_and_offline_messages() {
    let env = Env::with(SessionConfig {
        archive_retention_days: Some(2),
        offline_retention_days: Some(7),
        ..SessionConfig::default()
    });
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    env.account("carol@localhost").await;
    chat(&alice, &mut bob, 3).await;
    alice
        .send(msg("carol@localhost", Some("chat"), Some("later")))
        .await;
    let now = SystemTime::now();
    assert_eq!(env.svc.expire_archive(now).await.unwrap(), 0);
    assert_eq!(env.svc.expire_offline(now).await.unwrap(), 0);
    assert_eq!(mam(&mut bob, Query::default()).await.results.len(), 3);
    let day = Duration::from_secs(86_400);
    // Alice's 4 sent copies, Bob's 3 and Carol's 1.
    assert_eq!(env.svc.expire_archive(now + 3 * day).await.unwrap(), 8);
    assert!(mam(&mut bob, Query::default()).await.results.is_empty());
    assert_eq!(env.offline_count("carol@localhost").await, 1);
    assert_eq!(env.svc.expire_offline(now + 8 * day).await.unwrap(), 1);
    assert_eq!(env.offline_count("carol@localhost").await, 0);

    // Without retention, nothing expires.
    let keep = Env::new();
    let alice = keep.online("alice@localhost/a", 0).await;
    let mut bob = keep.online("bob@localhost/b", 0).await;
    chat(&alice, &mut bob, 1).await;
    let far = now + 10_000 * day;
    assert_eq!(keep.svc.expire_archive(far).await.unwrap(), 0);
    assert_eq!(keep.svc.expire_offline(far).await.unwrap(), 0);
    assert_eq!(mam(&mut bob, Query::default()).await.results.len(), 1);
}

/// An archive whose every call fails, as a lost database would.
struct Down;

fn down<T>() -> Result<T, StorageError> {
    Err(StorageError::Unavailable("archive is gone".into()))
}

#[async_trait]
impl ArchiveStore for Down {
    async fn append(&self, _: &BareJid, _: &NewArchived<'_>) -> storage::Result<ArchivedRef> {
        down()
    }
    async fn query(
        &self,
        _: &BareJid,
        _: &ArchiveFilter,
        _: &ArchivePage,
    ) -> storage::Result<ArchiveResult> {
        down()
    }
    async fn metadata(&self, _: &BareJid) -> storage::Result<ArchiveMetadata> {
        down()
    }
    async fn get_prefs(&self, _: &BareJid) -> storage::Result<Option<ArchivePrefs>> {
        down()
    }
    async fn set_prefs(&self, _: &BareJid, _: &ArchivePrefs) -> storage::Result<()> {
        down()
    }
    async fn remove(&self, _: &BareJid, _: &str) -> storage::Result<()> {
        down()
    }
    async fn expire(&self, _: &str, _: u64) -> storage::Result<u64> {
        down()
    }
}

#[tokio::test]
async fn a_broken_archive_loses_no_message_and_fails_queries_cleanly() {
    let mut storage = storage::sqlite::open_in_memory().unwrap();
    storage.archive = Arc::new(Down);
    let env = Env::with_storage(SessionConfig::default(), storage);
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    alice
        .send(msg("bob@localhost", Some("chat"), Some("still here")))
        .await;
    let got = bob.one();
    assert_eq!(
        got.get_child("body", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("still here")
    );
    assert!(stanza_ids(&got).is_empty());
    for (ty, payload) in [
        ("set", Element::from(Query::default())),
        ("get", Element::new("metadata", ns::MAM)),
        ("get", Element::new("prefs", ns::MAM)),
    ] {
        let a = mam_raw(&mut bob, iq(ty, None, payload.clone())).await;
        assert!(a.results.is_empty());
        assert_eq!(
            condition(&a.iq),
            Some(StanzaErrorCondition::InternalServerError),
            "{payload}"
        );
    }
    assert!(env.svc.expire_archive(SystemTime::now()).await.is_ok());
    let retaining = Env::with_storage(
        SessionConfig {
            archive_retention_days: Some(1),
            ..SessionConfig::default()
        },
        env.storage.clone(),
    );
    assert!(
        retaining
            .svc
            .expire_archive(SystemTime::now())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_server_with_the_archive_off_archives_nothing_and_says_so() {
    let env = Env::with(SessionConfig {
        archive_enabled: false,
        ..SessionConfig::default()
    });
    let alice = env.online("alice@localhost/a", 0).await;
    let mut bob = env.online("bob@localhost/b", 0).await;
    // A stanza-id the sender forged is still removed.
    let forged = Element::new("stanza-id", ns::SID)
        .attr("by", "bob@localhost")
        .attr("id", "forged");
    alice
        .send(with_child(
            msg("bob@localhost", Some("chat"), Some("hello")),
            forged,
        ))
        .await;
    let got = bob.one();
    assert!(stanza_ids(&got).is_empty(), "{got}");
    let answer = bob.iq(iq("set", None, Query::default().into())).await;
    assert!(is_type(&answer, "iq", Some("error")), "{answer}");
    assert_eq!(
        xmpp::error::stanza_error_condition(&answer),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    let info = bob
        .iq(iq(
            "get",
            Some("bob@localhost"),
            Element::new("query", ns::DISCO_INFO),
        ))
        .await;
    let features: Vec<&str> = info
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|c| c.get_attr("var"))
        .collect();
    assert!(features.contains(&ns::DISCO_INFO), "{info}");
    assert!(!features.contains(&ns::MAM), "{info}");
}
