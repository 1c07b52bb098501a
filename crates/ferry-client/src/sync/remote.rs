//! The server side of a sync client: the `/sync/{root}/` routes (docs/PROTOCOL.md, "File
//! sync") through the one shared [`Http`] client, and large uploads through the tus
//! endpoint `/files/` followed by `POST /sync/{root}/commit`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_proto::sync::{
    BASE_HEADER, CommitRequest, ManifestEntry, ManifestPage, RenameRequest, SOURCE_HEADER,
    SyncPath, Version, is_sha256_hex,
};
use http::StatusCode;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::SyncError;
use super::scan::hash_file;
use crate::http::{DownloadOutcome, Http, Progress, RequestBuilder, Response};
use crate::upload::Upload;

/// Characters of a path component sent as they are; everything else is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The answer to a conditional change.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done; the server's entry for the path (`None` after a deletion).
    Done(Option<ManifestEntry>),
    /// `412`: the server's content is not the base; its current entry, if any.
    Stale(Option<ManifestEntry>),
}

/// A local file to upload, as the scan found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalFile<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub sha256: &'a str,
}

/// How often a transfer reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One root on one server.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub http: Http,
    /// `http://host:port` (no trailing slash).
    pub server: String,
    pub root: String,
    pub token: Option<String>,
    pub source: String,
    /// Files up to this size go by one `PUT`; larger ones by tus + commit.
    pub put_max: u64,
}

impl Remote {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/sync/{}/{tail}",
            self.server,
            utf8_percent_encode(&self.root, COMPONENT)
        )
    }

    fn path_url(&self, kind: &str, path: &SyncPath) -> String {
        let encoded: Vec<String> = path
            .components()
            .map(|c| utf8_percent_encode(c, COMPONENT).to_string())
            .collect();
        self.url(&format!("{kind}/{}", encoded.join("/")))
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        let request = request.header(SOURCE_HEADER, &self.source);
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    /// One page of the manifest (`since` 0: the whole tree).
    pub async fn manifest_page(
        &self,
        since: Version,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ManifestPage, SyncError> {
        let mut request = self
            .authorize(self.http.get(&self.url("manifest")))
            .no_cache()
            .query("since", since.to_string());
        if let Some(after) = after {
            request = request.query("after", after);
        }
        if let Some(limit) = limit {
            request = request.query("limit", limit.to_string());
        }
        let response = request.send().await?;
        let response = check(response, "reading the manifest").await?;
        Ok(response.json().await?)
    }

    /// Download `entry` into `tmp_dir` (resuming a partial download of the same content,
    /// or none at all when the staging directory already holds that content), check its
    /// sha256 and return the verified staging file with the bytes that travelled.
    pub async fn download(
        &self,
        path: &SyncPath,
        entry: &ManifestEntry,
        tmp_dir: &Path,
        mut progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<(PathBuf, u64), SyncError> {
        let Some(sha) = entry.sha256.as_deref().filter(|s| is_sha256_hex(s)) else {
            return Err(SyncError::Protocol(format!(
                "the server listed {path} without a valid sha256"
            )));
        };
        std::fs::create_dir_all(tmp_dir).map_err(|e| SyncError::io(tmp_dir, e))?;
        let staged = tmp_dir.join(sha);
        let mut transferred = 0;
        if !staged.exists() {
            let mut download = self
                .http
                .download(&self.path_url("files", path), &staged)
                .resume(true)
                .header(SOURCE_HEADER, &self.source);
            if let Some(t) = &self.token {
                download = download.header("authorization", format!("Bearer {t}"));
            }
            let mut last: Option<Instant> = None;
            let total = entry.size;
            let outcome = download
                .on_progress(move |p: &Progress| {
                    if last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
                        || Some(p.loaded) == p.total
                    {
                        last = Some(Instant::now());
                        progress(p.loaded, p.total.unwrap_or(total));
                    }
                })
                .start()
                .await?;
            transferred = outcome_bytes(&outcome);
        }
        let staged_for_hash = staged.clone();
        let actual = tokio::task::spawn_blocking(move || hash_file(&staged_for_hash))
            .await
            .map_err(|e| SyncError::State(format!("hashing task failed: {e}")))?
            .map_err(|e| SyncError::io(&staged, e))?;
        if actual != sha {
            let _ = std::fs::remove_file(&staged);
            return Err(SyncError::Changed(format!(
                "{path}: the downloaded content does not match the manifest's sha256 (it changed on the server meanwhile)"
            )));
        }
        Ok((staged, transferred))
    }

    /// Upload the local `file` as `path`, based on `base` (`None`: must not exist).
    pub async fn upload(
        &self,
        path: &SyncPath,
        file: &LocalFile<'_>,
        base: Option<&str>,
        resume_store: &Path,
        progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<(Outcome, bool), SyncError> {
        let LocalFile {
            path: file,
            size,
            sha256,
        } = *file;
        if size <= self.put_max {
            let response = self
                .authorize(self.http.put(&self.path_url("files", path)))
                .header(BASE_HEADER, base.unwrap_or("none"))
                .no_timeout()
                .file(file)
                .send()
                .await?;
            if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
                return Ok((conditional(response, "uploading").await?, false));
            }
        }
        let mut progress = progress;
        let mut last: Option<Instant> = None;
        let mut upload = Upload::tus(&self.http, &format!("{}/files/", self.server), file)
            .resume_store(resume_store)
            .header(SOURCE_HEADER, &self.source)
            .on_progress(move |p: &Progress| {
                if last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || Some(p.loaded) == p.total {
                    last = Some(Instant::now());
                    progress(p.loaded, p.total.unwrap_or(size));
                }
            });
        if let Some(t) = &self.token {
            upload = upload.header("authorization", format!("Bearer {t}"));
        }
        let done = upload.start().await?;
        let id = done
            .url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let commit = CommitRequest {
            upload: id,
            path: path.to_string(),
            sha256: sha256.to_string(),
        };
        let response = self
            .authorize(self.http.post(&self.url("commit")))
            .header(BASE_HEADER, base.unwrap_or("none"))
            .no_timeout()
            .json(&commit)
            .send()
            .await?;
        Ok((conditional(response, "committing an upload").await?, true))
    }

    /// `PUT dirs/{path}`.
    pub async fn mkdir(&self, path: &SyncPath) -> Result<ManifestEntry, SyncError> {
        let response = self
            .authorize(self.http.put(&self.path_url("dirs", path)))
            .send()
            .await?;
        let response = check(response, "making a directory").await?;
        Ok(response.json().await?)
    }

    /// `POST rename` from `from` to `to`; the entry at `to`.
    pub async fn rename(&self, from: &SyncPath, to: &SyncPath) -> Result<ManifestEntry, SyncError> {
        let request = RenameRequest {
            from: from.to_string(),
            to: to.to_string(),
        };
        let response = self
            .authorize(self.http.post(&self.url("rename")))
            .json(&request)
            .send()
            .await?;
        let response = check(response, "renaming").await?;
        Ok(response.json().await?)
    }

    /// `DELETE files/{path}` based on `base` (a file's sha256; none for a directory).
    pub async fn delete(&self, path: &SyncPath, base: Option<&str>) -> Result<Outcome, SyncError> {
        let mut request = self.authorize(self.http.delete(&self.path_url("files", path)));
        if let Some(base) = base {
            request = request.header(BASE_HEADER, base);
        }
        let response = request.send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Outcome::Done(None));
        }
        match conditional(response, "deleting").await? {
            Outcome::Done(_) => Ok(Outcome::Done(None)),
            stale => Ok(stale),
        }
    }
}

/// Bytes a download moved over the network (a resumed one only the rest).
fn outcome_bytes(outcome: &DownloadOutcome) -> u64 {
    outcome.size.saturating_sub(outcome.resumed_from)
}

/// A 2xx answer as it is; anything else as [`SyncError::Server`] with the server's message.
async fn check(response: Response, what: &str) -> Result<Response, SyncError> {
    if response.is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    let (code, message) = match serde_json::from_str::<Body>(&body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (String::new(), body.chars().take(300).collect()),
    };
    Err(SyncError::Server {
        what: what.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}

/// A change answered with an entry (2xx), or `412` with the current entry.
async fn conditional(response: Response, what: &str) -> Result<Outcome, SyncError> {
    if response.status() == StatusCode::PRECONDITION_FAILED {
        let body = response.bytes().await?;
        return Ok(Outcome::Stale(serde_json::from_slice(&body).ok()));
    }
    let response = check(response, what).await?;
    let body = response.bytes().await?;
    Ok(Outcome::Done(serde_json::from_slice(&body).ok()))
}
