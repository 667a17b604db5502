//! Storage failures become error stanzas where a reply is owed, and `SessionError::Storage`
//! where none is. The failing stores wrap nothing: every call fails, as a lost database would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use session::{ErrorCode, SessionConfig, SessionError, SessionService};
use storage::{OfflineMessage, OfflineStore, RosterItem, RosterStore, StorageError, VcardStore};
use xmpp::{BareJid, Element, StanzaErrorCondition, ns};

struct Down;

fn down<T>() -> Result<T, StorageError> {
    Err(StorageError::Unavailable("database is gone".into()))
}

#[async_trait]
impl RosterStore for Down {
    async fn get_roster(&self, _: &BareJid) -> storage::Result<(u64, Vec<RosterItem>)> {
        down()
    }
    async fn get_item(&self, _: &BareJid, _: &BareJid) -> storage::Result<Option<RosterItem>> {
        down()
    }
    async fn put_item(&self, _: &BareJid, _: &RosterItem) -> storage::Result<u64> {
        down()
    }
    async fn remove_item(&self, _: &BareJid, _: &BareJid) -> storage::Result<u64> {
        down()
    }
}

#[async_trait]
impl OfflineStore for Down {
    async fn push(
        &self,
        _: &BareJid,
        _: u64,
        _: &str,
        _: storage::OfflineQuota,
    ) -> storage::Result<u64> {
        down()
    }
    async fn list(&self, _: &BareJid) -> storage::Result<Vec<OfflineMessage>> {
        down()
    }
    async fn list_page(
        &self,
        _: &BareJid,
        _: u64,
        _: usize,
        _: usize,
    ) -> storage::Result<Vec<OfflineMessage>> {
        down()
    }
    async fn remove_up_to(&self, _: &BareJid, _: u64) -> storage::Result<()> {
        down()
    }
    async fn remove_ids(&self, _: &BareJid, _: &[u64]) -> storage::Result<()> {
        down()
    }
    async fn count(&self, _: &BareJid) -> storage::Result<usize> {
        down()
    }
    async fn expire(&self, _: u64) -> storage::Result<u64> {
        down()
    }
}

#[async_trait]
impl VcardStore for Down {
    async fn get_vcard(&self, _: &BareJid) -> storage::Result<Option<String>> {
        down()
    }
    async fn set_vcard(&self, _: &BareJid, _: &str) -> storage::Result<()> {
        down()
    }
}

fn broken_env() -> Env {
    let mut storage = storage::sqlite::open_in_memory().unwrap();
    storage.rosters = Arc::new(Down);
    storage.offline = Arc::new(Down);
    storage.vcards = Arc::new(Down);
    Env::with_storage(SessionConfig::default(), storage)
}

#[tokio::test]
async fn owed_replies_become_internal_server_errors() {
    let env = broken_env();
    env.account("bob@localhost").await;
    let mut a = env.login("alice@localhost/a").await;
    for payload in [
        Element::new("query", ns::ROSTER),
        Element::new("vCard", ns::VCARD),
    ] {
        let r = a.iq(iq("get", None, payload.clone())).await;
        assert_eq!(
            condition(&r),
            Some(StanzaErrorCondition::InternalServerError),
            "{payload}"
        );
    }
    let r = a.iq(roster_set("bob@localhost", None, &[])).await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::InternalServerError)
    );
    let r = a
        .iq(iq("set", None, Element::new("vCard", ns::VCARD)))
        .await;
    assert_eq!(
        condition(&r),
        Some(StanzaErrorCondition::InternalServerError)
    );
    // A message that cannot be stored offline is bounced, never silently lost.
    a.send(msg("bob@localhost", Some("chat"), Some("x"))).await;
    assert_eq!(
        condition(&a.one()),
        Some(StanzaErrorCondition::InternalServerError)
    );
}

#[tokio::test]
async fn presence_failures_surface_as_session_errors() {
    let env = broken_env();
    let mut a = env.login("alice@localhost/a").await;
    let err = env
        .svc
        .stanza(&a.jid, a.token, available(0))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::Storage(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Unavailable);
    // What did not need storage still happened: the resource is available to itself.
    let echo = a.one();
    assert_eq!(echo.get_attr("from"), Some("alice@localhost/a"));
    let err = env
        .svc
        .stanza(
            &a.jid,
            a.token,
            pres(Some("bob@localhost"), Some("subscribe")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
}
