//! IQs: validation (RFC 6120 §8.2.3), delivery to full JIDs, and the IQs the server answers
//! itself, for the domain (disco, ping, version, time) and on behalf of accounts (roster,
//! vCard, disco, ping).

use xmpp::error::error_reply;
use xmpp::xep::disco::{DiscoInfo, DiscoItems, Identity};
use xmpp::xep::time::EntityTime;
use xmpp::xep::version::Version;
use xmpp::{BareJid, Element, FullJid, Jid, StanzaErrorCondition, ns};

use crate::build::{iq_result, ty};
use crate::route::Queue;
use crate::subscription::SubState;
use crate::{LocalSessionService, ToClient};

use storage::StorageError;

impl LocalSessionService {
    /// An IQ from a client: checked, then answered for the account (no `to`) or routed.
    pub(crate) async fn client_iq(
        &self,
        from: &FullJid,
        st: Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let has_id = st.get_attr("id").is_some();
        let valid = match ty(&st) {
            Some("get" | "set") => has_id && st.children().count() == 1,
            Some("result" | "error") => {
                if !has_id {
                    return Ok(());
                }
                true
            }
            _ => false,
        };
        if !valid {
            q.push_back(error_reply(&st, StanzaErrorCondition::BadRequest, None));
            return Ok(());
        }
        if st.get_attr("to").is_none() {
            if matches!(ty(&st), Some("get" | "set")) {
                self.account_iq(from, &st, q).await;
            }
            return Ok(());
        }
        q.push_back(st);
        Ok(())
    }

    /// An IQ routed to a local user's JID.
    pub(crate) async fn inbound_iq(
        &self,
        st: Element,
        jid: Jid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let request = matches!(ty(&st), Some("get" | "set"));
        match &jid {
            Jid::Full(full) => {
                let user = self.users.lock(&full.bare()).await;
                if let Some(r) = user.resource(full)
                    && r.sink.send(ToClient::Stanza(st.clone())).is_ok()
                {
                    return Ok(());
                }
                drop(user);
                // RFC 6121 §8.5.3.2.1: no such resource.
                self.bounce(&st, StanzaErrorCondition::ServiceUnavailable, None, q);
            }
            Jid::Bare(bare) => {
                // Responses to an account are the server's, and it sent no requests.
                if !request {
                    return Ok(());
                }
                let sender = st.get_attr("from").and_then(|f| f.parse::<FullJid>().ok());
                match sender {
                    Some(s) if &s.bare() == bare => self.account_iq(&s, &st, q).await,
                    _ => self.foreign_account_iq(&st, bare, q).await,
                }
            }
        }
        Ok(())
    }

    /// A get/set from a user to their own account (no `to`, or `to` their bare JID).
    async fn account_iq(&self, from: &FullJid, st: &Element, q: &mut Queue) {
        if let Err(e) = self.account_iq_inner(from, st, q).await {
            tracing::warn!(jid = %from, error = %e, "storage failure answering an iq");
            self.bounce(st, StanzaErrorCondition::InternalServerError, None, q);
        }
    }

    async fn account_iq_inner(
        &self,
        from: &FullJid,
        st: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let Some(payload) = st.first_child() else {
            self.bounce(st, StanzaErrorCondition::BadRequest, None, q);
            return Ok(());
        };
        let set = ty(st) == Some("set");
        match (payload.name(), payload.ns(), set) {
            ("query", ns::ROSTER, false) => return self.roster_get(from, st, payload, q).await,
            ("query", ns::ROSTER, true) => return self.roster_set(from, st, payload, q).await,
            ("vCard", ns::VCARD, false) => {
                let v = self.load_vcard(&from.bare()).await?;
                q.push_back(iq_result(st, Some(v)));
            }
            ("vCard", ns::VCARD, true) => {
                self.storage
                    .vcards
                    .set_vcard(&from.bare(), &payload.to_string())
                    .await?;
                tracing::debug!(jid = %from, "vcard stored");
                q.push_back(iq_result(st, None));
            }
            ("session", ns::SESSION, true) | ("ping", ns::PING, false) => {
                q.push_back(iq_result(st, None));
            }
            // A second bind on a stream (RFC 6120 §7.7.2.1 allows refusing it). The edge
            // answers it itself, except under stream management, where every stanza the
            // client receives must come through the session to be counted.
            ("bind", ns::BIND, true) => {
                self.bounce(st, StanzaErrorCondition::NotAllowed, None, q);
            }
            ("query", ns::DISCO_INFO, false) => self.account_disco_info(st, payload, q),
            ("query", ns::DISCO_ITEMS, false) => disco_items(st, payload, q),
            ("query" | "prefs" | "metadata", ns::MAM, _) if self.config.archive_enabled => {
                return self.mam_iq(from, st, payload, q).await;
            }
            _ => self.bounce(st, StanzaErrorCondition::ServiceUnavailable, None, q),
        }
        Ok(())
    }

    /// A get/set to another local user's bare JID, answered on that user's behalf.
    async fn foreign_account_iq(&self, st: &Element, target: &BareJid, q: &mut Queue) {
        if let Err(e) = self.foreign_account_iq_inner(st, target, q).await {
            tracing::warn!(to = %target, error = %e, "storage failure answering an iq");
            self.bounce(st, StanzaErrorCondition::InternalServerError, None, q);
        }
    }

    async fn foreign_account_iq_inner(
        &self,
        st: &Element,
        target: &BareJid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let user = self.users.lock(target).await;
        if !self.exists_locked(&user).await? {
            drop(user);
            self.bounce(st, StanzaErrorCondition::ServiceUnavailable, None, q);
            return Ok(());
        }
        let Some(payload) = st.first_child() else {
            drop(user);
            self.bounce(st, StanzaErrorCondition::BadRequest, None, q);
            return Ok(());
        };
        let set = ty(st) == Some("set");
        match (payload.name(), payload.ns(), set) {
            ("vCard", ns::VCARD, false) => {
                drop(user);
                let v = self.load_vcard(target).await?;
                q.push_back(iq_result(st, Some(v)));
            }
            ("vCard", ns::VCARD, true)
            | ("query", ns::ROSTER, _)
            | ("query" | "prefs" | "metadata", ns::MAM, _) => {
                drop(user);
                self.bounce(st, StanzaErrorCondition::Forbidden, None, q);
            }
            ("ping", ns::PING, false) => q.push_back(iq_result(st, None)),
            ("query", ns::DISCO_INFO | ns::DISCO_ITEMS, false) => {
                // XEP-0030 §8: reveal an account only to those it shares presence with.
                let requester = st
                    .get_attr("from")
                    .and_then(|f| f.parse::<Jid>().ok())
                    .map(|j| j.bare());
                let allowed = match requester {
                    Some(r) => self
                        .get_item(&user, &r)
                        .await?
                        .is_some_and(|i| SubState::of(&i).has_from()),
                    None => false,
                };
                drop(user);
                if !allowed {
                    self.bounce(st, StanzaErrorCondition::ServiceUnavailable, None, q);
                } else if payload.ns() == ns::DISCO_INFO {
                    self.account_disco_info(st, payload, q);
                } else {
                    disco_items(st, payload, q);
                }
            }
            _ => {
                drop(user);
                self.bounce(st, StanzaErrorCondition::ServiceUnavailable, None, q);
            }
        }
        Ok(())
    }

    fn account_disco_info(&self, st: &Element, payload: &Element, q: &mut Queue) {
        if payload.get_attr("node").is_some() {
            self.bounce(st, StanzaErrorCondition::ItemNotFound, None, q);
            return;
        }
        let info = DiscoInfo {
            node: None,
            identities: vec![Identity::new("account", "registered", None)],
            features: [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, ns::VCARD]
                .into_iter()
                .chain(
                    self.config
                        .archive_enabled
                        .then_some([ns::MAM, ns::MAM_EXTENDED, ns::SID])
                        .into_iter()
                        .flatten(),
                )
                .map(str::to_owned)
                .collect(),
        };
        q.push_back(iq_result(st, Some(info.into())));
    }

    /// The features the server advertises for itself (XEP-0030).
    pub(crate) fn server_features(&self) -> Vec<&'static str> {
        let mut f = vec![ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, ns::TIME];
        if self.config.version_enabled {
            f.push(ns::VERSION);
        }
        f.extend([
            ns::VCARD,
            ns::OFFLINE,
            ns::ROSTER,
            ns::ROSTER_VER,
            ns::PRE_APPROVAL,
        ]);
        f
    }

    /// An IQ to a hosted domain.
    pub(crate) fn server_iq(&self, st: &Element, q: &mut Queue) {
        let set = match ty(st) {
            Some("get") => false,
            Some("set") => true,
            _ => return,
        };
        let Some(payload) = st.first_child() else {
            self.bounce(st, StanzaErrorCondition::BadRequest, None, q);
            return;
        };
        match (payload.name(), payload.ns(), set) {
            ("query", ns::DISCO_INFO, false) => {
                if payload.get_attr("node").is_some() {
                    self.bounce(st, StanzaErrorCondition::ItemNotFound, None, q);
                    return;
                }
                let info = DiscoInfo {
                    node: None,
                    identities: vec![Identity::new("server", "im", Some("Relais"))],
                    features: self
                        .server_features()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                };
                q.push_back(iq_result(st, Some(info.into())));
            }
            ("query", ns::DISCO_ITEMS, false) => disco_items(st, payload, q),
            ("ping", ns::PING, false) | ("session", ns::SESSION, true) => {
                q.push_back(iq_result(st, None));
            }
            ("query", ns::VERSION, false) if self.config.version_enabled => {
                let version = Version {
                    name: "Relais".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    os: None,
                };
                q.push_back(iq_result(st, Some(version.into())));
            }
            ("time", ns::TIME, false) => {
                q.push_back(iq_result(st, Some(EntityTime::now().into())));
            }
            _ => self.bounce(st, StanzaErrorCondition::ServiceUnavailable, None, q),
        }
    }
}

/// An empty disco#items result (echoing the node, if any).
fn disco_items(st: &Element, payload: &Element, q: &mut Queue) {
    let items = DiscoItems {
        node: payload.get_attr("node").map(str::to_owned),
        items: Vec::new(),
    };
    q.push_back(iq_result(st, Some(items.into())));
}
