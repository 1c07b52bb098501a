//! Keeping credentials out of logs, at every level.
//!
//! Clients may pass a token in the URL (`/ws?token=JWT`, `/sse?token=JWT`: browsers cannot
//! set headers on a WebSocket or an EventSource), so every request URI that reaches a log
//! goes through [`redact_uri`]. Headers are never logged (`Authorization` carries bearer
//! tokens and API keys). The WebSocket library dumps whole frames at `trace` level (an
//! `auth` command carries a token): [`may_log`] is the filter `ferry serve` installs so
//! those dumps never reach the output, even with `FERRY_LOG=trace`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Query parameters whose values are credentials (compared case-insensitively, after
/// percent-decoding the name, as the server's own query parsing decodes it).
const SECRET_PARAMS: &[&str] = &["token", "access_token", "api_key", "apikey", "password"];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// The request URI as it may be logged: the value of every credential parameter (`token`,
/// `access_token`, `api_key`, `apikey`, `password`) replaced by `<redacted>`; everything
/// else unchanged.
pub fn redact_uri(uri: &http::Uri) -> Cow<'_, str> {
    let Some(query) = uri.query() else {
        return Cow::Owned(uri.to_string());
    };
    match redact_query(query) {
        Cow::Borrowed(_) => Cow::Owned(uri.to_string()),
        Cow::Owned(redacted) => {
            let mut out = String::new();
            if let Some(scheme) = uri.scheme_str() {
                out.push_str(scheme);
                out.push_str("://");
            }
            if let Some(authority) = uri.authority() {
                out.push_str(authority.as_str());
            }
            out.push_str(uri.path());
            out.push('?');
            out.push_str(&redacted);
            Cow::Owned(out)
        }
    }
}

/// A query string with the values of credential parameters replaced by `<redacted>`;
/// borrowed when there was nothing to redact.
pub fn redact_query(query: &str) -> Cow<'_, str> {
    let is_secret = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = percent_decode_str(name).decode_utf8_lossy();
        SECRET_PARAMS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name.trim()))
    };
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            if is_secret(pair) {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                Cow::Owned(format!("{name}={REDACTED}"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

/// The span of one HTTP request in the logs (what tower-http's default span holds, with
/// the URI redacted and no headers).
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redact_uri(request.uri()),
        version = ?request.version(),
    )
}

/// Whether an event of `target` at `level` may be logged: everything except the
/// WebSocket library's `trace` frame dumps (`tungstenite::*`), which print message
/// payloads, `auth` tokens included. Install it as a filter beside the level filter.
pub fn may_log(target: &str, level: &tracing::Level) -> bool {
    !(*level == tracing::Level::TRACE
        && (target.starts_with("tungstenite") || target.starts_with("tokio_tungstenite")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(uri: &str) -> String {
        redact_uri(&uri.parse::<http::Uri>().expect("uri")).into_owned()
    }

    #[test]
    fn tokens_and_keys_are_redacted_from_uris() {
        assert_eq!(redacted("/ws?token=eyJhbGciOi.x.y"), "/ws?token=<redacted>");
        assert_eq!(
            redacted("/sse?channel=chat:a&token=abc&x=1"),
            "/sse?channel=chat:a&token=<redacted>&x=1"
        );
        assert_eq!(
            redacted("/api/stats?api_key=k1&APIKEY=k2&access_token=t&password=p"),
            "/api/stats?api_key=<redacted>&APIKEY=<redacted>&access_token=<redacted>&password=<redacted>"
        );
        // A percent-encoded name is what the server decodes too.
        assert_eq!(redacted("/ws?%74oken=secret"), "/ws?%74oken=<redacted>");
        // A bare name, repeated names, absolute form.
        assert_eq!(
            redacted("http://h:1/ws?token&token=a"),
            "http://h:1/ws?token=<redacted>&token=<redacted>"
        );
    }

    #[test]
    fn other_uris_are_unchanged() {
        for uri in ["/ws", "/sse?channel=a&tokens=1", "/x?a=token", "/"] {
            assert_eq!(redacted(uri), uri);
        }
    }

    #[test]
    fn only_websocket_frame_dumps_are_filtered() {
        use tracing::Level;
        assert!(!may_log("tungstenite::protocol", &Level::TRACE));
        assert!(may_log("tungstenite::protocol", &Level::DEBUG));
        assert!(may_log("ferry_hub::server", &Level::TRACE));
        assert!(may_log("tower_http::trace", &Level::TRACE));
    }
}
