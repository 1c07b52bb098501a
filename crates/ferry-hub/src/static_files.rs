//! `--static DIR`: files served at `/`, never from outside `DIR`.
//!
//! tower-http's `ServeDir` refuses `..` but follows symlinks, so a link inside the
//! directory (`passwd -> /etc/passwd`, `shared -> /home`) served whatever it points at.
//! [`confined`] resolves every requested path (and a directory's `index.html`) with
//! `canonicalize` first and answers 404 when the real path is outside the directory's
//! real path. Links that stay inside the directory are served as before.
//!
//! Limit: the check and `ServeDir`'s open are two steps, so someone who can create
//! symlinks inside the directory while the server runs can race them; the directory is
//! assumed to be written only by its operator.

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use percent_encoding::percent_decode_str;
use tower::{Service, ServiceExt};
use tower_http::services::ServeDir;

/// `files` (a `ServeDir` on `root`) behind a check that the requested path resolves,
/// symlinks followed, to a place inside `root`; otherwise 404.
pub fn confined(
    root: PathBuf,
    files: ServeDir,
) -> impl Service<
    Request<Body>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let root: Arc<Path> = Arc::from(root.as_path());
    tower::service_fn(move |request: Request<Body>| {
        let root = root.clone();
        let files = files.clone();
        async move {
            let wanted = requested_path(&root, request.uri().path());
            if let Some(wanted) = wanted
                && !resolves_inside(&root, wanted).await
            {
                tracing::debug!(
                    path = request.uri().path(),
                    "static file refused: it resolves outside the static directory"
                );
                return Ok(StatusCode::NOT_FOUND.into_response());
            }
            match files.oneshot(request).await {
                Ok(response) => Ok(response.into_response()),
                Err(never) => match never {},
            }
        }
    })
}

/// The file a request path names under `root`, decoded as `ServeDir` decodes it; `None`
/// for paths `ServeDir` itself refuses (`..`, absolute components, bad encoding).
fn requested_path(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8()
        .ok()?;
    let mut full = root.to_path_buf();
    for component in Path::new(&*decoded).components() {
        match component {
            Component::Normal(part) => full.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(full)
}

/// Whether `wanted` (and, for a directory, its `index.html`) resolves inside `root`.
/// A path that does not exist passes: `ServeDir` answers it with 404.
async fn resolves_inside(root: &Path, wanted: PathBuf) -> bool {
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return false;
    };
    let Ok(real) = tokio::fs::canonicalize(&wanted).await else {
        return true;
    };
    if !real.starts_with(&root) {
        return false;
    }
    let is_dir = tokio::fs::metadata(&real)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if is_dir {
        return match tokio::fs::canonicalize(real.join("index.html")).await {
            Ok(index) => index.starts_with(&root),
            Err(_) => true,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_under_the_root_like_serve_dir() {
        let root = Path::new("/srv/site");
        assert_eq!(
            requested_path(root, "/a/b%20c.js"),
            Some(PathBuf::from("/srv/site/a/b c.js"))
        );
        assert_eq!(requested_path(root, "/"), Some(PathBuf::from("/srv/site")));
        assert_eq!(requested_path(root, "/a/../../etc/passwd"), None);
        assert_eq!(requested_path(root, "/%2e%2e/etc/passwd"), None);
    }
}
