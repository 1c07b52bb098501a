//! Download to a file with progress and resume by Range (SPEC H8).
//!
//! Bytes go to `FILE.part`; the validators of the response (`ETag`, `Last-Modified`) and
//! its URL go to `FILE.part.json`. On success the part file is renamed to `FILE`. A resumed
//! download asks for `Range: bytes=N-` with `If-Range: <validator>`: the server answers
//! `206` when the resource is unchanged, and the full `200` when it changed, in which case
//! the part file is discarded and the download starts over. A weak ETag cannot be used in
//! `If-Range`, and without any validator a resume would risk splicing two versions, so
//! both start over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::fs;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Http;
use super::error::{ErrorCode, HttpError};
use super::progress::{Meter, Progress, ProgressFn};
use super::response::Response;

/// A download being configured; [`start`](Self::start) runs it. Made by [`Http::download`].
#[must_use = "a download does nothing until started"]
pub struct Download {
    http: Http,
    url: String,
    path: PathBuf,
    resume: bool,
    headers: Vec<(String, String)>,
    on_progress: Option<ProgressFn>,
    cancel: Option<CancellationToken>,
    idle_timeout: Option<Duration>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// The complete file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes that were already on disk and kept (0 for a fresh download).
    pub resumed_from: u64,
    /// A partial file existed but could not be continued (the resource changed, the
    /// server ignores ranges, or there was no validator) and was downloaded again.
    pub restarted: bool,
}

/// What `FILE.part.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct PartialMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

impl PartialMeta {
    /// The `If-Range` value: a strong ETag, else `Last-Modified`.
    fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// Where the bytes of `path` go until the download completes.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn meta_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part.json");
    PathBuf::from(name)
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> HttpError {
    let message = format!("cannot {what} {}", path.display());
    move |e| HttpError::io(message, e)
}

impl Download {
    pub(crate) fn new(http: Http, url: &str, path: PathBuf) -> Download {
        Download {
            http,
            url: url.to_string(),
            path,
            resume: false,
            headers: Vec::new(),
            on_progress: None,
            cancel: None,
            idle_timeout: Some(Duration::from_secs(30)),
        }
    }

    /// Where the bytes go until the download completes: `FILE.part`, next to the file.
    /// Its validators are kept in `FILE.part.json`.
    pub fn partial_path(&self) -> PathBuf {
        partial_path(&self.path)
    }

    /// Continue a partial download left by an earlier, interrupted one (`FILE.part`), when
    /// the server confirms the resource is unchanged. Default false: start over.
    pub fn resume(mut self, resume: bool) -> Download {
        self.resume = resume;
        self
    }

    /// Add a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Download {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Called after every chunk written (and once at the start) with the progress.
    pub fn on_progress(mut self, callback: impl FnMut(&Progress) + Send + 'static) -> Download {
        self.on_progress = Some(Box::new(callback));
        self
    }

    /// Stop when `token` is cancelled: `start` returns `CANCELLED` and the part file is
    /// kept for a later resume.
    pub fn cancel_token(mut self, token: CancellationToken) -> Download {
        self.cancel = Some(token);
        self
    }

    /// Fail with `TIMEOUT` when the response head, or the next chunk of data, takes longer
    /// than this. Default 30 s. There is no total timeout: a large file may take as long
    /// as it takes.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Download {
        self.idle_timeout = timeout;
        self
    }

    /// Run the download. Errors: those of a request, `HTTP_STATUS` for a 4xx/5xx answer,
    /// `IO_ERROR` for the file, `NETWORK_ERROR` when the body ended short (resumable).
    pub async fn start(mut self) -> Result<DownloadOutcome, HttpError> {
        let url = self.http.resolve(&self.url)?;
        let part = partial_path(&self.path);
        let meta_file = meta_path(&self.path);
        let mut previous: Option<(PartialMeta, u64)> = None;
        if self.resume {
            previous = read_partial(&meta_file, &part, url.as_str()).await;
        }
        let mut restarted = false;
        let (response, offset) = loop {
            let range = previous
                .as_ref()
                .and_then(|(meta, len)| meta.validator().map(|v| (v.to_string(), *len)))
                .filter(|(_, len)| *len > 0);
            if previous.is_some() && range.is_none() {
                restarted = true;
                previous = None;
            }
            let mut req = self
                .http
                .get(url.as_str())
                .no_cache()
                .no_timeout()
                // Ranges count bytes of the stored representation, not of a compressed one.
                .header("accept-encoding", "identity");
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            if let Some((validator, len)) = &range {
                req = req
                    .header("range", format!("bytes={len}-"))
                    .header("if-range", validator);
            }
            if let Some(token) = &self.cancel {
                req = req.cancel_token(token.clone());
            }
            let response = match self.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, req.send()).await.map_err(|_| {
                    HttpError::timeout(format!("no response within {} s", idle.as_secs_f64()))
                        .with_url(&url)
                })??,
                None => req.send().await?,
            };
            let status = response.status();
            let Some((_, len)) = range else {
                break (response.error_for_status().await?, 0);
            };
            let resumable = status == StatusCode::PARTIAL_CONTENT
                && response
                    .header("content-range")
                    .and_then(parse_content_range)
                    .is_some_and(|(start, _)| start == len);
            if resumable {
                break (response, len);
            }
            let complete = status == StatusCode::RANGE_NOT_SATISFIABLE
                && previous.as_ref().and_then(|(m, _)| m.total) == Some(len);
            if complete {
                return self.finish(&part, &meta_file, len, len).await;
            }
            if status.is_success() && status != StatusCode::PARTIAL_CONTENT {
                // The resource changed (If-Range failed) or ranges are not supported.
                restarted = true;
                break (response, 0);
            }
            if !matches!(
                status,
                StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE
            ) {
                return Err(match response.error_for_status().await {
                    Err(e) => e,
                    Ok(r) => {
                        HttpError::http_status(r.status(), &url, "unexpected answer to a download")
                    }
                });
            }
            // A range we cannot use (416, wrong offset): ask again for everything.
            restarted = true;
            previous = None;
        };

        let (mut file, total) = if offset > 0 {
            let total = response
                .header("content-range")
                .and_then(parse_content_range)
                .and_then(|(_, t)| t)
                .or_else(|| response.content_length().map(|n| n + offset));
            let file = fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .await
                .map_err(io_err("open", &part))?;
            (file, total)
        } else {
            let total = response.content_length();
            let meta = PartialMeta {
                url: url.to_string(),
                etag: response.header("etag").map(str::to_string),
                last_modified: response.header("last-modified").map(str::to_string),
                total,
            };
            let json = serde_json::to_vec(&meta).unwrap_or_default();
            fs::write(&meta_file, json)
                .await
                .map_err(io_err("write", &meta_file))?;
            let file = fs::File::create(&part)
                .await
                .map_err(io_err("create", &part))?;
            (file, total)
        };

        let copied = self
            .copy_body(response, &mut file, &part, offset, total)
            .await;
        let flushed = file.flush().await.map_err(io_err("write", &part));
        let loaded = copied?;
        flushed?;
        drop(file);
        if let Some(total) = total.filter(|t| *t != loaded) {
            return Err(HttpError::new(
                ErrorCode::NetworkError,
                format!(
                    "the connection ended after {loaded} of {total} bytes; download again with \
                     resume to continue"
                ),
            )
            .with_url(&url));
        }
        let mut outcome = self.finish(&part, &meta_file, loaded, offset).await?;
        outcome.restarted = restarted;
        Ok(outcome)
    }

    /// Write the body after `offset`; returns the size of the part file.
    async fn copy_body(
        &mut self,
        response: Response,
        file: &mut fs::File,
        part: &Path,
        offset: u64,
        total: Option<u64>,
    ) -> Result<u64, HttpError> {
        let mut meter = Meter::new(offset, total, Instant::now());
        if let Some(cb) = &mut self.on_progress {
            cb(&meter.progress(Instant::now()));
        }
        let mut body = response.stream();
        let mut loaded = offset;
        loop {
            let next = match self.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, body.next()).await.map_err(|_| {
                    HttpError::timeout(format!("no data for {} s", idle.as_secs_f64()))
                })?,
                None => body.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(io_err("write", part))?;
            loaded += chunk.len() as u64;
            let p = meter.add(chunk.len() as u64, Instant::now());
            if let Some(cb) = &mut self.on_progress {
                cb(&p);
            }
            if self
                .cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                return Err(HttpError::cancelled());
            }
        }
        Ok(loaded)
    }

    async fn finish(
        &mut self,
        part: &Path,
        meta_file: &Path,
        size: u64,
        resumed_from: u64,
    ) -> Result<DownloadOutcome, HttpError> {
        fs::rename(part, &self.path)
            .await
            .map_err(io_err("rename the part file to", &self.path))?;
        let _ = fs::remove_file(meta_file).await;
        Ok(DownloadOutcome {
            path: self.path.clone(),
            size,
            resumed_from,
            restarted: false,
        })
    }
}

/// The metadata and size of a partial download of `url`, when both exist and match.
async fn read_partial(meta_file: &Path, part: &Path, url: &str) -> Option<(PartialMeta, u64)> {
    let meta: PartialMeta = serde_json::from_slice(&fs::read(meta_file).await.ok()?).ok()?;
    let len = fs::metadata(part).await.ok()?.len();
    (meta.url == url).then_some((meta, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn validator_prefers_strong_etag() {
        let meta = |etag: Option<&str>, lm: Option<&str>| PartialMeta {
            url: String::new(),
            etag: etag.map(str::to_string),
            last_modified: lm.map(str::to_string),
            total: None,
        };
        assert_eq!(meta(Some("\"a\""), Some("d")).validator(), Some("\"a\""));
        assert_eq!(meta(Some("W/\"a\""), Some("d")).validator(), Some("d"));
        assert_eq!(meta(Some("W/\"a\""), None).validator(), None);
    }

    #[test]
    fn part_paths_sit_next_to_the_file() {
        let p = Path::new("/tmp/x/file.bin");
        assert_eq!(partial_path(p), Path::new("/tmp/x/file.bin.part"));
        assert_eq!(meta_path(p), Path::new("/tmp/x/file.bin.part.json"));
    }
}
