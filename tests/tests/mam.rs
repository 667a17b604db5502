//! XEP-0313 end to end: messages archived by the real server survive a restart, and slixmpp
//! (Debian's python3-slixmpp 1.8.3, its xep_0313 plugin) pages through the archive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tests::client::{body, chat};
use tests::{Server, slixmpp_available, workspace_root};
use xmpp::{Element, ns};

const N: usize = 25;
const PAGE: usize = 10;

/// Runs tests/slixmpp/mam.py as `local`; returns the (id, body) of every message it printed,
/// and the page lines.
fn slixmpp_fetch(s: &Server, local: &str, extra: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
    let cafile = s.data_dir.path().join("certs/localhost.crt");
    fetch_at(s.c2s.port(), &cafile, local, extra, &|| s.log().join("\n"))
}

/// The same against any deployment: a STARTTLS port and the certificate to trust.
fn fetch_at(
    port: u16,
    cafile: &std::path::Path,
    local: &str,
    extra: &[&str],
    log: &dyn Fn() -> String,
) -> (Vec<(String, String)>, Vec<String>) {
    let script = workspace_root().join("tests/slixmpp/mam.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .arg(cafile)
        .args([format!("{local}@localhost"), format!("{local}-pw")])
        .args(["--max", &PAGE.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "PASS"),
        "slixmpp mam scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        log()
    );
    let msgs = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("MSG "))
        .map(|l| {
            let (id, body) = l.split_once(' ').unwrap();
            (id.to_owned(), body.to_owned())
        })
        .collect();
    let pages = stdout
        .lines()
        .filter(|l| l.starts_with("PAGE "))
        .map(str::to_owned)
        .collect();
    (msgs, pages)
}

fn stanza_id(m: &Element) -> Option<(String, String)> {
    let sid = m.get_child("stanza-id", ns::SID)?;
    Some((
        sid.get_attr("by")?.to_owned(),
        sid.get_attr("id")?.to_owned(),
    ))
}

/// False (after saying so) when slixmpp is missing outside CI; in CI a missing slixmpp fails.
fn have_slixmpp() -> bool {
    if slixmpp_available() {
        return true;
    }
    eprintln!("SKIPPED: /usr/bin/python3 cannot import slixmpp (run .ci/setup)");
    assert!(
        std::env::var_os("CI").is_none(),
        "slixmpp must be installed in CI"
    );
    false
}

#[tokio::test]
async fn archive_survives_a_restart_and_slixmpp_pages_through_it() {
    if !have_slixmpp() {
        return;
    }
    let s = Server::start();
    s.add_user("alice", "alice-pw");
    s.add_user("bob", "bob-pw");
    let mut a = s.login("alice", "alice-pw", "a").await;
    a.go_online().await;
    let mut b = s.login("bob", "bob-pw", "b").await;
    b.go_online().await;

    let expected: Vec<String> = (0..N).map(|i| format!("note-{i:02}")).collect();
    for text in &expected {
        a.send(&chat("bob@localhost", text)).await;
    }
    // Bob gets each message once, in order, stamped with its archive id.
    let mut delivered_ids = Vec::new();
    for text in &expected {
        let m = b.recv_matching(|e| e.name() == "message").await;
        assert_eq!(body(&m).as_deref(), Some(text.as_str()));
        let (by, id) = stanza_id(&m).unwrap_or_else(|| panic!("no stanza-id in {m}"));
        assert_eq!(by, "bob@localhost");
        delivered_ids.push(id);
    }
    drop(a);
    drop(b);

    let dir = s.stop_keep_data();
    let s = Server::start_in(dir, "");

    // Forwards, pages of 10: 10 + 10 + 5, the last one complete.
    let (msgs, pages) = slixmpp_fetch(&s, "bob", &[]);
    let bodies: Vec<&str> = msgs.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, expected, "every message once, in order");
    let ids: Vec<String> = msgs.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(
        ids, delivered_ids,
        "archive ids are the delivered stanza ids"
    );
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(
        pages[0].contains("items=10 complete=False count=25"),
        "{pages:#?}"
    );
    assert!(pages[2].contains("items=5 complete=True"), "{pages:#?}");

    // Backwards from the end: the same messages.
    let (back, pages) = slixmpp_fetch(&s, "bob", &["--reverse"]);
    assert_eq!(back, msgs);
    assert_eq!(pages.len(), 3, "{pages:#?}");
    assert!(pages[0].contains("items=10"), "{pages:#?}");
    assert!(pages[2].contains("items=5 complete=True"), "{pages:#?}");

    // The sender's archive holds her copies, under ids of her own.
    let (sent, _) = slixmpp_fetch(&s, "alice", &[]);
    let sent_bodies: Vec<&str> = sent.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(sent_bodies, expected);
    assert!(sent.iter().all(|(id, _)| !delivered_ids.contains(id)));
}

/// In a cluster: Alice (first edge, first session node) writes to Bob (second edge, second
/// session node); each archive lives with its owner's node, and slixmpp pages through Bob's
/// through either edge.
#[tokio::test]
async fn slixmpp_pages_through_the_archive_in_a_cluster() {
    if !have_slixmpp() {
        return;
    }
    let c = tests::deploy::cluster(&["alice", "bob"]);
    let mut a = c.login_at(0, "alice", "alice-pw", "a").await;
    a.go_online().await;
    let mut b = c.login_at(1, "bob", "bob-pw", "b").await;
    b.go_online().await;
    let expected: Vec<String> = (0..N).map(|i| format!("cluster-{i:02}")).collect();
    for text in &expected {
        a.send(&chat("bob@localhost", text)).await;
    }
    let mut delivered_ids = Vec::new();
    for text in &expected {
        let m = b.recv_matching(|e| e.name() == "message").await;
        assert_eq!(body(&m).as_deref(), Some(text.as_str()));
        delivered_ids.push(
            stanza_id(&m)
                .unwrap_or_else(|| panic!("no stanza-id in {m}"))
                .1,
        );
    }
    let cafile = c.dir.path().join("certs/localhost.crt");
    for edge in 0..2 {
        let (msgs, pages) = fetch_at(c.edge(edge).port(), &cafile, "bob", &[], &|| c.logs());
        let bodies: Vec<&str> = msgs.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(bodies, expected, "through edge {edge}");
        let ids: Vec<String> = msgs.iter().map(|(i, _)| i.clone()).collect();
        assert_eq!(ids, delivered_ids);
        assert_eq!(pages.len(), 3, "{pages:#?}");
    }
    let (sent, _) = fetch_at(c.edge(1).port(), &cafile, "alice", &["--reverse"], &|| {
        c.logs()
    });
    let mut sent_bodies: Vec<&str> = sent.iter().map(|(_, b)| b.as_str()).collect();
    sent_bodies.sort_unstable();
    assert_eq!(sent_bodies, expected);
}
