//! H7: retries of idempotent requests with backoff, honouring `Retry-After`, against the
//! testbed's `/test/flaky/{key}/{n}` (fails `n` times, then succeeds).
#![allow(clippy::unwrap_used)]

mod http_support;

use std::time::{Duration, Instant};

use ferry_client::http::RetryPolicy;
use http_support::{Hub, http, http_fast_retries};
use serde_json::Value;

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let hub = Hub::start().await;
    let started = Instant::now();
    let r = http_fast_retries(3)
        .get(&hub.url("/test/flaky/ra-secs/1?retry_after=1"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.attempts(), 2);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["attempt"], 2);
    // The backoff alone would be under 5 ms: the wait is the server's.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let hub = Hub::start().await;
    let started = Instant::now();
    let r = http_fast_retries(3)
        .get(&hub.url("/test/flaky/ra-date/1?status=429&retry_after_date=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.attempts(), 2);
    // An HTTP-date has one-second resolution: 2 s ahead is more than 1 s of waiting.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn backoff_retries_until_success() {
    let hub = Hub::start().await;
    let r = http_fast_retries(3)
        .get(&hub.url("/test/flaky/backoff/3?status=502"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.attempts(), 4);
}

#[tokio::test]
async fn retries_give_up_and_return_the_last_response() {
    let hub = Hub::start().await;
    let r = http_fast_retries(2)
        .get(&hub.url("/test/flaky/give-up/10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.attempts(), 3);
}

#[tokio::test]
async fn post_is_not_retried_unless_declared_idempotent() {
    let hub = Hub::start().await;
    let http = http_fast_retries(3);
    let r = http
        .post(&hub.url("/test/flaky/post/1"))
        .text("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.attempts(), 1);

    let r = http
        .post(&hub.url("/test/flaky/post-idem/1"))
        .header("idempotency-key", "k1")
        .idempotent(true)
        .text("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.attempts(), 2);
}

#[tokio::test]
async fn a_too_long_retry_after_is_not_waited_for() {
    let hub = Hub::start().await;
    let started = Instant::now();
    let r = http_fast_retries(3)
        .get(&hub.url("/test/flaky/long/1?retry_after=3600"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(r.attempts(), 1);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn non_retryable_statuses_and_disabled_policy() {
    let hub = Hub::start().await;
    let r = http_fast_retries(3)
        .get(&hub.url("/test/flaky/nf/1?status=404"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.attempts(), 1);

    let r = http()
        .get(&hub.url("/test/flaky/off/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.attempts(), 1);

    // A per-request policy overrides the client's.
    let r = http()
        .get(&hub.url("/test/flaky/per-request/1"))
        .retry(RetryPolicy {
            max_retries: 1,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
