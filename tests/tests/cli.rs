//! The `relais user` and `check-config` commands: results, clear errors and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tests::{Server, relais_bin};
use xmpp::scram::ScramHash;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn user_commands_manage_accounts_that_can_log_in() {
    let s = Server::start();
    let add = s.relais_cli(
        &["user", "add", "carol@localhost", "--password-stdin"],
        "c-pw",
    );
    assert!(add.status.success(), "{}", text(&add));
    let dup = s.relais_cli(&["user", "add", "carol@localhost", "--password-stdin"], "x");
    assert!(!dup.status.success());
    assert!(
        text(&dup).contains("carol@localhost already exists"),
        "{}",
        text(&dup)
    );
    let bad = s.relais_cli(&["user", "add", "localhost", "--password-stdin"], "x");
    assert!(
        !bad.status.success() && text(&bad).contains("no localpart"),
        "{}",
        text(&bad)
    );
    let empty = s.relais_cli(&["user", "add", "dave@localhost", "--password-stdin"], "");
    assert!(
        !empty.status.success() && text(&empty).contains("empty"),
        "{}",
        text(&empty)
    );

    // The stored keys work for both SCRAM hashes and PLAIN.
    let mut c = s.connect().await;
    c.auth_scram("carol", "c-pw", ScramHash::Sha1, false)
        .await
        .unwrap();

    let pw = s.relais_cli(
        &["user", "passwd", "carol@localhost", "--password-stdin"],
        "new-pw",
    );
    assert!(pw.status.success(), "{}", text(&pw));
    let mut old = s.connect().await;
    assert_eq!(
        old.auth_plain("carol", "c-pw").await.unwrap_err(),
        "not-authorized"
    );
    let mut new = s.connect().await;
    new.auth_scram("carol", "new-pw", ScramHash::Sha256, false)
        .await
        .unwrap();

    let import = s.relais_cli(
        &["user", "import"],
        "u1@localhost p1\nu2@localhost p2\n\ncarol@localhost x",
    );
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        text(&import).contains("imported 2 accounts (1 already existed)"),
        "{}",
        text(&import)
    );
    let list = s.relais_cli(&["user", "list"], "");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "carol@localhost\nu1@localhost\nu2@localhost\n"
    );
    let mut u2 = s.connect().await;
    u2.auth_plain("u2", "p2").await.unwrap();

    let rm = s.relais_cli(&["user", "remove", "u1@localhost"], "");
    assert!(rm.status.success(), "{}", text(&rm));
    let rm_again = s.relais_cli(&["user", "remove", "u1@localhost"], "");
    assert!(!rm_again.status.success() && text(&rm_again).contains("does not exist"));
    let gone = s.relais_cli(&["user", "passwd", "u1@localhost", "--password-stdin"], "x");
    assert!(!gone.status.success() && text(&gone).contains("does not exist"));
}

#[test]
fn check_config_reports_errors_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\ndomains = [\"example.org\"]\n").unwrap();
    let out = Command::new(relais_bin())
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("example.org"));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[listen]\nc2ss = \"[::]:5222\"\n").unwrap();
    let out = Command::new(relais_bin())
        .args(["check-config", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown field `c2ss`"),
        "{}",
        text(&out)
    );

    let missing = dir.path().join("nope.toml");
    let out = Command::new(relais_bin())
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("cannot read config"),
        "{}",
        text(&out)
    );

    let roles = Command::new(relais_bin())
        .args(["serve", "--roles", "edgy", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!roles.status.success());
    assert!(
        text(&roles).contains("valid roles are: all, edge, session, router"),
        "{}",
        text(&roles)
    );
}
