//! `/test/*`: endpoints for testing clients without the internet (httpbin-like), plus a
//! WebSocket echo through the same WebSocket stack as `/ws`. Every size and delay is capped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ws_io::{self, Message};
use super::{ApiError, AppState, Peer};
use ferry_proto::CloseCode;

/// The testbed routes (mounted under `/test`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/test/echo", get(echo))
        .route("/test/anything", any(anything))
        .route("/test/anything/{*rest}", any(anything))
        .route("/test/status/{code}", any(status))
        .route("/test/delay/{secs}", any(delay))
        .route("/test/stream/{n}", get(stream))
        .route("/test/sse", get(sse))
        .merge(super::testbed_http::routes())
}

async fn echo(State(state): State<AppState>, peer: Peer, req: Request) -> Response {
    // The same Origin rule and connection limits as /ws.
    if let Err(e) = super::check_origin(&state, req.headers()) {
        return e.into_response();
    }
    let permit = match state.limiter.acquire(peer.0.ip()) {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };
    let max = state.hub.config().limits.testbed_max_echo_size;
    // A peer that sends nothing for the idle timeout is closed (1008); one that stops
    // reading its echoes is cut off by the socket layer's write timeout.
    let idle = match state.hub.config().limits.idle_timeout_ms {
        0 => Duration::MAX,
        ms => Duration::from_millis(ms),
    };
    let shutdown = state.hub.shutdown_token().clone();
    let compression = state.hub.config().compression.policy();
    ws_io::upgrade(
        req,
        max,
        &[],
        compression,
        move |mut socket: ws_io::ServerSocket, _, _| async move {
            let _permit = permit;
            // Made once: a new one per message would register and unregister a waiter on the
            // shutdown token, whose list every connection shares.
            let cancelled = shutdown.cancelled();
            tokio::pin!(cancelled);
            loop {
                let frame = tokio::select! {
                    frame = tokio::time::timeout(idle, socket.next()) => match frame {
                        Ok(frame) => frame,
                        Err(_) => {
                            let close = ws_io::close_message(CloseCode::POLICY_VIOLATION, "idle timeout");
                            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
                            break;
                        }
                    },
                    _ = &mut cancelled => {
                        let close = ws_io::close_message(CloseCode::GOING_AWAY, "server shutting down");
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
                        break;
                    }
                };
                let reply = match frame {
                    None => break,
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        if let Some((code, reason)) = ws_io::close_for_error(&e) {
                            let _ = socket.send(ws_io::close_message(code, reason)).await;
                        }
                        break;
                    }
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
        },
    )
}

fn headers_json(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn args_json(uri: &Uri) -> BTreeMap<String, Value> {
    let mut args: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let v = Value::String(v.into_owned());
        match args.get_mut(&*k) {
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.take(), v]),
            None => {
                args.insert(k.into_owned(), v);
            }
        }
    }
    args
}

async fn anything(
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let form: BTreeMap<String, String> = if headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    }) {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        BTreeMap::new()
    };
    Json(json!({
        "method": method.as_str(),
        "url": uri.to_string(),
        "path": uri.path(),
        "args": args_json(&uri),
        "headers": headers_json(&headers),
        "data": text,
        "json": parsed,
        "form": form,
        "origin": peer.0.ip().to_string(),
    }))
}

#[derive(Deserialize)]
struct StatusQuery {
    retry_after: Option<u64>,
}

async fn status(Path(code): Path<u16>, Query(q): Query<StatusQuery>) -> Response {
    let Ok(status) = StatusCode::from_u16(code) else {
        return (StatusCode::BAD_REQUEST, "status must be 100..=999").into_response();
    };
    if !(200..=599).contains(&code) {
        return (StatusCode::BAD_REQUEST, "status must be 200..=599").into_response();
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let h = response.headers_mut();
    if status.is_redirection() {
        h.insert(header::LOCATION, HeaderValue::from_static("/test/anything"));
    }
    if code == 401 {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = q.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn delay(State(state): State<AppState>, Path(secs): Path<f64>) -> Json<Value> {
    let max = state.hub.config().limits.testbed_max_delay_secs as f64;
    let secs = if secs.is_finite() {
        secs.clamp(0.0, max)
    } else {
        0.0
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    Json(json!({ "delay": secs }))
}

async fn stream(Path(n): Path<usize>, uri: Uri) -> Response {
    let n = n.min(100);
    let path = uri.path().to_string();
    let lines = futures_util::stream::iter((0..n).map(move |i| {
        Ok::<Bytes, Infallible>(Bytes::from(format!("{}\n", json!({"id": i, "url": path}))))
    }));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SseQuery {
    count: Option<u64>,
    interval_ms: Option<u64>,
}

/// A ticker: `event: tick` every `interval_ms` (default 1000, 10..=60000), `count` events
/// (default 10, at most 1000). Ids count up; `Last-Event-ID: N` resumes at N+1.
async fn sse(Query(q): Query<SseQuery>, headers: HeaderMap) -> Response {
    let count = q.count.unwrap_or(10).min(1000);
    let interval = Duration::from_millis(q.interval_ms.unwrap_or(1000).clamp(10, 60_000));
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| n + 1)
        .unwrap_or(1);
    let body = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(Bytes::from_static(b"retry: 1000\n\n"));
        let mut ticker = tokio::time::interval(interval);
        for n in start..=count {
            ticker.tick().await;
            let mut out = String::new();
            let data = json!({"n": n, "time": crate::store::now_millis()}).to_string();
            ferry_proto::sse::encode_event(&mut out, Some("tick"), Some(&n.to_string()), &data);
            yield Ok(Bytes::from(out));
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
