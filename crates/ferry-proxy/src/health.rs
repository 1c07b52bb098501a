//! Active health checks: one task per backend, a GET to the check path every interval.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tokio_util::sync::CancellationToken;

use crate::balancer::Backend;
use crate::client::BackendClient;
use crate::forward::Shared;

/// Check every backend until `stop` is cancelled.
pub fn spawn_checks(shared: &Arc<Shared>, stop: &CancellationToken) {
    if !shared.config.health_check.enabled {
        return;
    }
    let client = Arc::new(BackendClient::new(&shared.config));
    for backend in shared.pool.backends() {
        let (shared, backend, stop) = (Arc::clone(shared), Arc::clone(backend), stop.clone());
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = check_forever(&shared, &client, &backend) => {}
            }
        });
    }
}

async fn check_forever(shared: &Shared, client: &Arc<BackendClient>, backend: &Backend) {
    let cfg = &shared.config.health_check;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let passed = check_once(shared, client, backend).await;
        match backend.record_check(passed, cfg.healthy_threshold, cfg.unhealthy_threshold) {
            Some(true) => tracing::info!(backend = %backend.address, "healthy again: re-admitted"),
            Some(false) => {
                tracing::warn!(backend = %backend.address, "failed its health checks: ejected")
            }
            None => {}
        }
    }
}

/// One check: a 2xx answer to `GET path` within the timeout.
async fn check_once(shared: &Shared, client: &Arc<BackendClient>, backend: &Backend) -> bool {
    let cfg = &shared.config.health_check;
    let Ok(req) = Request::get(cfg.path.as_str())
        .header(http::header::USER_AGENT, "ferry-proxy-health-check")
        .body(crate::forward::empty_body())
    else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_millis(cfg.timeout_ms), async {
        let (resp, _lease) = client.send(backend, req).await?;
        // Read the body, so the connection is kept for the next check.
        let passed = resp.status().is_success();
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        Ok::<_, crate::client::SendError>(passed)
    })
    .await;
    matches!(answer, Ok(Ok(true)))
}
