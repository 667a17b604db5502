//! A strict XMPP test client over real sockets and TLS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use xmpp::parser::{Limits, StreamEvent, StreamParser};
use xmpp::scram::{ScramClient, ScramHash};
use xmpp::{Element, FullJid, StreamErrorCondition, ns};

/// How long a test waits for something the server owes it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Accepts exactly one certificate: the one the test server generated.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client configuration that trusts only `cert`, offering `alpn`, TLS 1.3 or 1.2 only.
pub fn tls_config(cert: Vec<u8>, alpn: &[&[u8]], tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// What came back from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Stanza(Element),
    /// `<stream:error>` with its condition.
    StreamError(Option<StreamErrorCondition>),
    /// `</stream:stream>` or the socket closed.
    Closed,
}

pub struct Client {
    io: Io,
    parser: StreamParser,
    pending: VecDeque<Incoming>,
    pub domain: String,
    cert: Vec<u8>,
    /// The stream features of the current stream.
    pub features: Option<Element>,
    pub jid: Option<FullJid>,
    exporter: Option<Vec<u8>>,
    next_id: u32,
    /// XEP-0198: stanzas received since `<enabled/>` (or the `h` of our `<resume/>`),
    /// counted as they are parsed; `None` before stream management.
    sm_in: Option<u32>,
}

/// The XEP-0198 namespace.
pub const NS_SM: &str = "urn:xmpp:sm:3";

impl Client {
    /// Connects to the STARTTLS port and negotiates TLS; features of the secure stream are in
    /// `features`.
    pub async fn connect_starttls(addr: SocketAddr, domain: &str, cert: Vec<u8>) -> Client {
        let mut c = Client::connect_plain(addr, domain, cert).await;
        let f = c.features.clone().unwrap();
        assert!(
            f.get_child("starttls", ns::TLS).is_some(),
            "starttls not offered: {f}"
        );
        c.send(&Element::new("starttls", ns::TLS)).await;
        let proceed = c.recv_stanza().await;
        assert!(
            proceed.is("proceed", ns::TLS),
            "expected proceed, got {proceed}"
        );
        c.upgrade(&[], false).await;
        c
    }

    /// Like [`Client::connect_starttls`], but `None` when the server refuses the stream's
    /// domain with a stream error (for example `<host-unknown/>` before it learned of it).
    pub async fn try_connect_starttls(
        addr: SocketAddr,
        domain: &str,
        cert: Vec<u8>,
    ) -> Option<Client> {
        let mut c = Client::tcp(addr, domain, cert).await;
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        c.send_raw(header.as_bytes()).await;
        match c.next_event().await {
            Some(StreamEvent::Open(_)) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        match c.recv().await {
            Incoming::Stanza(f) if f.is("features", ns::STREAM) => c.features = Some(f),
            Incoming::StreamError(_) | Incoming::Closed => return None,
            Incoming::Stanza(other) => panic!("expected features, got {other}"),
        }
        c.send(&Element::new("starttls", ns::TLS)).await;
        let proceed = c.recv_stanza().await;
        assert!(
            proceed.is("proceed", ns::TLS),
            "expected proceed, got {proceed}"
        );
        c.upgrade(&[], false).await;
        Some(c)
    }

    /// Connects to the plain port and opens the stream, without TLS.
    pub async fn connect_plain(addr: SocketAddr, domain: &str, cert: Vec<u8>) -> Client {
        let mut c = Client::tcp(addr, domain, cert).await;
        c.open_stream().await;
        c
    }

    /// Like [`Client::connect_starttls`], from the local address `from` (any 127.0.0.0/8
    /// address works on loopback), so a test can play several client networks.
    pub async fn connect_starttls_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
        domain: &str,
        cert: Vec<u8>,
    ) -> Client {
        let sock = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        let tcp = sock.connect(addr).await.unwrap();
        let mut c = Client::from_tcp(tcp, domain, cert);
        c.open_stream().await;
        let f = c.features.clone().unwrap();
        assert!(f.get_child("starttls", ns::TLS).is_some(), "{f}");
        c.send(&Element::new("starttls", ns::TLS)).await;
        let proceed = c.recv_stanza().await;
        assert!(proceed.is("proceed", ns::TLS), "{proceed}");
        c.upgrade(&[], false).await;
        c
    }

    /// A TCP connection with nothing sent yet.
    async fn tcp(addr: SocketAddr, domain: &str, cert: Vec<u8>) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Client::from_tcp(tcp, domain, cert)
    }

    fn from_tcp(tcp: TcpStream, domain: &str, cert: Vec<u8>) -> Client {
        Client {
            io: Io::Plain(tcp),
            parser: StreamParser::new(Limits {
                max_stanza_bytes: 4 << 20,
                ..Limits::default()
            }),
            pending: VecDeque::new(),
            domain: domain.to_owned(),
            cert,
            features: None,
            jid: None,
            exporter: None,
            next_id: 0,
            sm_in: None,
        }
    }

    /// Connects to the direct-TLS port (XEP-0368) with ALPN `xmpp-client`.
    pub async fn connect_direct(addr: SocketAddr, domain: &str, cert: Vec<u8>) -> Client {
        let mut c = Client::tcp(addr, domain, cert).await;
        c.upgrade(&[b"xmpp-client"], false).await;
        c
    }

    /// Connects to the direct-TLS port without opening a stream (for raw hostile input).
    pub async fn connect_tls_raw(addr: SocketAddr, domain: &str, cert: Vec<u8>) -> Client {
        let mut c = Client::tcp(addr, domain, cert).await;
        c.tls_only(&[b"xmpp-client"], false).await;
        c
    }

    /// Upgrades the socket to TLS and reopens the stream.
    pub async fn upgrade(&mut self, alpn: &[&[u8]], tls12_only: bool) {
        self.tls_only(alpn, tls12_only).await;
        self.open_stream().await;
    }

    async fn tls_only(&mut self, alpn: &[&[u8]], tls12_only: bool) {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            panic!("not plain")
        };
        let cfg = tls_config(self.cert.clone(), alpn, tls12_only);
        let name = ServerName::try_from(self.domain.clone()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let conn = tls.get_ref().1;
        if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let mut out = [0u8; 32];
            self.exporter = conn
                .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
                .ok()
                .map(|o| o.to_vec());
        }
        self.io = Io::Tls(Box::new(tls));
        self.parser.reset();
    }

    /// The ALPN protocol the server chose.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match &self.io {
            Io::Tls(t) => t.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            _ => None,
        }
    }

    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.io {
            Io::Tls(t) => t.get_ref().1.protocol_version(),
            _ => None,
        }
    }

    async fn open_stream(&mut self) {
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            self.domain
        );
        self.send_raw(header.as_bytes()).await;
        match self.next_event().await {
            Some(StreamEvent::Open(_)) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        let f = self.recv_stanza().await;
        assert!(f.is("features", ns::STREAM), "expected features, got {f}");
        self.features = Some(f);
    }

    /// The SASL mechanisms offered on the current stream.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.get_child("mechanisms", ns::SASL))
            .map(|m| m.children().map(Element::text).collect())
            .unwrap_or_default()
    }

    pub async fn send_raw(&mut self, data: &[u8]) {
        let r = match &mut self.io {
            Io::Plain(s) => s.write_all(data).await,
            Io::Tls(s) => match s.write_all(data).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            Io::Gone => return,
        };
        if r.is_err() {
            self.pending.push_back(Incoming::Closed);
        }
    }

    pub async fn send(&mut self, el: &Element) {
        let bytes = el.to_bytes_in(ns::CLIENT);
        self.send_raw(&bytes).await;
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = vec![0u8; 8192];
        let n = match &mut self.io {
            Io::Plain(s) => s.read(&mut buf).await,
            Io::Tls(s) => s.read(&mut buf).await,
            Io::Gone => Ok(0),
        };
        match n {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.parser.feed(&buf[..n]);
                true
            }
        }
    }

    async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            match self.parser.next_event() {
                Ok(Some(ev)) => return Some(ev),
                Ok(None) => {}
                Err(e) => panic!("server sent bad xml: {e}"),
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// The next thing from the server, within `WAIT`; `None` on timeout.
    pub async fn recv_timeout(&mut self, wait: Duration) -> Option<Incoming> {
        if let Some(i) = self.pending.pop_front() {
            return Some(i);
        }
        let ev = tokio::time::timeout(wait, async {
            loop {
                match self.next_event().await {
                    // A header the server sends before an error on a raw connection.
                    Some(StreamEvent::Open(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .ok()?;
        Some(match ev {
            None | Some(StreamEvent::Close) => Incoming::Closed,
            Some(StreamEvent::Open(_)) => Incoming::Closed,
            Some(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => Incoming::StreamError(
                el.children()
                    .filter(|c| c.ns() == ns::STREAMS_ERR)
                    .find_map(|c| StreamErrorCondition::from_name(c.name())),
            ),
            Some(StreamEvent::Stanza(el)) => {
                self.sm_count(&el);
                Incoming::Stanza(el)
            }
        })
    }

    pub async fn recv(&mut self) -> Incoming {
        self.recv_timeout(WAIT)
            .await
            .expect("timed out waiting for the server")
    }

    /// The next stanza; panics on anything else.
    pub async fn recv_stanza(&mut self) -> Element {
        match self.recv().await {
            Incoming::Stanza(el) => el,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// Waits for a stanza matching `pred`, keeping the others for later `recv`s.
    pub async fn recv_matching(&mut self, mut pred: impl FnMut(&Element) -> bool) -> Element {
        let mut skipped = VecDeque::new();
        let found = loop {
            match self.recv().await {
                Incoming::Stanza(el) if pred(&el) => break el,
                other => {
                    if matches!(other, Incoming::Closed | Incoming::StreamError(_)) {
                        panic!("stream ended while waiting: {other:?}; skipped {skipped:?}");
                    }
                    skipped.push_back(other);
                }
            }
        };
        skipped.append(&mut self.pending);
        self.pending = skipped;
        found
    }

    /// Asserts nothing arrives within `wait` (for "must not be delivered" checks).
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(i) = self.recv_timeout(wait).await {
            panic!("expected nothing, got {i:?}");
        }
    }

    /// Asserts that no stanza matching `pred` arrives within `wait`; others are discarded.
    pub async fn expect_none(&mut self, wait: Duration, mut pred: impl FnMut(&Element) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await {
                None => return,
                Some(Incoming::Stanza(el)) if pred(&el) => panic!("unexpected {el}"),
                Some(Incoming::Stanza(_)) => {}
                Some(other) => panic!("stream ended: {other:?}"),
            }
        }
    }

    /// Reads until the stream ends; returns the stream error condition, if any came.
    pub async fn expect_stream_end(&mut self) -> Option<StreamErrorCondition> {
        let mut cond = None;
        loop {
            match self.recv().await {
                Incoming::StreamError(c) => cond = c,
                Incoming::Closed => return cond,
                Incoming::Stanza(_) => {}
            }
        }
    }

    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    /// Sends an IQ (an id is set) and waits for its result or error.
    pub async fn iq(&mut self, mut iq: Element) -> Element {
        let id = self.next_id();
        iq.set_attr("id", id.clone());
        self.send(&iq).await;
        self.recv_matching(|el| el.name() == "iq" && el.get_attr("id") == Some(id.as_str()))
            .await
    }

    /// SCRAM authentication; on failure returns the SASL failure condition. Restarts the
    /// stream on success.
    pub async fn auth_scram(
        &mut self,
        user: &str,
        password: &str,
        hash: ScramHash,
        plus: bool,
    ) -> Result<(), String> {
        let exporter = if plus { self.exporter.clone() } else { None };
        assert!(!plus || exporter.is_some(), "no channel binding available");
        let server_plus = self.mechanisms().iter().any(|m| m.ends_with("-PLUS"));
        // `y` only when we could bind but the server offered no -PLUS (RFC 5802 §6).
        let flag_y = !plus && !server_plus && self.exporter.is_some();
        let mut scram = ScramClient::new(hash, user, password, exporter, flag_y);
        let first = scram.client_first();
        let auth = Element::new("auth", ns::SASL)
            .attr("mechanism", hash.mechanism(plus))
            .text_node(b64(&first));
        self.send(&auth).await;
        let challenge = self.recv_stanza().await;
        if challenge.is("failure", ns::SASL) {
            return Err(failure_name(&challenge));
        }
        assert!(
            challenge.is("challenge", ns::SASL),
            "expected challenge, got {challenge}"
        );
        let final_msg = scram
            .client_final(&unb64(&challenge.text()))
            .map_err(|e| e.to_string())?;
        self.send(&Element::new("response", ns::SASL).text_node(b64(&final_msg)))
            .await;
        let outcome = self.recv_stanza().await;
        if outcome.is("failure", ns::SASL) {
            return Err(failure_name(&outcome));
        }
        assert!(
            outcome.is("success", ns::SASL),
            "expected success, got {outcome}"
        );
        scram
            .verify_server_final(&unb64(&outcome.text()))
            .map_err(|e| e.to_string())?;
        self.parser.reset();
        self.open_stream().await;
        Ok(())
    }

    /// PLAIN authentication (sends the password in the clear inside TLS).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let msg = format!("\0{user}\0{password}");
        let auth = Element::new("auth", ns::SASL)
            .attr("mechanism", "PLAIN")
            .text_node(b64(msg.as_bytes()));
        self.send(&auth).await;
        let outcome = self.recv_stanza().await;
        if outcome.is("failure", ns::SASL) {
            return Err(failure_name(&outcome));
        }
        assert!(
            outcome.is("success", ns::SASL),
            "expected success, got {outcome}"
        );
        self.parser.reset();
        self.open_stream().await;
        Ok(())
    }

    /// Binds a resource (or lets the server pick one) and returns the full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> FullJid {
        let mut bind = Element::new("bind", ns::BIND);
        if let Some(r) = resource {
            bind.append_child(Element::new("resource", ns::BIND).text_node(r));
        }
        let reply = self
            .iq(Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .child(bind))
            .await;
        assert_eq!(
            reply.get_attr("type"),
            Some("result"),
            "bind failed: {reply}"
        );
        let jid = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text)
            .unwrap();
        let jid: FullJid = jid.parse().unwrap();
        self.jid = Some(jid.clone());
        jid
    }

    /// Sends initial presence and requests the roster, like a real client after login.
    pub async fn go_online(&mut self) -> Element {
        let roster = self
            .iq(Element::new("iq", ns::CLIENT)
                .attr("type", "get")
                .child(Element::new("query", ns::ROSTER)))
            .await;
        self.send(&Element::new("presence", ns::CLIENT)).await;
        roster
    }

    /// XEP-0198 counting of what the server sent, in wire order.
    fn sm_count(&mut self, el: &Element) {
        if el.is("enabled", NS_SM) {
            self.sm_in = Some(0);
        } else if let Some(n) = &mut self.sm_in
            && el.ns() == ns::CLIENT
            && matches!(el.name(), "message" | "presence" | "iq")
        {
            *n = n.wrapping_add(1);
        }
    }

    /// XEP-0198: stanzas received since stream management started (our `h`).
    pub fn sm_h(&self) -> Option<u32> {
        self.sm_in
    }

    /// XEP-0198: sends `<enable/>` and returns the server's `<enabled/>` or `<failed/>`
    /// (other stanzas stay queued for later `recv`s).
    pub async fn sm_enable(&mut self, resume: bool) -> Element {
        let mut enable = Element::new("enable", NS_SM);
        if resume {
            enable.set_attr("resume", "true");
        }
        self.send(&enable).await;
        self.recv_matching(|e| e.is("enabled", NS_SM) || e.is("failed", NS_SM))
            .await
    }

    /// XEP-0198: acknowledges everything received so far (`<a h='…'/>`).
    pub async fn sm_ack(&mut self) {
        let h = self.sm_in.expect("stream management not enabled");
        self.sm_ack_h(h).await;
    }

    /// XEP-0198: sends `<a h='…'/>` with any `h`.
    pub async fn sm_ack_h(&mut self, h: u32) {
        self.send(&Element::new("a", NS_SM).attr("h", h.to_string()))
            .await;
    }

    /// XEP-0198: `<r/>`, returning the server's `<a/>`.
    pub async fn sm_request(&mut self) -> Element {
        self.send(&Element::new("r", NS_SM)).await;
        self.recv_matching(|e| e.is("a", NS_SM)).await
    }

    /// XEP-0198: after authentication, `<resume previd='…' h='…'/>`; returns `<resumed/>` or
    /// `<failed/>`. On success counting goes on from `h` and the full JID is `jid`.
    pub async fn sm_resume(&mut self, previd: &str, h: u32, jid: Option<FullJid>) -> Element {
        let resume = Element::new("resume", NS_SM)
            .attr("previd", previd)
            .attr("h", h.to_string());
        self.send(&resume).await;
        let answer = self
            .recv_matching(|e| e.is("resumed", NS_SM) || e.is("failed", NS_SM))
            .await;
        if answer.is("resumed", NS_SM) {
            self.sm_in = Some(h);
            self.jid = jid;
        }
        answer
    }

    /// Kills the connection abruptly: a TCP reset, no `</stream:stream>`, no TLS close.
    pub fn kill(self) {
        let tcp = match &self.io {
            Io::Plain(s) => Some(s),
            Io::Tls(t) => Some(t.get_ref().0),
            Io::Gone => None,
        };
        if let Some(tcp) = tcp {
            let _ = tcp.set_zero_linger();
        }
        drop(self);
    }

    /// Sends `</stream:stream>` and waits for the server to close.
    pub async fn close(mut self) {
        self.send_raw(b"</stream:stream>").await;
        let _ = tokio::time::timeout(WAIT, async {
            while !matches!(self.recv_timeout(WAIT).await, Some(Incoming::Closed) | None) {}
        })
        .await;
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_default()
}

fn failure_name(el: &Element) -> String {
    el.first_child()
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// A chat message.
pub fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .attr("to", to)
        .attr("type", "chat")
        .child(Element::new("body", ns::CLIENT).text_node(body))
}

/// The body text of a message, if any.
pub fn body(el: &Element) -> Option<String> {
    el.get_child("body", ns::CLIENT).map(Element::text)
}
