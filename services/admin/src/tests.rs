//! The local admin service, token scopes and the HTTP mapping, over an in-memory store and a
//! real session service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use session::{ClientSink, SessionConfig, SessionService, SinkError, ToClient};
use tower::ServiceExt;
use xmpp::{BareJid, FullJid, StreamErrorCondition};

use crate::auth::{generate_token, token_sha256_hex};
use crate::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<ToClient>>);

impl ClientSink for Recorder {
    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(item);
        Ok(())
    }
}

struct Fixture {
    admin: Arc<dyn AdminService>,
    sessions: Arc<session::LocalSessionService>,
    storage: storage::Storage,
}

fn fixture() -> Fixture {
    let storage = storage::sqlite::open_in_memory().unwrap();
    let domains = vec!["a.example".to_owned(), "b.example".to_owned()];
    let sessions = session::LocalSessionService::new(
        SessionConfig {
            domains: domains.clone(),
            ..SessionConfig::default()
        },
        storage.clone(),
        Arc::new(router::LocalRouter),
    );
    let admin = LocalAdmin::with_iterations(
        storage.clone(),
        sessions.clone(),
        Arc::new(MemoryDomains::new(domains)),
        "standalone",
        xmpp::scram::MIN_ITERATIONS,
    );
    Fixture {
        admin,
        sessions,
        storage,
    }
}

fn bare(s: &str) -> BareJid {
    s.parse().unwrap()
}

fn full(s: &str) -> FullJid {
    s.parse().unwrap()
}

fn scoped(f: &Fixture, scope: &str) -> Scoped {
    Scoped::new(f.admin.clone(), Scope::parse(scope).unwrap())
}

#[tokio::test]
async fn accounts_are_created_with_scram_keys_only() {
    let f = fixture();
    f.admin
        .add_account(&bare("alice@a.example"), "s3cret")
        .await
        .unwrap();
    let creds = f
        .storage
        .accounts
        .get_credentials(&bare("alice@a.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.keys.len(), 2);
    assert!(
        creds
            .keys
            .iter()
            .all(|k| xmpp::scram::verify_password(k, "s3cret"))
    );
    let dup = f
        .admin
        .add_account(&bare("alice@a.example"), "x")
        .await
        .unwrap_err();
    assert_eq!(dup.code(), ErrorCode::AlreadyExists);
    assert_eq!(dup.to_string(), "alice@a.example already exists");
    let empty = f
        .admin
        .add_account(&bare("bob@a.example"), "")
        .await
        .unwrap_err();
    assert_eq!(empty.code(), ErrorCode::InvalidArgument);
    let foreign = f
        .admin
        .add_account(&bare("bob@c.example"), "pw")
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), ErrorCode::NotFound);
    assert!(foreign.to_string().contains("not hosted"), "{foreign}");

    f.admin
        .set_password(&bare("alice@a.example"), "new")
        .await
        .unwrap();
    let creds = f
        .storage
        .accounts
        .get_credentials(&bare("alice@a.example"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        creds
            .keys
            .iter()
            .all(|k| xmpp::scram::verify_password(k, "new"))
    );
    assert_eq!(
        f.admin
            .set_password(&bare("nobody@a.example"), "x")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        f.admin.list_accounts("A.example").await.unwrap(),
        [bare("alice@a.example")]
    );
}

#[tokio::test]
async fn max_accounts_is_enforced() {
    let f = fixture();
    f.admin
        .update_domain(
            "a.example",
            DomainSettings {
                max_accounts: Some(1),
                ..DomainSettings::default()
            },
        )
        .await
        .unwrap();
    f.admin
        .add_account(&bare("a@a.example"), "pw")
        .await
        .unwrap();
    let e = f
        .admin
        .add_account(&bare("b@a.example"), "pw")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("max_accounts (1)"), "{e}");
}

#[tokio::test]
async fn removing_an_account_ends_its_sessions_with_not_authorized() {
    let f = fixture();
    f.admin
        .add_account(&bare("x@a.example"), "pw")
        .await
        .unwrap();
    let sink = Arc::new(Recorder::default());
    f.sessions
        .open(full("x@a.example/phone"), sink.clone())
        .await
        .unwrap();
    let listed = f
        .admin
        .list_sessions(&SessionFilter::Domain("a.example".into()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].jid, full("x@a.example/phone"));
    assert_eq!(listed[0].node, "standalone");
    f.admin.remove_account(&bare("x@a.example")).await.unwrap();
    assert_eq!(
        sink.0.lock().unwrap().last(),
        Some(&ToClient::Close(StreamErrorCondition::NotAuthorized))
    );
    assert!(
        !f.storage
            .accounts
            .account_exists(&bare("x@a.example"))
            .await
            .unwrap()
    );
    assert_eq!(
        f.admin
            .remove_account(&bare("x@a.example"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn kicks_use_the_chosen_condition_and_report_nothing_to_kick() {
    let f = fixture();
    let one = Arc::new(Recorder::default());
    let two = Arc::new(Recorder::default());
    f.sessions
        .open(full("x@a.example/1"), one.clone())
        .await
        .unwrap();
    f.sessions
        .open(full("x@a.example/2"), two.clone())
        .await
        .unwrap();
    let n = f
        .admin
        .kick(
            &KickTarget::parse("x@a.example/1").unwrap(),
            KickCondition::default(),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        one.0.lock().unwrap().last(),
        Some(&ToClient::Close(StreamErrorCondition::PolicyViolation))
    );
    assert!(two.0.lock().unwrap().is_empty());
    let n = f
        .admin
        .kick(
            &KickTarget::parse("x@a.example").unwrap(),
            KickCondition::SystemShutdown,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let e = f
        .admin
        .kick(
            &KickTarget::parse("x@a.example").unwrap(),
            KickCondition::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn stats_count_accounts_and_sessions() {
    let f = fixture();
    f.admin
        .add_account(&bare("x@a.example"), "pw")
        .await
        .unwrap();
    f.admin
        .add_account(&bare("y@a.example"), "pw")
        .await
        .unwrap();
    for j in ["x@a.example/1", "x@a.example/2", "z@b.example/1"] {
        f.sessions
            .open(full(j), Arc::new(Recorder::default()))
            .await
            .unwrap();
    }
    let s = f.admin.domain_stats("a.example").await.unwrap();
    assert_eq!(
        (s.accounts, s.online_accounts, s.sessions),
        (2, 1, 2),
        "{s:?}"
    );
    assert_eq!(
        f.admin.domain_stats("c.example").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn domains_are_added_updated_removed_and_purged() {
    let f = fixture();
    let added = f
        .admin
        .add_domain(
            "New.Example",
            DomainSettings {
                registration_open: true,
                ..DomainSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(added.name, "new.example");
    assert!(added.settings.registration_open);
    assert_eq!(
        f.admin
            .add_domain("new.example", DomainSettings::default())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyExists
    );
    let bad = DomainSettings {
        max_sessions_per_account: Some(0),
        ..DomainSettings::default()
    };
    assert_eq!(
        f.admin
            .update_domain("new.example", bad)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
    f.admin
        .add_account(&bare("u@new.example"), "pw")
        .await
        .unwrap();
    let sink = Arc::new(Recorder::default());
    f.sessions
        .open(full("u@new.example/r"), sink.clone())
        .await
        .unwrap();
    f.admin.purge_domain("new.example").await.unwrap();
    assert_eq!(
        sink.0.lock().unwrap().last(),
        Some(&ToClient::Close(StreamErrorCondition::HostGone))
    );
    assert!(
        f.storage
            .accounts
            .list_accounts("new.example")
            .await
            .unwrap()
            .is_empty()
    );
    let names: Vec<String> = f
        .admin
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["a.example", "b.example"]);
    f.admin.remove_domain("b.example").await.unwrap();
    assert_eq!(
        f.admin.remove_domain("b.example").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn configured_domains_are_read_only() {
    let d = ConfiguredDomains::new(vec!["b.example".into(), "a.example".into()]);
    let names: Vec<String> = d
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["a.example", "b.example"]);
    assert!(d.get("a.example").await.is_ok());
    assert_eq!(
        d.get("c.example").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let e = d
        .add("c.example", &DomainSettings::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);
    assert!(e.to_string().contains("server.domains"), "{e}");
}

// --- Token scopes ---------------------------------------------------------------------

#[tokio::test]
async fn a_domain_token_cannot_change_its_own_domain_limits() {
    let f = fixture();
    let a = scoped(&f, "a.example");
    let before = f.admin.get_domain("a.example").await.unwrap();
    let raises = [
        DomainSettings {
            max_accounts: Some(1_000_000),
            ..before.settings
        },
        DomainSettings {
            registration_open: !before.settings.registration_open,
            ..before.settings
        },
        DomainSettings {
            offline_quota: Some(100_000),
            ..before.settings
        },
        DomainSettings {
            archive_retention_days: Some(36_500),
            ..before.settings
        },
        DomainSettings {
            max_sessions_per_account: Some(10_000),
            ..before.settings
        },
    ];
    for settings in raises {
        let e = a.update_domain("a.example", settings).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
        assert!(e.to_string().contains("global token"), "{e}");
    }
    // Nothing changed; a global token still may.
    assert_eq!(f.admin.get_domain("a.example").await.unwrap(), before);
    let g = scoped(&f, "global");
    let raised = g
        .update_domain(
            "a.example",
            DomainSettings {
                max_accounts: Some(50),
                ..before.settings
            },
        )
        .await
        .unwrap();
    assert_eq!(raised.settings.max_accounts, Some(50));
}

#[tokio::test]
async fn a_domain_token_acts_on_its_domain_only() {
    let f = fixture();
    let a = scoped(&f, "a.example");
    a.add_account(&bare("x@a.example"), "pw").await.unwrap();
    assert_eq!(a.list_accounts("a.example").await.unwrap().len(), 1);
    assert!(a.get_domain("a.example").await.is_ok());
    assert!(a.domain_stats("A.EXAMPLE").await.is_ok());
    // Other domains: refused, whether or not they exist.
    let denied = [
        a.list_accounts("b.example").await.unwrap_err(),
        a.list_accounts("c.example").await.unwrap_err(),
        a.add_account(&bare("x@b.example"), "pw").await.unwrap_err(),
        a.set_password(&bare("x@b.example"), "pw")
            .await
            .unwrap_err(),
        a.remove_account(&bare("x@b.example")).await.unwrap_err(),
        a.get_domain("b.example").await.unwrap_err(),
        a.update_domain("b.example", DomainSettings::default())
            .await
            .unwrap_err(),
        a.domain_stats("b.example").await.unwrap_err(),
        a.list_sessions(&SessionFilter::Domain("b.example".into()))
            .await
            .unwrap_err(),
        a.list_sessions(&SessionFilter::Account(bare("x@b.example")))
            .await
            .unwrap_err(),
        a.kick(
            &KickTarget::parse("x@b.example/r").unwrap(),
            KickCondition::default(),
        )
        .await
        .unwrap_err(),
        // Domain lifecycle needs a global token, even for its own domain.
        a.add_domain("new.example", DomainSettings::default())
            .await
            .unwrap_err(),
        a.remove_domain("a.example").await.unwrap_err(),
        a.purge_domain("a.example").await.unwrap_err(),
    ];
    for e in denied {
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
    }
    // The domain list shows its own domain only.
    let names: Vec<String> = a
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["a.example"]);
    // Nothing leaked through: the other domain is untouched.
    assert!(f.admin.list_accounts("b.example").await.unwrap().is_empty());
    assert_eq!(f.admin.list_domains().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_global_token_acts_everywhere() {
    let f = fixture();
    let g = scoped(&f, "global");
    g.add_account(&bare("x@b.example"), "pw").await.unwrap();
    g.add_domain("c.example", DomainSettings::default())
        .await
        .unwrap();
    assert_eq!(g.list_domains().await.unwrap().len(), 3);
    g.remove_domain("c.example").await.unwrap();
}

#[test]
fn tokens_authenticate_by_hash_with_their_scope() {
    let global = generate_token();
    let domain = generate_token();
    assert_eq!(global.len(), 64);
    assert_ne!(global, domain);
    let g_hash = token_sha256_hex(&global);
    let d_hash = token_sha256_hex(&domain);
    let tokens =
        Tokens::new([(g_hash.as_str(), "global"), (d_hash.as_str(), "A.example")]).unwrap();
    assert_eq!(
        tokens
            .authenticate(Some(&format!("Bearer {global}")))
            .unwrap(),
        Scope::Global
    );
    assert_eq!(
        tokens
            .authenticate(Some(&format!("bearer  {domain} ")))
            .unwrap(),
        Scope::Domain("a.example".into())
    );
    for bad in [
        None,
        Some(String::new()),
        Some(global.clone()),
        Some(format!("Basic {global}")),
        Some("Bearer ".to_owned()),
        Some("Bearer wrong".to_owned()),
        // The hash itself is not the token.
        Some(format!("Bearer {g_hash}")),
    ] {
        let e = tokens.authenticate(bad.as_deref()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated, "{bad:?}");
        assert!(!e.to_string().contains(&global), "the token leaked: {e}");
    }
}

#[test]
fn token_config_errors_are_clear() {
    let e = Tokens::new([("abc", "global")]).unwrap_err();
    assert!(
        e.to_string().contains("token 1: sha256 must be 64 hex"),
        "{e}"
    );
    let h = token_sha256_hex("t");
    let e = Tokens::new([(h.as_str(), "global"), (h.as_str(), "not a domain!")]).unwrap_err();
    assert!(e.to_string().contains("token 2"), "{e}");
    assert!(Tokens::new([(h.to_uppercase().as_str(), "global")]).is_ok());
    // The well-known SHA-256 of "abc".
    assert_eq!(
        token_sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

// --- HTTP mapping ----------------------------------------------------------------------

struct Http {
    router: axum::Router,
    global: String,
    domain: String,
    f: Fixture,
}

fn http() -> Http {
    let f = fixture();
    let global = generate_token();
    let domain = generate_token();
    let gh = token_sha256_hex(&global);
    let dh = token_sha256_hex(&domain);
    let tokens =
        Arc::new(Tokens::new([(gh.as_str(), "global"), (dh.as_str(), "a.example")]).unwrap());
    let router = http::router(http::HttpState {
        service: f.admin.clone(),
        tokens,
    })
    .fallback(http::not_found);
    Http {
        router,
        global,
        domain,
        f,
    }
}

async fn call(
    h: &Http,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn http_maps_errors_to_statuses_and_json() {
    let h = http();
    let (st, j) = call(&h, "GET", "/v1/domains", None, "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(j["code"], "unauthenticated");
    let (st, _) = call(&h, "GET", "/v1/domains", Some("nope"), "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let d = h.domain.clone();
    let (st, j) = call(&h, "GET", "/v1/domains/b.example/accounts", Some(&d), "").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{j}");
    assert_eq!(j["code"], "permission_denied");
    let (st, j) = call(
        &h,
        "POST",
        "/v1/domains/a.example/accounts/al%40ice",
        Some(&d),
        r#"{"password":"pw"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{j}");
    assert_eq!(j["code"], "invalid_argument");
    let (st, j) = call(
        &h,
        "POST",
        "/v1/domains/a.example/accounts/alice",
        Some(&d),
        "{not json",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        j["error"].as_str().unwrap().contains("invalid JSON body"),
        "{j}"
    );
    let (st, j) = call(&h, "GET", "/v2/nothing", Some(&d), "").await;
    assert_eq!(
        (st, j["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn http_happy_paths() {
    let h = http();
    let g = h.global.clone();
    let d = h.domain.clone();
    let (st, j) = call(
        &h,
        "POST",
        "/v1/domains/a.example/accounts/alice",
        Some(&d),
        r#"{"password":"pw"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{j}");
    assert_eq!(j["jid"], "alice@a.example");
    let (st, j) = call(
        &h,
        "POST",
        "/v1/domains/a.example/accounts/alice",
        Some(&d),
        r#"{"password":"pw"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{j}");
    let (_, j) = call(&h, "GET", "/v1/domains/a.example/accounts", Some(&d), "").await;
    assert_eq!(j["accounts"], serde_json::json!(["alice@a.example"]));
    let (_, j) = call(&h, "GET", "/v1/domains", Some(&d), "").await;
    assert_eq!(j["domains"].as_array().unwrap().len(), 1);
    let (_, j) = call(&h, "GET", "/v1/domains", Some(&g), "").await;
    assert_eq!(j["domains"].as_array().unwrap().len(), 2);

    h.f.sessions
        .open(full("alice@a.example/web"), Arc::new(Recorder::default()))
        .await
        .unwrap();
    let (_, j) = call(&h, "GET", "/v1/domains/a.example/sessions", Some(&d), "").await;
    assert_eq!(j["sessions"][0]["jid"], "alice@a.example/web", "{j}");
    let (st, j) = call(
        &h,
        "POST",
        "/v1/sessions/kick",
        Some(&d),
        r#"{"jid":"alice@a.example/web","condition":"bogus"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{j}");
    let (st, j) = call(
        &h,
        "POST",
        "/v1/sessions/kick",
        Some(&d),
        r#"{"jid":"alice@a.example/web"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{j}");
    assert_eq!(j["kicked"], 1);
    assert_eq!(j["condition"], "policy-violation");
    let (_, j) = call(&h, "GET", "/v1/domains/a.example/stats", Some(&d), "").await;
    assert_eq!(j["accounts"], 1);
    assert_eq!(j["sessions"], 0);
    // A domain's limits are the operator's: its own token gets 403, a global one may.
    let (st, j) = call(
        &h,
        "PUT",
        "/v1/domains/a.example",
        Some(&d),
        r#"{"max_accounts": 5}"#,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{j}");
    assert_eq!(j["code"], "permission_denied");
    let (st, j) = call(
        &h,
        "PUT",
        "/v1/domains/a.example",
        Some(&g),
        r#"{"max_accounts": 5}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{j}");
    assert_eq!(j["settings"]["max_accounts"], 5);
    let (st, _) = call(
        &h,
        "DELETE",
        "/v1/domains/a.example/accounts/alice",
        Some(&d),
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&h, "POST", "/v1/domains/new.example", Some(&d), "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, j) = call(&h, "POST", "/v1/domains/new.example", Some(&g), "").await;
    assert_eq!(st, StatusCode::CREATED, "{j}");
    assert_eq!(j["name"], "new.example");
}
