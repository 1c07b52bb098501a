//! A connection as the hub sees it: an id, a user, a bounded send queue and a way to ask
//! the transport to close it. Transports own the socket; the hub only holds this handle.
//!
//! The send queue is a `VecDeque` behind a lock plus a waker, not a tokio `mpsc`
//! channel: an mpsc channel allocates ~1.5 KiB per connection up front (its shared state
//! and a first block of 32 slots), which is more than a third of the memory budget of an
//! idle connection. An empty `VecDeque` allocates nothing, and fan-out is one uncontended
//! lock and one wake-up per delivery either way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_proto::CloseCode;
use ferry_proto::envelope::ClientInfo;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TryRecvError;

use crate::publication::{Delivery, Push};

/// One item in a connection's send queue. Both variants are cheap to clone: the bytes are
/// shared, never copied per subscriber.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A publication; each transport picks its encoding (made once per fan-out and
    /// shared).
    Publication(Arc<Delivery>),
    /// Another push (`join`, `leave`, `direct`), encoded by each transport like a
    /// publication (once per codec, shared).
    Push(Arc<Push>),
    /// A reply that became ready after its command's turn (a `publish` answered once
    /// stored), as the complete frame of the connection's transport. Boxed: `Outbound`
    /// stays two words, and it sits in every connection task's select.
    Reply(Box<bytes::Bytes>),
}

impl Outbound {
    /// The bytes this item costs in a send queue (its encoded size, roughly).
    fn queued_bytes(&self) -> usize {
        match self {
            Outbound::Publication(d) => d.publication().encoded_size(),
            Outbound::Push(push) => push.encoded_size(),
            Outbound::Reply(frame) => frame.len(),
        }
    }
}

/// What became of an item offered to a send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the peer.
    Queued,
    /// This item overflowed the queue (in frames or bytes): the connection is asked to
    /// close with 1013 and the item is dropped. Said once per connection.
    Overflowed,
    /// Dropped: the connection is closing or gone.
    Dropped,
}

/// Why and how a connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The WebSocket close code.
    pub code: CloseCode,
    /// The close reason (at most 123 bytes on the wire).
    pub reason: String,
}

/// The hub's handle on a live connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// Process-unique numeric id.
    pub id: u64,
    /// The id clients see (`info.client`): 16 hex digits, unique per connection, derived
    /// from `id` with a per-process key (see `Hub::find_connections`).
    pub client_id: Arc<str>,
    user: Mutex<Arc<str>>,
    queue: Mutex<Queue>,
    queue_limit: usize,
    queue_bytes_limit: usize,
    queue_waker: AtomicWaker,
    close: Mutex<Option<CloseRequest>>,
    close_notify: Notify,
    pub(crate) subscriptions: Mutex<Vec<Arc<str>>>,
}

impl ConnHandle {
    pub(crate) fn new(
        id: u64,
        client_id: &str,
        user: &str,
        queue: usize,
        queue_bytes: usize,
    ) -> (Arc<ConnHandle>, Receiver) {
        let handle = ConnHandle {
            id,
            client_id: client_id.into(),
            user: Mutex::new(user.into()),
            queue: Mutex::new(Queue::default()),
            queue_limit: queue.max(1),
            queue_bytes_limit: queue_bytes.max(1),
            queue_waker: AtomicWaker::new(),
            close: Mutex::new(None),
            close_notify: Notify::new(),
            subscriptions: Mutex::new(Vec::new()),
        };
        let handle = Arc::new(handle);
        let rx = Receiver {
            conn: handle.clone(),
        };
        (handle, rx)
    }

    /// The connection's user; empty when anonymous or not yet authenticated.
    pub fn user(&self) -> Arc<str> {
        self.user.lock().clone()
    }

    pub(crate) fn set_user(&self, user: &str) {
        *self.user.lock() = user.into();
    }

    /// `{user, client}` as shown to others.
    pub fn info(&self) -> ClientInfo {
        ClientInfo {
            user: self.user().to_string(),
            client: self.client_id.to_string(),
        }
    }

    /// Queue an item without waiting. A full queue (`send_queue_size` frames or
    /// `send_queue_bytes` bytes) means the peer reads too slowly: the connection is asked
    /// to close with 1013, its queue is emptied, and the item is dropped (the client
    /// recovers from history when it reconnects).
    pub fn push(&self, item: Outbound) -> Pushed {
        let mut queue = self.queue.lock();
        if queue.closed || queue.overflowed {
            return Pushed::Dropped;
        }
        let size = item.queued_bytes();
        if queue.items.len() >= self.queue_limit
            || queue.bytes.saturating_add(size) > self.queue_bytes_limit
        {
            // Nothing queued will be sent: the close comes first (1013 reaches the peer
            // as soon as its socket takes it), so the memory is given back now.
            queue.overflowed = true;
            queue.items = VecDeque::new();
            queue.bytes = 0;
            drop(queue);
            self.request_close(CloseCode::TRY_AGAIN_LATER, "slow consumer: send queue full");
            self.queue_waker.wake();
            return Pushed::Overflowed;
        }
        queue.bytes += size;
        queue.items.push_back(item);
        drop(queue);
        // A no-op (one atomic operation) while the task is already woken and not yet
        // polled: a burst wakes the task once.
        self.queue_waker.wake();
        Pushed::Queued
    }

    /// Ask the transport to close the connection. The first request wins.
    pub fn request_close(&self, code: CloseCode, reason: &str) {
        let mut close = self.close.lock();
        if close.is_none() {
            *close = Some(CloseRequest {
                code,
                reason: reason.chars().take(100).collect(),
            });
            self.close_notify.notify_one();
        }
    }

    /// The pending close request, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.close.lock().clone()
    }

    /// Wait until someone asks this connection to close.
    pub async fn closed(&self) -> CloseRequest {
        loop {
            if let Some(req) = self.close_request() {
                return req;
            }
            self.close_notify.notified().await;
        }
    }

    /// The channels this connection is subscribed to.
    pub fn subscriptions(&self) -> Vec<Arc<str>> {
        self.subscriptions.lock().clone()
    }
}

/// A send queue's contents.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// The sum of the items' `queued_bytes`.
    bytes: usize,
    /// The receiver is gone: pushes fail.
    closed: bool,
    /// The queue overflowed once: the connection is closing, pushes fail.
    overflowed: bool,
}

/// A drained queue keeps at most this much capacity, so a connection that once had a
/// burst queued goes back to a small footprint.
const QUEUE_KEEP_CAPACITY: usize = 16;

/// The receiving end of a connection's send queue, owned by the transport task.
#[derive(Debug)]
pub struct Receiver {
    conn: Arc<ConnHandle>,
}

impl Receiver {
    /// The next queued item, waiting while the queue is empty. Always `Some` (the
    /// `Option` keeps the shape of a channel's `recv`).
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll for the next queued item.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Ok(item) = self.try_recv() {
            return Poll::Ready(Some(item));
        }
        self.conn.queue_waker.register(cx.waker());
        // A push between the first look and the registration would not have woken us.
        match self.try_recv() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(_) => Poll::Pending,
        }
    }

    /// The next queued item if there is one now, else `TryRecvError::Empty` (the same
    /// shape as a channel's `try_recv`; never `Disconnected`, the hub holds the sender).
    pub fn try_recv(&mut self) -> Result<Outbound, TryRecvError> {
        let mut queue = self.conn.queue.lock();
        let item = queue.items.pop_front();
        if let Some(item) = &item {
            queue.bytes = queue.bytes.saturating_sub(item.queued_bytes());
        }
        if queue.items.is_empty() && queue.items.capacity() > QUEUE_KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        item.ok_or(TryRecvError::Empty)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut queue = self.conn.queue.lock();
        queue.closed = true;
        queue.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: String) -> ferry_proto::Data {
        serde_json::value::RawValue::from_string(json)
            .expect("json")
            .into()
    }

    fn frame(n: usize) -> Outbound {
        Outbound::Push(Push::direct(data(n.to_string())))
    }

    #[tokio::test]
    async fn queue_is_bounded_ordered_and_closed_with_its_receiver() {
        let (conn, mut rx) = ConnHandle::new(1, "c1", "u", 3, 1 << 20);
        for n in 0..3 {
            assert_eq!(conn.push(frame(n)), Pushed::Queued);
        }
        for n in 0..2 {
            match rx.recv().await {
                Some(Outbound::Push(p)) => match p.body() {
                    crate::publication::PushBody::Direct { data } => {
                        assert_eq!(data.to_json().get(), n.to_string())
                    }
                    other => panic!("expected direct {n}, got {other:?}"),
                },
                other => panic!("expected frame {n}, got {other:?}"),
            }
        }
        assert_eq!(conn.push(frame(3)), Pushed::Queued);
        assert_eq!(conn.push(frame(4)), Pushed::Queued);
        // Full: the connection is asked to close with 1013 and the queue is given up.
        assert_eq!(conn.push(frame(5)), Pushed::Overflowed);
        assert_eq!(
            conn.close_request().map(|r| r.code),
            Some(CloseCode::TRY_AGAIN_LATER)
        );
        assert_eq!(
            conn.push(frame(6)),
            Pushed::Dropped,
            "overflow is said once"
        );
        assert!(
            rx.try_recv().is_err(),
            "nothing queued survives an overflow"
        );
        drop(rx);
        assert_eq!(
            conn.push(frame(9)),
            Pushed::Dropped,
            "no receiver: pushes fail"
        );
    }

    #[tokio::test]
    async fn queue_is_bounded_in_bytes_too() {
        // Each push counts 64 bytes plus its data: 120 here.
        let (conn, mut rx) = ConnHandle::new(1, "c1", "u", 1000, 250);
        let big = || Outbound::Push(Push::direct(data(format!("\"{}\"", "x".repeat(54)))));
        assert_eq!(conn.push(big()), Pushed::Queued);
        assert_eq!(conn.push(big()), Pushed::Queued);
        assert!(rx.try_recv().is_ok(), "taking one gives its bytes back");
        assert_eq!(conn.push(big()), Pushed::Queued);
        assert_eq!(conn.push(big()), Pushed::Overflowed, "360 bytes > 250");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_drained_queue_gives_memory_back() {
        let (conn, mut rx) = ConnHandle::new(1, "c1", "u", 1000, 1 << 20);
        let pusher = conn.clone();
        let waiter = tokio::spawn(async move { rx.recv().await.map(|_| rx) });
        tokio::task::yield_now().await;
        assert_eq!(pusher.push(frame(1)), Pushed::Queued);
        let mut rx = waiter.await.expect("join").expect("item");
        for n in 0..100 {
            assert_eq!(conn.push(frame(n)), Pushed::Queued);
        }
        while rx.try_recv().is_ok() {}
        assert!(conn.queue.lock().items.capacity() <= QUEUE_KEEP_CAPACITY);
    }
}
