//! The router: everything that is not a local user of this session node goes through the
//! [`Router`] trait. In standalone mode the [`LocalRouter`] knows no other servers yet
//! (federation comes later), so it answers `<remote-server-not-found/>`, which the session
//! turns into the bounce RFC 6120 §8.3 describes.

use async_trait::async_trait;
use xmpp::{Element, StanzaErrorCondition};

/// A small code per error kind, mapped to XMPP stanza errors (and later to gRPC statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NoRoute,
    Unavailable,
    Unconfirmed,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No server, node or component serves this domain.
    #[error("no route to {0}")]
    NoRoute(String),
    /// The route exists but cannot take the stanza now.
    #[error("route unavailable: {0}")]
    Unavailable(String),
    /// The stanza was handed to the next hop, which did not confirm it: it may have been
    /// delivered, so it must not be offered to another route (that could deliver it twice).
    #[error("route unconfirmed: {0}")]
    Unconfirmed(String),
}

impl RouteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::NoRoute(_) => ErrorCode::NoRoute,
            RouteError::Unavailable(_) => ErrorCode::Unavailable,
            RouteError::Unconfirmed(_) => ErrorCode::Unconfirmed,
        }
    }

    /// The stanza error a sender gets back.
    pub fn condition(&self) -> StanzaErrorCondition {
        match self.code() {
            ErrorCode::NoRoute => StanzaErrorCondition::RemoteServerNotFound,
            ErrorCode::Unavailable | ErrorCode::Unconfirmed => {
                StanzaErrorCondition::RemoteServerTimeout
            }
        }
    }
}

/// Delivery of a stanza whose `to` is not a user of a domain this node hosts. `from` is
/// already stamped and trusted.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    async fn route(&self, stanza: Element) -> Result<(), RouteError>;
}

/// The in-process router of standalone mode.
#[derive(Debug, Default)]
pub struct LocalRouter;

#[async_trait]
impl Router for LocalRouter {
    async fn route(&self, stanza: Element) -> Result<(), RouteError> {
        let to = stanza.get_attr("to").unwrap_or_default();
        let domain = to
            .parse::<xmpp::Jid>()
            .map(|j| j.domain().to_owned())
            .unwrap_or_default();
        tracing::debug!(%domain, "no route: federation is not available yet");
        Err(RouteError::NoRoute(domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_router_has_no_remote_routes() {
        let m = Element::new("message", xmpp::ns::CLIENT).attr("to", "a@elsewhere.example");
        let err = LocalRouter.route(m).await.err();
        assert_eq!(err.as_ref().map(RouteError::code), Some(ErrorCode::NoRoute));
        assert_eq!(
            err.map(|e| e.condition()),
            Some(StanzaErrorCondition::RemoteServerNotFound)
        );
    }
}
