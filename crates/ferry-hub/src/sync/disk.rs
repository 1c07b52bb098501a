//! The only code that touches a root's files. Every path is a [`SyncPath`] joined to the
//! root's canonical directory one component at a time, and no component that exists may
//! be a symlink: a request can name nothing outside the root, and the scan never follows
//! a link (links are skipped and logged). Writes go to a staging file in
//! `ROOT/.ferry-sync/tmp/` (same filesystem) and are renamed into place.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use ferry_proto::sync::STATE_DIR;
use ferry_proto::sync::SyncPath;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::SyncError;

/// What the disk holds at a path (never a symlink: those count as absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskEntry {
    /// A directory.
    pub dir: bool,
    /// Bytes (0 for directories).
    pub size: u64,
    /// Modification time, ms since the Unix epoch.
    pub modified: u64,
    /// Modification time in ns (0 for directories): finer than `modified`, so a file
    /// rewritten with the same size within one millisecond is still seen as changed.
    pub stamp: i64,
}

/// Milliseconds since the Unix epoch of a file's modification time.
pub fn modified_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch of a file's modification time (see
/// [`DiskEntry::stamp`]).
pub fn stamp(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn entry_of(meta: &std::fs::Metadata) -> Option<DiskEntry> {
    let kind = meta.file_type();
    if kind.is_dir() {
        Some(DiskEntry {
            dir: true,
            size: 0,
            modified: 0,
            stamp: 0,
        })
    } else if kind.is_file() {
        Some(DiskEntry {
            dir: false,
            size: meta.len(),
            modified: modified_ms(meta),
            stamp: stamp(meta),
        })
    } else {
        // Symlinks, sockets, devices: not synced.
        None
    }
}

/// Where `path` lies under `root`, checked: every component that exists before the last
/// is a real directory (not a symlink, not a file). The last component is not checked
/// (it may be absent, or a symlink the caller refuses).
pub fn resolve(root: &Path, path: &SyncPath) -> Result<PathBuf, SyncError> {
    let mut full = root.to_path_buf();
    let components: Vec<&str> = path.components().collect();
    let last = components.len().saturating_sub(1);
    let mut checking = true;
    for (i, component) in components.iter().enumerate() {
        full.push(component);
        if i == last || !checking {
            continue;
        }
        match std::fs::symlink_metadata(&full) {
            Ok(meta) => must_be_dir(&meta, path, &components[..=i].join("/"))?,
            // The rest does not exist yet: nothing below can be a link.
            Err(_) => checking = false,
        }
    }
    Ok(full)
}

/// Refuse `component` (an existing ancestor of `path`, or `path`) when it is a symlink or
/// not a directory.
fn must_be_dir(
    meta: &std::fs::Metadata,
    path: &SyncPath,
    component: &str,
) -> Result<(), SyncError> {
    if meta.file_type().is_symlink() {
        Err(SyncError::new(
            400,
            "SYMLINK",
            format!(
                "{:?} goes through a symbolic link ({component}); links are never followed",
                path.as_str()
            ),
        ))
    } else if !meta.is_dir() {
        Err(SyncError::new(
            409,
            "NOT_A_DIRECTORY",
            format!(
                "{:?}: {component} is a file, not a directory",
                path.as_str()
            ),
        ))
    } else {
        Ok(())
    }
}

/// What is at `full` (`None`: nothing, or something that is not synced, like a symlink).
pub fn state(full: &Path) -> Option<DiskEntry> {
    std::fs::symlink_metadata(full)
        .ok()
        .and_then(|m| entry_of(&m))
}

/// Whether `full` is a symlink (refused as the target of any request).
pub fn is_symlink(full: &Path) -> bool {
    std::fs::symlink_metadata(full).is_ok_and(|m| m.file_type().is_symlink())
}

/// Create the missing directories of `path`'s ancestors (and `path` itself when
/// `include_self`), top down, each checked not to be a link. Returns the paths created.
pub fn create_dirs(
    root: &Path,
    path: &SyncPath,
    include_self: bool,
) -> Result<Vec<SyncPath>, SyncError> {
    let mut created = Vec::new();
    let mut chain: Vec<SyncPath> = Vec::new();
    let mut parent = if include_self {
        Some(path.clone())
    } else {
        path.parent()
    };
    while let Some(p) = parent {
        parent = p.parent();
        chain.push(p);
    }
    for dir in chain.into_iter().rev() {
        let full = resolve(root, &dir)?;
        if let Ok(meta) = std::fs::symlink_metadata(&full) {
            must_be_dir(&meta, path, dir.as_str())?;
            continue;
        }
        match std::fs::create_dir(&full) {
            Ok(()) => created.push(dir),
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && state(&full).is_some_and(|s| s.dir) => {}
            Err(e) => return Err(SyncError::internal("creating a directory", e)),
        }
    }
    Ok(created)
}

/// The root's staging directory, `ROOT/.ferry-sync/tmp/`, created (and checked not to be
/// a link) if needed; with `clean`, leftovers of an earlier run are removed.
pub fn prepare_staging(root: &Path, clean: bool) -> Result<PathBuf, String> {
    let state_dir = root.join(STATE_DIR);
    let tmp = state_dir.join("tmp");
    for dir in [&state_dir, &tmp] {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} exists and is not a directory (a link or a file); remove it",
                    dir.display()
                ));
            }
            Err(_) => std::fs::create_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?,
        }
    }
    if let Some(list) = clean.then(|| std::fs::read_dir(&tmp).ok()).flatten() {
        for item in list.flatten() {
            let _ = std::fs::remove_file(item.path());
        }
    }
    Ok(tmp)
}

/// A file in the staging directory, waiting to be moved into the root. Dropped without
/// being moved, it is removed, or put back where it came from (`return_to`: a committed
/// upload whose commit was refused stays an upload, so it can be committed elsewhere).
pub struct Staged {
    /// Its path.
    pub path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// Lowercase hex sha256 of its content.
    pub sha256: String,
    /// Where to move it back to if it is not used.
    pub return_to: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a successful move into the root the file is gone and this does nothing.
        match &self.return_to {
            Some(back) => {
                let _ = std::fs::rename(&self.path, back);
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Move (or, across filesystems, copy) `source` into a new staging file. A moved file
/// goes back to `source` if the staged one is not used; a copied one leaves `source` as
/// it was.
pub async fn stage_file(
    staging: &Path,
    source: &Path,
    size: u64,
    sha256: &str,
) -> Result<Staged, SyncError> {
    let path = staging_path(staging);
    match tokio::fs::rename(source, &path).await {
        Ok(()) => Ok(Staged {
            path,
            size,
            sha256: sha256.to_string(),
            return_to: Some(source.to_path_buf()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let staged = Staged {
                path,
                size,
                sha256: sha256.to_string(),
                return_to: None,
            };
            tokio::fs::copy(source, &staged.path)
                .await
                .map_err(|e| SyncError::internal("copying an upload into the root", e))?;
            Ok(staged)
        }
        Err(e) => Err(SyncError::internal("moving an upload into the root", e)),
    }
}

/// A fresh staging file name.
pub fn staging_path(staging: &Path) -> PathBuf {
    staging.join(format!("{:032x}.part", rand::random::<u128>()))
}

/// Which limit a body ran into.
pub struct Limit {
    /// Bytes allowed.
    pub bytes: u64,
    /// The error once past it.
    pub error: SyncError,
}

/// Stream `body` into a new staging file, hashing as it is written; past `limit.bytes`
/// the file is removed and `limit.error` returned.
pub async fn stage_stream<S, E>(staging: &Path, body: S, limit: Limit) -> Result<Staged, SyncError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let path = staging_path(staging);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| SyncError::internal("creating a staging file", e))?;
    let mut staged = Staged {
        path,
        size: 0,
        sha256: String::new(),
        return_to: None,
    };
    let mut hash = Sha256::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| SyncError::invalid(format!("request body broke off: {e}")))?;
        staged.size += chunk.len() as u64;
        if staged.size > limit.bytes {
            return Err(limit.error);
        }
        hash.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| SyncError::internal("writing a staging file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| SyncError::internal("writing a staging file", e))?;
    file.sync_all()
        .await
        .map_err(|e| SyncError::internal("writing a staging file", e))?;
    staged.sha256 = hex(&hash.finalize());
    Ok(staged)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 (lowercase hex) and size of a file, read without following a link.
pub fn hash_file(full: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nofollow()
        .open(full)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    Ok((hex(&hash.finalize()), size))
}

/// `O_NOFOLLOW` where the platform has it.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    #[cfg(unix)]
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
    }
    #[cfg(not(unix))]
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        self
    }
}

/// Open a file of the root for reading, never through a link.
pub async fn open_nofollow(full: &Path) -> std::io::Result<tokio::fs::File> {
    let full = full.to_path_buf();
    let file = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_nofollow()
            .open(full)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(tokio::fs::File::from_std(file))
}

/// Every synced entry at and below `path` (`None`: the whole root), walked without
/// following links (links and other special files are skipped and logged), the state
/// directory and names that break the path rule left out. Directories that cannot be
/// listed are added to `unreadable` (`""` for the root): what is below them is unknown,
/// not gone.
pub fn walk(
    root: &Path,
    path: Option<&SyncPath>,
    unreadable: &mut Vec<String>,
) -> BTreeMap<SyncPath, DiskEntry> {
    let mut out = BTreeMap::new();
    let mut pending: Vec<(Option<SyncPath>, PathBuf)> = Vec::new();
    match path {
        None => pending.push((None, root.to_path_buf())),
        Some(p) => {
            let Ok(full) = resolve(root, p) else {
                return out;
            };
            match std::fs::symlink_metadata(&full) {
                Ok(meta) => match entry_of(&meta) {
                    Some(entry) => {
                        out.insert(p.clone(), entry);
                        if entry.dir {
                            pending.push((Some(p.clone()), full));
                        }
                    }
                    None => skipped(p.as_str(), &meta),
                },
                Err(_) => return out,
            }
        }
    }
    while let Some((dir, full)) = pending.pop() {
        let list = match std::fs::read_dir(&full) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(dir = %full.display(), error = %e, "sync: cannot list a directory; its content is left as it was indexed");
                unreadable.push(dir.map(|d| d.to_string()).unwrap_or_default());
                continue;
            }
        };
        for item in list.flatten() {
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                tracing::warn!(dir = %full.display(), "sync: skipping a name that is not UTF-8");
                continue;
            };
            if dir.is_none() && name == STATE_DIR {
                continue;
            }
            let raw = match &dir {
                Some(d) => format!("{d}/{name}"),
                None => name,
            };
            let child = match SyncPath::parse(&raw) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "sync: skipping a file whose name cannot be synced");
                    continue;
                }
            };
            let Ok(meta) = std::fs::symlink_metadata(item.path()) else {
                continue;
            };
            match entry_of(&meta) {
                Some(entry) => {
                    if entry.dir {
                        pending.push((Some(child.clone()), item.path()));
                    }
                    out.insert(child, entry);
                }
                None => skipped(child.as_str(), &meta),
            }
        }
    }
    out
}

fn skipped(path: &str, meta: &std::fs::Metadata) {
    if meta.file_type().is_symlink() {
        tracing::info!(%path, "sync: skipping a symbolic link (links are never followed)");
    } else {
        tracing::info!(%path, "sync: skipping a special file (only files and directories sync)");
    }
}
