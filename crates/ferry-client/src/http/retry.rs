//! Retries of idempotent requests (SPEC H7): exponential backoff with full jitter from
//! [`ferry_proto::reconnect::Backoff`], and `Retry-After` when the server sends one.
//!
//! The decisions here are pure functions of the attempt, the outcome and the time, so they
//! are unit-tested without a server or a clock.

use std::time::{Duration, SystemTime};

use ferry_proto::reconnect::Backoff;
use http::{HeaderMap, Method, StatusCode, header};

use super::error::{ErrorCode, HttpError};

/// When and how often a request is retried.
///
/// Only idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, or any request marked
/// with [`RequestBuilder::idempotent`](super::RequestBuilder::idempotent)) are retried
/// after a response or a broken connection; a request whose connection could not even be
/// made is retried whatever its method, since nothing was sent. A request whose body is a
/// one-shot stream (multipart uploads) is never retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt. Default 2; 0 disables retrying.
    pub max_retries: u32,
    /// Ceiling of the first backoff delay. Default 200 ms.
    pub initial_delay: Duration,
    /// The backoff ceiling never grows past this. Default 10 s.
    pub max_delay: Duration,
    /// Response statuses worth retrying. Default 408, 429, 500, 502, 503, 504.
    pub retry_statuses: Vec<u16>,
    /// Also retry after a timeout. Default true.
    pub retry_timeouts: bool,
    /// A `Retry-After` longer than this is not waited for: the response is returned as is.
    /// Default 60 s: a caller that waits minutes should decide that itself.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            retry_statuses: vec![408, 429, 500, 502, 503, 504],
            retry_timeouts: true,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The default policy with `n` retries.
    pub fn with_max_retries(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries: n,
            ..RetryPolicy::default()
        }
    }

    /// The shared backoff (exponential, doubling, full jitter) these settings describe.
    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial_delay,
            max: self.max_delay,
            multiplier: 2.0,
            ..Backoff::default()
        }
    }

    /// Whether to retry after a response with `status` and `headers` on attempt `attempt`
    /// (1 = the first try), and after how long. `u` is the jitter sample in `[0, 1)`.
    pub(crate) fn after_response(
        &self,
        attempt: u32,
        idempotent: bool,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
        u: f64,
    ) -> Option<Duration> {
        if attempt > self.max_retries
            || !idempotent
            || !self.retry_statuses.contains(&status.as_u16())
        {
            return None;
        }
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        match retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff().delay(attempt, u)),
        }
    }

    /// Whether to retry after `error` on attempt `attempt`, and after how long.
    pub(crate) fn after_error(
        &self,
        attempt: u32,
        idempotent: bool,
        error: &HttpError,
        u: f64,
    ) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        let retry = match error.code() {
            // Nothing reached the server: safe for any method.
            ErrorCode::ConnectionError => true,
            ErrorCode::Timeout => idempotent && self.retry_timeouts,
            ErrorCode::NetworkError => idempotent,
            _ => false,
        };
        retry.then(|| self.backoff().delay(attempt, u))
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as the time
/// left from `now`. A date in the past means "now" (zero). Garbage is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retryable_status_uses_backoff_with_full_jitter() {
        let p = RetryPolicy::default();
        let now = SystemTime::now();
        let d = p.after_response(
            1,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(None),
            now,
            0.5,
        );
        assert_eq!(d, Some(Duration::from_millis(100)));
        let d = p.after_response(2, true, StatusCode::BAD_GATEWAY, &headers(None), now, 0.5);
        assert_eq!(d, Some(Duration::from_millis(200)));
        let d = p.after_response(2, true, StatusCode::BAD_GATEWAY, &headers(None), now, 0.0);
        assert_eq!(d, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_overrides_backoff_and_is_capped() {
        let p = RetryPolicy::default();
        let now = SystemTime::now();
        let h = headers(Some("2"));
        let d = p.after_response(1, true, StatusCode::TOO_MANY_REQUESTS, &h, now, 0.9);
        assert_eq!(d, Some(Duration::from_secs(2)));
        let h = headers(Some("3600"));
        assert_eq!(
            p.after_response(1, true, StatusCode::TOO_MANY_REQUESTS, &h, now, 0.9),
            None
        );
    }

    #[test]
    fn no_retry_for_success_non_idempotent_or_exhausted() {
        let now = SystemTime::now();
        let h = headers(None);
        // (policy, attempt, idempotent, status): none of them is retried.
        let cases = [
            (RetryPolicy::default(), 1, true, StatusCode::OK),
            (RetryPolicy::default(), 1, true, StatusCode::NOT_FOUND),
            (
                RetryPolicy::default(),
                1,
                false,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                RetryPolicy::default(),
                3,
                true,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                RetryPolicy::none(),
                1,
                true,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (p, attempt, idempotent, status) in cases {
            assert_eq!(
                p.after_response(attempt, idempotent, status, &h, now, 0.5),
                None,
                "attempt {attempt}, idempotent {idempotent}, {status}"
            );
        }
    }

    #[test]
    fn errors_retried_by_kind() {
        let p = RetryPolicy::default();
        let refused = HttpError::new(ErrorCode::ConnectionError, "refused");
        let timeout = HttpError::timeout("slow");
        let broken = HttpError::new(ErrorCode::NetworkError, "reset");
        let tls = HttpError::new(ErrorCode::TlsError, "bad cert");
        assert!(p.after_error(1, false, &refused, 0.5).is_some());
        assert!(p.after_error(1, true, &timeout, 0.5).is_some());
        assert!(p.after_error(1, false, &timeout, 0.5).is_none());
        assert!(p.after_error(1, false, &broken, 0.5).is_none());
        assert!(p.after_error(1, true, &broken, 0.5).is_some());
        assert!(p.after_error(1, true, &tls, 0.5).is_none());
        assert!(
            p.after_error(1, true, &HttpError::cancelled(), 0.5)
                .is_none()
        );
        assert!(p.after_error(3, true, &refused, 0.5).is_none());
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
