//! `/ws`: the hub over WebSocket with the `ferry.json` subprotocol.
//!
//! One task per connection. It waits on four things at once: a frame from the peer, its
//! send queue, a close request (API disconnect, slow consumer, shutdown), and its next
//! timer (ping, pong deadline, auth deadline, token expiry, idle). Queued frames are fed
//! to the socket and flushed once per batch, so a burst of publications is one write.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use ferry_proto::envelope::FrameId;
use ferry_proto::envelope::{
    Command, Frame, FrameError, HistoryCommand, SubscribeCommand, encode_error, encode_push,
    encode_reply, parse_frame,
};
use ferry_proto::{CloseCode, ErrorCode, ErrorPayload};
use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::sleep_until;

use super::ws_io::{self, Message, RawFrames, ServerSocket, WsText, write_raw};
use super::{ApiError, AppState, Peer, check_origin, request_token};
use crate::auth::{Capability, Identity};
use crate::conn::{CloseRequest, ConnHandle, Outbound, Receiver};
use crate::error::{HubError, HubResult};
use crate::hub::{Hub, RecoveryRequest, fit_in_budget};
use crate::limits::ConnectionPermit;
use crate::publication::Publication;
use crate::store::HistoryQuery;

/// Subprotocols spoken on `/ws`.
pub const PROTOCOLS: &[&str] = &["ferry.json"];

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// A JWT (alternative to `Authorization: Bearer`).
    pub token: Option<String>,
}

/// `GET /ws`: check origin and limits, then upgrade.
pub async fn handler(
    State(state): State<AppState>,
    peer: Peer,
    Query(query): Query<WsQuery>,
    req: Request,
) -> Response {
    if state.hub.shutdown_token().is_cancelled() {
        return ApiError(HubError::new(
            ErrorCode::ConnectionLimit,
            "server is shutting down",
        ))
        .into_response();
    }
    if let Err(e) = check_origin(&state, req.headers()) {
        return e.into_response();
    }
    let permit = match state.limiter.acquire(peer.0.ip()) {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };
    let token = request_token(query.token.as_deref(), req.headers());
    let hub = state.hub.clone();
    let max = hub.config().limits.max_message_size;
    let compression = hub.config().compression.policy();
    ws_io::upgrade(
        req,
        max,
        PROTOCOLS,
        compression,
        move |socket, _protocol, deflate| Session::run(hub, socket, token, permit, deflate),
    )
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

enum Auth {
    /// No identity yet; must authenticate before the deadline.
    Pending { deadline: Instant },
    /// Authenticated (or anonymous).
    Ready {
        identity: Identity,
        /// When the token expires (monotonic), and whether it already has.
        expires: Option<Instant>,
        expired_close_at: Option<Instant>,
    },
}

/// Counted in `ferry_connections{transport="ws"}` from `Session::run` until dropped (a
/// guard field would add to every connection's task; the session holds the hub anyway).
struct Session {
    /// Publications go out compressed when at least this big (permessage-deflate agreed
    /// with a 15-bit server window and no context takeover); `None`: never.
    compress: Compress,
    hub: Hub,
    conn: Arc<ConnHandle>,
    auth: Auth,
    limiter: Limiter,
    strikes: u32,
    /// Malformed frames in a row.
    invalid_strikes: u32,
    /// The rest of a batch: run one command at a time, each answer written before the
    /// next runs, so a batch never builds all its answers in memory.
    pending: VecDeque<Result<Frame, FrameError>>,
    /// The batch's own id and size, answered after its last command.
    batch_reply: Option<(FrameId, usize)>,
    last_seen: Instant,
    idle_check: Option<Instant>,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    out: Vec<Message>,
    /// Frames that must follow the reply being made (recovered publications past the
    /// reply budget); appended to `out` right after it.
    deferred: Vec<Message>,
}

/// Why the loop ended.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, String),
    /// The transport is gone; nothing to send.
    Gone,
    /// The server is shutting down: send what is queued, then close with 1001. Only
    /// `guarded` returns it; `serve` turns it into `Close` or `Gone`.
    ShuttingDown,
}

#[derive(Serialize)]
struct SubscribeReply<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    publications: &'a [Arc<Publication>],
}

#[derive(Serialize)]
struct HistoryReply<'a> {
    channel: &'a str,
    publications: &'a [Arc<Publication>],
    offset: u64,
    epoch: &'a str,
    has_more: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub
            .connection_closed(crate::metrics::Transport::WebSocket);
    }
}

impl Session {
    /// Set the session up (a token from the URL is checked here) and return the future
    /// that serves it until the connection ends.
    ///
    /// A plain function returning an `async move` block rather than an `async fn`: an
    /// `async fn` keeps its arguments twice in its future (as arguments and as locals),
    /// and this future lives in every connection's task for as long as it is open.
    fn run(
        hub: Hub,
        mut socket: ServerSocket,
        token: Option<String>,
        permit: ConnectionPermit,
        deflate: Option<ws_io::Deflate>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let limits = &hub.config().limits;
        let now = Instant::now();
        let (conn, mut rx) = hub.connect("");
        hub.connection_opened(crate::metrics::Transport::WebSocket);
        let quota = Quota::per_second(
            NonZeroU32::new(limits.rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(limits.rate_burst.max(1)).unwrap_or(NonZeroU32::MIN));
        let mut session = Session {
            hub: hub.clone(),
            conn: conn.clone(),
            auth: Auth::Pending {
                deadline: now + Duration::from_millis(limits.auth_timeout_ms),
            },
            limiter: RateLimiter::direct(quota),
            strikes: 0,
            invalid_strikes: 0,
            pending: VecDeque::new(),
            batch_reply: None,
            last_seen: now,
            idle_check: (limits.idle_timeout_ms > 0)
                .then(|| now + Duration::from_millis(limits.idle_timeout_ms)),
            next_ping: now + Duration::from_millis(limits.ping_interval_ms),
            pong_deadline: None,
            out: Vec::new(),
            deferred: Vec::new(),
            compress: deflate
                .filter(|d| d.server_no_context_takeover && d.server_max_window_bits == 15)
                .and_then(|_| {
                    let min = hub.config().compression_min_size.max(1);
                    std::num::NonZeroU32::new(u32::try_from(min).unwrap_or(u32::MAX))
                }),
        };
        match token {
            Some(t) => session.authenticate(None, &t),
            None if hub.config().allow_anonymous => {
                session.become_ready(Identity::anonymous());
                let info = conn.info();
                session.send(encode_push("auth_success", &info));
            }
            None => {}
        }
        async move {
            let mut raw = RawFrames::default();
            let end = session.serve(&mut socket, &mut raw, &mut rx).await;
            hub.disconnect(&conn).await;
            if let End::Close(code, reason) = end {
                // Bounded: a peer that takes no bytes is cut off by the socket layer after
                // `write_timeout_ms`; one that reads slowly still gets its close code.
                let limit = CLOSE_WRITE_TIMEOUT
                    .max(Duration::from_millis(hub.config().limits.write_timeout_ms));
                let _ = tokio::time::timeout(limit, async {
                    // The rest of an interrupted write first: a frame cut in two would
                    // garble the close.
                    write_raw(&mut socket, &mut raw).await?;
                    for message in session.out.drain(..) {
                        socket.feed(message).await?;
                    }
                    socket.send(ws_io::close_message(code, &reason)).await
                })
                .await;
                // Give the peer a moment to answer the close handshake, then drop the socket.
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                    while let Some(Ok(_)) = socket.next().await {}
                })
                .await;
            }
            drop(permit);
        }
    }

    async fn serve(
        &mut self,
        socket: &mut ServerSocket,
        raw: &mut RawFrames,
        rx: &mut Receiver,
    ) -> End {
        let shutdown = self.hub.shutdown_token().clone();
        let conn = self.conn.clone();
        let compress = self.compress;
        let mut writes = 0u32;
        // Made once and polled on every turn of the loop: the close and shutdown waiters
        // and the timer are registered once, not on every wake-up (a fan-out wakes every
        // subscriber's task once per delivery).
        let closed = conn.closed();
        let cancelled = shutdown.cancelled();
        let timer = sleep_until(self.next_deadline().into());
        tokio::pin!(closed, cancelled, timer);
        loop {
            if !self.out.is_empty() {
                let batch = std::mem::take(&mut self.out);
                let written = {
                    let write = std::pin::pin!(flush_out(socket, raw, batch));
                    self.guarded(write, closed.as_mut(), cancelled.as_mut(), timer.as_mut())
                        .await
                };
                if let Err(end) = written {
                    return finish(end, socket, raw, rx, compress).await;
                }
                // Timers may have queued more (a ping) while the write was pending.
                continue;
            }
            if let Some(next) = self.pending.pop_front() {
                match next {
                    Ok(frame) => Box::pin(self.on_frame(frame)).await,
                    Err(e) => self.on_invalid(e),
                }
                if self.pending.is_empty()
                    && let Some((id, count)) = self.batch_reply.take()
                {
                    self.send(encode_reply(&id, serde_json::json!({ "count": count })));
                }
                continue;
            }
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                request = &mut closed => {
                    return End::Close(request.code, request.reason);
                }
                _ = &mut cancelled => {
                    return finish(End::ShuttingDown, socket, raw, rx, compress).await;
                }
                item = rx.recv() => {
                    let Some(item) = item else { return End::Gone };
                    // The first write and every ENQUEUE_WRITE_SAMPLING-th after it are timed,
                    // from the fan-out of its oldest publication.
                    let timed = match &item {
                        Outbound::Publication(d)
                            if writes.is_multiple_of(crate::metrics::ENQUEUE_WRITE_SAMPLING) =>
                        {
                            Some(d.enqueued())
                        }
                        _ => None,
                    };
                    writes = writes.wrapping_add(1);
                    let written = {
                        let write = std::pin::pin!(write_queued(socket, raw, item, rx, compress));
                        self.guarded(write, closed.as_mut(), cancelled.as_mut(), timer.as_mut())
                            .await
                    };
                    if let Err(end) = written {
                        return finish(end, socket, raw, rx, compress).await;
                    }
                    if let Some(enqueued) = timed {
                        self.hub.metrics().enqueue_write.observe(enqueued.elapsed());
                    }
                }
                frame = socket.next() => {
                    match frame {
                        None => return End::Gone,
                        Some(Err(e)) => {
                            return match ws_io::close_for_error(&e) {
                                Some((code, reason)) => End::Close(code, reason.into()),
                                None => End::Gone,
                            };
                        }
                        Some(Ok(message)) => {
                            // Boxed: handling a command (subscribe, publish, history...)
                            // needs a large future, and an idle connection should not
                            // carry its space in its task while it waits.
                            if let Some(end) = Box::pin(self.on_message(message)).await {
                                return end;
                            }
                        }
                    }
                }
                _ = &mut timer => {
                    if let Some(end) = self.on_timer(Instant::now(), false) {
                        return end;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.pong_deadline.unwrap_or(self.next_ping);
        if let Some(idle) = self.idle_check {
            deadline = deadline.min(idle);
        }
        match &self.auth {
            Auth::Pending { deadline: d } => deadline = deadline.min(*d),
            Auth::Ready {
                expires,
                expired_close_at,
                ..
            } => {
                if let Some(at) = expired_close_at.or(*expires) {
                    deadline = deadline.min(at);
                }
            }
        }
        deadline
    }

    /// Run the timers that are due. While a write is pending (`writing`), the ping, pong
    /// and idle timers wait: the peer's frames are not being read, and a peer that takes
    /// no bytes at all is closed by the socket layer after `limits.write_timeout_ms`.
    /// Authentication deadlines and token expiry run either way.
    fn on_timer(&mut self, now: Instant, writing: bool) -> Option<End> {
        let config = self.hub.config().clone();
        let limits = &config.limits;
        if let Auth::Pending { deadline } = self.auth
            && now >= deadline
        {
            self.push_error(
                None,
                HubError::new(
                    ErrorCode::AuthRequired,
                    "authentication timeout: send an `auth` command right after connecting",
                ),
            );
            return Some(End::Close(
                CloseCode::POLICY_VIOLATION,
                "authentication timeout".into(),
            ));
        }
        if let Auth::Ready {
            expires,
            expired_close_at,
            ..
        } = &mut self.auth
        {
            if let Some(close_at) = *expired_close_at {
                if now >= close_at {
                    return Some(End::Close(
                        CloseCode::POLICY_VIOLATION,
                        "token expired".into(),
                    ));
                }
            } else if let Some(exp) = *expires
                && now >= exp
            {
                *expired_close_at = Some(now + Duration::from_millis(limits.auth_refresh_grace_ms));
                *expires = None;
                self.send(encode_error(
                    None,
                    &ErrorPayload {
                        code: ErrorCode::AuthExpired,
                        message: "token expired; send a fresh one with an `auth` command".into(),
                        details: Some(
                            serde_json::json!({"grace_ms": limits.auth_refresh_grace_ms}),
                        ),
                    },
                ));
            }
        }
        if writing {
            return None;
        }
        if let Some(deadline) = self.pong_deadline {
            if now >= deadline {
                return Some(End::Close(CloseCode::INTERNAL_ERROR, "ping timeout".into()));
            }
        } else if now >= self.next_ping {
            self.out.push(Message::Ping(Default::default()));
            self.pong_deadline = Some(now + Duration::from_millis(limits.pong_timeout_ms));
            self.next_ping = now + Duration::from_millis(limits.ping_interval_ms);
        }
        if let Some(check) = self.idle_check
            && now >= check
        {
            let idle = Duration::from_millis(limits.idle_timeout_ms);
            if now.duration_since(self.last_seen) >= idle {
                return Some(End::Close(
                    CloseCode::POLICY_VIOLATION,
                    "idle timeout".into(),
                ));
            }
            self.idle_check = Some(self.last_seen + idle);
        }
        None
    }
}

impl Session {
    /// Run a socket write, but give up when the connection is asked to close (e.g. its
    /// queue overflowed while this write was pending on a peer that stopped reading) or
    /// when the server shuts down, and keep the session's timers running meanwhile.
    ///
    /// The close and shutdown waiters and the timer are the serve loop's, borrowed:
    /// owning them here would copy them into this future (and register a timer per write).
    async fn guarded(
        &mut self,
        mut write: std::pin::Pin<
            &mut impl std::future::Future<Output = Result<(), ws_io::WsError>>,
        >,
        mut closed: std::pin::Pin<&mut impl std::future::Future<Output = CloseRequest>>,
        mut cancelled: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), End> {
        let started = Instant::now();
        let result = loop {
            tokio::select! {
                // The write first: it nearly always completes at once, and then nothing
                // else is polled.
                biased;
                result = write.as_mut() => break result.map_err(|_| End::Gone),
                request = closed.as_mut() => break Err(End::Close(request.code, request.reason)),
                _ = cancelled.as_mut() => {
                    // Finish the batch in flight (bounded), so no queued frame is lost;
                    // the session then drains the rest of the queue.
                    break match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write.as_mut()).await {
                        Ok(Ok(())) => Err(End::ShuttingDown),
                        _ => Err(End::Gone),
                    };
                }
                _ = timer.as_mut() => {
                    if let Some(end) = self.on_timer(Instant::now(), true) {
                        break Err(end);
                    }
                    // Ping, pong and idle wait for the write: look again in a second.
                    let next = self.next_deadline().max(Instant::now() + Duration::from_secs(1));
                    timer.as_mut().reset(next.into());
                }
            }
        };
        // A write that held the task for a while kept the peer's frames (a pong among them)
        // unread: give the read side a moment before an outstanding ping counts as
        // unanswered. Only then: a peer that never answers but keeps taking frequent
        // deliveries would otherwise push its pong deadline forward forever.
        if started.elapsed() >= WRITE_HELD_READS
            && let Some(deadline) = self.pong_deadline.as_mut()
        {
            *deadline = (*deadline).max(Instant::now() + Duration::from_secs(1));
        }
        result
    }

    fn send(&mut self, text: String) {
        self.out.push(Message::Text(WsText::from(text)));
    }

    fn push_error(&mut self, id: Option<&FrameId>, error: HubError) {
        self.send(encode_error(id, &error.payload()));
    }

    fn answer(&mut self, id: Option<&FrameId>, result: HubResult<String>) {
        let budget = self.hub.config().limits.reply_budget();
        match (id, result) {
            (Some(id), Ok(payload_json)) if payload_json.len() > budget => {
                let error = HubError::new(
                    ErrorCode::MessageTooBig,
                    format!(
                        "the reply would be {} bytes, more than limits.max_reply_size ({budget})",
                        payload_json.len()
                    ),
                );
                self.push_error(Some(id), error);
            }
            (Some(id), Ok(payload_json)) => {
                let payload = RawValue::from_string(payload_json).unwrap_or_default();
                self.send(encode_reply(id, &payload));
            }
            (None, Ok(_)) => {}
            (id, Err(e)) => self.push_error(id, e),
        }
    }

    fn become_ready(&mut self, identity: Identity) {
        let expires = identity.expires_at.map(|exp| {
            let left_ms = exp
                .saturating_mul(1000)
                .saturating_sub(crate::store::now_millis());
            Instant::now() + Duration::from_millis(left_ms)
        });
        self.hub.set_user(&self.conn, &identity.user);
        self.auth = Auth::Ready {
            identity,
            expires,
            expired_close_at: None,
        };
    }

    /// Handle a token from the URL, a header or an `auth` command.
    fn authenticate(&mut self, id: Option<&FrameId>, token: &str) {
        let result = self.hub.auth().verify(token).and_then(|identity| {
            if let Auth::Ready {
                identity: current, ..
            } = &self.auth
                && !current.is_anonymous()
                && current.user != identity.user
            {
                return Err(HubError::new(
                    ErrorCode::AuthFailed,
                    "a connection cannot switch users; open a new connection instead",
                ));
            }
            Ok(identity)
        });
        match result {
            Ok(identity) => {
                let expires_at = identity.expires_at;
                self.become_ready(identity);
                let payload = serde_json::json!({
                    "user": &*self.conn.user(),
                    "client": &*self.conn.client_id,
                    "expires_at": expires_at,
                });
                match id {
                    Some(id) => self.send(encode_reply(id, &payload)),
                    None => self.send(encode_push("auth_success", &payload)),
                }
            }
            Err(e) => match id {
                Some(id) => {
                    super::log_auth_refused(&self.hub, "a WebSocket client's token", &e);
                    self.push_error(Some(id), e)
                }
                None => {
                    super::log_auth_refused(&self.hub, "a WebSocket client's token", &e);
                    self.send(encode_push("auth_error", e.payload()))
                }
            },
        }
    }

    /// After a token refresh, check every subscription against the new token: those it no
    /// longer allows end, each with an `unsubscribe` push saying why.
    async fn revoke_lost_subscriptions(&mut self) {
        let Auth::Ready { identity, .. } = &self.auth else {
            return;
        };
        let identity = identity.clone();
        for channel in self.conn.subscriptions() {
            let Err(e) = self
                .hub
                .authorize(&identity, Capability::Subscribe, &channel)
            else {
                continue;
            };
            if self.hub.unsubscribe(&self.conn, &channel).await.is_ok() {
                self.send(encode_push(
                    "unsubscribe",
                    serde_json::json!({
                        "channel": &*channel,
                        "code": e.code,
                        "reason": "the refreshed token no longer allows this subscription",
                    }),
                ));
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Option<End> {
        self.last_seen = Instant::now();
        self.pong_deadline = None;
        match message {
            Message::Text(text) => {
                match parse_frame(text.as_str()) {
                    Err(e) => {
                        // A malformed frame costs a command like any other, and a run of
                        // them ends the connection: answering garbage forever is a flood.
                        if let Some(end) = self.rate_check(e.id.as_ref(), 1) {
                            return Some(end);
                        }
                        self.on_invalid(e);
                        let limit = self.hub.config().limits.rate_abuse_strikes.max(1);
                        if self.invalid_strikes >= limit {
                            return Some(End::Close(
                                CloseCode::POLICY_VIOLATION,
                                format!("{limit} malformed frames in a row"),
                            ));
                        }
                    }
                    Ok(frame) => {
                        self.invalid_strikes = 0;
                        let cost = match &frame.command {
                            Command::Batch(frames) => frames.len().max(1) as u32,
                            _ => 1,
                        };
                        if let Some(end) = self.rate_check(frame.id.as_ref(), cost) {
                            return Some(end);
                        }
                        self.on_frame(frame).await;
                    }
                }
                None
            }
            Message::Binary(_) => Some(End::Close(
                CloseCode::UNSUPPORTED_DATA,
                "binary frames are not part of ferry.json; send JSON text".into(),
            )),
            // Pings are answered by the WebSocket layer; any frame proves the peer alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
            // The WebSocket layer answers the close; the stream then ends.
            Message::Close(_) => None,
        }
    }

    fn rate_check(&mut self, id: Option<&FrameId>, cost: u32) -> Option<End> {
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(cost) {
            Ok(Ok(())) => {
                self.strikes = 0;
                None
            }
            _ => {
                self.strikes += 1;
                self.hub
                    .metrics()
                    .rate_limited(crate::metrics::RateLimited::Command);
                let limits = &self.hub.config().limits;
                if self.strikes >= limits.rate_abuse_strikes {
                    return Some(End::Close(
                        CloseCode::POLICY_VIOLATION,
                        "rate limit exceeded persistently".into(),
                    ));
                }
                let error = HubError::new(
                    ErrorCode::RateLimitExceeded,
                    format!(
                        "more than {} commands per second (burst {}); slow down",
                        limits.rate_per_second, limits.rate_burst
                    ),
                );
                self.push_error(id, error);
                None
            }
        }
    }

    fn on_invalid(&mut self, e: FrameError) {
        self.invalid_strikes += 1;
        let error = HubError::new(ErrorCode::InvalidMessage, e.error.message);
        self.push_error(e.id.as_ref(), error);
    }

    async fn on_frame(&mut self, frame: Frame) {
        match frame.command {
            Command::Batch(frames) => {
                // Run by the serve loop one command at a time (see `pending`).
                let count = frames.len();
                match frame.id {
                    Some(id) if frames.is_empty() => {
                        self.send(encode_reply(&id, serde_json::json!({ "count": 0 })));
                    }
                    id => {
                        self.batch_reply = id.map(|id| (id, count));
                        self.pending.extend(frames);
                    }
                }
            }
            Command::Auth(auth) => {
                self.authenticate(frame.id.as_ref(), &auth.token);
                self.revoke_lost_subscriptions().await;
            }
            Command::Ping => match frame.id.as_ref() {
                Some(id) => self.send(encode_reply(id, serde_json::json!({}))),
                None => self.send(encode_push("pong", serde_json::json!({}))),
            },
            command => {
                let result = match self.identity() {
                    Ok(identity) => self.run_command(identity, command).await,
                    Err(e) => Err(e),
                };
                self.answer(frame.id.as_ref(), result);
                let deferred = std::mem::take(&mut self.deferred);
                self.out.extend(deferred);
            }
        }
    }

    fn identity(&self) -> HubResult<Identity> {
        match &self.auth {
            Auth::Pending { .. } => Err(HubError::new(
                ErrorCode::AuthRequired,
                "authenticate first: send {\"type\":\"auth\",\"payload\":{\"token\":JWT}} or connect with ?token=JWT",
            )),
            Auth::Ready {
                expired_close_at: Some(_),
                ..
            } => Err(HubError::new(
                ErrorCode::AuthExpired,
                "token expired; send a fresh one with an `auth` command",
            )),
            Auth::Ready { identity, .. } => Ok(identity.clone()),
        }
    }

    /// Run one command; returns the reply payload as JSON text.
    async fn run_command(&mut self, identity: Identity, command: Command) -> HubResult<String> {
        let hub = self.hub.clone();
        match command {
            Command::Subscribe(SubscribeCommand {
                channel,
                recover,
                offset,
                epoch,
            }) => {
                hub.authorize(&identity, Capability::Subscribe, &channel)?;
                let recovery = match (recover, offset, epoch) {
                    (false, _, _) => None,
                    (true, Some(offset), Some(epoch)) => Some(RecoveryRequest { offset, epoch }),
                    (true, _, _) => {
                        return Err(HubError::new(
                            ErrorCode::InvalidMessage,
                            "`recover` needs the `offset` and `epoch` of the last publication seen",
                        ));
                    }
                };
                let subscribed = hub.subscribe(&self.conn, &channel, recovery).await?;
                // A recovery larger than one reply: the reply carries what fits, and the
                // rest follows at once as `message` pushes, before any live publication
                // (they are written ahead of the send queue), in offset order.
                let budget = hub.config().limits.reply_budget().saturating_sub(1024);
                let fits = fit_in_budget(&subscribed.publications, budget);
                let (in_reply, after) = subscribed.publications.split_at(fits);
                let reply = to_json(&SubscribeReply {
                    channel: &channel,
                    offset: subscribed.position.offset,
                    epoch: &subscribed.position.epoch,
                    recovered: subscribed.recovered,
                    publications: in_reply,
                });
                self.deferred
                    .extend(after.iter().map(|p| Message::Text(p.ws_frame())));
                reply
            }
            Command::Unsubscribe(c) => {
                hub.unsubscribe(&self.conn, &c.channel).await?;
                to_json(&serde_json::json!({ "channel": c.channel }))
            }
            Command::Publish(p) => {
                if hub.config().sync.is_root_channel(&p.channel) {
                    // A FileOp there must be one the hub made (transports/sync.rs).
                    return Err(HubError::new(
                        ErrorCode::PermissionDenied,
                        format!(
                            "`{}` carries a sync root's operations, published by the hub only; change files through /sync/",
                            p.channel
                        ),
                    ));
                }
                hub.authorize(&identity, Capability::Publish, &p.channel)?;
                let skip = p.skip_self.then_some(self.conn.id);
                let publication = hub
                    .publish(&p.channel, p.data.into(), Some(self.conn.info()), skip)
                    .await?;
                to_json(&serde_json::json!({
                    "channel": p.channel,
                    "offset": publication.offset(),
                    "epoch": publication.epoch(),
                }))
            }
            Command::History(HistoryCommand {
                channel,
                since,
                limit,
                reverse,
            }) => {
                hub.authorize(&identity, Capability::History, &channel)?;
                let query = HistoryQuery {
                    since,
                    limit: limit.unwrap_or(100),
                    reverse,
                };
                let page = hub.history(&channel, query).await?;
                to_json(&HistoryReply {
                    channel: &channel,
                    publications: &page.publications,
                    offset: page.position.offset,
                    epoch: &page.position.epoch,
                    has_more: page.has_more,
                })
            }
            Command::Presence(c) => {
                hub.authorize(&identity, Capability::Presence, &c.channel)?;
                let clients = hub.presence(&c.channel).await?;
                to_json(&serde_json::json!({
                    "channel": c.channel,
                    "count": clients.len(),
                    "clients": clients,
                }))
            }
            Command::Auth(_) | Command::Ping | Command::Batch(_) => Err(HubError::new(
                ErrorCode::InternalError,
                "command routed to the wrong handler",
            )),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> HubResult<String> {
    serde_json::to_string(value)
        .map_err(|e| HubError::new(ErrorCode::InternalError, format!("encoding failed: {e}")))
}

/// Time allowed for the final frames and the close frame to be written.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time the peer gets to answer our close frame before the socket is dropped.
/// A write pending this long kept the session from reading the peer's frames.
const WRITE_HELD_READS: Duration = Duration::from_millis(250);

const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Turn `End::ShuttingDown` into a drained queue and a 1001 close; other ends pass.
async fn finish(
    end: End,
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    rx: &mut Receiver,
    compress: Compress,
) -> End {
    if !matches!(end, End::ShuttingDown) {
        return end;
    }
    // Drain what is already queued (bounded: a stuck peer cannot hold us).
    let drain = async {
        while let Ok(item) = rx.try_recv() {
            write_item(socket, raw, item, compress).await?;
        }
        write_raw(socket, raw).await?;
        socket.flush().await
    };
    match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, drain).await {
        Ok(Ok(())) => End::Close(CloseCode::GOING_AWAY, "server shutting down".into()),
        _ => End::Gone,
    }
}

async fn flush_out(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    out: Vec<Message>,
) -> Result<(), ws_io::WsError> {
    // Publications written before these go first.
    write_raw(socket, raw).await?;
    // Taken from the session, not drained: replies are rare, and an idle connection should
    // not keep the capacity of its last burst of them.
    for message in out {
        socket.feed(message).await?;
    }
    socket.flush().await
}

/// Publications at least this big go out compressed (permessage-deflate agreed with a
/// 15-bit server window and no context takeover); `None`: never. Four bytes: it sits in
/// every connection's task.
type Compress = Option<std::num::NonZeroU32>;

/// Frames gathered before one vectored write of publications.
const RAW_BATCH: usize = 64;

/// Queue one outbound item in order: publications as shared pre-built frames (compressed
/// ones where agreed and big enough), anything else through tungstenite (after the
/// publications before it).
async fn write_item(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    item: Outbound,
    compress: Compress,
) -> Result<(), ws_io::WsError> {
    match item {
        Outbound::Publication(d) => {
            let frame = match compress {
                Some(min) if d.compressible() && d.ws_frame().len() >= min.get() as usize => {
                    d.ws_wire_deflated()
                }
                _ => d.ws_wire(),
            };
            raw.push(frame.clone());
            if raw.len() >= RAW_BATCH {
                write_raw(socket, raw).await?;
            }
            Ok(())
        }
        Outbound::Frame(text) => {
            write_raw(socket, raw).await?;
            socket.feed(Message::Text(text)).await
        }
    }
}

async fn write_queued(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    first: Outbound,
    rx: &mut Receiver,
    compress: Compress,
) -> Result<(), ws_io::WsError> {
    write_item(socket, raw, first, compress).await?;
    while let Ok(item) = rx.try_recv() {
        write_item(socket, raw, item, compress).await?;
    }
    write_raw(socket, raw).await?;
    socket.flush().await
}
