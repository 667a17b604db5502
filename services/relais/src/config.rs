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
    pub auth: AuthSection,
    pub session: SessionSection,
    pub log: LogSection,
    pub telemetry: TelemetrySection,
    pub cluster: ClusterSection,
    pub storage: StorageSection,
    pub admin: crate::admin::AdminSection,
    /// `[[domain]]`: settings of configured domains (a domain named here is hosted even if
    /// `server.domains` does not list it).
    #[serde(rename = "domain")]
    pub domains: Vec<DomainEntry>,
}

/// A `[[domain]]` table: a statically hosted domain and its settings. Domains added at
/// runtime (`relais domain add`) keep theirs in the storage instead.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainEntry {
    pub name: String,
    /// XEP-0077 in-band registration on this domain's streams.
    #[serde(default)]
    pub registration_open: bool,
    /// XEP-0313 retention (unset: `session.archive_retention_days`).
    pub archive_retention_days: Option<u32>,
    /// The most accounts (unset: no limit).
    pub max_accounts: Option<u32>,
    /// The most bound resources per account (unset: `session.max_resources`).
    pub max_sessions_per_account: Option<u32>,
    /// Offline messages per account (unset: `session.offline_quota`).
    pub offline_quota: Option<u32>,
}

impl DomainEntry {
    pub fn settings(&self) -> storage::DomainSettings {
        storage::DomainSettings {
            registration_open: self.registration_open,
            archive_retention_days: self.archive_retention_days,
            max_accounts: self.max_accounts,
            max_sessions_per_account: self.max_sessions_per_account,
            offline_quota: self.offline_quota,
        }
    }
}

/// Where durable data lives.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// SQLite in `server.data_dir` (standalone; one process).
    #[default]
    Embedded,
    /// ScyllaDB (or Cassandra): every session node shares it.
    Scylla,
}

/// The `[storage]` section. The ScyllaDB keys matter only with `backend = "scylla"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: StorageBackend,
    /// Contact points, `host:port` (port 9042 when omitted).
    pub hosts: Vec<String>,
    pub keyspace: String,
    /// SimpleStrategy replication factor, used when `datacenters` is empty.
    pub replication_factor: u32,
    /// NetworkTopologyStrategy: replicas per datacenter.
    pub datacenters: std::collections::BTreeMap<String, u32>,
    /// `local_quorum` (default), `quorum`, `local_one`, `one`, `each_quorum` or `all`.
    pub consistency: String,
    /// Lightweight transactions: `serial` (default) or `local_serial`.
    pub serial_consistency: String,
    /// The datacenter to prefer (token-aware routing stays on).
    pub local_datacenter: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Days per archive partition bucket (fixed when the keyspace is created).
    pub archive_bucket_days: u32,
    /// Create the keyspace with tablets off (ScyllaDB; set false for Cassandra).
    pub disable_tablets: bool,
    pub request_timeout_ms: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Embedded,
            hosts: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "relais".to_owned(),
            replication_factor: 3,
            datacenters: std::collections::BTreeMap::new(),
            consistency: "local_quorum".to_owned(),
            serial_consistency: "serial".to_owned(),
            local_datacenter: None,
            username: None,
            password: None,
            archive_bucket_days: 30,
            disable_tablets: true,
            request_timeout_ms: 12_000,
        }
    }
}

impl StorageSection {
    /// The ScyllaDB settings, with the archive and offline TTLs from the session retention.
    pub fn scylla(
        &self,
        session: &SessionSection,
    ) -> Result<storage::scylla::ScyllaConfig, ConfigError> {
        use storage::scylla::{ConsistencyLevel, Replication, ScyllaConfig, SerialLevel};
        let bad = |m: String| ConfigError::Invalid(m);
        let consistency = match self.consistency.as_str() {
            "one" => ConsistencyLevel::One,
            "local_one" => ConsistencyLevel::LocalOne,
            "quorum" => ConsistencyLevel::Quorum,
            "local_quorum" => ConsistencyLevel::LocalQuorum,
            "each_quorum" => ConsistencyLevel::EachQuorum,
            "all" => ConsistencyLevel::All,
            other => {
                return Err(bad(format!(
                    "storage.consistency: `{other}` is not one of one, local_one, quorum, local_quorum, each_quorum, all"
                )));
            }
        };
        let serial_consistency = match self.serial_consistency.as_str() {
            "serial" => SerialLevel::Serial,
            "local_serial" => SerialLevel::LocalSerial,
            other => {
                return Err(bad(format!(
                    "storage.serial_consistency: `{other}` is not serial or local_serial"
                )));
            }
        };
        let replication = if self.datacenters.is_empty() {
            Replication::Simple {
                replication_factor: self.replication_factor,
            }
        } else {
            Replication::NetworkTopology {
                datacenters: self.datacenters.clone(),
            }
        };
        let mut hosts = Vec::new();
        for h in &self.hosts {
            hosts.extend(
                ScyllaConfig::hosts_from_uri(h).map_err(|e| bad(format!("storage.hosts: {e}")))?,
            );
        }
        let days = |d: Option<u32>| d.map(|d| d.saturating_mul(86_400));
        let cfg = ScyllaConfig {
            hosts,
            keyspace: self.keyspace.clone(),
            replication,
            consistency,
            serial_consistency,
            local_datacenter: self.local_datacenter.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            archive_bucket_days: self.archive_bucket_days,
            archive_ttl_secs: days(session.archive_retention_days),
            offline_ttl_secs: days(session.offline_retention_days),
            disable_tablets: self.disable_tablets,
            request_timeout_ms: self.request_timeout_ms,
        };
        cfg.validate().map_err(|e| bad(format!("storage: {e}")))?;
        Ok(cfg)
    }
}

/// Where members come from, in a cluster.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MembershipSource {
    /// Heartbeats with a TTL in Redis (any environment).
    #[default]
    Redis,
    /// EndpointSlices of the role's headless Services (in Kubernetes).
    Kubernetes,
    /// The fixed list in `cluster.members` (tests, single hosts).
    Static,
}

/// How a session node reaches the owner of a recipient on another session node.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeerRouting {
    /// session → router → session (two gRPC hops; the router also owns federation and
    /// components).
    #[default]
    Router,
    /// session → session (one gRPC hop).
    Direct,
}

/// A member of a static cluster.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticMember {
    pub id: String,
    /// `edge`, `session` or `router`.
    pub role: String,
    /// gRPC `host:port` (edges: any placeholder).
    pub addr: String,
}

/// Settings of the clustered roles (`server.roles` other than `all`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's id, unique in the cluster (a Pod name). `--node-id` or `RELAIS_NODE_ID`
    /// override it; the default is the host name.
    pub node_id: Option<String>,
    /// Redis: `redis://host:port[/db]`, or `redis+cluster://host:port,host:port` for a Redis
    /// Cluster. Holds the session directory, and the membership when `membership = "redis"`.
    pub redis_url: String,
    /// gRPC listen address of the session and router roles.
    pub grpc: String,
    /// The `host:port` other nodes dial to reach this node's gRPC. `--advertise` or
    /// `RELAIS_ADVERTISE` override it (a Pod IP); the default is `grpc` when that is not an
    /// unspecified address like 0.0.0.0.
    pub advertise: Option<String>,
    /// `redis`, `kubernetes` or `static`.
    pub membership: MembershipSource,
    /// The members when `membership = "static"`.
    pub members: Vec<StaticMember>,
    /// Kubernetes: the namespace of the Services (default: this Pod's namespace).
    pub kube_namespace: Option<String>,
    /// Kubernetes: the headless Service of the session role.
    pub kube_session_service: String,
    /// Kubernetes: the headless Service of the router role.
    pub kube_router_service: String,
    /// Kubernetes: the name of the Services' gRPC port.
    pub kube_port_name: String,
    /// `router` (session → router → session) or `direct` (session → session).
    pub peer_routing: PeerRouting,
    /// Liveness heartbeat of membership and directory, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long a node without heartbeats stays listed, in milliseconds; a crashed node's
    /// directory entries vanish within this, and its users' contacts get unavailable presence.
    pub ttl_ms: u64,
    /// Edge drain: on SIGTERM, send clients `<see-other-host/>` naming this `host[:port]`
    /// (another edge, or the load balancer) instead of `<system-shutdown/>`.
    pub see_other_host: Option<String>,
    /// Mutual TLS on every cluster gRPC call (see ARCHITECTURE.md, "Cluster security").
    pub tls: Option<ClusterTlsSection>,
    /// Allows plain gRPC on a non-loopback `grpc` address without `[cluster.tls]`: only for
    /// a private network where every host that can reach the port is trusted.
    pub insecure_private_network: bool,
}

/// `[cluster.tls]`: the cluster CA and this node's certificate, PEM files (Kubernetes: a
/// mounted Secret). Read at start; a changed file takes effect at the next restart.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsSection {
    /// The cluster CA certificate(s). Servers accept only clients with a certificate it
    /// signed; clients accept only servers with one.
    pub ca: PathBuf,
    /// This node's certificate chain, signed by the cluster CA, with `server_name` as a DNS
    /// subject alternative name.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The name clients check in every server's certificate (node addresses are Pod IPs,
    /// which certificates cannot name in advance). Default `relais-cluster`.
    #[serde(default = "default_cluster_server_name")]
    pub server_name: String,
}

fn default_cluster_server_name() -> String {
    proto::DEFAULT_SERVER_NAME.to_owned()
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: None,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            grpc: "[::]:7400".to_owned(),
            advertise: None,
            membership: MembershipSource::Redis,
            members: Vec::new(),
            kube_namespace: None,
            kube_session_service: "relais-session".to_owned(),
            kube_router_service: "relais-router".to_owned(),
            kube_port_name: "grpc".to_owned(),
            peer_routing: PeerRouting::Router,
            heartbeat_ms: 2000,
            ttl_ms: 6000,
            see_other_host: None,
            tls: None,
            insecure_private_network: false,
        }
    }
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
    /// How often the hosted domains are reloaded (domains added or removed at runtime):
    /// from the storage, or on edges and routers from a session node.
    pub domain_poll_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            domains: vec!["localhost".to_owned()],
            data_dir: PathBuf::from("relais-data"),
            roles: vec!["all".to_owned()],
            domain_poll_secs: 2,
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub certificates: Vec<CertificateEntry>,
    /// Per-domain certificates, Prosody's layout: `{cert_dir}/{domain}/fullchain.pem` and
    /// `privkey.pem`, or `{cert_dir}/{domain}.crt` and `.key`. Consulted for every hosted
    /// domain, including domains added at runtime.
    pub cert_dir: Option<PathBuf>,
    /// How often certificate files are checked for changes (renewals are picked up without
    /// a restart).
    pub reload_secs: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            certificates: Vec::new(),
            cert_dir: None,
            reload_secs: 10,
        }
    }
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
    /// Elements in one stanza (bound streams).
    pub max_elements: usize,
    /// Character data in one stanza, bytes after unescaping (bound streams).
    pub max_text_bytes: usize,
    /// Bytes the parser may hold for one unfinished stanza (bound streams).
    pub max_held_bytes: usize,
    /// Open connections per client address (IPv6: per /64); 0 is no cap.
    pub max_connections_per_ip: usize,
    /// Open unauthenticated connections per client address; 0 is no cap.
    pub max_unauthenticated_per_ip: usize,
    /// Do not count loopback addresses against the per-address caps.
    pub per_ip_exempt_loopback: bool,
    /// `[limits.prelogin]`: the parser limits before SASL success (its `max_stanza_bytes`
    /// is capped at `limits.max_stanza_bytes`).
    pub prelogin: PreloginLimits,
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
            max_elements: e.tree_limits.max_elements,
            max_text_bytes: e.tree_limits.max_text_bytes,
            max_held_bytes: e.tree_limits.max_held_bytes,
            max_connections_per_ip: e.ip_caps.max_per_ip,
            max_unauthenticated_per_ip: e.ip_caps.max_unauthenticated_per_ip,
            per_ip_exempt_loopback: e.ip_caps.exempt_loopback,
            prelogin: PreloginLimits::default(),
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

/// `[limits.prelogin]`: what a stream may send before it authenticates.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PreloginLimits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attrs: usize,
    pub max_elements: usize,
    pub max_text_bytes: usize,
    pub max_held_bytes: usize,
}

impl Default for PreloginLimits {
    fn default() -> Self {
        let e = edge::EdgeConfig::default();
        PreloginLimits {
            max_stanza_bytes: e.prelogin_limits.max_stanza_bytes,
            max_depth: e.prelogin_limits.max_depth,
            max_attrs: e.prelogin_limits.max_attrs,
            max_elements: e.prelogin_tree_limits.max_elements,
            max_text_bytes: e.prelogin_tree_limits.max_text_bytes,
            max_held_bytes: e.prelogin_tree_limits.max_held_bytes,
        }
    }
}

/// `[auth]`: how credentials are derived.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// PBKDF2 iterations of new SCRAM credentials (registration, password change, `relais
    /// user add`); a PLAIN login re-derives credentials that have fewer. At least 4096
    /// (RFC 7677); the default is OWASP's 600,000 for PBKDF2-HMAC-SHA256.
    pub scram_iterations: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            scram_iterations: xmpp::scram::DEFAULT_ITERATIONS,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    pub offline_quota: usize,
    /// XEP-0160: bytes of offline messages kept per account, next to the count.
    pub offline_quota_bytes: usize,
    pub version_enabled: bool,
    pub max_resources: usize,
    /// XEP-0198: seconds a session whose connection was lost waits for `<resume/>`
    /// (0 turns resumption off).
    pub sm_resume_secs: u32,
    /// XEP-0198: keep a durable copy (in offline storage) of each message delivered to a
    /// stream-managed session until the client acknowledges it, so that no acknowledged
    /// message is lost when a session node dies. Costs one storage write and one delete per
    /// such message.
    pub durable_sm_queue: bool,
    /// XEP-0313 message archive (MAM) on or off.
    pub archive: bool,
    /// XEP-0313: days archived messages are kept (unset: forever).
    pub archive_retention_days: Option<u32>,
    /// XEP-0160: days offline messages are kept (unset: until delivered).
    pub offline_retention_days: Option<u32>,
    /// The most items one roster holds (RFC 6121 roster sets past it get `<not-allowed/>`).
    pub max_roster_items: usize,
}

impl Default for SessionSection {
    fn default() -> Self {
        let s = session::SessionConfig::default();
        SessionSection {
            offline_quota: s.offline_quota,
            offline_quota_bytes: s.offline_quota_bytes,
            version_enabled: s.version_enabled,
            max_resources: s.max_resources,
            sm_resume_secs: s.sm_resume_secs,
            durable_sm_queue: s.durable_sm_queue,
            archive: s.archive_enabled,
            archive_retention_days: s.archive_retention_days,
            offline_retention_days: s.offline_retention_days,
            max_roster_items: s.max_roster_items,
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
        if self.server.domains.is_empty() && self.domains.is_empty() {
            return bad("server.domains must name at least one domain".into());
        }
        let mut domains = Vec::new();
        for d in &self.server.domains {
            match xmpp::BareJid::domain_only(d) {
                Ok(j) => domains.push(j.domain().to_owned()),
                Err(e) => return bad(format!("server.domains: `{d}` is not a valid domain ({e})")),
            }
        }
        let mut domain_settings = Vec::new();
        for e in &self.domains {
            let name = match session::domains::parse_domain(&e.name) {
                Ok(n) => n,
                Err(err) => return bad(format!("[[domain]]: {err}")),
            };
            if domain_settings.iter().any(|(n, _)| *n == name) {
                return bad(format!("[[domain]]: `{name}` is listed twice"));
            }
            if e.archive_retention_days == Some(0)
                || e.max_sessions_per_account == Some(0)
                || e.offline_quota == Some(0)
            {
                return bad(format!(
                    "[[domain]] {name}: archive_retention_days, max_sessions_per_account and offline_quota must be at least 1 (leave them unset for the server default)"
                ));
            }
            domains.push(name.clone());
            domain_settings.push((name, e.settings()));
        }
        domains.sort();
        domains.dedup();
        if self.server.domain_poll_secs == 0 || self.tls.reload_secs == 0 {
            return bad("server.domain_poll_secs and tls.reload_secs must be at least 1".into());
        }
        if let Some(dir) = &self.tls.cert_dir
            && !dir.is_dir()
        {
            return bad(format!(
                "tls.cert_dir: {} is not a directory",
                dir.display()
            ));
        }
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
        let edge = roles.iter().any(|r| matches!(r, Role::All | Role::Edge));
        if edge && c2s.is_none() && c2s_tls.is_none() {
            return bad("listen: at least one of c2s and c2s_tls must be set".into());
        }
        let cluster = if roles.contains(&Role::All) {
            if roles.len() > 1 {
                return bad("server.roles: `all` cannot be combined with other roles".into());
            }
            None
        } else {
            Some(self.cluster.validate(&roles)?)
        };
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
        if l.max_elements < 16 || l.max_text_bytes == 0 || l.max_held_bytes < l.max_stanza_bytes {
            return bad(format!(
                "limits.max_elements must be at least 16, max_text_bytes positive and max_held_bytes at least max_stanza_bytes ({})",
                l.max_stanza_bytes
            ));
        }
        let p = &l.prelogin;
        if p.max_stanza_bytes < 10_000 {
            return bad(format!(
                "limits.prelogin.max_stanza_bytes must be at least 10000 (RFC 6120 §13.12), not {}",
                p.max_stanza_bytes
            ));
        }
        if p.max_depth < 4 || p.max_attrs < 8 || p.max_elements < 16 || p.max_text_bytes == 0 {
            return bad("limits.prelogin: max_depth must be at least 4, max_attrs at least 8, max_elements at least 16 and max_text_bytes positive".into());
        }
        if p.max_held_bytes < p.max_stanza_bytes {
            return bad(
                "limits.prelogin.max_held_bytes must be at least limits.prelogin.max_stanza_bytes"
                    .into(),
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
        if self.storage.backend == StorageBackend::Scylla {
            self.storage.scylla(&self.session)?;
        }
        if self.session.archive_retention_days == Some(0)
            || self.session.offline_retention_days == Some(0)
        {
            return bad("session.archive_retention_days and offline_retention_days must be at least 1 (leave them unset to keep forever)".into());
        }
        if self.session.offline_quota == 0
            || self.session.offline_quota_bytes == 0
            || self.session.max_resources == 0
        {
            return bad(
                "session.offline_quota, session.offline_quota_bytes and session.max_resources must be positive"
                    .into(),
            );
        }
        let it = self.auth.scram_iterations;
        if !(xmpp::scram::MIN_ITERATIONS..=xmpp::scram::MAX_CLIENT_ITERATIONS).contains(&it) {
            return bad(format!(
                "auth.scram_iterations must be between {} (RFC 7677) and {}, not {it}",
                xmpp::scram::MIN_ITERATIONS,
                xmpp::scram::MAX_CLIENT_ITERATIONS
            ));
        }
        if self.session.max_roster_items == 0 {
            return bad("session.max_roster_items must be positive".into());
        }
        self.admin.validate()?;
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
            domain_settings,
            roles,
            c2s,
            c2s_tls,
            ops_http,
            cluster,
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
            tree_limits: xmpp::parser::TreeLimits {
                max_elements: l.max_elements,
                max_text_bytes: l.max_text_bytes,
                max_held_bytes: l.max_held_bytes,
            },
            prelogin_limits: xmpp::parser::Limits {
                // Never more than a bound stream may send.
                max_stanza_bytes: l.prelogin.max_stanza_bytes.min(l.max_stanza_bytes),
                max_depth: l.prelogin.max_depth,
                max_attrs: l.prelogin.max_attrs,
            },
            prelogin_tree_limits: xmpp::parser::TreeLimits {
                max_elements: l.prelogin.max_elements,
                max_text_bytes: l.prelogin.max_text_bytes,
                max_held_bytes: l.prelogin.max_held_bytes,
            },
            ip_caps: edge::IpCapConfig {
                max_per_ip: l.max_connections_per_ip,
                max_unauthenticated_per_ip: l.max_unauthenticated_per_ip,
                exempt_loopback: l.per_ip_exempt_loopback,
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
            scram_iterations: self.auth.scram_iterations,
            ..edge::EdgeConfig::default()
        }
    }
}

/// The checked, normalized parts of a config.
#[derive(Clone, Debug)]
pub struct Validated {
    /// Every configured domain (`server.domains` and `[[domain]]`), prepared and sorted.
    pub domains: Vec<String>,
    /// The settings of the `[[domain]]` tables (other configured domains use the defaults).
    pub domain_settings: Vec<(String, storage::DomainSettings)>,
    pub roles: Vec<Role>,
    pub c2s: Option<SocketAddr>,
    pub c2s_tls: Option<SocketAddr>,
    pub ops_http: Option<SocketAddr>,
    /// Set when this process runs cluster roles (not `all`).
    pub cluster: Option<ClusterValidated>,
}

/// The checked cluster settings.
#[derive(Clone, Debug)]
pub struct ClusterValidated {
    pub node_id: cluster::NodeId,
    /// gRPC listen address (session and router roles).
    pub grpc: Option<SocketAddr>,
    /// The address other nodes dial (session and router roles).
    pub advertise: String,
    pub members: Vec<cluster::Member>,
    pub heartbeat: std::time::Duration,
    pub ttl: std::time::Duration,
    /// Mutual TLS for every cluster gRPC server and client, from `[cluster.tls]`.
    pub tls: Option<proto::ClusterTls>,
}

impl ClusterSection {
    fn validate(&self, roles: &[Role]) -> Result<ClusterValidated, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let node = match &self.node_id {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => hostname().ok_or_else(|| {
                ConfigError::Invalid(
                    "cluster.node_id is not set and the host name is unknown; set it, or pass --node-id".into(),
                )
            })?,
        };
        let node_id = cluster::NodeId::new(&node)
            .map_err(|e| ConfigError::Invalid(format!("cluster.node_id `{node}`: {e}")))?;
        if !(self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("redis+cluster://")
            || self.redis_url.starts_with("redis+unix://"))
        {
            return bad(format!(
                "cluster.redis_url: `{}` must start with redis://, redis+cluster:// or redis+unix://",
                self.redis_url
            ));
        }
        if roles.contains(&Role::Session) && roles.contains(&Role::Router) {
            return bad("server.roles: run the session and router roles in separate processes (or use `all`)".into());
        }
        let serves_grpc = roles
            .iter()
            .any(|r| matches!(r, Role::Session | Role::Router));
        let grpc = if serves_grpc {
            Some(self.grpc.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "cluster.grpc: `{}` is not an address like 0.0.0.0:7400",
                    self.grpc
                ))
            })?)
        } else {
            None
        };
        let advertise = match (&self.advertise, grpc) {
            (Some(a), _) if !a.trim().is_empty() => {
                let a = a.trim();
                if a.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return bad(format!("cluster.advertise: `{a}` must be host:port"));
                }
                a.to_owned()
            }
            (_, Some(g)) if !g.ip().is_unspecified() => g.to_string(),
            (_, Some(g)) => {
                return bad(format!(
                    "cluster.advertise must be set when cluster.grpc listens on the unspecified address {g} (pass --advertise or RELAIS_ADVERTISE, e.g. the Pod IP)"
                ));
            }
            (_, None) => format!("{node}:0"),
        };
        let mut members = Vec::new();
        for m in &self.members {
            let id = cluster::NodeId::new(&m.id)
                .map_err(|e| ConfigError::Invalid(format!("cluster.members id `{}`: {e}", m.id)))?;
            let role = m.role.parse::<cluster::Role>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "cluster.members `{}`: role `{}` must be edge, session or router",
                    m.id, m.role
                ))
            })?;
            members.push(cluster::Member::new(id, role, m.addr.clone()));
        }
        if self.membership == MembershipSource::Static
            && !members.iter().any(|m| m.role == cluster::Role::Session)
        {
            return bad("cluster.membership = \"static\" needs at least one session member in cluster.members".into());
        }
        if self.heartbeat_ms == 0 || self.ttl_ms <= self.heartbeat_ms {
            return bad(
                "cluster.ttl_ms must be longer than a non-zero cluster.heartbeat_ms".into(),
            );
        }
        let tls = match &self.tls {
            Some(t) => Some(
                proto::ClusterTls::load(&t.ca, &t.cert, &t.key, t.server_name.trim())
                    .map_err(|e| ConfigError::Invalid(format!("cluster.tls: {e}")))?,
            ),
            None => None,
        };
        if let Some(g) = grpc
            && tls.is_none()
            && !g.ip().is_loopback()
            && !self.insecure_private_network
        {
            return bad(format!(
                "cluster.grpc listens on {g}, which is not a loopback address, without [cluster.tls]: \
                 cluster gRPC carries credentials and stanzas, and anyone who reaches the port could \
                 attach sessions. Set [cluster.tls] ca, cert and key (mutual TLS), or set \
                 cluster.insecure_private_network = true if every host on this network is trusted"
            ));
        }
        Ok(ClusterValidated {
            node_id,
            grpc,
            advertise,
            members,
            tls,
            heartbeat: std::time::Duration::from_millis(self.heartbeat_ms),
            ttl: std::time::Duration::from_millis(self.ttl_ms),
        })
    }
}

fn hostname() -> Option<String> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.trim().is_empty()
    {
        return Some(h.trim().to_owned());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
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
        // A session node listening on every address must say where others reach it.
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.advertise"), "{err}");
        c.cluster.advertise = Some("10.0.0.5:7400".into());
        c.cluster.node_id = Some("node-1".into());
        c.cluster.insecure_private_network = true;
        let v = c.validate().unwrap();
        assert_eq!(v.roles, [Role::Edge, Role::Session]);
        assert_eq!(v.cluster.unwrap().advertise, "10.0.0.5:7400");
        c.server.roles = vec!["session,router".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("separate processes")
        );
        c.server.roles = vec!["all,edge".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cannot be combined")
        );
    }

    #[test]
    fn cluster_grpc_off_loopback_needs_tls_or_the_explicit_opt_out() {
        let mut c = Config::parse(
            "[server]\nroles = [\"router\"]\n[cluster]\nnode_id = \"r1\"\ngrpc = \"10.1.2.3:7400\"\n",
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("[cluster.tls]"), "{err}");
        assert!(err.contains("insecure_private_network"), "{err}");
        // Loopback stays reachable from this host only.
        c.cluster.grpc = "127.0.0.1:7400".into();
        assert!(c.validate().is_ok());
        c.cluster.grpc = "10.1.2.3:7400".into();
        let opt_out = Config::parse(
            "[server]\nroles = [\"router\"]\n[cluster]\nnode_id = \"r1\"\ngrpc = \"10.1.2.3:7400\"\n\
             insecure_private_network = true\n",
        )
        .unwrap();
        let v = opt_out.validate().unwrap();
        assert!(v.cluster.unwrap().tls.is_none());
        // [cluster.tls] is typed: unknown keys and missing files are named.
        let err =
            Config::parse("[cluster.tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\ncrt = \"d\"\n")
                .unwrap_err();
        assert!(err.contains("unknown field `crt`"), "{err}");
        c.cluster.tls = Some(ClusterTlsSection {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/node.pem".into(),
            key: "/nonexistent/node.key".into(),
            server_name: default_cluster_server_name(),
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster.tls") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        // The standalone server is unaffected.
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn prelogin_limits_and_ip_caps() {
        let c = Config::parse(
            "[limits]\nmax_stanza_bytes = 12000\nmax_elements = 500\nmax_connections_per_ip = 7\n\
             max_unauthenticated_per_ip = 3\nper_ip_exempt_loopback = true\n\
             [limits.prelogin]\nmax_elements = 40\nmax_text_bytes = 1000\n",
        )
        .unwrap();
        c.validate().unwrap();
        let e = c.edge_config();
        assert_eq!(e.tree_limits.max_elements, 500);
        assert_eq!(e.prelogin_tree_limits.max_elements, 40);
        assert_eq!(e.prelogin_tree_limits.max_text_bytes, 1000);
        // The pre-login stanza size never exceeds the bound one.
        assert_eq!(e.prelogin_limits.max_stanza_bytes, 12000);
        assert_eq!(
            e.ip_caps,
            edge::IpCapConfig {
                max_per_ip: 7,
                max_unauthenticated_per_ip: 3,
                exempt_loopback: true,
            }
        );
        // Defaults: tighter before login, and caps on.
        let d = Config::default().edge_config();
        assert!(d.prelogin_tree_limits.max_elements < d.tree_limits.max_elements);
        assert!(d.prelogin_limits.max_stanza_bytes < d.limits.max_stanza_bytes);
        assert!(d.ip_caps.max_unauthenticated_per_ip > 0 && !d.ip_caps.exempt_loopback);
        let err = Config::parse("[limits.prelogin]\nmax_stanzas = 1\n").unwrap_err();
        assert!(err.contains("max_stanzas"), "{err}");
        for bad in [
            "[limits.prelogin]\nmax_elements = 2\n",
            "[limits.prelogin]\nmax_stanza_bytes = 4096\n",
            "[limits]\nmax_held_bytes = 1000\n",
        ] {
            let err = Config::parse(bad)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("limits."), "{bad}: {err}");
        }
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
    fn domain_tables_and_runtime_keys_are_validated() {
        let c = Config::parse(
            "[server]\ndomains = [\"a.example\"]\ndomain_poll_secs = 5\n[tls]\nreload_secs = 3\n\
             [[domain]]\nname = \"B.Example\"\nregistration_open = true\nmax_accounts = 10\n",
        )
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.domains, ["a.example", "b.example"]);
        assert_eq!(v.domain_settings.len(), 1);
        assert!(v.domain_settings[0].1.registration_open);
        assert_eq!(v.domain_settings[0].1.max_accounts, Some(10));
        let err = Config::parse("[[domain]]\nname = \"x.example\"\nopen = true\n").unwrap_err();
        assert!(err.contains("unknown field `open`"), "{err}");
        let mut c = Config::default();
        c.domains.push(DomainEntry {
            name: "*.bad".into(),
            ..DomainEntry::default()
        });
        assert!(c.validate().unwrap_err().to_string().contains("[[domain]]"));
        let mut c = Config::default();
        c.tls.cert_dir = Some("/nonexistent-relais-certs".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("tls.cert_dir")
        );
        let mut c = Config::default();
        c.server.domain_poll_secs = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn readme_examples_parse() {
        // Every ```toml block of the README is a valid config (or part of one), and the
        // complete example sets every section.
        let text = include_str!("../../../README.md");
        let mut rest = text;
        let mut blocks = 0;
        let mut complete = false;
        while let Some(i) = rest.find("```toml\n") {
            let body = &rest[i + 8..];
            let end = body.find("```").unwrap();
            let c = Config::parse(&body[..end])
                .unwrap_or_else(|e| panic!("README toml block {blocks}: {e}"));
            complete |= body[..end].contains("[server]")
                && body[..end].contains("[cluster]")
                && body[..end].contains("[storage]");
            if complete {
                assert!(!c.server.domains.is_empty());
            }
            blocks += 1;
            rest = &body[end..];
        }
        assert!(
            blocks >= 2 && complete,
            "{blocks} blocks, complete example: {complete}"
        );
    }
}
