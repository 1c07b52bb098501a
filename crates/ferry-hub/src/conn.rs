//! A connection as the hub sees it: an id, a user, a bounded send queue and a way to ask
//! the transport to close it. Transports own the socket; the hub only holds this handle.

use std::sync::Arc;

use ferry_proto::CloseCode;
use ferry_proto::envelope::ClientInfo;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::publication::Publication;
use crate::transports::ws_io::WsText;

/// One item in a connection's send queue. Both variants are cheap to clone: the bytes are
/// shared, never copied per subscriber.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A publication; each transport picks its encoding (already made once and shared).
    Publication(Arc<Publication>),
    /// A pre-encoded JSON frame (`join`, `leave`, `direct`, ...).
    Frame(WsText),
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
    /// The id clients see (`info.client`): random, unique per connection.
    pub client_id: Arc<str>,
    user: Mutex<Arc<str>>,
    tx: mpsc::Sender<Outbound>,
    close: Mutex<Option<CloseRequest>>,
    close_notify: Notify,
    pub(crate) subscriptions: Mutex<Vec<Arc<str>>>,
}

impl ConnHandle {
    pub(crate) fn new(
        id: u64,
        user: &str,
        queue: usize,
    ) -> (Arc<ConnHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = ConnHandle {
            id,
            client_id: format!("{:016x}", rand::random::<u64>()).into(),
            user: Mutex::new(user.into()),
            tx,
            close: Mutex::new(None),
            close_notify: Notify::new(),
            subscriptions: Mutex::new(Vec::new()),
        };
        (Arc::new(handle), rx)
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

    /// Queue an item without waiting. A full queue means the peer reads too slowly: the
    /// connection is asked to close with 1013 and the item is dropped (the client recovers
    /// from history when it reconnects). Returns whether the item was queued.
    pub fn push(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.request_close(CloseCode::TRY_AGAIN_LATER, "slow consumer: send queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
