//! `/test/*` endpoints for HTTP client behaviours the httpbin-like ones do not cover:
//! caching validators, byte ranges and flaky servers. Merged into
//! [`testbed::routes`](super::testbed::routes).
//!
//! - `GET /test/cache/{key}?validator=etag|last-modified|none&max_age=N&no_store=true`: a
//!   JSON body `{key, version, requests}` with `Cache-Control: max-age=N` (default 0) and
//!   the chosen validator; `If-None-Match` / `If-Modified-Since` that still match get
//!   `304 Not Modified`. `POST`/`PUT`/`DELETE` on the same path make a new version.
//!   `X-Request-Count` says how many requests the key has seen.
//! - `GET /test/range/{n}?seed=S`: `n` deterministic bytes with a strong `ETag`,
//!   `Last-Modified` and `Accept-Ranges: bytes`; honours one `Range` (`a-b`, `a-`, `-n`)
//!   and `If-Range`, answers `416` when unsatisfiable, streams in 16 KiB chunks. A request
//!   header `X-Fail-After: K` aborts the connection after K bytes of body.
//!   `GET /test/bytes/{n}?seed=S` is the same resource under the README's name.
//! - `ANY /test/flaky/{key}/{n}?status=503&retry_after=S&retry_after_date=S`: the first `n`
//!   requests for `key` get `status` (with `Retry-After` in seconds or as an HTTP-date S
//!   seconds ahead), then `200 {key, attempt}`.
//!
//! Counters live per server and are capped in number, like every testbed resource.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::AppState;

/// Most keys tracked per server; past it the counters start over.
const MAX_KEYS: usize = 10_000;
/// Chunk size of `/test/range` bodies: small enough that a client sees many chunks.
const CHUNK: usize = 16 * 1024;

#[derive(Default)]
struct Counters {
    requests: Mutex<HashMap<String, u64>>,
    versions: Mutex<HashMap<String, u64>>,
}

fn bump(map: &Mutex<HashMap<String, u64>>, key: &str) -> u64 {
    let mut map = map.lock();
    if map.len() >= MAX_KEYS && !map.contains_key(key) {
        map.clear();
    }
    let n = map.entry(key.to_string()).or_insert(0);
    *n += 1;
    *n
}

/// The routes (absolute `/test/...` paths).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/test/cache/{key}", any(cache))
        .route("/test/range/{n}", get(range))
        // `/test/bytes/{n}` is the same resource (ETag, Last-Modified, Range), so that a
        // resumed download of the README's example can prove the copy did not change.
        .route("/test/bytes/{n}", get(range))
        .route("/test/flaky/{key}/{n}", any(flaky))
        .layer(Extension(Arc::new(Counters::default())))
}

#[derive(Deserialize)]
struct CacheQuery {
    validator: Option<String>,
    max_age: Option<u64>,
    no_store: Option<bool>,
}

/// A fixed base time, so `Last-Modified` is stable across server restarts.
fn version_time(version: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + version * 3600)
}

async fn cache(
    Extension(counters): Extension<Arc<Counters>>,
    method: Method,
    Path(key): Path<String>,
    Query(q): Query<CacheQuery>,
    headers: HeaderMap,
) -> Response {
    let requests = bump(&counters.requests, &key);
    if method != Method::GET && method != Method::HEAD {
        let version = bump(&counters.versions, &key);
        return (
            StatusCode::OK,
            Json(json!({"key": key, "version": version + 1})),
        )
            .into_response();
    }
    let version = counters.versions.lock().get(&key).copied().unwrap_or(0) + 1;
    let etag = format!("\"{key}-v{version}\"");
    let last_modified = httpdate::fmt_http_date(version_time(version));
    let validator = q.validator.as_deref().unwrap_or("etag");
    let mut out = HeaderMap::new();
    let cache_control = if q.no_store.unwrap_or(false) {
        "no-store".to_string()
    } else {
        format!("max-age={}", q.max_age.unwrap_or(0))
    };
    let mut put = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(header::CACHE_CONTROL, &cache_control);
    put(
        header::HeaderName::from_static("x-request-count"),
        &requests.to_string(),
    );
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let not_modified = match validator {
        "etag" => {
            put(header::ETAG, &etag);
            header_str(header::IF_NONE_MATCH)
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        }
        "last-modified" => {
            put(header::LAST_MODIFIED, &last_modified);
            header_str(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .is_some_and(|since| since >= version_time(version))
        }
        _ => false,
    };
    if not_modified {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let body = json!({"key": key, "version": version, "requests": requests});
    (out, Json(body)).into_response()
}

#[derive(Deserialize)]
struct RangeQuery {
    seed: Option<u64>,
}

/// `n` pseudo-random bytes from `seed` (xorshift64*), cheap and reproducible.
fn generate(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// One `bytes=` range against a length: `Ok(Some((start, end_inclusive)))`, `Ok(None)` for
/// a header to ignore (several ranges, another unit, garbage), `Err(())` if unsatisfiable.
#[allow(clippy::result_unit_err)]
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(suffix)) if a.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// `GET /test/range/{n}` and `/test/bytes/{n}`.
async fn range(
    State(state): State<AppState>,
    Path(n): Path<usize>,
    Query(q): Query<RangeQuery>,
    headers: HeaderMap,
) -> Response {
    let n = n.min(state.hub.config().limits.testbed_max_bytes);
    let seed = q.seed.unwrap_or(0);
    let data = Bytes::from(generate(n, seed));
    let etag = format!("\"range-{n}-{seed}\"");
    let last_modified = httpdate::fmt_http_date(version_time(seed));
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let fail_after = header_str("x-fail-after").and_then(|v| v.parse::<usize>().ok());
    // If-Range: the range applies only to the representation the client already has.
    let if_range_ok = header_str("if-range").is_none_or(|v| v == etag || v == last_modified);
    let requested = match header_str("range") {
        Some(r) if if_range_ok => parse_range(r, n as u64),
        _ => Ok(None),
    };
    let mut out = HeaderMap::new();
    for (name, value) in [
        (header::ETAG, etag.as_str()),
        (header::LAST_MODIFIED, last_modified.as_str()),
        (header::ACCEPT_RANGES, "bytes"),
        (header::CONTENT_TYPE, "application/octet-stream"),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    }
    let (status, body) = match requested {
        Err(()) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{n}")) {
                out.insert(header::CONTENT_RANGE, v);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
        }
        Ok(Some((start, end))) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{n}")) {
                out.insert(header::CONTENT_RANGE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                data.slice(start as usize..=end as usize),
            )
        }
        Ok(None) => (StatusCode::OK, data),
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let stream = async_stream::stream! {
        let mut sent = 0usize;
        let limit = fail_after.unwrap_or(usize::MAX);
        for i in (0..body.len()).step_by(CHUNK) {
            let chunk = body.slice(i..(i + CHUNK).min(body.len()));
            if sent + chunk.len() > limit {
                yield Ok::<Bytes, std::io::Error>(chunk.slice(..limit - sent));
                tokio::task::yield_now().await;
                yield Err(std::io::Error::other("X-Fail-After reached"));
                return;
            }
            sent += chunk.len();
            yield Ok(chunk);
            // Let the server flush each chunk, so a client sees a steady stream (and, with
            // X-Fail-After, exactly the bytes before the break).
            tokio::task::yield_now().await;
        }
    };
    (status, out, Body::from_stream(stream)).into_response()
}

#[derive(Deserialize)]
struct FlakyQuery {
    status: Option<u16>,
    retry_after: Option<u64>,
    retry_after_date: Option<u64>,
}

async fn flaky(
    Extension(counters): Extension<Arc<Counters>>,
    Path((key, n)): Path<(String, u64)>,
    Query(q): Query<FlakyQuery>,
) -> Response {
    let attempt = bump(&counters.requests, &format!("flaky/{key}"));
    if attempt > n {
        return Json(json!({"key": key, "attempt": attempt})).into_response();
    }
    let status = q
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut out = HeaderMap::new();
    let retry_after = match (q.retry_after, q.retry_after_date) {
        (Some(secs), _) => Some(secs.to_string()),
        (None, Some(secs)) => Some(httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(secs),
        )),
        (None, None) => None,
    };
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        out.insert(header::RETRY_AFTER, v);
    }
    let body = json!({"key": key, "attempt": attempt, "failing": true});
    (status, out, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-0", 100), Ok(None));
    }

    #[test]
    fn generated_bytes_are_reproducible() {
        assert_eq!(generate(64, 7), generate(64, 7));
        assert_ne!(generate(64, 7), generate(64, 8));
    }
}
