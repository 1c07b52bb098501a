//! A client for the ferry hub's `/ws` protocol (SPEC W8, docs/PROTOCOL.md), on top of the
//! reconnecting [`WebSocket`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::hub::HubError> {
//! use ferry_client::hub::{HubClient, SubscriptionEvent};
//!
//! let hub = HubClient::builder("ws://127.0.0.1:8080/ws")
//!     .token("JWT")
//!     .connect()
//!     .await?;
//! let mut lobby = hub.subscribe("chat:lobby").await?;
//! hub.publish("chat:lobby", &serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = lobby.next().await {
//!     if let SubscriptionEvent::Publication(p) = event {
//!         println!("{} #{}: {}", p.channel, p.offset, p.data);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! After a reconnect the client presents a token again (the token provider is asked
//! before every attempt and sent as `?token=`), resubscribes every channel with
//! `recover: true` and the offset and epoch of the last publication it delivered, and
//! reports [`SubscriptionEvent::Recovered`]: the missed publications follow in order,
//! none twice (duplicates are dropped by offset), or `recovered: false` says the gap could
//! not be filled. A token that expires on an open connection (`AUTH_EXPIRED`) is
//! refreshed with an `auth` command, without reconnecting.

mod api;
mod error;
mod frame;
mod session;
mod subscription;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::envelope::{ClientInfo, Publication};
pub use ferry_proto::{Codec, Data};
use ferry_proto::{ErrorCode, ErrorPayload};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use api::HubApi;
pub use error::HubError;
pub use subscription::{Position, SubscriptionEvent};

use crate::ws::state::lock;
use crate::ws::{
    Backoff, ConnectionState, Heartbeat, Message, ReconnectConfig, StateStream, TokenProvider,
    WebSocket, WebSocketBuilder, fixed_token, token_provider,
};
use frame::{InFrame, command};
use session::{send_subscribe, serve};
use subscription::Recovery;

/// The subprotocol of the JSON hub protocol.
pub const PROTOCOL: &str = "ferry.json";

/// Builds a [`HubClient`].
pub struct HubClientBuilder {
    ws: WebSocketBuilder,
    token: Option<TokenProvider>,
    codec: Codec,
}

impl std::fmt::Debug for HubClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClientBuilder")
            .field("ws", &self.ws)
            .finish_non_exhaustive()
    }
}

impl HubClientBuilder {
    /// Authenticate with this token (sent as `?token=` on every connection attempt).
    pub fn token(self, token: &str) -> Self {
        self.with_token(fixed_token(token))
    }

    /// Ask `provider` for a token before every connection attempt and when the server
    /// reports `AUTH_EXPIRED`, so that a long-lived client keeps a valid one. `None`:
    /// connect anonymously.
    pub fn token_provider<F, Fut>(self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.with_token(token_provider(provider))
    }

    /// Keep `provider` for the session (asked again on `AUTH_EXPIRED`) and give the same
    /// one to the WebSocket, which asks it before every connection attempt.
    fn with_token(mut self, provider: TokenProvider) -> Self {
        self.token = Some(provider.clone());
        self.ws = self.ws.with_token(provider);
        self
    }

    /// The encoding to speak: [`Codec::Json`] (`ferry.json`, the default) or
    /// [`Codec::MsgPack`] (`ferry.msgpack`, MessagePack in binary frames). Publications
    /// reach every subscriber whatever codec either side speaks.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Add a header to the upgrade request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.ws = self.ws.header(name, value);
        self
    }

    /// The reconnect and heartbeat policy of the underlying WebSocket. Default:
    /// [`ReconnectConfig::default`].
    pub fn reconnect(mut self, config: ReconnectConfig) -> Self {
        self.ws = self.ws.reconnect(config);
        self
    }

    /// Only the backoff part of the policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.ws = self.ws.backoff(backoff);
        self
    }

    /// Only the heartbeat part of the policy.
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.ws = self.ws.heartbeat(heartbeat);
        self
    }

    /// Timeout of each command (subscribe, publish, history, ...). Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.ws = self.ws.request_timeout(timeout);
        self
    }

    /// Capacity of the queue of commands made while disconnected. Default 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.ws = self.ws.queue_capacity(capacity);
        self
    }

    /// Offer permessage-deflate (see [`WebSocketBuilder::compression`]). Default true.
    pub fn compression(mut self, offer: bool) -> Self {
        self.ws = self.ws.compression(offer);
        self
    }

    /// TLS settings for `wss://`.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.ws = self.ws.tls_config(config);
        self
    }

    /// Deadline for one connection attempt (TCP, TLS, upgrade). Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.ws = self.ws.connect_timeout(timeout);
        self
    }

    /// How a `ferry://` target is found and remembered (see [`crate::discover`]).
    pub fn discovery(mut self, options: crate::discover::DiscoveryOptions) -> Self {
        self.ws = self.ws.discovery(options);
        self
    }

    /// Connect and wait until the connection is open.
    ///
    /// # Errors
    ///
    /// The WebSocket's connect error ([`HubError::Transport`]): invalid URL, refused,
    /// TLS, HTTP status, timeout.
    pub async fn connect(self) -> Result<HubClient, HubError> {
        let codec = self.codec;
        let ws = self.ws.subprotocol(codec.subprotocol());
        let ws = match codec {
            Codec::Json => ws,
            Codec::MsgPack => ws.request_id(frame::msgpack_id),
        };
        let (ws, first_open) = ws.start()?;
        let inner = Arc::new(Inner {
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            token: self.token,
            codec,
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        // Follow the states from before the first open, so every later Open is a reconnect.
        let states = ws.states();
        tokio::spawn(serve(ws.downgrade(), inner.clone(), states, events_tx));
        match first_open.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(HubError::Transport(crate::ws::Error::new(
                    crate::ws::ErrorKind::Closed,
                    "the connection task ended",
                )));
            }
        }
        Ok(HubClient {
            ws,
            inner,
            events: Arc::new(tokio::sync::Mutex::new(events_rx)),
        })
    }
}

/// Something the server pushed that belongs to no subscription.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// The connection is authenticated (after connecting with a token, or anonymous).
    AuthSuccess {
        /// The user id (empty for anonymous).
        user: String,
        /// This connection's id on the server.
        client: String,
    },
    /// The token was refused.
    AuthError(HubError),
    /// A message sent to this connection or user through the server API.
    Direct(Data),
    /// An error not tied to a command (e.g. `AUTH_EXPIRED`).
    Error(HubError),
    /// After `AUTH_EXPIRED`, a fresh token from the token provider was accepted on the
    /// same connection.
    TokenRefreshed,
}

/// The result of `publish`: where the publication landed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// Its offset in the channel.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
}

/// Options of a history query.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Only publications after this offset (forward) or before it (reverse).
    pub since: Option<u64>,
    /// At most this many (the server caps it; default 100).
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// One page of history.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryPage {
    /// The publications, in the requested direction.
    pub publications: Vec<Publication>,
    /// The channel's current top offset.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
    /// More publications exist in this direction.
    pub has_more: bool,
}

/// Who is subscribed to a channel.
#[derive(Debug, Clone, Deserialize)]
pub struct Presence {
    /// How many connections.
    pub count: usize,
    /// Each connection id with its user.
    pub clients: HashMap<String, ClientInfo>,
}

pub(super) struct SubEntry {
    pub(super) tx: mpsc::UnboundedSender<SubscriptionEvent>,
    pub(super) recovery: Recovery,
    /// The connection the last subscribe was sent on; a reconnect resubscribes whatever
    /// is not subscribed on the new one.
    pub(super) subscribed_on: Option<u64>,
    /// Counts subscribe attempts; a reply for an older one is ignored.
    pub(super) generation: u64,
    /// Told when the first subscribe succeeds or fails (`HubClient::subscribe`).
    pub(super) first: Option<tokio::sync::oneshot::Sender<Result<Position, HubError>>>,
}

pub(super) struct Inner {
    pub(super) subs: Mutex<HashMap<String, SubEntry>>,
    next_id: AtomicU64,
    pub(super) token: Option<TokenProvider>,
    pub(super) codec: Codec,
}

impl Inner {
    pub(super) fn id(&self) -> String {
        format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn emit(entry: &SubEntry, events: Vec<SubscriptionEvent>) {
        for e in events {
            // A dropped Subscription just stops listening.
            let _ = entry.tx.send(e);
        }
    }
}

/// A connected hub client. Clones share the connection, which closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct HubClient {
    ws: WebSocket,
    inner: Arc<Inner>,
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<HubEvent>>>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("ws", &self.ws)
            .finish_non_exhaustive()
    }
}

/// A subscription's events, in order. Dropping it stops delivery but keeps the server
/// subscription; call [`HubClient::unsubscribe`] to end it.
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    rx: mpsc::UnboundedReceiver<SubscriptionEvent>,
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` after an unsubscribe or once the client is closed.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.rx.recv().await
    }

    /// The next publication, skipping the other events.
    pub async fn next_publication(&mut self) -> Option<Publication> {
        loop {
            if let SubscriptionEvent::Publication(p) = self.next().await? {
                return Some(p);
            }
        }
    }
}

/// Decode a reply frame: `reply` → its payload; `error` → the server's error.
pub(super) fn decode_reply<T: DeserializeOwned>(
    codec: Codec,
    message: &Message,
) -> Result<T, HubError> {
    let frame =
        InFrame::read(codec, message).map_err(|e| HubError::Decode(format!("reply frame: {e}")))?;
    match frame.kind.as_str() {
        "reply" => frame
            .payload()
            .map_err(|e| HubError::Decode(format!("reply payload: {e}"))),
        "error" => {
            let error: ErrorPayload = frame
                .payload()
                .map_err(|e| HubError::Decode(format!("error payload: {e}")))?;
            Err(HubError::from_payload(error))
        }
        other => Err(HubError::Decode(format!("expected a reply, got `{other}`"))),
    }
}

impl HubClient {
    /// A builder for the hub at `url` (e.g. `ws://127.0.0.1:8080/ws`).
    pub fn builder(url: &str) -> HubClientBuilder {
        HubClientBuilder {
            ws: WebSocket::builder(url),
            token: None,
            codec: Codec::Json,
        }
    }

    async fn call<T: DeserializeOwned>(&self, kind: &str, payload: Value) -> Result<T, HubError> {
        let codec = self.inner.codec;
        let id = self.inner.id();
        let reply = self.ws.request(command(codec, kind, &id, payload)).await?;
        decode_reply(codec, &reply)
    }

    /// Subscribe to `channel`, starting at its current position.
    ///
    /// # Errors
    ///
    /// The server's refusal (`PERMISSION_DENIED`, `UNKNOWN_CHANNEL`,
    /// `ALREADY_SUBSCRIBED`, ...) or a transport error.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, HubError> {
        self.subscribe_inner(channel, None).await
    }

    /// Subscribe and recover every publication after `position` (e.g. saved before the
    /// app restarted); the first events are [`SubscriptionEvent::Recovered`] and the
    /// missed publications.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_from(
        &self,
        channel: &str,
        position: Position,
    ) -> Result<Subscription, HubError> {
        self.subscribe_inner(channel, Some(position)).await
    }

    async fn subscribe_inner(
        &self,
        channel: &str,
        from: Option<Position>,
    ) -> Result<Subscription, HubError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        {
            let mut subs = lock(&self.inner.subs);
            if subs.contains_key(channel) {
                return Err(HubError::Server {
                    code: ErrorCode::AlreadySubscribed,
                    message: format!("this client is already subscribed to `{channel}`"),
                    details: None,
                });
            }
            subs.insert(
                channel.to_string(),
                SubEntry {
                    tx,
                    recovery: Recovery::starting_at(from),
                    subscribed_on: None,
                    generation: 0,
                    first: Some(first_tx),
                },
            );
        }
        // Subscribe now if connected; otherwise the reconnect does it.
        send_subscribe(&self.ws, &self.inner, channel);
        match first_rx.await {
            Ok(Ok(_)) => Ok(Subscription {
                channel: channel.to_string(),
                rx,
            }),
            Ok(Err(e)) => {
                lock(&self.inner.subs).remove(channel);
                Err(e)
            }
            Err(_) => Err(HubError::Transport(crate::ws::Error::new(
                crate::ws::ErrorKind::Closed,
                "the hub client closed",
            ))),
        }
    }

    /// End the subscription to `channel`; its [`Subscription`] ends.
    ///
    /// # Errors
    ///
    /// The server's refusal or a transport error. The local subscription ends either way.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), HubError> {
        lock(&self.inner.subs).remove(channel);
        if self.ws.state() != ConnectionState::Open {
            return Ok(());
        }
        self.call::<Value>("unsubscribe", json!({ "channel": channel }))
            .await
            .map(|_| ())
    }

    /// Publish `data` (any serializable value) to `channel`. While disconnected the
    /// command waits in the outgoing queue.
    ///
    /// # Errors
    ///
    /// The server's refusal (`PERMISSION_DENIED`, ...) or a transport error
    /// (`CONNECTION_LOST` means it may or may not have been published).
    pub async fn publish<T: serde::Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<Published, HubError> {
        let data = serde_json::to_value(data)
            .map_err(|e| HubError::Decode(format!("encoding data: {e}")))?;
        self.call("publish", json!({ "channel": channel, "data": data }))
            .await
    }

    /// Read a channel's history.
    ///
    /// # Errors
    ///
    /// The server's refusal or a transport error.
    pub async fn history(
        &self,
        channel: &str,
        options: HistoryOptions,
    ) -> Result<HistoryPage, HubError> {
        let mut payload = json!({ "channel": channel, "reverse": options.reverse });
        if let Some(since) = options.since {
            payload["since"] = json!(since);
        }
        if let Some(limit) = options.limit {
            payload["limit"] = json!(limit);
        }
        self.call("history", payload).await
    }

    /// Who is subscribed to `channel`.
    ///
    /// # Errors
    ///
    /// The server's refusal or a transport error.
    pub async fn presence(&self, channel: &str) -> Result<Presence, HubError> {
        self.call("presence", json!({ "channel": channel })).await
    }

    /// A round trip to the server.
    ///
    /// # Errors
    ///
    /// A transport error (e.g. `TIMEOUT`).
    pub async fn ping(&self) -> Result<(), HubError> {
        self.call::<Value>("ping", json!({})).await.map(|_| ())
    }

    /// The next push that belongs to no subscription; `None` once closed.
    pub async fn next_event(&self) -> Option<HubEvent> {
        self.events.lock().await.recv().await
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.ws.state()
    }

    /// Every state change from now on.
    pub fn states(&self) -> StateStream {
        self.ws.states()
    }

    /// The underlying WebSocket (state, close info, reconnect now, ...).
    pub fn websocket(&self) -> &WebSocket {
        &self.ws
    }

    /// Close the connection (1000); every subscription ends.
    pub async fn close(&self) {
        self.ws.close().await;
        lock(&self.inner.subs).clear();
    }
}
