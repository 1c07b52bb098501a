//! What a `/ws` session does with a frame: decode it in the codec, rate-limit it, run
//! the command through the command layer, answer it; authentication and token refresh.

use std::time::{Duration, Instant};

use ferry_proto::envelope::FrameId;
use ferry_proto::envelope::{Command, Frame, FrameError};
use ferry_proto::session::RateVerdict;
use ferry_proto::{CloseCode, Codec, ErrorCode};

use crate::auth::{Capability, Identity};
use crate::commands::{self, Caller, Reply, Started};
use crate::conn::Outbound;
use crate::error::{HubError, HubResult};
use crate::hub::Publishing;
use crate::hub::fit_in_budget;
use crate::transports::ws_io;
use crate::transports::ws_io::Message;

use super::session::{Answer, Batch, End, Session};

/// Publishes of one connection that may wait for their commit at once; past this, the
/// session waits for the next one's before it reads on.
const MAX_PIPELINED: usize = 64;

impl Session {
    /// Queue an encoded frame: text for `ferry.json`, binary for `ferry.msgpack`.
    pub(super) fn send(&mut self, frame: Vec<u8>) {
        self.out.push(ws_io::data_frame(self.codec, &frame));
    }

    pub(super) fn push_error(&mut self, id: Option<&FrameId>, error: HubError) {
        self.send(self.codec.error(id, &error.payload()));
    }

    pub(super) fn answer(&mut self, id: Option<&FrameId>, result: HubResult<Reply>) {
        let budget = self.hub.config().limits.reply_budget();
        match (id, result) {
            (Some(id), Ok(reply)) => {
                let frame = self.codec.reply(id, &reply);
                if frame.len() > budget {
                    let error = HubError::new(
                        ErrorCode::MessageTooBig,
                        format!(
                            "the reply would be {} bytes, more than limits.max_reply_size ({budget})",
                            frame.len()
                        ),
                    );
                    self.push_error(Some(id), error);
                } else {
                    self.send(frame);
                }
            }
            (None, Ok(_)) => {}
            (id, Err(e)) => self.push_error(id, e),
        }
    }

    pub(super) fn become_ready(&mut self, identity: Identity) {
        let expires = identity.expires_at.map(|exp| {
            let left_ms = exp
                .saturating_mul(1000)
                .saturating_sub(crate::store::now_millis());
            Instant::now() + Duration::from_millis(left_ms)
        });
        self.hub.set_user(&self.conn, &identity.user);
        self.clock.authenticated(expires);
        self.identity = Some(identity);
    }

    /// Handle a token from the URL, a header or an `auth` command.
    pub(super) fn authenticate(&mut self, id: Option<&FrameId>, token: &str) {
        let result = self.hub.auth().verify(token).and_then(|identity| {
            if let Some(current) = &self.identity
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
                    Some(id) => self.send(self.codec.reply(id, &payload)),
                    None => self.send(self.codec.push("auth_success", &payload)),
                }
            }
            Err(e) => match id {
                Some(id) => {
                    crate::transports::log_auth_refused(
                        &self.hub,
                        "a WebSocket client's token",
                        &e,
                    );
                    self.push_error(Some(id), e)
                }
                None => {
                    crate::transports::log_auth_refused(
                        &self.hub,
                        "a WebSocket client's token",
                        &e,
                    );
                    self.send(self.codec.push("auth_error", e.payload()))
                }
            },
        }
    }

    /// After a token refresh, check every subscription against the new token: those it no
    /// longer allows end, each with an `unsubscribe` push saying why.
    pub(super) async fn revoke_lost_subscriptions(&mut self) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        for channel in self.conn.subscriptions() {
            let Err(e) = self
                .hub
                .authorize(&identity, Capability::Subscribe, &channel)
            else {
                continue;
            };
            if self.hub.unsubscribe(&self.conn, &channel).await.is_ok() {
                self.send(self.codec.push(
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

    pub(super) async fn on_message(&mut self, message: Message) -> Option<End> {
        self.clock.on_peer_frame(Instant::now());
        let decoded = match (message, self.codec) {
            (Message::Text(text), Codec::Json) => self.codec.decode(text.as_bytes()),
            (Message::Binary(bytes), Codec::MsgPack) => self.codec.decode(&bytes),
            (Message::Binary(_), Codec::Json) => {
                return Some(End::Close(
                    CloseCode::UNSUPPORTED_DATA,
                    "binary frames are not part of ferry.json; send JSON text".into(),
                ));
            }
            (Message::Text(_), Codec::MsgPack) => {
                return Some(End::Close(
                    CloseCode::UNSUPPORTED_DATA,
                    "text frames are not part of ferry.msgpack; send MessagePack in binary frames"
                        .into(),
                ));
            }
            // Pings are answered by the WebSocket layer; any frame proves the peer alive.
            (Message::Ping(_) | Message::Pong(_) | Message::Frame(_), _) => return None,
            // The WebSocket layer answers the close; the stream then ends.
            (Message::Close(_), _) => return None,
        };
        match decoded {
            Err(e) => {
                // A malformed frame costs a command like any other, and a run of them ends
                // the connection: answering garbage forever is a flood.
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

    pub(super) fn rate_check(&mut self, id: Option<&FrameId>, cost: u32) -> Option<End> {
        let limits = &self.hub.config().limits;
        let verdict = self.bucket.take(
            cost,
            limits.rate_per_second,
            limits.rate_burst,
            Instant::now(),
        );
        match verdict {
            RateVerdict::Allowed => None,
            RateVerdict::Refused { strikes } => {
                self.hub
                    .metrics()
                    .rate_limited(crate::metrics::RateLimited::Command);
                let limits = &self.hub.config().limits;
                if strikes >= limits.rate_abuse_strikes {
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

    pub(super) fn on_invalid(&mut self, e: FrameError) {
        self.invalid_strikes += 1;
        let error = HubError::new(ErrorCode::InvalidMessage, e.error.message);
        self.push_error(e.id.as_ref(), error);
    }

    pub(super) async fn on_frame(&mut self, frame: Frame) {
        match frame.command {
            Command::Batch(frames) => {
                // Run by the serve loop one command at a time (see `Batch`).
                let count = frames.len();
                self.batch = Some(Box::new(Batch {
                    pending: frames.into(),
                    reply: frame.id.map(|id| (id, count)),
                }));
            }
            Command::Auth(auth) => {
                self.authenticate(frame.id.as_ref(), &auth.token);
                self.revoke_lost_subscriptions().await;
            }
            Command::Ping => match frame.id.as_ref() {
                Some(id) => self.send(self.codec.reply(id, serde_json::json!({}))),
                None => self.send(self.codec.push("pong", serde_json::json!({}))),
            },
            command => {
                let started = match self.identity() {
                    Ok(identity) => {
                        let caller = Caller::Connection {
                            identity: &identity,
                            conn: &self.conn,
                        };
                        commands::start(&self.hub, caller, command).await
                    }
                    Err(e) => Err(e),
                };
                let result = match started {
                    Ok(Started::Now(reply)) => Ok(reply),
                    Ok(Started::Later { reply, publishing }) => {
                        // Outside a batch (whose reply comes after its last command), the
                        // publish is answered once stored, and the next command is read
                        // meanwhile: one connection's publications share commits.
                        if self.batch.is_none() {
                            self.answer_later(frame.id, reply, publishing).await;
                            return;
                        }
                        publishing.finish().await.map(|_| reply)
                    }
                    Err(e) => Err(e),
                };
                let mut after = Vec::new();
                let result = result.map(|reply| self.fit_recovery(reply, &mut after));
                self.answer(frame.id.as_ref(), result);
                self.out.extend(after);
            }
        }
    }

    /// Answer a publish once it is stored and fanned out, through the connection's send
    /// queue: after the publication itself for a subscriber of its channel, and in the
    /// order of the connection's publishes (see [`super::session::Pipeline`]). With
    /// [`MAX_PIPELINED`] in flight, waits until the oldest is answered first.
    async fn answer_later(&mut self, id: Option<FrameId>, reply: Reply, publishing: Publishing) {
        let codec = self.codec;
        let done = id.as_ref().map(|id| codec.reply(id, &reply));
        let pipeline = self.pipeline.get_or_insert_with(Default::default);
        pipeline.answers.push_back(Answer {
            done,
            id,
            publishing,
        });
        if pipeline.answers.len() > MAX_PIPELINED {
            self.answer_next().await;
        }
    }

    /// Wait for the oldest publish in flight and queue its answer behind what the
    /// connection was sent before it. Pending for ever when none is in flight.
    /// Cancel-safe: an answer is taken and queued in the same poll.
    pub(super) async fn answer_next(&mut self) {
        let codec = self.codec;
        let answer = std::future::poll_fn(|cx| match self.pipeline.as_mut() {
            Some(pipeline) => pipeline.poll_answer(codec, cx),
            None => std::task::Poll::Pending,
        })
        .await;
        if let Some(frame) = answer {
            self.conn
                .push(Outbound::Reply(Box::new(ws_io::data_frame(codec, &frame))));
        }
    }

    /// Answer every publish in flight (at shutdown).
    pub(super) async fn settle_answers(&mut self) {
        while self.answers_pending() {
            self.answer_next().await;
        }
    }

    /// Whether publishes wait for their answer.
    pub(super) fn answers_pending(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(|p| !p.answers.is_empty())
    }

    pub(super) fn identity(&self) -> HubResult<Identity> {
        match &self.identity {
            _ if self.clock.is_expired() => Err(HubError::new(
                ErrorCode::AuthExpired,
                "token expired; send a fresh one with an `auth` command",
            )),
            Some(identity) => Ok(identity.clone()),
            None => Err(HubError::new(
                ErrorCode::AuthRequired,
                "authenticate first: send {\"type\":\"auth\",\"payload\":{\"token\":JWT}} or connect with ?token=JWT",
            )),
        }
    }

    /// A recovery larger than one reply: the reply carries what fits, and the rest
    /// follows at once as `message` pushes, before any live publication (they are written
    /// ahead of the send queue), in offset order.
    pub(super) fn fit_recovery(&self, reply: Reply, after: &mut Vec<bytes::Bytes>) -> Reply {
        let Reply::Subscribe {
            channel,
            offset,
            epoch,
            recovered,
            mut publications,
        } = reply
        else {
            return reply;
        };
        let budget = self.hub.config().limits.reply_budget().saturating_sub(1024);
        let fits = fit_in_budget(&publications, budget);
        let codec = self.codec;
        after.extend(
            publications
                .drain(fits..)
                .map(|p| ws_io::data_frame(codec, &p.frame(codec))),
        );
        Reply::Subscribe {
            channel,
            offset,
            epoch,
            recovered,
            publications,
        }
    }
}
