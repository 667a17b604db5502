//! The Kubernetes packaging: the Helm chart in helm/relais and the manifests in k8s/.
//!
//! `.ci/helm` lints and renders the chart for every CI values file, validates the output
//! against the Kubernetes 1.30 schemas, runs every rendered relais.toml through this build's
//! `relais check-config`, checks that bad values are refused, and that k8s/ is a fresh render.
//! Without helm and kubernetes-validate (installed by `.ci/helm` itself) the chart test is
//! skipped with a message, except under CI, where it must run.
//!
//! The Grafana dashboard must only query metrics the real server exports: that test needs no
//! helm and always runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use tests::{Client, Server, http_get, relais_bin, workspace_root};
use xmpp::scram::ScramHash;

fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[test]
fn chart_lints_renders_valid_manifests_and_configs_relais_accepts() {
    let root = workspace_root();
    let script = root.join(".ci/helm");
    if !ci() {
        let present = Command::new("bash")
            .arg(&script)
            .arg("--tools-present")
            .current_dir(&root)
            .output()
            .expect("cannot run bash .ci/helm --tools-present");
        if !present.status.success() {
            eprintln!(
                "SKIPPED: helm and kubernetes-validate are not installed ({}); run `bash .ci/helm` once to install them (CI does)",
                String::from_utf8_lossy(&present.stderr).trim()
            );
            return;
        }
    }
    let out = Command::new("bash")
        .arg(&script)
        .env("RELAIS_BIN", relais_bin())
        .current_dir(&root)
        .output()
        .expect("cannot run bash .ci/helm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        ".ci/helm failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // Every CI values file was linted, rendered and had all its configs accepted.
    let mut values: Vec<String> = std::fs::read_dir(root.join("helm/relais/ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    values.sort();
    assert!(values.len() >= 4, "too few CI values files: {values:?}");
    for file in &values {
        let name = file.trim_end_matches(".yaml");
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no result line for {name} in:\n{stdout}"));
        assert!(line.contains("lint ok"), "{line}");
        let accepted = line
            .split(", ")
            .find(|p| p.ends_with("relais.toml accepted"))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.split_once('/'))
            .unwrap_or_else(|| panic!("no relais.toml count in {line}"));
        assert_eq!(accepted.0, accepted.1, "{line}");
        let expected = if name.starts_with("distributed") {
            "3"
        } else {
            "1"
        };
        assert_eq!(accepted.1, expected, "{line}");
    }
    let invalid = std::fs::read_dir(root.join("tests/helm/invalid"))
        .unwrap()
        .count();
    assert!(
        stdout.contains(&format!("{invalid} invalid values files refused")),
        "{stdout}"
    );
}

/// Metric names in the dashboard: tokens `relais_...` in its JSON.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = workspace_root().join("helm/relais/dashboards/relais.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("relais_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn dashboard_queries_only_metrics_the_server_exports() {
    let s = Server::start_with("[telemetry]\nhttp = \"127.0.0.1:0\"\n");
    let http = s.http.expect("ops endpoint address");
    s.add_user("alice", "alice-pw");
    s.add_user("bob", "bob-pw");

    // Traffic that touches every instrument: logins, stanzas both ways, a failed login and a
    // stream error.
    let mut alice = s.login("alice", "alice-pw", "phone").await;
    alice.go_online().await;
    let mut bob = s.login("bob", "bob-pw", "laptop").await;
    bob.go_online().await;
    alice
        .send(&tests::client::chat("bob@localhost", "hi"))
        .await;
    bob.recv_matching(|el| el.name() == "message").await;
    let mut wrong = s.connect().await;
    assert_eq!(
        wrong
            .auth_scram("alice", "not-it", ScramHash::Sha256, false)
            .await
            .unwrap_err(),
        "not-authorized"
    );
    let mut early = Client::connect_plain(s.c2s, &s.domain, s.cert_der()).await;
    early.send_raw(b"<iq type='get' id='x'/>").await;
    assert!(early.expect_stream_end().await.is_some());

    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    let exported: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let wanted = dashboard_metrics();
    assert!(
        wanted.len() >= 5,
        "the dashboard queries too few metrics: {wanted:?}"
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !exported.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export: {missing:?}\nexported: {exported:?}"
    );
    let unused: Vec<&&str> = exported
        .iter()
        .filter(|m| m.starts_with("relais_") && !wanted.contains(**m))
        .collect();
    if !unused.is_empty() {
        eprintln!("note: exported but not on the dashboard: {unused:?}");
    }
}
