//! One sync root: its directory, index and channel, and every operation on it. All of
//! them run under the root's one lock, which covers reading the disk, assigning the next
//! version, committing the index and publishing the [`FileOp`]: operations are published
//! in version order, and an API change is answered only after its publication.
//!
//! The watcher's changes and the API's meet here: before an API operation looks at a
//! path, the path is compared with the disk ([`SyncRoot::reconcile_locked`]), so a change
//! made on the server's disk that the watcher has not reported yet is recorded (source
//! `server`) first, and a base check never compares against a stale index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_proto::envelope::ClientInfo;
use ferry_proto::sync::{
    FileOp, MAX_MANIFEST_PAGE, ManifestEntry, ManifestPage, OpKind, SERVER_SOURCE, SyncPath,
    Version,
};
use serde_json::value::RawValue;

use super::disk::{self, DiskEntry};
pub use super::disk::{Limit, Staged};
use super::index::SyncIndex;
use super::{SyncError, watcher};
use crate::config::SyncRootConfig;
use crate::hub::Hub;

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

/// One round of comparing the disk with the index.
struct Pass {
    /// `None`: the whole root.
    scope: Option<Vec<SyncPath>>,
    /// Renames the watcher saw (from, to).
    hints: Vec<(SyncPath, SyncPath)>,
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
        let staging =
            disk::prepare_staging(&dir).map_err(|e| format!("sync root {:?}: {e}", config.name))?;
        let index_path = hub
            .config()
            .data_dir
            .join("sync")
            .join(format!("{}.sqlite3", config.name));
        let index = SyncIndex::open(&index_path).map_err(|e| e.to_string())?;
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
        watcher::start(&root).map_err(|e| format!("sync root {:?}: {e}", config.name))?;
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
        let modified = std::fs::symlink_metadata(&full)
            .map(|m| disk::modified_ms(&m))
            .unwrap_or(0);
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

    /// Compare the disk with the index (`scope`: these paths and what is below them, or
    /// the whole root) and record and publish every difference with source `server`.
    /// `hints` are renames the watcher saw. Returns the published operations.
    pub(crate) async fn reconcile(
        &self,
        scope: Option<Vec<SyncPath>>,
        hints: Vec<(SyncPath, SyncPath)>,
    ) -> Result<Vec<FileOp>, SyncError> {
        let mut index = self.index.lock().await;
        self.reconcile_locked(&mut index, scope, hints).await
    }

    /// [`SyncRoot::reconcile`] for one path, under the lock already held.
    async fn refresh(&self, index: &mut SyncIndex, path: &SyncPath) -> Result<(), SyncError> {
        self.reconcile_locked(index, Some(vec![path.clone()]), Vec::new())
            .await
            .map(|_| ())
    }

    /// See [`SyncRoot::reconcile`].
    async fn reconcile_locked(
        &self,
        index: &mut SyncIndex,
        scope: Option<Vec<SyncPath>>,
        hints: Vec<(SyncPath, SyncPath)>,
    ) -> Result<Vec<FileOp>, SyncError> {
        let mut published = Vec::new();
        let mut passes = vec![Pass { scope, hints }];
        let author = Author::server();
        while let Some(pass) = passes.pop() {
            let disk = self.disk_view(pass.scope.clone()).await?;
            let known = self.index_view(index, pass.scope.as_deref())?;
            // What the index holds that the disk no longer does.
            let mut gone: BTreeMap<String, ManifestEntry> = known
                .iter()
                .filter(|(path, e)| disk.get(*path).is_none_or(|d| d.dir != e.dir))
                .map(|(p, e)| (p.as_str().to_string(), e.clone()))
                .collect();
            // What the disk holds that the index does not, or holds otherwise.
            let mut fresh: BTreeMap<String, (SyncPath, ManifestEntry)> = BTreeMap::new();
            for (path, d) in &disk {
                let old = known.get(path).filter(|e| e.dir == d.dir);
                if d.dir {
                    if old.is_none() {
                        fresh.insert(path.to_string(), (path.clone(), dir_entry(path)));
                    }
                    continue;
                }
                if let Some(old) = old
                    && old.size == d.size
                    && old.modified == d.modified
                {
                    continue;
                }
                let Some(entry) = self.hashed(path, d).await else {
                    continue;
                };
                match old {
                    Some(old) if old.sha256 == entry.sha256 && old.size == entry.size => {
                        // Touched, not changed: remember the time so the next scan needs
                        // no hash; nothing to publish.
                        index.touch(path.as_str(), entry.modified)?;
                    }
                    _ => {
                        fresh.insert(path.to_string(), (path.clone(), entry));
                    }
                }
            }
            let renames = pair_renames(&pass.hints, &mut gone, &mut fresh, &known);
            for (old, new) in renames {
                let rows = self.moves(index, &old, &new)?;
                let op = op_of(OpKind::Rename, &new, Some(&old.path));
                published.push(self.record(index, op, rows, &author).await?);
                if old.dir
                    && let Ok(to) = SyncPath::parse(&new.path)
                {
                    // What changed inside the moved directory, compared afresh.
                    passes.push(Pass {
                        scope: Some(vec![to]),
                        hints: Vec::new(),
                    });
                }
            }
            let mut deleted_dirs: Vec<String> = Vec::new();
            for path in gone.into_keys() {
                if deleted_dirs.iter().any(|d| {
                    path.starts_with(d.as_str()) && path.as_bytes().get(d.len()) == Some(&b'/')
                }) {
                    continue;
                }
                // The index may have changed since the view (a rename above).
                let Some(current) = index.live(&path)? else {
                    continue;
                };
                if current.dir {
                    deleted_dirs.push(path.clone());
                }
                let rows = self.tombstones(index, &current)?;
                let op = op_of(OpKind::Delete, &current, None);
                published.push(self.record(index, op, rows, &author).await?);
            }
            for (_, (path, entry)) in fresh {
                if let Some(current) = index.live(path.as_str())?
                    && current.dir == entry.dir
                    && current.sha256 == entry.sha256
                    && current.size == entry.size
                {
                    continue;
                }
                let op = op_of(OpKind::Put, &entry, None);
                published.push(self.record(index, op, vec![entry], &author).await?);
            }
        }
        Ok(published)
    }

    /// What the disk holds in `scope` (and at its ancestors, which may have been created
    /// or removed with it).
    async fn disk_view(
        &self,
        scope: Option<Vec<SyncPath>>,
    ) -> Result<BTreeMap<SyncPath, DiskEntry>, SyncError> {
        let root = self.dir.clone();
        tokio::task::spawn_blocking(move || match scope {
            None => disk::walk(&root, None),
            Some(paths) => {
                let mut out = BTreeMap::new();
                for path in paths {
                    for a in ancestors(&path) {
                        if let Ok(full) = disk::resolve(&root, &a)
                            && let Some(state) = disk::state(&full)
                        {
                            out.insert(a, state);
                        }
                    }
                    out.extend(disk::walk(&root, Some(&path)));
                }
                out
            }
        })
        .await
        .map_err(|e| SyncError::internal("scanning the root", e))
    }

    /// What the index holds in `scope` (and at its ancestors).
    fn index_view(
        &self,
        index: &SyncIndex,
        scope: Option<&[SyncPath]>,
    ) -> Result<BTreeMap<SyncPath, ManifestEntry>, SyncError> {
        let mut entries = Vec::new();
        match scope {
            None => entries = index.live_below(None)?,
            Some(paths) => {
                for path in paths {
                    for a in ancestors(path) {
                        entries.extend(index.live(a.as_str())?);
                    }
                    entries.extend(index.live(path.as_str())?);
                    entries.extend(index.live_below(Some(path.as_str()))?);
                }
            }
        }
        Ok(entries
            .into_iter()
            .filter_map(|e| SyncPath::parse(&e.path).ok().map(|p| (p, e)))
            .collect())
    }

    /// The entry of a file on disk, hashed (`None` when it vanished meanwhile).
    async fn hashed(&self, path: &SyncPath, d: &DiskEntry) -> Option<ManifestEntry> {
        let full = disk::resolve(&self.dir, path).ok()?;
        let hashed = tokio::task::spawn_blocking(move || disk::hash_file(&full))
            .await
            .ok()?;
        match hashed {
            Ok((sha, size)) => Some(ManifestEntry {
                path: path.to_string(),
                dir: false,
                size,
                sha256: Some(sha),
                modified: d.modified,
                version: 0,
                deleted: false,
            }),
            Err(e) => {
                tracing::debug!(path = %path, error = %e, "sync: a file could not be read");
                None
            }
        }
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

/// Renames among what vanished (`gone`) and what appeared (`fresh`): first the ones the
/// watcher reported (same kind, and for files the same content), then a file that vanished
/// and a new path with the same content and size. Paired entries leave `gone` and `fresh`.
/// Returns (old entry, new entry) pairs.
fn pair_renames(
    hints: &[(SyncPath, SyncPath)],
    gone: &mut BTreeMap<String, ManifestEntry>,
    fresh: &mut BTreeMap<String, (SyncPath, ManifestEntry)>,
    known: &BTreeMap<SyncPath, ManifestEntry>,
) -> Vec<(ManifestEntry, ManifestEntry)> {
    let mut pairs = Vec::new();
    for (from, to) in hints {
        let (Some(old), Some((_, new))) = (gone.get(from.as_str()), fresh.get(to.as_str())) else {
            continue;
        };
        if known.contains_key(to) || old.dir != new.dir || (!old.dir && old.sha256 != new.sha256) {
            continue;
        }
        let old = old.clone();
        let new = ManifestEntry {
            modified: if old.dir { 0 } else { new.modified },
            ..new.clone()
        };
        gone.remove(from.as_str());
        fresh.remove(to.as_str());
        if old.dir {
            // Everything below moves with it; differences are compared afresh after.
            let below =
                |p: &str, d: &str| p.starts_with(d) && p.as_bytes().get(d.len()) == Some(&b'/');
            gone.retain(|p, _| !below(p, from.as_str()));
            fresh.retain(|p, _| !below(p, to.as_str()));
        }
        pairs.push((old, new));
    }
    let mut taken = BTreeSet::new();
    let candidates: Vec<(String, ManifestEntry)> = gone
        .iter()
        .filter(|(_, e)| !e.dir && e.sha256.is_some())
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    for (old_path, old) in candidates {
        let found = fresh
            .iter()
            .find(|(p, (sp, new))| {
                !taken.contains(*p)
                    && !new.dir
                    && !known.contains_key(sp)
                    && new.sha256 == old.sha256
                    && new.size == old.size
            })
            .map(|(p, (_, new))| (p.clone(), new.clone()));
        if let Some((new_path, new)) = found {
            taken.insert(new_path.clone());
            fresh.remove(&new_path);
            gone.remove(&old_path);
            pairs.push((old, new));
        }
    }
    pairs
}
