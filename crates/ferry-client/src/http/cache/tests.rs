//! Tests of the store: freshness over time, validators, Vary, eviction.

use super::*;

/// A header map of `pairs`, in order (a name may repeat). Shared with the rules' tests.
pub(super) fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    m
}

fn url(s: &str) -> Url {
    Url::parse(s).expect("url")
}

fn cache() -> HttpCache {
    HttpCache::new(CacheConfig::default())
}

#[test]
fn fresh_then_stale_with_validators() {
    let c = cache();
    let u = url("http://h/a#frag");
    let t0 = Instant::now();
    let resp = h(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")]);
    assert!(c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        Bytes::from_static(b"body"),
        None,
        t0,
        SystemTime::now()
    ));
    match c.lookup(
        &url("http://h/a"),
        &HeaderMap::new(),
        t0 + Duration::from_secs(9),
    ) {
        Lookup::Fresh(hit) => assert_eq!(hit.body, "body"),
        other => panic!("expected fresh, got {other:?}"),
    }
    match c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(10)) {
        Lookup::Stale(v) => assert_eq!(
            v,
            vec![(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""))]
        ),
        other => panic!("expected stale, got {other:?}"),
    }
    // The request may demand revalidation.
    let no_cache = h(&[("cache-control", "no-cache")]);
    assert!(matches!(c.lookup(&u, &no_cache, t0), Lookup::Stale(_)));
}

#[test]
fn age_header_counts_against_freshness() {
    let c = cache();
    let u = url("http://h/aged");
    let t0 = Instant::now();
    let resp = h(&[
        ("cache-control", "max-age=10"),
        ("age", "8"),
        ("etag", "\"a\""),
    ]);
    assert!(c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        Bytes::new(),
        None,
        t0,
        SystemTime::now()
    ));
    assert!(matches!(
        c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(1)),
        Lookup::Fresh(_)
    ));
    assert!(matches!(
        c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(2)),
        Lookup::Stale(_)
    ));
}

#[test]
fn no_store_vary_star_and_uncacheable_are_not_stored() {
    let c = cache();
    let u = url("http://h/x");
    let now = Instant::now();
    let sys = SystemTime::now();
    let body = Bytes::from_static(b"x");
    let no_store = h(&[("cache-control", "no-store, max-age=60")]);
    assert!(!c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &no_store,
        body.clone(),
        Some(Duration::from_secs(60)),
        now,
        sys
    ));
    let vary_star = h(&[("cache-control", "max-age=60"), ("vary", "*")]);
    assert!(!c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &vary_star,
        body.clone(),
        None,
        now,
        sys
    ));
    let fresh = h(&[("cache-control", "max-age=60")]);
    assert!(!c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::INTERNAL_SERVER_ERROR,
        &fresh,
        body.clone(),
        None,
        now,
        sys
    ));
    assert!(!c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &HeaderMap::new(),
        body.clone(),
        None,
        now,
        sys
    ));
    let req_no_store = h(&[("cache-control", "no-store")]);
    assert!(!c.store(
        &u,
        &req_no_store,
        StatusCode::OK,
        &fresh,
        body,
        None,
        now,
        sys
    ));
    assert!(c.is_empty());
}

#[test]
fn ttl_override_makes_uncacheable_headers_fresh() {
    let c = cache();
    let u = url("http://h/ttl");
    let t0 = Instant::now();
    let resp = h(&[("cache-control", "no-cache")]);
    assert!(c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        Bytes::new(),
        Some(Duration::from_secs(30)),
        t0,
        SystemTime::now()
    ));
    assert!(matches!(
        c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(29)),
        Lookup::Fresh(_)
    ));
    assert!(matches!(
        c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(30)),
        Lookup::Miss
    ));
}

#[test]
fn vary_mismatch_is_a_miss() {
    let c = cache();
    let u = url("http://h/v");
    let t0 = Instant::now();
    let resp = h(&[("cache-control", "max-age=60"), ("vary", "accept-language")]);
    let fr = h(&[("accept-language", "fr")]);
    assert!(c.store(
        &u,
        &fr,
        StatusCode::OK,
        &resp,
        Bytes::new(),
        None,
        t0,
        SystemTime::now()
    ));
    assert!(matches!(c.lookup(&u, &fr, t0), Lookup::Fresh(_)));
    assert!(matches!(
        c.lookup(&u, &h(&[("accept-language", "de")]), t0),
        Lookup::Miss
    ));
    assert!(matches!(c.lookup(&u, &HeaderMap::new(), t0), Lookup::Miss));
}

#[test]
fn revalidation_merges_headers_and_refreshes() {
    let c = cache();
    let u = url("http://h/r");
    let t0 = Instant::now();
    let sys = SystemTime::now();
    let resp = h(&[
        ("cache-control", "no-cache"),
        ("etag", "\"1\""),
        ("content-length", "4"),
        ("x-a", "old"),
    ]);
    assert!(c.store(
        &u,
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        Bytes::from_static(b"data"),
        None,
        t0,
        sys
    ));
    let not_modified = h(&[
        ("cache-control", "max-age=5"),
        ("etag", "\"1\""),
        ("content-length", "0"),
        ("x-a", "new"),
    ]);
    let hit = c
        .revalidated(&u, &not_modified, None, t0, sys)
        .expect("entry");
    assert_eq!(hit.body, "data");
    assert_eq!(hit.headers["x-a"], "new");
    assert_eq!(hit.headers["content-length"], "4");
    assert!(matches!(
        c.lookup(&u, &HeaderMap::new(), t0 + Duration::from_secs(4)),
        Lookup::Fresh(_)
    ));
}

#[test]
fn least_recently_used_is_evicted() {
    let c = HttpCache::new(CacheConfig {
        max_entries: 2,
        ..CacheConfig::default()
    });
    let t0 = Instant::now();
    let sys = SystemTime::now();
    let resp = h(&[("cache-control", "max-age=60")]);
    for p in ["a", "b"] {
        c.store(
            &url(&format!("http://h/{p}")),
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            Bytes::new(),
            None,
            t0,
            sys,
        );
    }
    // Touch a, so b is the least recently used.
    assert!(matches!(
        c.lookup(&url("http://h/a"), &HeaderMap::new(), t0),
        Lookup::Fresh(_)
    ));
    c.store(
        &url("http://h/c"),
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        Bytes::new(),
        None,
        t0,
        sys,
    );
    assert_eq!(c.len(), 2);
    assert!(matches!(
        c.lookup(&url("http://h/b"), &HeaderMap::new(), t0),
        Lookup::Miss
    ));
    assert!(matches!(
        c.lookup(&url("http://h/a"), &HeaderMap::new(), t0),
        Lookup::Fresh(_)
    ));
}
