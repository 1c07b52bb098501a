//! A reconnecting WebSocket client (SPEC W1–W7).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::ws::Error> {
//! use ferry_client::ws::{Message, WebSocket};
//!
//! let ws = WebSocket::builder("ws://127.0.0.1:8080/test/echo")
//!     .header("x-app", "demo")
//!     .connect()
//!     .await?;
//! let mut states = ws.states();
//! ws.send(Message::text("hello"))?;
//! let echo = ws.recv().await.expect("open");
//! assert_eq!(echo.as_text(), Some("hello"));
//! // Request/response: the reply is the incoming message with the same JSON `id`.
//! let reply = ws.request(Message::text(r#"{"id":"1","q":"x"}"#)).await?;
//! # let _ = (reply, states.next().await);
//! ws.close().await;
//! # Ok(()) }
//! ```
//!
//! How it behaves:
//! - **State** (W3): [`WebSocket::state`] and [`WebSocket::states`] report
//!   [`ConnectionState`]: `Connecting`, `Open`, `Closing`, `Closed`,
//!   `Reconnecting { attempt, delay }`.
//! - **Reconnect** (W4) and **heartbeat** (W5) follow `ferry_proto::reconnect`: backoff with
//!   full jitter, a max number of attempts, a reset after a stable connection, no reconnect
//!   after a 1000 or 1008 close unless configured, a ping every interval and a reconnect
//!   when nothing answers within the pong timeout.
//! - **Outgoing queue** (W6): [`WebSocket::send`] never waits. Messages go into a bounded
//!   queue that the connection drains in order; while disconnected it keeps them and
//!   flushes them after the reconnect. When it is full, `send` fails with
//!   [`ErrorKind::QueueFull`]. Delivery is at most once: a message whose write failed is
//!   retried, one already written to a connection that then died is not.
//! - **Requests** (W7): [`WebSocket::request`] sends a message and waits for the incoming
//!   message with the same id (by default the JSON `id` field; see
//!   [`WebSocketBuilder::request_id`]), with a timeout. Replies are not also delivered to
//!   [`WebSocket::recv`].

mod driver;
mod error;
mod message;
mod shared;
pub(crate) mod state;
pub(crate) mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::reconnect::Reconnector;
pub use ferry_proto::reconnect::{Backoff, ConnectionState, Heartbeat, ReconnectConfig};
use http::{HeaderName, HeaderValue};
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

pub use driver::TokenProvider;
pub(crate) use driver::{fixed_token, token_provider};
pub use error::{Error, ErrorKind};
pub use message::{Message, MessageKind, json_id};
pub use shared::CloseInfo;

use driver::{Control, Driver};
use shared::{IdExtractor, Outgoing, Shared};
use transport::Endpoint;

/// Builds a [`WebSocket`]. Every knob has a documented default; see each method.
pub struct WebSocketBuilder {
    url: String,
    headers: http::HeaderMap,
    header_error: Option<Error>,
    protocols: Vec<String>,
    token: Option<TokenProvider>,
    reconnect: ReconnectConfig,
    queue_capacity: usize,
    incoming_capacity: usize,
    request_timeout: Duration,
    connect_timeout: Duration,
    read_buffer_size: usize,
    write_buffer_size: usize,
    max_message_size: Option<usize>,
    max_frame_size: Option<usize>,
    compression: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    id_of: IdExtractor,
    discovery: crate::discover::DiscoveryOptions,
}

impl std::fmt::Debug for WebSocketBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketBuilder")
            .field("url", &self.url)
            .field("protocols", &self.protocols)
            .field("reconnect", &self.reconnect)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl WebSocketBuilder {
    fn new(url: &str) -> Self {
        WebSocketBuilder {
            url: url.to_string(),
            headers: http::HeaderMap::new(),
            header_error: None,
            protocols: Vec::new(),
            token: None,
            reconnect: ReconnectConfig::default(),
            queue_capacity: 1024,
            incoming_capacity: 256,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            read_buffer_size: 4 * 1024,
            write_buffer_size: 16 * 1024,
            max_message_size: Some(64 << 20),
            max_frame_size: Some(16 << 20),
            compression: true,
            tls: None,
            id_of: Arc::new(json_id),
            discovery: crate::discover::DiscoveryOptions::default(),
        }
    }

    /// Add a header to the upgrade request (W1). An invalid name or value makes
    /// [`build`](Self::build) fail with [`ErrorKind::InvalidUrl`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => {
                self.header_error = Some(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("invalid header `{name}: {value}`"),
                ));
            }
        }
        self
    }

    /// Send `Authorization: Bearer TOKEN` with the upgrade request.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Offer a subprotocol (repeatable, in order of preference). The connection fails
    /// with [`ErrorKind::Protocol`] if the server picks one that was not offered.
    pub fn subprotocol(mut self, protocol: &str) -> Self {
        self.protocols.push(protocol.to_string());
        self
    }

    /// Send this token as `?token=` on every connection attempt (W1).
    pub fn token(self, token: &str) -> Self {
        self.with_token(fixed_token(token))
    }

    /// Ask `provider` for a token before every connection attempt, so that a reconnect
    /// after expiry presents a fresh one. `None` connects without a token.
    pub fn token_provider<F, Fut>(self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.with_token(token_provider(provider))
    }

    /// Set an already boxed provider (the hub client shares its own with the socket).
    pub(crate) fn with_token(mut self, provider: TokenProvider) -> Self {
        self.token = Some(provider);
        self
    }

    /// The whole reconnect and heartbeat policy. Default: [`ReconnectConfig::default`]
    /// (backoff 500 ms doubling to 30 s with full jitter, retry forever, reset after 10 s
    /// open; ping every 25 s, dead after 10 s without an answer; no reconnect after 1000
    /// or 1008).
    pub fn reconnect(mut self, config: ReconnectConfig) -> Self {
        self.reconnect = config;
        self
    }

    /// Only the backoff part of the policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect.backoff = backoff;
        self
    }

    /// Only the heartbeat part of the policy; `None` sends no pings.
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.reconnect.heartbeat = heartbeat;
        self
    }

    /// Never reconnect: the first lost connection (or failed attempt) is final.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect.backoff.max_attempts = Some(0);
        self
    }

    /// Also reconnect after a 1000 (normal) or 1008 (policy) close. Default false.
    pub fn reconnect_on_normal_close(mut self, yes: bool) -> Self {
        self.reconnect.reconnect_on_normal_close = yes;
        self
    }

    /// Capacity of the outgoing queue (W6). Default 1024 messages.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// How many received messages may wait for [`WebSocket::recv`] before the client
    /// stops reading the socket (backpressure). Default 256.
    pub fn incoming_capacity(mut self, capacity: usize) -> Self {
        self.incoming_capacity = capacity.max(1);
        self
    }

    /// Default timeout of [`WebSocket::request`]. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Deadline for one connection attempt: TCP, TLS and the upgrade. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Largest accepted incoming message; `None` for no limit. Default 64 MiB.
    pub fn max_message_size(mut self, size: Option<usize>) -> Self {
        self.max_message_size = size;
        self
    }

    /// Offer permessage-deflate (RFC 7692): where the server agrees, the messages it
    /// compresses are inflated here (this client sends its own uncompressed, which the
    /// extension allows). Default true, as browsers do.
    pub fn compression(mut self, offer: bool) -> Self {
        self.compression = offer;
        self
    }

    /// Largest accepted incoming frame; `None` for no limit. Default 16 MiB.
    pub fn max_frame_size(mut self, size: Option<usize>) -> Self {
        self.max_frame_size = size;
        self
    }

    /// Socket read buffer. Default 4 KiB: small, because an idle connection should cost
    /// little; raise it for bulk transfers.
    pub fn read_buffer_size(mut self, size: usize) -> Self {
        self.read_buffer_size = size.max(256);
        self
    }

    /// TLS settings for `wss://` (custom CA, pinning, client certificates). Default: the
    /// platform's trust store with rustls and the ring provider.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// How a `ferry://` target (`ferry://_any`, `ferry://NODE-NAME`) is found and
    /// remembered: discovery options, the state file, when to discover again. Default:
    /// [`DiscoveryOptions::default`](crate::discover::DiscoveryOptions). Unused for
    /// `ws://` and `wss://` URLs.
    pub fn discovery(mut self, options: crate::discover::DiscoveryOptions) -> Self {
        self.discovery = options;
        self
    }

    /// How to find the correlation id of a message for [`WebSocket::request`]: applied
    /// to the outgoing request and to every incoming message while requests are waiting.
    /// Default [`json_id`]: the top-level JSON `id` field.
    pub fn request_id<F>(mut self, extract: F) -> Self
    where
        F: Fn(&Message) -> Option<String> + Send + Sync + 'static,
    {
        self.id_of = Arc::new(extract);
        self
    }

    /// Start the connection task and return at once; the first attempt runs in the
    /// background and failures are retried according to the policy. Messages sent
    /// before it opens are queued. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a malformed URL, header or subprotocol.
    pub fn build(self) -> Result<WebSocket, Error> {
        self.spawn(None)
    }

    /// Start the connection and wait until it is open.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] as for [`build`](Self::build); otherwise the error of the
    /// first attempt (refused, TLS, HTTP status, timeout): `connect` does not retry a
    /// connection that never worked. Later drops are retried per the policy.
    pub async fn connect(self) -> Result<WebSocket, Error> {
        let (tx, rx) = oneshot::channel();
        let ws = self.spawn(Some(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(ws),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(ErrorKind::Closed, "the connection task ended")),
        }
    }

    /// Start the task; the receiver tells the first attempt's outcome (as `connect`).
    pub(crate) fn start(self) -> Result<(WebSocket, oneshot::Receiver<Result<(), Error>>), Error> {
        let (tx, rx) = oneshot::channel();
        Ok((self.spawn(Some(tx))?, rx))
    }

    fn spawn(
        self,
        first_open: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<WebSocket, Error> {
        if let Some(e) = self.header_error {
            return Err(e);
        }
        // A `ferry://` target is resolved by discovery before each attempt (SPEC L2, L3).
        let (url, locator) = match crate::discover::Target::parse(&self.url)? {
            Some(target) => (
                crate::discover::target::Locator::placeholder_url()?,
                Some(crate::discover::target::Locator::new(
                    target,
                    self.discovery,
                )),
            ),
            None => (transport::parse_url(&self.url)?, None),
        };
        for p in &self.protocols {
            if HeaderValue::from_str(p).is_err() || p.is_empty() || p.contains(',') {
                return Err(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("invalid subprotocol `{p}`"),
                ));
            }
        }
        let shared = Arc::new(Shared::new(self.queue_capacity, self.id_of));
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::channel(self.incoming_capacity);
        let driver = Driver {
            shared: shared.clone(),
            endpoint: Endpoint {
                url,
                headers: self.headers,
                protocols: self.protocols,
                connect_timeout: self.connect_timeout,
                tls: self.tls,
                read_buffer_size: self.read_buffer_size,
                write_buffer_size: self.write_buffer_size,
                max_message_size: self.max_message_size,
                max_frame_size: self.max_frame_size,
                compression: self.compression,
            },
            token: self.token,
            locator,
            rc: Reconnector::new(self.reconnect, rand::random::<f64>),
            control: control_rx,
            incoming: incoming_tx,
            first_open,
        };
        tokio::spawn(driver.run());
        Ok(WebSocket {
            shared,
            control: control_tx,
            incoming: Arc::new(Mutex::new(incoming_rx)),
            request_timeout: self.request_timeout,
        })
    }
}

/// A handle to a reconnecting WebSocket. Cloning it gives another handle to the same
/// connection; the connection closes (1000) when the last handle is dropped.
#[derive(Clone)]
pub struct WebSocket {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    incoming: Arc<Mutex<mpsc::Receiver<Message>>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("state", &self.state())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// A builder for `url`: `ws://`, `wss://`, or a discovery target (`ferry://_any`,
    /// `ferry://NODE-NAME[/path]`, see [`crate::discover`]).
    pub fn builder(url: &str) -> WebSocketBuilder {
        WebSocketBuilder::new(url)
    }

    /// Connect to `url` with the default settings and wait until open.
    ///
    /// # Errors
    ///
    /// As [`WebSocketBuilder::connect`].
    pub async fn connect(url: &str) -> Result<WebSocket, Error> {
        WebSocketBuilder::new(url).connect().await
    }

    /// Queue a message for sending; returns at once (W6).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::QueueFull`] when the outgoing queue is at capacity,
    /// [`ErrorKind::Closed`] when the WebSocket is closing or closed for good.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.enqueue(Outgoing {
            message: message.into(),
            request: None,
            connection: None,
        })
    }

    /// Queue a text message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Message::text(text))
    }

    /// Queue a binary message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_binary(&self, data: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.send(Message::binary(data))
    }

    /// Queue `value` as a JSON text message.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when it cannot be serialized, otherwise as [`send`](Self::send).
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.send(Message::json(value)?)
    }

    /// Send a request and wait for its reply, with the default request timeout (W7).
    ///
    /// # Errors
    ///
    /// As [`request_with_timeout`](Self::request_with_timeout).
    pub async fn request(&self, message: impl Into<Message>) -> Result<Message, Error> {
        self.request_with_timeout(message, self.request_timeout)
            .await
    }

    /// Send a request and wait up to `timeout` for the incoming message with the same id.
    /// A request made while disconnected waits in the queue and is sent after the
    /// reconnect; the timeout counts from the call.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] when the message has no id (per the id extractor) or the id
    /// is already waiting; [`ErrorKind::Timeout`] when no reply came in time;
    /// [`ErrorKind::ConnectionLost`] when the connection dropped after the request was
    /// written; [`ErrorKind::QueueFull`] and [`ErrorKind::Closed`] as for
    /// [`send`](Self::send).
    pub async fn request_with_timeout(
        &self,
        message: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.request_inner(message.into(), timeout, None).await
    }

    /// The number of the current (or last) connection: 1 for the first, +1 per
    /// reconnect; 0 before the first opened.
    pub fn connection_seq(&self) -> u64 {
        self.shared.connection_seq()
    }

    /// A request that only makes sense on connection `connection` (see
    /// [`connection_seq`](Self::connection_seq)), such as a subscription: if that
    /// connection is gone before it is written, it fails with
    /// [`ErrorKind::ConnectionLost`] instead of waiting for the next one.
    ///
    /// # Errors
    ///
    /// As [`request_with_timeout`](Self::request_with_timeout).
    pub async fn request_on(
        &self,
        connection: u64,
        message: impl Into<Message>,
    ) -> Result<Message, Error> {
        self.request_inner(message.into(), self.request_timeout, Some(connection))
            .await
    }

    async fn request_inner(
        &self,
        message: Message,
        timeout: Duration,
        connection: Option<u64>,
    ) -> Result<Message, Error> {
        if connection.is_some_and(|c| {
            c != self.shared.connection_seq() || self.state() != ConnectionState::Open
        }) {
            return Err(Error::new(
                ErrorKind::ConnectionLost,
                "that connection is gone",
            ));
        }
        let Some(id) = (self.shared.id_of)(&message) else {
            return Err(Error::new(
                ErrorKind::Protocol,
                "a request needs an id the request-id extractor can read (by default a JSON `id` field)",
            ));
        };
        let reply = self.shared.register(id.clone())?;
        if let Err(e) = self.shared.enqueue(Outgoing {
            message,
            request: Some(id.clone()),
            connection,
        }) {
            self.shared.unregister(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(ErrorKind::Closed, "the WebSocket closed")),
            Err(_) => {
                self.shared.unregister(&id);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no reply to request `{id}` within {timeout:?}"),
                ))
            }
        }
    }

    /// The next incoming message, in arrival order; `None` once the WebSocket is closed
    /// for good and every received message has been taken. Several tasks may call it; each
    /// message goes to one of them.
    pub async fn recv(&self) -> Option<Message> {
        self.incoming.lock().await.recv().await
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// Every state change from now on, in order (W3).
    pub fn states(&self) -> StateStream {
        StateStream::new(self.shared.state.subscribe())
    }

    /// Wait until the state satisfies `predicate` (checked against the current state
    /// first) and return that state. Returns the current state if the connection task is
    /// gone.
    pub async fn wait_for(
        &self,
        mut predicate: impl FnMut(&ConnectionState) -> bool,
    ) -> ConnectionState {
        self.shared.state.wait_for(|s| predicate(s)).await
    }

    /// The subprotocol the server chose on the current (or last) connection.
    pub fn protocol(&self) -> Option<String> {
        self.shared.protocol()
    }

    /// The last close frame the server sent, if any.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.last_close()
    }

    /// The last connection error (failed attempt, lost connection, missed pong).
    pub fn last_error(&self) -> Option<Error> {
        self.shared.last_error()
    }

    /// Messages waiting in the outgoing queue.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// While waiting to reconnect, try now instead of at the end of the delay (e.g. the
    /// network came back). Does nothing in other states.
    pub fn reconnect_now(&self) {
        let _ = self.control.send(Control::ReconnectNow);
    }

    /// Close with 1000 and wait until closed. No reconnect follows.
    pub async fn close(&self) {
        self.close_with(1000, "").await;
    }

    /// Close with `code` and `reason` and wait until the close handshake finished (or
    /// timed out after 5 s). Messages queued before the call are sent first; messages
    /// keep arriving at [`recv`](Self::recv) until the server's close frame.
    pub async fn close_with(&self, code: u16, reason: &str) {
        let _ = self.control.send(Control::Close {
            code,
            reason: reason.to_string(),
        });
        self.wait_for(|s| *s == ConnectionState::Closed).await;
    }
}

/// A handle that does not keep the connection open (for tasks that serve a `WebSocket`
/// owned by someone else).
#[derive(Clone)]
pub(crate) struct WeakWebSocket {
    shared: Arc<Shared>,
    control: mpsc::WeakUnboundedSender<Control>,
    incoming: Arc<Mutex<mpsc::Receiver<Message>>>,
    request_timeout: Duration,
}

impl WeakWebSocket {
    /// A full handle, while any other full handle exists.
    pub fn upgrade(&self) -> Option<WebSocket> {
        Some(WebSocket {
            shared: self.shared.clone(),
            control: self.control.upgrade()?,
            incoming: self.incoming.clone(),
            request_timeout: self.request_timeout,
        })
    }

    /// The next incoming message (as [`WebSocket::recv`]); `None` once closed for good.
    pub async fn recv(&self) -> Option<Message> {
        self.incoming.lock().await.recv().await
    }
}

impl WebSocket {
    pub(crate) fn downgrade(&self) -> WeakWebSocket {
        WeakWebSocket {
            shared: self.shared.clone(),
            control: self.control.downgrade(),
            incoming: self.incoming.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

/// The state changes of a [`WebSocket`] (or an EventSource, or a hub client), in order.
#[derive(Debug)]
pub struct StateStream {
    rx: broadcast::Receiver<ConnectionState>,
}

impl StateStream {
    pub(crate) fn new(rx: broadcast::Receiver<ConnectionState>) -> Self {
        StateStream { rx }
    }

    /// The next state change; `None` when the connection task has ended and every change
    /// has been seen. A reader too slow to keep up with 64 changes skips the oldest.
    pub async fn next(&mut self) -> Option<ConnectionState> {
        loop {
            match self.rx.recv().await {
                Ok(state) => return Some(state),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
