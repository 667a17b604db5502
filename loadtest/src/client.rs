//! A minimal, standards-only XMPP client: TCP from a chosen source address, STARTTLS or
//! direct TLS, SASL SCRAM (RFC 5802/7677, RFC 6120 §6), resource binding, roster get and
//! initial presence. One `Session` per connection; nothing is shared between connections but
//! the TLS configuration.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use xmpp::parser::{Limits, StreamEvent, StreamParser};
use xmpp::scram::{ScramClient, ScramHash};
use xmpp::{Element, ns};

use crate::config::{Mech, Target, TlsMode};
use crate::error::{Error, Result};

/// Bytes read from the socket at a time. Small on purpose: thousands of idle connections.
const READ_CHUNK: usize = 2048;

/// Everything needed to open connections to one server.
#[derive(Clone)]
pub struct Connector {
    pub target: Arc<Target>,
    pub server: SocketAddr,
    /// Every server (edge) to spread users over; `server` is the first.
    pub servers: Vec<SocketAddr>,
    pub sources: Vec<IpAddr>,
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .field("sources", &self.sources)
            .field("domain", &self.target.domain)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(target: Arc<Target>, tls: Arc<ClientConfig>) -> Result<Self> {
        target.validate()?;
        let servers = target.server_addrs()?;
        let server = target.server_addr()?;
        let sources = target.source_addrs(server);
        let server_name = ServerName::try_from(target.domain.clone())
            .map_err(|e| Error::Config(format!("domain is not a valid tls server name: {e}")))?;
        Ok(Connector {
            target,
            server,
            servers,
            sources,
            tls: TlsConnector::from(tls),
            server_name,
        })
    }

    /// Opens a TCP connection for user `idx` to its server (`idx` modulo the servers), from
    /// source address number `conn_no` modulo the list.
    async fn tcp(&self, idx: u32, conn_no: u64) -> Result<TcpStream> {
        let n = self.servers.len().max(1);
        let server = self
            .servers
            .get(usize::try_from(idx).unwrap_or(0) % n)
            .copied()
            .unwrap_or(self.server);
        let socket = if self.server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(Error::Connect)?;
        if !self.sources.is_empty() {
            let i = usize::try_from(conn_no % self.sources.len() as u64).unwrap_or(0);
            if let Some(ip) = self.sources.get(i) {
                socket
                    .bind(SocketAddr::new(*ip, 0))
                    .map_err(Error::Connect)?;
            }
        }
        let tcp = socket.connect(server).await.map_err(Error::Connect)?;
        tcp.set_nodelay(true).map_err(Error::Connect)?;
        Ok(tcp)
    }

    async fn tls(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
        self.tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(Error::Tls)
    }

    /// A complete login of user `idx` (0-based) over connection number `conn_no`: connect,
    /// TLS, SASL, bind, then roster get and initial presence as the target asks.
    pub async fn login(&self, idx: u32, conn_no: u64) -> Result<Session> {
        let t = &self.target;
        let tcp = self.tcp(idx, conn_no).await?;
        let mut xs = match t.tls {
            TlsMode::Direct => XmlStream::new(self.tls(tcp).await?),
            TlsMode::Starttls => {
                let mut plain = XmlStream::new(tcp);
                let features = plain.open(&t.domain).await?;
                if features.get_child("starttls", ns::TLS).is_none() {
                    return Err(Error::Negotiation("no-starttls"));
                }
                plain
                    .send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .await?;
                let reply = plain.stanza().await?;
                if !reply.is("proceed", ns::TLS) {
                    return Err(Error::Negotiation("starttls-refused"));
                }
                let (tcp, parser) = plain.into_parts();
                XmlStream::with_parser(self.tls(tcp).await?, parser)
            }
        };
        let features = xs.open(&t.domain).await?;
        let mech = authenticate(&mut xs, &features, t, &t.username(idx)).await?;
        let features = xs.open(&t.domain).await?;
        let resource = format!("{}{}", t.resource, conn_no);
        let full_jid = bind(&mut xs, &features, &resource).await?;
        if t.roster {
            xs.send(b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
                .await?;
            let reply = xs.iq_reply("roster1").await?;
            if reply.get_attr("type") != Some("result") {
                return Err(Error::Negotiation("roster-get"));
            }
        }
        if t.presence {
            xs.send(b"<presence/>").await?;
        }
        xs.shrink();
        let bare_jid = full_jid.split('/').next().unwrap_or(&full_jid).to_string();
        Ok(Session {
            xs,
            full_jid,
            bare_jid,
            mech,
        })
    }
}

/// A logged-in connection.
#[derive(Debug)]
pub struct Session {
    pub xs: XmlStream<TlsStream<TcpStream>>,
    pub full_jid: String,
    pub bare_jid: String,
    /// The SASL mechanism that was used.
    pub mech: &'static str,
}

impl Session {
    /// Sends `</stream:stream>`, waits for the server's closing tag (or EOF), then closes TLS.
    pub async fn close(mut self) -> Result<()> {
        self.xs.send(b"</stream:stream>").await?;
        loop {
            match self.xs.next().await {
                Ok(StreamEvent::Close) | Err(Error::Closed) => break,
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        // The server may already have closed the socket; a failing shutdown is not an error.
        let _ = self.xs.io.shutdown().await;
        Ok(())
    }
}

/// A byte stream with the incremental XMPP parser on top.
#[derive(Debug)]
pub struct XmlStream<S> {
    pub io: S,
    parser: StreamParser,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    pub fn new(io: S) -> Self {
        XmlStream::with_parser(io, StreamParser::new(Limits::default()))
    }

    /// Wraps `io`, keeping a parser that already holds state (STARTTLS keeps it to reset).
    pub fn with_parser(io: S, parser: StreamParser) -> Self {
        XmlStream {
            io,
            parser,
            buf: Vec::new(),
        }
    }

    pub fn into_parts(self) -> (S, StreamParser) {
        (self.io, self.parser)
    }

    /// Forgets the parser state for a stream restart.
    pub fn reset(&mut self) {
        self.parser.reset();
    }

    /// Releases spare buffer capacity (the connection is going idle).
    pub fn shrink(&mut self) {
        self.buf = Vec::new();
        self.parser.shrink();
    }

    /// Writes and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads once from the socket and feeds the parser; 0 means EOF. Cancel-safe.
    pub async fn read_some(&mut self) -> Result<usize> {
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        let n = self.io.read(&mut self.buf).await?;
        if let Some(data) = self.buf.get(..n) {
            self.parser.feed(data);
        }
        Ok(n)
    }

    /// The next complete event already buffered, if any.
    pub fn poll_event(&mut self) -> Result<Option<StreamEvent>> {
        Ok(self.parser.next_event()?)
    }

    /// The next event, reading as needed; EOF is `Error::Closed`.
    pub async fn next(&mut self) -> Result<StreamEvent> {
        loop {
            if let Some(ev) = self.parser.next_event()? {
                return Ok(ev);
            }
            if self.read_some().await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// The next stanza or nonza; a stream error or a close is an error.
    pub async fn stanza(&mut self) -> Result<Element> {
        match self.next().await? {
            StreamEvent::Stanza(el) => {
                if el.is("error", ns::STREAM) {
                    Err(stream_error(&el))
                } else {
                    Ok(el)
                }
            }
            StreamEvent::Close => Err(Error::Closed),
            StreamEvent::Open(_) => Err(Error::Negotiation("unexpected-stream-header")),
        }
    }

    /// Sends a stream header (after a reset of the parser) and returns the features.
    pub async fn open(&mut self, domain: &str) -> Result<Element> {
        self.reset();
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            escape(domain)
        );
        self.send(header.as_bytes()).await?;
        match self.next().await? {
            StreamEvent::Open(_) => {}
            StreamEvent::Close => return Err(Error::Closed),
            StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => return Err(stream_error(&el)),
            StreamEvent::Stanza(_) => return Err(Error::Negotiation("expected-stream-header")),
        }
        let features = self.stanza().await?;
        if !features.is("features", ns::STREAM) {
            return Err(Error::Negotiation("expected-features"));
        }
        Ok(features)
    }

    /// Waits for the IQ reply with this id, skipping anything else.
    pub async fn iq_reply(&mut self, id: &str) -> Result<Element> {
        loop {
            let el = self.stanza().await?;
            if el.is("iq", ns::CLIENT) && el.get_attr("id") == Some(id) {
                return Ok(el);
            }
        }
    }
}

/// The stream error condition, as an error.
pub fn stream_error(el: &Element) -> Error {
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
        .map_or("unknown", |c| c.name());
    Error::Stream(cond.to_string())
}

/// Escapes text for an XML attribute value or character data.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Picks the mechanism to use among those the server offers.
pub fn choose_mechanism(features: &Element, want: Mech) -> Result<(ScramHash, bool)> {
    let offered: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.name() == "mechanism")
                .map(|c| c.text())
                .collect()
        })
        .unwrap_or_default();
    let has = |name: &str| offered.iter().any(|m| m.trim() == name);
    let wanted: &[(ScramHash, bool)] = match want {
        Mech::Auto => &[(ScramHash::Sha256, false), (ScramHash::Sha1, false)],
        Mech::ScramSha256 => &[(ScramHash::Sha256, false)],
        Mech::ScramSha1 => &[(ScramHash::Sha1, false)],
        Mech::ScramSha256Plus => &[(ScramHash::Sha256, true)],
        Mech::ScramSha1Plus => &[(ScramHash::Sha1, true)],
    };
    wanted
        .iter()
        .copied()
        .find(|(h, plus)| has(h.mechanism(*plus)))
        .ok_or(Error::Negotiation("mechanism-not-offered"))
}

/// RFC 9266 `tls-exporter` channel binding data.
fn tls_exporter<S>(io: &TlsStream<S>) -> Option<Vec<u8>> {
    io.get_ref()
        .1
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

fn sasl_text(el: &Element) -> Result<Vec<u8>> {
    let t = el.text();
    let t = t.trim();
    if t.is_empty() || t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t).map_err(|_| Error::Auth("bad-base64".into()))
}

fn sasl_failure(el: &Element) -> Error {
    let cond = el
        .children()
        .find(|c| c.name() != "text")
        .map_or("unknown", |c| c.name())
        .to_string();
    Error::Auth(cond)
}

async fn authenticate<S>(
    xs: &mut XmlStream<TlsStream<S>>,
    features: &Element,
    t: &Target,
    username: &str,
) -> Result<&'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (hash, plus) = choose_mechanism(features, t.mech)?;
    let mech = hash.mechanism(plus);
    let cb = if plus {
        Some(tls_exporter(&xs.io).ok_or(Error::Negotiation("no-tls-exporter"))?)
    } else {
        None
    };
    let mut scram = ScramClient::new(hash, username, &t.password, cb, false);
    let first = B64.encode(scram.client_first());
    xs.send(
        format!(
            "<auth xmlns='{}' mechanism='{mech}'>{first}</auth>",
            ns::SASL
        )
        .as_bytes(),
    )
    .await?;
    let mut sent_final = false;
    let mut verified = false;
    loop {
        let el = xs.stanza().await?;
        if el.ns() != ns::SASL {
            return Err(Error::Negotiation("unexpected-during-sasl"));
        }
        match el.name() {
            "challenge" if !sent_final => {
                let data = sasl_text(&el)?;
                let fin = scram
                    .client_final(&data)
                    .map_err(|e| Error::Auth(e.to_string()))?;
                let fin = B64.encode(fin);
                xs.send(format!("<response xmlns='{}'>{fin}</response>", ns::SASL).as_bytes())
                    .await?;
                sent_final = true;
            }
            "challenge" => {
                // Server-final-message as a challenge (RFC 6120 §6.3.10 allows it): verify,
                // then answer with an empty response.
                let data = sasl_text(&el)?;
                scram
                    .verify_server_final(&data)
                    .map_err(|e| Error::Auth(e.to_string()))?;
                verified = true;
                xs.send(format!("<response xmlns='{}'/>", ns::SASL).as_bytes())
                    .await?;
            }
            "success" => {
                let data = sasl_text(&el)?;
                if !data.is_empty() {
                    scram
                        .verify_server_final(&data)
                        .map_err(|e| Error::Auth(e.to_string()))?;
                    verified = true;
                }
                if !verified || !sent_final {
                    return Err(Error::Auth("no-server-signature".into()));
                }
                return Ok(mech);
            }
            "failure" => return Err(sasl_failure(&el)),
            _ => return Err(Error::Negotiation("unexpected-during-sasl")),
        }
    }
}

async fn bind<S>(xs: &mut XmlStream<S>, features: &Element, resource: &str) -> Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if features.get_child("bind", ns::BIND).is_none() {
        return Err(Error::Negotiation("no-bind"));
    }
    let iq = Element::new("iq", ns::CLIENT)
        .attr("type", "set")
        .attr("id", "bind1")
        .child(
            Element::new("bind", ns::BIND)
                .child(Element::new("resource", ns::BIND).text_node(resource)),
        );
    xs.send(&iq.to_bytes_in(ns::CLIENT)).await?;
    let reply = xs.iq_reply("bind1").await?;
    let jid = reply
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text())
        .filter(|j| reply.get_attr("type") == Some("result") && !j.is_empty())
        .ok_or(Error::Negotiation("bind"))?;
    // RFC 3921 session establishment, for servers that still require it.
    if let Some(session) = features.get_child("session", ns::SESSION)
        && session.get_child("optional", ns::SESSION).is_none()
    {
        xs.send(b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
            .await?;
        let r = xs.iq_reply("sess1").await?;
        if r.get_attr("type") != Some("result") {
            return Err(Error::Negotiation("session"));
        }
    }
    Ok(jid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn features(mechs: &[&str]) -> Element {
        let mut m = Element::new("mechanisms", ns::SASL);
        for name in mechs {
            m.append_child(Element::new("mechanism", ns::SASL).text_node(*name));
        }
        Element::new("features", ns::STREAM).child(m)
    }

    #[test]
    fn auto_prefers_sha256_and_never_plus() {
        let f = features(&[
            "SCRAM-SHA-1",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256-PLUS",
            "PLAIN",
        ]);
        assert_eq!(
            choose_mechanism(&f, Mech::Auto).unwrap(),
            (ScramHash::Sha256, false)
        );
        let f = features(&["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN"]);
        assert_eq!(
            choose_mechanism(&f, Mech::Auto).unwrap(),
            (ScramHash::Sha1, false)
        );
        assert_eq!(
            choose_mechanism(&f, Mech::ScramSha1Plus).unwrap(),
            (ScramHash::Sha1, true)
        );
        assert!(choose_mechanism(&f, Mech::ScramSha256).is_err());
        assert!(choose_mechanism(&features(&["PLAIN"]), Mech::Auto).is_err());
    }

    #[test]
    fn escapes_and_reads_errors() {
        assert_eq!(escape("a'b<c>&\""), "a&apos;b&lt;c&gt;&amp;&quot;");
        let err = Element::new("error", ns::STREAM)
            .child(Element::new("text", ns::STREAMS_ERR).text_node("x"))
            .child(Element::new("policy-violation", ns::STREAMS_ERR));
        assert_eq!(stream_error(&err).kind(), "stream-error/policy-violation");
        let fail =
            Element::new("failure", ns::SASL).child(Element::new("not-authorized", ns::SASL));
        assert_eq!(sasl_failure(&fail).kind(), "auth/not-authorized");
        let ok = Element::new("success", ns::SASL).text_node("dj1hYmM=");
        assert_eq!(sasl_text(&ok).unwrap(), b"v=abc");
    }
}
