//! The RFC 9111 rules the cache applies, as pure functions of headers and times.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use reqwest::Url;

/// The `Cache-Control` directives this cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub max_age: Option<u64>,
}

/// Parse every `Cache-Control` header (comma-separated, case-insensitive directive names).
pub(crate) fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (part.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // A malformed max-age makes the response stale (RFC 9111 §4.2.1).
                d.max_age = Some(arg.and_then(|a| a.parse().ok()).unwrap_or(0));
            }
        }
    }
    d
}

fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// How long a response stays fresh: the override `ttl`, else `no-cache` (zero), else
/// `max-age`, else `Expires − Date`, else 10% of the time since `Last-Modified` (at most a
/// day, RFC 9111 §4.2.2). `None`: no freshness information at all.
pub(crate) fn freshness_lifetime(
    headers: &HeaderMap,
    ttl: Option<Duration>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ttl) = ttl {
        return Some(ttl);
    }
    let d = directives(headers);
    if d.no_cache {
        return Some(Duration::ZERO);
    }
    if let Some(secs) = d.max_age {
        return Some(Duration::from_secs(secs));
    }
    let date = header_date(headers, header::DATE).unwrap_or(now);
    if headers.contains_key(header::EXPIRES) {
        // An invalid Expires ("0", "-1") means already expired.
        return Some(
            header_date(headers, header::EXPIRES)
                .and_then(|at| at.duration_since(date).ok())
                .unwrap_or(Duration::ZERO),
        );
    }
    let last_modified = header_date(headers, header::LAST_MODIFIED)?;
    let age = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    Some((age / 10).min(Duration::from_secs(24 * 60 * 60)))
}

pub(crate) fn age_header(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO)
}

/// Statuses cacheable by default (RFC 9110 §15.1), the only ones stored.
pub(crate) fn cacheable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The validators to send when revalidating a stored response.
pub(crate) fn conditional_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// The cache key: the URL without its fragment.
pub(crate) fn key(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    url.into()
}

pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::super::tests::h;
    use super::*;

    #[test]
    fn parses_cache_control() {
        let d = directives(&h(&[
            ("cache-control", "public, Max-Age=60"),
            ("cache-control", "no-cache"),
        ]));
        assert_eq!(
            d,
            Directives {
                no_store: false,
                no_cache: true,
                max_age: Some(60)
            }
        );
        assert_eq!(
            directives(&h(&[("cache-control", "max-age=abc")])).max_age,
            Some(0)
        );
        assert!(directives(&h(&[("cache-control", "NO-STORE")])).no_store);
    }

    #[test]
    fn lifetime_rules_in_order() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now);
        let in_100 = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let ten_days_ago = httpdate::fmt_http_date(now - Duration::from_secs(10 * 86400));
        let two_hours_ago = httpdate::fmt_http_date(now - Duration::from_secs(7200));
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            freshness_lifetime(&h(&[("cache-control", "max-age=5")]), secs(60), now),
            secs(60)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("cache-control", "no-cache, max-age=5")]), None, now),
            secs(0)
        );
        assert_eq!(
            freshness_lifetime(
                &h(&[("cache-control", "max-age=5"), ("expires", &in_100)]),
                None,
                now
            ),
            secs(5)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("date", &date), ("expires", &in_100)]), None, now),
            secs(100)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("expires", "0")]), None, now),
            secs(0)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("last-modified", &two_hours_ago)]), None, now),
            secs(720)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("last-modified", &ten_days_ago)]), None, now),
            secs(86400)
        );
        assert_eq!(
            freshness_lifetime(&h(&[("etag", "\"x\"")]), None, now),
            None
        );
    }
}
