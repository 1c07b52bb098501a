//! Comparing a root's disk with its index, and recording the difference (source
//! `server`): the startup scan, the watcher's batches, and the check every API operation
//! makes of its paths first. The disk decides, never the kind of a watcher event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferry_proto::sync::{FileOp, ManifestEntry, OpKind, SyncPath};

use super::{Author, SyncRoot, ancestors, dir_entry, is_below, op_of};
use crate::sync::SyncError;
use crate::sync::disk::{self, DiskEntry};
use crate::sync::index::SyncIndex;

/// One round of comparing the disk with the index.
struct Pass {
    /// `None`: the whole root.
    scope: Option<Vec<SyncPath>>,
    /// Renames the watcher saw (from, to).
    hints: Vec<(SyncPath, SyncPath)>,
}

impl SyncRoot {
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
    pub(super) async fn refresh(
        &self,
        index: &mut SyncIndex,
        path: &SyncPath,
    ) -> Result<(), SyncError> {
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
            let (disk, unreadable) = self.disk_view(pass.scope.clone()).await?;
            let known = self.index_view(index, pass.scope.as_deref())?;
            // What the index holds that the disk no longer does (below a directory that
            // could not be listed, nothing is known to be gone).
            let mut gone: BTreeMap<String, ManifestEntry> = known
                .iter()
                .filter(|(path, e)| disk.get(*path).is_none_or(|d| d.dir != e.dir))
                .filter(|(path, _)| !unreadable.iter().any(|u| is_below(path.as_str(), u)))
                .map(|(p, e)| (p.as_str().to_string(), e.clone()))
                .collect();
            // What the disk holds that the index does not, or holds otherwise.
            let mut fresh: BTreeMap<String, (SyncPath, ManifestEntry)> = BTreeMap::new();
            let mut stamps: HashMap<String, i64> = HashMap::new();
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
                    && index.stamp(path.as_str())? == d.stamp
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
                        index.touch(path.as_str(), entry.modified, d.stamp)?;
                    }
                    _ => {
                        stamps.insert(path.to_string(), d.stamp);
                        fresh.insert(path.to_string(), (path.clone(), entry));
                    }
                }
            }
            let renames = pair_renames(&pass.hints, &mut gone, &mut fresh, &known);
            for (old, new) in renames {
                let rows = self.moves(index, &old, &new)?;
                let op = op_of(OpKind::Rename, &new, Some(&old.path));
                published.push(self.record(index, op, rows, &author).await?);
                if let Some(stamp) = stamps.get(&new.path) {
                    index.set_stamp(&new.path, *stamp)?;
                }
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
                if deleted_dirs.iter().any(|d| is_below(&path, d)) {
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
                let stamp = stamps.get(&entry.path).copied();
                let path = entry.path.clone();
                published.push(self.record(index, op, vec![entry], &author).await?);
                if let Some(stamp) = stamp {
                    index.set_stamp(&path, stamp)?;
                }
            }
        }
        Ok(published)
    }

    /// What the disk holds in `scope` (and at its ancestors, which may have been created
    /// or removed with it), and the directories that could not be listed. An error when
    /// the root itself is gone or unreadable: an unmounted disk must not read as "every
    /// file was deleted".
    async fn disk_view(
        &self,
        scope: Option<Vec<SyncPath>>,
    ) -> Result<(BTreeMap<SyncPath, DiskEntry>, Vec<String>), SyncError> {
        let root = self.dir.clone();
        let (view, unreadable) = tokio::task::spawn_blocking(move || {
            let mut unreadable = Vec::new();
            let view = match scope {
                None => disk::walk(&root, None, &mut unreadable),
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
                        out.extend(disk::walk(&root, Some(&path), &mut unreadable));
                    }
                    out
                }
            };
            let root_ok = std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir())
                && std::fs::read_dir(&root).is_ok();
            (root_ok.then_some(view), unreadable)
        })
        .await
        .map_err(|e| SyncError::internal("scanning the root", e))?;
        match view {
            Some(view) if !unreadable.iter().any(String::is_empty) => Ok((view, unreadable)),
            _ => Err(SyncError::internal(
                "scanning the root",
                format!(
                    "sync root {:?}: {} is gone or cannot be read; nothing is published until it is back",
                    self.name,
                    self.dir.display()
                ),
            )),
        }
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
            gone.retain(|p, _| !is_below(p, from.as_str()));
            fresh.retain(|p, _| !is_below(p, to.as_str()));
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
