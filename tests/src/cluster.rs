//! A whole Relais cluster on loopback, run from the test process: a real redis-server,
//! edges, session nodes and a router, each a real `relais serve --roles …` process. The
//! session nodes share one embedded database file (SQLite in WAL mode handles several
//! processes); it stands in for ScyllaDB, which cannot run on these machines.
//!
//! Cluster gRPC runs with mutual TLS by default, as in production: the harness makes a
//! cluster CA ([`TestCa`]) and a certificate per node, and writes `[cluster.tls]` into each
//! node's own config file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use cluster::{Member, NodeId, Placement, Role};

use crate::client::Client;
use crate::{Process, relais_bin};

#[path = "../../services/cluster/tests/common/mod.rs"]
pub mod redis_server;

pub use redis_server::{RedisServer, eventually};

/// The shape of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub edges: usize,
    pub sessions: usize,
    pub router: bool,
    /// `router` or `direct`.
    pub peer_routing: &'static str,
    pub heartbeat_ms: u64,
    pub ttl_ms: u64,
    /// More TOML for every node (sections after `[cluster]`).
    pub extra_toml: String,
    /// Mutual TLS between the nodes (`[cluster.tls]`). Default on.
    pub tls: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            edges: 2,
            sessions: 2,
            router: true,
            peer_routing: "router",
            heartbeat_ms: 300,
            ttl_ms: 1500,
            extra_toml: String::new(),
            tls: true,
        }
    }
}

pub struct Node {
    pub id: String,
    pub process: Process,
}

/// A certificate authority for tests: the cluster CA, or a stranger's.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate chain and its private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A node certificate for `node`, valid as client and server, naming the cluster's
    /// default server name.
    pub fn issue(&self, node: &str) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(vec![proto_server_name().to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The name node certificates carry (relais's `cluster.tls.server_name` default).
pub fn proto_server_name() -> &'static str {
    "relais-cluster"
}

pub struct Cluster {
    pub opts: ClusterOpts,
    /// The cluster CA every node's certificate comes from (unused without `opts.tls`).
    pub ca: TestCa,
    pub redis: RedisServer,
    pub dir: tempfile::TempDir,
    pub domain: String,
    pub router: Option<Node>,
    pub sessions: Vec<Node>,
    pub edges: Vec<Node>,
    logins: Mutex<HashMap<String, usize>>,
}

/// Session node ids such that `alice` is owned by the first and `bob` by the second (ids sort
/// in that order), so the scenarios always cross session nodes.
fn session_ids(n: usize) -> Vec<String> {
    for k in 0.. {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("session-{k}{}", (b'a' + i as u8) as char))
            .collect();
        if n < 2 {
            return ids;
        }
        let p = placement(&ids);
        let owner = |u: &str| {
            p.owner(&format!("{u}@localhost").parse().unwrap())
                .map(|m| m.id.as_str().to_owned())
        };
        if owner("alice").as_deref() == Some(&ids[0]) && owner("bob").as_deref() == Some(&ids[1]) {
            return ids;
        }
    }
    unreachable!()
}

/// The placement the nodes compute for these session node ids.
pub fn placement(ids: &[String]) -> Placement {
    Placement::new(
        ids.iter()
            .map(|id| Member::new(NodeId::new(id).unwrap(), Role::Session, "unused:0")),
    )
}

impl Cluster {
    pub fn start(opts: ClusterOpts) -> Cluster {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            opts,
            ca: TestCa::new("relais test cluster CA"),
            redis,
            dir,
            domain: "localhost".into(),
            router: None,
            sessions: Vec::new(),
            edges: Vec::new(),
            logins: Mutex::new(HashMap::new()),
        };
        if c.opts.router {
            c.router = Some(c.spawn("router-1", "router"));
        }
        for id in session_ids(c.opts.sessions) {
            let n = c.spawn(&id, "session");
            c.sessions.push(n);
        }
        for i in 0..c.opts.edges {
            let n = c.spawn(&format!("edge-{}", i + 1), "edge");
            c.edges.push(n);
        }
        // Every node polls the membership each heartbeat: let the first nodes see the last.
        std::thread::sleep(Duration::from_millis(c.opts.heartbeat_ms * 3));
        c
    }

    /// The config file of node `id`: the shared settings, and its own certificate.
    fn config(&self, id: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("cluster-{id}.toml"));
        if !path.exists() {
            let o = &self.opts;
            let text = format!(
                "[server]\ndomains = [\"localhost\"]\n\n[cluster]\nredis_url = \"{}\"\nheartbeat_ms = {}\nttl_ms = {}\npeer_routing = \"{}\"\n\n{}\n",
                self.redis.url(),
                o.heartbeat_ms,
                o.ttl_ms,
                o.peer_routing,
                o.extra_toml
            );
            let text = if o.tls {
                let tls = self.dir.path().join("cluster-tls");
                std::fs::create_dir_all(&tls).unwrap();
                let ca = tls.join("ca.pem");
                if !ca.exists() {
                    std::fs::write(&ca, self.ca.ca_pem()).unwrap();
                }
                let issued = self.ca.issue(id);
                let cert = tls.join(format!("{id}.crt"));
                let key = tls.join(format!("{id}.key"));
                std::fs::write(&cert, issued.cert_pem).unwrap();
                std::fs::write(&key, issued.key_pem).unwrap();
                // A table header of its own: valid after whatever `extra_toml` ends with.
                format!(
                    "{text}\n[cluster.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    ca.display(),
                    cert.display(),
                    key.display()
                )
            } else {
                text
            };
            std::fs::write(&path, crate::with_test_auth(&text)).unwrap();
        }
        path
    }

    /// Starts one node and waits until it is ready.
    pub fn spawn(&self, id: &str, role: &str) -> Node {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--config".into(),
            self.config(id).into(),
            "--data-dir".into(),
            self.dir.path().into(),
            "--roles".into(),
            role.into(),
            "--node-id".into(),
            id.into(),
        ];
        let wants: &[&str] = if role == "edge" {
            args.extend(["--c2s", "127.0.0.1:0", "--c2s-tls", "127.0.0.1:0"].map(OsString::from));
            &["c2s", "c2s_tls", "ready"]
        } else {
            args.extend(["--grpc", "127.0.0.1:0"].map(OsString::from));
            &["grpc", "ready"]
        };
        Node {
            id: id.to_owned(),
            process: Process::spawn(id, &args, wants),
        }
    }

    pub fn add_user(&self, local: &str, password: &str) {
        // The test's PBKDF2 cost (`with_test_auth`), nothing else of a node's config.
        let cfg = self.dir.path().join("user-add.toml");
        if !cfg.exists() {
            std::fs::write(&cfg, crate::with_test_auth("")).unwrap();
        }
        let out = std::process::Command::new(relais_bin())
            .args([
                "user",
                "add",
                &format!("{local}@{}", self.domain),
                "--password-stdin",
            ])
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{password}\n").as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The certificate the first edge generated (DER); every edge shares the data directory.
    pub fn cert_der(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let path = self
            .dir
            .path()
            .join("certs")
            .join(format!("{}.crt", self.domain));
        rustls::pki_types::CertificateDer::from_pem_file(&path)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The index of the session node that owns `local@localhost` among the live ones.
    pub fn owner_index(&self, local: &str) -> usize {
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|n| n.process.child.is_some())
            .map(|n| n.id.clone())
            .collect();
        let p = placement(&ids);
        let jid = format!("{local}@{}", self.domain).parse().unwrap();
        let owner = p.owner(&jid).unwrap().id.as_str().to_owned();
        self.sessions.iter().position(|n| n.id == owner).unwrap()
    }

    /// The STARTTLS address of edge `i`.
    pub fn edge(&self, i: usize) -> SocketAddr {
        self.edges[i].process.addr("c2s")
    }

    /// Which edge the next login of `local` uses: its owner's index, then the next edge on
    /// each further login (so a user's resources spread over the edges).
    fn next_edge(&self, local: &str) -> usize {
        let mut logins = self.logins.lock().unwrap();
        let n = logins.entry(local.to_owned()).or_insert(0);
        let live: Vec<usize> = (0..self.edges.len())
            .filter(|i| self.edges[*i].process.child.is_some())
            .collect();
        let pick = live[(self.owner_index(local) + *n) % live.len()];
        *n += 1;
        pick
    }

    pub async fn connect_to(&self, edge: usize) -> Client {
        Client::connect_starttls(self.edge(edge), &self.domain, self.cert_der()).await
    }

    /// Logs in through edge `edge` with SCRAM-SHA-256 and binds `resource`.
    pub async fn login_at(
        &self,
        edge: usize,
        local: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let mut c = self.connect_to(edge).await;
        c.auth_scram(local, password, xmpp::scram::ScramHash::Sha256, false)
            .await
            .unwrap();
        c.bind(Some(resource)).await;
        c
    }

    pub async fn login(&self, local: &str, password: &str, resource: &str) -> Client {
        let edge = self.next_edge(local);
        self.login_at(edge, local, password, resource).await
    }

    /// The log lines of every node, tagged, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.router.iter().chain(&self.sessions).chain(&self.edges) {
            for l in n.process.log() {
                out.push_str(&format!("[{}] {l}\n", n.id));
            }
        }
        out
    }
}
