//! One client connection: transport (plain, then TLS), stream negotiation, and the bound
//! stanza loop.
//!
//! A single task owns the connection. It waits on the socket, on the outbound queue the session
//! service delivers into, on its timers and on the shutdown signal. Reads are cancel-safe, so
//! any branch may win. Writes are batched: everything queued is serialized into one buffer and
//! flushed once.
//!
//! XEP-0198 stream management: the session service owns the counters of what it delivered,
//! the unacknowledged queue and the resumption id (so a client can resume through another
//! edge); the edge counts what it received (to answer `<r/>` without a round trip), asks for
//! acknowledgements (`<r/>` at the end of each written batch, at most one outstanding unless
//! [`R_EVERY`] more stanzas went out, and instead of XEP-0199 pings), forwards `<a/>` to the
//! session, and on an unclean loss (socket error or EOF without `</stream:stream>`, write
//! failure or timeout, ping timeout) calls `detach` instead of `close`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use session::{ClientSink, NS_SM, SessionToken, ToClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, Span};
use xmpp::parser::{StreamEvent, StreamHeader, StreamParser};
use xmpp::scram::{ScramHash, ScramServer};
use xmpp::{BareJid, Element, FullJid, StanzaErrorCondition, StreamErrorCondition, ns};

use crate::limiter::Admission;
use crate::outbox::{OutboxReceiver, outbox};
use crate::register::{self, NS_REGISTER};
use crate::sasl::{self, Mechanism, SaslFailure};
use crate::{EdgeContext, ListenMode};

/// How much to try to read at once. The buffer is released while the connection is idle.
const READ_CHUNK: usize = 4096;

/// `<r/>`, written often enough to keep preformatted.
const SM_R: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

/// With stream management, another `<r/>` goes out after this many stanzas even while one is
/// still unanswered.
const R_EVERY: u32 = 5;

/// How a bound connection ended, decided by the first thing that ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client closed its stream, or we sent a stream error: the session ends.
    Clean,
    /// The transport failed under us: a resumable session waits for `<resume/>`.
    Lost,
}

/// The edge's half of XEP-0198 on this connection.
struct SmConn {
    /// The session can be resumed (the edge detaches it on an unclean loss).
    resumable: bool,
    /// Stanzas received from the client since `<enable/>` (or the session's count at resume),
    /// modulo 2^32: the `h` of our `<a/>`.
    received: u32,
    /// Stanzas written since our last `<r/>`.
    unrequested: u32,
    /// An `<r/>` is out and no `<a/>` came back yet.
    r_out: bool,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Transport {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read_buf(buf).await,
            Transport::Tls(s) => s.read_buf(buf).await,
            Transport::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Transport::Plain(s) => s.shutdown().await,
            Transport::Tls(s) => s.shutdown().await,
            Transport::Gone => Ok(()),
        };
    }

    fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Waits until the socket is readable, without holding a buffer while waiting.
    async fn ready(&self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.readable().await,
            Transport::Tls(s) => s.get_ref().0.readable().await,
            Transport::Gone => Ok(()),
        }
    }
}

/// Reads what is available. Waits for readiness first (unless the TLS layer may hold plaintext
/// already), so an idle connection holds no read buffer.
async fn read_some(transport: &mut Transport, buf: &mut Vec<u8>, more: bool) -> io::Result<usize> {
    if !more {
        transport.ready().await?;
    }
    buf.reserve(READ_CHUNK);
    transport.read_buf(buf).await
}

/// Where the stream negotiation stands.
enum Phase {
    /// Waiting for the client's stream header.
    Header,
    /// Features sent; waiting for `<starttls/>`, `<auth/>` or, once authenticated, `<iq/>` bind.
    Features,
    /// In a SASL exchange.
    Sasl(Box<SaslState>),
    /// A resource is bound; stanzas flow.
    Bound,
}

struct SaslState {
    mech: Mechanism,
    scram: Option<ScramServer>,
    /// The account being authenticated, once known.
    jid: Option<BareJid>,
    step: u8,
}

/// What handling an event decided.
enum Flow {
    Continue,
    /// The stream must restart (after STARTTLS or SASL success): stop processing buffered
    /// events; the parser has been reset.
    Restart,
    /// Close the connection (any stream error has been queued already).
    Close,
}

struct Conn {
    ctx: Arc<EdgeContext>,
    peer: SocketAddr,
    transport: Transport,
    parser: StreamParser,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    phase: Phase,
    /// Whether our stream header for the current stream has been written.
    header_sent: bool,
    domain: String,
    authenticated: Option<BareJid>,
    auth_failures: u32,
    exporter: Option<Vec<u8>>,
    bound: Option<(FullJid, SessionToken)>,
    rx: Option<OutboxReceiver>,
    last_in: Instant,
    last_out: Instant,
    ping: Option<(String, Instant)>,
    ping_seq: u32,
    tokens: f64,
    tokens_at: Instant,
    paused_until: Option<Instant>,
    started: Instant,
    /// The TLS layer may hold decrypted bytes we have not read yet.
    more: bool,
    /// XEP-0198, once enabled or resumed.
    sm: Option<SmConn>,
    ending: Option<End>,
    /// The `edge.deliver` spans of the stanzas in `wbuf`, ended once it is written (empty,
    /// and unallocated, without a tracing exporter).
    delivering: Vec<Span>,
    /// Changes of the hosted domains, followed until the stream is bound (afterwards the
    /// session service ends a removed domain's sessions).
    hosted: Option<watch::Receiver<Arc<session::DomainsSnapshot>>>,
    /// This connection's place in the per-address caps (unauthenticated until SASL success).
    ip_permit: crate::ipcap::Permit,
}

pub(crate) async fn run(
    ctx: Arc<EdgeContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    mode: ListenMode,
    mut stop: watch::Receiver<bool>,
    ip_permit: crate::ipcap::Permit,
) {
    let _ = tcp.set_nodelay(true);
    let now = Instant::now();
    // Until SASL success the tighter pre-login limits apply (`sasl_success` switches).
    let parser = StreamParser::new(ctx.config.prelogin_limits.clone())
        .with_tree_limits(ctx.config.prelogin_tree_limits.clone());
    let burst = f64::from(ctx.config.read_burst);
    let hosted = Some(ctx.domains().subscribe());
    let mut c = Conn {
        ctx,
        peer,
        transport: Transport::Plain(tcp),
        parser,
        rbuf: Vec::new(),
        wbuf: Vec::new(),
        phase: Phase::Header,
        header_sent: false,
        domain: String::new(),
        authenticated: None,
        auth_failures: 0,
        exporter: None,
        bound: None,
        rx: None,
        last_in: now,
        last_out: now,
        ping: None,
        ping_seq: 0,
        tokens: burst,
        tokens_at: now,
        paused_until: None,
        started: now,
        more: false,
        sm: None,
        ending: None,
        delivering: Vec::new(),
        hosted,
        ip_permit,
    };
    if mode == ListenMode::DirectTls && !Box::pin(c.start_tls(false)).await {
        return;
    }
    c.main_loop(&mut stop).await;
    if let Some((jid, token)) = c.bound.take() {
        if c.ending == Some(End::Lost) && c.sm.as_ref().is_some_and(|sm| sm.resumable) {
            tracing::debug!(peer = %c.peer, jid = %jid, "connection lost; detaching the session");
            c.ctx.sessions.detach(&jid, token).await;
        } else {
            c.ctx.sessions.close(&jid, token).await;
        }
    }
    c.transport.shutdown().await;
    tracing::debug!(peer = %c.peer, "connection closed");
}

impl Conn {
    async fn main_loop(&mut self, stop: &mut watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                self.drain_outbound();
                self.shutdown_error();
                self.flush().await;
                return;
            }
            let deadline = self.next_deadline();
            let paused = self.paused_until;
            let read_enabled = paused.is_none();
            let rx = self.rx.as_mut();
            let has_rx = rx.is_some();
            let hosted = self.hosted.as_mut();
            let follow_hosted = hosted.is_some();
            tokio::select! {
                biased;
                r = stop.changed() => {
                    if r.is_err() {
                        // The listener is gone: shut down as if told to.
                        self.drain_outbound();
                        self.shutdown_error();
                        self.flush().await;
                        return;
                    }
                    continue;
                }
                item = async { match rx { Some(rx) => rx.recv().await, None => None } }, if has_rx => {
                    match item {
                        Some((item, span)) => {
                            let close = self.push_outbound(item, span);
                            let close = self.drain_outbound() || close;
                            if !close {
                                self.request_ack();
                            }
                            if !self.flush().await || close {
                                return;
                            }
                        }
                        None => self.rx = None,
                    }
                }
                r = async { match hosted { Some(h) => h.changed().await, None => Ok(()) } }, if follow_hosted => {
                    if r.is_err() {
                        self.hosted = None;
                        continue;
                    }
                    if let Some(h) = self.hosted.as_mut() {
                        h.borrow_and_update();
                    }
                    if self.bound.is_none() && !self.domain.is_empty() && !self.ctx.hosts(&self.domain) {
                        // RFC 6120 §4.9.3.5: the domain is no longer served here.
                        tracing::info!(peer = %self.peer, domain = %self.domain, "domain removed; closing an unbound stream");
                        self.stream_error(StreamErrorCondition::HostGone, None);
                        self.flush().await;
                        return;
                    }
                }
                r = read_some(&mut self.transport, &mut self.rbuf, self.more), if read_enabled => {
                    match r {
                        Ok(0) | Err(_) => {
                            self.end(End::Lost);
                            return;
                        }
                        Ok(n) => {
                            self.more = n >= READ_CHUNK;
                            self.last_in = Instant::now();
                            self.ping = None;
                            self.charge_rate(n);
                            let flow = self.on_bytes().await;
                            if matches!(flow, Flow::Continue) {
                                self.request_ack();
                            }
                            let ok = self.flush().await;
                            if matches!(flow, Flow::Close) || !ok {
                                return;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(paused.unwrap_or(deadline)) => {
                    if paused.is_some() {
                        self.paused_until = None;
                        continue;
                    }
                    if !self.on_timer().await {
                        self.flush().await;
                        return;
                    }
                    if !self.flush().await {
                        return;
                    }
                }
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 && self.parser.buffered() == 0 {
                // Idle between reads: give the memory back.
                self.rbuf = Vec::new();
                self.parser.shrink();
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let cfg = &self.ctx.config;
        if self.bound.is_none() {
            return self.started + cfg.auth_timeout;
        }
        let ping = match &self.ping {
            Some((_, sent)) => *sent + cfg.ping_timeout,
            None => self.last_in + cfg.ping_interval,
        };
        ping.min(self.last_out + cfg.keepalive_interval)
    }

    /// Timers: unauthenticated timeout, pings, whitespace keepalive. False closes.
    async fn on_timer(&mut self) -> bool {
        let now = Instant::now();
        let cfg = &self.ctx.config;
        let Some((jid, _)) = &self.bound else {
            if now >= self.started + cfg.auth_timeout {
                tracing::debug!(peer = %self.peer, "negotiation timed out");
                self.stream_error(StreamErrorCondition::ConnectionTimeout, None);
                return false;
            }
            return true;
        };
        if let Some((_, sent)) = &self.ping {
            if now >= *sent + cfg.ping_timeout {
                tracing::debug!(peer = %self.peer, "ping timed out");
                self.end(End::Lost);
                self.stream_error(StreamErrorCondition::ConnectionTimeout, None);
                return false;
            }
        } else if now >= self.last_in + cfg.ping_interval
            && let Some(sm) = &mut self.sm
        {
            // Under stream management an `<r/>` probes the client without adding a stanza
            // the session would have to count; any answer (or any input) clears it.
            sm.r_out = true;
            sm.unrequested = 0;
            self.wbuf.extend_from_slice(SM_R);
            self.ping = Some((String::new(), now));
        } else if now >= self.last_in + cfg.ping_interval {
            self.ping_seq = self.ping_seq.wrapping_add(1);
            let id = format!("relais-ping-{}", self.ping_seq);
            let iq = Element::new("iq", ns::CLIENT)
                .attr("type", "get")
                .attr("id", id.clone())
                .attr("from", self.domain.clone())
                .attr("to", jid.as_str())
                .child(Element::new("ping", ns::PING));
            iq.write_to(&mut self.wbuf, ns::CLIENT);
            self.ping = Some((id, now));
        }
        if now >= self.last_out + cfg.keepalive_interval && self.wbuf.is_empty() {
            self.wbuf.push(b' ');
        }
        true
    }

    fn charge_rate(&mut self, n: usize) {
        let cfg = &self.ctx.config;
        let now = Instant::now();
        let rate = f64::from(cfg.read_rate.max(1));
        let elapsed = now.duration_since(self.tokens_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(cfg.read_burst));
        self.tokens_at = now;
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-self.tokens / rate);
            self.paused_until = Some(now + wait);
        }
    }

    /// Writes what is buffered. False when the peer is gone or too slow.
    async fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        let data = std::mem::take(&mut self.wbuf);
        let timeout = self.ctx.config.write_timeout;
        let ok = matches!(
            tokio::time::timeout(timeout, self.transport.write_all(&data)).await,
            Ok(Ok(()))
        );
        if !ok {
            self.end(End::Lost);
        }
        // The deliveries in this batch are written (or lost with the connection).
        drop(std::mem::take(&mut self.delivering));
        self.last_out = Instant::now();
        // The buffer is not kept: an idle connection holds no write memory, and one
        // allocation per flushed batch is cheap next to the write itself.
        drop(data);
        ok
    }

    /// Serializes one outbound item. True when the connection must close.
    fn push_outbound(&mut self, item: ToClient, span: Span) -> bool {
        if !span.is_disabled() {
            self.delivering.push(span);
        }
        match item {
            ToClient::Stanza(el) => {
                if let Some(sm) = &mut self.sm
                    && el.ns() == ns::CLIENT
                    && matches!(el.name(), "message" | "presence" | "iq")
                {
                    sm.unrequested = sm.unrequested.saturating_add(1);
                }
                if let Some(kind) = crate::metrics::StanzaKind::of(&el) {
                    crate::metrics::get().stanzas_out.add(1, kind.attrs());
                }
                el.write_to(&mut self.wbuf, ns::CLIENT);
                false
            }
            ToClient::Close(cond) => {
                self.stream_error(cond, None);
                // The session already dropped us (for example on conflict).
                self.bound = None;
                true
            }
        }
    }

    /// Moves everything already queued into the write buffer. True when a close was queued.
    fn drain_outbound(&mut self) -> bool {
        let mut close = false;
        while let Some(rx) = self.rx.as_mut() {
            match rx.try_recv() {
                Some((item, span)) => {
                    if self.push_outbound(item, span) {
                        close = true;
                        break;
                    }
                }
                None => break,
            }
        }
        close
    }

    /// Records how the connection ends, unless that was decided already.
    fn end(&mut self, how: End) {
        self.ending.get_or_insert(how);
    }

    /// XEP-0198: asks the client to acknowledge what was written since the last request, at
    /// the end of a batch. Cheap: one `<r/>` outstanding at a time, unless `R_EVERY` more
    /// stanzas went out meanwhile.
    fn request_ack(&mut self) {
        let Some(sm) = &mut self.sm else {
            return;
        };
        if sm.unrequested > 0 && (!sm.r_out || sm.unrequested >= R_EVERY) {
            sm.unrequested = 0;
            sm.r_out = true;
            self.wbuf.extend_from_slice(SM_R);
        }
    }

    /// Queues a stream error and the stream close (with our header first if not yet sent).
    /// The stream error of a drain: `<see-other-host/>` when the edge knows where clients
    /// should go, else `<system-shutdown/>`.
    fn shutdown_error(&mut self) {
        let Some(host) = self.ctx.config.see_other_host.clone() else {
            self.stream_error(StreamErrorCondition::SystemShutdown, None);
            return;
        };
        self.end(End::Clean);
        crate::metrics::get().stream_errors.add(
            1,
            &[opentelemetry::KeyValue::new(
                "condition",
                StreamErrorCondition::SeeOtherHost.as_str(),
            )],
        );
        if !self.header_sent {
            let domain = if self.domain.is_empty() {
                self.ctx.any_domain()
            } else {
                self.domain.clone()
            };
            self.write_header(&domain);
        }
        self.wbuf
            .extend_from_slice(&xmpp::error::see_other_host_bytes(&host));
        self.wbuf.extend_from_slice(b"</stream:stream>");
    }

    fn stream_error(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        self.end(End::Clean);
        crate::metrics::get().stream_errors.add(
            1,
            &[opentelemetry::KeyValue::new("condition", cond.as_str())],
        );
        if !self.header_sent {
            let domain = if self.domain.is_empty() {
                self.ctx.any_domain()
            } else {
                self.domain.clone()
            };
            self.write_header(&domain);
        }
        self.wbuf.extend_from_slice(&cond.to_stream_bytes(text));
        self.wbuf.extend_from_slice(b"</stream:stream>");
    }

    fn write_header(&mut self, from: &str) {
        let id: u128 = rand::rng().random();
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{:032x}' from='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            id,
            quick_escape(from),
        );
        self.wbuf.extend_from_slice(header.as_bytes());
        self.header_sent = true;
    }

    async fn on_bytes(&mut self) -> Flow {
        self.parser.feed(&self.rbuf);
        self.rbuf.clear();
        loop {
            let ev = match self.parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "stream error from parser");
                    self.stream_error(e.condition(), None);
                    return Flow::Close;
                }
            };
            match self.on_event(ev).await {
                Flow::Continue => {}
                Flow::Restart => return Flow::Continue,
                Flow::Close => return Flow::Close,
            }
        }
    }

    async fn on_event(&mut self, ev: StreamEvent) -> Flow {
        match ev {
            StreamEvent::Open(header) => self.on_header(header),
            StreamEvent::Close => {
                self.end(End::Clean);
                self.drain_outbound();
                self.wbuf.extend_from_slice(b"</stream:stream>");
                Flow::Close
            }
            StreamEvent::Stanza(el) => match &self.phase {
                Phase::Header => {
                    self.stream_error(StreamErrorCondition::NotWellFormed, None);
                    Flow::Close
                }
                Phase::Features if el.ns() == NS_SM && self.authenticated.is_some() => {
                    self.on_sm_unbound(el).await
                }
                // Negotiation happens once per connection: boxing its futures keeps the
                // connection's own future (what an idle session holds) small.
                Phase::Features => Box::pin(self.on_negotiation(el)).await,
                Phase::Sasl(_) => Box::pin(self.on_sasl(el)).await,
                Phase::Bound if el.ns() == NS_SM => self.on_sm(el).await,
                Phase::Bound => self.on_stanza(el).await,
            },
        }
    }

    fn on_header(&mut self, header: StreamHeader) -> Flow {
        if !matches!(self.phase, Phase::Header) {
            // A second header on the same stream is not well-formed XML.
            self.stream_error(StreamErrorCondition::NotWellFormed, None);
            return Flow::Close;
        }
        let to = header
            .get("to")
            .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let to = to.filter(|d| self.ctx.hosts(d));
        if let Some(d) = &to {
            self.domain.clone_from(d);
        }
        if header.default_ns != ns::CLIENT {
            self.stream_error(StreamErrorCondition::InvalidNamespace, None);
            return Flow::Close;
        }
        let Some(domain) = to else {
            self.stream_error(StreamErrorCondition::HostUnknown, None);
            return Flow::Close;
        };
        match header.get("version") {
            Some(v) if v.split('.').next() == Some("1") => {}
            _ => {
                self.stream_error(StreamErrorCondition::UnsupportedVersion, None);
                return Flow::Close;
            }
        }
        if let Some(auth) = &self.authenticated
            && auth.domain() != domain
        {
            // The restarted stream must address the domain we authenticated for.
            self.stream_error(StreamErrorCondition::HostUnknown, None);
            return Flow::Close;
        }
        self.write_header(&domain);
        let features = self.features();
        features.write_to(&mut self.wbuf, ns::CLIENT);
        self.phase = Phase::Features;
        Flow::Continue
    }

    fn features(&self) -> Element {
        let mut f = Element::new("features", ns::STREAM);
        if !self.transport.is_tls() {
            f.append_child(
                Element::new("starttls", ns::TLS).child(Element::new("required", ns::TLS)),
            );
        } else if self.authenticated.is_none() {
            let mechs = sasl::offered(self.exporter.is_some(), self.ctx.config.allow_plain);
            for el in sasl::features(&mechs, self.exporter.is_some()) {
                f.append_child(el);
            }
            if self.registration_open() {
                f.append_child(register::feature());
            }
        } else {
            f.append_child(Element::new("bind", ns::BIND));
            f.append_child(
                Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)),
            );
            f.append_child(Element::new("ver", ns::ROSTER_VER));
            f.append_child(Element::new("sub", ns::PRE_APPROVAL));
            f.append_child(Element::new("sm", NS_SM));
        }
        f
    }

    /// Upgrades the transport to TLS. For STARTTLS, `<proceed/>` has been flushed already.
    async fn start_tls(&mut self, starttls: bool) -> bool {
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Gone) else {
            return false;
        };
        let cfg = if starttls {
            self.ctx.tls.starttls.clone()
        } else {
            self.ctx.tls.direct.clone()
        };
        let remaining =
            (self.started + self.ctx.config.auth_timeout).saturating_duration_since(Instant::now());
        let accepted = tokio::time::timeout(remaining, TlsAcceptor::from(cfg).accept(tcp)).await;
        let stream = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "tls handshake failed");
                return false;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "tls handshake timed out");
                return false;
            }
        };
        let conn = stream.get_ref().1;
        if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            // RFC 9266: tls-exporter is only offered where it is safe (TLS 1.3; TLS 1.2
            // would need extended master secret, which the API does not let us confirm).
            let mut out = [0u8; 32];
            if conn
                .export_keying_material(&mut out, crate::tls::EXPORTER_LABEL, None)
                .is_ok()
            {
                self.exporter = Some(out.to_vec());
            }
        }
        self.transport = Transport::Tls(Box::new(stream));
        // The client's first bytes may have arrived with its last handshake message.
        self.more = true;
        self.parser.reset();
        self.phase = Phase::Header;
        self.header_sent = false;
        true
    }

    async fn on_negotiation(&mut self, el: Element) -> Flow {
        if el.is("starttls", ns::TLS) {
            if self.transport.is_tls() {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("tls already active"),
                );
                return Flow::Close;
            }
            Element::new("proceed", ns::TLS).write_to(&mut self.wbuf, ns::CLIENT);
            if !self.flush().await || !self.start_tls(true).await {
                return Flow::Close;
            }
            return Flow::Restart;
        }
        if el.is("auth", ns::SASL) {
            if !self.transport.is_tls() {
                // RFC 6120 §5.3.1: TLS is mandatory here; no SASL before it.
                SaslFailure::EncryptionRequired
                    .to_element()
                    .write_to(&mut self.wbuf, ns::CLIENT);
                return Flow::Continue;
            }
            if self.authenticated.is_some() {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("already authenticated"),
                );
                return Flow::Close;
            }
            return self.on_auth(el).await;
        }
        if self.authenticated.is_some() && el.is("iq", ns::CLIENT) {
            return self.on_bind(el).await;
        }
        if self.authenticated.is_none()
            && self.transport.is_tls()
            && el.is("iq", ns::CLIENT)
            && el.get_child("query", NS_REGISTER).is_some()
        {
            return self.on_register(el).await;
        }
        if el.ns() == ns::CLIENT {
            // A stanza before authentication and binding.
            self.stream_error(StreamErrorCondition::NotAuthorized, None);
        } else {
            self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
        }
        Flow::Close
    }

    async fn on_auth(&mut self, el: Element) -> Flow {
        let name = el.get_attr("mechanism").unwrap_or_default();
        let offered = sasl::offered(self.exporter.is_some(), self.ctx.config.allow_plain);
        let Some(mech) = offered.into_iter().find(|m| m.name() == name) else {
            return self.sasl_fail(SaslFailure::InvalidMechanism, None).await;
        };
        let payload = match sasl::decode_payload(&el) {
            Ok(p) => p,
            Err(f) => return self.sasl_fail(f, None).await,
        };
        let scram = match mech {
            Mechanism::Scram { hash, plus } => Some(sasl::scram_server(
                hash,
                plus,
                self.exporter.clone(),
                self.exporter.is_some(),
                self.ctx.config.scram_iterations,
            )),
            Mechanism::Plain => None,
        };
        self.phase = Phase::Sasl(Box::new(SaslState {
            mech,
            scram,
            jid: None,
            step: 0,
        }));
        if payload.is_empty() {
            // No initial response: ask for it with an empty challenge.
            Element::new("challenge", ns::SASL)
                .text_node("=")
                .write_to(&mut self.wbuf, ns::CLIENT);
            return Flow::Continue;
        }
        self.sasl_step(payload).await
    }

    async fn on_sasl(&mut self, el: Element) -> Flow {
        if el.is("abort", ns::SASL) {
            self.phase = Phase::Features;
            SaslFailure::Aborted
                .to_element()
                .write_to(&mut self.wbuf, ns::CLIENT);
            return Flow::Continue;
        }
        if !el.is("response", ns::SASL) {
            self.stream_error(
                StreamErrorCondition::PolicyViolation,
                Some("sasl exchange in progress"),
            );
            return Flow::Close;
        }
        match sasl::decode_payload(&el) {
            Ok(p) => self.sasl_step(p).await,
            Err(f) => self.sasl_fail(f, None).await,
        }
    }

    /// One step of the exchange in progress.
    async fn sasl_step(&mut self, payload: Vec<u8>) -> Flow {
        let Phase::Sasl(st) = &mut self.phase else {
            return Flow::Close;
        };
        let mech = st.mech;
        let step = st.step;
        st.step = st.step.saturating_add(1);
        match (mech, step) {
            (Mechanism::Plain, 0) => self.plain(payload).await,
            (Mechanism::Scram { hash, .. }, 0) => self.scram_first(hash, payload).await,
            (Mechanism::Scram { .. }, 1) => self.scram_final(payload).await,
            _ => self.sasl_fail(SaslFailure::MalformedRequest, None).await,
        }
    }

    fn account_jid(&self, authcid: &str) -> Option<BareJid> {
        // Clients send the localpart; accept `user@domain` for this stream's domain too.
        let local = match authcid.rsplit_once('@') {
            Some((l, d)) if d.eq_ignore_ascii_case(&self.domain) => l,
            Some(_) => return None,
            None => authcid,
        };
        BareJid::new(Some(local), &self.domain).ok()
    }

    fn check_authzid(&self, authzid: Option<&str>, jid: &BareJid) -> bool {
        match authzid {
            None => true,
            Some(z) => z.parse::<BareJid>().map(|z| &z == jid).unwrap_or(false),
        }
    }

    /// The account an exchange names, its authzid checked, and its stored credentials (`None`
    /// for an unknown account, which fails only at the proof). `Err` carries the failure
    /// already answered.
    async fn account(
        &mut self,
        authcid: &str,
        authzid: Option<&str>,
    ) -> Result<(BareJid, Option<storage::Credentials>), Flow> {
        let Some(jid) = self.account_jid(authcid) else {
            return Err(self.sasl_fail(SaslFailure::NotAuthorized, None).await);
        };
        if !self.check_authzid(authzid, &jid) {
            return Err(self.sasl_fail(SaslFailure::InvalidAuthzid, Some(jid)).await);
        }
        // Brute-force limiter, before the credentials are read and any PBKDF2 runs; the
        // same wait whatever the outcome (see limiter.rs).
        match self.ctx.limiter.admit(self.peer.ip(), jid.as_str()) {
            Admission::Busy => {
                // Counts towards this stream's attempts (so a spinning client is closed),
                // not towards the limiter's failures.
                self.auth_failures += 1;
                crate::metrics::get().auth_throttled.add(1, &[]);
                tracing::info!(peer = %self.peer, account = %jid, "authentication refused: too many attempts from this network");
                return Err(self
                    .sasl_fail_as(SaslFailure::TemporaryAuthFailure, None, false)
                    .await);
            }
            Admission::Wait(delay) => {
                if !delay.is_zero() {
                    // Nothing else happens on an unauthenticated stream, so a plain wait is
                    // fine.
                    self.flush().await;
                    tokio::time::sleep(delay).await;
                }
                crate::metrics::get().auth_checks.add(1, &[]);
            }
        }
        match self.ctx.accounts.get_credentials(&jid).await {
            Ok(creds) => Ok((jid, creds)),
            Err(e) => {
                tracing::warn!(error = %e, "credentials lookup failed");
                Err(self
                    .sasl_fail(SaslFailure::TemporaryAuthFailure, None)
                    .await)
            }
        }
    }

    async fn plain(&mut self, payload: Vec<u8>) -> Flow {
        let msg = match sasl::parse_plain(&payload) {
            Ok(m) => m,
            Err(f) => return self.sasl_fail(f, None).await,
        };
        let (jid, creds) = match self.account(&msg.authcid, msg.authzid.as_deref()).await {
            Ok(x) => x,
            Err(flow) => return flow,
        };
        let keys = creds
            .as_ref()
            .and_then(|c| c.get(ScramHash::Sha256).or_else(|| c.get(ScramHash::Sha1)));
        let ok = match keys {
            Some(keys) => {
                let (keys, pw) = (keys.clone(), msg.password.clone());
                // PBKDF2 is deliberately slow: keep it off the reactor. verify_password does
                // the PRECIS preparation itself.
                tokio::task::spawn_blocking(move || xmpp::scram::verify_password(&keys, &pw))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        if !ok {
            return self.sasl_fail(SaslFailure::NotAuthorized, Some(jid)).await;
        }
        self.upgrade_credentials(&jid, creds.as_ref(), msg.password)
            .await;
        self.sasl_success(jid, None)
    }

    /// After a PLAIN login, credentials derived with fewer iterations than configured are
    /// derived again with the configured count (the only moment the server holds the
    /// password). Done before the success is answered, so it cannot race a later password
    /// change; a failure (a cluster edge cannot write credentials) leaves the old ones.
    async fn upgrade_credentials(
        &self,
        jid: &BareJid,
        creds: Option<&storage::Credentials>,
        password: String,
    ) {
        let want = self.ctx.config.scram_iterations;
        if !creds.is_some_and(|c| c.keys.iter().any(|k| k.iterations < want)) {
            return;
        }
        let derived =
            tokio::task::spawn_blocking(move || register::credentials(&password, want)).await;
        let Ok(Some(new)) = derived else {
            return;
        };
        match self.ctx.accounts.set_credentials(jid, &new).await {
            Ok(()) => tracing::info!(jid = %jid, iterations = want, "credentials upgraded"),
            Err(e) => tracing::debug!(jid = %jid, error = %e, "credentials not upgraded"),
        }
    }

    async fn scram_first(&mut self, hash: ScramHash, payload: Vec<u8>) -> Flow {
        let Phase::Sasl(st) = &mut self.phase else {
            return Flow::Close;
        };
        let Some(scram) = st.scram.as_mut() else {
            return Flow::Close;
        };
        let (authcid, authzid) = match scram.client_first(&payload) {
            Ok(x) => x,
            Err(e) => return self.scram_fail(e, None).await,
        };
        let (jid, creds) = match self.account(&authcid, authzid.as_deref()).await {
            Ok(x) => x,
            Err(flow) => return flow,
        };
        let keys = creds.as_ref().and_then(|c| c.get(hash)).cloned();
        let Phase::Sasl(st) = &mut self.phase else {
            return Flow::Close;
        };
        let Some(scram) = st.scram.as_mut() else {
            return Flow::Close;
        };
        let server_first = scram.server_first(keys.as_ref());
        st.jid = Some(jid);
        Element::new("challenge", ns::SASL)
            .text_node(sasl::encode_payload(&server_first))
            .write_to(&mut self.wbuf, ns::CLIENT);
        Flow::Continue
    }

    async fn scram_final(&mut self, payload: Vec<u8>) -> Flow {
        let Phase::Sasl(st) = &mut self.phase else {
            return Flow::Close;
        };
        let jid = st.jid.clone();
        let Some(scram) = st.scram.as_mut() else {
            return Flow::Close;
        };
        match (scram.client_final(&payload), jid) {
            (Ok(server_final), Some(jid)) => self.sasl_success(jid, Some(server_final)),
            (Err(e), jid) => self.scram_fail(e, jid).await,
            (Ok(_), None) => self.sasl_fail(SaslFailure::NotAuthorized, None).await,
        }
    }

    fn sasl_success(&mut self, jid: BareJid, data: Option<Vec<u8>>) -> Flow {
        tracing::info!(peer = %self.peer, jid = %jid, "authenticated");
        self.ctx.limiter.succeeded(self.peer.ip(), jid.as_str());
        crate::metrics::get().auth_successes.add(1, &[]);
        let mut ok = Element::new("success", ns::SASL);
        if let Some(d) = data {
            ok = ok.text_node(sasl::encode_payload(&d));
        }
        ok.write_to(&mut self.wbuf, ns::CLIENT);
        self.authenticated = Some(jid);
        self.ip_permit.authenticated();
        self.parser.reset();
        let cfg = &self.ctx.config;
        self.parser
            .set_limits(cfg.limits.clone(), cfg.tree_limits.clone());
        self.phase = Phase::Header;
        self.header_sent = false;
        Flow::Restart
    }

    /// Answers a failed attempt, after the brute-force delay; closes after too many.
    async fn sasl_fail(&mut self, failure: SaslFailure, jid: Option<BareJid>) -> Flow {
        self.sasl_fail_as(failure, jid, failure.is_credential_failure())
            .await
    }

    /// A SCRAM error: a channel-binding type we do not support (a client that sends
    /// `p=tls-unique`, say) fails the attempt without counting as a wrong password, so the
    /// client can fall back to another mechanism.
    async fn scram_fail(&mut self, e: xmpp::scram::ScramError, jid: Option<BareJid>) -> Flow {
        let counted = !matches!(e, xmpp::scram::ScramError::ChannelBinding);
        if !counted && let Some(j) = &jid {
            self.ctx.limiter.refund(self.peer.ip(), j.as_str());
        }
        self.sasl_fail_as(e.into(), jid, counted).await
    }

    async fn sasl_fail_as(
        &mut self,
        failure: SaslFailure,
        jid: Option<BareJid>,
        counted: bool,
    ) -> Flow {
        self.phase = Phase::Features;
        if counted {
            self.auth_failures += 1;
            crate::metrics::get().auth_failures.add(1, &[]);
            // The limiter counted this attempt when it admitted it (before the check), and
            // the wait came then: a failure is answered as fast as a success.
            let account = jid.as_ref().map(BareJid::as_str);
            tracing::info!(peer = %self.peer, account = account.unwrap_or("-"), "authentication failed");
        }
        failure.to_element().write_to(&mut self.wbuf, ns::CLIENT);
        if self.auth_failures >= self.ctx.config.max_auth_attempts {
            // RFC 6120 §6.4.5: after the allowed retries, end the stream.
            self.wbuf.extend_from_slice(b"</stream:stream>");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Whether this stream's domain offers XEP-0077 registration now.
    fn registration_open(&self) -> bool {
        self.ctx
            .domains()
            .settings(&self.domain)
            .is_some_and(|s| s.registration_open)
    }

    /// Whether this stream's domain has reached its `max_accounts` (false when unknown).
    async fn domain_full(&self) -> bool {
        let Some(max) = self
            .ctx
            .domains()
            .settings(&self.domain)
            .and_then(|s| s.max_accounts)
        else {
            return false;
        };
        match self.ctx.accounts.count_accounts(&self.domain).await {
            Ok(n) => n >= u64::from(max),
            Err(_) => false,
        }
    }

    /// XEP-0077 before authentication (TLS is on): `get` answers the form, `set` creates
    /// the account. Refused with `<not-allowed/>` when the domain's registration is closed.
    async fn on_register(&mut self, iq: Element) -> Flow {
        // Errors carry no payload: the request may hold a password.
        let mut shell = Element::new("iq", ns::CLIENT);
        for a in ["id", "type"] {
            if let Some(v) = iq.get_attr(a) {
                shell.set_attr(a, v);
            }
        }
        if !self.registration_open() {
            self.reply_error_text(
                &shell,
                StanzaErrorCondition::NotAllowed,
                "registration is closed",
            );
            return Flow::Continue;
        }
        let Some(query) = iq.get_child("query", NS_REGISTER) else {
            return Flow::Continue;
        };
        match iq.get_attr("type") {
            Some("get") => {
                let mut reply = Element::new("iq", ns::CLIENT).attr("type", "result");
                if let Some(id) = iq.get_attr("id") {
                    reply.set_attr("id", id);
                }
                reply.append_child(register::form());
                reply.write_to(&mut self.wbuf, ns::CLIENT);
                Flow::Continue
            }
            Some("set") => {
                let (jid, password) = match register::parse_set(query, &self.domain) {
                    Ok(x) => x,
                    Err(cond) => {
                        self.reply_error(&shell, cond);
                        return Flow::Continue;
                    }
                };
                // A full domain is refused first, uncounted (it costs a count and no
                // PBKDF2). A cluster's edge cannot count accounts: there the creation
                // below refuses it.
                if self.domain_full().await {
                    self.reply_error_text(
                        &shell,
                        StanzaErrorCondition::NotAllowed,
                        "this domain has reached its account limit",
                    );
                    return Flow::Continue;
                }
                // Every other attempt counts, successful or not, before any work is done.
                if !self.ctx.registrations.attempt(self.peer.ip()) {
                    tracing::info!(peer = %self.peer, "registration refused: too many from this address");
                    self.reply_error_text(
                        &shell,
                        StanzaErrorCondition::ResourceConstraint,
                        "too many registrations from this address; try again later",
                    );
                    return Flow::Continue;
                }
                // A taken name is refused before PBKDF2 runs (the create below still
                // refuses a name taken in between).
                // A credentials read, since that is what a cluster's edge can ask.
                match self.ctx.accounts.get_credentials(&jid).await {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        self.reply_error(&shell, StanzaErrorCondition::Conflict);
                        return Flow::Continue;
                    }
                    Err(e) => {
                        tracing::warn!(jid = %jid, error = %e, "in-band registration failed");
                        self.reply_error(&shell, StanzaErrorCondition::InternalServerError);
                        return Flow::Continue;
                    }
                }
                let iterations = self.ctx.config.scram_iterations;
                let creds = tokio::task::spawn_blocking(move || {
                    register::credentials(&password, iterations)
                })
                .await
                .ok()
                .flatten();
                let Some(creds) = creds else {
                    self.reply_error(&shell, StanzaErrorCondition::NotAcceptable);
                    return Flow::Continue;
                };
                match self.ctx.accounts.create_account(&jid, &creds).await {
                    Ok(()) => {
                        tracing::info!(peer = %self.peer, jid = %jid, "account registered in band");
                        let mut reply = Element::new("iq", ns::CLIENT).attr("type", "result");
                        if let Some(id) = iq.get_attr("id") {
                            reply.set_attr("id", id);
                        }
                        reply.write_to(&mut self.wbuf, ns::CLIENT);
                    }
                    Err(storage::StorageError::AlreadyExists) => {
                        self.reply_error(&shell, StanzaErrorCondition::Conflict);
                    }
                    Err(storage::StorageError::QuotaExceeded) => {
                        self.reply_error_text(
                            &shell,
                            StanzaErrorCondition::NotAllowed,
                            "this domain has reached its account limit",
                        );
                    }
                    Err(e) => {
                        tracing::warn!(jid = %jid, error = %e, "in-band registration failed");
                        self.reply_error(&shell, StanzaErrorCondition::InternalServerError);
                    }
                }
                Flow::Continue
            }
            _ => {
                self.reply_error(&shell, StanzaErrorCondition::BadRequest);
                Flow::Continue
            }
        }
    }

    async fn on_bind(&mut self, iq: Element) -> Flow {
        let Some(bare) = self.authenticated.clone() else {
            return Flow::Close;
        };
        let bind = iq.get_child("bind", ns::BIND);
        if iq.get_attr("type") != Some("set") || bind.is_none() {
            // Only binding is possible before a resource is bound.
            self.stream_error(StreamErrorCondition::NotAuthorized, None);
            return Flow::Close;
        }
        let requested = bind
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(Element::text)
            .filter(|r| !r.trim().is_empty());
        let full = match &requested {
            Some(r) => match bare.with_resource(r) {
                Ok(f) => f,
                Err(_) => {
                    self.reply_error(&iq, StanzaErrorCondition::BadRequest);
                    return Flow::Continue;
                }
            },
            None => match bare.with_resource(&random_resource()) {
                Ok(f) => f,
                Err(_) => return Flow::Close,
            },
        };
        let (sink, rx) = outbox(self.ctx.config.outbound_queue);
        let sink: Arc<dyn ClientSink> = sink;
        match self.ctx.sessions.open(full.clone(), sink).await {
            Ok(token) => {
                tracing::debug!(peer = %self.peer, jid = %full, "bound");
                let mut reply = Element::new("iq", ns::CLIENT).attr("type", "result");
                if let Some(id) = iq.get_attr("id") {
                    reply.set_attr("id", id);
                }
                reply.append_child(
                    Element::new("bind", ns::BIND)
                        .child(Element::new("jid", ns::BIND).text_node(full.as_str())),
                );
                reply.write_to(&mut self.wbuf, ns::CLIENT);
                self.bound = Some((full, token));
                self.rx = Some(rx);
                self.phase = Phase::Bound;
                self.hosted = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "bind refused");
                let cond = match e.code() {
                    session::ErrorCode::ResourceConstraint => {
                        StanzaErrorCondition::ResourceConstraint
                    }
                    _ => StanzaErrorCondition::InternalServerError,
                };
                self.reply_error(&iq, cond);
                Flow::Continue
            }
        }
    }

    fn reply_error(&mut self, stanza: &Element, cond: StanzaErrorCondition) {
        let mut reply = xmpp::error::error_reply(stanza, cond, None);
        reply.remove_attr("from");
        reply.write_to(&mut self.wbuf, ns::CLIENT);
    }

    fn reply_error_text(&mut self, stanza: &Element, cond: StanzaErrorCondition, text: &str) {
        let mut reply = xmpp::error::error_reply(stanza, cond, Some(text));
        reply.remove_attr("from");
        reply.write_to(&mut self.wbuf, ns::CLIENT);
    }

    async fn on_stanza(&mut self, mut el: Element) -> Flow {
        let Some((full, token)) = self.bound.clone() else {
            return Flow::Close;
        };
        let Some(kind) = crate::metrics::StanzaKind::of(&el) else {
            self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
            return Flow::Close;
        };
        crate::metrics::get().stanzas_in.add(1, kind.attrs());
        if let Some(from) = el.get_attr("from") {
            // RFC 6120 §8.1.2.1: a client may only claim its own address.
            let ok = match from.parse::<xmpp::Jid>() {
                Ok(xmpp::Jid::Full(f)) => f == full,
                Ok(xmpp::Jid::Bare(b)) => b == full.bare(),
                Err(_) => false,
            };
            if !ok {
                tracing::info!(peer = %self.peer, jid = %full, "spoofed from");
                self.stream_error(StreamErrorCondition::InvalidFrom, None);
                return Flow::Close;
            }
        }
        // Under stream management every stanza goes to the session, which counts it (its
        // count is what a resume reports), and every answer comes from the session.
        if el.is("iq", ns::CLIENT) && self.is_ping_reply(&el) && self.sm.is_none() {
            return Flow::Continue;
        }
        if el.is("iq", ns::CLIENT) && el.get_child("bind", ns::BIND).is_some() && self.sm.is_none()
        {
            // A second bind on a stream is not supported (RFC 6120 §7.7.2.1 allows refusing).
            self.reply_error(&el, StanzaErrorCondition::NotAllowed);
            return Flow::Continue;
        }
        if let Some(sm) = &mut self.sm {
            sm.received = sm.received.wrapping_add(1);
        }
        el.set_attr("from", full.as_str());
        let span = tracing::info_span!(
            target: session::TRACE_TARGET,
            "edge.stanza",
            "stanza.kind" = el.name(),
            "stanza.type" = el.get_attr("type"),
        );
        match self
            .ctx
            .sessions
            .stanza(&full, token, el)
            .instrument(span)
            .await
        {
            Ok(()) => Flow::Continue,
            Err(session::SessionError::NoSession) => {
                self.bound = None;
                self.stream_error(StreamErrorCondition::Conflict, None);
                Flow::Close
            }
            Err(session::SessionError::Unavailable(e)) => {
                // The stanza did not reach the session: it was not counted there, so it will
                // not be acknowledged. End the stream so that the client re-sends it (on
                // resumption or after logging in again) rather than waiting forever.
                tracing::warn!(jid = %full, error = %e, "the session cannot take a stanza; closing the stream");
                self.stream_error(StreamErrorCondition::InternalServerError, None);
                Flow::Close
            }
            Err(e) => {
                // The session took it (and counted it) but failed while handling it.
                tracing::warn!(jid = %full, error = %e, "session failed to handle a stanza");
                Flow::Continue
            }
        }
    }

    /// A stream-management element on a bound stream.
    async fn on_sm(&mut self, el: Element) -> Flow {
        let Some((full, token)) = self.bound.clone() else {
            return Flow::Close;
        };
        match (el.name(), self.sm.as_mut()) {
            ("r", Some(_)) => {
                // The `h` is the session's count, not ours: a stanza counts as received only
                // once the session (in a cluster, the session node) has it, so a node that
                // dies with stanzas in flight never had them acknowledged.
                let h = match self.ctx.sessions.sm_received(&full, token).await {
                    Ok(h) => h,
                    Err(session::SessionError::Unsupported(_)) => {
                        self.sm.as_ref().map_or(0, |sm| sm.received)
                    }
                    Err(session::SessionError::NoSession) => {
                        self.bound = None;
                        self.stream_error(StreamErrorCondition::Conflict, None);
                        return Flow::Close;
                    }
                    Err(e) => {
                        // The session cannot say what it holds: end the stream, so the client
                        // resumes or logs in again and re-sends what was not acknowledged.
                        tracing::warn!(jid = %full, error = %e, "cannot confirm received stanzas; closing the stream");
                        self.stream_error(StreamErrorCondition::InternalServerError, None);
                        return Flow::Close;
                    }
                };
                if let Some(sm) = &mut self.sm {
                    sm.received = h;
                }
                let a = Element::new("a", NS_SM).attr("h", h.to_string());
                a.write_to(&mut self.wbuf, ns::CLIENT);
                Flow::Continue
            }
            ("a", Some(sm)) => {
                let Some(h) = el.get_attr("h").and_then(|h| h.trim().parse::<u32>().ok()) else {
                    self.stream_error(StreamErrorCondition::BadFormat, Some("invalid h"));
                    return Flow::Close;
                };
                sm.r_out = false;
                match self.ctx.sessions.sm_ack(&full, token, h).await {
                    Ok(()) => Flow::Continue,
                    Err(session::SessionError::NoSession) => {
                        self.bound = None;
                        self.stream_error(StreamErrorCondition::Conflict, None);
                        Flow::Close
                    }
                    Err(session::SessionError::Unsupported(why)) => {
                        // XEP-0198 §4: acknowledging more than was sent ends the stream.
                        tracing::info!(peer = %self.peer, jid = %full, h, why, "bad acknowledgement");
                        self.stream_error(
                            StreamErrorCondition::UndefinedCondition,
                            Some("acknowledged more stanzas than were sent"),
                        );
                        Flow::Close
                    }
                    Err(e) => {
                        tracing::warn!(jid = %full, error = %e, "session failed to take an acknowledgement");
                        Flow::Continue
                    }
                }
            }
            ("enable", None) => {
                let resume = matches!(el.get_attr("resume"), Some("true" | "1"));
                match self.ctx.sessions.enable_sm(&full, token, resume).await {
                    Ok(enabled) => {
                        // The session sent `<enabled/>` through our queue, in order.
                        tracing::debug!(peer = %self.peer, jid = %full, resumable = enabled.id.is_some(), "stream management enabled");
                        self.sm = Some(SmConn {
                            resumable: enabled.id.is_some(),
                            received: 0,
                            unrequested: 0,
                            r_out: false,
                        });
                        Flow::Continue
                    }
                    Err(session::SessionError::NoSession) => {
                        self.bound = None;
                        self.stream_error(StreamErrorCondition::Conflict, None);
                        Flow::Close
                    }
                    Err(e) => {
                        tracing::info!(peer = %self.peer, jid = %full, error = %e, "stream management refused");
                        let cond = match e.code() {
                            session::ErrorCode::Unsupported => {
                                StanzaErrorCondition::FeatureNotImplemented
                            }
                            _ => StanzaErrorCondition::InternalServerError,
                        };
                        self.sm_failed(cond);
                        Flow::Continue
                    }
                }
            }
            ("enable" | "resume", _) => {
                // A second `<enable/>`, or a resume on a bound stream.
                self.sm_failed(StanzaErrorCondition::UnexpectedRequest);
                Flow::Continue
            }
            _ => {
                self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
                Flow::Close
            }
        }
    }

    /// A stream-management element after authentication, before binding: `<resume/>`.
    async fn on_sm_unbound(&mut self, el: Element) -> Flow {
        let Some(account) = self.authenticated.clone() else {
            return Flow::Close;
        };
        match el.name() {
            "resume" => {}
            "enable" => {
                // XEP-0198 §3: only after binding (the client may still bind).
                self.sm_failed(StanzaErrorCondition::UnexpectedRequest);
                return Flow::Continue;
            }
            _ => {
                self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
                return Flow::Close;
            }
        }
        let previd = el.get_attr("previd").unwrap_or_default().to_owned();
        let Some(h) = el.get_attr("h").and_then(|h| h.trim().parse::<u32>().ok()) else {
            self.sm_failed(StanzaErrorCondition::BadRequest);
            return Flow::Continue;
        };
        let (sink, rx) = outbox(self.ctx.config.outbound_queue);
        let sink: Arc<dyn ClientSink> = sink;
        match self
            .ctx
            .sessions
            .sm_resume(&account, &previd, h, sink)
            .await
        {
            Ok(resumed) => {
                tracing::info!(peer = %self.peer, jid = %resumed.jid, "stream resumed");
                // Written before anything of `rx` (the resent stanzas come next).
                Element::new("resumed", NS_SM)
                    .attr("previd", previd)
                    .attr("h", resumed.server_h.to_string())
                    .write_to(&mut self.wbuf, ns::CLIENT);
                self.bound = Some((resumed.jid, resumed.token));
                self.rx = Some(rx);
                self.phase = Phase::Bound;
                self.hosted = None;
                self.sm = Some(SmConn {
                    resumable: true,
                    received: resumed.server_h,
                    unrequested: 0,
                    r_out: false,
                });
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, account = %account, error = %e, "resumption failed");
                let cond = match e.code() {
                    session::ErrorCode::Unsupported => StanzaErrorCondition::FeatureNotImplemented,
                    session::ErrorCode::Unavailable => StanzaErrorCondition::InternalServerError,
                    _ => StanzaErrorCondition::ItemNotFound,
                };
                // The client may bind a new session on this stream.
                self.sm_failed(cond);
                Flow::Continue
            }
        }
    }

    /// `<failed xmlns='urn:xmpp:sm:3'>` with a stanza error condition (XEP-0198 §6).
    fn sm_failed(&mut self, cond: StanzaErrorCondition) {
        Element::new("failed", NS_SM)
            .child(Element::new(cond.as_str(), ns::STANZAS_ERR))
            .write_to(&mut self.wbuf, ns::CLIENT);
    }

    /// The answer to our keepalive ping is for the edge, not the session.
    fn is_ping_reply(&mut self, iq: &Element) -> bool {
        let Some(id) = iq.get_attr("id") else {
            return false;
        };
        let addressed_here = match iq.get_attr("to") {
            None => true,
            Some(to) => to == self.domain,
        };
        if addressed_here
            && id.starts_with("relais-ping-")
            && matches!(iq.get_attr("type"), Some("result" | "error"))
        {
            self.ping = None;
            return true;
        }
        false
    }
}

fn random_resource() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let mut s = String::from("relais-");
    for _ in 0..10 {
        let i = rng.random_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
    }
    s
}

pub(crate) fn quick_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
}
