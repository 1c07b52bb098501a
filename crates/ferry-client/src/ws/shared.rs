//! State shared between the `WebSocket` handles and the connection task: the outgoing
//! queue, the requests waiting for a reply, the observable state and what is known about
//! the last close.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::reconnect::ConnectionState;
use tokio::sync::{Notify, oneshot};

use super::error::{Error, ErrorKind};
use super::message::Message;
use super::state::{StateCell, lock};

/// Extracts the correlation id of a message (outgoing request and incoming reply alike).
pub(crate) type IdExtractor = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;

/// A close frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (1005 when the frame had none).
    pub code: u16,
    /// The reason text (possibly empty).
    pub reason: String,
}

/// One message waiting to be written.
pub(crate) struct Outgoing {
    pub message: Message,
    /// The id of the request this message carries, if it is one.
    pub request: Option<String>,
    /// Only send on this connection (see [`Shared::connection_seq`]); on any later one
    /// the message is dropped and its request fails with `CONNECTION_LOST`.
    pub connection: Option<u64>,
}

struct Pending {
    reply: oneshot::Sender<Result<Message, Error>>,
    /// Written to a connection: if that connection drops, the reply will never come.
    sent: bool,
}

#[derive(Default)]
struct Info {
    protocol: Option<String>,
    last_close: Option<CloseInfo>,
    last_error: Option<Error>,
}

pub(crate) struct Shared {
    pub state: StateCell,
    queue: Mutex<VecDeque<Outgoing>>,
    capacity: usize,
    /// Woken when something is queued.
    pub wake: Notify,
    pending: Mutex<HashMap<String, Pending>>,
    pub id_of: IdExtractor,
    info: Mutex<Info>,
    /// Counts opened connections: 1 for the first, +1 per reconnect.
    connection_seq: AtomicU64,
}

impl Shared {
    pub fn new(capacity: usize, id_of: IdExtractor) -> Self {
        Shared {
            state: StateCell::new(ConnectionState::Connecting),
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            id_of,
            info: Mutex::new(Info::default()),
            connection_seq: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> ConnectionState {
        self.state.get()
    }

    pub fn set_state(&self, state: ConnectionState) {
        self.state.set(state);
    }

    pub fn connection_seq(&self) -> u64 {
        self.connection_seq.load(Ordering::Acquire)
    }

    /// A connection opened; returns its sequence number.
    pub fn next_connection(&self) -> u64 {
        self.connection_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Fail one request with `CONNECTION_LOST`.
    pub fn fail_request(&self, id: &str, why: &str) {
        if let Some(p) = lock(&self.pending).remove(id) {
            let _ = p
                .reply
                .send(Err(Error::new(ErrorKind::ConnectionLost, why.to_string())));
        }
    }

    /// Queue a message; fails when the queue is full or the socket is closed for good.
    pub fn enqueue(&self, item: Outgoing) -> Result<(), Error> {
        if matches!(
            self.state(),
            ConnectionState::Closed | ConnectionState::Closing
        ) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the WebSocket is closed or closing",
            ));
        }
        {
            let mut queue = lock(&self.queue);
            if queue.len() >= self.capacity {
                return Err(Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "the outgoing queue holds {} messages (its capacity) while the connection is {}; wait for it to reconnect or raise queue_capacity",
                        queue.len(),
                        describe(self.state())
                    ),
                ));
            }
            queue.push_back(item);
        }
        self.wake.notify_one();
        Ok(())
    }

    pub fn pop_front(&self) -> Option<Outgoing> {
        lock(&self.queue).pop_front()
    }

    /// Put back a message whose write failed, ahead of everything queued after it.
    pub fn push_front(&self, item: Outgoing) {
        lock(&self.queue).push_front(item);
    }

    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Register a request waiting for the reply with `id`.
    pub fn register(&self, id: String) -> Result<oneshot::Receiver<Result<Message, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if pending.contains_key(&id) {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "a request with id `{id}` is already waiting for its reply; use unique ids"
                ),
            ));
        }
        pending.insert(
            id,
            Pending {
                reply: tx,
                sent: false,
            },
        );
        Ok(rx)
    }

    pub fn unregister(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    pub fn mark_sent(&self, id: &str) {
        if let Some(p) = lock(&self.pending).get_mut(id) {
            p.sent = true;
        }
    }

    /// Hand `message` to the request it answers; gives it back when it answers none.
    pub fn route_reply(&self, message: Message) -> Option<Message> {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return Some(message);
        }
        let Some(id) = (self.id_of)(&message) else {
            return Some(message);
        };
        match pending.remove(&id) {
            Some(p) => {
                // The requester may have timed out meanwhile; then nobody wants it.
                let _ = p.reply.send(Ok(message));
                None
            }
            None => Some(message),
        }
    }

    /// The connection dropped: requests already written will get no reply.
    pub fn fail_sent(&self) {
        let mut pending = lock(&self.pending);
        let lost: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.sent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Err(Error::new(
                    ErrorKind::ConnectionLost,
                    format!("the connection dropped before the reply to request `{id}` arrived; it may or may not have been processed"),
                )));
            }
        }
    }

    /// Closed for good: every queued message is dropped and every request fails.
    pub fn fail_all(&self) {
        lock(&self.queue).clear();
        let mut pending = lock(&self.pending);
        for (id, p) in pending.drain() {
            let _ = p.reply.send(Err(Error::new(
                ErrorKind::Closed,
                format!("the WebSocket closed before the reply to request `{id}` arrived"),
            )));
        }
    }

    pub fn set_protocol(&self, protocol: Option<String>) {
        lock(&self.info).protocol = protocol;
    }

    pub fn protocol(&self) -> Option<String> {
        lock(&self.info).protocol.clone()
    }

    pub fn set_close(&self, close: CloseInfo) {
        lock(&self.info).last_close = Some(close);
    }

    pub fn last_close(&self) -> Option<CloseInfo> {
        lock(&self.info).last_close.clone()
    }

    pub fn set_error(&self, error: Error) {
        lock(&self.info).last_error = Some(error);
    }

    pub fn last_error(&self) -> Option<Error> {
        lock(&self.info).last_error.clone()
    }
}

fn describe(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Open => "open but not draining fast enough",
        ConnectionState::Closing => "closing",
        ConnectionState::Closed => "closed",
        ConnectionState::Reconnecting { .. } => "reconnecting",
    }
}
