//! What to connect to and which scenarios to run: built from flags or from a TOML file.
//!
//! A scenario file looks like this (every key is optional except `kind`):
//!
//! ```toml
//! [target]
//! server = "127.0.0.1:5222"
//! domain = "localhost"
//! tls = "starttls"          # or "direct"
//! mech = "auto"             # auto | scram-sha-256 | scram-sha-1 | scram-sha-256-plus | scram-sha-1-plus
//! user_prefix = "user"      # accounts are user1@localhost .. userN@localhost
//! password = "password"
//! sources = 4               # bind 127.0.0.1 .. 127.0.0.4 as source addresses
//!
//! [[scenario]]
//! kind = "idle"
//! users = 5000
//! rate = 300
//! hold_secs = 10
//!
//! [[scenario]]
//! kind = "chat"
//! users = 500
//! contacts = 10
//! rate = 2000
//! duration_secs = 20
//! ```
//!
//! Flags given on the command line override the file's `[target]` values.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How TLS is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP, then `<starttls/>` (RFC 6120 §5).
    Starttls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

/// Which SASL mechanism to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mech {
    /// SCRAM-SHA-256 when offered, else SCRAM-SHA-1 (never -PLUS).
    Auto,
    #[serde(rename = "scram-sha-256")]
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-1")]
    #[value(name = "scram-sha-1")]
    ScramSha1,
    /// SCRAM-SHA-256-PLUS with `tls-exporter` channel binding.
    #[serde(rename = "scram-sha-256-plus")]
    #[value(name = "scram-sha-256-plus")]
    ScramSha256Plus,
    /// SCRAM-SHA-1-PLUS with `tls-exporter` channel binding.
    #[serde(rename = "scram-sha-1-plus")]
    #[value(name = "scram-sha-1-plus")]
    ScramSha1Plus,
}

/// The server under test and how to log in to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    /// `host:port` of the c2s listener (STARTTLS or direct TLS, per `tls`).
    pub server: String,
    /// The XMPP domain (stream `to`, and the domain of every account).
    pub domain: String,
    pub tls: TlsMode,
    pub mech: Mech,
    /// Accounts are `{user_prefix}{n}@{domain}` for n from `first_user`.
    pub user_prefix: String,
    pub first_user: u32,
    /// The password of every account.
    pub password: String,
    /// The resource asked for at bind (the connection index is appended).
    pub resource: String,
    /// How many 127.0.0.x source addresses to spread connections over (loopback targets only).
    pub sources: u8,
    /// Timeout of each login and of each close handshake, in seconds.
    pub timeout_secs: f64,
    /// Let rustls resume TLS sessions (off by default: every login is a full handshake).
    pub tls_resume: bool,
    /// Fetch the roster during login.
    pub roster: bool,
    /// Send initial presence during login.
    pub presence: bool,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            server: "127.0.0.1:5222".into(),
            domain: "localhost".into(),
            tls: TlsMode::Starttls,
            mech: Mech::Auto,
            user_prefix: "user".into(),
            first_user: 1,
            password: "password".into(),
            resource: "lt".into(),
            sources: 4,
            timeout_secs: 30.0,
            tls_resume: false,
            roster: true,
            presence: true,
        }
    }
}

impl Target {
    /// The local part of user `idx` (0-based).
    pub fn username(&self, idx: u32) -> String {
        format!(
            "{}{}",
            self.user_prefix,
            u64::from(self.first_user) + u64::from(idx)
        )
    }

    /// The bare JID of user `idx` (0-based).
    pub fn bare_jid(&self, idx: u32) -> String {
        format!("{}@{}", self.username(idx), self.domain)
    }

    /// Resolves `server` (numeric addresses, or a name such as `localhost`).
    pub fn server_addr(&self) -> Result<SocketAddr> {
        self.server_addrs()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config(format!("server {} has no address", self.server)))
    }

    /// Resolves every entry of `server`, a comma list (several edges of a cluster: user `n`
    /// connects to entry `n` modulo the list).
    pub fn server_addrs(&self) -> Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        let mut out = Vec::new();
        for one in self
            .server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let addr = one
                .to_socket_addrs()
                .map_err(|e| Error::Config(format!("cannot resolve server {one}: {e}")))?
                .next()
                .ok_or_else(|| Error::Config(format!("server {one} has no address")))?;
            out.push(addr);
        }
        if out.is_empty() {
            return Err(Error::Config("no server given".into()));
        }
        Ok(out)
    }

    /// The source addresses to bind: 127.0.0.1..=127.0.0.`sources` for an IPv4 loopback
    /// target, none (the kernel picks) otherwise.
    pub fn source_addrs(&self, server: SocketAddr) -> Vec<IpAddr> {
        match server.ip() {
            IpAddr::V4(v4) if v4.is_loopback() && self.sources > 0 => (1..=self.sources)
                .map(|x| IpAddr::V4(Ipv4Addr::new(127, 0, 0, x)))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.domain.is_empty() {
            return Err(Error::Config("domain must not be empty".into()));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 600.0) {
            return Err(Error::Config("timeout_secs must be in (0, 600]".into()));
        }
        self.server_addr()?;
        Ok(())
    }
}

fn d_users() -> u32 {
    100
}
fn d_login_rate() -> f64 {
    200.0
}
fn d_concurrency() -> u32 {
    100
}
fn d_one() -> u32 {
    1
}
fn d_hold() -> f64 {
    10.0
}
fn d_settle() -> f64 {
    2.0
}
fn d_contacts() -> u32 {
    5
}
fn d_chat_rate() -> f64 {
    1000.0
}
fn d_duration() -> f64 {
    10.0
}
fn d_drain() -> f64 {
    5.0
}
fn d_presence_rate() -> f64 {
    200.0
}
fn d_setup() -> f64 {
    60.0
}

/// Login storm: `users` accounts log in at `rate` logins/s (full login, then close), `rounds`
/// times over.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LoginStorm {
    #[serde(default = "d_users")]
    #[arg(long, default_value_t = d_users())]
    pub users: u32,
    #[serde(default = "d_login_rate")]
    #[arg(long, default_value_t = d_login_rate())]
    pub rate: f64,
    /// Most logins in flight at once.
    #[serde(default = "d_concurrency")]
    #[arg(long, default_value_t = d_concurrency())]
    pub concurrency: u32,
    #[serde(default = "d_one")]
    #[arg(long, default_value_t = d_one())]
    pub rounds: u32,
}

/// Idle: log `users` sessions in at `rate`/s and hold them for `hold_secs`.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Idle {
    #[serde(default = "d_users")]
    #[arg(long, default_value_t = d_users())]
    pub users: u32,
    #[serde(default = "d_login_rate")]
    #[arg(long, default_value_t = d_login_rate())]
    pub rate: f64,
    #[serde(default = "d_concurrency")]
    #[arg(long, default_value_t = d_concurrency())]
    pub concurrency: u32,
    /// How long to hold the sessions once all are connected.
    #[serde(default = "d_hold")]
    #[arg(long, default_value_t = d_hold())]
    pub hold_secs: f64,
    /// Wait after the last login before sampling the server's RSS.
    #[serde(default = "d_settle")]
    #[arg(long, default_value_t = d_settle())]
    pub settle_secs: f64,
}

/// 1:1 chat: `users` online; user i sends to its `contacts` successors (i+1..i+K mod N), at a
/// fixed total `rate` of messages/s, for `duration_secs` (or until `messages` are sent).
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    #[serde(default = "d_users")]
    #[arg(long, default_value_t = d_users())]
    pub users: u32,
    #[serde(default = "d_contacts")]
    #[arg(long, default_value_t = d_contacts())]
    pub contacts: u32,
    #[serde(default = "d_chat_rate")]
    #[arg(long, default_value_t = d_chat_rate())]
    pub rate: f64,
    #[serde(default = "d_duration")]
    #[arg(long, default_value_t = d_duration())]
    pub duration_secs: f64,
    /// Stop after this many messages (before `duration_secs` if reached first).
    #[serde(default)]
    #[arg(long)]
    pub messages: Option<u64>,
    /// Extra body bytes appended to each message.
    #[serde(default)]
    #[arg(long, default_value_t = 0)]
    pub body_bytes: u32,
    #[serde(default = "d_login_rate")]
    #[arg(long, default_value_t = d_login_rate())]
    pub login_rate: f64,
    #[serde(default = "d_concurrency")]
    #[arg(long, default_value_t = d_concurrency())]
    pub concurrency: u32,
    /// Pause between the last login and the first message.
    #[serde(default = "d_settle")]
    #[arg(long, default_value_t = d_settle())]
    pub settle_secs: f64,
    /// How long to wait for in-flight messages after the last send.
    #[serde(default = "d_drain")]
    #[arg(long, default_value_t = d_drain())]
    pub drain_secs: f64,
    /// XEP-0198: every client enables stream management after login and answers the
    /// server's `<r/>` (as Conversations and Monal do).
    #[serde(default)]
    #[arg(long)]
    pub sm: bool,
}

/// Presence churn: `users` online, each mutually subscribed with its `contacts` successors
/// (so each has 2K roster entries); presence updates at a total `rate`/s for `duration_secs`,
/// each carrying a timestamp in `<status/>`.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    #[serde(default = "d_users")]
    #[arg(long, default_value_t = d_users())]
    pub users: u32,
    #[serde(default = "d_contacts")]
    #[arg(long, default_value_t = d_contacts())]
    pub contacts: u32,
    #[serde(default = "d_presence_rate")]
    #[arg(long, default_value_t = d_presence_rate())]
    pub rate: f64,
    #[serde(default = "d_duration")]
    #[arg(long, default_value_t = d_duration())]
    pub duration_secs: f64,
    #[serde(default = "d_login_rate")]
    #[arg(long, default_value_t = d_login_rate())]
    pub login_rate: f64,
    #[serde(default = "d_concurrency")]
    #[arg(long, default_value_t = d_concurrency())]
    pub concurrency: u32,
    /// The longest wait for the subscription handshakes during setup.
    #[serde(default = "d_setup")]
    #[arg(long, default_value_t = d_setup())]
    pub setup_timeout_secs: f64,
    #[serde(default = "d_drain")]
    #[arg(long, default_value_t = d_drain())]
    pub drain_secs: f64,
}

/// Scenarios that are planned but not written yet.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotYet {
    #[serde(flatten)]
    pub rest: toml::Table,
}

/// One scenario to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Scenario {
    LoginStorm(LoginStorm),
    Idle(Idle),
    Chat(Chat),
    Presence(Presence),
    /// MAM page queries: not yet.
    Mam(NotYet),
    /// MUC fan-out: not yet.
    Muc(NotYet),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::LoginStorm(_) => "login-storm",
            Scenario::Idle(_) => "idle",
            Scenario::Chat(_) => "chat",
            Scenario::Presence(_) => "presence",
            Scenario::Mam(_) => "mam",
            Scenario::Muc(_) => "muc",
        }
    }

    /// Checks the parameters; every run must be bounded in count and in time.
    pub fn validate(&self) -> Result<()> {
        fn rate(name: &str, r: f64) -> Result<()> {
            if r.is_finite() && r > 0.0 && r <= 1_000_000.0 {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be in (0, 1000000]")))
            }
        }
        fn secs(name: &str, s: f64, max: f64) -> Result<()> {
            if s.is_finite() && s >= 0.0 && s <= max {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be in [0, {max}]")))
            }
        }
        fn users(n: u32) -> Result<()> {
            if (1..=1_000_000).contains(&n) {
                Ok(())
            } else {
                Err(Error::Config("users must be in [1, 1000000]".into()))
            }
        }
        fn conc(n: u32) -> Result<()> {
            if (1..=100_000).contains(&n) {
                Ok(())
            } else {
                Err(Error::Config("concurrency must be in [1, 100000]".into()))
            }
        }
        match self {
            Scenario::LoginStorm(s) => {
                users(s.users)?;
                rate("rate", s.rate)?;
                conc(s.concurrency)?;
                if !(1..=1000).contains(&s.rounds) {
                    return Err(Error::Config("rounds must be in [1, 1000]".into()));
                }
            }
            Scenario::Idle(s) => {
                users(s.users)?;
                rate("rate", s.rate)?;
                conc(s.concurrency)?;
                secs("hold_secs", s.hold_secs, 86_400.0)?;
                secs("settle_secs", s.settle_secs, 600.0)?;
            }
            Scenario::Chat(s) => {
                users(s.users)?;
                if s.users < 2 || s.contacts == 0 || s.contacts >= s.users {
                    return Err(Error::Config(
                        "chat needs users >= 2 and 1 <= contacts < users".into(),
                    ));
                }
                rate("rate", s.rate)?;
                rate("login_rate", s.login_rate)?;
                conc(s.concurrency)?;
                secs("duration_secs", s.duration_secs, 86_400.0)?;
                secs("settle_secs", s.settle_secs, 600.0)?;
                secs("drain_secs", s.drain_secs, 600.0)?;
                if s.body_bytes > 65_536 {
                    return Err(Error::Config("body_bytes must be at most 65536".into()));
                }
            }
            Scenario::Presence(s) => {
                users(s.users)?;
                if s.users < 2 || s.contacts.saturating_mul(2) >= s.users {
                    return Err(Error::Config("presence needs 2 * contacts < users".into()));
                }
                rate("rate", s.rate)?;
                rate("login_rate", s.login_rate)?;
                conc(s.concurrency)?;
                secs("duration_secs", s.duration_secs, 86_400.0)?;
                secs("setup_timeout_secs", s.setup_timeout_secs, 3_600.0)?;
                secs("drain_secs", s.drain_secs, 600.0)?;
            }
            Scenario::Mam(_) => return Err(Error::Unsupported("mam (MAM page queries)")),
            Scenario::Muc(_) => return Err(Error::Unsupported("muc (MUC fan-out)")),
        }
        Ok(())
    }
}

/// The contents of a scenario file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Partial target settings; flags override them.
    #[serde(default)]
    pub target: Option<toml::Table>,
    #[serde(default)]
    pub scenario: Vec<Scenario>,
}

impl ScenarioFile {
    pub fn parse(text: &str) -> Result<Self> {
        let f: ScenarioFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("scenario file: {e}")))?;
        if f.scenario.is_empty() {
            return Err(Error::Config("scenario file has no [[scenario]]".into()));
        }
        Ok(f)
    }

    /// The file's target settings over the defaults.
    pub fn target(&self) -> Result<Target> {
        match &self.target {
            None => Ok(Target::default()),
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e| Error::Config(format!("scenario file [target]: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_a_scenario_file_with_defaults() {
        let f = ScenarioFile::parse(
            r#"
            [target]
            server = "127.0.0.1:15222"
            tls = "direct"
            mech = "scram-sha-1"

            [[scenario]]
            kind = "idle"
            users = 5000
            hold_secs = 3

            [[scenario]]
            kind = "chat"
            users = 10
            contacts = 3
            rate = 2000
            "#,
        )
        .unwrap();
        let t = f.target().unwrap();
        assert_eq!(t.server, "127.0.0.1:15222");
        assert_eq!(t.tls, TlsMode::Direct);
        assert_eq!(t.mech, Mech::ScramSha1);
        assert_eq!(t.domain, "localhost");
        assert_eq!(f.scenario.len(), 2);
        match &f.scenario[0] {
            Scenario::Idle(i) => {
                assert_eq!(i.users, 5000);
                assert_eq!(i.hold_secs, 3.0);
                assert_eq!(i.rate, d_login_rate());
            }
            other => panic!("unexpected {other:?}"),
        }
        match &f.scenario[1] {
            Scenario::Chat(c) => {
                assert_eq!((c.users, c.contacts, c.rate), (10, 3, 2000.0));
                assert_eq!(c.messages, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        for s in &f.scenario {
            s.validate().unwrap();
        }
    }

    #[test]
    fn rejects_unknown_keys_and_unbounded_runs() {
        assert!(ScenarioFile::parse("[[scenario]]\nkind = \"idle\"\nusrs = 3\n").is_err());
        assert!(ScenarioFile::parse("[target]\nserver = \"x\"\n").is_err());
        let f =
            ScenarioFile::parse("[[scenario]]\nkind = \"chat\"\nduration_secs = -1.0\n").unwrap();
        assert!(f.scenario[0].validate().is_err());
        let f = ScenarioFile::parse("[[scenario]]\nkind = \"chat\"\nusers = 3\ncontacts = 3\n")
            .unwrap();
        assert!(f.scenario[0].validate().is_err());
    }

    #[test]
    fn mam_and_muc_say_not_yet() {
        let f = ScenarioFile::parse("[[scenario]]\nkind = \"muc\"\nrooms = 3\n").unwrap();
        let err = f.scenario[0].validate().unwrap_err();
        assert!(err.to_string().contains("not implemented yet"), "{err}");
        assert!(matches!(err, Error::Unsupported(_)));
    }

    #[test]
    fn accounts_and_sources() {
        let t = Target {
            first_user: 1,
            ..Target::default()
        };
        assert_eq!(t.bare_jid(0), "user1@localhost");
        assert_eq!(t.bare_jid(41), "user42@localhost");
        let addr: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        let src = t.source_addrs(addr);
        assert_eq!(src.len(), 4);
        assert_eq!(src[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        let remote: SocketAddr = "192.0.2.1:5222".parse().unwrap();
        assert!(t.source_addrs(remote).is_empty());
    }
}
