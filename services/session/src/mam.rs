//! XEP-0313 message archive management for accounts, with XEP-0359 stanza ids.
//!
//! # What is archived
//!
//! One-to-one messages, both sides, following XEP-0313 §5.1 as ejabberd and Prosody do: the
//! sender's copy in the sender's archive when the server accepts it from the client (whoever
//! and wherever the recipient is), the recipient's copy in the recipient's archive when it
//! reaches the recipient's account (delivered or stored offline). A message is archivable
//! when its type is `chat` or `normal` (or absent, or unknown, which RFC 6120 treats as
//! `normal`) and it has a `<body/>` or an XEP-0334 `<store/>` hint, unless it carries a
//! `<no-store/>` or `<no-permanent-store/>` hint. Errors, `groupchat` and `headline`
//! messages, chat states and receipts without a body are not archived. A message to one's
//! own bare JID is archived once, as received.
//!
//! Preferences (XEP-0313 §6) decide per contact: `never` JIDs are not archived, `always`
//! JIDs are, and the rest follows the default: `always` (the default when never set),
//! `never`, or `roster` (only contacts with a visible roster item).
//!
//! # Stanza ids
//!
//! The recipient's copy is delivered with `<stanza-id by='recipient bare JID' id='…'/>`,
//! the archive id. Any `<stanza-id/>` whose `by` is this server's domain or one of its
//! accounts is removed from messages from clients and from every message reaching an
//! account, so nobody can forge one (XEP-0359 §4).
//!
//! # Queries
//!
//! IQ set `<query/>` on one's own account: the data-form filter (`with`, `start`, `end`,
//! and the #extended `before-id`, `after-id`, `ids`), RSM paging both ways (default page
//! [`DEFAULT_PAGE`], larger `max` clamped to [`MAX_PAGE`]; `<index/>` is not supported),
//! `<flip-page/>`. Each message is sent to the querying resource as
//! `<message><result queryid id><forwarded><delay/><message/></forwarded></result></message>`,
//! then the IQ result carries `<fin complete>` with first, last and count. An unknown id is
//! `<item-not-found/>`, a malformed form or set `<bad-request/>`. IQ get `<query/>` returns
//! the form, `<metadata/>` the first and last message, `<prefs/>` get and set the
//! preferences. Another account's archive is `<forbidden/>`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use storage::{
    ArchiveDefault, ArchiveFilter, ArchivePage, ArchivePrefs, Direction, NewArchived, StorageError,
};
use xmpp::xep::delay::Delay;
use xmpp::xep::forward::Forwarded;
use xmpp::xep::mam::{
    Boundary, DefaultBehaviour, Fin, MamResult, Metadata, Prefs, Query, query_form,
};
use xmpp::xep::rsm::Set;
use xmpp::xep::stanza_id::StanzaId;
use xmpp::{BareJid, Element, FullJid, Jid, StanzaErrorCondition, ns};

use crate::build::{self, iq_result, parse_stored, ty};
use crate::clock::{from_ms, now_ms};
use crate::route::Queue;
use crate::state::UserGuard;
use crate::{LocalSessionService, SessionError, ToClient};

/// Messages per page when the query does not say.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page served; a larger `max` is clamped to it.
pub const MAX_PAGE: usize = 250;
/// The most ids one query may name.
const MAX_IDS: usize = 1000;

/// Whether a message is worth archiving (see the module docs).
pub(crate) fn archivable(st: &Element) -> bool {
    if st.name() != "message" || matches!(ty(st), Some("error" | "groupchat" | "headline")) {
        return false;
    }
    let hint = |name: &str| st.get_child(name, ns::HINTS).is_some();
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    st.get_child("body", ns::CLIENT).is_some() || hint("store")
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn to_storage_prefs(p: Prefs) -> ArchivePrefs {
    ArchivePrefs {
        default: match p.default {
            DefaultBehaviour::Always => ArchiveDefault::Always,
            DefaultBehaviour::Never => ArchiveDefault::Never,
            DefaultBehaviour::Roster => ArchiveDefault::Roster,
        },
        always: p.always,
        never: p.never,
    }
}

fn from_storage_prefs(p: ArchivePrefs) -> Prefs {
    Prefs {
        default: match p.default {
            ArchiveDefault::Always => DefaultBehaviour::Always,
            ArchiveDefault::Never => DefaultBehaviour::Never,
            ArchiveDefault::Roster => DefaultBehaviour::Roster,
        },
        always: p.always,
        never: p.never,
    }
}

impl LocalSessionService {
    /// Removes the `<stanza-id/>`s that claim to come from this server or its accounts.
    pub(crate) fn strip_stanza_ids(&self, st: &mut Element) {
        st.retain_children(|c| {
            if !c.is("stanza-id", ns::SID) {
                return true;
            }
            match c.get_attr("by").map(str::parse::<Jid>) {
                Some(Ok(by)) => !self.is_hosted(by.domain()),
                // Unattributable ids are worthless and may be a forgery attempt.
                _ => false,
            }
        });
    }

    /// Whether `owner`'s preferences let a message with `with` be archived. Called under
    /// the owner's lock (the roster cache is read through it).
    async fn wants(&self, user: &UserGuard<'_>, with: &BareJid) -> Result<bool, StorageError> {
        let cached = user
            .archive_prefs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let prefs = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(
                    self.storage
                        .archive
                        .get_prefs(user.bare())
                        .await?
                        .unwrap_or_default(),
                );
                *user
                    .archive_prefs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&p));
                p
            }
        };
        if prefs.never.contains(with) {
            return Ok(false);
        }
        if prefs.always.contains(with) {
            return Ok(true);
        }
        Ok(match prefs.default {
            ArchiveDefault::Always => true,
            ArchiveDefault::Never => false,
            ArchiveDefault::Roster => self
                .get_item(user, with)
                .await?
                .is_some_and(|i| build::visible(&i)),
        })
    }

    /// Archives `st` in `user`'s archive if it qualifies; returns the archive id. Failures
    /// are logged: the message still goes on, unarchived.
    async fn archive_for(
        &self,
        user: &UserGuard<'_>,
        with: &BareJid,
        direction: Direction,
        st: &Element,
    ) -> Option<String> {
        let wanted = match self.wants(user, with).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(owner = %user.bare(), error = %e, "cannot read archive preferences");
                return None;
            }
        };
        if !wanted {
            return None;
        }
        let xml = st.to_string();
        let msg = NewArchived {
            with,
            stamp_ms: now_ms(),
            direction,
            xml: &xml,
        };
        match self.storage.archive.append(user.bare(), &msg).await {
            Ok(r) => {
                tracing::debug!(owner = %user.bare(), id = %r.id, ?direction, "message archived");
                Some(r.id)
            }
            Err(e) => {
                tracing::warn!(owner = %user.bare(), error = %e, "cannot archive a message");
                None
            }
        }
    }

    /// The hook for a message from a local client (`from` and `to` already set): strips
    /// forged stanza ids and archives the sender's copy.
    pub(crate) async fn archive_sent(&self, from: &FullJid, st: &mut Element) {
        self.strip_stanza_ids(st);
        if !self.config.archive_enabled || !archivable(st) {
            return;
        }
        let Some(with) = st
            .get_attr("to")
            .and_then(|t| t.parse::<Jid>().ok())
            .map(|j| j.bare())
        else {
            return;
        };
        let bare = from.bare();
        if with == bare {
            // Archived once, when it arrives.
            return;
        }
        let user = self.users.lock(&bare).await;
        self.archive_for(&user, &with, Direction::Outgoing, st)
            .await;
    }

    /// The hook for a message reaching a local account, under its lock: strips forged
    /// stanza ids, archives the recipient's copy and stamps its stanza id on `st`.
    pub(crate) async fn archive_received(&self, user: &UserGuard<'_>, st: &mut Element) {
        self.strip_stanza_ids(st);
        if !self.config.archive_enabled || !archivable(st) {
            return;
        }
        let Some(with) = st
            .get_attr("from")
            .and_then(|f| f.parse::<Jid>().ok())
            .map(|j| j.bare())
        else {
            return;
        };
        if let Some(id) = self.archive_for(user, &with, Direction::Incoming, st).await {
            st.append_child(
                StanzaId {
                    by: Jid::Bare(user.bare().clone()),
                    id,
                }
                .into(),
            );
        }
    }

    /// A MAM IQ from a user to their own archive.
    pub(crate) async fn mam_iq(
        &self,
        from: &FullJid,
        st: &Element,
        payload: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let set = ty(st) == Some("set");
        match (payload.name(), set) {
            ("query", true) => self.mam_query(from, st, payload, q).await?,
            ("query", false) => {
                let form = Element::new("query", ns::MAM).child(query_form().into());
                q.push_back(iq_result(st, Some(form)));
            }
            ("metadata", false) => {
                let m = self.storage.archive.metadata(&from.bare()).await?;
                let boundary = |b: Option<(String, u64)>| {
                    b.map(|(id, ms)| Boundary {
                        id,
                        timestamp: from_ms(ms),
                    })
                };
                let meta = Metadata {
                    start: boundary(m.first),
                    end: boundary(m.last),
                };
                q.push_back(iq_result(st, Some(meta.into())));
            }
            ("prefs", false) => {
                let prefs = self
                    .storage
                    .archive
                    .get_prefs(&from.bare())
                    .await?
                    .unwrap_or_default();
                q.push_back(iq_result(st, Some(from_storage_prefs(prefs).into())));
            }
            ("prefs", true) => match Prefs::try_from(payload) {
                Ok(p) => {
                    let stored = to_storage_prefs(p);
                    // Under the user's lock, so an archiving decision never reads the old
                    // preferences once the new ones are acknowledged.
                    let user = self.users.lock(&from.bare()).await;
                    self.storage
                        .archive
                        .set_prefs(&from.bare(), &stored)
                        .await?;
                    *user
                        .archive_prefs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(Arc::new(stored.clone()));
                    drop(user);
                    tracing::debug!(jid = %from, "archive preferences set");
                    q.push_back(iq_result(st, Some(from_storage_prefs(stored).into())));
                }
                Err(e) => self.bounce(
                    st,
                    StanzaErrorCondition::BadRequest,
                    Some(&e.to_string()),
                    q,
                ),
            },
            _ => self.bounce(st, StanzaErrorCondition::BadRequest, None, q),
        }
        Ok(())
    }

    async fn mam_query(
        &self,
        from: &FullJid,
        st: &Element,
        payload: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let query = match Query::try_from(payload) {
            Ok(query) => query,
            Err(e) => {
                self.bounce(
                    st,
                    StanzaErrorCondition::BadRequest,
                    Some(&e.to_string()),
                    q,
                );
                return Ok(());
            }
        };
        if query.node.is_some() {
            self.bounce(
                st,
                StanzaErrorCondition::ItemNotFound,
                Some("no such node"),
                q,
            );
            return Ok(());
        }
        let rsm = query.set.unwrap_or_default();
        if rsm.index.is_some() {
            self.bounce(
                st,
                StanzaErrorCondition::FeatureNotImplemented,
                Some("paging by index is not supported"),
                q,
            );
            return Ok(());
        }
        if query.filter.ids.len() > MAX_IDS {
            self.bounce(
                st,
                StanzaErrorCondition::PolicyViolation,
                Some("too many ids"),
                q,
            );
            return Ok(());
        }
        let page = ArchivePage {
            max: rsm.max.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
            after: rsm.after,
            from_end: rsm.before.as_deref() == Some(""),
            before: rsm.before.filter(|b| !b.is_empty()),
        };
        let filter = ArchiveFilter {
            with: query.filter.with.map(|j| j.bare()),
            start_ms: query.filter.start.map(millis),
            end_ms: query.filter.end.map(millis),
            after_id: query.filter.after_id,
            before_id: query.filter.before_id,
            ids: query.filter.ids,
        };
        let owner = from.bare();
        let result = match self.storage.archive.query(&owner, &filter, &page).await {
            Ok(r) => r,
            Err(StorageError::NotFound) => {
                self.bounce(st, StanzaErrorCondition::ItemNotFound, None, q);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut items = result.items;
        let mut complete = result.complete;
        // A stream-managed session takes a page only as large as its room (half its
        // unacknowledged cap, less what waits), so paging never passes the cap: the page is
        // shortened (RSM allows fewer than `max`) and the client asks for the rest.
        let room = {
            let user = self.users.lock(&owner).await;
            user.resource(from)
                .and_then(|r| r.sm.as_ref())
                .map(|sm| sm.room())
        };
        if let Some((count, bytes)) = room {
            let keep = fitting(&items, count, bytes);
            if keep < items.len() {
                complete = false;
                if page.from_end || page.before.is_some() {
                    // Paging backwards: keep the messages nearest the cursor.
                    items.drain(..items.len() - keep);
                } else {
                    items.truncate(keep);
                }
            }
        }
        if query.flip_page {
            items.reverse();
        }
        let first = items.first().map(|m| m.id.clone());
        let last = items.last().map(|m| m.id.clone());
        let mut messages = Vec::with_capacity(items.len());
        for m in items {
            let Some(stanza) = parse_stored(&m.xml) else {
                tracing::warn!(owner = %owner, id = %m.id, "skipping an undecodable archived message");
                continue;
            };
            let result = MamResult {
                queryid: query.queryid.clone(),
                id: m.id,
                forwarded: Forwarded {
                    delay: Some(Delay::new(None, from_ms(m.stamp_ms))),
                    stanza,
                },
            };
            messages.push(
                Element::new("message", ns::CLIENT)
                    .attr("from", owner.as_str())
                    .attr("to", from.as_str())
                    .child(result.into()),
            );
        }
        // The results go straight to the querying resource, ahead of the IQ result.
        let sent = {
            let user = self.users.lock(&owner).await;
            match user.resource(from) {
                Some(r) => messages
                    .into_iter()
                    .all(|m| r.sink.send(ToClient::Stanza(m)).is_ok()),
                None => false,
            }
        };
        if !sent {
            tracing::debug!(jid = %from, "archive results could not all be sent");
            self.bounce(st, StanzaErrorCondition::ResourceConstraint, None, q);
            return Ok(());
        }
        let fin = Fin {
            complete,
            stable: true,
            set: Set {
                first,
                last,
                count: Some(result.count),
                ..Set::default()
            },
        };
        q.push_back(iq_result(st, Some(fin.into())));
        Ok(())
    }

    /// Retention: deletes the archived messages of every hosted domain older than its
    /// `archive_retention_days` (the domain's setting, else the server's) before `now`;
    /// domains without a retention keep everything. Returns how many were deleted. Meant to
    /// be called periodically.
    pub async fn expire_archive(&self, now: SystemTime) -> Result<u64, SessionError> {
        let mut total = 0;
        for domain in self.registry.names() {
            let Some(days) = self.archive_retention_for(&domain) else {
                continue;
            };
            let cutoff = millis(now).saturating_sub(u64::from(days) * 86_400_000);
            let n = self.storage.archive.expire(&domain, cutoff).await?;
            if n > 0 {
                tracing::info!(domain = %domain, removed = n, days, "archived messages expired");
            }
            total += n;
        }
        Ok(total)
    }

    /// Retention of offline messages: deletes those stored more than
    /// `offline_retention_days` before `now` (nothing when it is `None`).
    pub async fn expire_offline(&self, now: SystemTime) -> Result<u64, SessionError> {
        let Some(days) = self.config.offline_retention_days else {
            return Ok(0);
        };
        let cutoff = millis(now).saturating_sub(u64::from(days) * 86_400_000);
        let removed = self.storage.offline.expire(cutoff).await?;
        if removed > 0 {
            tracing::info!(removed, days, "offline messages expired");
        }
        Ok(removed)
    }
}

/// How many of `items` (in page order) fit `count` stanzas and `bytes` of room: at least
/// one, so paging always moves on.
fn fitting(items: &[storage::ArchivedMessage], count: usize, bytes: usize) -> usize {
    // The result wrapper (forwarded, delay, result ids) around each stored message.
    const WRAPPER: usize = 256;
    let mut used = 0usize;
    let mut n = 0;
    for m in items {
        used = used.saturating_add(m.xml.len() + WRAPPER);
        if n >= count.max(1) || (n > 0 && used > bytes) {
            break;
        }
        n += 1;
    }
    n.min(items.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn msg(ty: Option<&str>) -> Element {
        let mut m = Element::new("message", ns::CLIENT);
        if let Some(t) = ty {
            m.set_attr("type", t);
        }
        m
    }

    fn body(m: Element) -> Element {
        m.child(Element::new("body", ns::CLIENT).text_node("hi"))
    }

    #[test]
    fn archivable_follows_type_body_and_hints() {
        for t in [None, Some("chat"), Some("normal"), Some("x-unknown")] {
            assert!(archivable(&body(msg(t))), "{t:?}");
            assert!(!archivable(&msg(t)), "{t:?} without body");
        }
        for t in ["error", "groupchat", "headline"] {
            assert!(!archivable(&body(msg(Some(t)))), "{t}");
        }
        let hinted = |h: &str, m: Element| m.child(Element::new(h, ns::HINTS));
        assert!(!archivable(&hinted("no-store", body(msg(Some("chat"))))));
        assert!(!archivable(&hinted(
            "no-permanent-store",
            body(msg(Some("chat")))
        )));
        assert!(archivable(&hinted("store", msg(Some("chat")))));
        assert!(!archivable(&hinted("store", msg(Some("error")))));
        assert!(!archivable(&body(Element::new("iq", ns::CLIENT))));
    }

    #[test]
    fn prefs_convert_both_ways() {
        let p = Prefs {
            default: DefaultBehaviour::Roster,
            always: vec!["a@example.com".parse().unwrap_or_else(|_| unreachable!())],
            never: vec![],
        };
        assert_eq!(from_storage_prefs(to_storage_prefs(p.clone())), p);
        assert_eq!(millis(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
        assert_eq!(millis(UNIX_EPOCH - Duration::from_millis(5)), 0);
    }
}
