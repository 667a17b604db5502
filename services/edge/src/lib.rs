//! The edge: client connections.
//!
//! It terminates TLS (STARTTLS on the plain port, direct TLS per XEP-0368), parses the XML
//! stream, negotiates SASL and resource binding, and from then on forwards stanzas to the
//! session service through the [`session::SessionService`] trait, writing back whatever the
//! session delivers through the connection's [`session::ClientSink`]. It keeps no user state
//! beyond the live connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub mod certs;
mod conn;
pub mod ipcap;
pub mod limiter;
pub mod metrics;
mod outbox;
mod register;
pub mod sasl;
pub mod tls;

pub use certs::{CertConfig, CertManager};
pub use ipcap::{IpCapConfig, IpCaps};
pub use limiter::{AuthLimiter, AuthLimits};
pub use tls::{CertSource, CertStore, TlsConfigs, TlsError};

/// Tuning of client connections. Every field has a sane default.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Parser limits (stanza size, depth, attributes) once authenticated.
    pub limits: xmpp::parser::Limits,
    /// Elements, text and held bytes per stanza once authenticated.
    pub tree_limits: xmpp::parser::TreeLimits,
    /// Parser limits before SASL success (tighter: only negotiation happens there).
    pub prelogin_limits: xmpp::parser::Limits,
    pub prelogin_tree_limits: xmpp::parser::TreeLimits,
    /// Concurrent connections per client address, and unauthenticated ones.
    pub ip_caps: IpCapConfig,
    /// A connection that has not bound a resource within this time is closed.
    pub auth_timeout: Duration,
    /// After this long with nothing received, the server pings the client (XEP-0199).
    pub ping_interval: Duration,
    /// A pinged client that sends nothing for this long is closed as dead.
    pub ping_timeout: Duration,
    /// After this long with nothing sent, the server sends a whitespace keepalive.
    pub keepalive_interval: Duration,
    /// The most open client connections; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Sustained read rate per connection, bytes per second. Past it reading pauses
    /// (backpressure through TCP), it does not disconnect.
    pub read_rate: u32,
    /// Bytes a connection may read in a burst before the rate applies.
    pub read_burst: u32,
    /// Failed SASL attempts on one stream before it is closed.
    pub max_auth_attempts: u32,
    /// Stanzas queued towards one client before it counts as too slow.
    pub outbound_queue: usize,
    /// Offer SASL PLAIN (always only over TLS).
    pub allow_plain: bool,
    pub auth_limits: AuthLimits,
    /// PBKDF2 iterations of new SCRAM credentials (registration) and the count below which a
    /// PLAIN login re-derives the stored ones.
    pub scram_iterations: u32,
    /// How long a closing connection may take to flush what is queued.
    pub write_timeout: Duration,
    /// Drain: on shutdown, send `<see-other-host/>` naming this host (another edge or the
    /// load balancer) instead of `<system-shutdown/>`.
    pub see_other_host: Option<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            limits: xmpp::parser::Limits::default(),
            tree_limits: xmpp::parser::TreeLimits::bound(),
            prelogin_limits: xmpp::parser::Limits::prelogin(),
            prelogin_tree_limits: xmpp::parser::TreeLimits::prelogin(),
            ip_caps: IpCapConfig::default(),
            auth_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(180),
            ping_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(60),
            max_connections: 20_000,
            read_rate: 64 * 1024,
            read_burst: 512 * 1024,
            max_auth_attempts: 3,
            outbound_queue: 1024,
            allow_plain: true,
            auth_limits: AuthLimits::default(),
            scram_iterations: xmpp::scram::DEFAULT_ITERATIONS,
            write_timeout: Duration::from_secs(10),
            see_other_host: None,
        }
    }
}

/// What every connection of an edge shares.
pub struct EdgeContext {
    pub config: EdgeConfig,
    domains: Arc<session::Domains>,
    pub tls: TlsConfigs,
    pub accounts: Arc<dyn storage::AccountStore>,
    pub sessions: Arc<dyn session::SessionService>,
    pub limiter: AuthLimiter,
    /// XEP-0077 in-band registration attempts per network (IPv4 address, IPv6 /64): past
    /// the free allowance of the limits (3 per 10 minutes by default) further ones are
    /// refused, whether the earlier ones succeeded or not.
    pub registrations: AuthLimiter,
    /// Open connections per client address, shared by every listener of this edge.
    pub ip_caps: Arc<IpCaps>,
}

impl EdgeContext {
    pub fn new(
        config: EdgeConfig,
        domains: impl IntoIterator<Item = String>,
        tls: TlsConfigs,
        accounts: Arc<dyn storage::AccountStore>,
        sessions: Arc<dyn session::SessionService>,
    ) -> Arc<Self> {
        Self::with_registry(
            config,
            session::Domains::from_names(domains),
            tls,
            accounts,
            sessions,
        )
    }

    /// An edge serving the domains of `registry`, which may change while it runs: streams
    /// for a domain that is no longer hosted and not yet bound end with `<host-gone/>`.
    pub fn with_registry(
        config: EdgeConfig,
        domains: Arc<session::Domains>,
        tls: TlsConfigs,
        accounts: Arc<dyn storage::AccountStore>,
        sessions: Arc<dyn session::SessionService>,
    ) -> Arc<Self> {
        let limiter = AuthLimiter::new(config.auth_limits.clone());
        let registrations = AuthLimiter::new(config.auth_limits.clone());
        let ip_caps = IpCaps::new(config.ip_caps.clone());
        Arc::new(EdgeContext {
            config,
            domains,
            tls,
            accounts,
            sessions,
            limiter,
            registrations,
            ip_caps,
        })
    }

    pub fn hosts(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// The hosted domains this edge serves.
    pub fn domains(&self) -> &Arc<session::Domains> {
        &self.domains
    }

    /// Any hosted domain (for the `from` of a stream we must reject before knowing the target).
    fn any_domain(&self) -> String {
        self.domains
            .snapshot()
            .hosted
            .keys()
            .min()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

/// Which kind of client port a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenMode {
    /// Plain TCP that must be upgraded with STARTTLS before authentication (5222).
    Starttls,
    /// TLS from the first byte (XEP-0368, 5223).
    DirectTls,
}

impl ListenMode {
    fn attrs(self) -> &'static [opentelemetry::KeyValue] {
        static STARTTLS: std::sync::OnceLock<[opentelemetry::KeyValue; 1]> =
            std::sync::OnceLock::new();
        static DIRECT: std::sync::OnceLock<[opentelemetry::KeyValue; 1]> =
            std::sync::OnceLock::new();
        match self {
            ListenMode::Starttls => {
                STARTTLS.get_or_init(|| [opentelemetry::KeyValue::new("listener", "starttls")])
            }
            ListenMode::DirectTls => {
                DIRECT.get_or_init(|| [opentelemetry::KeyValue::new("listener", "direct_tls")])
            }
        }
    }
}

/// Accepts client connections until `shutdown` resolves, then asks every connection to close
/// its stream with `<system-shutdown/>` after flushing what is queued, and waits for all of
/// them to finish. At most `config.max_connections` connections are served at once, and at
/// most `config.ip_caps` from one address: a connection over a per-address cap is answered
/// `<policy-violation/>` (on the STARTTLS port; the direct-TLS port just closes it, rather
/// than paying for a handshake) and closed.
pub async fn serve(
    ctx: Arc<EdgeContext>,
    listener: TcpListener,
    mode: ListenMode,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let m = metrics::get();
        m.connections_accepted.add(1, mode.attrs());
        let ip_permit = match ctx.ip_caps.acquire(peer.ip()) {
            Ok(p) => p,
            Err(refused) => {
                tracing::debug!(%peer, %refused, "connection refused");
                let from = ctx.any_domain();
                conns.spawn(async move {
                    refuse(tcp, mode, &from, refused).await;
                    drop(permit);
                });
                continue;
            }
        };
        let ctx = ctx.clone();
        let stop = stop_rx.clone();
        m.connections_open.add(1, mode.attrs());
        conns.spawn(async move {
            conn::run(ctx, tcp, peer, mode, stop, ip_permit).await;
            metrics::get().connections_open.add(-1, mode.attrs());
            drop(permit);
        });
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(open, ?mode, "listener stopped; draining connections");
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// Answers a connection over a per-address cap: our stream header and
/// `<policy-violation/>` on the STARTTLS port, nothing on the direct-TLS port; then closes.
async fn refuse(
    mut tcp: tokio::net::TcpStream,
    mode: ListenMode,
    from: &str,
    refused: ipcap::Refused,
) {
    use tokio::io::AsyncWriteExt;
    let cond = xmpp::StreamErrorCondition::PolicyViolation;
    metrics::get().stream_errors.add(
        1,
        &[opentelemetry::KeyValue::new("condition", cond.as_str())],
    );
    if mode == ListenMode::Starttls {
        let mut out = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{:032x}' from='{}' version='1.0' xml:lang='en'>",
            xmpp::ns::CLIENT,
            xmpp::ns::STREAM,
            rand::random::<u128>(),
            conn::quick_escape(from),
        )
        .into_bytes();
        out.extend_from_slice(&cond.to_stream_bytes(Some(&refused.to_string())));
        out.extend_from_slice(b"</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            tcp.write_all(&out).await?;
            tcp.shutdown().await
        })
        .await;
    }
}

/// Binds a listener, for callers that only have an address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
