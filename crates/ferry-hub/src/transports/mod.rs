//! Transports: thin adapters from a socket or request to hub calls. They hold no hub
//! state of their own beyond the connection they serve.

pub mod api;
pub mod scrape;
pub mod sdk;
pub mod sse;
pub mod sync;
pub mod testbed;
pub mod testbed_http;
pub mod tus;
pub mod upload_form;
pub mod ws;
pub mod ws_io;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use ferry_proto::ErrorCode;
use http::{HeaderMap, StatusCode, header};

use crate::auth::Identity;
use crate::error::HubError;
use crate::hub::Hub;
use crate::limits::ConnectionLimiter;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// Open-connection accounting.
    pub limiter: Arc<ConnectionLimiter>,
    /// Per-IP limiter for `/auth/login` attempts.
    pub login_limiter: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Every accepted socket (counted in `/api/stats` as `sockets`).
    pub sockets: Arc<crate::sockets::Sockets>,
    /// Password checks for `/auth/login` (bounded threads, queue and global rate).
    pub logins: Arc<crate::login_pool::LoginPool>,
    /// The file-sync roots (`/sync/`), opened and watched.
    pub sync: crate::sync::SyncRoots,
}

/// A [`HubError`] as an HTTP response: `{"code","message","details"?}` with the code's status.
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.0.payload())).into_response();
        if self.0.code == ErrorCode::AuthRequired {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Whether a browser `Origin` is allowed: no `Origin` (not a browser), same origin as the
/// `Host` the request was sent to, or listed in `allowed_origins` (`*` allows all).
pub fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Refuse a request whose `Origin` is not allowed.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if origin_allowed(&state.hub.config().allowed_origins, headers) {
        Ok(())
    } else {
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
            .unwrap_or_default();
        // Browsers show a bare 403 for a refused upgrade or EventSource: the log is the
        // only place a developer can learn why.
        tracing::info!(
            %origin,
            reason = "origin not in allowed_origins",
            "refused a browser connection; allow it with allowed_origins = [\"{origin}\"] in ferry.toml, FERRY_ALLOWED_ORIGINS={origin}, or [\"*\"] for any"
        );
        Err(ApiError(HubError::new(
            ErrorCode::PermissionDenied,
            format!(
                "origin {origin} not allowed; add it to allowed_origins in ferry.toml (or FERRY_ALLOWED_ORIGINS={origin}; [\"*\"] allows any)"
            ),
        )))
    }
}

/// Log a refused authentication at `info`, with the reason and never the credential.
pub fn log_auth_refused(hub: &Hub, what: &str, error: &HubError) {
    hub.metrics().auth_failed(error.code.as_str());
    tracing::info!(
        code = %error.code,
        reason = %error.message,
        "refused {what}"
    );
}

/// A token from `?token=` or `Authorization: Bearer`.
pub fn request_token(query_token: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
}

/// Identity for a request-scoped transport (SSE): the token's user, anonymous where
/// allowed, else `AUTH_REQUIRED`.
pub fn request_identity(hub: &Hub, token: Option<&str>) -> Result<Identity, HubError> {
    let result = match token {
        Some(t) => hub.auth().verify(t),
        None if hub.config().allow_anonymous => Ok(Identity::anonymous()),
        None => Err(HubError::new(
            ErrorCode::AuthRequired,
            "a token is required: pass ?token=JWT or Authorization: Bearer JWT",
        )),
    };
    if let Err(e) = &result {
        log_auth_refused(hub, "an SSE client's token", e);
    }
    result
}

/// The peer's address, from axum's connect info.
pub type Peer = axum::extract::ConnectInfo<SocketAddr>;
