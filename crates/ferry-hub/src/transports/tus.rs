//! `/files/`: the tus 1.0.0 server (core + creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, termination, concatenation) and
//! `GET /files/{id}` downloads with `Range`; `/upload` (multipart) is in
//! [`upload_form`](super::upload_form). Protocol rules come from `ferry_proto::tus`, the
//! files from [`UploadStore`]; this file maps HTTP to both.
//!
//! These routes are mounted outside the hub's global layers (body limit, compression):
//! they stream bodies of any size with their own limits (`uploads.max_size`,
//! `uploads.user_quota`), and a download must reach the client byte for byte so that
//! `Range`, `Accept-Ranges` and `ETag` keep their meaning.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferry_proto::tus::{self, Checksum, Concat, RangeRequest};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{api_key_matches, unix_now};
use crate::hub::Hub;
use crate::uploads::{Access, NewUpload, UploadError, UploadInfo, UploadStore};

use super::{request_token, upload_form};

/// State of the upload routes: the hub (auth, events) and the store.
#[derive(Clone)]
pub struct UploadState {
    /// The hub.
    pub hub: Hub,
    /// The upload store.
    pub store: Arc<UploadStore>,
}

/// Response headers a browser client (tus-js-client, the ferry SDK) must be allowed to
/// read across origins: without them a cross-origin upload cannot learn its URL or
/// offset, and a download cannot resume.
const EXPOSED_HEADERS: [HeaderName; 16] = [
    HeaderName::from_static("tus-resumable"),
    HeaderName::from_static("tus-version"),
    HeaderName::from_static("tus-extension"),
    HeaderName::from_static("tus-max-size"),
    HeaderName::from_static("tus-checksum-algorithm"),
    HeaderName::from_static("upload-offset"),
    HeaderName::from_static("upload-length"),
    HeaderName::from_static("upload-defer-length"),
    HeaderName::from_static("upload-metadata"),
    HeaderName::from_static("upload-expires"),
    HeaderName::from_static("upload-concat"),
    header::LOCATION,
    header::ETAG,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CONTENT_DISPOSITION,
];

static TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
static UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
static UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");

/// The upload store of `hub`'s configuration; `None` when `uploads.enabled` is off. One
/// store serves `/files/` and the sync routes' `commit`.
pub fn open_store(hub: &Hub) -> Option<Arc<UploadStore>> {
    let config = hub.config();
    config
        .uploads
        .enabled
        .then(|| Arc::new(UploadStore::open(&config.uploads, &config.data_dir)))
}

/// The `/files/` and `/upload` routes on `store` (from [`open_store`]) with their state,
/// and the expiry sweeper (a task that ends with the hub's shutdown).
pub fn routes(hub: &Hub, store: Arc<UploadStore>, cors: CorsLayer) -> Router {
    spawn_sweeper(hub, store.clone());
    let state = UploadState {
        hub: hub.clone(),
        store,
    };
    let file = axum::routing::get(download)
        .head(head)
        .patch(patch)
        .delete(terminate);
    Router::new()
        .route("/files", post(create))
        .route("/files/", post(create))
        .route("/files/{id}", file)
        .route("/upload", post(upload_form::upload))
        // Bodies are streamed to disk and counted against the upload limits, not
        // collected: the hub's 1 MiB limit for JSON bodies does not apply.
        .layer(DefaultBodyLimit::disable())
        .layer(cors.expose_headers(EXPOSED_HEADERS))
        // tower-http's CORS layer answers every OPTIONS itself; tus discovery headers
        // are added to that answer here.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            discovery_headers,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn discovery_headers(
    State(state): State<UploadState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_options = request.method() == http::Method::OPTIONS;
    let mut response = next.run(request).await;
    if is_options {
        let h = response.headers_mut();
        for (name, value) in [
            ("tus-version", tus::TUS_VERSION.to_string()),
            ("tus-extension", tus::EXTENSIONS.to_string()),
            ("tus-max-size", state.store.config().max_size.to_string()),
            (
                "tus-checksum-algorithm",
                tus::CHECKSUM_ALGORITHMS.to_string(),
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
    }
    response
}

fn spawn_sweeper(hub: &Hub, store: Arc<UploadStore>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime: expired uploads will not be swept");
        return;
    };
    let every = Duration::from_millis(store.config().sweep_interval_ms.max(10));
    let stop = hub.shutdown_token().clone();
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            store.sweep(unix_now()).await;
        }
    });
}

/// Who is asking: `Authorization: apikey KEY` (sees every upload), a JWT as
/// `Authorization: Bearer` or `?token=`, or anonymous where both `allow_anonymous` and
/// `uploads.allow_anonymous` are on.
pub(crate) fn access(
    hub: &Hub,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Access, UploadError> {
    let config = hub.config();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(key) = auth.and_then(|v| {
        v.strip_prefix("apikey ")
            .or_else(|| v.strip_prefix("Apikey "))
    }) {
        return match &config.api_key {
            Some(expected) if api_key_matches(expected.expose(), key.trim()) => Ok(Access {
                user: "api".into(),
                admin: true,
            }),
            _ => Err(UploadError {
                status: 401,
                message: "wrong API key".into(),
            }),
        };
    }
    match request_token(query_token, headers) {
        Some(token) => hub
            .auth()
            .verify(&token)
            .map(|identity| Access {
                user: identity.user,
                admin: false,
            })
            .map_err(|e| UploadError {
                status: 401,
                message: e.message,
            }),
        None if config.allow_anonymous && config.uploads.allow_anonymous => Ok(Access {
            user: "anonymous".into(),
            admin: false,
        }),
        None => Err(UploadError {
            status: 401,
            message: "uploads need a token (Authorization: Bearer JWT) or the API key".into(),
        }),
    }
}

/// A tus response: status, `Tus-Resumable`, extra headers, a text body.
fn reply(status: u16, headers: Vec<(HeaderName, String)>, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = response.headers_mut();
    h.insert(
        TUS_RESUMABLE.clone(),
        HeaderValue::from_static(tus::TUS_VERSION),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if status >= 400 {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

fn error_reply(e: UploadError) -> Response {
    let mut response = reply(e.status, Vec::new(), format!("{}\n", e.message));
    if e.status == 401 {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

fn location(id: &str) -> String {
    format!("/files/{id}")
}

/// The event a finished upload publishes on `uploads.event_channel` (U8).
pub(crate) async fn announce(hub: &Hub, info: &UploadInfo) {
    let channel = &hub.config().uploads.event_channel;
    if channel.is_empty() {
        return;
    }
    let event = json!({
        "id": info.id,
        "name": info.name,
        "size": info.length,
        "sha256": info.sha256,
        "user": info.user,
        "url": location(&info.id),
    });
    let Ok(data) = serde_json::value::RawValue::from_string(event.to_string()) else {
        return;
    };
    if let Err(e) = hub.publish(channel, data.into(), None, None).await {
        tracing::warn!(%channel, error = %e, "cannot announce a finished upload");
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn is_offset_stream(headers: &HeaderMap) -> bool {
    header_str(headers, "content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(tus::OFFSET_CONTENT_TYPE))
}

/// `POST /files/`: create an upload (with its first bytes when the body has them), or a
/// final concatenation.
async fn create(
    State(state): State<UploadState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match create_inner(&state, q.token.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn create_inner(
    state: &UploadState,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    tus::check_version(header_str(headers, "tus-resumable"))?;
    let access = access(&state.hub, headers, token)?;
    let now = unix_now();
    let metadata = header_str(headers, "upload-metadata").map(str::to_string);
    let concat = header_str(headers, "upload-concat")
        .map(Concat::parse)
        .transpose()?;
    if let Some(Concat::Final(parts)) = concat {
        let info = state
            .store
            .concatenate(&access, parts, metadata, now)
            .await?;
        announce(&state.hub, &info).await;
        return Ok(reply(
            201,
            vec![(header::LOCATION, location(&info.id))],
            String::new(),
        ));
    }
    let length = match (
        header_str(headers, "upload-length"),
        header_str(headers, "upload-defer-length"),
    ) {
        (Some(l), None) => Some(tus::parse_u64("Upload-Length", l)?),
        (None, Some("1")) => None,
        _ => {
            return Err(UploadError {
                status: 400,
                message: "send exactly one of Upload-Length or Upload-Defer-Length: 1".into(),
            });
        }
    };
    let info = state
        .store
        .create(
            &access,
            NewUpload {
                length,
                metadata,
                partial: concat == Some(Concat::Partial),
            },
            now,
        )
        .await?;
    let mut extra = vec![
        (header::LOCATION, location(&info.id)),
        (
            HeaderName::from_static("upload-expires"),
            http_date(info.expires_at),
        ),
    ];
    // creation-with-upload: the body is the first chunk.
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() != "0");
    if is_offset_stream(headers) && has_body {
        let checksum = header_str(headers, "upload-checksum")
            .map(Checksum::parse)
            .transpose()?;
        let mut guard = state.store.begin_patch(&info.id, &access, 0)?;
        let written = guard.write(body.into_data_stream(), checksum, now).await;
        drop(guard);
        match written {
            Ok(out) => {
                if out.finished {
                    announce(&state.hub, &out.info).await;
                }
                extra.push((UPLOAD_OFFSET.clone(), out.offset.to_string()));
            }
            // The upload exists; the client resumes with HEAD + PATCH.
            Err(e) => {
                tracing::debug!(id = %info.id, error = %e, "creation-with-upload body failed");
                let (_, offset) = state.store.head(&info.id, &access)?;
                extra.push((UPLOAD_OFFSET.clone(), offset.to_string()));
            }
        }
    }
    Ok(reply(201, extra, String::new()))
}

/// `HEAD /files/{id}`: where the upload stands.
async fn head(
    State(state): State<UploadState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        tus::check_version(header_str(&headers, "tus-resumable"))?;
        let access = access(&state.hub, &headers, q.token.as_deref())?;
        state.store.head(&id, &access)
    })();
    let (info, offset) = match result {
        Ok(v) => v,
        // HEAD answers carry no body.
        Err(e) => return reply(e.status, Vec::new(), String::new()),
    };
    let mut extra = vec![(UPLOAD_OFFSET.clone(), offset.to_string())];
    match info.length {
        Some(l) => extra.push((UPLOAD_LENGTH.clone(), l.to_string())),
        None => extra.push((HeaderName::from_static("upload-defer-length"), "1".into())),
    }
    if let Some(m) = &info.metadata {
        extra.push((HeaderName::from_static("upload-metadata"), m.clone()));
    }
    if info.partial {
        extra.push((HeaderName::from_static("upload-concat"), "partial".into()));
    } else if !info.parts.is_empty() {
        let urls: Vec<String> = info.parts.iter().map(|p| location(p)).collect();
        extra.push((
            HeaderName::from_static("upload-concat"),
            format!("final;{}", urls.join(" ")),
        ));
    }
    if !info.is_complete() {
        extra.push((
            HeaderName::from_static("upload-expires"),
            http_date(info.expires_at),
        ));
    }
    reply(200, extra, String::new())
}

/// `PATCH /files/{id}`: append bytes at `Upload-Offset`.
async fn patch(
    State(state): State<UploadState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match patch_inner(&state, &id, q.token.as_deref(), &headers, body).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn patch_inner(
    state: &UploadState,
    id: &str,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    tus::check_version(header_str(headers, "tus-resumable"))?;
    let access = access(&state.hub, headers, token)?;
    if !is_offset_stream(headers) {
        return Err(tus::TusError::ContentType.into());
    }
    let offset = tus::parse_u64(
        "Upload-Offset",
        header_str(headers, "upload-offset").ok_or(tus::TusError::InvalidHeader {
            header: "Upload-Offset",
            reason: "missing".into(),
        })?,
    )?;
    let checksum = header_str(headers, "upload-checksum")
        .map(Checksum::parse)
        .transpose()?;
    let length = header_str(headers, "upload-length")
        .map(|l| tus::parse_u64("Upload-Length", l))
        .transpose()?;
    let mut guard = state.store.begin_patch(id, &access, offset)?;
    if let Some(length) = length {
        guard.set_length(length).await?;
    }
    let out = guard
        .write(body.into_data_stream(), checksum, unix_now())
        .await?;
    drop(guard);
    if out.finished {
        announce(&state.hub, &out.info).await;
    }
    let mut extra = vec![(UPLOAD_OFFSET.clone(), out.offset.to_string())];
    if !out.info.is_complete() {
        extra.push((
            HeaderName::from_static("upload-expires"),
            http_date(out.info.expires_at),
        ));
    }
    Ok(reply(204, extra, String::new()))
}

/// `DELETE /files/{id}`: termination.
async fn terminate(
    State(state): State<UploadState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        tus::check_version(header_str(&headers, "tus-resumable"))?;
        let access = access(&state.hub, &headers, q.token.as_deref())?;
        state.store.delete(&id, &access).await
    }
    .await;
    match result {
        Ok(()) => reply(204, Vec::new(), String::new()),
        Err(e) => error_reply(e),
    }
}

/// `Content-Disposition: attachment` with the name as RFC 6266 `filename*` (always an
/// attachment: user content is never rendered on the hub's origin).
fn disposition(name: Option<&str>) -> String {
    match name {
        Some(n) => {
            let ascii: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let encoded: String = n
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
        }
        None => "attachment".into(),
    }
}

/// `GET /files/{id}`: a finished upload, whole or one `Range` (206, 416), with a strong
/// `ETag` (the SHA-256) so `If-Range` resumes safely.
async fn download(
    State(state): State<UploadState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    match download_inner(&state, &id, q.token.as_deref(), &headers).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn download_inner(
    state: &UploadState,
    id: &str,
    token: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, UploadError> {
    let access = access(&state.hub, headers, token)?;
    let (info, path) = state.store.download(id, &access)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| UploadError {
            status: 500,
            message: format!("cannot open the upload: {e}"),
        })?;
    let builder = Response::builder()
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(
            header::CONTENT_DISPOSITION,
            disposition(info.name.as_deref()),
        )
        .header("x-content-type-options", "nosniff")
        .header(
            header::CONTENT_TYPE,
            info.filetype
                .as_deref()
                .filter(|t| HeaderValue::from_str(t).is_ok() && t.contains('/'))
                .unwrap_or("application/octet-stream"),
        );
    ranged_file(
        file,
        info.sha256.as_deref().unwrap_or_default(),
        headers,
        builder,
    )
    .await
    .map_err(|e| UploadError {
        status: 500,
        message: format!("cannot read the upload: {e}"),
    })
}

/// Answer a download of `file` whose content hash is `sha256` (the strong `ETag`): 304
/// for a matching `If-None-Match`, the whole file, or one `Range` (206, 416), with
/// `If-Range` honoured; `builder` carries the caller's other headers. Shared by the tus
/// downloads and the sync routes, so there is one Range implementation.
pub(crate) async fn ranged_file(
    mut file: tokio::fs::File,
    sha256: &str,
    headers: &HeaderMap,
    builder: http::response::Builder,
) -> std::io::Result<Response> {
    let etag = format!("\"{sha256}\"");
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if header_str(headers, "if-none-match").is_some_and(|v| v.trim() == etag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Ok(r);
    }
    // If-Range with another validator: the client's partial copy is stale, send it all.
    let range_header = match header_str(headers, "if-range") {
        Some(v) if v.trim() != etag => None,
        _ => header_str(headers, "range"),
    };
    let range = tus::parse_range(range_header, len);
    let mut builder = builder
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::ACCEPT_RANGES, "bytes")
                .body(Body::empty())
                .unwrap_or_default());
        }
    };
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(count), 1 << 16));
    Ok(builder
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .body(body)
        .unwrap_or_default()
        .into_response())
}
