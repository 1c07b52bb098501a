//! `/sync/{root}/`: the HTTP side of file sync (SPEC F2). Maps requests to
//! [`SyncRoot`] operations: the manifest, downloads with `Range`, simple `PUT`s streamed to
//! a staging file, directories, deletes, renames and the commit of a finished tus upload.
//! Reading needs Subscribe on the root's channel, writing Publish; the token comes from
//! `Authorization: Bearer` or `?token=` as on every request-scoped transport.
//!
//! Like the tus routes, these are mounted outside the hub's global body limit and
//! compression: a `PUT` body is streamed with the root's own limits, and a download must
//! reach the client byte for byte (`Range`, `ETag`). JSON bodies (rename, commit) are
//! capped at [`JSON_BODY_LIMIT`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ferry_proto::sync::{
    BASE_HEADER, CommitRequest, FileOp, MAX_MANIFEST_PAGE, ManifestEntry, OpKind, RenameRequest,
    SERVER_SOURCE, SOURCE_HEADER, SyncPath, is_sha256_hex,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Capability, Identity};
use crate::error::HubError;
use crate::hub::Hub;
use crate::sync::root::{Author, Base, Limit};
use crate::sync::{SyncError, SyncRoot, SyncRoots};
use crate::uploads::{Access, UploadStore};

use super::{request_identity, request_token};

/// Largest JSON body (`rename`, `commit`).
pub const JSON_BODY_LIMIT: usize = 64 << 10;

/// Response header of a download: the root version that last changed the file.
pub const VERSION_HEADER: &str = "x-ferry-sync-version";

/// State of the sync routes.
#[derive(Clone)]
struct SyncState {
    hub: Hub,
    roots: SyncRoots,
    uploads: Option<Arc<UploadStore>>,
}

/// The `/sync/{root}/` routes, or `None` when no root is configured. `uploads` is the
/// store `commit` takes finished uploads from.
pub fn routes(
    hub: &Hub,
    roots: SyncRoots,
    uploads: Option<Arc<UploadStore>>,
    cors: CorsLayer,
) -> Option<Router> {
    if roots.is_empty() {
        return None;
    }
    let state = SyncState {
        hub: hub.clone(),
        roots,
        uploads,
    };
    Some(
        Router::new()
            .route("/sync/{root}/manifest", get(manifest))
            .route(
                "/sync/{root}/files/{*path}",
                get(download).put(put_file).delete(delete),
            )
            .route("/sync/{root}/dirs/{*path}", put(make_dir))
            .route("/sync/{root}/rename", post(rename))
            .route("/sync/{root}/commit", post(commit))
            // Applies to the JSON bodies only; a PUT body is streamed with the root's limits.
            .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
            .layer(cors.expose_headers([
                header::ETAG,
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
                HeaderName::from_static(VERSION_HEADER),
            ]))
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &http::Request<Body>| {
                    crate::redact::request_span(request)
                }),
            )
            .with_state(state),
    )
}

impl IntoResponse for SyncError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = match self.current {
            // A conflict answers with what the server holds, for the client to compare.
            Some(current) => (status, Json(current)).into_response(),
            None => (
                status,
                Json(json!({"error": {"code": self.code, "message": self.message}})),
            )
                .into_response(),
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == 401 {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn hub_error(e: HubError) -> SyncError {
    SyncError::new(e.code.http_status(), e.code.as_str(), e.message)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct ManifestQuery {
    #[serde(default)]
    since: u64,
    after: Option<String>,
    limit: Option<usize>,
}

/// Who asks, and about which root and path: the root named in the URL, the identity of
/// the request's token, and (on the routes that have one) the path, checked.
struct Caller {
    root: Arc<SyncRoot>,
    identity: Identity,
    path: Option<SyncPath>,
}

impl Caller {
    async fn extract(
        parts: &mut Parts,
        state: &SyncState,
        cap: Capability,
    ) -> Result<Caller, SyncError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| SyncError::new(400, "INVALID_PATH", e.body_text()))?;
        let Query(query) = Query::<TokenQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| SyncError::invalid(e.body_text()))?;
        // Who first: a caller without a valid token learns nothing, not even which roots
        // exist.
        let token = request_token(query.token.as_deref(), &parts.headers);
        let identity = request_identity(&state.hub, token.as_deref()).map_err(hub_error)?;
        let name = params.get("root").map(String::as_str).unwrap_or_default();
        let root = state.roots.get(name).cloned().ok_or_else(|| {
            SyncError::new(404, "NOT_FOUND", format!("no sync root named {name:?}"))
        })?;
        state
            .hub
            .authorize(&identity, cap, root.channel())
            .map_err(hub_error)?;
        let path = params
            .get("path")
            .map(|raw| SyncPath::parse(raw))
            .transpose()?;
        Ok(Caller {
            root,
            identity,
            path,
        })
    }

    /// The checked path of a route with `{*path}`.
    fn path(&self) -> Result<&SyncPath, SyncError> {
        self.path
            .as_ref()
            .ok_or_else(|| SyncError::invalid("this route needs a path"))
    }
}

/// A reading request: Subscribe on the root's channel.
struct Reader(Caller);

impl FromRequestParts<SyncState> for Reader {
    type Rejection = SyncError;

    async fn from_request_parts(parts: &mut Parts, state: &SyncState) -> Result<Self, SyncError> {
        Caller::extract(parts, state, Capability::Subscribe)
            .await
            .map(Reader)
    }
}

/// A writing request: Publish on the root's channel, and a valid source (the author).
struct Writer {
    caller: Caller,
    author: Author,
}

impl FromRequestParts<SyncState> for Writer {
    type Rejection = SyncError;

    async fn from_request_parts(parts: &mut Parts, state: &SyncState) -> Result<Self, SyncError> {
        let caller = Caller::extract(parts, state, Capability::Publish).await?;
        let author = author(&parts.headers, &caller.identity)?;
        Ok(Writer { caller, author })
    }
}

/// The author of a change: the `x-ferry-sync-source` header (1–64 of
/// `[A-Za-z0-9_.-]`, not `server`) and the token's user.
fn author(headers: &HeaderMap, identity: &Identity) -> Result<Author, SyncError> {
    let source = headers
        .get(SOURCE_HEADER)
        .ok_or_else(|| {
            SyncError::invalid(format!(
                "send {SOURCE_HEADER}: your client's id (1-64 of A-Z a-z 0-9 _ . -), echoed in the operation so you can ignore your own changes"
            ))
        })?
        .to_str()
        .unwrap_or_default();
    let valid = (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid || source == SERVER_SOURCE {
        return Err(SyncError::invalid(format!(
            "{SOURCE_HEADER} must be 1-64 of A-Z a-z 0-9 _ . - and not {SERVER_SOURCE:?}"
        )));
    }
    Ok(Author {
        source: source.to_string(),
        user: identity.user.clone(),
    })
}

/// The `x-ferry-sync-base` header: absent, `none`, or a lowercase hex sha256.
fn base(headers: &HeaderMap) -> Result<Option<Base>, SyncError> {
    let Some(value) = headers.get(BASE_HEADER) else {
        return Ok(None);
    };
    match value.to_str().unwrap_or_default().trim() {
        "none" => Ok(Some(Base::Absent)),
        sha if is_sha256_hex(sha) => Ok(Some(Base::Sha256(sha.to_string()))),
        _ => Err(SyncError::invalid(format!(
            "{BASE_HEADER} must be `none` or a lowercase hex sha256"
        ))),
    }
}

fn json_of<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, SyncError> {
    body.map(|Json(v)| v)
        .map_err(|e| SyncError::invalid(e.body_text()))
}

fn entry_reply(created: bool, entry: ManifestEntry) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(entry)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The entry an operation left at its path.
fn entry_after(op: FileOp) -> ManifestEntry {
    let deleted = op.op == OpKind::Delete;
    ManifestEntry {
        path: op.path,
        dir: op.dir,
        size: op.size,
        sha256: op.sha256,
        modified: op.modified,
        version: op.version,
        deleted,
    }
}

/// `GET /sync/{root}/manifest?since=V&after=PATH&limit=N`.
async fn manifest(
    Reader(caller): Reader,
    query: Result<Query<ManifestQuery>, QueryRejection>,
) -> Result<Response, SyncError> {
    let Query(q) = query.map_err(|e| SyncError::invalid(e.body_text()))?;
    let after = q.after.as_deref().map(SyncPath::parse).transpose()?;
    let page = caller
        .root
        .manifest(
            q.since,
            after.as_ref(),
            q.limit.unwrap_or(MAX_MANIFEST_PAGE),
        )
        .await?;
    let mut response = Json(page).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET|HEAD /sync/{root}/files/{path}`: the bytes, with `ETag`, `Range`, `If-Range`.
async fn download(Reader(caller): Reader, headers: HeaderMap) -> Result<Response, SyncError> {
    let (entry, file) = caller.root.open_file(caller.path()?).await?;
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header("x-content-type-options", "nosniff")
        .header(VERSION_HEADER, entry.version);
    super::tus::ranged_file(
        file,
        entry.sha256.as_deref().unwrap_or_default(),
        &headers,
        builder,
    )
    .await
    .map_err(|e| SyncError::internal("reading a file", e))
}

/// The limit of a `PUT` body: `put_max_size`, or `max_file_size` when smaller.
fn put_limit(root: &SyncRoot) -> Limit {
    let config = root.config();
    let message = if config.put_max_size < config.max_file_size {
        format!(
            "a PUT body may hold {} bytes (put_max_size); send larger files as a tus upload (POST /files/) and POST /sync/{}/commit",
            config.put_max_size,
            root.name()
        )
    } else {
        format!(
            "files in sync root {:?} may hold {} bytes (max_file_size)",
            root.name(),
            config.max_file_size
        )
    };
    Limit {
        bytes: config.put_max_size.min(config.max_file_size),
        error: SyncError::new(413, "TOO_LARGE", message),
    }
}

/// `PUT /sync/{root}/files/{path}`: the body becomes the file, if the base matches.
async fn put_file(w: Writer, headers: HeaderMap, body: Body) -> Result<Response, SyncError> {
    let root = &w.caller.root;
    let base = base(&headers)?;
    let limit = put_limit(root);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.bytes) {
        return Err(limit.error);
    }
    let staged = root.stage_body(body.into_data_stream(), limit).await?;
    let (entry, created) = root
        .put_file(w.caller.path()?, base.as_ref(), staged, &w.author)
        .await?;
    Ok(entry_reply(created, entry))
}

/// `PUT /sync/{root}/dirs/{path}`: create a directory and its parents.
async fn make_dir(w: Writer) -> Result<Response, SyncError> {
    let (entry, created) = w.caller.root.make_dir(w.caller.path()?, &w.author).await?;
    Ok(entry_reply(created, entry))
}

/// `DELETE /sync/{root}/files/{path}`: a file, or a directory with everything below it.
async fn delete(w: Writer, headers: HeaderMap) -> Result<Response, SyncError> {
    let base = base(&headers)?;
    let op = w
        .caller
        .root
        .delete(w.caller.path()?, base.as_ref(), &w.author)
        .await?;
    Ok(entry_reply(false, entry_after(op)))
}

/// `POST /sync/{root}/rename` with a [`RenameRequest`].
async fn rename(
    w: Writer,
    body: Result<Json<RenameRequest>, JsonRejection>,
) -> Result<Response, SyncError> {
    let request = json_of(body)?;
    let from = SyncPath::parse(&request.from)?;
    let to = SyncPath::parse(&request.to)?;
    let op = w.caller.root.rename(&from, &to, &w.author).await?;
    Ok(entry_reply(false, entry_after(op)))
}

/// `POST /sync/{root}/commit` with a [`CommitRequest`]: a finished tus upload becomes a
/// file of the root, if its sha256 is the one sent and the base matches; the upload is
/// then deleted. A refused commit leaves the upload as it was.
async fn commit(
    State(state): State<SyncState>,
    w: Writer,
    headers: HeaderMap,
    body: Result<Json<CommitRequest>, JsonRejection>,
) -> Result<Response, SyncError> {
    let (root, author) = (&w.caller.root, &w.author);
    let base = base(&headers)?;
    let request = json_of(body)?;
    let path = SyncPath::parse(&request.path)?;
    if !is_sha256_hex(&request.sha256) {
        return Err(SyncError::invalid("sha256 must be lowercase hex"));
    }
    let store = state
        .uploads
        .as_ref()
        .ok_or_else(|| SyncError::new(404, "NOT_FOUND", "uploads are turned off on this hub"))?;
    let access = Access {
        user: author.user.clone(),
        admin: false,
    };
    let (info, data) = store
        .download(&request.upload, &access)
        .map_err(|e| SyncError::new(e.status, "UPLOAD", e.message))?;
    if info.sha256.as_deref() != Some(request.sha256.as_str()) {
        return Err(SyncError::new(
            400,
            "CHECKSUM_MISMATCH",
            format!(
                "upload {} has sha256 {}, not the {} you sent",
                info.id,
                info.sha256.as_deref().unwrap_or("(none)"),
                request.sha256
            ),
        ));
    }
    let size = info.length.unwrap_or(0);
    let max = root.config().max_file_size;
    if size > max {
        return Err(SyncError::new(
            413,
            "TOO_LARGE",
            format!(
                "files in sync root {:?} may hold {max} bytes (max_file_size)",
                root.name()
            ),
        ));
    }
    let staged = root.stage_upload(&data, size, &request.sha256).await?;
    let (entry, created) = root.put_file(&path, base.as_ref(), staged, author).await?;
    if let Err(e) = store.delete(&request.upload, &access).await {
        tracing::warn!(upload = %request.upload, error = %e, "sync: a committed upload could not be removed");
    }
    Ok(entry_reply(created, entry))
}
