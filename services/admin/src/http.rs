//! The HTTP/JSON mapping of the admin API, for hosting panels and scripts.
//!
//! | method and path | call |
//! |---|---|
//! | `GET /v1/domains` | list domains (a domain token sees its own) |
//! | `GET /v1/domains/{domain}` | one domain and its settings |
//! | `POST /v1/domains/{domain}` (settings, optional) | add a domain (201) |
//! | `PUT /v1/domains/{domain}` (settings) | replace a domain's settings |
//! | `DELETE /v1/domains/{domain}` | stop hosting it (accounts are kept) |
//! | `POST /v1/domains/{domain}/purge` | stop hosting it and delete its accounts |
//! | `GET /v1/domains/{domain}/accounts` | list accounts |
//! | `POST /v1/domains/{domain}/accounts/{local}` `{"password"}` | add an account (201) |
//! | `PUT /v1/domains/{domain}/accounts/{local}/password` `{"password"}` | set a password |
//! | `DELETE /v1/domains/{domain}/accounts/{local}` | remove an account |
//! | `GET /v1/domains/{domain}/sessions` | sessions of a domain |
//! | `GET /v1/domains/{domain}/accounts/{local}/sessions` | sessions of an account |
//! | `POST /v1/sessions/kick` `{"jid", "condition"?}` | kick a full JID, or every session of a bare one |
//! | `GET /v1/domains/{domain}/stats` | statistics |
//!
//! Every request carries `authorization: Bearer <token>`. Errors are
//! `{"error": "<message>", "code": "<code>"}` with the status of [`ErrorCode::http_status`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    AdminError, AdminService, DomainInfo, DomainSettings, ErrorCode, KickCondition, KickTarget,
    Scoped, SessionFilter, SessionInfo, Tokens, account,
};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub service: Arc<dyn AdminService>,
    pub tokens: Arc<Tokens>,
}

impl HttpState {
    /// The service as the request's token may use it, or `Unauthenticated`.
    fn authorize(&self, headers: &HeaderMap) -> Result<Scoped, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let scope = self.tokens.authenticate(value)?;
        Ok(Scoped::new(self.service.clone(), scope))
    }
}

/// An [`AdminError`] as an HTTP response.
pub struct ApiError(pub AdminError);

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            axum::Json(json!({ "error": self.0.message(), "code": code.as_str() })),
        )
            .into_response();
        if code == ErrorCode::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

type ApiResult = Result<Response, ApiError>;

/// The routes of the JSON mapping (no fallback: see [`not_found`]).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/domains", get(list_domains))
        .route(
            "/v1/domains/{domain}",
            get(get_domain)
                .post(add_domain)
                .put(update_domain)
                .delete(remove_domain),
        )
        .route("/v1/domains/{domain}/purge", post(purge_domain))
        .route("/v1/domains/{domain}/accounts", get(list_accounts))
        .route(
            "/v1/domains/{domain}/accounts/{local}",
            post(add_account).delete(remove_account),
        )
        .route(
            "/v1/domains/{domain}/accounts/{local}/password",
            put(set_password),
        )
        .route(
            "/v1/domains/{domain}/accounts/{local}/sessions",
            get(account_sessions),
        )
        .route("/v1/domains/{domain}/sessions", get(domain_sessions))
        .route("/v1/domains/{domain}/stats", get(stats))
        .route("/v1/sessions/kick", post(kick))
        .with_state(state)
}

/// The JSON answer for a path no route serves.
pub async fn not_found() -> Response {
    ApiError(AdminError::NotFound("no such endpoint".into())).into_response()
}

/// A JSON body, or `InvalidArgument` naming what is wrong with it. An empty body is the
/// type's default when it has one.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes, empty: Option<T>) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(d) = empty
    {
        return Ok(d);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(AdminError::InvalidArgument(format!(
            "invalid JSON body: {e}"
        )))
    })
}

fn ok<T: Serialize>(status: StatusCode, value: T) -> ApiResult {
    Ok((status, axum::Json(value)).into_response())
}

#[derive(Serialize)]
struct SessionJson {
    jid: String,
    node: String,
    connection: Option<String>,
    priority: i8,
    available: bool,
    since_ms: u64,
}

impl From<SessionInfo> for SessionJson {
    fn from(s: SessionInfo) -> Self {
        SessionJson {
            jid: s.jid.to_string(),
            node: s.node,
            connection: s.connection,
            priority: s.priority,
            available: s.available,
            since_ms: s.since_ms,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    jid: String,
    #[serde(default)]
    condition: String,
}

async fn list_domains(State(s): State<HttpState>, h: HeaderMap) -> ApiResult {
    let svc = s.authorize(&h)?;
    let domains: Vec<DomainInfo> = svc.list_domains().await?;
    ok(StatusCode::OK, json!({ "domains": domains }))
}

async fn get_domain(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    ok(StatusCode::OK, svc.get_domain(&domain).await?)
}

async fn add_domain(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
    b: Bytes,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let settings: DomainSettings = body(&b, Some(DomainSettings::default()))?;
    ok(
        StatusCode::CREATED,
        svc.add_domain(&domain, settings).await?,
    )
}

async fn update_domain(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
    b: Bytes,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let settings: DomainSettings = body(&b, None)?;
    ok(StatusCode::OK, svc.update_domain(&domain, settings).await?)
}

async fn remove_domain(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    svc.remove_domain(&domain).await?;
    ok(StatusCode::OK, json!({ "removed": domain }))
}

async fn purge_domain(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    svc.purge_domain(&domain).await?;
    ok(StatusCode::OK, json!({ "purged": domain }))
}

async fn list_accounts(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let accounts: Vec<String> = svc
        .list_accounts(&domain)
        .await?
        .into_iter()
        .map(|j| j.to_string())
        .collect();
    ok(StatusCode::OK, json!({ "accounts": accounts }))
}

async fn add_account(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((domain, local)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let jid = account(&local, &domain)?;
    let p: PasswordBody = body(&b, None)?;
    svc.add_account(&jid, &p.password).await?;
    ok(StatusCode::CREATED, json!({ "jid": jid.to_string() }))
}

async fn set_password(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((domain, local)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let jid = account(&local, &domain)?;
    let p: PasswordBody = body(&b, None)?;
    svc.set_password(&jid, &p.password).await?;
    ok(StatusCode::OK, json!({ "jid": jid.to_string() }))
}

async fn remove_account(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((domain, local)): Path<(String, String)>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let jid = account(&local, &domain)?;
    svc.remove_account(&jid).await?;
    ok(StatusCode::OK, json!({ "removed": jid.to_string() }))
}

async fn sessions(svc: &Scoped, filter: SessionFilter) -> ApiResult {
    let list: Vec<SessionJson> = svc
        .list_sessions(&filter)
        .await?
        .into_iter()
        .map(SessionJson::from)
        .collect();
    ok(StatusCode::OK, json!({ "sessions": list }))
}

async fn domain_sessions(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(domain): Path<String>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    sessions(&svc, SessionFilter::Domain(domain)).await
}

async fn account_sessions(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((domain, local)): Path<(String, String)>,
) -> ApiResult {
    let svc = s.authorize(&h)?;
    let jid = account(&local, &domain)?;
    sessions(&svc, SessionFilter::Account(jid)).await
}

async fn kick(State(s): State<HttpState>, h: HeaderMap, b: Bytes) -> ApiResult {
    let svc = s.authorize(&h)?;
    let k: KickBody = body(&b, None)?;
    let target = KickTarget::parse(&k.jid)?;
    let condition = KickCondition::parse(&k.condition)?;
    let n = svc.kick(&target, condition).await?;
    ok(
        StatusCode::OK,
        json!({ "kicked": n, "condition": condition.as_str() }),
    )
}

async fn stats(State(s): State<HttpState>, h: HeaderMap, Path(domain): Path<String>) -> ApiResult {
    let svc = s.authorize(&h)?;
    ok(StatusCode::OK, svc.domain_stats(&domain).await?)
}
