//! `/sdk/ferry.js`: the browser SDK (clients/js), so a page needs no build step:
//! `import { FerryClient } from "/sdk/ferry.js"`.
//!
//! The bundle is built from `clients/js/src` by esbuild and committed as
//! `clients/js/dist/ferry.min.js`, so building the hub needs no Node; a test in
//! `crates/ferry-cli/tests/js_sdk.rs` rebuilds it and fails if the committed file is stale.
//!
//! Two URLs: `/sdk/ferry.js` always serves the bundle of this hub, cacheable for a short
//! while and revalidated by `ETag`; `/sdk/ferry@VERSION.js` names one version and is
//! cacheable for a year (`immutable`). Any other version is 404.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AppState;

/// The minified ESM bundle of the SDK.
pub const BUNDLE: &str = include_str!("../../../../clients/js/dist/ferry.min.js");

/// Cache lifetime of `/sdk/ferry.js`: short, because the next hub release may serve
/// another bundle under the same URL.
const UNVERSIONED_CACHE: &str = "public, max-age=300, must-revalidate";
/// Cache lifetime of `/sdk/ferry@VERSION.js`: its content never changes.
const VERSIONED_CACHE: &str = "public, max-age=31536000, immutable";

/// The SDK version, from the bundle's banner (`/*! @ferry/client 0.1.0 | ... */`).
pub fn version() -> &'static str {
    BUNDLE
        .strip_prefix("/*! ")
        .and_then(|rest| rest.split(' ').nth(1))
        .unwrap_or("unknown")
}

/// A strong `ETag` of the bundle: its version and FNV-1a hash.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let hash = BUNDLE.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{}-{hash:016x}\"", version())
});

/// The SDK routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sdk/ferry.js", get(unversioned))
        .route("/sdk/{file}", get(versioned))
}

async fn unversioned(headers: HeaderMap) -> Response {
    serve(&headers, UNVERSIONED_CACHE)
}

async fn versioned(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file
        .strip_prefix("ferry@")
        .and_then(|f| f.strip_suffix(".js"))
        == Some(version())
    {
        serve(&headers, VERSIONED_CACHE)
    } else {
        (
            StatusCode::NOT_FOUND,
            format!(
                "this hub serves /sdk/ferry.js and /sdk/ferry@{}.js\n",
                version()
            ),
        )
            .into_response()
    }
}

fn serve(request: &HeaderMap, cache_control: &'static str) -> Response {
    let etag = ETAG.as_str();
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| matches!(tag.trim(), "*") || tag.trim() == etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        BUNDLE.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    // A public script: pages on any origin may import it as a module.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(value) = HeaderValue::from_str(version()) {
        h.insert("x-ferry-sdk-version", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_names_its_version() {
        assert!(BUNDLE.starts_with("/*! @ferry/client "), "banner missing");
        let v = version();
        assert!(
            v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok()),
            "version {v:?}"
        );
        assert!(ETAG.starts_with(&format!("\"{v}-")));
    }
}
