//! Presence (RFC 6121 §4) and subscriptions (RFC 6121 §3, Appendix A).

use std::collections::HashSet;

use storage::{RosterItem, StorageError};
use xmpp::{BareJid, Element, FullJid, Jid, StanzaErrorCondition};

use crate::build::{presence, priority, readdress, ty};
use crate::route::Queue;
use crate::state::{MAX_DIRECTED, UserGuard};
use crate::subscription::{self, SubKind, SubState};
use crate::{LocalSessionService, ToClient};

impl LocalSessionService {
    /// A presence from a client.
    pub(crate) async fn client_presence(
        &self,
        from: &FullJid,
        st: Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let to = match st.get_attr("to") {
            None => None,
            Some(t) => match t.parse::<Jid>() {
                Ok(j) => Some(j),
                Err(_) => {
                    self.bounce(&st, StanzaErrorCondition::JidMalformed, None, q);
                    return Ok(());
                }
            },
        };
        let own = from.bare();
        let pty = ty(&st).map(str::to_owned);
        let to = match to {
            // RFC 6121 §4.2.1: presence to the user's own bare JID is a broadcast too.
            Some(Jid::Bare(b)) if b == own => None,
            other => other,
        };
        let Some(to) = to else {
            return match pty.as_deref() {
                None => self.broadcast_available(from, st, q).await,
                Some("unavailable") => self.broadcast_unavailable(from, st, q).await,
                _ => Ok(()),
            };
        };
        if let Some(kind) = pty.as_deref().and_then(SubKind::parse) {
            return self
                .outbound_subscription(from, to.bare(), kind, &st, q)
                .await;
        }
        match pty.as_deref() {
            None | Some("unavailable") => {
                if to.bare() != own {
                    self.record_directed(from, &to, pty.is_none()).await;
                }
                q.push_back(st);
            }
            Some("probe" | "error") => q.push_back(st),
            Some(other) => {
                tracing::debug!(jid = %from, ty = other, "dropping presence of unknown type")
            }
        }
        Ok(())
    }

    async fn record_directed(&self, from: &FullJid, to: &Jid, available: bool) {
        let mut user = self.users.lock(&from.bare()).await;
        let Some(r) = user.resource_mut(from) else {
            return;
        };
        let target = to.as_str();
        if available {
            if r.directed.len() < MAX_DIRECTED && !r.directed.iter().any(|t| t == target) {
                r.directed.push(target.to_owned());
            }
        } else {
            r.directed.retain(|t| t != target);
        }
    }

    /// Available presence without `to` (RFC 6121 §4.2 initial, §4.4 subsequent).
    async fn broadcast_available(
        &self,
        from: &FullJid,
        st: Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let bare = from.bare();
        let mut user = self.users.lock(&bare).await;
        let mut stored = st;
        stored.remove_attr("to");
        let prio = priority(&stored);
        let Some(r) = user.resource_mut(from) else {
            return Ok(());
        };
        let initial = !r.available;
        r.available = true;
        r.stale_presence = false;
        r.priority = prio;
        r.presence = Some(Box::new(stored.clone()));
        let flush = prio >= 0 && !r.offline_done;

        // The user's available resources, this one included (§4.2.2, §4.4.2).
        for o in user.available() {
            let _ = o.sink.send(ToClient::Stanza(readdress(
                &stored,
                from.as_str(),
                o.jid.as_str(),
            )));
        }
        let mut pending: Vec<BareJid> = Vec::new();
        let roster_err = match self.roster(&mut user).await {
            Ok(roster) => {
                for item in roster.items.values() {
                    let s = SubState::of(item);
                    if s.has_from() {
                        q.push_back(readdress(&stored, from.as_str(), item.jid.as_str()));
                    }
                    if initial && s.has_to() {
                        q.push_back(presence(from.as_str(), item.jid.as_str(), Some("probe")));
                    }
                    if initial && s.pending_in {
                        pending.push(item.jid.clone());
                    }
                }
                None
            }
            Err(e) => Some(e),
        };
        if initial {
            if let Some(sink) = user.resource(from).map(|r| std::sync::Arc::clone(&r.sink)) {
                // The other resources' presence (they are implicitly subscribed to each other).
                for o in user.available().filter(|o| &o.jid != from) {
                    if let Some(p) = &o.presence {
                        let _ = sink.send(ToClient::Stanza(readdress(
                            p,
                            o.jid.as_str(),
                            from.as_str(),
                        )));
                    }
                }
                // §3.1.3: unanswered subscription requests, at every login until answered.
                for c in &pending {
                    let _ = sink.send(ToClient::Stanza(presence(
                        c.as_str(),
                        bare.as_str(),
                        Some("subscribe"),
                    )));
                }
            }
            tracing::debug!(jid = %from, priority = prio, "initial presence");
        }
        if flush {
            self.flush_offline(&mut user, from).await?;
        }
        roster_err.map_or(Ok(()), Err)
    }

    /// Unavailable presence without `to` (RFC 6121 §4.5).
    async fn broadcast_unavailable(
        &self,
        from: &FullJid,
        st: Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let mut user = self.users.lock(&from.bare()).await;
        let Some(r) = user.resource_mut(from) else {
            return Ok(());
        };
        let announced = r.announced();
        r.available = false;
        r.stale_presence = false;
        r.presence = None;
        r.offline_done = false;
        r.offline_cursor = None;
        let directed = std::mem::take(&mut r.directed);
        let mut st = st;
        st.remove_attr("to");
        self.send_unavailable(&mut user, from, &st, announced, directed, q)
            .await
    }

    /// Retracts a resource's presence: from the user's other resources and the contacts
    /// with a subscription from the user (if it was announced), and from every target of
    /// directed presence not already covered.
    pub(crate) async fn send_unavailable(
        &self,
        user: &mut UserGuard<'_>,
        from: &FullJid,
        st: &Element,
        announced: bool,
        directed: Vec<String>,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let mut covered: HashSet<BareJid> = HashSet::new();
        let mut err = None;
        if announced {
            for o in user.available().filter(|o| &o.jid != from) {
                let _ = o.sink.send(ToClient::Stanza(readdress(
                    st,
                    from.as_str(),
                    o.jid.as_str(),
                )));
            }
            match self.roster(user).await {
                Ok(roster) => {
                    for item in roster.items.values().filter(|i| SubState::of(i).has_from()) {
                        q.push_back(readdress(st, from.as_str(), item.jid.as_str()));
                        covered.insert(item.jid.clone());
                    }
                }
                Err(e) => err = Some(e),
            }
        }
        for t in directed {
            let done = t.parse::<Jid>().is_ok_and(|j| covered.contains(&j.bare()));
            if !done {
                q.push_back(readdress(st, from.as_str(), &t));
            }
        }
        err.map_or(Ok(()), Err)
    }

    /// A subscription stanza from the user (RFC 6121 §3.1.2, §3.1.5, §3.2.2, §3.3.2).
    async fn outbound_subscription(
        &self,
        from: &FullJid,
        contact: BareJid,
        kind: SubKind,
        st: &Element,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let bare = from.bare();
        if contact == bare {
            return Ok(());
        }
        let mut user = self.users.lock(&bare).await;
        let existing = self.get_item(&user, &contact).await?;
        let mut item = existing
            .clone()
            .unwrap_or_else(|| RosterItem::new(contact.clone()));
        let old = SubState::of(&item);
        let out = subscription::outbound(old, kind);
        if out.state != old {
            out.state.apply(&mut item);
            if let Err(e) = self.save_item(&mut user, existing.as_ref(), &item).await {
                return self.roster_full_or(e, user, st, q);
            }
        }
        tracing::debug!(jid = %from, contact = %contact, kind = kind.as_str(), routed = out.route, "outbound subscription");
        if kind == SubKind::Unsubscribed && old.has_from() && !out.state.has_from() {
            // §3.2.2: the contact stops seeing the user.
            for r in user.available() {
                q.push_back(presence(
                    r.jid.as_str(),
                    contact.as_str(),
                    Some("unavailable"),
                ));
            }
        }
        if out.route {
            // §3: stamped with the bare JID, addressed to the contact's bare JID.
            q.push_back(readdress(st, bare.as_str(), contact.as_str()));
        }
        if kind == SubKind::Subscribed && !old.has_from() && out.state.has_from() {
            // §3.1.5: the new subscriber gets the user's current presence.
            self.queue_current_presence(&user, &contact, q);
        }
        Ok(())
    }

    /// The last presence of each available resource of the user, to `to`.
    fn queue_current_presence(&self, user: &UserGuard<'_>, to: &BareJid, q: &mut Queue) {
        for r in user.available() {
            if let Some(p) = &r.presence {
                q.push_back(readdress(p, r.jid.as_str(), to.as_str()));
            }
        }
    }

    /// A presence routed to a local user.
    pub(crate) async fn inbound_presence(
        &self,
        st: Element,
        jid: Jid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let pty = ty(&st).map(str::to_owned);
        match pty.as_deref() {
            None | Some("unavailable" | "error") => {
                let user = self.users.lock(&jid.bare()).await;
                match &jid {
                    // §8.5.3.2.2: to an unbound resource, dropped.
                    Jid::Full(full) => {
                        if let Some(r) = user.resource(full) {
                            let _ = r.sink.send(ToClient::Stanza(st));
                        }
                    }
                    Jid::Bare(_) => {
                        for r in user.available() {
                            let _ = r.sink.send(ToClient::Stanza(st.clone()));
                        }
                    }
                }
                Ok(())
            }
            Some("probe") => self.inbound_probe(&st, &jid.bare(), q).await,
            Some(t) => match SubKind::parse(t) {
                Some(kind) => self.inbound_subscription(&st, &jid.bare(), kind, q).await,
                None => Ok(()),
            },
        }
    }

    /// RFC 6121 §4.3.2: a probe is answered for the user, only to someone the user lets see
    /// their presence (anyone else learns nothing, as with Prosody). A user with no available
    /// resource answers unavailable from the bare JID.
    async fn inbound_probe(
        &self,
        st: &Element,
        user_bare: &BareJid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let Some(from) = st.get_attr("from") else {
            return Ok(());
        };
        let Ok(prober) = from.parse::<Jid>() else {
            return Ok(());
        };
        let prober = prober.bare();
        let user = self.users.lock(user_bare).await;
        let allowed = &prober == user_bare
            || self
                .get_item(&user, &prober)
                .await?
                .is_some_and(|i| SubState::of(&i).has_from());
        if !allowed {
            tracing::debug!(to = %user_bare, from = %prober, "probe from a non-subscriber ignored");
            return Ok(());
        }
        let mut any = false;
        for r in user.available() {
            if let Some(p) = &r.presence {
                q.push_back(readdress(p, r.jid.as_str(), from));
                any = true;
            }
        }
        if !any && &prober != user_bare {
            q.push_back(presence(user_bare.as_str(), from, Some("unavailable")));
        }
        Ok(())
    }

    /// A subscription stanza for a local user (RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3).
    async fn inbound_subscription(
        &self,
        st: &Element,
        user_bare: &BareJid,
        kind: SubKind,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let Some(contact) = st.get_attr("from").and_then(|f| f.parse::<Jid>().ok()) else {
            return Ok(());
        };
        let contact = contact.bare();
        if &contact == user_bare {
            return Ok(());
        }
        let mut user = self.users.lock(user_bare).await;
        if !self.exists_locked(&user).await? {
            // §3.1.3: a request to no one is dropped silently.
            return Ok(());
        }
        let existing = self.get_item(&user, &contact).await?;
        let mut item = existing
            .clone()
            .unwrap_or_else(|| RosterItem::new(contact.clone()));
        let old = SubState::of(&item);
        let out = subscription::inbound(old, kind);
        if out.state != old {
            out.state.apply(&mut item);
            if let Err(e) = self.save_item(&mut user, existing.as_ref(), &item).await {
                return self.roster_full_or(e, user, st, q);
            }
        }
        tracing::debug!(to = %user_bare, contact = %contact, kind = kind.as_str(), delivered = out.deliver, "inbound subscription");
        if out.deliver {
            let delivered = readdress(st, contact.as_str(), user_bare.as_str());
            for r in user.available() {
                let _ = r.sink.send(ToClient::Stanza(delivered.clone()));
            }
        }
        if kind == SubKind::Unsubscribe && old.has_from() && !out.state.has_from() {
            // §3.3.3: the former subscriber stops seeing the user.
            for r in user.available() {
                q.push_back(presence(
                    r.jid.as_str(),
                    contact.as_str(),
                    Some("unavailable"),
                ));
            }
        }
        if out.auto_subscribed {
            q.push_back(presence(
                user_bare.as_str(),
                contact.as_str(),
                Some("subscribed"),
            ));
            self.queue_current_presence(&user, &contact, q);
        }
        Ok(())
    }
}
