//! The session of one `/ws` connection: its state, the serve loop and its timers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferry_proto::envelope::FrameId;
use ferry_proto::envelope::{Frame, FrameError};
use ferry_proto::session::{CommandBucket, SessionClock, SessionEvent};
use ferry_proto::{CloseCode, Codec, ErrorCode, ErrorPayload};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Sleep, sleep_until};

use crate::auth::Identity;
use crate::conn::{CloseRequest, ConnHandle, Outbound, Receiver};
use crate::error::HubError;
use crate::hub::Hub;
use crate::limits::ConnectionPermit;
use crate::transports::ws_io::{self, RawFrames, ServerSocket, write_raw};

use super::write::{
    CLOSE_HANDSHAKE_TIMEOUT, CLOSE_WRITE_TIMEOUT, Compress, WRITE_HELD_READS, finish, flush_out,
    write_queued,
};

/// Counted in `ferry_connections{transport="ws"}` from `Session::run` until dropped (a
/// guard field would add to every connection's task; the session holds the hub anyway).
pub(super) struct Session {
    /// Publications go out compressed when at least this big (permessage-deflate agreed
    /// with a 15-bit server window and no context takeover); `None`: never.
    pub(super) compress: Compress,
    /// The subprotocol's encoding.
    pub(super) codec: Codec,
    pub(super) hub: Hub,
    pub(super) conn: Arc<ConnHandle>,
    /// Who the connection is, once it authenticated (or was let in anonymously).
    pub(super) identity: Option<Identity>,
    /// Auth deadline, token expiry, pings, idle: the sans-IO part of the session.
    pub(super) clock: SessionClock,
    /// The command rate limit.
    pub(super) bucket: CommandBucket,
    /// Malformed frames in a row.
    pub(super) invalid_strikes: u32,
    /// The rest of a batch: run one command at a time, each answer written before the
    /// next runs, so a batch never builds all its answers in memory.
    pub(super) batch: Option<Box<Batch>>,
    /// Replies and pings to write, as complete frames.
    pub(super) out: Vec<bytes::Bytes>,
    /// Publishes answered later (stored while the session reads on). Boxed: made on a
    /// connection's first publish.
    pub(super) pipeline: Option<Box<Pipeline>>,
}

/// The publishes of a session that are answered once stored and fanned out, oldest
/// first. The session polls the oldest in its own loop (no task per publish): answers go
/// out in the order the publishes came, each after its publication.
#[derive(Default)]
pub(super) struct Pipeline {
    pub(super) answers: VecDeque<Answer>,
}

/// A publish waiting for its outcome.
pub(super) struct Answer {
    /// The reply frame when it succeeds (`None`: the publish had no id).
    pub(super) done: Option<Vec<u8>>,
    pub(super) id: Option<FrameId>,
    pub(super) publishing: crate::hub::Publishing,
}

impl Pipeline {
    /// The answer of the oldest publish once its outcome is known: the frame to queue
    /// (`None` for a successful publish without an id). Pending while the queue is
    /// empty.
    pub(super) fn poll_answer(
        &mut self,
        codec: Codec,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Vec<u8>>> {
        let Some(front) = self.answers.front_mut() else {
            return Poll::Pending;
        };
        let outcome = std::task::ready!(front.publishing.poll_outcome(cx));
        let Some(answer) = self.answers.pop_front() else {
            return Poll::Pending;
        };
        // A burst's capacity is given back once it is answered.
        if self.answers.is_empty() && self.answers.capacity() > 8 {
            self.answers = VecDeque::new();
        }
        Poll::Ready(match outcome {
            Ok(()) => answer.done,
            Err(e) => Some(codec.error(answer.id.as_ref(), &e.payload())),
        })
    }
}

/// A batch being run: its remaining commands, and its own id and size for the reply after
/// the last one. Boxed in the session: batches are rare.
pub(super) struct Batch {
    pub(super) pending: VecDeque<Result<Frame, FrameError>>,
    pub(super) reply: Option<(FrameId, usize)>,
}

/// Why the loop ended.
pub(super) enum End {
    /// Close with this code and reason.
    Close(CloseCode, String),
    /// The transport is gone; nothing to send.
    Gone,
    /// The server is shutting down: send what is queued, then close with 1001. Only
    /// `guarded` returns it; `serve` turns it into `Close` or `Gone`.
    ShuttingDown,
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
    pub(super) fn run(
        hub: Hub,
        mut socket: ServerSocket,
        token: Option<String>,
        permit: ConnectionPermit,
        deflate: Option<ws_io::Deflate>,
        codec: Codec,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let limits = &hub.config().limits;
        let now = Instant::now();
        let (conn, mut rx) = hub.connect("");
        hub.connection_opened(crate::metrics::Transport::WebSocket);
        let mut session = Session {
            codec,
            hub: hub.clone(),
            conn: conn.clone(),
            identity: None,
            clock: SessionClock::new(&limits.session(), now),
            bucket: CommandBucket::new(limits.rate_burst, now),
            invalid_strikes: 0,
            batch: None,
            out: Vec::new(),
            pipeline: None,
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
                session.send(codec.push("auth_success", &info));
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
                    for frame in session.out.drain(..) {
                        raw.push(frame);
                    }
                    write_raw(&mut socket, &mut raw).await?;
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

    pub(super) async fn serve(
        &mut self,
        socket: &mut ServerSocket,
        raw: &mut RawFrames,
        rx: &mut Receiver,
    ) -> End {
        let shutdown = self.hub.shutdown_token().clone();
        let conn = self.conn.clone();
        let compress = self.compress;
        let codec = self.codec;
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
                    return Box::pin(finish(end, socket, raw, rx, compress, codec)).await;
                }
                // Timers may have queued more (a ping) while the write was pending.
                continue;
            }
            if let Some(batch) = self.batch.as_mut() {
                match batch.pending.pop_front() {
                    Some(Ok(frame)) => Box::pin(self.on_frame(frame)).await,
                    Some(Err(e)) => self.on_invalid(e),
                    None => {
                        if let Some(Some((id, count))) = self.batch.take().map(|b| b.reply) {
                            self.send(codec.reply(&id, serde_json::json!({ "count": count })));
                        }
                    }
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
                    // Publishes in flight are answered first (their commits are close).
                    let settle = self.settle_answers();
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, settle).await;
                    return Box::pin(finish(End::ShuttingDown, socket, raw, rx, compress, codec)).await;
                }
                () = self.answer_next(), if self.answers_pending() => {}
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
                        let write = std::pin::pin!(write_queued(socket, raw, Some(item), rx, compress, codec));
                        self.guarded(write, closed.as_mut(), cancelled.as_mut(), timer.as_mut())
                            .await
                    };
                    if let Err(end) = written {
                        return Box::pin(finish(end, socket, raw, rx, compress, codec)).await;
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

    pub(super) fn next_deadline(&self) -> Instant {
        self.clock.next_deadline()
    }

    /// Run the timers that are due (see [`SessionClock::on_timer`]) and carry out what
    /// they say.
    pub(super) fn on_timer(&mut self, now: Instant, writing: bool) -> Option<End> {
        let limits = self.hub.config().limits.session();
        let mut events = Vec::new();
        self.clock.on_timer(&limits, now, writing, &mut events);
        for event in events {
            match event {
                SessionEvent::Ping => self.out.push(ws_io::ping_frame()),
                SessionEvent::TokenExpired { grace } => self.send(self.codec.error(
                    None,
                    &ErrorPayload {
                        code: ErrorCode::AuthExpired,
                        message: "token expired; send a fresh one with an `auth` command".into(),
                        details: Some(serde_json::json!({"grace_ms": grace.as_millis() as u64})),
                    },
                )),
                SessionEvent::AuthTimeout => {
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
                SessionEvent::Close(code, reason) => return Some(End::Close(code, reason.into())),
            }
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
    pub(super) fn guarded<'a, W, C, X>(
        &'a mut self,
        write: Pin<&'a mut W>,
        closed: Pin<&'a mut C>,
        cancelled: Pin<&'a mut X>,
        timer: Pin<&'a mut Sleep>,
    ) -> Guarded<'a, W, C, X> {
        Guarded {
            session: self,
            write,
            closed,
            cancelled,
            timer,
            started: Instant::now(),
            draining: None,
        }
    }
}

/// The future of [`Session::guarded`], written by hand: it sits in every connection's
/// task (in the serve loop's largest state) while a write is pending, and an `async fn`
/// with a `select!` kept every argument twice plus the select's state (192 bytes; this is
/// 64).
pub(super) struct Guarded<'a, W, C, X> {
    session: &'a mut Session,
    write: Pin<&'a mut W>,
    closed: Pin<&'a mut C>,
    cancelled: Pin<&'a mut X>,
    timer: Pin<&'a mut Sleep>,
    started: Instant,
    /// Set when the server began shutting down: the write in flight may finish within
    /// [`CLOSE_WRITE_TIMEOUT`], so no queued frame is lost (boxed: rare, and a timer
    /// would weigh on every connection's task).
    draining: Option<Pin<Box<Sleep>>>,
}

impl<W, C, X> Future for Guarded<'_, W, C, X>
where
    W: Future<Output = Result<(), ws_io::WsError>>,
    C: Future<Output = CloseRequest>,
    X: Future<Output = ()>,
{
    type Output = Result<(), End>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = loop {
            // The write first: it nearly always completes at once, and then nothing else
            // is polled.
            if let Poll::Ready(written) = this.write.as_mut().poll(cx) {
                break match (this.draining.is_some(), written) {
                    (false, written) => written.map_err(|_| End::Gone),
                    (true, Ok(())) => Err(End::ShuttingDown),
                    (true, Err(_)) => Err(End::Gone),
                };
            }
            if let Some(limit) = this.draining.as_mut() {
                if limit.as_mut().poll(cx).is_ready() {
                    break Err(End::Gone);
                }
                return Poll::Pending;
            }
            if let Poll::Ready(request) = this.closed.as_mut().poll(cx) {
                break Err(End::Close(request.code, request.reason));
            }
            if this.cancelled.as_mut().poll(cx).is_ready() {
                // Finish the batch in flight (bounded); the session then drains the rest
                // of the queue.
                this.draining = Some(Box::pin(tokio::time::sleep(CLOSE_WRITE_TIMEOUT)));
                continue;
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                if let Some(end) = this.session.on_timer(Instant::now(), true) {
                    break Err(end);
                }
                // Ping, pong and idle wait for the write: look again in a second.
                let next = this
                    .session
                    .next_deadline()
                    .max(Instant::now() + Duration::from_secs(1));
                this.timer.as_mut().reset(next.into());
                continue;
            }
            return Poll::Pending;
        };
        // A write that held the task for a while kept the peer's frames unread.
        if this.started.elapsed() >= WRITE_HELD_READS {
            this.session.clock.write_held(Instant::now());
        }
        Poll::Ready(result)
    }
}
