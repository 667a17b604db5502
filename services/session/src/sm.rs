//! XEP-0198 stream management, owned by the session service rather than the edge, so that a
//! client whose connection (or whole edge) died can resume through any edge.
//!
//! # How it works
//!
//! `enable_sm` wraps the resource's sink in an [`SmSink`]. Every delivery path of the service
//! already goes through `Resource::sink`, so from then on every `ToClient::Stanza` is counted
//! and kept until the client acknowledges it, with no change to the delivery rules. The
//! `<enabled/>` element itself is sent through the *unwrapped* sink at that moment, so it sits
//! exactly between the stanzas delivered before (not counted by the client) and after
//! (counted): the edge writes it like any other item.
//!
//! Inbound stanzas are counted in `client_stanza` (the server's `h`, reported on resume).
//!
//! # Policy
//!
//! - Cap: a session keeps at most `SessionConfig::sm_max_unacked` unacknowledged stanzas and
//!   about `sm_max_unacked_bytes` of them. The delivery that passes the cap is still queued
//!   (not written), the connection gets `<policy-violation/>`, and a task closes the session
//!   as by `close`, unacknowledged messages going to offline storage in their order. What
//!   arrives before that task runs is queued the same way (up to twice the cap; past that a
//!   delivery is refused and the caller falls back as for any unreachable resource).
//! - Detach: a resumable session that loses its connection stays bound with its presence for
//!   `sm_resume_secs`, queueing deliveries (which count as unacknowledged). At expiry it is
//!   closed as by `close`.
//! - Close (clean, expired, replaced by a new bind of the same resource, over the cap): every
//!   unacknowledged `<message/>` of type chat or normal with a body goes to offline storage
//!   with its original `from` and `to` (XEP-0198 §5: unacknowledged means undelivered); a
//!   message that had come out of offline storage gets its original stamp back instead of a
//!   second delay. What offline storage refuses (quota, failure) is bounced to the sender with
//!   an error, so nothing is dropped silently. Other unacknowledged stanzas (presence, IQs,
//!   headlines, chat states) are dropped, as RFC 6121 allows for an unavailable resource. A
//!   client that also got the message on another resource may see it twice.
//! - Resume while the old connection is still attached: the old connection gets
//!   `<conflict/>` (XEP-0198 §5) and the session moves to the new one.
//! - Resumption ids are `base64url(16 random bytes ‖ bare JID)`: the bare JID lets a cluster
//!   route a resume by placement, the 128 random bits make ids unguessable, and a resume is
//!   only accepted from the account the id names.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use storage::StorageError;
use xmpp::xep::delay::Delay;
use xmpp::{BareJid, Element, FullJid, StanzaErrorCondition, StreamErrorCondition, ns};

use crate::build::ty;
use crate::route::Queue;
use crate::state::UserGuard;
use crate::{
    ClientSink, LocalSessionService, SessionError, SessionToken, SinkError, SmEnabled, SmResumed,
    ToClient,
};

/// The XEP-0198 namespace.
pub const NS_SM: &str = "urn:xmpp:sm:3";

/// Random bytes in a resumption id (128 bits).
const ID_RANDOM_BYTES: usize = 16;

/// A new resumption id for a session of `bare`.
pub(crate) fn new_resume_id(bare: &BareJid) -> String {
    let mut raw = vec![0u8; ID_RANDOM_BYTES];
    rand::rng().fill(raw.as_mut_slice());
    raw.extend_from_slice(bare.as_str().as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// The account a resumption id names, if it is well formed.
pub fn resume_id_owner(id: &str) -> Option<BareJid> {
    let raw = URL_SAFE_NO_PAD.decode(id.as_bytes()).ok()?;
    let jid = raw.get(ID_RANDOM_BYTES..).filter(|j| !j.is_empty())?;
    std::str::from_utf8(jid).ok()?.parse().ok()
}

/// Limits of one stream-managed session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SmLimits {
    pub max_unacked: usize,
    pub max_bytes: usize,
}

/// The stream-management state of one resource, behind its own small lock so that
/// `ClientSink::send` stays synchronous and never blocks.
pub(crate) struct SmSink {
    jid: FullJid,
    limits: SmLimits,
    /// To close the session when the cap is passed.
    svc: Weak<LocalSessionService>,
    state: Mutex<SmState>,
}

struct SmState {
    /// The live connection; `None` while detached (and after the end).
    conn: Option<Arc<dyn ClientSink>>,
    /// The session's current token (it changes on resume).
    token: u64,
    resume_id: Option<String>,
    /// Stanzas delivered to the client, modulo 2^32.
    sent: u32,
    /// The client's last `h`.
    acked: u32,
    /// Stanzas received from the client, modulo 2^32 (the server's `h`).
    received: u32,
    /// Stanzas after `acked`, oldest first, with their approximate size and, for a message
    /// that came out of offline storage, its offline id (it stays stored until acknowledged).
    unacked: VecDeque<(Element, usize, Option<u64>)>,
    bytes: usize,
    /// Over the cap: queues without writing until the session is closed.
    closing: bool,
    /// Ended (`finish`): refuses every delivery.
    finished: bool,
    /// The service's count of unacknowledged stanzas over all sessions (a metric), kept in
    /// step with `unacked`.
    total: Arc<AtomicU64>,
}

impl Drop for SmState {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.unacked.len() as u64, Ordering::Relaxed);
    }
}

/// Why a resume could not go through.
pub(crate) enum ResumeError {
    /// Nothing changed.
    Refused(&'static str),
    /// The new connection could not take the resent stanzas; the session is detached again.
    ResendFailed,
}

impl SmSink {
    pub fn new(
        jid: FullJid,
        token: u64,
        conn: Arc<dyn ClientSink>,
        resume_id: Option<String>,
        limits: SmLimits,
        svc: Weak<LocalSessionService>,
    ) -> Self {
        let total = svc
            .upgrade()
            .map(|s| Arc::clone(&s.sm_unacked))
            .unwrap_or_default();
        SmSink {
            jid,
            limits,
            svc,
            state: Mutex::new(SmState {
                conn: Some(conn),
                token,
                resume_id,
                sent: 0,
                acked: 0,
                received: 0,
                unacked: VecDeque::new(),
                bytes: 0,
                closing: false,
                finished: false,
                total,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn resumable(&self) -> bool {
        self.lock().resume_id.is_some()
    }

    pub fn has_id(&self, id: &str) -> bool {
        self.lock().resume_id.as_deref() == Some(id)
    }

    /// Stanzas received from the client (the server's `h`).
    pub fn received_count(&self) -> u32 {
        self.lock().received
    }

    /// Counts one stanza received from the client.
    pub fn received(&self) {
        let mut st = self.lock();
        st.received = st.received.wrapping_add(1);
    }

    /// The client acknowledged `h` stanzas in total. Returns the offline ids of the newly
    /// acknowledged stanzas that have a stored copy: offline storage may now forget them.
    pub fn ack(&self, h: u32) -> Result<Vec<u64>, SessionError> {
        let mut st = self.lock();
        let n = h.wrapping_sub(st.acked) as usize;
        if n > st.unacked.len() {
            tracing::info!(jid = %self.jid, h, sent = st.sent, "acknowledgement of more than was sent");
            return Err(SessionError::Unsupported("h too large"));
        }
        let offline = st.forget(n);
        st.acked = h;
        Ok(offline)
    }

    /// Room left for paced deliveries (offline messages, archive pages): half the cap in
    /// stanzas and in bytes, less what waits for an acknowledgement, so that a client that
    /// acknowledges receives everything without the session ever passing its cap.
    pub fn room(&self) -> (usize, usize) {
        let st = self.lock();
        if st.closing || st.finished {
            return (0, 0);
        }
        (
            (self.limits.max_unacked / 2)
                .max(1)
                .saturating_sub(st.unacked.len()),
            (self.limits.max_bytes / 2).saturating_sub(st.bytes),
        )
    }

    /// Whether nothing waits for an acknowledgement.
    pub fn is_idle(&self) -> bool {
        self.lock().unacked.is_empty()
    }

    /// The highest offline id waiting for an acknowledgement.
    pub fn max_offline_id(&self) -> Option<u64> {
        self.lock().unacked.iter().filter_map(|u| u.2).max()
    }

    /// Delivers a message that came out of offline storage (stored as `offline_id`) if it
    /// fits the room of [`Self::room`] (always when nothing waits for an acknowledgement).
    /// It stays in offline storage until the client acknowledges it. False when it does not
    /// fit or the session cannot take it: the caller tries again after the next ack.
    pub fn send_offline(&self, el: Element, offline_id: u64) -> bool {
        let mut st = self.lock();
        if st.closing || st.finished {
            return false;
        }
        let size = el.approx_size();
        let fits = st.unacked.is_empty()
            || (st.unacked.len() < (self.limits.max_unacked / 2).max(1)
                && st.bytes.saturating_add(size) <= self.limits.max_bytes / 2);
        if !fits {
            return false;
        }
        if let Some(conn) = &st.conn
            && conn.send(ToClient::Stanza(el.clone())).is_err()
        {
            return false;
        }
        st.sent = st.sent.wrapping_add(1);
        st.bytes = st.bytes.saturating_add(size);
        st.unacked.push_back((el, size, Some(offline_id)));
        st.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drops the connection and keeps queueing. False if the session already ended.
    pub fn detach(&self) -> bool {
        let mut st = self.lock();
        st.conn = None;
        !(st.closing || st.finished)
    }

    /// Whether the session has no connection.
    pub fn is_detached(&self) -> bool {
        self.lock().conn.is_none()
    }

    /// Moves the session to `conn`: acknowledges up to `h`, closes an old connection with
    /// `<conflict/>`, and resends everything unacknowledged. Returns the server's `h`.
    pub fn resume(
        &self,
        h: u32,
        conn: Arc<dyn ClientSink>,
        token: u64,
    ) -> Result<u32, ResumeError> {
        let mut st = self.lock();
        if st.closing || st.finished {
            return Err(ResumeError::Refused("session ended"));
        }
        let n = h.wrapping_sub(st.acked) as usize;
        if n > st.unacked.len() {
            return Err(ResumeError::Refused("h too large"));
        }
        st.forget(n);
        st.acked = h;
        if let Some(old) = st.conn.take()
            && old
                .send(ToClient::Close(StreamErrorCondition::Conflict))
                .is_err()
        {
            tracing::debug!(jid = %self.jid, "resumed session's old connection was already gone");
        }
        st.token = token;
        for (el, _, _) in &st.unacked {
            if conn.send(ToClient::Stanza(el.clone())).is_err() {
                tracing::info!(jid = %self.jid, unacked = st.unacked.len(), "cannot resend on the resumed connection");
                return Err(ResumeError::ResendFailed);
            }
        }
        st.conn = Some(conn);
        Ok(st.received)
    }

    /// Ends stream management: refuses further deliveries and hands back what the client
    /// never acknowledged, oldest first, except the messages that came out of offline
    /// storage: those are still stored.
    pub fn finish(&self) -> Vec<Element> {
        let mut st = self.lock();
        st.finished = true;
        st.conn = None;
        st.bytes = 0;
        st.total
            .fetch_sub(st.unacked.len() as u64, Ordering::Relaxed);
        st.unacked
            .drain(..)
            .filter(|u| u.2.is_none())
            .map(|(e, _, _)| e)
            .collect()
    }

    /// The cap was passed: tell the connection why, and close the session from a task (the
    /// caller holds the user's lock).
    fn overflow(&self, st: &mut SmState) {
        st.closing = true;
        tracing::info!(
            jid = %self.jid,
            unacked = st.unacked.len(),
            bytes = st.bytes,
            "stream management queue over its cap; closing the session"
        );
        if let Some(conn) = st.conn.take() {
            let _ = conn.send(ToClient::Close(StreamErrorCondition::PolicyViolation));
        }
        let (Some(svc), Ok(rt)) = (self.svc.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let jid = self.jid.clone();
        let token = SessionToken(st.token);
        rt.spawn(async move { svc.close_session(&jid, token).await });
    }
}

impl SmState {
    /// Forgets the `n` oldest; returns the offline ids among them.
    fn forget(&mut self, n: usize) -> Vec<u64> {
        let mut offline = Vec::new();
        for _ in 0..n {
            if let Some((_, size, id)) = self.unacked.pop_front() {
                self.bytes = self.bytes.saturating_sub(size);
                self.total.fetch_sub(1, Ordering::Relaxed);
                offline.extend(id);
            }
        }
        offline
    }
}

impl ClientSink for SmSink {
    fn origin(&self) -> Option<(String, u64)> {
        self.lock().conn.as_ref().and_then(|c| c.origin())
    }

    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        match item {
            ToClient::Stanza(el) => self.deliver(el, None),
            ToClient::Close(cond) => match &self.lock().conn {
                Some(conn) => conn.send(ToClient::Close(cond)),
                None => Err(SinkError::Closed),
            },
        }
    }
}

impl SmSink {
    /// Delivers a message whose durable copy is offline message `offline_id` (see
    /// `LocalSessionService::deliver_message`): counted and capped like any delivery, and
    /// when acknowledged its stored copy is removed; at the end of the session it is not
    /// stored again.
    pub fn send_tagged(&self, el: Element, offline_id: u64) -> Result<(), SinkError> {
        self.deliver(el, Some(offline_id))
    }

    /// The offline ids of the stored messages this session holds unacknowledged.
    pub fn offline_ids(&self) -> Vec<u64> {
        self.lock().unacked.iter().filter_map(|u| u.2).collect()
    }

    fn deliver(&self, el: Element, tag: Option<u64>) -> Result<(), SinkError> {
        let mut st = self.lock();
        {
            {
                if st.finished {
                    return Err(SinkError::Closed);
                }
                let size = el.approx_size();
                let (max, max_bytes) = if st.closing {
                    // Waiting for the closing task: a hard bound all the same.
                    (
                        self.limits.max_unacked.saturating_mul(2),
                        self.limits.max_bytes.saturating_mul(2),
                    )
                } else {
                    (self.limits.max_unacked, self.limits.max_bytes)
                };
                let over = st.unacked.len() >= max
                    || (!st.unacked.is_empty() && st.bytes.saturating_add(size) > max_bytes);
                if over && st.closing {
                    return Err(SinkError::Full);
                }
                if over {
                    self.overflow(&mut st);
                }
                if let Some(conn) = &st.conn {
                    match conn.send(ToClient::Stanza(el.clone())) {
                        Ok(()) => {}
                        // The connection is gone but the session can be resumed (its edge
                        // died, and the detach is on its way): queue it as for a detached
                        // session, so a resume sends it and nothing takes a detour through
                        // offline storage that a resume would not flush.
                        Err(SinkError::Closed) if st.resume_id.is_some() => st.conn = None,
                        // Otherwise not counted: the caller falls back as for any unreachable
                        // resource, and the client never sees it.
                        Err(e) => return Err(e),
                    }
                }
                st.sent = st.sent.wrapping_add(1);
                st.bytes = st.bytes.saturating_add(size);
                st.unacked.push_back((el, size, tag));
                st.total.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

impl LocalSessionService {
    fn sm_limits(&self) -> SmLimits {
        SmLimits {
            max_unacked: self.config.sm_max_unacked.max(1),
            max_bytes: self.config.sm_max_unacked_bytes.max(1),
        }
    }

    pub(crate) async fn sm_enable(
        &self,
        jid: &FullJid,
        token: SessionToken,
        resume: bool,
    ) -> Result<SmEnabled, SessionError> {
        let bare = jid.bare();
        let limits = self.sm_limits();
        let max_secs = self.config.sm_resume_secs;
        let mut user = self.users.lock(&bare).await;
        let Some(r) = user
            .resources
            .iter_mut()
            .find(|r| &r.jid == jid && r.token == token.0)
        else {
            return Err(SessionError::NoSession);
        };
        if r.sm.is_some() {
            return Err(SessionError::Unsupported(
                "stream management already enabled",
            ));
        }
        let id = (resume && max_secs > 0).then(|| new_resume_id(&bare));
        let mut enabled = Element::new("enabled", NS_SM);
        if let Some(id) = &id {
            enabled.set_attr("id", id.as_str());
            enabled.set_attr("resume", "true");
            enabled.set_attr("max", max_secs.to_string());
        }
        // Through the plain sink: the marker between uncounted and counted stanzas.
        if r.sink.send(ToClient::Stanza(enabled)).is_err() {
            return Err(SessionError::Unavailable("connection gone".to_owned()));
        }
        let sm = Arc::new(SmSink::new(
            jid.clone(),
            token.0,
            Arc::clone(&r.sink),
            id.clone(),
            limits,
            self.me.clone(),
        ));
        r.sink = sm.clone();
        r.sm = Some(sm);
        tracing::debug!(jid = %jid, resumable = id.is_some(), "stream management enabled");
        Ok(SmEnabled {
            id,
            max_secs: if resume { max_secs } else { 0 },
        })
    }

    pub(crate) async fn sm_ack_h(
        &self,
        jid: &FullJid,
        token: SessionToken,
        h: u32,
    ) -> Result<(), SessionError> {
        let bare = jid.bare();
        let (sm, draining) = {
            let user = self.users.lock(&bare).await;
            let r = user
                .resources
                .iter()
                .find(|r| &r.jid == jid && r.token == token.0)
                .ok_or(SessionError::NoSession)?;
            let sm =
                r.sm.clone()
                    .ok_or(SessionError::Unsupported("stream management not enabled"))?;
            (sm, r.offline_cursor.is_some())
        };
        let acked = sm.ack(h)?;
        if !acked.is_empty() {
            // Stored copies leave storage only now (XEP-0198 §5: until the acknowledgement
            // they are not delivered).
            if let Err(e) = self.storage.offline.remove_ids(&bare, &acked).await {
                tracing::warn!(to = %bare, error = %e, "cannot remove acknowledged offline messages");
            }
        }
        if draining {
            let mut user = self.users.lock(&bare).await;
            if let Err(e) = self.offline_step(&mut user, jid, &sm).await {
                tracing::warn!(to = %bare, error = %e, "cannot deliver the next offline messages");
            }
        }
        Ok(())
    }

    pub(crate) async fn sm_received_count(
        &self,
        jid: &FullJid,
        token: SessionToken,
    ) -> Result<u32, SessionError> {
        let user = self.users.lock(&jid.bare()).await;
        let r = user
            .resources
            .iter()
            .find(|r| &r.jid == jid && r.token == token.0)
            .ok_or(SessionError::NoSession)?;
        r.sm.as_ref()
            .map(|sm| sm.received_count())
            .ok_or(SessionError::Unsupported("stream management not enabled"))
    }

    pub(crate) async fn sm_detach(&self, jid: &FullJid, token: SessionToken) {
        let detached = {
            let user = self.users.lock(&jid.bare()).await;
            match user
                .resources
                .iter()
                .find(|r| &r.jid == jid && r.token == token.0)
                .and_then(|r| r.sm.as_ref())
            {
                Some(sm) if sm.resumable() && self.config.sm_resume_secs > 0 => sm.detach(),
                _ => false,
            }
        };
        if detached {
            tracing::info!(jid = %jid, token = token.0, secs = self.config.sm_resume_secs, "session detached, waiting for resumption");
            self.expire_later(jid.clone(), token);
        } else {
            self.close_session(jid, token).await;
        }
    }

    /// Closes the session `token` after the resumption time, unless it was resumed (which
    /// changes its token) or closed meanwhile.
    fn expire_later(&self, jid: FullJid, token: SessionToken) {
        let wait = Duration::from_secs(u64::from(self.config.sm_resume_secs));
        let svc = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(svc) = svc.upgrade() {
                svc.expire(&jid, token).await;
            }
        });
    }

    async fn expire(&self, jid: &FullJid, token: SessionToken) {
        let detached = {
            let user = self.users.lock(&jid.bare()).await;
            user.resources
                .iter()
                .find(|r| &r.jid == jid && r.token == token.0)
                .and_then(|r| r.sm.as_ref())
                .is_some_and(|sm| sm.is_detached())
        };
        if detached {
            tracing::info!(jid = %jid, token = token.0, "detached session expired");
            self.close_session(jid, token).await;
        }
    }

    /// Ends every detached session now (at shutdown), so what they hold reaches offline
    /// storage instead of dying with the process.
    pub async fn close_detached(&self) {
        for bare in self.users.keys() {
            let detached: Vec<(FullJid, u64)> = {
                let user = self.users.lock(&bare).await;
                user.resources
                    .iter()
                    .filter(|r| r.sm.as_ref().is_some_and(|sm| sm.is_detached()))
                    .map(|r| (r.jid.clone(), r.token))
                    .collect()
            };
            for (jid, token) in detached {
                tracing::info!(jid = %jid, "closing a detached session at shutdown");
                self.close_session(&jid, SessionToken(token)).await;
            }
        }
    }

    pub(crate) async fn sm_resume_session(
        &self,
        account: &BareJid,
        id: &str,
        h: u32,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SmResumed, SessionError> {
        let owner = resume_id_owner(id).ok_or(SessionError::ResumeFailed("malformed id"))?;
        if &owner != account {
            tracing::info!(account = %account, "resumption id of another account");
            return Err(SessionError::ResumeFailed("not this account's session"));
        }
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut user = self.users.lock(account).await;
        let Some(r) = user
            .resources
            .iter_mut()
            .find(|r| r.sm.as_ref().is_some_and(|sm| sm.has_id(id)))
        else {
            return Err(SessionError::ResumeFailed("unknown or expired session"));
        };
        let Some(sm) = r.sm.clone() else {
            return Err(SessionError::ResumeFailed("unknown or expired session"));
        };
        match sm.resume(h, sink, token) {
            Ok(server_h) => {
                r.token = token;
                tracing::info!(jid = %r.jid, token, "session resumed");
                Ok(SmResumed {
                    jid: r.jid.clone(),
                    token: SessionToken(token),
                    server_h,
                })
            }
            Err(ResumeError::Refused(why)) => Err(SessionError::ResumeFailed(why)),
            Err(ResumeError::ResendFailed) => {
                // The old connection (if any) was told to go: wait for another resume.
                r.token = token;
                let jid = r.jid.clone();
                drop(user);
                self.expire_later(jid, SessionToken(token));
                Err(SessionError::ResumeFailed(
                    "cannot resend to the new connection",
                ))
            }
        }
    }

    /// Puts a finished session's unacknowledged messages into offline storage (see the module
    /// docs for which). Called under the user's lock, like every offline write.
    pub(crate) async fn store_unacked(
        &self,
        user: &UserGuard<'_>,
        unacked: Vec<Element>,
        q: &mut Queue,
    ) {
        let bare = user.bare();
        let mut stored = 0usize;
        for m in unacked {
            if m.name() != "message" || m.get_child("body", ns::CLIENT).is_none() {
                continue;
            }
            if matches!(ty(&m), Some("groupchat" | "headline" | "error")) {
                continue;
            }
            let (m, stamp) = without_offline_delay(m, bare.domain());
            match self
                .storage
                .offline
                .push(
                    bare,
                    stamp,
                    &m.to_string(),
                    self.offline_quota_for(bare.domain()),
                )
                .await
            {
                Ok(_) => stored += 1,
                Err(StorageError::QuotaExceeded) => self.bounce(
                    &m,
                    StanzaErrorCondition::ResourceConstraint,
                    Some("offline storage full"),
                    q,
                ),
                Err(e) => {
                    tracing::warn!(to = %bare, error = %e, "cannot store an unacknowledged message offline");
                    self.bounce(&m, StanzaErrorCondition::InternalServerError, None, q);
                }
            }
        }
        if stored > 0 {
            tracing::debug!(to = %bare, stored, "unacknowledged messages stored offline");
        }
    }
}

/// Removes the `<delay/>` this server added at offline delivery (so a message stored again
/// does not carry two) and returns the stamp to store it with: the original one, or now.
fn without_offline_delay(mut m: Element, domain: &str) -> (Element, u64) {
    let ours = |d: &Element| {
        d.is("delay", ns::DELAY)
            && d.get_attr("from") == Some(domain)
            && d.text() == "Offline Storage"
    };
    let stamp = m
        .children()
        .find(|d| ours(d))
        .and_then(|d| Delay::try_from(d).ok())
        .and_then(|d| d.stamp.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match stamp {
        Some(ms) => {
            m.retain_children(|d| !ours(d));
            (m, ms)
        }
        None => (m, crate::clock::now_ms()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_name_the_account_and_are_random() {
        let bare: BareJid = "alice@example.com"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let a = new_resume_id(&bare);
        let b = new_resume_id(&bare);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        assert_eq!(resume_id_owner(&a), Some(bare));
        assert_eq!(resume_id_owner("not base64!"), None);
        // Only random bytes, no JID.
        assert_eq!(resume_id_owner(&URL_SAFE_NO_PAD.encode([7u8; 16])), None);
    }

    struct Rec(Mutex<Vec<ToClient>>);

    impl ClientSink for Rec {
        fn send(&self, item: ToClient) -> Result<(), SinkError> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(item);
            Ok(())
        }
    }

    fn sink(limits: SmLimits) -> (SmSink, Arc<Rec>) {
        let rec = Arc::new(Rec(Mutex::new(Vec::new())));
        let jid: FullJid = "a@example.com/r".parse().unwrap_or_else(|e| panic!("{e}"));
        let sm = SmSink::new(jid, 1, rec.clone(), None, limits, Weak::new());
        (sm, rec)
    }

    fn stanza(n: u32) -> ToClient {
        ToClient::Stanza(Element::new("message", ns::CLIENT).attr("id", n.to_string()))
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let (sm, rec) = sink(SmLimits {
            max_unacked: 10,
            max_bytes: 1 << 20,
        });
        {
            let mut st = sm.lock();
            st.sent = u32::MAX - 1;
            st.acked = u32::MAX - 1;
            st.received = u32::MAX;
        }
        for n in 0..3 {
            sm.send(stanza(n)).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            rec.0.lock().unwrap_or_else(PoisonError::into_inner).len(),
            3
        );
        assert_eq!(sm.lock().sent, 1);
        // h = 0 after the wrap acknowledges two of the three.
        sm.ack(0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sm.lock().unacked.len(), 1);
        assert!(sm.ack(2).is_err(), "beyond what was sent");
        // Going backwards is as wrong as going too far.
        assert!(sm.ack(u32::MAX).is_err());
        sm.ack(1).unwrap_or_else(|e| panic!("{e}"));
        assert!(sm.lock().unacked.is_empty());
        sm.received();
        assert_eq!(sm.lock().received, 0);
    }

    #[test]
    fn the_unacked_total_follows_sends_acks_finish_and_drop() {
        let limits = SmLimits {
            max_unacked: 10,
            max_bytes: 1 << 20,
        };
        let (sm, _) = sink(limits);
        let total = Arc::clone(&sm.lock().total);
        let (other, _) = sink(limits);
        // Both sinks count into one total, as the sessions of one service do.
        other.lock().total = Arc::clone(&total);
        for n in 0..3 {
            sm.send(stanza(n)).unwrap_or_else(|e| panic!("{e}"));
        }
        other.send(stanza(9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(total.load(Ordering::Relaxed), 4);
        sm.ack(2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(total.load(Ordering::Relaxed), 2);
        assert_eq!(sm.finish().len(), 1);
        assert_eq!(total.load(Ordering::Relaxed), 1);
        drop(other);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_byte_cap_closes_the_connection_and_keeps_the_overflow() {
        let (sm, rec) = sink(SmLimits {
            max_unacked: 100,
            max_bytes: 500,
        });
        let big = |n: u32| {
            ToClient::Stanza(
                Element::new("message", ns::CLIENT)
                    .attr("id", n.to_string())
                    .child(Element::new("body", ns::CLIENT).text_node("x".repeat(100))),
            )
        };
        sm.send(big(1)).unwrap_or_else(|e| panic!("{e}"));
        sm.send(big(2)).unwrap_or_else(|e| panic!("{e}"));
        // Over 500 bytes: queued, not written; the connection is told why.
        sm.send(big(3)).unwrap_or_else(|e| panic!("{e}"));
        let written = rec.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(written.len(), 3, "{written:?}");
        assert_eq!(
            written.last(),
            Some(&ToClient::Close(StreamErrorCondition::PolicyViolation))
        );
        assert!(!sm.detach(), "a closing session cannot wait for resumption");
        let kept: Vec<String> = sm
            .finish()
            .iter()
            .filter_map(|m| m.get_attr("id").map(str::to_owned))
            .collect();
        assert_eq!(kept, ["1", "2", "3"]);
        assert_eq!(sm.send(big(4)), Err(SinkError::Closed));
    }

    #[test]
    fn offline_delay_is_removed_and_its_stamp_kept() {
        let stamp = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let server = BareJid::domain_only("example.com").unwrap_or_else(|e| panic!("{e}"));
        let mut d = Delay::new(Some(xmpp::Jid::from(server)), stamp);
        d.reason = Some("Offline Storage".to_owned());
        let m = Element::new("message", ns::CLIENT)
            .child(Element::new("body", ns::CLIENT).text_node("hi"))
            .child(d.into());
        let (m, ms) = without_offline_delay(m, "example.com");
        assert_eq!(ms, 1_000_000_000);
        assert!(m.get_child("delay", ns::DELAY).is_none(), "{m}");
        assert!(m.get_child("body", ns::CLIENT).is_some());
        // Someone else's delay stays.
        let other = Element::new("message", ns::CLIENT).child(
            Element::new("delay", ns::DELAY)
                .attr("from", "elsewhere.org")
                .attr("stamp", "2002-09-10T23:08:25Z"),
        );
        let (kept, _) = without_offline_delay(other, "example.com");
        assert!(kept.get_child("delay", ns::DELAY).is_some());
    }
}
