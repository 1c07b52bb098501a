//! `/api/*` (server API, API key) and `/auth/login` (token issue). JSON in and out;
//! errors are `{"code","message"}` with the code's HTTP status.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use ferry_proto::envelope::{ChannelCommand, Command, HistoryCommand, PublishCommand};
use ferry_proto::{Data, ErrorCode};
use http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ApiError, AppState, Peer};
use crate::auth::api_key_matches;
use crate::broker::Control;
use crate::commands::{self, Caller, Reply};
use crate::error::HubError;

/// Proof that the request carried the API key (`Authorization: apikey KEY`).
pub struct ApiKey;

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let offered = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("apikey ")
                    .or_else(|| v.strip_prefix("Apikey "))
            });
        let expected = state.hub.config().api_key.as_ref().map(|k| k.expose());
        let refused = match (expected, offered) {
            (Some(expected), Some(offered)) if api_key_matches(expected, offered.trim()) => {
                return Ok(ApiKey);
            }
            (_, None) => HubError::new(
                ErrorCode::AuthRequired,
                "the server API needs `Authorization: apikey KEY` (the key is in ferry-data/secrets.toml or FERRY_API_KEY)",
            ),
            _ => HubError::new(
                ErrorCode::AuthFailed,
                "wrong API key; the server's key is api_key in its ferry-data/secrets.toml (or its --api-key / FERRY_API_KEY)",
            ),
        };
        super::log_auth_refused(
            &state.hub,
            &format!("a server API call to {}", parts.uri.path()),
            &refused,
        );
        Err(refused.into())
    }
}

/// Parse a JSON body into `T`, mapping failures to `INVALID_MESSAGE` / `MESSAGE_TOO_BIG`.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            HubError::new(
                ErrorCode::MessageTooBig,
                "request body is larger than limits.max_body_size",
            )
        } else {
            HubError::new(ErrorCode::InvalidMessage, rejection.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        HubError::new(ErrorCode::InvalidMessage, format!("invalid JSON body: {e}")).into()
    })
}

/// The `/api` and `/auth` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/history", post(history))
        .route("/api/presence", post(presence))
        .route("/api/channels", get(channels).post(channels))
        .route("/api/disconnect", post(disconnect))
        .route("/api/send", post(send))
        .route("/api/stats", get(stats).post(stats))
        .route("/auth/login", post(login))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
}

async fn publish(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Reply>, ApiError> {
    let body: PublishBody = parse_body(body)?;
    let command = Command::Publish(PublishCommand {
        channel: body.channel,
        data: Data::from(body.data),
        skip_self: false,
    });
    Ok(Json(
        commands::run(&state.hub, Caller::Server, command).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
}

async fn broadcast(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: BroadcastBody = parse_body(body)?;
    if body.channels.is_empty() || body.channels.len() > 1000 {
        return Err(HubError::new(
            ErrorCode::InvalidMessage,
            "`channels` must list 1 to 1000 channels",
        )
        .into());
    }
    // One copy of the data, shared by every channel's publication and history.
    let data = Data::from(body.data);
    // Refuse bad `data` once for the request rather than once per channel.
    state.hub.check_data(&data)?;
    let mut results = Vec::with_capacity(body.channels.len());
    for channel in body.channels {
        let command = Command::Publish(PublishCommand {
            channel: channel.clone(),
            data: data.clone(),
            skip_self: false,
        });
        results.push(
            match commands::run(&state.hub, Caller::Server, command).await {
                Ok(reply) => json!(reply),
                Err(e) => json!({"channel": channel, "error": e.payload()}),
            },
        );
    }
    Ok(Json(json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    channel: String,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

async fn history(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: HistoryBody = parse_body(body)?;
    let command = Command::History(HistoryCommand {
        channel: body.channel,
        since: body.since,
        limit: body.limit,
        reverse: body.reverse,
    });
    Ok(Json(commands::run(&state.hub, Caller::Server, command).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    channel: String,
}

async fn presence(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Reply>, ApiError> {
    let body: ChannelBody = parse_body(body)?;
    let command = Command::Presence(ChannelCommand {
        channel: body.channel,
    });
    Ok(Json(
        commands::run(&state.hub, Caller::Server, command).await?,
    ))
}

async fn channels(State(state): State<AppState>, _key: ApiKey) -> Result<Json<Value>, ApiError> {
    let mut merged: std::collections::BTreeMap<String, u64> = state
        .hub
        .channels()
        .into_iter()
        .map(|(name, subscribers)| (name, subscribers as u64))
        .collect();
    // With other nodes (Redis): their channels too, subscribers summed.
    let others = state.hub.gather("channels").await?;
    if let Some(others) = &others {
        for answer in others {
            let Some(list) = answer["report"].as_array() else {
                continue;
            };
            for pair in list {
                if let (Some(name), Some(n)) = (pair[0].as_str(), pair[1].as_u64()) {
                    *merged.entry(name.to_string()).or_default() += n;
                }
            }
        }
    }
    let channels: Vec<Value> = merged
        .into_iter()
        .map(|(name, subscribers)| json!({"channel": name, "subscribers": subscribers}))
        .collect();
    let mut answer = json!({ "channels": channels });
    if let Some(others) = others {
        answer["nodes"] = (others.len() + 1).into();
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    reconnect: Option<bool>,
}

impl TargetBody {
    fn check(&self) -> Result<(), ApiError> {
        if self.user.is_none() && self.client.is_none() {
            return Err(
                HubError::new(ErrorCode::InvalidMessage, "name a `user` or a `client`").into(),
            );
        }
        Ok(())
    }
}

async fn disconnect(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: TargetBody = parse_body(body)?;
    body.check()?;
    let (here, forwarded) = state
        .hub
        .control(Control::Disconnect {
            user: body.user,
            client: body.client,
            reconnect: body.reconnect.unwrap_or(false),
        })
        .await?;
    Ok(Json(with_forwarded(
        json!({ "disconnected": here }),
        forwarded,
    )))
}

/// `forwarded_to_nodes` beside this node's count, where other nodes exist (Redis).
fn with_forwarded(mut answer: Value, forwarded: Option<usize>) -> Value {
    if let Some(nodes) = forwarded {
        answer["forwarded_to_nodes"] = nodes.into();
    }
    answer
}

async fn send(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: TargetBody = parse_body(body)?;
    body.check()?;
    let Some(data) = body.data else {
        return Err(HubError::new(ErrorCode::InvalidMessage, "`data` is required").into());
    };
    let (here, forwarded) = state
        .hub
        .control(Control::Send {
            user: body.user,
            client: body.client,
            data,
        })
        .await?;
    Ok(Json(with_forwarded(
        json!({ "delivered": here }),
        forwarded,
    )))
}

async fn stats(State(state): State<AppState>, _key: ApiKey) -> Result<Json<Value>, ApiError> {
    let own = json!(state.hub.stats());
    let mut stats = own.clone();
    stats["sockets"] = state.sockets.open().into();
    stats["stalled_writes"] = state.sockets.stalled().into();
    let (bytes_in, bytes_out) = state.sockets.bytes();
    stats["bytes_in"] = bytes_in.into();
    stats["bytes_out"] = bytes_out.into();
    // With other nodes (Redis): each node's hub counters and their sum. `channels` is
    // summed per node (a channel with subscribers on two nodes counts twice).
    if let Some(others) = state.hub.gather("stats").await? {
        let mut total = serde_json::Map::new();
        let mut per_node = serde_json::Map::new();
        let this = json!({"node": "self", "report": own});
        for answer in std::iter::once(&this).chain(others.iter()) {
            let node = answer["node"].as_str().unwrap_or("?").to_string();
            if let Some(report) = answer["report"].as_object() {
                for (key, value) in report {
                    if let Some(n) = value.as_u64() {
                        let sum = total.get(key).and_then(Value::as_u64).unwrap_or(0) + n;
                        total.insert(key.clone(), sum.into());
                    }
                }
                per_node.insert(node, Value::Object(report.clone()));
            }
        }
        total.remove("uptime_secs");
        stats["cluster"] = json!({
            "nodes": others.len() + 1,
            "total": total,
            "per_node": per_node,
        });
    }
    Ok(Json(stats))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    peer: Peer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Keep the per-IP table bounded: forget IPs whose buckets are full again.
    if state.login_limiter.len() > 10_000 {
        state.login_limiter.retain_recent();
    }
    if state.login_limiter.check_key(&peer.0.ip()).is_err() {
        state
            .hub
            .metrics()
            .rate_limited(crate::metrics::RateLimited::Login);
        return Err(HubError::new(
            ErrorCode::RateLimitExceeded,
            "too many login attempts; wait a second",
        )
        .into());
    }
    let body: LoginBody = parse_body(body)?;
    // Bounded work and memory: see login_pool.rs. A refusal carries `Retry-After`.
    let ok = match state.logins.check(&body.user, body.password).await {
        Ok(ok) => ok,
        Err(e) => {
            if e.code == ErrorCode::RateLimitExceeded {
                state
                    .hub
                    .metrics()
                    .rate_limited(crate::metrics::RateLimited::Login);
            }
            let mut response = ApiError(e).into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(crate::login_pool::LOGIN_RETRY_AFTER_SECS),
            );
            return Ok(response);
        }
    };
    if !ok {
        let refused = HubError::new(ErrorCode::AuthFailed, "wrong user name or password");
        super::log_auth_refused(&state.hub, "a login", &refused);
        return Err(refused.into());
    }
    let (token, expires_at) = state.hub.auth().issue(&body.user)?;
    Ok(Json(json!({"user": body.user, "token": token, "expires_at": expires_at})).into_response())
}
