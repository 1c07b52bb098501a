//! The connection task: drives the sans-IO [`Reconnector`] with real sockets and time.
//!
//! One task per `WebSocket`. It owns the socket and the policy; handles talk to it
//! through [`Shared`] (the outgoing queue, pending requests, state) and a control
//! channel (close, reconnect now). When every handle is gone the control channel closes
//! and the task closes the connection with 1000.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::reconnect::{Action, ConnectionState, Reconnector};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::error::{Error, ErrorKind};
use super::message::Message;
use super::shared::{CloseInfo, Shared};
use super::transport::{self, Endpoint, Frame, Socket};

/// Produces the token to send with the next connection attempt (`?token=`).
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// A [`TokenProvider`] that always gives `token`.
pub(crate) fn fixed_token(token: &str) -> TokenProvider {
    let token = token.to_string();
    Arc::new(move || Box::pin(std::future::ready(Some(token.clone()))))
}

/// `provider` boxed as a [`TokenProvider`].
pub(crate) fn token_provider<F, Fut>(provider: F) -> TokenProvider
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    Arc::new(move || Box::pin(provider()))
}

/// How long a close handshake may take before the socket is dropped anyway.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many queued messages are written before the task reads again, so that a
/// long queue does not starve pongs and replies.
const WRITE_BATCH: usize = 64;

pub(crate) enum Control {
    Close { code: u16, reason: String },
    ReconnectNow,
}

pub(crate) struct Driver {
    pub shared: Arc<Shared>,
    pub endpoint: Endpoint,
    pub token: Option<TokenProvider>,
    /// For a `ferry://` target: finds (and remembers) the address before each attempt.
    pub locator: Option<crate::discover::target::Locator>,
    pub rc: Reconnector,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub incoming: mpsc::Sender<Message>,
    /// Told about the first attempt's outcome (`WebSocketBuilder::connect`).
    pub first_open: Option<oneshot::Sender<Result<(), Error>>>,
}

/// How an open connection ended.
enum End {
    /// The transport ended; the close code the peer sent, if any.
    Lost(Option<u16>),
    /// The policy declared the peer dead (missed pong) and already moved on.
    Dead,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    pub async fn run(mut self) {
        self.rc.connect_requested(Instant::now());
        loop {
            let state = self.rc.state();
            self.shared.set_state(state);
            match state {
                ConnectionState::Connecting => self.connecting().await,
                ConnectionState::Reconnecting { .. } => self.waiting().await,
                ConnectionState::Closed => break,
                ConnectionState::Open | ConnectionState::Closing => {
                    // `connecting` runs an open connection to its end, so the policy is
                    // never left in these states here; settle it rather than spin.
                    let now = Instant::now();
                    self.rc.close_requested(now);
                    self.rc.closed(now, None);
                }
            }
        }
        self.shared.set_state(ConnectionState::Closed);
        self.shared.fail_all();
        self.shared.state.finish();
        if let Some(first) = self.first_open.take() {
            let error = self
                .shared
                .last_error()
                .unwrap_or_else(|| Error::new(ErrorKind::Closed, "closed before it connected"));
            let _ = first.send(Err(error));
        }
    }

    async fn connecting(&mut self) {
        let token = match &self.token {
            Some(provider) => provider().await,
            None => None,
        };
        let result = {
            let (endpoint, locator) = (&mut self.endpoint, &mut self.locator);
            let attempt = async {
                match locator {
                    Some(locator) => locator.connect(endpoint, token.as_deref()).await,
                    None => transport::connect(endpoint, token.as_deref()).await,
                }
            };
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    control = self.control.recv() => match control {
                        Some(Control::ReconnectNow) => {}
                        Some(Control::Close { .. }) | None => {
                            self.rc.close_requested(Instant::now());
                            return;
                        }
                    },
                }
            }
        };
        match result {
            Ok(opened) => {
                self.shared.set_protocol(opened.protocol);
                self.shared.next_connection();
                self.rc.opened(Instant::now());
                self.shared.set_state(self.rc.state());
                if let Some(first) = self.first_open.take() {
                    let _ = first.send(Ok(()));
                }
                self.open(opened.socket).await;
            }
            Err(error) => {
                tracing::debug!(%error, "WebSocket connect attempt failed");
                self.shared.set_error(error.clone());
                let now = Instant::now();
                if let Some(first) = self.first_open.take() {
                    // `connect()` reports the first failure instead of retrying silently.
                    let _ = first.send(Err(error));
                    self.rc.close_requested(now);
                    return;
                }
                self.rc.connect_failed(now);
            }
        }
    }

    async fn waiting(&mut self) {
        let at = self.rc.poll_timeout();
        tokio::select! {
            _ = sleep_until_opt(at) => {
                self.rc.handle_timeout(Instant::now());
            }
            control = self.control.recv() => match control {
                Some(Control::ReconnectNow) => {
                    self.rc.connect_requested(Instant::now());
                }
                Some(Control::Close { .. }) | None => {
                    self.rc.close_requested(Instant::now());
                }
            },
        }
    }

    async fn flush_queue(shared: &Shared, socket: &mut Socket) -> Result<(), Error> {
        for _ in 0..WRITE_BATCH {
            let Some(item) = shared.pop_front() else {
                break;
            };
            if item
                .connection
                .is_some_and(|c| c != shared.connection_seq())
            {
                // Meant for a connection that is gone (e.g. a hub subscribe): the
                // caller redoes it on the new connection instead.
                if let Some(id) = &item.request {
                    shared.fail_request(
                        id,
                        "the connection it was meant for dropped before it was sent",
                    );
                }
                continue;
            }
            let frame = match transport::to_frame(&item.message) {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::warn!(%error, "dropping an unsendable message");
                    continue;
                }
            };
            // One flush per message: if the write fails, this message is known not to
            // have been delivered whole and goes back to the queue; no earlier message
            // is in doubt. That is what makes the flush after a reconnect duplicate-free.
            if let Err(e) = socket.send(frame).await {
                shared.push_front(item);
                return Err(transport::io_error(&e));
            }
            if let Some(id) = &item.request {
                shared.mark_sent(id);
            }
        }
        Ok(())
    }

    async fn open(&mut self, mut socket: Socket) {
        let mut inbound: Option<Message> = None;
        let mut peer_close: Option<u16> = None;
        let mut closing_deadline: Option<Instant> = None;
        // A close the user asked for, waiting for the queue to drain: code, reason, and
        // whether the policy wants a close frame sent.
        let mut pending_close: Option<(u16, String, bool)> = None;
        let end = 'conn: loop {
            let writable = closing_deadline.is_none() && peer_close.is_none();
            if writable && let Err(error) = Self::flush_queue(&self.shared, &mut socket).await {
                self.shared.set_error(error);
                break End::Lost(None);
            }
            if pending_close.is_some() && (self.shared.queued() == 0 || !writable) {
                if let Some((code, reason, send)) = pending_close.take() {
                    closing_deadline = Some(Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
                    if send
                        && peer_close.is_none()
                        && let Err(e) = socket.send(transport::close_frame(code, &reason)).await
                    {
                        tracing::debug!(error = %e, "sending the close frame failed");
                        break End::Lost(None);
                    }
                }
                continue;
            }
            let timer = self.rc.poll_timeout();
            let more_queued = writable && self.shared.queued() > 0;
            tokio::select! {
                biased;
                control = self.control.recv(), if closing_deadline.is_none() && pending_close.is_none() => {
                    let (code, reason) = match control {
                        Some(Control::ReconnectNow) => continue,
                        Some(Control::Close { code, reason }) => (code, reason),
                        None => (1000, String::new()),
                    };
                    let actions = self.rc.close_requested(Instant::now());
                    self.shared.set_state(self.rc.state());
                    // The close frame goes out once everything queued before it has;
                    // the loop keeps reading meanwhile, so a peer that answers each
                    // message (an echo) cannot deadlock the flush.
                    pending_close = Some((code, reason, actions.contains(&Action::Close)));
                }
                permit = self.incoming.reserve(), if inbound.is_some() => {
                    match permit {
                        Ok(permit) => {
                            if let Some(message) = inbound.take() {
                                permit.send(message);
                            }
                        }
                        // Nobody reads any more; drop what arrives.
                        Err(_) => inbound = None,
                    }
                }
                frame = socket.next(), if inbound.is_none() => {
                    let now = Instant::now();
                    match frame {
                        None => break End::Lost(peer_close),
                        Some(Err(e)) => {
                            if peer_close.is_none() && closing_deadline.is_none() {
                                self.shared.set_error(transport::io_error(&e));
                                // Fail the connection the way RFC 6455 §7.1.7 asks: tell
                                // the peer why (1002, 1007, 1009) before dropping it.
                                if let Some((code, reason)) = transport::close_for_error(&e) {
                                    let _ = tokio::time::timeout(
                                        Duration::from_secs(1),
                                        socket.send(transport::close_frame(code, reason)),
                                    )
                                    .await;
                                }
                            }
                            break End::Lost(peer_close);
                        }
                        Some(Ok(frame)) => {
                            self.rc.message_received(now);
                            if let Some((code, reason)) = transport::close_info(&frame) {
                                // tungstenite answers the close; the stream ends after it.
                                peer_close = Some(code);
                                self.shared.set_close(CloseInfo { code, reason });
                            } else if matches!(frame, Frame::Pong(_)) {
                                self.rc.pong_received(now);
                            } else if let Some(message) = transport::from_frame(frame) {
                                inbound = self.shared.route_reply(message);
                            }
                        }
                    }
                }
                _ = std::future::ready(()), if more_queued => {}
                _ = self.shared.wake.notified(), if writable => {}
                _ = sleep_until_opt(timer), if timer.is_some() => {
                    let now = Instant::now();
                    if inbound.is_some() {
                        // Reading is paused because the application is not taking
                        // messages, not because the peer is silent.
                        self.rc.message_received(now);
                    }
                    for action in self.rc.handle_timeout(now) {
                        match action {
                            Action::SendPing => {
                                if let Err(e) = socket.send(transport::ping()).await {
                                    self.shared.set_error(transport::io_error(&e));
                                    break 'conn End::Lost(None);
                                }
                            }
                            Action::CloseDead => break 'conn End::Dead,
                            _ => {}
                        }
                    }
                }
                _ = sleep_until_opt(closing_deadline), if closing_deadline.is_some() => {
                    break End::Lost(peer_close);
                }
            }
        };
        if let Some(message) = inbound.take() {
            if closing_deadline.is_some() || pending_close.is_some() {
                // The user is closing and may not be reading: do not wait for them.
                let _ = self.incoming.try_send(message);
            } else {
                let _ = self.incoming.send(message).await;
            }
        }
        self.shared.fail_sent();
        let now = Instant::now();
        match end {
            End::Dead => {
                let timeout = self
                    .rc
                    .config()
                    .heartbeat
                    .as_ref()
                    .map(|h| h.pong_timeout)
                    .unwrap_or_default();
                self.shared.set_error(Error::new(
                    ErrorKind::Timeout,
                    format!("the server did not answer a ping within {timeout:?}; reconnecting"),
                ));
            }
            End::Lost(code) => {
                self.rc.closed(now, code);
            }
        }
    }
}
