//! `Upload`: resumable file uploads over tus 1.0 (SPEC U1–U5), or one multipart request
//! for servers without tus (H10).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::http::HttpError> {
//! use ferry_client::http::Http;
//! use ferry_client::upload::Upload;
//!
//! let http = Http::new()?;
//! let done = Upload::tus(&http, "http://127.0.0.1:8080/files/", "big.iso")
//!     .chunk_size(8 << 20)
//!     .resume_store("uploads.json")
//!     .on_progress(|p| eprintln!("{:?}%", p.percentage))
//!     .start()
//!     .await?;
//! println!("{} ({} bytes, resumed from {})", done.url, done.size, done.resumed_from);
//! # Ok(()) }
//! ```
//!
//! How a tus upload goes: the file's fingerprint (path, size, modification time, endpoint)
//! is looked up in the resume store; a known upload URL is asked for its offset (`HEAD`),
//! otherwise the upload is created (`POST`) and its URL stored. Then one `PATCH` per
//! chunk. A failed chunk (broken connection, 5xx, 409/423) waits a backoff delay
//! (`ferry_proto::reconnect::Backoff`), asks the server for the offset again and goes on
//! from there. When the upload is complete its entry leaves the store. A new process with
//! the same store resumes where the last one stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use bytes::Bytes;
use ferry_proto::reconnect::Backoff;
use ferry_proto::tus::{self, ChecksumAlgorithm};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::http::progress::Meter;
use crate::http::{ErrorCode, Http, HttpError, Progress, RetryPolicy};

/// Default chunk size: 8 MiB, one `PATCH` each (memory per upload is one chunk).
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;

/// Protocol of an [`Upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// tus 1.0: resumable, chunked.
    Tus,
    /// One `multipart/form-data` POST (field `file`): for servers without tus.
    Multipart,
}

/// Pause, resume or cancel a running [`Upload`] from elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UploadControl {
    paused: watch::Sender<bool>,
    cancel: CancellationToken,
}

impl Default for UploadControl {
    fn default() -> Self {
        UploadControl {
            paused: watch::channel(false).0,
            cancel: CancellationToken::new(),
        }
    }
}

impl UploadControl {
    /// A new control.
    pub fn new() -> UploadControl {
        UploadControl::default()
    }
    /// Stop sending after the chunk in flight, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }
    /// Go on after a [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
    /// Stop now: the request in flight is dropped and `start` returns `CANCELLED`. The
    /// resume store keeps the upload, so a later `start` continues it.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    /// The upload's URL (tus), or the multipart endpoint's answer URL.
    pub url: String,
    /// Bytes in the file.
    pub size: u64,
    /// Bytes the server already had when this run started (0 for a fresh upload).
    pub resumed_from: u64,
    /// The response body of a multipart upload (empty for tus).
    pub response: String,
}

type ProgressFn = Box<dyn FnMut(&Progress) + Send + 'static>;

/// One file upload; configure, then [`start`](Self::start).
#[must_use = "an upload does nothing until started"]
pub struct Upload {
    http: Http,
    endpoint: String,
    path: PathBuf,
    mode: UploadMode,
    chunk_size: usize,
    store: Option<PathBuf>,
    resume: bool,
    metadata: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    checksum: bool,
    backoff: Backoff,
    control: UploadControl,
    // A Mutex so that `Upload` is Sync (its future is Send) with a callback that is Send only.
    progress: std::sync::Mutex<Option<ProgressFn>>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> HttpError {
    let message = format!("cannot {what} {}", path.display());
    move |e| HttpError::io(message, e)
}

fn unix_millis(t: std::time::SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Upload {
    /// A tus upload of `path` to the creation `endpoint` (e.g. `http://h/files/`).
    pub fn tus(http: &Http, endpoint: &str, path: impl Into<PathBuf>) -> Upload {
        Upload::new(http, endpoint, path.into(), UploadMode::Tus)
    }

    /// A multipart upload of `path` to `endpoint` (field `file`).
    pub fn multipart(http: &Http, endpoint: &str, path: impl Into<PathBuf>) -> Upload {
        Upload::new(http, endpoint, path.into(), UploadMode::Multipart)
    }

    fn new(http: &Http, endpoint: &str, path: PathBuf, mode: UploadMode) -> Upload {
        Upload {
            http: http.clone(),
            endpoint: endpoint.to_string(),
            path,
            mode,
            chunk_size: DEFAULT_CHUNK_SIZE,
            store: None,
            resume: true,
            metadata: Vec::new(),
            headers: Vec::new(),
            checksum: false,
            backoff: Backoff {
                max_attempts: Some(8),
                ..Backoff::default()
            },
            control: UploadControl::default(),
            progress: std::sync::Mutex::new(None),
        }
    }

    /// Bytes per `PATCH` (at least 1). Default [`DEFAULT_CHUNK_SIZE`].
    pub fn chunk_size(mut self, bytes: usize) -> Upload {
        self.chunk_size = bytes.max(1);
        self
    }

    /// A JSON file mapping file fingerprints to upload URLs, so another process resumes
    /// the upload (U5). Default none: every run starts a new upload.
    pub fn resume_store(mut self, path: impl Into<PathBuf>) -> Upload {
        self.store = Some(path.into());
        self
    }

    /// Whether to look the file up in the resume store (default true). With `false` a new
    /// upload is created, but still recorded, so a later run can resume it.
    pub fn resume(mut self, resume: bool) -> Upload {
        self.resume = resume;
        self
    }

    /// Extra `Upload-Metadata` (`filename` and `filetype` are sent already).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Upload {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// A header sent with every request (e.g. `Authorization`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Upload {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Send `Upload-Checksum: sha256 ...` with each chunk (the server must support the
    /// checksum extension). Default off.
    pub fn checksum(mut self, on: bool) -> Upload {
        self.checksum = on;
        self
    }

    /// Retry policy for failed chunks. Default: 500 ms doubling to 30 s, 8 attempts in a
    /// row (a successful chunk starts the count again).
    pub fn backoff(mut self, backoff: Backoff) -> Upload {
        self.backoff = backoff;
        self
    }

    /// Pause, resume and cancel through this control.
    pub fn control(mut self, control: UploadControl) -> Upload {
        self.control = control;
        self
    }

    /// Called after every chunk with {loaded, total, percentage, speed}.
    pub fn on_progress(mut self, callback: impl FnMut(&Progress) + Send + 'static) -> Upload {
        self.progress = std::sync::Mutex::new(Some(Box::new(callback)));
        self
    }

    /// Run the upload to the end.
    ///
    /// Errors: `IO_ERROR` (the file), `HTTP_STATUS` (the server refused: 4xx, or 5xx after
    /// the retries), `CONNECTION_ERROR` / `NETWORK_ERROR` / `TIMEOUT` after the retries,
    /// `CANCELLED`, `DECODE_ERROR` (a server reply without the tus headers it needs).
    pub async fn start(self) -> Result<UploadOutcome, HttpError> {
        let cancel = self.control.cancel.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(HttpError::cancelled()),
            r = self.run() => r,
        }
    }

    async fn run(self) -> Result<UploadOutcome, HttpError> {
        match self.mode {
            UploadMode::Tus => self.run_tus().await,
            UploadMode::Multipart => self.run_multipart().await,
        }
    }

    async fn run_multipart(mut self) -> Result<UploadOutcome, HttpError> {
        let size = tokio::fs::metadata(&self.path)
            .await
            .map_err(io_err("read", &self.path))?
            .len();
        let mut request = self.http.multipart(&self.endpoint).file("file", &self.path);
        for (n, v) in &self.headers {
            request = request.header(n.clone(), v.clone());
        }
        let callback = self
            .progress
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut progress) = callback {
            request = request.on_progress(move |p| progress(p));
        }
        let response = request
            .cancel_token(self.control.cancel.clone())
            .send()
            .await?
            .error_for_status()
            .await?;
        let url = response.url().to_string();
        Ok(UploadOutcome {
            url,
            size,
            resumed_from: 0,
            response: response.text().await?,
        })
    }

    fn request(&self, method: http::Method, url: &str) -> crate::http::RequestBuilder {
        let mut r = self
            .http
            .request(method, url)
            .header("Tus-Resumable", tus::TUS_VERSION)
            .retry(RetryPolicy::none())
            .no_cache()
            .cancel_token(self.control.cancel.clone());
        for (n, v) in &self.headers {
            r = r.header(n, v);
        }
        r
    }

    async fn fingerprint(&self, size: u64) -> Result<String, HttpError> {
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(io_err("read", &self.path))?;
        let canonical = tokio::fs::canonicalize(&self.path)
            .await
            .map_err(io_err("read", &self.path))?;
        let modified = meta.modified().map(unix_millis).unwrap_or(0);
        let mut h = Sha256::new();
        h.update(
            format!(
                "{}\n{size}\n{modified}\n{}",
                canonical.display(),
                self.endpoint
            )
            .as_bytes(),
        );
        Ok(format!("{:x}", h.finalize()))
    }

    /// The server's offset for `url`, or `None` when the upload is gone.
    async fn offset_of(&self, url: &str, size: u64) -> Result<Option<u64>, HttpError> {
        let response = self.request(http::Method::HEAD, url).send().await?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN => return Ok(None),
            s if !s.is_success() => {
                response.error_for_status().await?;
                return Ok(None);
            }
            _ => {}
        }
        if let Some(length) = response.header("upload-length")
            && tus::parse_u64("Upload-Length", length).ok() != Some(size)
        {
            return Ok(None);
        }
        let offset = response
            .header("upload-offset")
            .and_then(|v| tus::parse_u64("Upload-Offset", v).ok())
            .ok_or_else(|| decode("HEAD response without a valid Upload-Offset"))?;
        Ok(Some(offset))
    }

    async fn create(&self, size: u64) -> Result<String, HttpError> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let filetype = mime_guess::from_path(&self.path)
            .first_or_octet_stream()
            .essence_str()
            .to_string();
        let mut pairs: Vec<(&str, &[u8])> = vec![
            ("filename", name.as_bytes()),
            ("filetype", filetype.as_bytes()),
        ];
        for (k, v) in &self.metadata {
            pairs.push((k.as_str(), v.as_bytes()));
        }
        let response = self
            .request(http::Method::POST, &self.endpoint)
            .header("Upload-Length", size.to_string())
            .header("Upload-Metadata", tus::encode_metadata(pairs))
            .send()
            .await?
            .error_for_status()
            .await?;
        let location = response
            .header("location")
            .ok_or_else(|| decode("creation response without Location"))?;
        let base = self.http.resolve(&self.endpoint)?;
        let url = base
            .join(location)
            .map_err(|e| decode(&format!("invalid Location {location:?}: {e}")))?;
        Ok(url.to_string())
    }

    async fn run_tus(mut self) -> Result<UploadOutcome, HttpError> {
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(io_err("open", &self.path))?;
        let size = file
            .metadata()
            .await
            .map_err(io_err("read", &self.path))?
            .len();
        let fingerprint = self.fingerprint(size).await?;
        let store = self.store.clone().map(ResumeStore::new);
        let known = match &store {
            Some(s) if self.resume => s.get(&fingerprint).await,
            _ => None,
        };
        let mut found = None;
        if let Some(url) = known {
            match self.offset_of(&url, size).await? {
                Some(offset) => found = Some((url, offset)),
                None => tracing::debug!(%url, "stored upload is gone; starting again"),
            }
        }
        let (url, mut offset) = match found {
            Some(v) => v,
            None => {
                let url = self.create(size).await?;
                if let Some(s) = &store {
                    s.put(&fingerprint, Some(&url)).await?;
                }
                (url, 0)
            }
        };
        let resumed_from = offset;
        let mut meter = Meter::new(offset, Some(size), Instant::now());
        let mut progress = self
            .progress
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(p) = progress.as_mut() {
            p(&meter.progress(Instant::now()));
        }
        let mut paused = self.control.paused.subscribe();
        let mut failures = 0u32;
        let mut buf = vec![
            0u8;
            self.chunk_size
                .min(usize::try_from(size).unwrap_or(usize::MAX))
                .max(1)
        ];
        while offset < size {
            // Pause between chunks.
            while *paused.borrow_and_update() {
                if paused.changed().await.is_err() {
                    break;
                }
            }
            let n = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = buf.get_mut(..n).unwrap_or_default();
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io_err("read", &self.path))?;
            file.read_exact(chunk)
                .await
                .map_err(io_err("read", &self.path))?;
            let mut request = self
                .request(http::Method::PATCH, &url)
                .header("Upload-Offset", offset.to_string())
                .header("Content-Type", tus::OFFSET_CONTENT_TYPE)
                .no_timeout();
            if self.checksum {
                let digest = Sha256::digest(&*chunk);
                request = request.header(
                    "Upload-Checksum",
                    tus::Checksum::header_value(ChecksumAlgorithm::Sha256, &digest),
                );
            }
            let outcome = request.bytes(Bytes::copy_from_slice(chunk)).send().await;
            let retryable = match outcome {
                Ok(r) if r.status() == StatusCode::NO_CONTENT || r.status().is_success() => {
                    let next = r
                        .header("upload-offset")
                        .and_then(|v| tus::parse_u64("Upload-Offset", v).ok())
                        .ok_or_else(|| decode("PATCH response without a valid Upload-Offset"))?;
                    if next > offset + n as u64 || next < offset {
                        // The server's copy no longer matches what this file sent: going
                        // on would leave it corrupt, and resuming it later too.
                        if let Some(s) = &store {
                            s.put(&fingerprint, None).await?;
                        }
                        return Err(decode(&format!(
                            "the server answered a PATCH of bytes {offset}..{} with offset {next}; its copy of this upload is inconsistent, so it is forgotten: upload the file again",
                            offset + n as u64
                        )));
                    }
                    let now = Instant::now();
                    let p = meter.add(next.saturating_sub(offset), now);
                    offset = next;
                    failures = 0;
                    if let Some(cb) = progress.as_mut() {
                        cb(&p);
                    }
                    continue;
                }
                Ok(r) => {
                    let s = r.status();
                    let again =
                        s.is_server_error() || matches!(s.as_u16(), 408 | 409 | 423 | 429 | 460);
                    if !again {
                        if matches!(s.as_u16(), 404 | 410)
                            && let Some(st) = &store
                        {
                            st.put(&fingerprint, None).await?;
                        }
                        r.error_for_status().await?;
                    }
                    HttpError::new(ErrorCode::HttpStatus, format!("PATCH answered {s}"))
                }
                Err(e) if e.is_cancelled() => return Err(e),
                Err(e) if e.is_network() || e.is_connect() || e.is_timeout() => e,
                Err(e) => return Err(e),
            };
            failures += 1;
            if self.backoff.max_attempts.is_some_and(|max| failures > max) {
                return Err(retryable);
            }
            let delay = self.backoff.delay(failures, rand::random());
            tracing::debug!(%url, failures, ?delay, error = %retryable, "chunk failed; retrying");
            tokio::time::sleep(delay).await;
            // Ask where the server stands: part of the chunk may have arrived.
            match self.offset_of(&url, size).await {
                Ok(Some(o)) => {
                    let now = Instant::now();
                    if o > offset {
                        meter.add(o - offset, now);
                    }
                    offset = o;
                }
                Ok(None) => {
                    return Err(HttpError::new(
                        ErrorCode::HttpStatus,
                        format!("the upload {url} is gone from the server"),
                    ));
                }
                Err(e) if e.is_cancelled() => return Err(e),
                Err(_) => {}
            }
        }
        if let Some(s) = &store {
            s.put(&fingerprint, None).await?;
        }
        Ok(UploadOutcome {
            url,
            size,
            resumed_from,
            response: String::new(),
        })
    }
}

fn decode(message: &str) -> HttpError {
    HttpError::new(ErrorCode::DecodeError, message.to_string())
}

/// The fingerprint → upload URL map, a small JSON file replaced atomically.
struct ResumeStore {
    path: PathBuf,
}

impl ResumeStore {
    fn new(path: PathBuf) -> ResumeStore {
        ResumeStore { path }
    }

    async fn load(&self) -> BTreeMap<String, String> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        }
    }

    async fn get(&self, fingerprint: &str) -> Option<String> {
        self.load().await.remove(fingerprint)
    }

    async fn put(&self, fingerprint: &str, url: Option<&str>) -> Result<(), HttpError> {
        let mut map = self.load().await;
        match url {
            Some(u) => map.insert(fingerprint.to_string(), u.to_string()),
            None => map.remove(fingerprint),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io_err("create", dir))?;
        }
        let json = serde_json::to_vec_pretty(&map)
            .map_err(|e| HttpError::new(ErrorCode::DecodeError, e.to_string()))?;
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        tokio::fs::write(&tmp, json)
            .await
            .map_err(io_err("write", &tmp))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(io_err("write", &self.path))
    }
}

/// The default resume store: `$XDG_DATA_HOME/ferry/uploads.json`, else
/// `$HOME/.local/share/ferry/uploads.json`.
pub fn default_resume_store() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("ferry").join("uploads.json"))
}
