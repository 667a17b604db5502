//! The end-to-end test harness: [`Server`] runs the real `relais` binary on loopback ports
//! chosen by the kernel, and [`Client`] is a small, strict XMPP client over real TLS.
//!
//! Nothing here is a test double: the server is the release artifact (built by cargo on
//! first use), storage is its real embedded database, and TLS verification pins the exact
//! certificate the server generated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod cluster;
pub mod deploy;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use client::Client;

/// The `relais` binary, built once per test process with the same cargo that runs the tests.
/// A test config: `extra_toml`, plus `[auth] scram_iterations` at the RFC 7677 minimum
/// unless it sets its own. The production default (600,000 PBKDF2 rounds) takes seconds per
/// derivation in an unoptimized build, for the server and for the test clients alike.
pub fn with_test_auth(extra_toml: &str) -> String {
    if extra_toml.contains("[auth]") {
        return extra_toml.to_owned();
    }
    format!(
        "{extra_toml}

[auth]
scram_iterations = 4096
"
    )
}

pub fn relais_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "relais", "--bin", "relais"])
            .current_dir(&root)
            .status()
            .expect("cannot run cargo build for the relais binary");
        assert!(status.success(), "building relais failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("relais");
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running `relais serve`, standalone, with its own data directory. Stopped on drop.
pub struct Server {
    child: Option<Child>,
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    /// The operations endpoint, when the config enabled it (`[telemetry] http = ...`).
    pub http: Option<SocketAddr>,
    /// The admin API, when the config enabled it (`[admin] listen = ...`).
    pub admin: Option<SocketAddr>,
    pub domain: String,
    pub data_dir: tempfile::TempDir,
    log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server for `localhost` with default settings.
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// Starts a server with extra TOML appended to a generated config (listen addresses and
    /// data dir are set by the harness).
    pub fn start_with(extra_toml: &str) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        Server::start_in(data_dir, extra_toml)
    }

    /// Starts a server over an existing data directory (for restart tests).
    pub fn start_in(data_dir: tempfile::TempDir, extra_toml: &str) -> Server {
        let config = data_dir.path().join("relais.toml");
        std::fs::write(&config, with_test_auth(extra_toml)).unwrap();
        let mut wants = vec!["c2s", "c2s_tls"];
        if extra_toml.contains("http =") {
            wants.push("http");
        }
        if extra_toml.contains("[admin]") {
            wants.push("admin");
        }
        let args: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            "--config".into(),
            config.into(),
            "--data-dir".into(),
            data_dir.path().into(),
            "--c2s".into(),
            "127.0.0.1:0".into(),
            "--c2s-tls".into(),
            "127.0.0.1:0".into(),
        ];
        let mut p = Process::spawn("relais", &args, &wants);
        Server {
            c2s: p.addr("c2s"),
            c2s_tls: p.addr("c2s_tls"),
            http: p.addrs.get("http").copied(),
            admin: p.addrs.get("admin").copied(),
            child: p.child.take(),
            domain: "localhost".into(),
            data_dir,
            log: p.log.clone(),
        }
    }

    /// Runs `relais user add` against this server's data directory.
    pub fn add_user(&self, local: &str, password: &str) {
        let out = self.relais_cli(
            &[
                "user",
                "add",
                &format!("{local}@{}", self.domain),
                "--password-stdin",
            ],
            password,
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a `relais` subcommand with this server's data dir, feeding `stdin`. `user`
    /// commands also get the server's config (for its `[auth]` iteration count).
    pub fn relais_cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut cmd = Command::new(relais_bin());
        cmd.args(args);
        if args.first() == Some(&"user") && !args.contains(&"--config") {
            cmd.arg("--config")
                .arg(self.data_dir.path().join("relais.toml"));
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // relais may exit before reading (an argument it refuses): a broken pipe is its answer,
        // not a harness failure.
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{stdin}\n").as_bytes());
        child.wait_with_output().unwrap()
    }

    /// The certificate the server generated for its domain (DER), to pin in clients.
    pub fn cert_der(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let path = self
            .data_dir
            .path()
            .join("certs")
            .join(format!("{}.crt", self.domain));
        let cert = rustls::pki_types::CertificateDer::from_pem_file(&path).unwrap();
        cert.as_ref().to_vec()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Resident memory of the server process, KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors of the server process (to spot leaked connections).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The server's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        terminate(self.child.take()?)
    }

    /// Stops the server and hands back its data directory (for restart tests).
    pub fn stop_keep_data(mut self) -> tempfile::TempDir {
        self.stop();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// A client connected over STARTTLS, not yet authenticated.
    pub async fn connect(&self) -> Client {
        Client::connect_starttls(self.c2s, &self.domain, self.cert_der()).await
    }

    /// A client logged in over STARTTLS with SCRAM-SHA-256 and bound to `resource`.
    pub async fn login(&self, local: &str, password: &str, resource: &str) -> Client {
        let mut c = self.connect().await;
        c.auth_scram(local, password, xmpp::scram::ScramHash::Sha256, false)
            .await
            .unwrap();
        c.bind(Some(resource)).await;
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `relais` process, started and waited for until it printed each wanted
/// `relais: NAME listening on ADDR` line.
pub struct Process {
    pub child: Option<Child>,
    pub addrs: std::collections::HashMap<String, SocketAddr>,
    pub log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(name: &str, args: &[std::ffi::OsString], wants: &[&str]) -> Process {
        let mut child = Command::new(relais_bin())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RELAIS_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start relais");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RELAIS_TEST_ECHO").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut addrs = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while wants.iter().any(|w| !addrs.contains_key(*w)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "{name} did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            };
            if line == "relais: ready" {
                addrs.insert("ready".to_owned(), SocketAddr::from(([0, 0, 0, 0], 0)));
            }
            if let Some(rest) = line.strip_prefix("relais: ")
                && let Some((what, addr)) = rest.split_once(" listening on ")
                && let Ok(addr) = addr.trim().parse::<SocketAddr>()
            {
                addrs.insert(what.to_owned(), addr);
            }
        }
        Process {
            child: Some(child),
            addrs,
            log,
        }
    }

    pub fn addr(&self, what: &str) -> SocketAddr {
        self.addrs[what]
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after 20 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        terminate(self.child.take()?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGTERM, then wait for a clean exit (SIGKILL after 20 s).
fn terminate(mut child: Child) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET (no client library needed): status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Whether Debian's python3 with slixmpp is available (installed by .ci/setup).
pub fn slixmpp_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import slixmpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
