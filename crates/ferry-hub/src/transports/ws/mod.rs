//! `/ws`: the hub over WebSocket with the `ferry.json` (JSON text frames) or
//! `ferry.msgpack` (MessagePack binary frames) subprotocol; `ferry_proto::Codec` does all
//! the encoding, so every rule below holds for both.
//!
//! One task per connection. It waits on four things at once: a frame from the peer, its
//! send queue, a close request (API disconnect, slow consumer, shutdown), and its next
//! timer (ping, pong deadline, auth deadline, token expiry, idle). Queued frames are fed
//! to the socket and flushed once per batch, so a burst of publications is one write.
//!
//! `mod.rs`: the upgrade; `session.rs`: the connection's state, serve loop and timers
//! (the clock itself is `ferry_proto::session`); `dispatch.rs`: frames in, commands
//! through `crate::commands`, answers out; `write.rs`: pre-built frames to the socket.

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use ferry_proto::{Codec, ErrorCode};
use serde::Deserialize;

use crate::error::HubError;
use crate::transports::ws_io;
use crate::transports::{ApiError, AppState, Peer, check_origin, request_token};

mod dispatch;
mod session;
mod write;

use session::Session;

/// Subprotocols spoken on `/ws`; a client that offers none speaks `ferry.json`.
pub const PROTOCOLS: &[&str] = &[Codec::Json.subprotocol(), Codec::MsgPack.subprotocol()];

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
        move |socket, protocol, deflate| {
            // `upgrade` only chooses from PROTOCOLS.
            let codec = Codec::from_subprotocol(protocol).unwrap_or_default();
            Session::run(hub, socket, token, permit, deflate, codec)
        },
    )
}
