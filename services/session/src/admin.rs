//! What the admin API needs from the session service: the bound resources of a domain or an
//! account, and ending sessions on an operator's request ("kick").
//!
//! Both act on this process's live state only. In a cluster each session node answers for
//! the accounts it owns; listing or kicking a user on another node means asking that node.

use xmpp::{BareJid, FullJid, StreamErrorCondition};

use crate::{LocalSessionService, SessionToken, ToClient};

/// Which sessions to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionScope {
    /// Every account of this domain (as JIDs carry it: lowercased, IDNA).
    Domain(String),
    Account(BareJid),
}

impl SessionScope {
    fn covers(&self, account: &BareJid) -> bool {
        match self {
            SessionScope::Domain(d) => account.domain() == d,
            SessionScope::Account(a) => a == account,
        }
    }
}

/// One bound resource, for the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSession {
    pub jid: FullJid,
    pub priority: i8,
    /// Sent available presence and not unavailable since.
    pub available: bool,
    /// The edge node and connection id, when the connection came over a cluster link.
    pub origin: Option<(String, u64)>,
    /// When the resource was bound, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The client enabled stream management (XEP-0198) on this session.
    pub stream_managed: bool,
}

impl LocalSessionService {
    /// The bound resources in `scope` (detached stream-managed sessions included), sorted
    /// by full JID.
    pub async fn sessions(&self, scope: &SessionScope) -> Vec<AdminSession> {
        let mut out = Vec::new();
        for bare in self.users.keys() {
            if !scope.covers(&bare) {
                continue;
            }
            let user = self.users.lock(&bare).await;
            for r in &user.resources {
                out.push(AdminSession {
                    jid: r.jid.clone(),
                    priority: r.priority,
                    available: r.available,
                    origin: r.sink.origin(),
                    since_ms: r.since_ms,
                    stream_managed: r.sm.is_some(),
                });
            }
        }
        out.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
        out
    }

    /// Ends the session bound to `jid`: its connection gets `condition` as a stream error and
    /// the session ends as in `close` (contacts get unavailable presence; unacknowledged
    /// stream-management messages go to offline storage, and the session cannot be resumed).
    /// False when nothing is bound to `jid` here.
    pub async fn kick(&self, jid: &FullJid, condition: StreamErrorCondition) -> bool {
        let token = {
            let user = self.users.lock(&jid.bare()).await;
            let Some(r) = user.resource(jid) else {
                return false;
            };
            if r.sink.send(ToClient::Close(condition)).is_err() {
                tracing::debug!(jid = %jid, "kicked session's connection was already gone");
            }
            SessionToken(r.token)
        };
        tracing::info!(jid = %jid, condition = condition.as_str(), "session kicked");
        self.close_session(jid, token).await;
        true
    }

    /// Kicks every session in `scope`; returns how many ended.
    pub async fn kick_all(&self, scope: &SessionScope, condition: StreamErrorCondition) -> usize {
        let mut n = 0;
        for s in self.sessions(scope).await {
            if self.kick(&s.jid, condition).await {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{ClientSink, SessionConfig, SessionService, SinkError};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<ToClient>>);

    impl ClientSink for Recorder {
        fn send(&self, item: ToClient) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(item);
            Ok(())
        }
    }

    fn service() -> Arc<LocalSessionService> {
        let storage = storage::sqlite::open_in_memory().unwrap();
        let config = SessionConfig {
            domains: vec!["a.example".into(), "b.example".into()],
            ..SessionConfig::default()
        };
        LocalSessionService::new(config, storage, Arc::new(router::LocalRouter))
    }

    fn full(s: &str) -> FullJid {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn sessions_are_listed_per_domain_and_per_account() {
        let svc = service();
        for j in [
            "x@a.example/1",
            "x@a.example/2",
            "y@a.example/1",
            "z@b.example/1",
        ] {
            svc.open(full(j), Arc::new(Recorder::default()))
                .await
                .unwrap();
        }
        let a = svc
            .sessions(&SessionScope::Domain("a.example".into()))
            .await;
        let names: Vec<&str> = a.iter().map(|s| s.jid.as_str()).collect();
        assert_eq!(names, ["x@a.example/1", "x@a.example/2", "y@a.example/1"]);
        assert!(
            a.iter()
                .all(|s| s.since_ms > 0 && !s.available && s.origin.is_none())
        );
        let x = svc
            .sessions(&SessionScope::Account("x@a.example".parse().unwrap()))
            .await;
        assert_eq!(x.len(), 2);
        let none = svc
            .sessions(&SessionScope::Domain("c.example".into()))
            .await;
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn a_kick_closes_the_connection_with_the_condition_and_ends_the_session() {
        let svc = service();
        let sink = Arc::new(Recorder::default());
        let other = Arc::new(Recorder::default());
        svc.open(full("x@a.example/1"), sink.clone()).await.unwrap();
        svc.open(full("x@a.example/2"), other.clone())
            .await
            .unwrap();
        assert!(
            svc.kick(
                &full("x@a.example/1"),
                StreamErrorCondition::PolicyViolation
            )
            .await
        );
        assert_eq!(
            sink.0.lock().unwrap().last(),
            Some(&ToClient::Close(StreamErrorCondition::PolicyViolation))
        );
        assert!(other.0.lock().unwrap().is_empty());
        let left = svc
            .sessions(&SessionScope::Account("x@a.example".parse().unwrap()))
            .await;
        assert_eq!(left.len(), 1);
        assert!(
            !svc.kick(
                &full("x@a.example/1"),
                StreamErrorCondition::PolicyViolation
            )
            .await
        );
        let n = svc
            .kick_all(
                &SessionScope::Account("x@a.example".parse().unwrap()),
                StreamErrorCondition::NotAuthorized,
            )
            .await;
        assert_eq!(n, 1);
        assert_eq!(
            other.0.lock().unwrap().last(),
            Some(&ToClient::Close(StreamErrorCondition::NotAuthorized))
        );
        assert_eq!(svc.live_users(), 0);
    }
}
