//! Brute force against the real binary: many parallel connections from one network guess a
//! password; the limiter bounds how many guesses reach a password check, and the real user,
//! from another network, still logs in at once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tests::client::Client;
use tests::{Server, http_get};
use tokio::time::{Instant, sleep_until, timeout};

/// A counter's value in a Prometheus scrape (0 when absent).
fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_from_one_network_are_bounded_before_the_check() {
    let s = Server::start_with("[telemetry]\nhttp = \"127.0.0.1:0\"\n");
    s.add_user("victim", "correct horse battery");
    let http = s
        .http
        .unwrap_or_else(|| panic!("the ops endpoint did not start"));
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let user = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let window = Duration::from_secs(6);
    let start = Instant::now();
    let deadline = start + window;

    let mut tasks = Vec::new();
    for n in 0..24 {
        let (addr, domain, cert) = (s.c2s, s.domain.clone(), s.cert_der());
        tasks.push(tokio::spawn(async move {
            let mut answers: Vec<String> = Vec::new();
            while Instant::now() < deadline {
                let mut c =
                    Client::connect_starttls_from(addr, attacker, &domain, cert.clone()).await;
                for k in 0..3 {
                    let guess = format!("guess-{n}-{k}");
                    let left = deadline.saturating_duration_since(Instant::now());
                    match timeout(left, c.auth_plain("victim", &guess)).await {
                        Ok(Err(failure)) => answers.push(failure),
                        Ok(Ok(())) => panic!("a wrong password was accepted"),
                        Err(_) => return answers,
                    }
                }
            }
            answers
        }));
    }

    // The real user, from another network, in the middle of the attack: no lock-out, no
    // queue (a wall-clock bound here would be flaky; the login must simply succeed, and the
    // timeout only stops a hang).
    sleep_until(start + Duration::from_secs(3)).await;
    let mut real = Client::connect_starttls_from(s.c2s, user, &s.domain, s.cert_der()).await;
    let outcome = timeout(
        Duration::from_secs(30),
        real.auth_plain("victim", "correct horse battery"),
    )
    .await
    .unwrap_or_else(|_| panic!("the real user's login hung"));
    assert_eq!(
        outcome,
        Ok(()),
        "the real user was refused during the attack"
    );

    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap_or_else(|e| panic!("attacker task: {e}")));
    }
    let (_, body) = http_get(http, "/metrics").await;
    let checks = counter(&body, "relais_edge_auth_checks_total");
    let failures = counter(&body, "relais_edge_auth_failures_total");
    let throttled = counter(&body, "relais_edge_auth_throttled_total");
    eprintln!(
        "{} guesses answered, {checks} checks, {failures} failures, {throttled} throttled in {window:?}",
        answers.len()
    );
    // One network's schedule admits 3 free attempts, then spaces them 0.25, 0.5, 1, 2, 4 s
    // apart: at most 8 checks start within 6 s, whatever the number of connections (24
    // here, 72+ guesses sent). Plus the real user's one.
    assert!(
        checks <= 9.0,
        "{checks} password checks in {window:?} from one network:\n{body}"
    );
    assert!(checks >= 4.0, "the attack did not run: {checks} checks");
    // Every guess answered as a wrong password went through a check; the rest were refused
    // (temporary-auth-failure) before any PBKDF2.
    let not_authorized = answers.iter().filter(|a| *a == "not-authorized").count();
    assert!(
        (not_authorized as f64) <= checks - 1.0,
        "{not_authorized} not-authorized answers but {checks} checks"
    );
    assert!(failures >= not_authorized as f64);
    assert!(
        answers.iter().any(|a| a == "temporary-auth-failure") && throttled >= 1.0,
        "no attempt was refused: {answers:?}"
    );
}

/// The iteration count the server announces in a SCRAM-SHA-256 challenge for `user`.
async fn announced_iterations(s: &Server, user: &str) -> u32 {
    use base64::Engine;
    use xmpp::{Element, ns};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = s.connect().await;
    let first = format!("n,,n={user},r=fyko+d2lbbFgONRv9qkxdawL");
    c.send(
        &Element::new("auth", ns::SASL)
            .attr("mechanism", "SCRAM-SHA-256")
            .text_node(b64.encode(first)),
    )
    .await;
    let challenge = c.recv_stanza().await;
    assert!(challenge.is("challenge", ns::SASL), "{challenge}");
    let text = b64
        .decode(challenge.text().trim())
        .unwrap_or_else(|e| panic!("challenge is not base64: {e}"));
    let text = String::from_utf8(text).unwrap_or_else(|e| panic!("{e}"));
    text.split(',')
        .find_map(|a| a.strip_prefix("i="))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("no iteration count in {text}"))
}

#[tokio::test]
async fn a_plain_login_upgrades_credentials_below_the_configured_iterations() {
    let s = Server::start_with("[auth]\nscram_iterations = 5000\n");
    // An account derived with fewer rounds (as before the count was raised).
    let old = s.data_dir.path().join("old.toml");
    std::fs::write(&old, "[auth]\nscram_iterations = 4096\n").unwrap_or_else(|e| panic!("{e}"));
    let old = old.to_string_lossy().into_owned();
    let out = s.relais_cli(
        &[
            "user",
            "add",
            "carol@localhost",
            "--password-stdin",
            "--config",
            &old,
        ],
        "carol-pw",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(announced_iterations(&s, "carol").await, 4096);
    // A SCRAM login cannot upgrade (the server never sees the password)...
    s.login("carol", "carol-pw", "a").await;
    assert_eq!(announced_iterations(&s, "carol").await, 4096);
    // ...a PLAIN login does, and the password still works afterwards.
    let mut c = s.connect().await;
    assert_eq!(c.auth_plain("carol", "carol-pw").await, Ok(()));
    assert_eq!(announced_iterations(&s, "carol").await, 5000);
    s.login("carol", "carol-pw", "b").await;
    let mut c = s.connect().await;
    assert_eq!(c.auth_plain("carol", "carol-pw").await, Ok(()));
    // An unknown account shows the configured count too.
    assert_eq!(announced_iterations(&s, "nobody").await, 5000);
    let log = s.log().join("\n");
    assert_eq!(log.matches("credentials upgraded").count(), 1, "{log}");
}

const NS_REGISTER: &str = "jabber:iq:register";

async fn register(c: &mut Client, user: &str, password: &str) -> xmpp::Element {
    use xmpp::{Element, ns};
    c.iq(Element::new("iq", ns::CLIENT).attr("type", "set").child(
        Element::new("query", NS_REGISTER)
            .child(Element::new("username", NS_REGISTER).text_node(user))
            .child(Element::new("password", NS_REGISTER).text_node(password)),
    ))
    .await
}

fn condition(reply: &xmpp::Element) -> Option<String> {
    let err = reply.get_child("error", xmpp::ns::CLIENT)?;
    err.children()
        .find(|c| c.ns() == xmpp::ns::STANZAS_ERR && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// CPU time the server process has used (user + system), in clock ticks, from /proc.
fn cpu_ticks(s: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.pid())).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the
    // 13th of those.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

#[tokio::test]
async fn registration_refuses_taken_names_before_pbkdf2_and_counts_every_attempt() {
    // The most PBKDF2 rounds the server accepts: one derivation would cost the server many
    // seconds of CPU, so a conflict answered without it shows in the CPU time used.
    let s = Server::start_with(
        "[[domain]]\nname = \"localhost\"\nregistration_open = true\n\n[auth]\nscram_iterations = 10000000\n",
    );
    let old = s.data_dir.path().join("fast.toml");
    std::fs::write(&old, "[auth]\nscram_iterations = 4096\n").unwrap_or_else(|e| panic!("{e}"));
    let old = old.to_string_lossy().into_owned();
    let out = s.relais_cli(
        &[
            "user",
            "add",
            "taken@localhost",
            "--password-stdin",
            "--config",
            &old,
        ],
        "pw",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut c = s.connect().await;
    let before = cpu_ticks(&s);
    for _ in 0..3 {
        let r = register(&mut c, "taken", "another-pw").await;
        assert_eq!(condition(&r).as_deref(), Some("conflict"), "{r}");
    }
    let used = cpu_ticks(&s) - before;
    // 100 ticks = 1 s of CPU; three derivations at 10,000,000 rounds would take far more.
    assert!(used < 100, "{used} ticks of CPU for three conflicts");
    // Those three attempts count: the fourth, for a free name, is refused before any work.
    let r = register(&mut c, "fresh", "fresh-pw").await;
    assert_eq!(condition(&r).as_deref(), Some("resource-constraint"), "{r}");
    let users = s.relais_cli(&["user", "list"], "");
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(!users.contains("fresh"), "{users}");
}
