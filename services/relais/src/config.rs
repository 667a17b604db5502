//! The typed configuration file, validated at start.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// A role this process plays. `all` runs every role in one process (standalone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    All,
    Edge,
    Session,
    Router,
}

impl Role {
    pub const VALID: &'static str = "all, edge, session, router";
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Role::All),
            "edge" => Ok(Role::Edge),
            "session" => Ok(Role::Session),
            "router" => Ok(Role::Router),
            other => Err(format!(
                "unknown role `{other}`; valid roles are: {}",
                Role::VALID
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Edge => "edge",
            Role::Session => "session",
            Role::Router => "router",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub listen: ListenSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
    pub session: SessionSection,
    pub log: LogSection,
    pub telemetry: TelemetrySection,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// The operations endpoint (`/healthz`, `/readyz`, `/metrics`), like 127.0.0.1:9090.
    /// Off when unset.
    pub http: Option<String>,
    /// An OTLP/gRPC collector, like http://127.0.0.1:4317, for traces and metrics.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            http: None,
            otlp_endpoint: None,
            service_name: "relais".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The domains this server hosts.
    pub domains: Vec<String>,
    /// Where the embedded database and generated certificates live.
    pub data_dir: PathBuf,
    /// Roles of this process (`all`, or a list of `edge`, `session`, `router`).
    pub roles: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            domains: vec!["localhost".to_owned()],
            data_dir: PathBuf::from("relais-data"),
            roles: vec!["all".to_owned()],
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// Client connections with mandatory STARTTLS.
    pub c2s: Option<String>,
    /// Client connections with direct TLS (XEP-0368).
    pub c2s_tls: Option<String>,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            c2s: Some("[::]:5222".to_owned()),
            c2s_tls: Some("[::]:5223".to_owned()),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub certificates: Vec<CertificateEntry>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// A hosted domain, or `*.example.org` for a wildcard certificate.
    pub domain: String,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attrs: usize,
    pub max_connections: usize,
    pub auth_timeout_secs: u64,
    pub max_auth_attempts: u32,
    pub read_rate_bytes: u32,
    pub read_burst_bytes: u32,
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    pub keepalive_secs: u64,
    pub allow_plain: bool,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let e = edge::EdgeConfig::default();
        LimitsSection {
            max_stanza_bytes: e.limits.max_stanza_bytes,
            max_depth: e.limits.max_depth,
            max_attrs: e.limits.max_attrs,
            max_connections: e.max_connections,
            auth_timeout_secs: e.auth_timeout.as_secs(),
            max_auth_attempts: e.max_auth_attempts,
            read_rate_bytes: e.read_rate,
            read_burst_bytes: e.read_burst,
            ping_interval_secs: e.ping_interval.as_secs(),
            ping_timeout_secs: e.ping_timeout.as_secs(),
            keepalive_secs: e.keepalive_interval.as_secs(),
            allow_plain: e.allow_plain,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    pub offline_quota: usize,
    pub version_enabled: bool,
    pub max_resources: usize,
    /// XEP-0198: seconds a session whose connection was lost waits for `<resume/>`
    /// (0 turns resumption off).
    pub sm_resume_secs: u32,
}

impl Default for SessionSection {
    fn default() -> Self {
        let s = session::SessionConfig::default();
        SessionSection {
            offline_quota: s.offline_quota,
            version_enabled: s.version_enabled,
            max_resources: s.max_resources,
            sm_resume_secs: s.sm_resume_secs,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter such as `info` or `relais=debug,edge=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks everything that can be checked without starting: domains, addresses, roles,
    /// limits, certificate files.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.domains.is_empty() {
            return bad("server.domains must name at least one domain".into());
        }
        let mut domains = Vec::new();
        for d in &self.server.domains {
            match xmpp::BareJid::domain_only(d) {
                Ok(j) => domains.push(j.domain().to_owned()),
                Err(e) => return bad(format!("server.domains: `{d}` is not a valid domain ({e})")),
            }
        }
        domains.sort();
        domains.dedup();
        let mut roles = Vec::new();
        for r in &self.server.roles {
            for part in r.split(',').filter(|p| !p.trim().is_empty()) {
                roles.push(
                    part.parse::<Role>()
                        .map_err(|e| ConfigError::Invalid(format!("server.roles: {e}")))?,
                );
            }
        }
        if roles.is_empty() {
            roles.push(Role::All);
        }
        let addr = |name: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s.parse::<SocketAddr>().map(Some).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "listen.{name}: `{s}` is not an address like 127.0.0.1:5222 or [::]:5222"
                    ))
                }),
            }
        };
        let c2s = addr("c2s", &self.listen.c2s)?;
        let c2s_tls = addr("c2s_tls", &self.listen.c2s_tls)?;
        let ops_http = addr("http", &self.telemetry.http).map_err(|e| {
            ConfigError::Invalid(e.to_string().replace("listen.http", "telemetry.http"))
        })?;
        if let Some(ep) = &self.telemetry.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return bad(format!(
                "telemetry.otlp_endpoint: `{ep}` must start with http:// or https://"
            ));
        }
        if c2s.is_none() && c2s_tls.is_none() {
            return bad("listen: at least one of c2s and c2s_tls must be set".into());
        }
        let l = &self.limits;
        if l.max_stanza_bytes < 10_000 {
            return bad(format!(
                "limits.max_stanza_bytes must be at least 10000 (RFC 6120 §13.12), not {}",
                l.max_stanza_bytes
            ));
        }
        if l.max_depth < 4 || l.max_attrs < 8 {
            return bad(
                "limits.max_depth must be at least 4 and limits.max_attrs at least 8".into(),
            );
        }
        if l.max_connections == 0 || l.max_auth_attempts == 0 || l.read_rate_bytes == 0 {
            return bad(
                "limits.max_connections, max_auth_attempts and read_rate_bytes must be positive"
                    .into(),
            );
        }
        if (l.read_burst_bytes as usize) < l.max_stanza_bytes {
            return bad("limits.read_burst_bytes must be at least limits.max_stanza_bytes".into());
        }
        if self.session.offline_quota == 0 || self.session.max_resources == 0 {
            return bad("session.offline_quota and session.max_resources must be positive".into());
        }
        for c in &self.tls.certificates {
            for (what, p) in [("cert", &c.cert), ("key", &c.key)] {
                if !p.is_file() {
                    return bad(format!(
                        "tls.certificates for {}: {what} file {} does not exist",
                        c.domain,
                        p.display()
                    ));
                }
            }
        }
        Ok(Validated {
            domains,
            roles,
            c2s,
            c2s_tls,
            ops_http,
        })
    }

    pub fn edge_config(&self) -> edge::EdgeConfig {
        let l = &self.limits;
        edge::EdgeConfig {
            limits: xmpp::parser::Limits {
                max_stanza_bytes: l.max_stanza_bytes,
                max_depth: l.max_depth,
                max_attrs: l.max_attrs,
            },
            auth_timeout: std::time::Duration::from_secs(l.auth_timeout_secs),
            ping_interval: std::time::Duration::from_secs(l.ping_interval_secs),
            ping_timeout: std::time::Duration::from_secs(l.ping_timeout_secs),
            keepalive_interval: std::time::Duration::from_secs(l.keepalive_secs),
            max_connections: l.max_connections,
            read_rate: l.read_rate_bytes,
            read_burst: l.read_burst_bytes,
            max_auth_attempts: l.max_auth_attempts,
            allow_plain: l.allow_plain,
            ..edge::EdgeConfig::default()
        }
    }
}

/// The checked, normalized parts of a config.
#[derive(Clone, Debug)]
pub struct Validated {
    pub domains: Vec<String>,
    pub roles: Vec<Role>,
    pub c2s: Option<SocketAddr>,
    pub c2s_tls: Option<SocketAddr>,
    pub ops_http: Option<SocketAddr>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_standalone_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let v = c.validate().unwrap();
        assert_eq!(v.domains, ["localhost"]);
        assert_eq!(v.roles, [Role::All]);
        assert_eq!(v.c2s.map(|a| a.port()), Some(5222));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = Config::parse("[server]\ndomain = [\"x\"]\n").unwrap_err();
        assert!(err.contains("unknown field `domain`"), "{err}");
    }

    #[test]
    fn role_parse_error_lists_valid_roles() {
        let err = "edgy".parse::<Role>().unwrap_err();
        assert!(err.contains("all, edge, session, router"), "{err}");
        let mut c = Config::default();
        c.server.roles = vec!["edge,session".into()];
        assert_eq!(c.validate().unwrap().roles, [Role::Edge, Role::Session]);
    }

    #[test]
    fn invalid_values_get_clear_messages() {
        let mut c = Config::default();
        c.listen.c2s = Some("localhost".into());
        assert!(c.validate().unwrap_err().to_string().contains("listen.c2s"));
        let mut c = Config::default();
        c.limits.max_stanza_bytes = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_stanza_bytes")
        );
        let mut c = Config::default();
        c.server.domains = vec!["bad domain/x".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("server.domains")
        );
        let mut c = Config::default();
        c.tls.certificates.push(CertificateEntry {
            domain: "localhost".into(),
            cert: "/nonexistent.crt".into(),
            key: "/nonexistent.key".into(),
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn readme_example_parses() {
        let text = include_str!("../../../README.md");
        let start = text.find("```toml\n").unwrap() + 8;
        let end = start + text[start..].find("```").unwrap();
        let c = Config::parse(&text[start..end]).unwrap();
        assert!(!c.server.domains.is_empty());
    }
}
