//! The upload store behind `/files/` (tus) and `/upload` (multipart): data streamed to
//! `DIR/ID.bin`, state in `DIR/ID.json`.
//!
//! What survives a restart: the `.json` file holds everything but the offset, and the
//! offset is the length of the `.bin` file, so bytes written before a crash or a restart
//! are counted and nothing has to be replayed. The state file is replaced atomically
//! (write to `ID.json.tmp`, rename).
//!
//! Invariants: a path is only ever built from an ID that passed
//! [`ferry_proto::tus::valid_upload_id`] (made here from random bits, or checked before
//! lookup), so no client input reaches the file system; one `PATCH` at a time per upload
//! (a second one is refused with 423, never interleaved); memory per upload is bounded by
//! the write buffer, whatever the upload's size.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::tus::{self, Checksum, ChecksumAlgorithm, TusError};
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::UploadsConfig;

/// Buffer between the request body and the file: big enough that a write is one
/// system call per MiB, small enough that 1,000 parallel uploads stay at 1 GiB.
/// Received buffers queued for the disk writer of one PATCH (each at most hyper's read
/// buffer, a few hundred KiB).
const WRITE_QUEUE: usize = 32;

/// An upload's state, as persisted in `ID.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadInfo {
    /// The upload ID (`[A-Za-z0-9_-]`, made by the server).
    pub id: String,
    /// The owner (the token's user, `api` for the API key, `anonymous`).
    pub user: String,
    /// Total size; `None` while the length is deferred.
    pub length: Option<u64>,
    /// The `Upload-Metadata` header as received, echoed on `HEAD`.
    pub metadata: Option<String>,
    /// The file name from metadata (`filename` or `name`), checked.
    pub name: Option<String>,
    /// The media type from metadata (`filetype`, `type` or `contentType`).
    pub filetype: Option<String>,
    /// Created, seconds since the Unix epoch.
    pub created_at: u64,
    /// When an unfinished upload expires, seconds since the Unix epoch.
    pub expires_at: u64,
    /// A part of a later concatenation (`Upload-Concat: partial`).
    pub partial: bool,
    /// For a final concatenation: the IDs of its parts.
    pub parts: Vec<String>,
    /// Hex SHA-256 of the data, once the upload is complete.
    pub sha256: Option<String>,
}

impl UploadInfo {
    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.sha256.is_some()
    }
}

/// Why an upload operation failed: an HTTP status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

impl UploadError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        UploadError {
            status,
            message: message.into(),
        }
    }
    fn not_found() -> Self {
        UploadError::new(404, "no such upload")
    }
    fn io(what: &str, e: std::io::Error) -> Self {
        tracing::error!(error = %e, "upload store: {what}");
        UploadError::new(500, format!("storage error while {what}"))
    }
}

impl From<TusError> for UploadError {
    fn from(e: TusError) -> Self {
        UploadError::new(e.status(), e.to_string())
    }
}

/// Who asks: a user sees their own uploads; the API key (`admin`) sees all.
#[derive(Debug, Clone)]
pub struct Access {
    /// The user.
    pub user: String,
    /// Holds the API key.
    pub admin: bool,
}

/// What a new upload is.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    /// `Upload-Length`, or `None` for a deferred length.
    pub length: Option<u64>,
    /// `Upload-Metadata`, unparsed.
    pub metadata: Option<String>,
    /// `Upload-Concat: partial`.
    pub partial: bool,
}

struct Entry {
    info: UploadInfo,
    offset: u64,
    busy: bool,
    /// SHA-256 of `[0, offset)`, kept while bytes arrive in order since this process
    /// started, so completion need not read the file again.
    hash: Option<Sha256>,
}

/// The store. Cheap to share (`Arc`).
pub struct UploadStore {
    dir: PathBuf,
    config: UploadsConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

/// The result of one `PATCH`.
#[derive(Debug)]
pub struct PatchOutcome {
    /// The offset after the bytes written.
    pub offset: u64,
    /// The upload's state after the write; `is_complete()` when this write finished it.
    pub info: UploadInfo,
    /// Whether this write completed the upload (announce it).
    pub finished: bool,
}

fn data_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.bin"))
}

fn info_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn media_type_allowed(allowed: &[String], filetype: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(t) = filetype else { return false };
    let t = t
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix("/*") {
            Some(major) => t.split_once('/').is_some_and(|(m, _)| m == major),
            None => a == "*" || a == t,
        }
    })
}

impl UploadStore {
    /// Open the store in `config.dir` (or `data_dir/uploads`): reload every upload whose
    /// state file parses, with its offset taken from its data file.
    pub fn open(config: &UploadsConfig, data_dir: &Path) -> UploadStore {
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("uploads"));
        let mut entries = HashMap::new();
        if let Ok(list) = std::fs::read_dir(&dir) {
            for item in list.flatten() {
                let path = item.path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|id| tus::valid_upload_id(id))
                    .map(str::to_string)
                else {
                    continue;
                };
                let info = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<UploadInfo>(&b).ok())
                    .filter(|info| info.id == id);
                // symlink_metadata: a data file replaced by a symlink is not followed.
                let data = std::fs::symlink_metadata(data_path(&dir, &id)).ok();
                match (info, data) {
                    (Some(info), Some(meta)) if meta.is_file() => {
                        entries.insert(
                            id,
                            Entry {
                                info,
                                offset: meta.len(),
                                busy: false,
                                hash: None,
                            },
                        );
                    }
                    _ => tracing::warn!(%id, "upload store: skipping an unreadable upload"),
                }
            }
        }
        UploadStore {
            dir,
            config: config.clone(),
            entries: Mutex::new(entries),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UploadsConfig {
        &self.config
    }

    fn used_by(entries: &HashMap<String, Entry>, user: &str) -> u64 {
        entries
            .values()
            .filter(|e| e.info.user == user)
            .map(|e| e.info.length.unwrap_or(e.offset))
            .fold(0u64, u64::saturating_add)
    }

    fn check_quota(
        &self,
        entries: &HashMap<String, Entry>,
        user: &str,
        more: u64,
    ) -> Result<(), UploadError> {
        let quota = self.config.user_quota;
        if quota > 0 && Self::used_by(entries, user).saturating_add(more) > quota {
            return Err(UploadError::new(
                413,
                format!("upload quota of {quota} bytes for user {user:?} exceeded"),
            ));
        }
        Ok(())
    }

    async fn persist(&self, info: &UploadInfo) -> Result<(), UploadError> {
        let json = serde_json::to_vec_pretty(info)
            .map_err(|e| UploadError::new(500, format!("cannot encode upload state: {e}")))?;
        let tmp = self.dir.join(format!("{}.json.tmp", info.id));
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| UploadError::io("writing upload state", e))?;
        tokio::fs::rename(&tmp, info_path(&self.dir, &info.id))
            .await
            .map_err(|e| UploadError::io("writing upload state", e))
    }

    /// Create an upload (tus creation, or a multipart part): validate name, type, size
    /// and quota, create its empty data file and persist its state.
    pub async fn create(
        &self,
        access: &Access,
        new: NewUpload,
        now: u64,
    ) -> Result<UploadInfo, UploadError> {
        let pairs = match &new.metadata {
            Some(m) => tus::parse_metadata(m)?,
            None => Vec::new(),
        };
        let text = |keys: &[&str]| -> Result<Option<String>, UploadError> {
            let Some(v) = pairs
                .iter()
                .find(|p| keys.contains(&p.key.as_str()))
                .and_then(|p| p.value.clone())
            else {
                return Ok(None);
            };
            String::from_utf8(v)
                .map(Some)
                .map_err(|_| UploadError::new(400, "metadata value is not UTF-8"))
        };
        let name = text(&["filename", "name"])?;
        if let Some(n) = &name {
            tus::check_file_name(n).map_err(|e| UploadError::new(400, e.to_string()))?;
        }
        let filetype = text(&["filetype", "type", "contentType"])?;
        if !media_type_allowed(&self.config.allowed_types, filetype.as_deref()) {
            return Err(UploadError::new(
                415,
                format!(
                    "media type {:?} is not accepted; allowed: {}",
                    filetype.as_deref().unwrap_or("(none)"),
                    self.config.allowed_types.join(", ")
                ),
            ));
        }
        if let Some(length) = new.length {
            self.check_size(length)?;
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let info = UploadInfo {
            id: id.clone(),
            user: access.user.clone(),
            length: new.length,
            metadata: new.metadata,
            name,
            filetype,
            created_at: now,
            expires_at: now.saturating_add(self.config.expiration_secs),
            partial: new.partial,
            parts: Vec::new(),
            sha256: None,
        };
        {
            let mut entries = self.entries.lock();
            self.check_quota(&entries, &access.user, new.length.unwrap_or(0))?;
            // Reserve the ID (and the quota) before the files exist.
            entries.insert(
                id.clone(),
                Entry {
                    info: info.clone(),
                    offset: 0,
                    busy: true,
                    hash: Some(Sha256::new()),
                },
            );
        }
        let made = async {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| UploadError::io("creating the upload directory", e))?;
            tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(data_path(&self.dir, &id))
                .await
                .map_err(|e| UploadError::io("creating the data file", e))?;
            self.persist(&info).await
        }
        .await;
        let mut entries = self.entries.lock();
        match made {
            Ok(()) => {
                if let Some(e) = entries.get_mut(&id) {
                    e.busy = false;
                }
                Ok(info)
            }
            Err(e) => {
                entries.remove(&id);
                Err(e)
            }
        }
    }

    fn check_size(&self, length: u64) -> Result<(), UploadError> {
        if length > self.config.max_size {
            return Err(UploadError::new(
                413,
                format!(
                    "upload of {length} bytes is larger than the server's maximum of {} bytes",
                    self.config.max_size
                ),
            ));
        }
        Ok(())
    }

    fn visible<'a>(
        entries: &'a mut HashMap<String, Entry>,
        id: &str,
        access: &Access,
    ) -> Result<&'a mut Entry, UploadError> {
        if !tus::valid_upload_id(id) {
            return Err(UploadError::not_found());
        }
        match entries.get_mut(id) {
            Some(e) if access.admin || e.info.user == access.user => Ok(e),
            _ => Err(UploadError::not_found()),
        }
    }

    /// [`visible`](Self::visible), and not taken by a `PATCH` in progress (423 if it is):
    /// what a writer or a termination needs.
    fn idle<'a>(
        entries: &'a mut HashMap<String, Entry>,
        id: &str,
        access: &Access,
    ) -> Result<&'a mut Entry, UploadError> {
        let e = Self::visible(entries, id, access)?;
        if e.busy {
            return Err(UploadError::new(
                423,
                "another request is writing to this upload; retry when it has finished",
            ));
        }
        Ok(e)
    }

    /// An upload's state and offset (`HEAD`).
    pub fn head(&self, id: &str, access: &Access) -> Result<(UploadInfo, u64), UploadError> {
        let mut entries = self.entries.lock();
        let e = Self::visible(&mut entries, id, access)?;
        Ok((e.info.clone(), e.offset))
    }

    /// Take the upload for one `PATCH`; a second concurrent one gets 423. The guard
    /// releases it when dropped.
    ///
    /// A request at the wrong `offset` gets 409 without taking the upload, so it can
    /// never make a concurrent writer at the right offset fail with 423.
    pub fn begin_patch(
        self: &Arc<Self>,
        id: &str,
        access: &Access,
        offset: u64,
    ) -> Result<PatchGuard, UploadError> {
        let mut entries = self.entries.lock();
        let e = Self::idle(&mut entries, id, access)?;
        tus::check_offset(e.offset, offset)?;
        if !e.info.parts.is_empty() {
            return Err(UploadError::new(
                403,
                "a final concatenation cannot be patched",
            ));
        }
        e.busy = true;
        Ok(PatchGuard {
            store: self.clone(),
            id: id.to_string(),
            busy: Arc::new(Busy {
                store: self.clone(),
                id: id.to_string(),
            }),
        })
    }

    /// Remove an upload (tus termination). A busy upload gets 423.
    pub async fn delete(&self, id: &str, access: &Access) -> Result<(), UploadError> {
        {
            let mut entries = self.entries.lock();
            Self::idle(&mut entries, id, access)?;
            entries.remove(id);
        }
        self.remove_files(id).await;
        Ok(())
    }

    async fn remove_files(&self, id: &str) {
        for path in [data_path(&self.dir, id), info_path(&self.dir, id)] {
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove upload file");
            }
        }
    }

    /// Remove unfinished uploads whose expiry is before `now` (seconds since the Unix
    /// epoch). Returns the IDs removed.
    pub async fn sweep(&self, now: u64) -> Vec<String> {
        let expired: Vec<String> = {
            let mut entries = self.entries.lock();
            let ids: Vec<String> = entries
                .iter()
                .filter(|(_, e)| !e.busy && !e.info.is_complete() && e.info.expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                entries.remove(id);
            }
            ids
        };
        for id in &expired {
            self.remove_files(id).await;
            tracing::info!(%id, "removed an expired unfinished upload");
        }
        expired
    }

    /// A complete upload's state and data file, for a download.
    pub fn download(
        &self,
        id: &str,
        access: &Access,
    ) -> Result<(UploadInfo, PathBuf), UploadError> {
        let mut entries = self.entries.lock();
        let e = Self::visible(&mut entries, id, access)?;
        if !e.info.is_complete() {
            return Err(UploadError::new(
                409,
                "the upload is not complete yet; resume it before downloading",
            ));
        }
        Ok((e.info.clone(), data_path(&self.dir, id)))
    }

    /// Create a final upload by concatenating complete partial uploads (tus
    /// concatenation). The parts are kept; the result is complete at once.
    pub async fn concatenate(
        &self,
        access: &Access,
        part_ids: Vec<String>,
        metadata: Option<String>,
        now: u64,
    ) -> Result<UploadInfo, UploadError> {
        let mut total = 0u64;
        {
            let mut entries = self.entries.lock();
            for id in &part_ids {
                let e = Self::visible(&mut entries, id, access)
                    .map_err(|_| UploadError::new(400, format!("no such partial upload {id}")))?;
                if !e.info.partial || !e.info.is_complete() {
                    return Err(UploadError::new(
                        400,
                        format!("upload {id} is not a complete partial upload"),
                    ));
                }
                total = total.saturating_add(e.offset);
            }
        }
        self.check_size(total)?;
        let info = self
            .create(
                access,
                NewUpload {
                    length: Some(total),
                    metadata,
                    partial: false,
                },
                now,
            )
            .await?;
        match self.entries.lock().get_mut(&info.id) {
            Some(e) => e.busy = true,
            None => return Err(UploadError::not_found()),
        }
        let dir = self.dir.clone();
        let id = info.id.clone();
        let parts = part_ids.clone();
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .open(data_path(&dir, &id))?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            for part in &parts {
                let mut input = std::fs::File::open(data_path(&dir, part))?;
                loop {
                    let n = input.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    let chunk = buf.get(..n).unwrap_or_default();
                    hash.update(chunk);
                    std::io::Write::write_all(&mut out, chunk)?;
                }
            }
            Ok(format!("{:x}", hash.finalize()))
        })
        .await
        .map_err(|e| UploadError::new(500, format!("concatenation task failed: {e}")));
        let sha = match copied {
            Ok(Ok(sha)) => sha,
            Ok(Err(e)) => {
                self.entries.lock().remove(&info.id);
                self.remove_files(&info.id).await;
                return Err(UploadError::io("concatenating", e));
            }
            Err(e) => {
                self.entries.lock().remove(&info.id);
                self.remove_files(&info.id).await;
                return Err(e);
            }
        };
        let mut info = info;
        info.parts = part_ids;
        info.sha256 = Some(sha);
        self.persist(&info).await?;
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(&info.id) {
            e.info = info.clone();
            e.offset = total;
            e.busy = false;
            e.hash = None;
        }
        Ok(info)
    }
}

/// One `PATCH` in progress; the upload is free again when this is dropped and no
/// write of it is still landing on disk.
pub struct PatchGuard {
    store: Arc<UploadStore>,
    id: String,
    busy: Arc<Busy>,
}

/// Holds an upload busy. The guard has one; the disk writer of a [`PatchGuard::write`]
/// has another, so a request cancelled mid-body (its client gone, its future dropped)
/// frees the upload only once its writer has stopped: a new `PATCH` never writes beside
/// an old one.
struct Busy {
    store: Arc<UploadStore>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.store.entries.lock().get_mut(&self.id) {
            e.busy = false;
        }
    }
}

enum ChunkHasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ChunkHasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            ChunkHasher::Sha1(h) => h.update(data),
            ChunkHasher::Sha256(h) => h.update(data),
        }
    }
    fn finish(self) -> Vec<u8> {
        match self {
            ChunkHasher::Sha1(h) => h.finalize().to_vec(),
            ChunkHasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

impl PatchGuard {
    /// Set a deferred length (`Upload-Length` on a `PATCH`).
    pub async fn set_length(&mut self, length: u64) -> Result<(), UploadError> {
        self.store.check_size(length)?;
        let info = {
            let mut entries = self.store.entries.lock();
            let used = UploadStore::used_by(&entries, &self.store_user(&entries));
            let e = entries
                .get_mut(&self.id)
                .ok_or_else(UploadError::not_found)?;
            match e.info.length {
                Some(l) if l == length => return Ok(()),
                Some(_) => {
                    return Err(UploadError::new(400, "Upload-Length is already set"));
                }
                None if length < e.offset => {
                    return Err(UploadError::new(
                        400,
                        "Upload-Length is smaller than the bytes already received",
                    ));
                }
                None => {}
            }
            let quota = self.store.config.user_quota;
            if quota > 0 && used.saturating_sub(e.offset).saturating_add(length) > quota {
                return Err(UploadError::new(413, "upload quota exceeded"));
            }
            e.info.length = Some(length);
            e.info.clone()
        };
        self.store.persist(&info).await
    }

    fn store_user(&self, entries: &HashMap<String, Entry>) -> String {
        entries
            .get(&self.id)
            .map(|e| e.info.user.clone())
            .unwrap_or_default()
    }

    /// Append `body` at the upload's offset (the one [`UploadStore::begin_patch`] checked:
    /// the guard holds the upload, so it cannot have moved), verifying `checksum` when given (on a mismatch the bytes are discarded: 460). A body that
    /// breaks off keeps the bytes received (without a checksum), so the client resumes
    /// from there. Bytes past the length (or past the size limit or the quota for a
    /// deferred length) are refused with 413.
    pub async fn write<S, E>(
        &mut self,
        body: S,
        checksum: Option<Checksum>,
        now: u64,
    ) -> Result<PatchOutcome, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let (start, limit, whole) = {
            let mut entries = self.store.entries.lock();
            let user = self.store_user(&entries);
            let used = UploadStore::used_by(&entries, &user);
            let e = entries
                .get_mut(&self.id)
                .ok_or_else(UploadError::not_found)?;
            let limit = match e.info.length {
                Some(l) => l,
                None => {
                    let quota = self.store.config.user_quota;
                    let room = if quota > 0 {
                        quota.saturating_sub(used).saturating_add(e.offset)
                    } else {
                        u64::MAX
                    };
                    self.store.config.max_size.min(room)
                }
            };
            (e.offset, limit, e.hash.take())
        };
        let before = whole.clone();
        let path = data_path(&self.store.dir, &self.id);
        let chunk_hash = checksum.as_ref().map(|c| match c.algorithm {
            ChecksumAlgorithm::Sha1 => ChunkHasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => ChunkHasher::Sha256(Sha256::new()),
        });
        // The disk and the hashes are fed on a blocking thread while this task reads the
        // network: the received buffers are written as they are (no copy into a second
        // buffer), and hashing runs beside the receive instead of in its way.
        let (chunks, received) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let file_path = path.clone();
        let busy = self.busy.clone();
        let sink = tokio::task::spawn_blocking(move || {
            let written = write_chunks(&file_path, start, received, chunk_hash, whole);
            drop(busy);
            written
        });
        let mut sent = 0u64;
        let mut failure: Option<UploadError> = None;
        let mut body = std::pin::pin!(body);
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(id = %self.id, error = %e, "upload body broke off");
                    failure = Some(UploadError::new(
                        400,
                        format!("request body broke off: {e}"),
                    ));
                    break;
                }
            };
            let n = chunk.len() as u64;
            if start.saturating_add(sent).saturating_add(n) > limit {
                failure = Some(UploadError::new(
                    413,
                    format!(
                        "more bytes than the upload's length or the server's limit of {limit} bytes"
                    ),
                ));
                break;
            }
            if chunks.send(chunk).await.is_err() {
                // The writer stopped on an I/O error; it reports it below.
                break;
            }
            sent += n;
        }
        drop(chunks);
        let written_out = match sink
            .await
            .map_err(|e| UploadError::io("writing upload data", std::io::Error::other(e)))?
        {
            Ok(written) => written,
            Err(SinkError::Open(e)) => return Err(UploadError::io("opening the data file", e)),
            Err(SinkError::Short(on_disk)) => {
                // Something outside the hub shortened the file: what it holds is the truth.
                if let Some(e) = self.store.entries.lock().get_mut(&self.id) {
                    e.offset = on_disk;
                }
                return Err(UploadError::new(
                    409,
                    format!(
                        "the upload's data ends at byte {on_disk}, before {start}; ask for its offset again (HEAD) and resume from there"
                    ),
                ));
            }
        };
        let WrittenChunks {
            file,
            mut written,
            chunk_hash,
            mut whole,
            error,
        } = written_out;
        if let Some(e) = error {
            failure.get_or_insert(UploadError::io("writing upload data", e));
        }
        let file = tokio::fs::File::from_std(file);
        // A checksum covers the whole request: on a mismatch or a broken body, nothing of
        // it is kept.
        let mismatch = match (checksum, chunk_hash) {
            (Some(expected), Some(h)) => failure.is_some() || h.finish() != expected.digest,
            _ => false,
        };
        if mismatch {
            file.set_len(start)
                .await
                .map_err(|e| UploadError::io("discarding a bad chunk", e))?;
            written = 0;
            whole = before;
            failure = Some(failure.unwrap_or_else(|| TusError::ChecksumMismatch.into()));
        } else {
            // What the file holds is the truth, whatever the buffer managed to write.
            let len = file
                .metadata()
                .await
                .map_err(|e| UploadError::io("reading the data file", e))?
                .len();
            if len != start + written {
                whole = None;
                written = len.saturating_sub(start);
            }
        }
        drop(file);
        let offset = start + written;
        let (mut info, finished) = {
            let mut entries = self.store.entries.lock();
            let e = entries
                .get_mut(&self.id)
                .ok_or_else(UploadError::not_found)?;
            e.offset = offset;
            e.info.expires_at = now.saturating_add(self.store.config.expiration_secs);
            let finished = e.info.length == Some(offset) && !e.info.is_complete();
            e.hash = if finished { None } else { whole.clone() };
            (e.info.clone(), finished)
        };
        if finished {
            let sha = match whole {
                Some(h) => format!("{:x}", h.finalize()),
                None => hash_file(path.clone()).await?,
            };
            info.sha256 = Some(sha);
            if let Some(e) = self.store.entries.lock().get_mut(&self.id) {
                e.info = info.clone();
            }
        }
        self.store.persist(&info).await?;
        if let Some(f) = failure {
            return Err(f);
        }
        Ok(PatchOutcome {
            offset,
            info,
            finished,
        })
    }
}

impl PatchGuard {
    /// End an upload of deferred length at its current offset (a multipart part that
    /// has been received whole): the length becomes the offset and the upload is
    /// complete.
    pub async fn complete_here(&mut self) -> Result<UploadInfo, UploadError> {
        let (mut info, offset, hash) = {
            let mut entries = self.store.entries.lock();
            let e = entries
                .get_mut(&self.id)
                .ok_or_else(UploadError::not_found)?;
            (e.info.clone(), e.offset, e.hash.take())
        };
        info.length = Some(offset);
        info.sha256 = Some(match hash {
            Some(h) => format!("{:x}", h.finalize()),
            None => hash_file(data_path(&self.store.dir, &self.id)).await?,
        });
        self.store.persist(&info).await?;
        if let Some(e) = self.store.entries.lock().get_mut(&self.id) {
            e.info = info.clone();
        }
        Ok(info)
    }
}

/// What [`write_chunks`] did.
struct WrittenChunks {
    file: std::fs::File,
    /// Bytes that reached the file.
    written: u64,
    chunk_hash: Option<ChunkHasher>,
    whole: Option<Sha256>,
    /// The write error that stopped it, if one did.
    error: Option<std::io::Error>,
}

/// Why [`write_chunks`] wrote nothing.
enum SinkError {
    /// The file could not be opened or positioned.
    Open(std::io::Error),
    /// The file holds only this many bytes, fewer than the upload's offset.
    Short(u64),
}

/// Write every buffer from `chunks` into the file at `path` from byte `start` (the
/// upload's confirmed offset), hashing them as they go; runs on a blocking thread.
/// Bytes past `start` were never confirmed to a client (a request cancelled before its
/// answer leaves such a tail) and are cut first: the client sends them again, and
/// appending after them would shift everything it sends.
fn write_chunks(
    path: &Path,
    start: u64,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
    mut chunk_hash: Option<ChunkHasher>,
    mut whole: Option<Sha256>,
) -> Result<WrittenChunks, SinkError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(SinkError::Open)?;
    let on_disk = file.metadata().map_err(SinkError::Open)?.len();
    if on_disk < start {
        return Err(SinkError::Short(on_disk));
    }
    file.set_len(start).map_err(SinkError::Open)?;
    file.seek(SeekFrom::Start(start)).map_err(SinkError::Open)?;
    let mut written = 0u64;
    let mut error = None;
    while let Some(chunk) = chunks.blocking_recv() {
        if let Some(h) = chunk_hash.as_mut() {
            h.update(&chunk);
        }
        if let Some(h) = whole.as_mut() {
            h.update(&chunk);
        }
        if let Err(e) = file.write_all(&chunk) {
            error = Some(e);
            break;
        }
        written += chunk.len() as u64;
    }
    Ok(WrittenChunks {
        file,
        written,
        chunk_hash,
        whole,
        error,
    })
}

async fn hash_file(path: PathBuf) -> Result<String, UploadError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = std::fs::File::open(&path)?;
        file.seek(SeekFrom::Start(0))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(buf.get(..n).unwrap_or_default());
        }
        Ok(format!("{:x}", hash.finalize()))
    })
    .await
    .map_err(|e| UploadError::new(500, format!("hash task failed: {e}")))?
    .map_err(|e| UploadError::io("hashing the upload", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn media_types_match_exactly_or_by_major_type() {
        let allowed = vec!["image/*".to_string(), "application/pdf".to_string()];
        assert!(media_type_allowed(&allowed, Some("image/png")));
        assert!(media_type_allowed(&allowed, Some("Application/PDF; x=y")));
        assert!(!media_type_allowed(&allowed, Some("text/plain")));
        assert!(!media_type_allowed(&allowed, Some("imagefoo/png")));
        assert!(!media_type_allowed(&allowed, None));
        assert!(media_type_allowed(&[], None));
    }

    /// A store in `dir` whose uploads expire after `expiration_secs`, and its user.
    fn store_in(dir: &Path, expiration_secs: u64) -> (Arc<UploadStore>, Access) {
        let config = UploadsConfig {
            dir: Some(dir.to_path_buf()),
            expiration_secs,
            ..UploadsConfig::default()
        };
        let me = Access {
            user: "u".into(),
            admin: false,
        };
        (Arc::new(UploadStore::open(&config, dir)), me)
    }

    /// A new upload of `length` bytes, created at time 100.
    async fn create(store: &Arc<UploadStore>, me: &Access, length: u64) -> UploadInfo {
        let new = NewUpload {
            length: Some(length),
            ..NewUpload::default()
        };
        store.create(me, new, 100).await.expect("create")
    }

    #[tokio::test]
    async fn sweep_removes_only_expired_unfinished_uploads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, me) = store_in(dir.path(), 10);
        let a = create(&store, &me, 3).await;
        let b = create(&store, &me, 1).await;
        let mut g = store.begin_patch(&b.id, &me, 0).expect("lock");
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        let done = g.write(body, None, 100).await.expect("write");
        assert!(done.finished);
        drop(g);
        assert!(store.sweep(109).await.is_empty());
        assert_eq!(store.sweep(110).await, vec![a.id.clone()]);
        assert!(!dir.path().join(format!("{}.bin", a.id)).exists());
        assert!(dir.path().join(format!("{}.bin", b.id)).exists());
    }

    /// A `PATCH` whose request is dropped mid-body (its client killed) leaves bytes on
    /// disk past the confirmed offset. The client's next `PATCH` resends from that offset,
    /// and the file must come out byte-identical: no stale tail shifting it.
    #[tokio::test]
    async fn a_cancelled_patch_leaves_nothing_that_shifts_the_resumed_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, me) = store_in(dir.path(), UploadsConfig::default().expiration_secs);
        let up = create(&store, &me, 8).await;
        let data = dir.path().join(format!("{}.bin", up.id));
        {
            let mut g = store.begin_patch(&up.id, &me, 0).expect("lock");
            // Four bytes, then a body that never ends: the request is cut off from outside.
            let body =
                futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))])
                    .chain(futures_util::stream::pending());
            let write = g.write(body, None, 100);
            tokio::pin!(write);
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    tokio::select! {
                        _ = &mut write => panic!("the body never ends"),
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                    if std::fs::metadata(&data).expect("data file").len() == 4 {
                        break;
                    }
                }
            })
            .await
            .expect("the first bytes reach the disk");
        }
        // The request is gone before it could answer: the offset stays 0.
        assert_eq!(store.head(&up.id, &me).expect("head").1, 0);
        let mut g = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match store.begin_patch(&up.id, &me, 0) {
                    Ok(g) => break g,
                    Err(e) if e.status == 423 => tokio::task::yield_now().await,
                    Err(e) => panic!("begin_patch: {} {}", e.status, e.message),
                }
            }
        })
        .await
        .expect("the cancelled writer frees the upload");
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abcdefgh"))]);
        let done = g.write(body, None, 101).await.expect("resumed write");
        assert!(done.finished);
        assert_eq!(done.offset, 8);
        assert_eq!(std::fs::read(&data).expect("read"), b"abcdefgh");
        let sha = format!("{:x}", Sha256::digest(b"abcdefgh"));
        assert_eq!(done.info.sha256.as_deref(), Some(sha.as_str()));
    }
}
