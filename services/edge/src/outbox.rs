//! The queue between the session service and one client connection.
//!
//! A bounded channel would pre-allocate a block of slots for every connection, idle or not.
//! This queue allocates only while stanzas wait and gives the memory back once drained, so an
//! idle connection pays for two small structs. `send` never blocks: past the capacity it
//! reports `Full`, and once the connection is gone it reports `Closed`.
//!
//! Each queued stanza carries its `edge.deliver` span, opened when the session hands it over
//! (in the trace context current then: the session's span in-process, the session node's
//! context that the gRPC client made current in a cluster) and ended by the connection once
//! the stanza is written. Without a tracing exporter the span is disabled and costs nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use session::{ClientSink, SinkError, ToClient};
use tokio::sync::Notify;
use tracing::Span;

/// A drained queue keeps at most this many slots of capacity.
const KEEP_SLOTS: usize = 4;

struct State {
    queue: VecDeque<(ToClient, Span)>,
    /// The connection (receiver) is gone.
    receiver_gone: bool,
    /// The session dropped its sink: nothing more will come.
    sender_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

/// The session's end.
pub(crate) struct OutboxSink(Arc<Shared>);

/// The connection's end.
pub(crate) struct OutboxReceiver(Arc<Shared>);

pub(crate) fn outbox(capacity: usize) -> (Arc<OutboxSink>, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_gone: false,
            sender_gone: false,
        }),
        notify: Notify::new(),
        capacity: capacity.max(1),
    });
    (Arc::new(OutboxSink(shared.clone())), OutboxReceiver(shared))
}

impl ClientSink for OutboxSink {
    fn send(&self, item: ToClient) -> Result<(), SinkError> {
        let Ok(mut st) = self.0.state.lock() else {
            return Err(SinkError::Closed);
        };
        if st.receiver_gone {
            return Err(SinkError::Closed);
        }
        if st.queue.len() >= self.0.capacity {
            return Err(SinkError::Full);
        }
        let span = deliver_span(&item);
        st.queue.push_back((item, span));
        drop(st);
        self.0.notify.notify_one();
        Ok(())
    }
}

/// The `edge.deliver` span of a client stanza (none for `<enabled/>` and closes).
fn deliver_span(item: &ToClient) -> Span {
    match item {
        ToClient::Stanza(el) if crate::metrics::StanzaKind::of(el).is_some() => {
            tracing::info_span!(
                target: session::TRACE_TARGET,
                "edge.deliver",
                "stanza.kind" = el.name(),
                "stanza.type" = el.get_attr("type"),
            )
        }
        _ => Span::none(),
    }
}

impl Drop for OutboxSink {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.sender_gone = true;
        }
        self.0.notify.notify_one();
    }
}

impl OutboxReceiver {
    /// The next item, with its span, without waiting.
    pub(crate) fn try_recv(&self) -> Option<(ToClient, Span)> {
        let mut st = self.0.state.lock().ok()?;
        let item = st.queue.pop_front();
        if st.queue.is_empty() && st.queue.capacity() > KEEP_SLOTS {
            st.queue = VecDeque::new();
        }
        item
    }

    /// The next item; `None` once the session dropped its sink and the queue is empty.
    /// Cancel-safe: an item is only taken out when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<(ToClient, Span)> {
        loop {
            let notified = self.0.notify.notified();
            {
                let st = self.0.state.lock().ok()?;
                if st.queue.is_empty() && st.sender_gone {
                    return None;
                }
            }
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            notified.await;
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.receiver_gone = true;
            st.queue.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp::{Element, StreamErrorCondition};

    fn stanza(n: u32) -> ToClient {
        ToClient::Stanza(Element::new("message", "jabber:client").attr("id", n.to_string()))
    }

    #[tokio::test]
    async fn delivers_in_order_and_reports_full_and_closed() {
        let (sink, mut rx) = outbox(3);
        for n in 0..3 {
            assert_eq!(sink.send(stanza(n)), Ok(()));
        }
        assert_eq!(sink.send(stanza(9)), Err(SinkError::Full));
        for n in 0..3 {
            assert_eq!(rx.recv().await.map(|(i, _)| i), Some(stanza(n)));
        }
        assert!(rx.try_recv().is_none());
        sink.send(ToClient::Close(StreamErrorCondition::Conflict))
            .ok();
        drop(sink);
        assert_eq!(
            rx.recv().await.map(|(i, _)| i),
            Some(ToClient::Close(StreamErrorCondition::Conflict))
        );
        assert!(rx.recv().await.is_none(), "sender gone and queue empty");

        let (sink, rx) = outbox(3);
        drop(rx);
        assert_eq!(sink.send(stanza(1)), Err(SinkError::Closed));
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver_and_releases_memory() {
        let (sink, mut rx) = outbox(1000);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.map(|(i, _)| i);
            let mut n = 1;
            while rx.try_recv().is_some() {
                n += 1;
            }
            (first, n, rx)
        });
        tokio::task::yield_now().await;
        for n in 0..100 {
            sink.send(stanza(n)).ok();
        }
        let (first, _, rx) = waiter.await.unwrap_or((None, 0, outbox(1).1));
        assert_eq!(first, Some(stanza(0)));
        let cap =
            rx.0.state
                .lock()
                .map(|s| s.queue.capacity())
                .unwrap_or(usize::MAX);
        assert!(
            cap <= KEEP_SLOTS,
            "a drained queue gives its memory back: {cap}"
        );
    }
}
