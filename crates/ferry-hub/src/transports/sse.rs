//! `/sse?channel=A&channel=B`: the hub over Server-Sent Events.
//!
//! Each publication is an `event: message` whose `data:` is the publication payload (the
//! same JSON as in a WebSocket `message` push) and whose `id:` lists this stream's
//! position in every channel, in the order of the query: `EPOCH:OFFSET;EPOCH:OFFSET`.
//! A reconnecting EventSource sends it back as `Last-Event-ID`, and the hub recovers what
//! was missed from history.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_proto::ErrorCode;
use ferry_proto::sse::encode_event;
use http::{HeaderMap, HeaderValue, header};

use super::{ApiError, AppState, Peer, check_origin, request_identity, request_token};
use crate::auth::Capability;
use crate::conn::{ConnHandle, Outbound};
use crate::error::HubError;
use crate::hub::{Hub, RecoveryRequest};
use crate::limits::ConnectionPermit;
use crate::publication::Publication;

/// Unsubscribes and frees the connection slot when the response stream is dropped
/// (client gone or server shutting down).
struct Cleanup {
    hub: Hub,
    conn: Arc<ConnHandle>,
    _permit: ConnectionPermit,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.hub.connection_closed(crate::metrics::Transport::Sse);
        let hub = self.hub.clone();
        let conn = self.conn.clone();
        tokio::spawn(async move { hub.disconnect(&conn).await });
    }
}

fn parse_positions(last_event_id: Option<&str>, channels: usize) -> Vec<Option<RecoveryRequest>> {
    let mut positions: Vec<Option<RecoveryRequest>> = vec![None; channels];
    if let Some(id) = last_event_id {
        for (slot, part) in positions.iter_mut().zip(id.split(';')) {
            if let Some((epoch, offset)) = part.split_once(':')
                && let Ok(offset) = offset.parse()
            {
                *slot = Some(RecoveryRequest {
                    offset,
                    epoch: epoch.to_string(),
                });
            }
        }
    }
    positions
}

fn event_id(positions: &[(String, u64)]) -> String {
    positions
        .iter()
        .map(|(epoch, offset)| format!("{epoch}:{offset}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// `GET /sse`.
pub async fn handler(
    State(state): State<AppState>,
    peer: Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let mut channels = Vec::new();
    let mut token = None;
    let mut last_event_id = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "channel" => channels.push(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            "last_event_id" => last_event_id = Some(value.into_owned()),
            _ => {}
        }
    }
    if channels.is_empty() {
        return Err(HubError::new(
            ErrorCode::InvalidMessage,
            "name at least one channel: /sse?channel=NAME[&channel=OTHER]",
        )
        .into());
    }
    let hub = state.hub.clone();
    let identity = request_identity(&hub, request_token(token.as_deref(), &headers).as_deref())?;
    for channel in &channels {
        hub.authorize(&identity, Capability::Subscribe, channel)?;
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(last_event_id);
    let permit = state.limiter.acquire(peer.0.ip())?;
    let (conn, mut rx) = hub.connect(&identity.user);
    hub.connection_opened(crate::metrics::Transport::Sse);
    let cleanup = Cleanup {
        hub: hub.clone(),
        conn: conn.clone(),
        _permit: permit,
    };
    let mut positions = Vec::with_capacity(channels.len());
    let mut backlog: Vec<Arc<Publication>> = Vec::new();
    for (channel, recover) in channels
        .iter()
        .zip(parse_positions(last_event_id.as_deref(), channels.len()))
    {
        let subscribed = hub.subscribe(&conn, channel, recover).await?;
        // With a backlog, the stream is at the position just before it, not at the head:
        // each event's id must name only what was sent so far, or a client that drops
        // mid-recovery and resumes from that id skips the rest of this channel's backlog.
        let start = match subscribed.publications.first() {
            Some(first) => (first.epoch().to_string(), first.offset().saturating_sub(1)),
            None => (
                subscribed.position.epoch.clone(),
                subscribed.position.offset,
            ),
        };
        positions.push(start);
        backlog.extend(subscribed.publications);
    }
    let shutdown = hub.shutdown_token().clone();
    let keep_alive_every = Duration::from_millis(hub.config().limits.sse_keep_alive_ms.max(100));
    let stream = async_stream::stream! {
        let _cleanup = cleanup;
        let mut positions = positions;
        yield Ok::<Bytes, Infallible>(Bytes::from_static(b": ferry\nretry: 2000\n\n"));
        for publication in backlog {
            let payload = publication.payload_json();
            yield Ok(encode(&channels, &mut positions, &publication, &payload));
        }
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive_every, keep_alive_every);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Outbound::Publication(d)) => yield Ok(encode(&channels, &mut positions, d.publication(), d.payload_json())),
                    // join/leave/direct pushes are WebSocket-only.
                    Some(Outbound::Push(_) | Outbound::Reply(_)) => {}
                    None => break,
                },
                _ = conn.closed() => break,
                _ = shutdown.cancelled() => {
                    // Drain what is already queued before the stream ends, as /ws does.
                    while let Ok(item) = rx.try_recv() {
                        if let Outbound::Publication(d) = item {
                            yield Ok(encode(&channels, &mut positions, d.publication(), d.payload_json()));
                        }
                    }
                    break;
                }
                _ = keep_alive.tick() => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    };
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn encode(
    channels: &[String],
    positions: &mut [(String, u64)],
    publication: &Publication,
    payload_json: &str,
) -> Bytes {
    if let Some(index) = channels.iter().position(|c| c == publication.channel()) {
        positions[index] = (publication.epoch().to_string(), publication.offset());
    }
    let mut out = String::with_capacity(payload_json.len() + 64);
    encode_event(
        &mut out,
        Some("message"),
        Some(&event_id(positions)),
        payload_json,
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_the_event_id() {
        let id = event_id(&[("ab12".into(), 7), ("cd34".into(), 0)]);
        assert_eq!(id, "ab12:7;cd34:0");
        let parsed = parse_positions(Some(&id), 3);
        assert_eq!(
            parsed[0],
            Some(RecoveryRequest {
                offset: 7,
                epoch: "ab12".into()
            })
        );
        assert_eq!(parsed[1].as_ref().map(|r| r.offset), Some(0));
        assert_eq!(parsed[2], None);
        assert!(parse_positions(Some("garbage"), 1)[0].is_none());
    }
}
