//! `relais.admin.v1.Admin`: [`GrpcAdminClient`] implements [`AdminService`] on a remote
//! server, and [`AdminGrpcServer`] serves an `Arc<dyn AdminService>` to token holders.
//!
//! Every call carries `authorization: Bearer <token>` in its metadata. The server
//! authenticates it against [`Tokens`] and runs the call through [`Scoped`], so the scope
//! rules are the same as over HTTP. Errors travel as gRPC statuses (see
//! [`admin_error_to_status`]).

use std::sync::Arc;
use std::time::Duration;

use ::admin::{
    AdminError, AdminService, DomainInfo, DomainSettings, DomainStats, KickCondition, KickTarget,
    Scoped, SessionFilter, SessionInfo, Tokens,
};
use async_trait::async_trait;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use xmpp::BareJid;

use crate::error::ProtoError;
use crate::pb::relais::admin::v1 as pb;
use crate::pb::relais::admin::v1::admin_client::AdminClient;
use crate::pb::relais::admin::v1::admin_server::{Admin as AdminRpc, AdminServer};

/// How long one admin call may take (a purge of a large domain is the slow one).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The gRPC status for an admin error.
pub fn admin_error_to_status(e: &AdminError) -> Status {
    use ::admin::ErrorCode as C;
    let code = match e.code() {
        C::InvalidArgument => Code::InvalidArgument,
        C::Unauthenticated => Code::Unauthenticated,
        C::PermissionDenied => Code::PermissionDenied,
        C::NotFound => Code::NotFound,
        C::AlreadyExists => Code::AlreadyExists,
        C::FailedPrecondition => Code::FailedPrecondition,
        C::Unsupported => Code::Unimplemented,
        C::Unavailable => Code::Unavailable,
        C::Internal => Code::Internal,
    };
    Status::new(code, e.message())
}

/// The admin error for a gRPC status (the inverse of [`admin_error_to_status`]; a deadline
/// or a transport failure is `Unavailable`, any other code `Internal`).
pub fn status_to_admin_error(s: &Status) -> AdminError {
    let m = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => AdminError::InvalidArgument(m),
        Code::Unauthenticated => AdminError::Unauthenticated(m),
        Code::PermissionDenied => AdminError::PermissionDenied(m),
        Code::NotFound => AdminError::NotFound(m),
        Code::AlreadyExists => AdminError::AlreadyExists(m),
        Code::FailedPrecondition | Code::ResourceExhausted => AdminError::FailedPrecondition(m),
        Code::Unimplemented => AdminError::Unsupported(m),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => AdminError::Unavailable(m),
        _ => AdminError::Internal(format!("{:?}: {m}", s.code())),
    }
}

fn settings_to_wire(s: &DomainSettings) -> pb::DomainSettings {
    pb::DomainSettings {
        registration_open: s.registration_open,
        archive_retention_days: s.archive_retention_days,
        max_accounts: s.max_accounts,
        max_sessions_per_account: s.max_sessions_per_account,
        offline_quota: s.offline_quota,
    }
}

fn settings_from_wire(s: Option<pb::DomainSettings>) -> DomainSettings {
    let s = s.unwrap_or_default();
    DomainSettings {
        registration_open: s.registration_open,
        archive_retention_days: s.archive_retention_days,
        max_accounts: s.max_accounts,
        max_sessions_per_account: s.max_sessions_per_account,
        offline_quota: s.offline_quota,
    }
}

fn domain_to_wire(d: DomainInfo) -> pb::Domain {
    pb::Domain {
        settings: Some(settings_to_wire(&d.settings)),
        name: d.name,
    }
}

fn domain_from_wire(d: pb::Domain) -> DomainInfo {
    DomainInfo {
        name: d.name,
        settings: settings_from_wire(d.settings),
    }
}

fn malformed(what: &str) -> AdminError {
    AdminError::Internal(format!("malformed answer from the server: {what}"))
}

/// The admin API of a remote server.
#[derive(Clone, Debug)]
pub struct GrpcAdminClient {
    client: AdminClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
}

impl GrpcAdminClient {
    /// A client of the server at `endpoint` (`http://host:port`) presenting `token`;
    /// connects on first use.
    pub fn connect_lazy(
        endpoint: impl Into<String>,
        token: Option<&str>,
    ) -> Result<Self, ProtoError> {
        let config = crate::ClientConfig {
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            ..crate::ClientConfig::default()
        };
        let channel = crate::channel(endpoint.into(), &config)?;
        Self::from_channel(channel, token)
    }

    pub fn from_channel(channel: Channel, token: Option<&str>) -> Result<Self, ProtoError> {
        let authorization = match token {
            Some(t) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {}", t.trim())).map_err(|_| {
                    ProtoError::Malformed(
                        "the token contains characters a header cannot carry".into(),
                    )
                })?,
            ),
            None => None,
        };
        Ok(GrpcAdminClient {
            client: AdminClient::new(channel),
            authorization,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(CALL_TIMEOUT);
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        req
    }
}

fn failed(status: Status) -> AdminError {
    status_to_admin_error(&status)
}

#[async_trait]
impl AdminService for GrpcAdminClient {
    async fn list_domains(&self) -> ::admin::Result<Vec<DomainInfo>> {
        let mut c = self.client.clone();
        let reply = c
            .list_domains(self.request(pb::ListDomainsRequest {}))
            .await
            .map_err(failed)?
            .into_inner();
        Ok(reply.domains.into_iter().map(domain_from_wire).collect())
    }

    async fn get_domain(&self, domain: &str) -> ::admin::Result<DomainInfo> {
        let mut c = self.client.clone();
        let req = pb::DomainRequest {
            domain: domain.to_owned(),
        };
        let reply = c.get_domain(self.request(req)).await.map_err(failed)?;
        Ok(domain_from_wire(reply.into_inner()))
    }

    async fn add_domain(
        &self,
        domain: &str,
        settings: DomainSettings,
    ) -> ::admin::Result<DomainInfo> {
        let mut c = self.client.clone();
        let req = pb::DomainSettingsRequest {
            domain: domain.to_owned(),
            settings: Some(settings_to_wire(&settings)),
        };
        let reply = c.add_domain(self.request(req)).await.map_err(failed)?;
        Ok(domain_from_wire(reply.into_inner()))
    }

    async fn update_domain(
        &self,
        domain: &str,
        settings: DomainSettings,
    ) -> ::admin::Result<DomainInfo> {
        let mut c = self.client.clone();
        let req = pb::DomainSettingsRequest {
            domain: domain.to_owned(),
            settings: Some(settings_to_wire(&settings)),
        };
        let reply = c.update_domain(self.request(req)).await.map_err(failed)?;
        Ok(domain_from_wire(reply.into_inner()))
    }

    async fn remove_domain(&self, domain: &str) -> ::admin::Result<()> {
        let mut c = self.client.clone();
        let req = pb::DomainRequest {
            domain: domain.to_owned(),
        };
        c.remove_domain(self.request(req)).await.map_err(failed)?;
        Ok(())
    }

    async fn purge_domain(&self, domain: &str) -> ::admin::Result<()> {
        let mut c = self.client.clone();
        let req = pb::DomainRequest {
            domain: domain.to_owned(),
        };
        c.purge_domain(self.request(req)).await.map_err(failed)?;
        Ok(())
    }

    async fn list_accounts(&self, domain: &str) -> ::admin::Result<Vec<BareJid>> {
        let mut c = self.client.clone();
        let req = pb::DomainRequest {
            domain: domain.to_owned(),
        };
        let reply = c
            .list_accounts(self.request(req))
            .await
            .map_err(failed)?
            .into_inner();
        reply
            .accounts
            .iter()
            .map(|a| a.parse().map_err(|_| malformed("an account jid")))
            .collect()
    }

    async fn add_account(&self, jid: &BareJid, password: &str) -> ::admin::Result<()> {
        let mut c = self.client.clone();
        let req = pb::AccountPasswordRequest {
            jid: jid.to_string(),
            password: password.to_owned(),
        };
        c.add_account(self.request(req)).await.map_err(failed)?;
        Ok(())
    }

    async fn set_password(&self, jid: &BareJid, password: &str) -> ::admin::Result<()> {
        let mut c = self.client.clone();
        let req = pb::AccountPasswordRequest {
            jid: jid.to_string(),
            password: password.to_owned(),
        };
        c.set_password(self.request(req)).await.map_err(failed)?;
        Ok(())
    }

    async fn remove_account(&self, jid: &BareJid) -> ::admin::Result<()> {
        let mut c = self.client.clone();
        let req = pb::AccountRequest {
            jid: jid.to_string(),
        };
        c.remove_account(self.request(req)).await.map_err(failed)?;
        Ok(())
    }

    async fn list_sessions(&self, filter: &SessionFilter) -> ::admin::Result<Vec<SessionInfo>> {
        let mut c = self.client.clone();
        let filter = match filter {
            SessionFilter::Domain(d) => pb::list_sessions_request::Filter::Domain(d.clone()),
            SessionFilter::Account(a) => pb::list_sessions_request::Filter::Account(a.to_string()),
        };
        let req = pb::ListSessionsRequest {
            filter: Some(filter),
        };
        let reply = c
            .list_sessions(self.request(req))
            .await
            .map_err(failed)?
            .into_inner();
        reply
            .sessions
            .into_iter()
            .map(|s| {
                Ok(SessionInfo {
                    jid: s.full_jid.parse().map_err(|_| malformed("a session jid"))?,
                    node: s.node,
                    connection: (!s.connection.is_empty()).then_some(s.connection),
                    priority: i8::try_from(s.priority).map_err(|_| malformed("a priority"))?,
                    available: s.available,
                    since_ms: s.since_ms,
                })
            })
            .collect()
    }

    async fn kick(&self, target: &KickTarget, condition: KickCondition) -> ::admin::Result<u32> {
        let mut c = self.client.clone();
        let req = pb::KickRequest {
            jid: target.to_string(),
            condition: condition.as_str().to_owned(),
        };
        let reply = c.kick(self.request(req)).await.map_err(failed)?;
        Ok(reply.into_inner().kicked)
    }

    async fn domain_stats(&self, domain: &str) -> ::admin::Result<DomainStats> {
        let mut c = self.client.clone();
        let req = pb::DomainRequest {
            domain: domain.to_owned(),
        };
        let s = c
            .get_stats(self.request(req))
            .await
            .map_err(failed)?
            .into_inner();
        Ok(DomainStats {
            domain: s.domain,
            accounts: s.accounts,
            online_accounts: s.online_accounts,
            sessions: s.sessions,
            messages_routed: s.messages_routed,
        })
    }
}

/// Serves `relais.admin.v1.Admin` over an [`AdminService`], to the holders of [`Tokens`].
#[derive(Clone)]
pub struct AdminGrpcServer {
    service: Arc<dyn AdminService>,
    tokens: Arc<Tokens>,
}

impl AdminGrpcServer {
    pub fn new(service: Arc<dyn AdminService>, tokens: Arc<Tokens>) -> Self {
        AdminGrpcServer { service, tokens }
    }

    /// The routes to add to a tonic server, or to turn into an axum router that also serves
    /// the HTTP mapping (see `relais`'s admin listener).
    pub fn routes(&self) -> Routes {
        Routes::new(AdminServer::new(self.clone()))
    }

    /// The service as the caller's token may use it.
    fn authorize(&self, metadata: &MetadataMap) -> Result<Scoped, Status> {
        let value = metadata.get("authorization").and_then(|v| v.to_str().ok());
        match self.tokens.authenticate(value) {
            Ok(scope) => Ok(Scoped::new(self.service.clone(), scope)),
            Err(e) => Err(admin_error_to_status(&e)),
        }
    }
}

fn status(e: AdminError) -> Status {
    admin_error_to_status(&e)
}

fn account(jid: &str) -> Result<BareJid, Status> {
    ::admin::parse_account(jid).map_err(status)
}

#[async_trait]
impl AdminRpc for AdminGrpcServer {
    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsReply>, Status> {
        let svc = self.authorize(request.metadata())?;
        let domains = svc.list_domains().await.map_err(status)?;
        Ok(Response::new(pb::ListDomainsReply {
            domains: domains.into_iter().map(domain_to_wire).collect(),
        }))
    }

    async fn get_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let svc = self.authorize(request.metadata())?;
        let d = svc
            .get_domain(&request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(domain_to_wire(d)))
    }

    async fn add_domain(
        &self,
        request: Request<pb::DomainSettingsRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let svc = self.authorize(request.metadata())?;
        let req = request.into_inner();
        let d = svc
            .add_domain(&req.domain, settings_from_wire(req.settings))
            .await
            .map_err(status)?;
        Ok(Response::new(domain_to_wire(d)))
    }

    async fn update_domain(
        &self,
        request: Request<pb::DomainSettingsRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let svc = self.authorize(request.metadata())?;
        let req = request.into_inner();
        let Some(settings) = req.settings else {
            return Err(Status::invalid_argument("settings are missing"));
        };
        let d = svc
            .update_domain(&req.domain, settings_from_wire(Some(settings)))
            .await
            .map_err(status)?;
        Ok(Response::new(domain_to_wire(d)))
    }

    async fn remove_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let svc = self.authorize(request.metadata())?;
        svc.remove_domain(&request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn purge_domain(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let svc = self.authorize(request.metadata())?;
        svc.purge_domain(&request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::ListAccountsReply>, Status> {
        let svc = self.authorize(request.metadata())?;
        let accounts = svc
            .list_accounts(&request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAccountsReply {
            accounts: accounts.into_iter().map(|j| j.to_string()).collect(),
        }))
    }

    async fn add_account(
        &self,
        request: Request<pb::AccountPasswordRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let svc = self.authorize(request.metadata())?;
        let req = request.into_inner();
        svc.add_account(&account(&req.jid)?, &req.password)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_password(
        &self,
        request: Request<pb::AccountPasswordRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let svc = self.authorize(request.metadata())?;
        let req = request.into_inner();
        svc.set_password(&account(&req.jid)?, &req.password)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_account(
        &self,
        request: Request<pb::AccountRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let svc = self.authorize(request.metadata())?;
        svc.remove_account(&account(&request.get_ref().jid)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsReply>, Status> {
        let svc = self.authorize(request.metadata())?;
        let filter = match &request.get_ref().filter {
            Some(pb::list_sessions_request::Filter::Domain(d)) => SessionFilter::Domain(d.clone()),
            Some(pb::list_sessions_request::Filter::Account(a)) => {
                SessionFilter::Account(account(a)?)
            }
            None => return Err(Status::invalid_argument("give a domain or an account")),
        };
        let sessions = svc.list_sessions(&filter).await.map_err(status)?;
        Ok(Response::new(pb::ListSessionsReply {
            sessions: sessions
                .into_iter()
                .map(|s| pb::Session {
                    full_jid: s.jid.to_string(),
                    node: s.node,
                    connection: s.connection.unwrap_or_default(),
                    priority: i32::from(s.priority),
                    available: s.available,
                    since_ms: s.since_ms,
                })
                .collect(),
        }))
    }

    async fn kick(
        &self,
        request: Request<pb::KickRequest>,
    ) -> Result<Response<pb::KickReply>, Status> {
        let svc = self.authorize(request.metadata())?;
        let req = request.into_inner();
        let target = KickTarget::parse(&req.jid).map_err(status)?;
        let condition = KickCondition::parse(&req.condition).map_err(status)?;
        let kicked = svc.kick(&target, condition).await.map_err(status)?;
        Ok(Response::new(pb::KickReply { kicked }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::DomainRequest>,
    ) -> Result<Response<pb::DomainStats>, Status> {
        let svc = self.authorize(request.metadata())?;
        let s = svc
            .domain_stats(&request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DomainStats {
            domain: s.domain,
            accounts: s.accounts,
            online_accounts: s.online_accounts,
            sessions: s.sessions,
            messages_routed: s.messages_routed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_errors_survive_a_status_round_trip() {
        for code in ::admin::ErrorCode::ALL {
            let e = AdminError::from_code(code, "some message".into());
            let s = admin_error_to_status(&e);
            assert_eq!(s.message(), "some message");
            let back = status_to_admin_error(&s);
            assert_eq!(back.code(), code, "{code:?}");
        }
        assert_eq!(
            admin_error_to_status(&AdminError::PermissionDenied("x".into())).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            admin_error_to_status(&AdminError::Unsupported("x".into())).code(),
            Code::Unimplemented
        );
        assert_eq!(
            status_to_admin_error(&Status::deadline_exceeded("slow")).code(),
            ::admin::ErrorCode::Unavailable
        );
    }
}
