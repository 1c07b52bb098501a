//! The hub client's own work: sending subscribes (first ones and resubscribes with
//! recovery after each reconnect), routing pushes to subscriptions and events, and
//! refreshing an expired token.

use std::sync::Arc;

use ferry_proto::envelope::{ClientInfo, Publication};
use ferry_proto::{ErrorCode, ErrorPayload};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::subscription::SubscribeReply;
use super::{
    HubError, HubEvent, InFrame, Inner, Position, SubscriptionEvent, command, decode_reply,
};
use crate::ws::state::lock;
use crate::ws::{ConnectionState, Message, StateStream, WeakWebSocket, WebSocket};

/// Send a subscribe for `channel` on the current connection, unless it already went out
/// on it; the reply is handled in a task of its own.
pub(super) fn send_subscribe(ws: &WebSocket, inner: &Arc<Inner>, channel: &str) {
    if ws.state() != ConnectionState::Open {
        return;
    }
    let connection = ws.connection_seq();
    let (message, generation, resumed) = {
        let mut subs = lock(&inner.subs);
        let Some(entry) = subs.get_mut(channel) else {
            return;
        };
        if entry.subscribed_on == Some(connection) {
            return;
        }
        entry.subscribed_on = Some(connection);
        entry.generation += 1;
        entry.recovery.begin();
        let mut payload = json!({ "channel": channel });
        let resumed = entry.recovery.position.is_some();
        if let Some(pos) = &entry.recovery.position {
            payload["recover"] = json!(true);
            payload["offset"] = json!(pos.offset);
            payload["epoch"] = json!(pos.epoch);
        }
        (
            command(inner.codec, "subscribe", &inner.id(), payload),
            entry.generation,
            resumed,
        )
    };
    let ws = ws.clone();
    let inner = inner.clone();
    let channel = channel.to_string();
    tokio::spawn(async move {
        let result = match ws.request_on(connection, message).await {
            Ok(reply) => decode_reply::<SubscribeReply>(inner.codec, &reply),
            Err(e) => Err(HubError::Transport(e)),
        };
        let mut subs = lock(&inner.subs);
        let Some(entry) = subs.get_mut(&channel) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let mut out = Vec::new();
        match result {
            Ok(reply) => {
                entry.recovery.on_reply(reply, resumed, &mut out);
                if let Some(first) = entry.first.take() {
                    let position = entry.recovery.position.clone().unwrap_or(Position {
                        offset: 0,
                        epoch: String::new(),
                    });
                    let _ = first.send(Ok(position));
                }
            }
            Err(HubError::Transport(e)) if e.kind() == crate::ws::ErrorKind::ConnectionLost => {
                // The connection dropped under it: the reconnect resubscribes from the
                // same position (and answers a waiting `subscribe` then).
                entry.subscribed_on = None;
            }
            Err(e) => {
                entry.recovery.abort(&mut out);
                match entry.first.take() {
                    Some(first) => {
                        let _ = first.send(Err(e));
                    }
                    None => out.push(SubscriptionEvent::Error(e)),
                }
            }
        }
        Inner::emit(entry, out);
    });
}

#[derive(Deserialize)]
struct PresencePush {
    channel: String,
    info: ClientInfo,
}

#[derive(Deserialize)]
struct AuthPush {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
}

#[derive(Deserialize)]
struct DirectPush {
    data: ferry_proto::Data,
}

/// The client's own task: routes pushes to subscriptions and events, and restores
/// subscriptions after every reconnect. Holds only a weak handle, so dropping the last
/// `HubClient` closes the connection and ends this task.
pub(super) async fn serve(
    ws: WeakWebSocket,
    inner: Arc<Inner>,
    mut states: StateStream,
    events: mpsc::UnboundedSender<HubEvent>,
) {
    loop {
        tokio::select! {
            message = ws.recv() => {
                let Some(message) = message else { break };
                on_push(&ws, &inner, &events, message);
            }
            state = states.next() => {
                match state {
                    Some(ConnectionState::Open) => {
                        let Some(strong) = ws.upgrade() else { break };
                        let channels: Vec<String> = lock(&inner.subs).keys().cloned().collect();
                        for channel in channels {
                            send_subscribe(&strong, &inner, &channel);
                        }
                    }
                    Some(_) => {}
                    // The connection task ended; drain what is left, then stop.
                    None => {
                        while let Some(message) = ws.recv().await {
                            on_push(&ws, &inner, &events, message);
                        }
                        break;
                    }
                }
            }
        }
    }
    // Closed for good: every subscription stream ends.
    lock(&inner.subs).clear();
}

fn on_push(
    ws: &WeakWebSocket,
    inner: &Arc<Inner>,
    events: &mpsc::UnboundedSender<HubEvent>,
    message: Message,
) {
    let frame = match InFrame::read(inner.codec, &message) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a frame that is not an envelope");
            return;
        }
    };
    if frame.has_id {
        // A reply whose request timed out meanwhile.
        return;
    }
    match frame.kind.as_str() {
        "message" => {
            let Ok(publication) = frame.payload::<Publication>() else {
                tracing::debug!("ignoring a malformed publication");
                return;
            };
            let mut subs = lock(&inner.subs);
            if let Some(entry) = subs.get_mut(&publication.channel) {
                let mut out = Vec::new();
                entry.recovery.on_publication(publication, &mut out);
                Inner::emit(entry, out);
            }
        }
        kind @ ("join" | "leave") => {
            let Ok(push) = frame.payload::<PresencePush>() else {
                return;
            };
            let subs = lock(&inner.subs);
            if let Some(entry) = subs.get(&push.channel) {
                let event = if kind == "join" {
                    SubscriptionEvent::Join(push.info)
                } else {
                    SubscriptionEvent::Leave(push.info)
                };
                Inner::emit(entry, vec![event]);
            }
        }
        "auth_success" => {
            if let Ok(a) = frame.payload::<AuthPush>() {
                let _ = events.send(HubEvent::AuthSuccess {
                    user: a.user,
                    client: a.client,
                });
            }
        }
        "auth_error" | "error" => {
            let error = match frame.payload::<ErrorPayload>() {
                Ok(p) => HubError::from_payload(p),
                Err(e) => HubError::Decode(format!("error push: {e}")),
            };
            if error.server_code() == Some(ErrorCode::AuthExpired) {
                refresh_token(ws, inner, events.clone());
            }
            let event = if frame.kind == "auth_error" {
                HubEvent::AuthError(error)
            } else {
                HubEvent::Error(error)
            };
            let _ = events.send(event);
        }
        "direct" => {
            if let Ok(d) = frame.payload::<DirectPush>() {
                let _ = events.send(HubEvent::Direct(d.data));
            }
        }
        _ => {}
    }
}

/// The token expired on an open connection: fetch a fresh one and send `auth`.
fn refresh_token(ws: &WeakWebSocket, inner: &Arc<Inner>, events: mpsc::UnboundedSender<HubEvent>) {
    let (Some(provider), Some(ws)) = (inner.token.clone(), ws.upgrade()) else {
        return;
    };
    let id = inner.id();
    let codec = inner.codec;
    tokio::spawn(async move {
        let Some(token) = provider().await else {
            return;
        };
        match ws
            .request(command(codec, "auth", &id, json!({ "token": token })))
            .await
        {
            Ok(reply) => match decode_reply::<Value>(codec, &reply) {
                Ok(_) => {
                    let _ = events.send(HubEvent::TokenRefreshed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing the token failed");
                    let _ = events.send(HubEvent::AuthError(e));
                }
            },
            Err(e) => tracing::warn!(error = %e, "refreshing the token failed"),
        }
    });
}
