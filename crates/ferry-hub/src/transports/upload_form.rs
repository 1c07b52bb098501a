//! `POST /upload`: a plain `multipart/form-data` endpoint for clients without tus
//! (`curl -F file=@big.iso`). Every file part is streamed to the upload store with the
//! same checks as a tus upload (name, media type, size, quota) and announced when it is
//! complete. Text parts are ignored.

use axum::Json;
use axum::extract::{Multipart, Query, State};
use axum::response::{IntoResponse, Response};
use ferry_proto::tus;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::tus::{UploadState, access, announce};
use crate::auth::unix_now;
use crate::uploads::{NewUpload, UploadError};

/// Most file parts accepted in one request.
const MAX_FILES: usize = 100;

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

fn error(e: UploadError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({"error": e.message}))).into_response()
}

/// The handler: `201 {"files":[{"id","name","size","sha256","url"}]}`.
pub(crate) async fn upload(
    State(state): State<UploadState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let access = match access(&state.hub, &headers, q.token.as_deref()) {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(rejection) => {
            return error(UploadError {
                status: 400,
                message: format!("expected a multipart/form-data body: {rejection}"),
            });
        }
    };
    let mut files: Vec<Value> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return error(UploadError {
                    status: 400,
                    message: format!("malformed multipart body: {e}"),
                });
            }
        };
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        if files.len() >= MAX_FILES {
            return error(UploadError {
                status: 413,
                message: format!("at most {MAX_FILES} files per request"),
            });
        }
        if let Err(e) = tus::check_file_name(&name) {
            return error(UploadError {
                status: 400,
                message: e.to_string(),
            });
        }
        let filetype = field.content_type().map(str::to_string);
        let mut pairs: Vec<(&str, &[u8])> = vec![("filename", name.as_bytes())];
        if let Some(t) = &filetype {
            pairs.push(("filetype", t.as_bytes()));
        }
        let metadata = tus::encode_metadata(pairs);
        let created = state
            .store
            .create(
                &access,
                NewUpload {
                    length: None,
                    metadata: Some(metadata),
                    partial: false,
                },
                unix_now(),
            )
            .await;
        let info = match created {
            Ok(info) => info,
            Err(e) => return error(e),
        };
        let stored = async {
            let mut guard = state.store.begin_patch(&info.id, &access, 0)?;
            guard.write(field, None, unix_now()).await?;
            guard.complete_here().await
        }
        .await;
        let info = match stored {
            Ok(done) => done,
            Err(e) => {
                let _ = state.store.delete(&info.id, &access).await;
                return error(e);
            }
        };
        announce(&state.hub, &info).await;
        files.push(json!({
            "id": info.id,
            "name": info.name,
            "size": info.length,
            "sha256": info.sha256,
            "url": format!("/files/{}", info.id),
        }));
    }
    if files.is_empty() {
        return error(UploadError {
            status: 400,
            message: "no file part in the form; send one with `curl -F file=@PATH`".into(),
        });
    }
    (StatusCode::CREATED, Json(json!({"files": files}))).into_response()
}
