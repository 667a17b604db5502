//! CI smoke test: run relais-loadtest against a real Relais and check that every login
//! succeeded and every message was delivered to the right user (correctness, not speed).
//!
//! The relais binary comes from `RELAIS_BIN` when set; otherwise the test runs
//! `cargo build -p relais` (a no-op when it is up to date) and uses target/debug/relais. Only
//! when that build fails is the test skipped, with the reason printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const USERS: u32 = 12;
const PASSWORD: &str = "smoke-pass";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The relais binary, or why there is none.
fn relais_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RELAIS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("RELAIS_BIN={} is not a file", p.display()))
        };
    }
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "relais"])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`cargo build -p relais` failed:\n{}",
            tail.join("\n")
        ));
    }
    let bin = target.join("debug").join("relais");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no binary at {}", bin.display()))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(server: &mut Server, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "relais exited with {status} before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("relais did not listen on port {port} within 30 s");
}

/// Runs the load generator to completion (bounded) and returns its JSON report.
fn loadtest(args: &[&str], json: &Path) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relais-loadtest"))
        .args(args)
        .args([
            "--json",
            json.to_str().unwrap(),
            "--max-time",
            "40",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "relais-loadtest failed ({status}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("{}", String::from_utf8_lossy(&out.stdout));
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("relais-loadtest did not finish within 50 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn op(report: &Value, name: &str) -> (u64, u64, u64) {
    let o = &report["ops"][name];
    (
        o["attempted"].as_u64().unwrap_or(0),
        o["succeeded"].as_u64().unwrap_or(0),
        o["failed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn every_message_is_delivered_by_relais() {
    let relais = match relais_binary() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIPPED: the relais binary cannot be built: {reason}");
            eprintln!("SKIPPED: the relais binary cannot be built: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();

    // The RFC 7677 minimum of PBKDF2 rounds: the production default (600,000) takes seconds
    // per derivation in an unoptimized build, for the import and for every client login.
    let config = dir.path().join("relais.toml");
    std::fs::write(&config, "[auth]\nscram_iterations = 4096\n").unwrap();
    let mut import = Command::new(&relais)
        .args(["user", "import", "--data-dir", data.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = import.stdin.take().unwrap();
        for i in 1..=USERS {
            writeln!(stdin, "user{i}@localhost {PASSWORD}").unwrap();
        }
    }
    assert!(
        import.wait().unwrap().success(),
        "relais user import failed"
    );

    let (c2s, c2s_tls) = (free_port(), free_port());
    let log = dir.path().join("relais.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut server = Server(
        Command::new(&relais)
            .args(["serve", "--domain", "localhost"])
            .args(["--config", config.to_str().unwrap()])
            .args(["--c2s", &format!("127.0.0.1:{c2s}")])
            .args(["--c2s-tls", &format!("127.0.0.1:{c2s_tls}")])
            .args(["--data-dir", data.to_str().unwrap()])
            .args([
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ])
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    wait_for_port(&mut server, c2s, &log);
    wait_for_port(&mut server, c2s_tls, &log);
    let pid = server.0.id().to_string();

    // 1:1 chat over STARTTLS: 12 users, each sending to 3 contacts, 300 messages in all.
    let server_addr = format!("127.0.0.1:{c2s}");
    let report = loadtest(
        &[
            "--server",
            &server_addr,
            "--password",
            PASSWORD,
            "--tls",
            "starttls",
            "--server-pid",
            &pid,
            "chat",
            "--users",
            &USERS.to_string(),
            "--contacts",
            "3",
            "--rate",
            "150",
            "--duration-secs",
            "2",
            "--settle-secs",
            "0.5",
            "--drain-secs",
            "10",
        ],
        &dir.path().join("chat.json"),
    );
    let chat = &report["scenarios"][0];
    assert_eq!(
        op(chat, "login"),
        (u64::from(USERS), u64::from(USERS), 0),
        "{chat:#}"
    );
    let (attempted, succeeded, failed) = op(chat, "message");
    assert_eq!(attempted, 300, "{chat:#}");
    assert_eq!(
        (succeeded, failed),
        (300, 0),
        "every message must be delivered once: {chat:#}"
    );
    assert_eq!(chat["latency"]["message"]["count"], 300);
    assert_eq!(chat["errors"], serde_json::json!({}), "{chat:#}");
    assert!(
        chat["server"]["cpu_ms_per_1000_messages"].is_number(),
        "{chat:#}"
    );

    // Complete logins over direct TLS with SCRAM-SHA-1, then close.
    let tls_addr = format!("127.0.0.1:{c2s_tls}");
    let report = loadtest(
        &[
            "--server",
            &tls_addr,
            "--password",
            PASSWORD,
            "--tls",
            "direct",
            "--mech",
            "scram-sha-1",
            "login-storm",
            "--users",
            &USERS.to_string(),
            "--rate",
            "50",
            "--rounds",
            "2",
        ],
        &dir.path().join("storm.json"),
    );
    let storm = &report["scenarios"][0];
    let n = 2 * u64::from(USERS);
    assert_eq!(op(storm, "login"), (n, n, 0), "{storm:#}");
    assert_eq!(op(storm, "close"), (n, n, 0), "{storm:#}");
    assert_eq!(storm["mechanisms"]["SCRAM-SHA-1"], n, "{storm:#}");
    assert_eq!(storm["errors"], serde_json::json!({}), "{storm:#}");

    // A wrong password is counted as an authentication failure, not as a success.
    let report = loadtest(
        &[
            "--server",
            &server_addr,
            "--password",
            "wrong-password",
            "login-storm",
            "--users",
            "2",
            "--rate",
            "50",
        ],
        &dir.path().join("bad.json"),
    );
    let bad = &report["scenarios"][0];
    assert_eq!(op(bad, "login"), (2, 0, 2), "{bad:#}");
    assert_eq!(bad["errors"]["login/auth/not-authorized"], 2, "{bad:#}");
}
