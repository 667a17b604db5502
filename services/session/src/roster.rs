//! The roster (RFC 6121 §2): the per-user cache, writes with pushes, and the roster IQs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use storage::{RosterItem, StorageError};
use xmpp::{BareJid, Element, FullJid, StanzaErrorCondition, ns};

use crate::build::{iq_result, presence, roster_item, visible};
use crate::route::Queue;
use crate::state::{Roster, UserGuard};
use crate::subscription::SubState;
use crate::{LocalSessionService, ToClient};

/// Longest item name or group name accepted in a roster set, in bytes.
const MAX_ROSTER_TEXT: usize = 1023;
/// Most groups on one roster item.
const MAX_GROUPS: usize = 64;

impl LocalSessionService {
    /// The user's roster, loaded into the cache on first use.
    pub(crate) async fn roster<'u>(
        &self,
        user: &'u mut UserGuard<'_>,
    ) -> Result<&'u mut Roster, StorageError> {
        if user.roster.is_none() {
            let (ver, items) = self.storage.rosters.get_roster(user.bare()).await?;
            let items: BTreeMap<BareJid, RosterItem> =
                items.into_iter().map(|i| (i.jid.clone(), i)).collect();
            user.roster = Some(Box::new(Roster { ver, items }));
        }
        Ok(user.roster.get_or_insert_with(|| {
            Box::new(Roster {
                ver: 0,
                items: BTreeMap::new(),
            })
        }))
    }

    /// One item, from the cache when loaded (it is then authoritative), else from storage.
    pub(crate) async fn get_item(
        &self,
        user: &UserGuard<'_>,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError> {
        match &user.roster {
            Some(r) => Ok(r.items.get(contact).cloned()),
            None => self.storage.rosters.get_item(user.bare(), contact).await,
        }
    }

    /// Whether the roster holds `max_roster_items` items already (every item counts, pending
    /// subscription requests included).
    async fn roster_full(&self, user: &mut UserGuard<'_>) -> Result<bool, StorageError> {
        let max = self.config.max_roster_items;
        Ok(self.roster(user).await?.items.len() >= max)
    }

    /// A subscription that would add an item to a full roster is bounced with
    /// `<resource-constraint/>` (to the user for an outbound one, to the contact for an
    /// inbound one); other storage errors are returned.
    pub(crate) fn roster_full_or(
        &self,
        e: StorageError,
        user: UserGuard<'_>,
        st: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        drop(user);
        match e {
            StorageError::QuotaExceeded => {
                self.bounce(
                    st,
                    StanzaErrorCondition::ResourceConstraint,
                    Some("the roster is full"),
                    q,
                );
                Ok(())
            }
            e => Err(e),
        }
    }

    async fn put_item(
        &self,
        user: &mut UserGuard<'_>,
        item: &RosterItem,
    ) -> Result<u64, StorageError> {
        let ver = self.storage.rosters.put_item(user.bare(), item).await?;
        if let Some(r) = &mut user.roster {
            r.ver = ver;
            r.items.insert(item.jid.clone(), item.clone());
        }
        Ok(ver)
    }

    /// Removes an item; `None` if there was none.
    async fn remove_item(
        &self,
        user: &mut UserGuard<'_>,
        contact: &BareJid,
    ) -> Result<Option<u64>, StorageError> {
        let ver = match self.storage.rosters.remove_item(user.bare(), contact).await {
            Ok(v) => v,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(r) = &mut user.roster {
            r.ver = ver;
            r.items.remove(contact);
        }
        Ok(Some(ver))
    }

    /// Writes an item whose subscription state changed, and pushes it to the interested
    /// resources when what the user sees changed.
    pub(crate) async fn save_item(
        &self,
        user: &mut UserGuard<'_>,
        old: Option<&RosterItem>,
        new: &RosterItem,
    ) -> Result<(), StorageError> {
        let was_visible = old.is_some_and(visible);
        if SubState::of(new) == SubState::NONE && old.is_some_and(|o| !visible(o)) {
            // An unanswered request from a stranger was withdrawn or declined: forget it.
            self.remove_item(user, &new.jid).await?;
            return Ok(());
        }
        if old.is_none() && self.roster_full(user).await? {
            // A new contact (a subscription request from a stranger, or to a new contact)
            // on a full roster: not stored, the subscription fails.
            tracing::debug!(jid = %user.bare(), "roster item not added: the roster is full");
            return Err(StorageError::QuotaExceeded);
        }
        let ver = self.put_item(user, new).await?;
        let shown = |i: &RosterItem| (i.subscription, i.ask_out, i.approved);
        if visible(new) && (!was_visible || old.map(shown) != Some(shown(new))) {
            self.push(user, ver, roster_item(new));
        }
        Ok(())
    }

    /// A roster push (RFC 6121 §2.1.6) to every interested resource.
    pub(crate) fn push(&self, user: &UserGuard<'_>, ver: u64, item: Element) {
        let ver = ver.to_string();
        for r in user.resources.iter().filter(|r| r.interested) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let iq = Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", format!("push{id}"))
                .attr("from", user.bare().as_str())
                .attr("to", r.jid.as_str())
                .child(
                    Element::new("query", ns::ROSTER)
                        .attr("ver", ver.as_str())
                        .child(item.clone()),
                );
            if r.sink.send(ToClient::Stanza(iq)).is_err() {
                tracing::debug!(jid = %r.jid, "roster push to a gone connection");
            }
        }
    }

    /// RFC 6121 §2.2 and §2.6: the roster, or an empty result when the client's version is
    /// current. The resource becomes interested in pushes.
    pub(crate) async fn roster_get(
        &self,
        from: &FullJid,
        st: &Element,
        payload: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let mut user = self.users.lock(&from.bare()).await;
        let roster = self.roster(&mut user).await?;
        let ver = roster.ver.to_string();
        let reply = if payload.get_attr("ver") == Some(ver.as_str()) {
            iq_result(st, None)
        } else {
            let mut query = Element::new("query", ns::ROSTER).attr("ver", ver.as_str());
            for item in roster.items.values().filter(|i| visible(i)) {
                query.append_child(roster_item(item));
            }
            iq_result(st, Some(query))
        };
        match user.resource_mut(from) {
            Some(r) => {
                r.interested = true;
                // Sent under the lock, so no push can overtake the result.
                let _ = r.sink.send(ToClient::Stanza(reply));
            }
            None => q.push_back(reply),
        }
        Ok(())
    }

    /// RFC 6121 §2.3-2.5: add, update or remove one item.
    pub(crate) async fn roster_set(
        &self,
        from: &FullJid,
        st: &Element,
        payload: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let bad = |this: &Self, q: &mut Queue, cond| {
            this.bounce(st, cond, None, q);
            Ok(())
        };
        let mut items = payload.children();
        let (Some(item), None) = (items.next(), items.next()) else {
            return bad(self, q, StanzaErrorCondition::BadRequest);
        };
        if !item.is("item", ns::ROSTER) {
            return bad(self, q, StanzaErrorCondition::BadRequest);
        }
        let Some(contact) = item.get_attr("jid").and_then(|j| j.parse::<BareJid>().ok()) else {
            return bad(self, q, StanzaErrorCondition::BadRequest);
        };
        let remove = match item.get_attr("subscription") {
            None => false,
            Some("remove") => true,
            Some(_) => return bad(self, q, StanzaErrorCondition::BadRequest),
        };
        let bare = from.bare();
        if remove {
            return self.roster_remove(from, st, &contact, q).await;
        }
        if contact == bare {
            return bad(self, q, StanzaErrorCondition::NotAllowed);
        }
        let name = item
            .get_attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let mut groups: Vec<String> = Vec::new();
        for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
            let text = g.text();
            if text.is_empty() || text.len() > MAX_ROSTER_TEXT {
                return bad(self, q, StanzaErrorCondition::NotAcceptable);
            }
            if groups.contains(&text) {
                return bad(self, q, StanzaErrorCondition::BadRequest);
            }
            groups.push(text);
        }
        if groups.len() > MAX_GROUPS || name.as_ref().is_some_and(|n| n.len() > MAX_ROSTER_TEXT) {
            return bad(self, q, StanzaErrorCondition::NotAcceptable);
        }
        let mut user = self.users.lock(&bare).await;
        let existing = self.get_item(&user, &contact).await?;
        if existing.is_none() && self.roster_full(&mut user).await? {
            drop(user);
            tracing::debug!(jid = %from, "roster set refused: the roster is full");
            self.bounce(
                st,
                StanzaErrorCondition::NotAllowed,
                Some("the roster is full"),
                q,
            );
            return Ok(());
        }
        let mut new = existing.unwrap_or_else(|| RosterItem::new(contact));
        new.name = name;
        new.groups = groups;
        let ver = self.put_item(&mut user, &new).await?;
        tracing::debug!(jid = %from, contact = %new.jid, ver, "roster item set");
        self.reply_then_push(&user, from, st, ver, roster_item(&new), q);
        Ok(())
    }

    async fn roster_remove(
        &self,
        from: &FullJid,
        st: &Element,
        contact: &BareJid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let bare = from.bare();
        let mut user = self.users.lock(&bare).await;
        let Some(old) = self.get_item(&user, contact).await? else {
            drop(user);
            self.bounce(st, StanzaErrorCondition::ItemNotFound, None, q);
            return Ok(());
        };
        // RFC 6121 §2.5.2: cancel both directions with the contact.
        let s = SubState::of(&old);
        if s.has_from() {
            for r in user.available() {
                q.push_back(presence(
                    r.jid.as_str(),
                    contact.as_str(),
                    Some("unavailable"),
                ));
            }
        }
        if s.has_to() || s.ask_out {
            q.push_back(presence(
                bare.as_str(),
                contact.as_str(),
                Some("unsubscribe"),
            ));
        }
        if s.has_from() || s.pending_in {
            q.push_back(presence(
                bare.as_str(),
                contact.as_str(),
                Some("unsubscribed"),
            ));
        }
        let Some(ver) = self.remove_item(&mut user, contact).await? else {
            drop(user);
            self.bounce(st, StanzaErrorCondition::ItemNotFound, None, q);
            return Ok(());
        };
        tracing::debug!(jid = %from, contact = %contact, ver, "roster item removed");
        let item = Element::new("item", ns::ROSTER)
            .attr("jid", contact.as_str())
            .attr("subscription", "remove");
        self.reply_then_push(&user, from, st, ver, item, q);
        Ok(())
    }

    /// The IQ result to the requester, then the push to every interested resource (the
    /// requester included), both under the user's lock so they keep their order.
    fn reply_then_push(
        &self,
        user: &UserGuard<'_>,
        from: &FullJid,
        st: &Element,
        ver: u64,
        item: Element,
        q: &mut Queue,
    ) {
        let reply = iq_result(st, None);
        match user.resource(from) {
            Some(r) => {
                let _ = r.sink.send(ToClient::Stanza(reply));
            }
            None => q.push_back(reply),
        }
        self.push(user, ver, item);
    }
}
