//! Sessions, addressing and message delivery.
//!
//! Every handler works on one user at a time and queues what it must send elsewhere; the
//! queue is then routed in order by [`LocalSessionService::process`], one stanza at a time.
//! Routing a stanza to a local user may queue more (an error bounce, an auto-reply, a probe
//! answer), which is how one client stanza's consequences run to completion without ever
//! holding two users' locks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use storage::StorageError;
use xmpp::error::error_reply;
use xmpp::xep::delay::Delay;
use xmpp::{BareJid, Element, FullJid, Jid, StanzaErrorCondition, StreamErrorCondition, ns};

use crate::build::{self, parse_stored};
use crate::clock::{from_ms, now_ms};
use crate::state::{Resource, UserGuard};
use crate::{ClientSink, LocalSessionService, SessionError, SessionToken, ToClient};

/// Stanzas waiting to be routed, each with `from` and `to` set.
pub(crate) type Queue = VecDeque<Element>;

/// A safety net against a routing loop; real work never comes close (a broadcast to a
/// roster of N contacts queues about 2N stanzas).
const MAX_ROUTED: usize = 200_000;

/// Offline messages read per page at login (at most; stream-managed sessions take less).
const OFFLINE_PAGE: usize = 100;
/// Bytes of offline messages read per page at login, for a session without stream management.
const OFFLINE_PAGE_BYTES: usize = 1024 * 1024;

/// The `Unavailable` reason `open` gives for an account another session node owns.
pub const NOT_OWNER: &str = "account owned by another session node";

impl LocalSessionService {
    pub(crate) fn is_hosted(&self, domain: &str) -> bool {
        self.registry.contains(domain)
    }

    pub(crate) async fn open_session(
        &self,
        jid: FullJid,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SessionToken, SessionError> {
        let bare = jid.bare();
        if !self.owns(&bare) {
            // The edge's view of the cluster is behind this node's: it retries once it
            // catches up, instead of binding a session this node would evict.
            return Err(SessionError::Unavailable(NOT_OWNER.to_owned()));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut q = Queue::new();
        let mut user = self.users.lock(&bare).await;
        let mut res = Resource::new(jid.clone(), token, sink);
        if let Some(pos) = user.resources.iter().position(|r| r.jid == jid) {
            // RFC 6120 §7.7.2.2: the new session wins; the old one learns why it ends. The
            // new session inherits what contacts were told, so that its end (if it never
            // sends presence) still retracts it.
            let old = user.resources.remove(pos);
            if old
                .sink
                .send(ToClient::Close(StreamErrorCondition::Conflict))
                .is_err()
            {
                tracing::debug!(jid = %jid, "replaced session was already gone");
            }
            res.stale_presence = old.announced();
            res.directed = old.directed;
            if let Some(sm) = &old.sm {
                // A detached (or live) stream-managed session replaced without resuming.
                self.store_unacked(&user, sm.finish(), &mut q).await;
            }
            tracing::info!(jid = %jid, token, "session replaced");
        } else if user.resources.len() >= self.max_resources_for(bare.domain()) {
            tracing::info!(jid = %jid, max = self.max_resources_for(bare.domain()), "too many resources");
            return Err(SessionError::ResourceConstraint(
                "too many resources bound for this account",
            ));
        } else {
            tracing::debug!(jid = %jid, token, "session opened");
        }
        user.resources.push(res);
        drop(user);
        if let Err(e) = self.process(q).await {
            tracing::warn!(jid = %jid, error = %e, "storage failure while replacing a session");
        }
        Ok(SessionToken(token))
    }

    pub(crate) async fn close_session(&self, jid: &FullJid, token: SessionToken) {
        let bare = jid.bare();
        let mut q = Queue::new();
        let res = {
            let mut user = self.users.lock(&bare).await;
            let Some(pos) = user
                .resources
                .iter()
                .position(|r| &r.jid == jid && r.token == token.0)
            else {
                tracing::debug!(jid = %jid, token = token.0, "close of a stale session ignored");
                return;
            };
            let gone = user.resources.remove(pos);
            tracing::debug!(jid = %jid, token = token.0, "session closed");
            if let Some(sm) = &gone.sm {
                self.store_unacked(&user, sm.finish(), &mut q).await;
            }
            let unavailable = Element::new("presence", ns::CLIENT).attr("type", "unavailable");
            let announced = gone.announced();
            self.send_unavailable(
                &mut user,
                jid,
                &unavailable,
                announced,
                gone.directed,
                &mut q,
            )
            .await
        };
        let routed = self.process(q).await;
        if let Err(e) = res.and(routed) {
            tracing::warn!(jid = %jid, error = %e, "storage failure while closing a session");
        }
    }

    pub(crate) async fn client_stanza(
        &self,
        jid: &FullJid,
        token: SessionToken,
        mut st: Element,
    ) -> Result<(), SessionError> {
        {
            let user = self.users.lock(&jid.bare()).await;
            let Some(r) = user
                .resources
                .iter()
                .find(|r| &r.jid == jid && r.token == token.0)
            else {
                return Err(SessionError::NoSession);
            };
            if let Some(sm) = &r.sm {
                sm.received();
            }
        }
        st.set_attr("from", jid.as_str());
        let mut q = Queue::new();
        let handled = match st.name() {
            "message" => {
                if st.get_attr("to").is_none() {
                    // RFC 6120 §10.3.1: as if addressed to the sender's bare JID.
                    st.set_attr("to", jid.bare().as_str());
                }
                self.archive_sent(jid, &mut st).await;
                q.push_back(st);
                Ok(())
            }
            "iq" => self.client_iq(jid, st, &mut q).await,
            "presence" => self.client_presence(jid, st, &mut q).await,
            other => {
                tracing::debug!(jid = %jid, name = other, "ignoring a non-stanza element");
                Ok(())
            }
        };
        let routed = self.process(q).await;
        handled.and(routed).map_err(SessionError::from)
    }

    /// Routes everything queued, in order, including what routing itself queues. Returns the
    /// first storage failure that could not be turned into an error stanza.
    pub(crate) async fn process(&self, mut q: Queue) -> Result<(), StorageError> {
        let mut first_err = None;
        let mut routed = 0usize;
        while let Some(st) = q.pop_front() {
            routed += 1;
            if routed > MAX_ROUTED {
                tracing::warn!(dropped = q.len() + 1, "routing loop cut short");
                break;
            }
            if let Err(e) = self.route(st, &mut q).await {
                tracing::warn!(error = %e, "storage failure while routing");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether an account of a hosted domain lives on this node.
    pub(crate) fn owns(&self, account: &BareJid) -> bool {
        self.locality.as_ref().is_none_or(|l| l.is_local(account))
    }

    /// A stanza another session node routed here because this node owns its recipient. It is
    /// handled here whatever this node's view of the cluster says, so a stanza never bounces
    /// between nodes that briefly disagree about membership.
    pub async fn deliver_from_peer(&self, st: Element) -> Result<(), SessionError> {
        use tracing::Instrument;
        let span = crate::route_span(&st, "peer");
        async {
            let mut q = Queue::new();
            self.route_here(st, &mut q, true).await?;
            self.process(q).await.map_err(SessionError::from)
        }
        .instrument(span)
        .await
    }

    /// Sends a stanza (`from` trusted) to its `to`: a local user, this server, or the router.
    async fn route(&self, st: Element, q: &mut Queue) -> Result<(), StorageError> {
        self.route_here(st, q, false).await
    }

    async fn route_here(
        &self,
        st: Element,
        q: &mut Queue,
        pinned: bool,
    ) -> Result<(), StorageError> {
        let Some(to) = st.get_attr("to") else {
            tracing::debug!(name = st.name(), "dropping a routed stanza without to");
            return Ok(());
        };
        let jid = match to.parse::<Jid>() {
            Ok(j) => j,
            Err(_) => {
                self.bounce(&st, StanzaErrorCondition::JidMalformed, None, q);
                return Ok(());
            }
        };
        if !self.is_hosted(jid.domain()) {
            self.route_remote(st, q).await;
            return Ok(());
        }
        if jid.bare().local().is_none() {
            return self.to_server(st, &jid, q).await;
        }
        if !pinned && !self.owns(&jid.bare()) {
            self.route_remote(st, q).await;
            return Ok(());
        }
        match st.name() {
            "message" => self.inbound_message(st, jid, q).await,
            "presence" => self.inbound_presence(st, jid, q).await,
            "iq" => self.inbound_iq(st, jid, q).await,
            _ => Ok(()),
        }
    }

    async fn route_remote(&self, st: Element, q: &mut Queue) {
        let bounceable = match (st.name(), build::ty(&st)) {
            ("message", t) => t != Some("error"),
            ("iq", Some("get" | "set")) => true,
            _ => false,
        };
        let original = bounceable.then(|| st.clone());
        if let Err(e) = self.router.route(st).await {
            tracing::debug!(error = %e, to = ?original.as_ref().and_then(|o| o.get_attr("to")), "no route");
            if let Some(orig) = original {
                self.bounce(&orig, e.condition(), None, q);
            }
        }
    }

    async fn to_server(&self, st: Element, jid: &Jid, q: &mut Queue) -> Result<(), StorageError> {
        match st.name() {
            "iq" if jid.resource().is_none() => self.server_iq(&st, q),
            "iq" | "message" => self.bounce(&st, StanzaErrorCondition::ServiceUnavailable, None, q),
            _ => {}
        }
        Ok(())
    }

    /// Queues the error reply RFC 6120 §8.3 describes, unless the stanza is an error itself
    /// or an IQ response (never answered).
    pub(crate) fn bounce(
        &self,
        st: &Element,
        cond: StanzaErrorCondition,
        text: Option<&str>,
        q: &mut Queue,
    ) {
        let ty = build::ty(st);
        if ty == Some("error") || (st.name() == "iq" && !matches!(ty, Some("get" | "set"))) {
            return;
        }
        tracing::debug!(to = ?st.get_attr("to"), from = ?st.get_attr("from"), condition = cond.as_str(), "bouncing a stanza");
        q.push_back(error_reply(st, cond, text));
    }

    /// Whether the user's account exists (a user with a bound resource does).
    pub(crate) async fn exists_locked(&self, user: &UserGuard<'_>) -> Result<bool, StorageError> {
        if !user.resources.is_empty() {
            return Ok(true);
        }
        self.storage.accounts.account_exists(user.bare()).await
    }

    /// RFC 6121 §8.5 for messages to a local user.
    async fn inbound_message(
        &self,
        mut st: Element,
        jid: Jid,
        q: &mut Queue,
    ) -> Result<(), StorageError> {
        let mtype = build::ty(&st).unwrap_or("normal").to_owned();
        let bare = jid.bare();
        let user = self.users.lock(&bare).await;
        match self.exists_locked(&user).await {
            Ok(true) => {}
            Ok(false) => {
                drop(user);
                self.bounce(&st, StanzaErrorCondition::ServiceUnavailable, None, q);
                return Ok(());
            }
            Err(e) => {
                drop(user);
                tracing::warn!(to = %bare, error = %e, "cannot check the recipient account");
                self.bounce(&st, StanzaErrorCondition::InternalServerError, None, q);
                return Ok(());
            }
        }
        self.archive_received(&user, &mut st).await;
        if let Jid::Full(full) = &jid {
            if let Some(r) = user.resource(full)
                && self.deliver_message(&bare, &[r], &st).await
            {
                return Ok(());
            }
            // §8.5.3.2.1: no such resource.
            if mtype == "headline" || mtype == "error" {
                return Ok(());
            }
        }
        match mtype.as_str() {
            "error" => return Ok(()),
            "groupchat" => {
                drop(user);
                self.bounce(&st, StanzaErrorCondition::ServiceUnavailable, None, q);
                return Ok(());
            }
            "headline" => {
                for r in user.available().filter(|r| r.priority >= 0) {
                    let _ = r.sink.send(ToClient::Stanza(st.clone()));
                }
                return Ok(());
            }
            _ => {}
        }
        // normal, chat (and unknown types, treated as normal): the available resources with
        // the highest non-negative priority, all of them when several share it; if their
        // connections fail, the next priority down.
        let mut candidates: Vec<&Resource> = user.available().filter(|r| r.priority >= 0).collect();
        candidates.sort_by_key(|r| std::cmp::Reverse(r.priority));
        for group in candidates.chunk_by(|a, b| a.priority == b.priority) {
            if self.deliver_message(&bare, group, &st).await {
                return Ok(());
            }
        }
        if st.get_child("body", ns::CLIENT).is_none() {
            // Chat states and receipts are not worth keeping (as Prosody and ejabberd).
            return Ok(());
        }
        // XEP-0160, under the user's lock so a login cannot miss it.
        let pushed = self
            .storage
            .offline
            .push(
                &bare,
                now_ms(),
                &st.to_string(),
                self.offline_quota_for(bare.domain()),
            )
            .await;
        drop(user);
        match pushed {
            Ok(id) => tracing::debug!(to = %bare, id, "message stored offline"),
            Err(StorageError::QuotaExceeded) => {
                tracing::info!(to = %bare, "offline storage full");
                self.bounce(
                    &st,
                    StanzaErrorCondition::ResourceConstraint,
                    Some("offline storage full"),
                    q,
                );
            }
            Err(e) => {
                tracing::warn!(to = %bare, error = %e, "cannot store an offline message");
                self.bounce(&st, StanzaErrorCondition::InternalServerError, None, q);
            }
        }
        Ok(())
    }

    /// Delivers a message to each of `targets` (resources of `bare`, whose lock the caller
    /// holds); true when at least one took it.
    ///
    /// A chat or normal message with a body going to a stream-managed resource is first
    /// written to offline storage, once for all targets (`durable_sm_queue`): its stored copy
    /// stays there until a resource acknowledges it, so a session node that dies with the
    /// message in a XEP-0198 queue (attached or waiting for resumption) loses nothing — the
    /// account's next login, on whichever node owns it then, gets it as an offline message
    /// (with its XEP-0359 stanza-id, so clients that also synced it through MAM can tell).
    pub(crate) async fn deliver_message(
        &self,
        bare: &BareJid,
        targets: &[&Resource],
        st: &Element,
    ) -> bool {
        let durable = self.config.durable_sm_queue
            && targets.iter().any(|r| r.sm.is_some())
            && st.get_child("body", ns::CLIENT).is_some()
            && matches!(build::ty(st), None | Some("chat" | "normal"));
        let mut stored = None;
        if durable {
            // Bounded by the sessions' caps, not by the offline quota: it is not a new
            // offline message but the durable side of a delivery.
            let unlimited = storage::OfflineQuota {
                messages: usize::MAX,
                bytes: usize::MAX,
            };
            match self
                .storage
                .offline
                .push(bare, now_ms(), &st.to_string(), unlimited)
                .await
            {
                Ok(id) => stored = Some(id),
                Err(e) => {
                    tracing::warn!(to = %bare, error = %e, "cannot keep a durable copy of a delivery")
                }
            }
        }
        let mut delivered = false;
        let mut held = false;
        for r in targets {
            let ok = match (&r.sm, stored) {
                (Some(sm), Some(id)) => {
                    let ok = sm.send_tagged(st.clone(), id).is_ok();
                    held |= ok;
                    ok
                }
                _ => r.sink.send(ToClient::Stanza(st.clone())).is_ok(),
            };
            delivered |= ok;
        }
        if let Some(id) = stored
            && !held
            && let Err(e) = self.storage.offline.remove_ids(bare, &[id]).await
        {
            tracing::warn!(to = %bare, error = %e, "cannot remove an unused durable copy");
        }
        delivered
    }

    /// The offline ids held unacknowledged by the stream-managed sessions of `user`: stored
    /// copies of deliveries in flight, which an offline flush must not send again.
    fn in_flight(user: &UserGuard<'_>) -> std::collections::HashSet<u64> {
        user.resources
            .iter()
            .filter_map(|r| r.sm.as_ref())
            .flat_map(|sm| sm.offline_ids())
            .collect()
    }

    /// Delivers the stored offline messages to a resource that just became available with
    /// a non-negative priority, each with an XEP-0203 delay, a page at a time.
    ///
    /// Without stream management every page is sent at once and removed from storage. With
    /// it, delivery is paced by the client's acknowledgements ([`Self::offline_step`]): a page
    /// fills at most half of the session's unacknowledged cap, the next one goes out when the
    /// client acknowledges, and each message stays in storage until it is acknowledged. So a
    /// client that acknowledges receives any number of offline messages without passing the
    /// cap, and one that never does holds at most half the cap.
    pub(crate) async fn flush_offline(
        &self,
        user: &mut UserGuard<'_>,
        to: &FullJid,
    ) -> Result<(), StorageError> {
        let bare = user.bare().clone();
        let Some(r) = user.resource(to) else {
            return Ok(());
        };
        let (sink, sm) = (Arc::clone(&r.sink), r.sm.clone());
        if let Some(sm) = sm {
            // Another resource of the account is already being paced through the queue: it
            // takes it all, as an unpaced flush would have.
            let busy = user
                .resources
                .iter()
                .any(|o| &o.jid != to && o.offline_cursor.is_some());
            if let Some(r) = user.resource_mut(to) {
                r.offline_done = true;
                if !busy {
                    // What this session already holds unacknowledged is not sent twice.
                    r.offline_cursor = Some(sm.max_offline_id().unwrap_or(0));
                }
            }
            return self.offline_step(user, to, &sm).await;
        }
        let skip = Self::in_flight(user);
        let mut after = 0;
        loop {
            let page = self
                .storage
                .offline
                .list_page(&bare, after, OFFLINE_PAGE, OFFLINE_PAGE_BYTES)
                .await?;
            let Some(last) = page.last().map(|m| m.id) else {
                break;
            };
            let mut sent = Vec::new();
            let mut refused = false;
            for m in page.iter().filter(|m| !skip.contains(&m.id)) {
                if let Some(el) = self.offline_stanza(&bare, m)
                    && sink.send(ToClient::Stanza(el)).is_err()
                {
                    refused = true;
                    break;
                }
                sent.push(m.id);
            }
            if !sent.is_empty() {
                self.storage.offline.remove_ids(&bare, &sent).await?;
                tracing::debug!(to = %to, delivered = sent.len(), "offline messages delivered");
            }
            if refused {
                break;
            }
            after = last;
        }
        if let Some(r) = user.resource_mut(to) {
            r.offline_done = true;
        }
        Ok(())
    }

    /// One paced step of offline delivery to a stream-managed resource (at availability and
    /// after each acknowledgement): sends what fits the session's room, after the resource's
    /// cursor, and ends the drain when storage has nothing more. Called under the user's lock.
    pub(crate) async fn offline_step(
        &self,
        user: &mut UserGuard<'_>,
        to: &FullJid,
        sm: &crate::sm::SmSink,
    ) -> Result<(), StorageError> {
        let bare = user.bare().clone();
        let Some(after) = user.resource(to).and_then(|r| r.offline_cursor) else {
            return Ok(());
        };
        let (count, bytes) = sm.room();
        if count == 0 || (bytes == 0 && !sm.is_idle()) {
            return Ok(());
        }
        let page = self
            .storage
            .offline
            .list_page(&bare, after, count.min(OFFLINE_PAGE), bytes.max(1))
            .await?;
        let end = page.is_empty();
        let skip = Self::in_flight(user);
        let mut cursor = after;
        for m in page {
            if skip.contains(&m.id) {
                cursor = m.id;
                continue;
            }
            if let Some(el) = self.offline_stanza(&bare, &m)
                && !sm.send_offline(el, m.id)
            {
                // No room (or the session is ending): the next acknowledgement goes on.
                break;
            }
            cursor = m.id;
        }
        if let Some(r) = user.resource_mut(to) {
            r.offline_cursor = if end { None } else { Some(cursor) };
        }
        if end {
            tracing::debug!(to = %to, "offline messages all handed over");
        }
        Ok(())
    }

    /// A stored offline message as delivered: the stanza with its XEP-0203 delay.
    fn offline_stanza(&self, bare: &BareJid, m: &storage::OfflineMessage) -> Option<Element> {
        let Some(mut el) = parse_stored(&m.xml) else {
            tracing::warn!(owner = %bare, id = m.id, "dropping an undecodable offline message");
            return None;
        };
        let server = xmpp::BareJid::domain_only(bare.domain())
            .ok()
            .map(Jid::from);
        let mut delay = Delay::new(server, from_ms(m.stamp_ms));
        delay.reason = Some("Offline Storage".to_owned());
        el.append_child(delay.into());
        Some(el)
    }

    /// Loads a stored vCard, or an empty one.
    pub(crate) async fn load_vcard(&self, owner: &xmpp::BareJid) -> Result<Element, StorageError> {
        let stored = self.storage.vcards.get_vcard(owner).await?;
        Ok(stored
            .as_deref()
            .and_then(parse_stored)
            .filter(|e| e.is("vCard", ns::VCARD))
            .unwrap_or_else(|| Element::new("vCard", ns::VCARD)))
    }
}
