//! Cluster transport security on real processes: every cluster gRPC endpoint refuses a
//! client without a certificate of the cluster CA, and a clustered role refuses to start with
//! plain gRPC on a non-loopback address unless the operator opted out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::time::Duration;

use proto::{ClientConfig, ClusterTls, GrpcCredentials, GrpcRouter, GrpcSessionClient};
use router::Router;
use storage::{AccountStore, Credentials};
use tests::cluster::{Cluster, ClusterOpts, Issued, RedisServer, TestCa, proto_server_name};
use tests::{Process, relais_bin};
use xmpp::{BareJid, Element, ns};

/// Guards against hangs only.
const HANG: Duration = Duration::from_secs(30);

fn client(ca_pem: &str, id: Option<&Issued>) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(2),
        reconnect_attempts: 1,
        answer_timeout: Duration::from_secs(5),
        tls: id.map(|i| {
            ClusterTls::from_pem(
                ca_pem.as_bytes(),
                i.cert_pem.as_bytes(),
                i.key_pem.as_bytes(),
                proto_server_name(),
            )
            .unwrap_or_else(|e| panic!("client tls: {e}"))
        }),
        ..ClientConfig::default()
    }
}

fn stanza(to: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .attr("to", to)
        .attr("from", "mallory@localhost/x")
        .attr("type", "chat")
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Attach, GetCredentials, CreateAccount and Route on a real session node and router: a
/// plain client and a client whose certificate comes from another CA (while trusting the
/// cluster CA, so it is the server that refuses) get nothing; a client with a certificate of
/// the cluster CA gets through (so the refusals are about the certificate).
#[tokio::test(flavor = "multi_thread")]
async fn cluster_grpc_refuses_clients_without_a_cluster_certificate() {
    let c = Cluster::start(ClusterOpts {
        edges: 0,
        sessions: 1,
        ..ClusterOpts::default()
    });
    let node = format!("http://{}", c.sessions[0].process.addr("grpc"));
    let router = format!("http://{}", c.router.as_ref().unwrap().process.addr("grpc"));
    let ca = c.ca.ca_pem();
    let stranger = TestCa::new("a stranger's CA").issue("intruder");
    let member = c.ca.issue("test-member");
    let alice: BareJid = "alice@localhost".parse().unwrap();
    let keys = Credentials {
        keys: vec![xmpp::scram::derive_keys(
            xmpp::scram::ScramHash::Sha256,
            "pw",
            b"salt-salt-salt",
            4096,
        )],
    };

    for (what, cfg) in [
        ("plain", client(&ca, None)),
        ("foreign CA", client(&ca, Some(&stranger))),
    ] {
        let creds = GrpcCredentials::connect_lazy_with(node.clone(), &cfg).unwrap();
        let got = bounded("GetCredentials", creds.get_credentials(&alice)).await;
        assert!(got.is_err(), "{what}: GetCredentials answered {got:?}");
        let made = bounded("CreateAccount", creds.create_account(&alice, &keys)).await;
        assert!(made.is_err(), "{what}: CreateAccount answered {made:?}");
        let attached = bounded(
            "Attach",
            GrpcSessionClient::connect_with(node.clone(), "intruder", cfg.clone()),
        )
        .await;
        assert!(attached.is_err(), "{what}: Attach was accepted");
        for (name, ep) in [("router", &router), ("session node", &node)] {
            let r = GrpcRouter::connect_lazy_with(ep.clone(), &cfg).unwrap();
            let routed = bounded("Route", r.route(stanza("alice@localhost"))).await;
            assert!(
                routed.is_err(),
                "{what}: Route on the {name} answered {routed:?}"
            );
        }
    }

    // A member of the cluster is served, and nothing the strangers sent was stored.
    let cfg = client(&ca, Some(&member));
    let creds = GrpcCredentials::connect_lazy_with(node.clone(), &cfg).unwrap();
    let got = bounded("GetCredentials", creds.get_credentials(&alice)).await;
    assert!(
        matches!(got, Ok(None)),
        "a refused CreateAccount created the account: {got:?}\n{}",
        c.logs()
    );
    let bob: BareJid = "bob@localhost".parse().unwrap();
    bounded("CreateAccount", creds.create_account(&bob, &keys))
        .await
        .unwrap_or_else(|e| panic!("member CreateAccount: {e}\n{}", c.logs()));
    let got = bounded("GetCredentials", creds.get_credentials(&bob)).await;
    assert!(matches!(got, Ok(Some(_))), "{got:?}");
    bounded(
        "Attach",
        GrpcSessionClient::connect_with(node.clone(), "member", cfg.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("member Attach: {e}"));
    let r = GrpcRouter::connect_lazy_with(router.clone(), &cfg).unwrap();
    // Bob is offline: the message is stored, which is an answer.
    bounded("Route", r.route(stanza("bob@localhost")))
        .await
        .unwrap_or_else(|e| panic!("member Route: {e}\n{}", c.logs()));
}

/// A router whose gRPC listens on every address without `[cluster.tls]` does not start, and
/// says which setting to use; with `insecure_private_network = true` it starts.
#[test]
fn plain_grpc_off_loopback_refuses_to_start_unless_opted_out() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        let path = dir.path().join("router.toml");
        std::fs::write(
            &path,
            format!(
                "[cluster]\nredis_url = \"{}\"\nadvertise = \"127.0.0.1:7400\"\n{extra}",
                redis.url()
            ),
        )
        .unwrap();
        path
    };
    let args = |path: std::path::PathBuf| -> Vec<OsString> {
        vec![
            "serve".into(),
            "--config".into(),
            path.into(),
            "--data-dir".into(),
            dir.path().into(),
            "--roles".into(),
            "router".into(),
            "--node-id".into(),
            "router-1".into(),
            "--grpc".into(),
            "0.0.0.0:0".into(),
        ]
    };
    let out = std::process::Command::new(relais_bin())
        .args(args(config("")))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without tls: {stderr}");
    assert!(
        stderr.contains("[cluster.tls]") && stderr.contains("insecure_private_network"),
        "{stderr}"
    );
    let mut p = Process::spawn(
        "router-1",
        &args(config("insecure_private_network = true\n")),
        &["grpc", "ready"],
    );
    assert!(p.child.is_some());
    p.stop();
}
