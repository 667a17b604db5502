//! The task that drives one logged-in connection: it writes what the scenario asks for and
//! reads everything the server sends, recording deliveries and their latency.
//!
//! Messages carry `lt SEQ NANOS` in their `<body/>` and presence updates carry it in their
//! `<status/>`, where NANOS is the send time relative to the run's epoch (same process, same
//! monotonic clock, so the difference is the delivery latency).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use xmpp::parser::StreamEvent;
use xmpp::{Element, ns};

use crate::client::{Session, escape, stream_error};
use crate::config::Target;
use crate::error::Error;
use crate::metrics::Metrics;

/// What a scenario asks a session to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Send 1:1 chat message `seq` to user `to`.
    Chat { to: u32, seq: u64 },
    /// Send presence update `seq`.
    Presence { seq: u64 },
    /// Ask user `to` for a presence subscription.
    Subscribe { to: u32 },
    /// Send a whitespace keepalive.
    Keepalive,
    /// Close the stream and end the task.
    Close,
}

/// Commands queued per session before the scenario sees back-pressure.
pub const CMD_QUEUE: usize = 64;

/// Where chat message `seq` goes: from user `seq % users` to one of its `contacts`
/// successors, cycling through them.
pub fn chat_route(seq: u64, users: u32, contacts: u32) -> (u32, u32) {
    let n = u64::from(users.max(1));
    let k = u64::from(contacts.max(1));
    let from = seq % n;
    let offset = 1 + (seq / n) % k;
    let to = (from + offset) % n;
    (
        u32::try_from(from).unwrap_or(0),
        u32::try_from(to).unwrap_or(0),
    )
}

/// What every session of a scenario shares.
#[derive(Debug)]
pub struct Shared {
    pub target: Arc<Target>,
    pub metrics: Arc<Metrics>,
    /// Set for chat: lets recipients check that each message reached the right user.
    pub chat: Option<(u32, u32)>,
    /// Padding appended to every message body.
    pub pad: String,
    /// XEP-0198 on every session (`<enable/>` after login, `<a/>` for each `<r/>`).
    pub sm: bool,
}

const NS_SM: &str = "urn:xmpp:sm:3";

/// Parses `lt SEQ NANOS` (as written by `stamp`).
pub fn parse_stamp(text: &str) -> Option<(u64, u64)> {
    let mut it = text.strip_prefix("lt ")?.split_ascii_whitespace();
    let seq = it.next()?.parse().ok()?;
    let ns = it.next()?.parse().ok()?;
    Some((seq, ns))
}

fn stamp(seq: u64, nanos: u64) -> String {
    format!("lt {seq} {nanos}")
}

/// Runs a session until `Cmd::Close`, the command channel closing, or the connection ending.
/// The caller has counted the session in `Metrics::online`; this takes it out at the end.
pub async fn run(mut s: Session, idx: u32, mut rx: mpsc::Receiver<Cmd>, shared: Arc<Shared>) {
    let m = Arc::clone(&shared.metrics);
    let outcome = drive(&mut s, idx, &mut rx, &shared).await;
    m.online.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Ok(true) => {
            m.close.attempt();
            let timeout = std::time::Duration::from_secs_f64(shared.target.timeout_secs);
            match tokio::time::timeout(timeout, s.close()).await {
                Ok(Ok(())) => m.close.succeed(),
                Ok(Err(e)) => {
                    m.close.fail();
                    m.error(format!("close/{}", e.kind()));
                }
                Err(_) => {
                    m.close.fail();
                    m.error("close/timeout");
                }
            }
        }
        Ok(false) => m.error("session/closed-by-server"),
        Err(e) => m.error(format!("session/{}", e.kind())),
    }
}

/// Ok(true): we were asked to close; Ok(false): the server closed the stream.
async fn drive(
    s: &mut Session,
    idx: u32,
    rx: &mut mpsc::Receiver<Cmd>,
    shared: &Shared,
) -> Result<bool, Error> {
    // XEP-0198: stanzas received since `<enabled/>`; `None` until then.
    let mut sm_in: Option<u32> = None;
    if shared.sm {
        s.xs.send(b"<enable xmlns='urn:xmpp:sm:3'/>").await?;
    }
    loop {
        tokio::select! {
            read = s.xs.read_some() => {
                if read? == 0 {
                    return Ok(false);
                }
                while let Some(ev) = s.xs.poll_event()? {
                    match ev {
                        StreamEvent::Stanza(el) if el.ns() == NS_SM => match el.name() {
                            "enabled" => sm_in = Some(0),
                            "r" => {
                                let h = sm_in.unwrap_or(0);
                                s.xs.send(format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>").as_bytes()).await?;
                            }
                            "failed" => return Err(Error::Negotiation("sm-failed")),
                            _ => {}
                        },
                        StreamEvent::Stanza(el) => {
                            if let Some(n) = &mut sm_in
                                && el.ns() == ns::CLIENT
                            {
                                *n = n.wrapping_add(1);
                            }
                            handle_stanza(s, idx, el, shared).await?
                        }
                        StreamEvent::Close => return Ok(false),
                        StreamEvent::Open(_) => return Err(Error::Negotiation("unexpected-stream-header")),
                    }
                }
            }
            cmd = rx.recv() => {
                match cmd {
                    None | Some(Cmd::Close) => return Ok(true),
                    Some(cmd) => send_cmd(s, cmd, shared).await?,
                }
            }
        }
    }
}

async fn send_cmd(s: &mut Session, cmd: Cmd, shared: &Shared) -> Result<(), Error> {
    let t = &shared.target;
    let m = &shared.metrics;
    let out = match cmd {
        Cmd::Chat { to, seq } => {
            let body = stamp(seq, m.now_ns());
            format!(
                "<message to='{}' type='chat' id='m{seq}'><body>{body}{}</body></message>",
                escape(&t.bare_jid(to)),
                shared.pad
            )
        }
        Cmd::Presence { seq } => {
            let show = if seq % 2 == 0 { "away" } else { "chat" };
            let status = stamp(seq, m.now_ns());
            format!("<presence><show>{show}</show><status>{status}</status></presence>")
        }
        Cmd::Subscribe { to } => {
            format!(
                "<presence to='{}' type='subscribe'/>",
                escape(&t.bare_jid(to))
            )
        }
        Cmd::Keepalive => " ".to_string(),
        Cmd::Close => return Ok(()),
    };
    s.xs.send(out.as_bytes()).await
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

async fn handle_stanza(
    s: &mut Session,
    idx: u32,
    el: Element,
    shared: &Shared,
) -> Result<(), Error> {
    let m = &shared.metrics;
    if el.ns() == ns::STREAM && el.name() == "error" {
        return Err(stream_error(&el));
    }
    if el.ns() != ns::CLIENT {
        return Ok(());
    }
    let ty = el.get_attr("type").unwrap_or("");
    match el.name() {
        "message" => {
            if ty == "error" {
                m.message.fail();
                m.error(format!("message/{}", error_condition(&el)));
                return Ok(());
            }
            let Some(body) = el.get_child("body", ns::CLIENT) else {
                return Ok(());
            };
            let Some((seq, sent)) = parse_stamp(&body.text()) else {
                return Ok(());
            };
            if !m.first_receipt(seq) {
                m.error("message/duplicate");
                return Ok(());
            }
            if let Some((users, contacts)) = shared.chat
                && chat_route(seq, users, contacts).1 != idx
            {
                m.message.fail();
                m.error("message/misrouted");
                return Ok(());
            }
            m.message.succeed();
            m.message_latency.record(m.since_ns(sent));
        }
        "presence" => match ty {
            "subscribe" => {
                if let Some(from) = el.get_attr("from") {
                    let reply =
                        format!("<presence to='{}' type='subscribed'/>", escape(bare(from)));
                    s.xs.send(reply.as_bytes()).await?;
                }
            }
            "subscribed" => m.subscribe.succeed(),
            "error" => m.error(format!("presence/{}", error_condition(&el))),
            "" => {
                let Some(status) = el.get_child("status", ns::CLIENT) else {
                    return Ok(());
                };
                let Some((_, sent)) = parse_stamp(&status.text()) else {
                    return Ok(());
                };
                let from = el.get_attr("from").map(bare).unwrap_or("");
                if from == s.bare_jid {
                    m.presence.succeed();
                } else {
                    m.presence_delivery.succeed();
                    m.presence_latency.record(m.since_ns(sent));
                }
            }
            _ => {}
        },
        "iq" if ty == "get" || ty == "set" => {
            // Answer pings and roster pushes; refuse anything else, as RFC 6120 §8.2.3 asks.
            let mut reply = Element::new("iq", ns::CLIENT);
            if let Some(id) = el.get_attr("id") {
                reply.set_attr("id", id);
            }
            if let Some(from) = el.get_attr("from") {
                reply.set_attr("to", from);
            }
            let known = el.get_child("ping", ns::PING).is_some()
                || (ty == "set" && el.get_child("query", ns::ROSTER).is_some());
            if known {
                reply.set_attr("type", "result");
            } else {
                reply.set_attr("type", "error");
                reply.append_child(xmpp::StanzaErrorCondition::ServiceUnavailable.to_element(None));
            }
            s.xs.send(&reply.to_bytes_in(ns::CLIENT)).await?;
        }
        _ => {}
    }
    Ok(())
}

fn error_condition(el: &Element) -> &'static str {
    xmpp::error::stanza_error_condition(el).map_or("error", |c| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cycle_through_successors() {
        // 5 users, 2 contacts: seq 0..5 go to +1, seq 5..10 go to +2, then +1 again.
        assert_eq!(chat_route(0, 5, 2), (0, 1));
        assert_eq!(chat_route(4, 5, 2), (4, 0));
        assert_eq!(chat_route(5, 5, 2), (0, 2));
        assert_eq!(chat_route(9, 5, 2), (4, 1));
        assert_eq!(chat_route(10, 5, 2), (0, 1));
        for seq in 0..1000 {
            let (from, to) = chat_route(seq, 7, 6);
            assert_ne!(from, to);
            assert!(from < 7 && to < 7);
        }
    }

    #[test]
    fn stamps_round_trip() {
        let s = stamp(42, 123_456_789);
        assert_eq!(parse_stamp(&s), Some((42, 123_456_789)));
        assert_eq!(parse_stamp(&format!("{s}xxxx")), None);
        assert_eq!(parse_stamp(&format!("{s} xxxx")), Some((42, 123_456_789)));
        assert_eq!(parse_stamp("hello"), None);
        assert_eq!(parse_stamp("lt x 1"), None);
    }
}
