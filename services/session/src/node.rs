//! What a session node of a cluster needs beyond the standalone service: a snapshot of its
//! live resources (published to the directory), eviction of the users it no longer owns after
//! a membership change, and unavailable presence on behalf of a dead node's users.

use xmpp::{Element, FullJid, StreamErrorCondition, ns};

use crate::route::Queue;
use crate::{LocalSessionService, SessionToken, ToClient};

/// One bound resource, as the directory records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveResource {
    pub jid: FullJid,
    pub priority: i8,
    pub available: bool,
    /// The edge node and its connection id, when the session came over a cluster link.
    pub origin: Option<(String, u64)>,
}

impl LocalSessionService {
    /// Every bound resource now (detached stream-managed sessions included: they are still
    /// bound until they resume or expire).
    pub async fn live_resources(&self) -> Vec<LiveResource> {
        let mut out = Vec::new();
        for bare in self.users.keys() {
            let user = self.users.lock(&bare).await;
            for r in &user.resources {
                out.push(LiveResource {
                    jid: r.jid.clone(),
                    priority: r.priority,
                    available: r.available,
                    origin: r.sink.origin(),
                });
            }
        }
        out
    }

    /// Ends the sessions of every user this node no longer owns (after a membership change):
    /// each connection gets `<system-shutdown/>` and its session ends as in `close`, so
    /// unacknowledged stream-management messages go to offline storage. The clients log in
    /// again and land on the new owner. Returns how many sessions ended.
    ///
    /// This is the documented fallback for re-homing: the client's stream ends, nothing
    /// acknowledged is lost.
    pub async fn evict_foreign(&self) -> usize {
        if self.locality.is_none() {
            return 0;
        }
        let mut ended = Vec::<(FullJid, SessionToken)>::new();
        for bare in self.users.keys() {
            if self.owns(&bare) {
                continue;
            }
            let user = self.users.lock(&bare).await;
            for r in &user.resources {
                let _ = r
                    .sink
                    .send(ToClient::Close(StreamErrorCondition::SystemShutdown));
                ended.push((r.jid.clone(), SessionToken(r.token)));
            }
        }
        for (jid, token) in &ended {
            tracing::info!(jid = %jid, "session moved to another node: closing it");
            self.close_session(jid, *token).await;
        }
        ended.len()
    }

    /// Unavailable presence from `jid`, whose session node died, to the contacts with a
    /// subscription from its account (RFC 6121 §4.5.2 on the dead node's behalf). Nothing is
    /// sent when the same full JID is bound here again. Directed presence of the dead session
    /// is not known and not retracted.
    pub async fn announce_gone(&self, jid: &FullJid) {
        let bare = jid.bare();
        let mut q = Queue::new();
        let res = {
            let mut user = self.users.lock(&bare).await;
            if user.resource(jid).is_some() {
                return;
            }
            let unavailable = Element::new("presence", ns::CLIENT).attr("type", "unavailable");
            self.send_unavailable(&mut user, jid, &unavailable, true, Vec::new(), &mut q)
                .await
        };
        let routed = self.process(q).await;
        if let Err(e) = res.and(routed) {
            tracing::warn!(jid = %jid, error = %e, "storage failure while announcing a dead session");
        }
    }
}
