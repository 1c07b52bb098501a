//! H6: caching by Cache-Control, revalidation with ETag and Last-Modified (a 304 served
//! from the cache), TTL override, invalidation — against `/test/cache/{key}`, whose body
//! carries the number of requests the server had seen when it produced the body.
#![allow(clippy::unwrap_used)]

mod http_support;

use std::time::Duration;

use ferry_client::http::{CacheConfig, CacheStatus, Http, RetryPolicy};
use http_support::Hub;
use serde_json::Value;

fn cached_client() -> Http {
    Http::builder()
        .retry(RetryPolicy::none())
        .cache(CacheConfig::default())
        .build()
        .unwrap()
}

async fn get(http: &Http, url: &str) -> (CacheStatus, Value, Option<String>) {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = r.cache_status();
    let count = r.header("x-request-count").map(str::to_string);
    (status, r.json().await.unwrap(), count)
}

#[tokio::test]
async fn fresh_response_is_served_without_a_request() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/fresh?max_age=600");
    let (s1, b1, _) = get(&http, &url).await;
    assert_eq!(s1, CacheStatus::Miss);
    let (s2, b2, _) = get(&http, &url).await;
    assert_eq!(s2, CacheStatus::Hit);
    assert_eq!(b1, b2);
    // The server saw one request: the next one it sees is its second.
    let (s3, b3, _) = get(&http, &format!("{url}&other=1")).await;
    assert_eq!(s3, CacheStatus::Miss);
    assert_eq!(b3["requests"], 2);
}

#[tokio::test]
async fn etag_revalidation_304_is_served_from_cache() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/etag-key?validator=etag&max_age=0");
    let (s1, b1, _) = get(&http, &url).await;
    assert_eq!(s1, CacheStatus::Miss);
    assert_eq!(b1["requests"], 1);
    let (s2, b2, count) = get(&http, &url).await;
    assert_eq!(s2, CacheStatus::Revalidated);
    // The stored body (made for request 1), with headers refreshed from the 304.
    assert_eq!(b2["requests"], 1);
    assert_eq!(count.as_deref(), Some("2"));
    assert_eq!(http.cache().unwrap().len(), 1);
}

#[tokio::test]
async fn last_modified_revalidation_304_is_served_from_cache() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/lm-key?validator=last-modified&max_age=0");
    let (s1, b1, _) = get(&http, &url).await;
    assert_eq!(s1, CacheStatus::Miss);
    let (s2, b2, count) = get(&http, &url).await;
    assert_eq!(s2, CacheStatus::Revalidated);
    assert_eq!(b1, b2);
    assert_eq!(count.as_deref(), Some("2"));
}

#[tokio::test]
async fn a_changed_resource_replaces_the_entry() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/changing?max_age=0");
    let (_, b1, _) = get(&http, &url).await;
    assert_eq!(b1["version"], 1);
    // Someone else changes it (a client without cache, so our entry is not invalidated).
    let other = http_support::http();
    other.post(&url).send().await.unwrap();
    let (s2, b2, _) = get(&http, &url).await;
    assert_eq!(s2, CacheStatus::Miss);
    assert_eq!(b2["version"], 2);
    let (s3, b3, _) = get(&http, &url).await;
    assert_eq!(s3, CacheStatus::Revalidated);
    assert_eq!(b3["version"], 2);
}

#[tokio::test]
async fn unsafe_request_invalidates_the_entry() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/invalidate?max_age=600");
    get(&http, &url).await;
    assert_eq!(get(&http, &url).await.0, CacheStatus::Hit);
    http.put(&url).send().await.unwrap();
    let (s, b, _) = get(&http, &url).await;
    assert_eq!(s, CacheStatus::Miss);
    assert_eq!(b["version"], 2);
}

#[tokio::test]
async fn no_store_is_never_stored() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/secret?no_store=true");
    assert_eq!(get(&http, &url).await.0, CacheStatus::Miss);
    assert_eq!(get(&http, &url).await.0, CacheStatus::Miss);
    // Not even with an explicit TTL.
    let r = http
        .get(&url)
        .cache_ttl(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Miss);
    assert!(http.cache().unwrap().is_empty());
}

#[tokio::test]
async fn ttl_override_caches_what_the_server_says_to_revalidate() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/ttl?validator=none&max_age=0");
    let r = http
        .get(&url)
        .cache_ttl(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Miss);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Hit);
    // A client-wide TTL does the same for every request.
    let http = Http::builder()
        .cache(CacheConfig {
            ttl: Some(Duration::from_secs(600)),
            ..CacheConfig::default()
        })
        .build()
        .unwrap();
    let url = hub.url("/test/cache/ttl-all?validator=none&max_age=0");
    assert_eq!(get(&http, &url).await.0, CacheStatus::Miss);
    assert_eq!(get(&http, &url).await.0, CacheStatus::Hit);
}

#[tokio::test]
async fn bypass_and_request_no_cache() {
    let hub = Hub::start().await;
    let http = cached_client();
    let url = hub.url("/test/cache/bypass?max_age=600");
    get(&http, &url).await;
    let r = http.get(&url).no_cache().send().await.unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Bypass);
    // `Cache-Control: no-cache` from the caller forces a revalidation.
    let r = http
        .get(&url)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Revalidated);
    // Without a cache on the client, nothing is cached.
    let r = http_support::http().get(&url).send().await.unwrap();
    assert_eq!(r.cache_status(), CacheStatus::Bypass);
}
