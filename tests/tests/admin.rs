//! The admin API of the real binary: gRPC (`GrpcAdminClient`), its HTTP/JSON mapping on the
//! same port, and the `relais admin` CLI — authentication, token scopes, argument errors and
//! the happy paths (an account created over the API logs in over TLS, is listed, is kicked).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use admin::{AdminService, DomainSettings, ErrorCode, KickCondition, KickTarget, SessionFilter};
use proto::GrpcAdminClient;
use tests::{Server, relais_bin};
use xmpp::StreamErrorCondition;

const GLOBAL: &str = "global-token-for-the-admin-tests-0123456789";
const OTHER: &str = "other-example-token-for-the-admin-tests-987";

fn sha256_hex(token: &str) -> String {
    admin::auth::token_sha256_hex(token)
}

fn server() -> Server {
    let toml = format!(
        r#"[server]
domains = ["localhost", "other.example"]

[admin]
listen = "127.0.0.1:0"

[[admin.tokens]]
sha256 = "{}"
scope = "global"

[[admin.tokens]]
sha256 = "{}"
scope = "other.example"
"#,
        sha256_hex(GLOBAL),
        sha256_hex(OTHER)
    );
    Server::start_with(&toml)
}

fn client(s: &Server, token: Option<&str>) -> GrpcAdminClient {
    GrpcAdminClient::connect_lazy(format!("http://{}", s.admin.unwrap()), token).unwrap()
}

fn jid(s: &str) -> xmpp::BareJid {
    s.parse().unwrap()
}

/// One HTTP/1.1 request with an optional bearer token: status and JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not, the JSON object is between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    (status, json)
}

#[tokio::test]
async fn grpc_requires_a_known_token_within_its_scope() {
    let s = server();
    for token in [None, Some("wrong-token")] {
        let e = client(&s, token).list_domains().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated, "{token:?}: {e}");
        let e = client(&s, token)
            .add_account(&jid("mallory@localhost"), "pw")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated);
    }
    // The token of other.example cannot touch localhost, nor manage domains.
    let other = client(&s, Some(OTHER));
    let denied = [
        other.list_accounts("localhost").await.unwrap_err(),
        other
            .add_account(&jid("mallory@localhost"), "pw")
            .await
            .unwrap_err(),
        other
            .list_sessions(&SessionFilter::Domain("localhost".into()))
            .await
            .unwrap_err(),
        other
            .kick(
                &KickTarget::parse("alice@localhost").unwrap(),
                KickCondition::default(),
            )
            .await
            .unwrap_err(),
        other.domain_stats("localhost").await.unwrap_err(),
        other
            .add_domain("new.example", DomainSettings::default())
            .await
            .unwrap_err(),
    ];
    for e in denied {
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
    }
    // Nothing was created by the refused calls.
    let global = client(&s, Some(GLOBAL));
    assert!(global.list_accounts("localhost").await.unwrap().is_empty());
    // Its own domain works, and the domain list shows only it.
    other
        .add_account(&jid("bob@other.example"), "pw")
        .await
        .unwrap();
    let names: Vec<String> = other
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["other.example"]);
    let names: Vec<String> = global
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["localhost", "other.example"]);

    // Bad arguments are reported as such, with what is wrong.
    let e = global
        .add_account(&jid("carol@localhost"), "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert_eq!(e.to_string(), "the password is empty");
    let e = global.list_accounts("not a domain").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("not a valid domain"), "{e}");
    let e = global.list_accounts("nowhere.example").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.to_string().contains("not hosted"), "{e}");
    // Adding and removing domains is for global tokens only.
    let e = client(&s, Some(OTHER))
        .add_domain("new.example", DomainSettings::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    // The log names the failure, never the token.
    let log = s.log().join("\n");
    assert!(log.contains("admin authentication failed"), "{log}");
    assert!(!log.contains("wrong-token") && !log.contains(OTHER) && !log.contains(GLOBAL));
}

#[tokio::test]
async fn an_account_added_over_the_api_logs_in_is_listed_and_kicked() {
    let s = server();
    let admin = client(&s, Some(GLOBAL));
    admin
        .add_account(&jid("alice@localhost"), "alice-pw")
        .await
        .unwrap();
    assert_eq!(
        admin.list_accounts("localhost").await.unwrap(),
        [jid("alice@localhost")]
    );
    let mut alice = s.login("alice", "alice-pw", "laptop").await;
    let mut phone = s.login("alice", "alice-pw", "phone").await;
    alice.go_online().await;
    // The server echoes the presence to the sender once it has taken it.
    alice.recv_matching(|e| e.name() == "presence").await;

    let sessions = admin
        .list_sessions(&SessionFilter::Domain("localhost".into()))
        .await
        .unwrap();
    let names: Vec<String> = sessions.iter().map(|x| x.jid.to_string()).collect();
    assert_eq!(names, ["alice@localhost/laptop", "alice@localhost/phone"]);
    assert_eq!(sessions[0].node, "standalone");
    assert!(sessions[0].available && !sessions[1].available);
    assert!(sessions.iter().all(|x| x.since_ms > 0));
    let stats = admin.domain_stats("localhost").await.unwrap();
    assert_eq!(
        (stats.accounts, stats.online_accounts, stats.sessions),
        (1, 1, 2)
    );

    let n = admin
        .kick(
            &KickTarget::parse("alice@localhost/laptop").unwrap(),
            KickCondition::default(),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        alice.expect_stream_end().await,
        Some(StreamErrorCondition::PolicyViolation)
    );
    let left = admin
        .list_sessions(&SessionFilter::Account(jid("alice@localhost")))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].jid.to_string(), "alice@localhost/phone");
    let e = admin
        .kick(
            &KickTarget::parse("alice@localhost/laptop").unwrap(),
            KickCondition::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);

    // Removing the account ends its last session with <not-authorized/>.
    admin.remove_account(&jid("alice@localhost")).await.unwrap();
    assert_eq!(
        phone.expect_stream_end().await,
        Some(StreamErrorCondition::NotAuthorized)
    );
    let mut again = s.connect().await;
    assert!(
        again
            .auth_scram("alice", "alice-pw", xmpp::scram::ScramHash::Sha256, false)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_http_mapping_shares_the_port_and_the_rules() {
    let s = server();
    let addr = s.admin.unwrap();
    let (st, j) = http(addr, "GET", "/v1/domains", None, "").await;
    assert_eq!(st, 401, "{j}");
    assert_eq!(j["code"], "unauthenticated");
    let (st, _) = http(addr, "GET", "/v1/domains", Some("wrong"), "").await;
    assert_eq!(st, 401);
    let (st, j) = http(
        addr,
        "GET",
        "/v1/domains/localhost/accounts",
        Some(OTHER),
        "",
    )
    .await;
    assert_eq!(st, 403, "{j}");
    assert_eq!(j["code"], "permission_denied");
    let (st, j) = http(
        addr,
        "POST",
        "/v1/domains/localhost/accounts/dave",
        Some(GLOBAL),
        r#"{"password": ""}"#,
    )
    .await;
    assert_eq!(st, 400, "{j}");
    assert_eq!(j["error"], "the password is empty");
    let (st, j) = http(
        addr,
        "POST",
        "/v1/sessions/kick",
        Some(GLOBAL),
        r#"{"jid": "dave@localhost/x", "condition": "explode"}"#,
    )
    .await;
    assert_eq!(st, 400, "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("unknown kick condition")
    );

    let (st, j) = http(
        addr,
        "POST",
        "/v1/domains/localhost/accounts/dave",
        Some(GLOBAL),
        r#"{"password": "dave-pw"}"#,
    )
    .await;
    assert_eq!(st, 201, "{j}");
    let mut dave = s.login("dave", "dave-pw", "web").await;
    let (st, j) = http(
        addr,
        "GET",
        "/v1/domains/localhost/sessions",
        Some(GLOBAL),
        "",
    )
    .await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["sessions"][0]["jid"], "dave@localhost/web", "{j}");
    let (st, j) = http(
        addr,
        "POST",
        "/v1/sessions/kick",
        Some(GLOBAL),
        r#"{"jid": "dave@localhost", "condition": "system-shutdown"}"#,
    )
    .await;
    assert_eq!((st, &j["kicked"]), (200, &serde_json::json!(1)), "{j}");
    assert_eq!(
        dave.expect_stream_end().await,
        Some(StreamErrorCondition::SystemShutdown)
    );
    let (st, j) = http(addr, "GET", "/v1/domains/localhost/stats", Some(GLOBAL), "").await;
    assert_eq!((st, &j["accounts"]), (200, &serde_json::json!(1)), "{j}");
    let (st, j) = http(addr, "GET", "/nothing/here", Some(GLOBAL), "").await;
    assert_eq!((st, &j["code"]), (404, &serde_json::json!("not_found")));
}

/// Runs `relais admin ARGS` with `token` in RELAIS_ADMIN_TOKEN (none when `None`).
fn cli(url: &str, token: Option<&str>, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(relais_bin());
    cmd.arg("admin")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("RELAIS_ADMIN_TOKEN")
        .env_remove("RELAIS_ADMIN_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("RELAIS_ADMIN_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    // A command that reads nothing may exit before this is written.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{stdin}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_reports_each_failure_with_its_exit_code() {
    let s = server();
    let url = format!("http://{}", s.admin.unwrap());

    // Success.
    let (code, out, err) = cli(
        &url,
        Some(GLOBAL),
        &["account", "add", "erin@localhost", "--password-stdin"],
        "erin-pw",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created erin@localhost"), "{out}");
    let (code, out, _) = cli(&url, Some(GLOBAL), &["account", "list", "localhost"], "");
    assert_eq!((code, out.trim()), (0, "erin@localhost"));
    let (code, out, _) = cli(&url, Some(GLOBAL), &["domain", "list"], "");
    assert_eq!(code, 0);
    assert!(out.contains("localhost\tregistration=closed"), "{out}");
    let (code, out, _) = cli(&url, Some(GLOBAL), &["stats", "localhost"], "");
    assert_eq!(code, 0);
    assert!(out.contains("accounts\t1"), "{out}");
    let mut erin = s.login("erin", "erin-pw", "cli").await;
    let (code, out, _) = cli(&url, Some(GLOBAL), &["session", "list", "localhost"], "");
    assert_eq!(code, 0);
    assert!(
        out.starts_with("erin@localhost/cli\tnode=standalone"),
        "{out}"
    );
    let (code, out, err) = cli(
        &url,
        Some(GLOBAL),
        &[
            "session",
            "kick",
            "erin@localhost/cli",
            "--condition",
            "not-authorized",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("kicked 1 session of erin@localhost/cli with <not-authorized/>"),
        "{out}"
    );
    assert_eq!(
        erin.expect_stream_end().await,
        Some(StreamErrorCondition::NotAuthorized)
    );

    // Unreachable: a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _, err) = cli(
        &format!("http://{closed}"),
        Some(GLOBAL),
        &["domain", "list"],
        "",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
    // No token, then a wrong one.
    let (code, _, err) = cli(&url, None, &["domain", "list"], "");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("RELAIS_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = cli(&url, Some("nope"), &["domain", "list"], "");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("refused the token"), "{err}");
    // Outside the token's scope.
    let (code, _, err) = cli(&url, Some(OTHER), &["account", "list", "localhost"], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    // Not found.
    let (code, _, err) = cli(
        &url,
        Some(GLOBAL),
        &["account", "remove", "ghost@localhost"],
        "",
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("ghost@localhost does not exist"), "{err}");
    // Already exists.
    let (code, _, err) = cli(
        &url,
        Some(GLOBAL),
        &["account", "add", "erin@localhost", "--password-stdin"],
        "x",
    );
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("already exists"), "{err}");
    // Bad arguments, caught here or by the server.
    let (code, _, err) = cli(
        &url,
        Some(GLOBAL),
        &["account", "add", "localhost", "--password-stdin"],
        "x",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no localpart"), "{err}");
    let (code, _, err) = cli(&url, Some(GLOBAL), &["account", "list", "bad domain!"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a valid domain"), "{err}");
    let (code, _, err) = cli(
        &url,
        Some(GLOBAL),
        &["session", "kick", "erin@localhost", "--condition", "boom"],
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown kick condition"), "{err}");
    let (code, _, err) = cli(&url, Some(GLOBAL), &["domain", "purge", "localhost"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (code, _, err) = cli(&url, Some(GLOBAL), &["bogus"], "");
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(
        &url,
        None,
        &["--token-file", "/nonexistent/token", "domain", "list"],
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the token file"), "{err}");
}

#[test]
fn the_cli_generates_tokens_that_the_server_accepts() {
    let (code, out, err) = cli(
        "http://127.0.0.1:1",
        None,
        &["token", "--scope", "Example.org"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_owned();
    let sha = out
        .lines()
        .find_map(|l| l.strip_prefix("sha256:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(sha, sha256_hex(&token));
    assert!(out.contains("scope = \"example.org\""), "{out}");
    // The snippet goes into a config that `check-config` accepts.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relais.toml");
    let snippet = out.split_once("[[admin.tokens]]").unwrap().1;
    std::fs::write(
        &cfg,
        format!("[server]\ndomains = [\"example.org\"]\n[admin]\nlisten = \"127.0.0.1:5280\"\n[[admin.tokens]]{snippet}"),
    )
    .unwrap();
    let out = Command::new(relais_bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A domain added over the API is served at once: its generated certificate is chosen by SNI,
/// an account created over the API logs in and chats; removing the domain ends its sessions
/// with `<host-gone/>`, and a new stream for it gets `<host-unknown/>`.
#[tokio::test]
async fn a_domain_added_over_the_api_serves_clients_until_it_is_removed() {
    use tests::client::{Client, body, chat};
    let s = server();
    let admin = client(&s, Some(GLOBAL));
    admin
        .add_domain(
            "shop.example",
            DomainSettings {
                max_accounts: Some(10),
                ..DomainSettings::default()
            },
        )
        .await
        .unwrap();
    let e = admin
        .add_domain("shop.example", DomainSettings::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
    for local in ["ann", "ben"] {
        admin
            .add_account(
                &jid(&format!("{local}@shop.example")),
                &format!("{local}-pw"),
            )
            .await
            .unwrap();
    }
    let cert = s.data_dir.path().join("certs/shop.example.crt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cert.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&cert)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let login = |local: &'static str| {
        let der = der.clone();
        let addr = s.c2s;
        async move {
            let mut c = Client::connect_starttls(addr, "shop.example", der).await;
            c.auth_scram(
                local,
                &format!("{local}-pw"),
                xmpp::scram::ScramHash::Sha256,
                false,
            )
            .await
            .unwrap();
            c.bind(Some("r")).await;
            c.go_online().await;
            c
        }
    };
    let mut ann = login("ann").await;
    let mut ben = login("ben").await;
    ann.send(&chat("ben@shop.example/r", "welcome")).await;
    let m = ben.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("welcome"));

    admin.remove_domain("shop.example").await.unwrap();
    for c in [&mut ann, &mut ben] {
        assert_eq!(
            c.expect_stream_end().await,
            Some(StreamErrorCondition::HostGone)
        );
    }
    let names: Vec<String> = admin
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(!names.contains(&"shop.example".to_owned()), "{names:?}");
    let mut late = Client::connect_tls_raw(s.c2s_tls, "localhost", s.cert_der()).await;
    late.send_raw(b"<stream:stream to='shop.example' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").await;
    assert_eq!(
        late.expect_stream_end().await,
        Some(StreamErrorCondition::HostUnknown)
    );
    // Purge deletes the accounts the removal kept.
    admin.purge_domain("shop.example").await.unwrap();
}

/// In the cluster harness: a domain added through a session node's admin API reaches every
/// role (the edges learn it from a session node), and two users of it on different edges and
/// different session nodes chat; removing it ends both sessions with `<host-gone/>`.
#[tokio::test]
async fn a_domain_added_over_the_api_reaches_every_node_of_a_cluster() {
    use tests::client::{Client, body, chat};
    use tests::cluster::{Cluster, ClusterOpts};
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[admin.tokens]]\nsha256 = \"{}\"\nscope = \"global\"\n",
        sha256_hex(GLOBAL)
    );
    let c = Cluster::start(ClusterOpts {
        extra_toml: extra,
        ..ClusterOpts::default()
    });
    let admin_addr = c.sessions[0].process.addr("admin");
    let admin =
        GrpcAdminClient::connect_lazy(format!("http://{admin_addr}"), Some(GLOBAL)).unwrap();
    admin
        .add_domain("team.example", DomainSettings::default())
        .await
        .unwrap();
    // Two accounts of the new domain owned by different session nodes.
    let ids: Vec<String> = c.sessions.iter().map(|n| n.id.clone()).collect();
    let placement = tests::cluster::placement(&ids);
    let owner = |local: &str| {
        let j: xmpp::BareJid = format!("{local}@team.example").parse().unwrap();
        placement.owner(&j).unwrap().id.as_str().to_owned()
    };
    let first = (0..100)
        .map(|n| format!("u{n}"))
        .find(|u| owner(u) == ids[0])
        .unwrap();
    let second = (0..100)
        .map(|n| format!("u{n}"))
        .find(|u| owner(u) == ids[1])
        .unwrap();
    for u in [&first, &second] {
        admin
            .add_account(&jid(&format!("{u}@team.example")), "pw-team")
            .await
            .unwrap();
    }
    let cert = c.dir.path().join("certs/team.example.crt");
    let der = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            use rustls::pki_types::pem::PemObject;
            if let Ok(c) = rustls::pki_types::CertificateDer::from_pem_file(&cert) {
                break c.as_ref().to_vec();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no certificate for team.example"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    // Edges poll the domain list; log in once they serve the domain.
    let login = |edge: usize, local: String| {
        let der = der.clone();
        let addr = c.edge(edge);
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let cl = Client::try_connect_starttls(addr, "team.example", der.clone()).await;
                if let Some(mut cl) = cl {
                    cl.auth_scram(&local, "pw-team", xmpp::scram::ScramHash::Sha256, false)
                        .await
                        .unwrap();
                    cl.bind(Some("r")).await;
                    cl.go_online().await;
                    return cl;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "edge {edge} never served team.example"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let mut a = login(0, first.clone()).await;
    let mut b = login(1, second.clone()).await;
    a.send(&chat(&format!("{second}@team.example/r"), "across nodes"))
        .await;
    let m = b.recv_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("across nodes"));

    admin.remove_domain("team.example").await.unwrap();
    for cl in [&mut a, &mut b] {
        assert_eq!(
            cl.expect_stream_end().await,
            Some(StreamErrorCondition::HostGone)
        );
    }
}

#[tokio::test]
async fn domain_limits_need_a_global_token_over_grpc_and_http() {
    let s = server();
    let other = client(&s, Some(OTHER));
    let before = other
        .get_domain("other.example")
        .await
        .unwrap_or_else(|e| panic!("a domain token reads its settings: {e}"));
    // The customer's own token cannot raise its limits nor open registration.
    for settings in [
        DomainSettings {
            max_accounts: Some(1_000_000),
            ..before.settings.clone()
        },
        DomainSettings {
            registration_open: true,
            ..before.settings.clone()
        },
        DomainSettings {
            offline_quota: Some(100_000),
            ..before.settings.clone()
        },
    ] {
        let e = other
            .update_domain("other.example", settings)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
    }
    let (st, j) = http(
        s.admin.unwrap_or_else(|| panic!("no admin port")),
        "PUT",
        "/v1/domains/other.example",
        Some(OTHER),
        r#"{"max_accounts":1000000,"registration_open":true}"#,
    )
    .await;
    assert_eq!(st, 403, "{j}");
    assert_eq!(j["code"], "permission_denied");
    let global = client(&s, Some(GLOBAL));
    let now = global
        .get_domain("other.example")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now, before, "a refused call changed the settings");
    // The operator's global token may.
    let (st, j) = http(
        s.admin.unwrap_or_else(|| panic!("no admin port")),
        "PUT",
        "/v1/domains/other.example",
        Some(GLOBAL),
        r#"{"max_accounts":5}"#,
    )
    .await;
    assert_eq!(st, 200, "{j}");
    let now = global
        .get_domain("other.example")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now.settings.max_accounts, Some(5));
}
