//! Virtual hosting end to end: domains added and removed at runtime with `relais domain`
//! while the real server runs, their certificates from `tls.cert_dir` by SNI (and reloaded
//! when the files change), XEP-0077 in-band registration per domain, and a domain added on
//! a cluster's shared storage served by its edges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tests::client::{body, chat};
use tests::cluster::{Cluster, ClusterOpts, eventually};
use tests::{Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xmpp::{Element, StreamErrorCondition, ns};

const NS_REGISTER: &str = "jabber:iq:register";
const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// Writes a fresh self-signed certificate for `domain` in Prosody's layout under `cert_dir`
/// (through a temporary name and a rename, as a renewal tool would) and returns its DER.
fn make_cert(cert_dir: &Path, domain: &str) -> Vec<u8> {
    let dir = cert_dir.join(domain);
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec![domain.to_owned()]).unwrap();
    for (name, data) in [
        ("privkey.pem", generated.key_pair.serialize_pem()),
        ("fullchain.pem", generated.cert.pem()),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    generated.cert.der().as_ref().to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Accepts any certificate and remembers it: which one does the server present for a name?
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate the direct-TLS port presents for SNI `name`.
async fn presented_cert(addr: SocketAddr, name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"xmpp-client".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    recorder.seen.lock().unwrap().clone().unwrap()
}

/// What the plain port answers to a stream header for `domain` (before TLS): the stream
/// features, or a stream error such as `host-unknown`.
async fn stream_answer(addr: SocketAddr, domain: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    s.write_all(header.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if text.contains("</features>")
            || text.contains("</stream:features>")
            || text.contains("</stream:stream>")
        {
            return text;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn hosted(addr: SocketAddr, domain: &str) -> bool {
    let text = stream_answer(addr, domain).await;
    text.contains("</features>") || text.contains("</stream:features>")
}

/// Waits (up to 15 s) until `cond` holds.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(server: &Server, args: &[&str]) -> String {
    let out = server.relais_cli(args, "");
    assert!(
        out.status.success(),
        "relais {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_user(server: &Server, jid: &str, password: &str) {
    let out = server.relais_cli(&["user", "add", jid, "--password-stdin"], password);
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn login(addr: SocketAddr, domain: &str, cert: Vec<u8>, local: &str, pw: &str) -> Client {
    let mut c = Client::connect_starttls(addr, domain, cert).await;
    c.auth_scram(local, pw, xmpp::scram::ScramHash::Sha256, false)
        .await
        .unwrap();
    c.bind(Some("test")).await;
    c
}

async fn ping(c: &mut Client) -> Element {
    c.iq(Element::new("iq", ns::CLIENT)
        .attr("type", "get")
        .child(Element::new("ping", ns::PING)))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_added_at_runtime_is_served_reloads_its_certificate_and_goes_away() {
    let certs = tempfile::tempdir().unwrap();
    let first = make_cert(certs.path(), "virt.example");
    let server = Server::start_with(&format!(
        "[server]\ndomain_poll_secs = 1\n[tls]\ncert_dir = \"{}\"\nreload_secs = 1\n",
        certs.path().display()
    ));
    assert!(!hosted(server.c2s, "virt.example").await);
    assert!(
        stream_answer(server.c2s, "virt.example")
            .await
            .contains("host-unknown")
    );

    cli(&server, &["domain", "add", "virt.example"]);
    add_user(&server, "alice@virt.example", "alice-pw");
    add_user(&server, "bob@virt.example", "bob-pw");
    until("virt.example hosted", || hosted(server.c2s, "virt.example")).await;
    let listed = cli(&server, &["domain", "list"]);
    assert!(listed.contains("virt.example\tstored\thosted"), "{listed}");

    // Its certificate from cert_dir, by SNI; the configured domain keeps its own.
    assert_eq!(presented_cert(server.c2s_tls, "virt.example").await, first);
    assert_eq!(
        presented_cert(server.c2s_tls, "localhost").await,
        server.cert_der()
    );

    let mut alice = login(
        server.c2s,
        "virt.example",
        first.clone(),
        "alice",
        "alice-pw",
    )
    .await;
    let mut bob = login(server.c2s, "virt.example", first.clone(), "bob", "bob-pw").await;
    let bob_jid = bob.jid.clone().unwrap();
    alice
        .send(&chat(bob_jid.as_str(), "hello on a virtual host"))
        .await;
    let got = bob.recv_matching(|e| e.is("message", ns::CLIENT)).await;
    assert_eq!(body(&got).as_deref(), Some("hello on a virtual host"));

    // A renewal: new handshakes get the new certificate, the old connection keeps going.
    let second = make_cert(certs.path(), "virt.example");
    assert_ne!(first, second);
    until("the renewed certificate", || async {
        presented_cert(server.c2s_tls, "virt.example").await == second
    })
    .await;
    let mut carol_conn = Client::connect_starttls(server.c2s, "virt.example", second.clone()).await;
    assert!(carol_conn.mechanisms().iter().any(|m| m == "SCRAM-SHA-256"));
    let pong = ping(&mut alice).await;
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");

    // Removal: bound sessions get host-gone, an unbound stream too, new streams host-unknown.
    cli(&server, &["domain", "remove", "virt.example"]);
    assert_eq!(
        alice.expect_stream_end().await,
        Some(StreamErrorCondition::HostGone)
    );
    assert_eq!(
        bob.expect_stream_end().await,
        Some(StreamErrorCondition::HostGone)
    );
    assert_eq!(
        carol_conn.expect_stream_end().await,
        Some(StreamErrorCondition::HostGone)
    );
    assert!(
        stream_answer(server.c2s, "virt.example")
            .await
            .contains("host-unknown")
    );
    // The accounts are kept until a purge.
    let users = cli(&server, &["user", "list", "virt.example"]);
    assert!(users.contains("alice@virt.example"), "{users}");
    let out = server.relais_cli(&["domain", "purge", "virt.example"], "");
    assert!(!out.status.success(), "purge needs --yes");
    let purged = cli(&server, &["domain", "purge", "virt.example", "--yes"]);
    assert!(purged.contains("2 accounts deleted"), "{purged}");
    assert!(
        cli(&server, &["user", "list", "virt.example"])
            .trim()
            .is_empty()
    );

    // The configured domain never noticed.
    add_user(&server, "dave@localhost", "dave-pw");
    let mut dave = server.login("dave", "dave-pw", "x").await;
    assert_eq!(ping(&mut dave).await.get_attr("type"), Some("result"));
}

async fn register(c: &mut Client, user: &str, password: &str) -> Element {
    c.iq(Element::new("iq", ns::CLIENT).attr("type", "set").child(
        Element::new("query", NS_REGISTER)
            .child(Element::new("username", NS_REGISTER).text_node(user))
            .child(Element::new("password", NS_REGISTER).text_node(password)),
    ))
    .await
}

fn condition(reply: &Element) -> Option<String> {
    let err = reply.get_child("error", ns::CLIENT)?;
    err.children()
        .find(|c| c.ns() == ns::STANZAS_ERR && c.name() != "text")
        .map(|c| c.name().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_registration_follows_each_domain() {
    let server = Server::start_with("[server]\ndomain_poll_secs = 1\n");
    cli(
        &server,
        &[
            "domain",
            "add",
            "open.example",
            "--registration-open",
            "true",
        ],
    );
    cli(&server, &["domain", "add", "closed.example"]);
    let certs = server.data_dir.path().join("certs");
    for d in ["open.example", "closed.example"] {
        until("domain hosted with a certificate", || async {
            hosted(server.c2s, d).await && certs.join(format!("{d}.crt")).exists()
        })
        .await;
    }
    let open_cert = pem_der(&certs.join("open.example.crt"));
    let closed_cert = pem_der(&certs.join("closed.example.crt"));

    // Open: the feature, the form, an account, a conflict, then a login with it.
    let mut c = Client::connect_starttls(server.c2s, "open.example", open_cert.clone()).await;
    let f = c.features.clone().unwrap();
    assert!(
        f.get_child("register", NS_REGISTER_FEATURE).is_some(),
        "{f}"
    );
    let form = c
        .iq(Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .child(Element::new("query", NS_REGISTER)))
        .await;
    let q = form.get_child("query", NS_REGISTER).unwrap();
    assert!(
        q.get_child("username", NS_REGISTER).is_some()
            && q.get_child("password", NS_REGISTER).is_some(),
        "{form}"
    );
    let ok = register(&mut c, "newbie", "n3wbie-pw").await;
    assert_eq!(ok.get_attr("type"), Some("result"), "{ok}");
    let again = register(&mut c, "newbie", "other").await;
    assert_eq!(condition(&again).as_deref(), Some("conflict"), "{again}");
    assert!(
        !again.to_string().contains("other"),
        "errors do not echo the password"
    );
    let empty = register(&mut c, "someone", "").await;
    assert_eq!(
        condition(&empty).as_deref(),
        Some("not-acceptable"),
        "{empty}"
    );
    let mut newbie = login(
        server.c2s,
        "open.example",
        open_cert.clone(),
        "newbie",
        "n3wbie-pw",
    )
    .await;
    assert_eq!(ping(&mut newbie).await.get_attr("type"), Some("result"));

    // The account limit applies to registration.
    cli(
        &server,
        &["domain", "update", "open.example", "--max-accounts", "1"],
    );
    until("the limit applied", || async {
        let mut c = Client::connect_starttls(server.c2s, "open.example", open_cert.clone()).await;
        let r = register(&mut c, "second", "s3cond-pw").await;
        condition(&r).as_deref() == Some("not-allowed")
    })
    .await;

    // Closed: no feature, and a registration attempt is refused.
    let mut c = Client::connect_starttls(server.c2s, "closed.example", closed_cert).await;
    let f = c.features.clone().unwrap();
    assert!(
        f.get_child("register", NS_REGISTER_FEATURE).is_none(),
        "{f}"
    );
    let refused = register(&mut c, "intruder", "pw-intruder").await;
    assert_eq!(
        condition(&refused).as_deref(),
        Some("not-allowed"),
        "{refused}"
    );
    let users = cli(&server, &["user", "list", "closed.example"]);
    assert!(users.trim().is_empty(), "{users}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_a_domain_added_on_its_shared_storage() {
    let certs = tempfile::tempdir().unwrap();
    let der = make_cert(certs.path(), "virt.example");
    let c = Cluster::start(ClusterOpts {
        extra_toml: format!(
            "[tls]\ncert_dir = \"{}\"\nreload_secs = 1\n",
            certs.path().display()
        ),
        ..ClusterOpts::default()
    });
    // The poll interval lives in [server], which the harness writes: 2 s by default.
    let out = std::process::Command::new(tests::relais_bin())
        .args(["domain", "add", "virt.example", "--data-dir"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two users of the new domain owned by different session nodes.
    let ids: Vec<String> = c.sessions.iter().map(|n| n.id.clone()).collect();
    let p = tests::cluster::placement(&ids);
    let owner = |u: &str| {
        p.owner(&format!("{u}@virt.example").parse().unwrap())
            .unwrap()
            .id
            .as_str()
            .to_owned()
    };
    let a = "alice".to_owned();
    let b = (0..100)
        .map(|i| format!("bob{i}"))
        .find(|b| owner(b) != owner(&a))
        .unwrap();
    for (u, pw) in [(a.as_str(), "a-pw"), (b.as_str(), "b-pw")] {
        let out = std::process::Command::new(tests::relais_bin())
            .args([
                "user",
                "add",
                &format!("{u}@virt.example"),
                "--password-stdin",
                "--data-dir",
            ])
            .arg(c.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all_sync(format!("{pw}\n").as_bytes());
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for e in 0..c.edges.len() {
        let addr = c.edge(e);
        let ok = eventually(Duration::from_secs(20), || hosted(addr, "virt.example")).await;
        assert!(ok, "edge {e} never learned virt.example:\n{}", c.logs());
    }
    let mut alice = login(c.edge(0), "virt.example", der.clone(), &a, "a-pw").await;
    let mut bob = login(c.edge(1), "virt.example", der.clone(), &b, "b-pw").await;
    let bob_jid = bob.jid.clone().unwrap();
    alice
        .send(&chat(bob_jid.as_str(), "across session nodes"))
        .await;
    let got = bob.recv_matching(|e| e.is("message", ns::CLIENT)).await;
    assert_eq!(body(&got).as_deref(), Some("across session nodes"));
}

trait WriteAllSync {
    fn write_all_sync(&mut self, data: &[u8]);
}

impl WriteAllSync for std::process::ChildStdin {
    fn write_all_sync(&mut self, data: &[u8]) {
        use std::io::Write;
        self.write_all(data).unwrap();
    }
}
