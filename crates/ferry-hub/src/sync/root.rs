//! One sync root: its directory, index and channel, and every operation on it. All of
//! them run under the root's one lock, which covers reading the disk, assigning the next
//! version, committing the index and publishing the [`FileOp`]: operations are published
//! in version order, and an API change is answered only after its publication.
//!
//! The watcher's changes and the API's meet here: before an API operation looks at a
//! path, the path is compared with the disk (`root/reconcile.rs`), so a change
//! made on the server's disk that the watcher has not reported yet is recorded (source
//! `server`) first, and a base check never compares against a stale index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_proto::envelope::ClientInfo;
use ferry_proto::sync::{
    FileOp, MAX_MANIFEST_PAGE, ManifestEntry, ManifestPage, OpKind, SERVER_SOURCE, SyncPath,
    Version,
};
use serde_json::value::RawValue;

use super::disk;
pub use super::disk::{Limit, Staged};
use super::index::SyncIndex;
use super::{SyncError, watcher};
use crate::config::SyncRootConfig;
use crate::hub::Hub;

mod reconcile;

/// Who made a change: the source id echoed in the operation, and the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The `x-ferry-sync-source` of the request, or `server`.
    pub source: String,
    /// The user of the request's token (empty for the server).
    pub user: String,
}

impl Author {
    /// The server's own watcher.
    pub fn server() -> Author {
        Author {
            source: SERVER_SOURCE.to_string(),
            user: String::new(),
        }
    }

    fn info(&self) -> Option<ClientInfo> {
        (self.source != SERVER_SOURCE).then(|| ClientInfo {
            user: self.user.clone(),
            client: self.source.clone(),
        })
    }
}

/// The `x-ferry-sync-base` of a request: what the client believes the path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `none`: the path does not exist.
    Absent,
    /// A file with this content (lowercase hex sha256).
    Sha256(String),
}

/// A served root.
pub struct SyncRoot {
    name: String,
    dir: PathBuf,
    staging: PathBuf,
    channel: String,
    config: SyncRootConfig,
    hub: Hub,
    index: tokio::sync::Mutex<SyncIndex>,
}

fn dir_entry(path: &SyncPath) -> ManifestEntry {
    ManifestEntry {
        path: path.to_string(),
        dir: true,
        size: 0,
        sha256: None,
        modified: 0,
        version: 0,
        deleted: false,
    }
}

fn tombstone(entry: &ManifestEntry) -> ManifestEntry {
    ManifestEntry {
        path: entry.path.clone(),
        dir: entry.dir,
        size: 0,
        sha256: None,
        modified: entry.modified,
        version: 0,
        deleted: true,
    }
}

fn op_of(kind: OpKind, entry: &ManifestEntry, from: Option<&str>) -> FileOp {
    FileOp {
        op: kind,
        path: entry.path.clone(),
        from: from.map(str::to_string),
        dir: entry.dir,
        size: if kind == OpKind::Delete {
            0
        } else {
            entry.size
        },
        sha256: if kind == OpKind::Delete {
            None
        } else {
            entry.sha256.clone()
        },
        modified: entry.modified,
        version: 0,
        source: String::new(),
    }
}

/// Whether `path` lies strictly below directory `dir`.
fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// `path` moved from below `from` to below `to`.
fn moved(path: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &path[from.len()..])
}

/// The ancestors of `path`, top first.
fn ancestors(path: &SyncPath) -> Vec<SyncPath> {
    let mut out = Vec::new();
    let mut parent = path.parent();
    while let Some(p) = parent {
        parent = p.parent();
        out.push(p);
    }
    out.reverse();
    out
}

impl SyncRoot {
    /// Open a root: check its directory and channel, prepare its staging directory, open
    /// its index (`DATA_DIR/sync/NAME.sqlite3`), start its watcher and scan it.
    pub async fn open(hub: &Hub, config: &SyncRootConfig) -> Result<Arc<SyncRoot>, String> {
        let dir = std::fs::canonicalize(&config.path).map_err(|e| {
            format!(
                "sync root {:?}: {}: {e}",
                config.name,
                config.path.display()
            )
        })?;
        let channel = config.channel_name();
        hub.resolve(&channel).map_err(|e| {
            format!(
                "sync root {:?}: channel {channel:?}: {}",
                config.name, e.message
            )
        })?;
        let staging = disk::prepare_staging(&dir, true)
            .map_err(|e| format!("sync root {:?}: {e}", config.name))?;
        let index_path = hub
            .config()
            .data_dir
            .join("sync")
            .join(format!("{}.sqlite3", config.name));
        let index = SyncIndex::open(&index_path).map_err(|e| e.to_string())?;
        // The hub's own files inside a root would be synced, and every index commit would
        // be a change to publish (and to index again).
        let hub_dirs = [
            Some(hub.config().data_dir.clone()),
            hub.config().uploads.dir.clone(),
        ];
        for own in hub_dirs.into_iter().flatten() {
            if let Ok(own) = std::fs::canonicalize(&own)
                && own.starts_with(&dir)
            {
                return Err(format!(
                    "sync root {:?}: {} holds the hub's own files ({}); move data_dir (or uploads.dir) out of the root",
                    config.name,
                    dir.display(),
                    own.display()
                ));
            }
        }
        let root = Arc::new(SyncRoot {
            name: config.name.clone(),
            dir,
            staging,
            channel,
            config: config.clone(),
            hub: hub.clone(),
            index: tokio::sync::Mutex::new(index),
        });
        // Watch first, then scan: a change made during the scan is reported afterwards
        // and finds the index already up to date, or records what the scan missed.
        if let Err(e) = watcher::start(&root) {
            // The routes still work (each checks its paths against the disk first); only
            // changes made on the server's disk are not published as they happen.
            tracing::error!(
                root = %config.name,
                error = %e,
                "sync: the root is not watched (on Linux, raise fs.inotify.max_user_watches); changes made on this disk are published at the next start or when a client touches the path"
            );
        }
        let ops = root
            .reconcile(None, Vec::new())
            .await
            .map_err(|e| format!("sync root {:?}: first scan: {}", config.name, e.message))?;
        tracing::info!(
            root = %root.name,
            dir = %root.dir.display(),
            channel = %root.channel,
            changes = ops.len(),
            "sync root ready"
        );
        Ok(root)
    }

    /// The root's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root's channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The root's directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root's options.
    pub fn config(&self) -> &SyncRootConfig {
        &self.config
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stream a request body into a staging file (see [`SyncRoot::put_file`]).
    pub(crate) async fn stage_body<S, E>(&self, body: S, limit: Limit) -> Result<Staged, SyncError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        disk::prepare_staging(&self.dir, false)
            .map_err(|e| SyncError::internal("preparing the staging directory", e))?;
        disk::stage_stream(&self.staging, body, limit).await
    }

    /// Move (or copy) a finished upload's data file into a staging file; it goes back if
    /// the staged file is not used.
    pub(crate) async fn stage_upload(
        &self,
        source: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<Staged, SyncError> {
        disk::prepare_staging(&self.dir, false)
            .map_err(|e| SyncError::internal("preparing the staging directory", e))?;
        disk::stage_file(&self.staging, source, size, sha256).await
    }

    /// One page of the manifest (see [`SyncIndex::page`]).
    pub async fn manifest(
        &self,
        since: Version,
        after: Option<&SyncPath>,
        limit: usize,
    ) -> Result<ManifestPage, SyncError> {
        let index = self.index.lock().await;
        let limit = limit.clamp(1, MAX_MANIFEST_PAGE);
        let (entries, more) = index.page(since, after.map(SyncPath::as_str), limit)?;
        let next = more
            .then(|| entries.last().map(|e| e.path.clone()))
            .flatten();
        Ok(ManifestPage {
            version: index.version()?,
            channel: self.channel.clone(),
            entries,
            next,
        })
    }

    /// The file at `path`, open for reading, with its entry (checked against the disk).
    pub async fn open_file(
        &self,
        path: &SyncPath,
    ) -> Result<(ManifestEntry, tokio::fs::File), SyncError> {
        let mut index = self.index.lock().await;
        let full = self.target(path)?;
        self.refresh(&mut index, path).await?;
        let entry = index
            .live(path.as_str())?
            .ok_or_else(|| SyncError::not_found(path.as_str()))?;
        if entry.dir {
            return Err(SyncError::new(
                409,
                "IS_A_DIRECTORY",
                format!(
                    "{:?} is a directory; list it with the manifest",
                    path.as_str()
                ),
            ));
        }
        let file = disk::open_nofollow(&full)
            .await
            .map_err(|e| SyncError::internal("opening a file", e))?;
        Ok((entry, file))
    }

    /// Replace or create the file at `path` with `staged`, if `base` matches. Returns the
    /// new entry and whether the path was created. The same content as the current one
    /// changes (and publishes) nothing.
    pub async fn put_file(
        &self,
        path: &SyncPath,
        base: Option<&Base>,
        staged: Staged,
        author: &Author,
    ) -> Result<(ManifestEntry, bool), SyncError> {
        let mut index = self.index.lock().await;
        let full = self.target(path)?;
        self.refresh(&mut index, path).await?;
        let current = index.live(path.as_str())?;
        self.check_base(&index, path, base, current.as_ref())?;
        match &current {
            Some(e) if e.dir => {
                return Err(SyncError::new(
                    409,
                    "IS_A_DIRECTORY",
                    format!("{:?} is a directory", path.as_str()),
                ));
            }
            Some(e) if e.sha256.as_deref() == Some(staged.sha256.as_str()) => {
                return Ok((e.clone(), false));
            }
            Some(_) => {}
            None => self.check_case(&index, path, None)?,
        }
        self.check_room(&index, current.as_ref().map_or(0, |e| e.size), staged.size)?;
        let created = disk::create_dirs(&self.dir, path, false)?;
        std::fs::rename(&staged.path, &full)
            .map_err(|e| SyncError::internal("moving a file into place", e))?;
        let (modified, stamp) = std::fs::symlink_metadata(&full)
            .map(|m| (disk::modified_ms(&m), disk::stamp(&m)))
            .unwrap_or((0, 0));
        let entry = ManifestEntry {
            path: path.to_string(),
            dir: false,
            size: staged.size,
            sha256: Some(staged.sha256.clone()),
            modified,
            version: 0,
            deleted: false,
        };
        let entry = self.record_put(&mut index, entry, &created, author).await?;
        index.set_stamp(path.as_str(), stamp)?;
        Ok((entry, current.is_none()))
    }

    /// Create the directory `path` (and its parents). Returns its entry and whether it
    /// was created.
    pub async fn make_dir(
        &self,
        path: &SyncPath,
        author: &Author,
    ) -> Result<(ManifestEntry, bool), SyncError> {
        let mut index = self.index.lock().await;
        self.target(path)?;
        self.refresh(&mut index, path).await?;
        match index.live(path.as_str())? {
            Some(e) if e.dir => return Ok((e, false)),
            Some(_) => {
                return Err(SyncError::new(
                    409,
                    "EXISTS",
                    format!("{:?} exists and is a file", path.as_str()),
                ));
            }
            None => self.check_case(&index, path, None)?,
        }
        let created = disk::create_dirs(&self.dir, path, true)?;
        let entry = self
            .record_put(&mut index, dir_entry(path), &created, author)
            .await?;
        Ok((entry, true))
    }

    /// Record and publish the `put` of `entry`, with the directories created for it;
    /// returns the entry with its version.
    async fn record_put(
        &self,
        index: &mut SyncIndex,
        entry: ManifestEntry,
        created: &[SyncPath],
        author: &Author,
    ) -> Result<ManifestEntry, SyncError> {
        let mut rows: Vec<ManifestEntry> = created.iter().map(dir_entry).collect();
        if !created.iter().any(|c| c.as_str() == entry.path) {
            rows.push(entry.clone());
        }
        let op = self
            .record(index, op_of(OpKind::Put, &entry, None), rows, author)
            .await?;
        Ok(ManifestEntry {
            version: op.version,
            ..entry
        })
    }

    /// Delete the file or directory (with everything below it) at `path`, if `base`
    /// matches. Returns the published operation.
    pub async fn delete(
        &self,
        path: &SyncPath,
        base: Option<&Base>,
        author: &Author,
    ) -> Result<FileOp, SyncError> {
        let mut index = self.index.lock().await;
        let full = self.target(path)?;
        self.refresh(&mut index, path).await?;
        let current = index.live(path.as_str())?;
        self.check_base(&index, path, base, current.as_ref())?;
        let current = current.ok_or_else(|| SyncError::not_found(path.as_str()))?;
        let removed = if current.dir {
            std::fs::remove_dir_all(&full)
        } else {
            std::fs::remove_file(&full)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(SyncError::internal("deleting", e));
        }
        let rows = self.tombstones(&index, &current)?;
        self.record(
            &mut index,
            op_of(OpKind::Delete, &current, None),
            rows,
            author,
        )
        .await
    }

    /// Move `from` to `to` (which must not exist). Returns the published operation.
    pub async fn rename(
        &self,
        from: &SyncPath,
        to: &SyncPath,
        author: &Author,
    ) -> Result<FileOp, SyncError> {
        if to.starts_with(from) {
            return Err(SyncError::invalid(format!(
                "cannot move {:?} to {:?}: the target is the source or inside it",
                from.as_str(),
                to.as_str()
            )));
        }
        let mut index = self.index.lock().await;
        let from_full = self.target(from)?;
        let to_full = self.target(to)?;
        self.refresh(&mut index, from).await?;
        self.refresh(&mut index, to).await?;
        let current = index
            .live(from.as_str())?
            .ok_or_else(|| SyncError::not_found(from.as_str()))?;
        if index.live(to.as_str())?.is_some() || std::fs::symlink_metadata(&to_full).is_ok() {
            return Err(SyncError::new(
                409,
                "EXISTS",
                format!(
                    "{:?} exists; delete it first or pick another name",
                    to.as_str()
                ),
            ));
        }
        self.check_case(&index, to, Some(from))?;
        let created = disk::create_dirs(&self.dir, to, false)?;
        std::fs::rename(&from_full, &to_full).map_err(|e| SyncError::internal("renaming", e))?;
        let target = ManifestEntry {
            path: to.to_string(),
            ..current.clone()
        };
        let mut rows: Vec<ManifestEntry> = created.iter().map(dir_entry).collect();
        rows.extend(self.moves(&index, &current, &target)?);
        self.record(
            &mut index,
            op_of(OpKind::Rename, &target, Some(from.as_str())),
            rows,
            author,
        )
        .await
    }

    /// Rows that delete `entry` and everything below it.
    fn tombstones(
        &self,
        index: &SyncIndex,
        entry: &ManifestEntry,
    ) -> Result<Vec<ManifestEntry>, SyncError> {
        let mut rows = vec![tombstone(entry)];
        if entry.dir {
            rows.extend(index.live_below(Some(&entry.path))?.iter().map(tombstone));
        }
        Ok(rows)
    }

    /// Rows that move `old` (and everything below it) to `new`'s path, as `new`.
    fn moves(
        &self,
        index: &SyncIndex,
        old: &ManifestEntry,
        new: &ManifestEntry,
    ) -> Result<Vec<ManifestEntry>, SyncError> {
        let mut rows = vec![tombstone(old), new.clone()];
        if old.dir {
            for child in index.live_below(Some(&old.path))? {
                rows.push(tombstone(&child));
                rows.push(ManifestEntry {
                    path: moved(&child.path, &old.path, &new.path),
                    ..child
                });
            }
        }
        Ok(rows)
    }

    /// Assign the next version to `op` and `rows`, commit them and publish `op`.
    async fn record(
        &self,
        index: &mut SyncIndex,
        mut op: FileOp,
        mut rows: Vec<ManifestEntry>,
        author: &Author,
    ) -> Result<FileOp, SyncError> {
        let version = index.version()? + 1;
        op.version = version;
        op.source = author.source.clone();
        for row in &mut rows {
            row.version = version;
        }
        index.commit(version, &rows)?;
        let json = serde_json::to_string(&op)
            .map_err(|e| SyncError::internal("encoding an operation", e))?;
        let data = RawValue::from_string(json)
            .map_err(|e| SyncError::internal("encoding an operation", e))?;
        if let Err(e) = self
            .hub
            .publish(&self.channel, data.into(), author.info(), None)
            .await
        {
            // The change is made and indexed; a client that misses it finds it in the
            // manifest delta since its version.
            tracing::warn!(root = %self.name, version, error = %e, "sync: cannot publish an operation");
        }
        Ok(op)
    }

    /// The checked location of `path`, refused when it is a symlink or goes through one.
    fn target(&self, path: &SyncPath) -> Result<PathBuf, SyncError> {
        let full = disk::resolve(&self.dir, path)?;
        if disk::is_symlink(&full) {
            return Err(SyncError::new(
                400,
                "SYMLINK",
                format!(
                    "{:?} is a symbolic link on the server; links are never followed",
                    path.as_str()
                ),
            ));
        }
        Ok(full)
    }

    /// 412 with the current entry unless `base` describes `current`.
    fn check_base(
        &self,
        index: &SyncIndex,
        path: &SyncPath,
        base: Option<&Base>,
        current: Option<&ManifestEntry>,
    ) -> Result<(), SyncError> {
        let matches = match (base, current) {
            (None, _) => true,
            (Some(Base::Absent), None) => true,
            (Some(Base::Sha256(sha)), Some(e)) => !e.dir && e.sha256.as_deref() == Some(sha),
            _ => false,
        };
        if matches {
            return Ok(());
        }
        let shown = match current {
            Some(e) => e.clone(),
            None => match index.get(path.as_str())? {
                Some(t) => t,
                None => ManifestEntry {
                    path: path.to_string(),
                    dir: false,
                    size: 0,
                    sha256: None,
                    modified: 0,
                    version: index.version()?,
                    deleted: true,
                },
            },
        };
        Err(SyncError {
            status: 412,
            code: "CONFLICT",
            message: format!(
                "{:?} changed on the server since the base you sent; keep your copy as a conflict copy",
                path.as_str()
            ),
            current: Some(Box::new(shown)),
        })
    }

    /// 409 when `path` or one of its ancestors would collide, on a case-insensitive
    /// filesystem, with an existing path other than itself (and other than `except`, the
    /// source of a rename that only changes case).
    fn check_case(
        &self,
        index: &SyncIndex,
        path: &SyncPath,
        except: Option<&SyncPath>,
    ) -> Result<(), SyncError> {
        let mut chain = ancestors(path);
        chain.push(path.clone());
        for p in chain {
            if let Some(existing) = index.case_collision(p.as_str(), &p.case_key())?
                && except
                    .is_none_or(|e| !SyncPath::parse(&existing).is_ok_and(|x| x.starts_with(e)))
            {
                return Err(SyncError::new(
                    409,
                    "CASE_COLLISION",
                    format!(
                        "{:?} differs only in case from the existing {existing:?}: on a case-insensitive filesystem they are the same file; rename one",
                        p.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// 507 when replacing `old_size` bytes with `new_size` would take the root past
    /// `max_root_size`.
    fn check_room(&self, index: &SyncIndex, old_size: u64, new_size: u64) -> Result<(), SyncError> {
        let max = self.config.max_root_size;
        if max == 0 {
            return Ok(());
        }
        let after = index
            .total_size()?
            .saturating_sub(old_size)
            .saturating_add(new_size);
        if after > max {
            return Err(SyncError::new(
                507,
                "ROOT_FULL",
                format!(
                    "sync root {:?} would hold {after} bytes, over its max_root_size of {max}; delete files first",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}
