//! `/metrics` (Prometheus text) and `/metrics/stream` (the same figures as JSON, one
//! server-sent event a second, for dashboards and `ferry monitor`). Both need the API key
//! or, when `metrics_token` is set, `Authorization: Bearer METRICS_TOKEN` (what a
//! Prometheus scrape config's `authorization` sends).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use serde::Deserialize;

use super::api::ApiKey;
use super::{ApiError, AppState};
use crate::auth::api_key_matches;
use crate::metrics::PROMETHEUS_CONTENT_TYPE;

/// Proof that the request may read metrics.
pub struct MetricsAccess;

impl FromRequestParts<AppState> for MetricsAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(expected) = &state.hub.config().metrics_token {
            let bearer = super::request_token(None, &parts.headers);
            if bearer.is_some_and(|offered| api_key_matches(expected.expose(), &offered)) {
                return Ok(MetricsAccess);
            }
        }
        ApiKey::from_request_parts(parts, state)
            .await
            .map(|_| MetricsAccess)
    }
}

/// The metric routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/metrics/stream", get(stream))
}

async fn prometheus(_: MetricsAccess, State(state): State<AppState>) -> Response {
    let text = state.hub.metrics_snapshot(&state.sockets).to_prometheus();
    (
        [(http::header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
struct StreamQuery {
    /// Milliseconds between events (100 to 60,000). Default 1000.
    interval_ms: Option<u64>,
}

async fn stream(
    _: MetricsAccess,
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
) -> impl IntoResponse {
    let every = Duration::from_millis(query.interval_ms.unwrap_or(1000).clamp(100, 60_000));
    let shutdown = state.hub.shutdown_token().clone();
    let events = async_stream::stream! {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let snapshot = state.hub.metrics_snapshot(&state.sockets);
            let mut value = serde_json::to_value(&snapshot).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("time".into(), httpdate::fmt_http_date(std::time::SystemTime::now()).into());
            }
            yield Ok::<_, Infallible>(Event::default().event("metrics").data(value.to_string()));
        }
    };
    Sse::new(events)
}
