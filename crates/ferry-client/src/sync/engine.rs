//! The reconcile loop of a sync client: the view of the server (kept up to date from the
//! manifest, a manifest delta or the channel's operations), rounds of scan → plan →
//! execute, and the index saved after each round.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::sync::plan::{self, Action, ConflictNaming, IndexEntry, LocalEntry};
use ferry_proto::sync::{FileOp, ManifestEntry, OpKind, SyncPath, Version, is_sha256_hex};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::remote::{LocalFile, Outcome, Remote};
use super::scan::{self, Ignore, check_no_link_above};
use super::state::{SavedPosition, SyncState, state_dir};
use super::{CatchUp, Config, Side, SyncError, SyncEvent, civil_date};

/// Transfers (downloads, uploads) that run at once in a round.
const TRANSFERS: usize = 8;

/// A finished network half of a transfer, applied by [`Engine::finish`].
enum Transfer {
    Nothing,
    Downloaded {
        path: SyncPath,
        entry: ManifestEntry,
        staged: PathBuf,
        transferred: u64,
    },
    Uploaded {
        path: SyncPath,
        outcome: Outcome,
        resumable: bool,
    },
}

/// How long a deleted file stays in the staging directory, in case its content comes
/// back under another name (a rename made elsewhere arrives as a delete and a put).
const STASH_TTL: Duration = Duration::from_secs(60);

/// Rounds one settle runs at most before reporting what is left.
const MAX_ROUNDS: usize = 8;

pub(crate) struct Engine {
    pub config: Config,
    pub remote: Remote,
    pub state: SyncState,
    pub index: BTreeMap<SyncPath, IndexEntry>,
    /// What the server holds, as far as this client knows (ignored paths included).
    pub view: BTreeMap<SyncPath, ManifestEntry>,
    /// The last channel position whose operation is in `view`.
    pub position: Option<SavedPosition>,
    /// The root version `view` reflects.
    pub version: Version,
    pub ignore: Ignore,
    pub events: mpsc::UnboundedSender<SyncEvent>,
    pub manifest_requests: u64,
    /// Case collisions already reported.
    reported_collisions: std::collections::BTreeSet<Vec<String>>,
    /// Skipped paths already reported.
    reported_skips: std::collections::BTreeSet<String>,
    /// Whether the view must be read again from the whole manifest.
    pub needs_manifest: bool,
    changes: usize,
    /// Live mode: rounds rescan only the paths the watcher reported (and those the
    /// client changed itself) on top of the last scan.
    pub incremental: bool,
    /// The last scan, brought up to date by `changed_paths` in live mode.
    local_cache: Option<BTreeMap<SyncPath, LocalEntry>>,
    /// Paths to examine again before the next plan.
    changed_paths: std::collections::BTreeSet<SyncPath>,
    /// The next scan must walk the whole folder (watcher overflow, new ignore patterns).
    full_scan: bool,
}

impl Engine {
    pub async fn open(
        config: &Config,
        events: mpsc::UnboundedSender<SyncEvent>,
    ) -> Result<Engine, SyncError> {
        let remote_id = format!("{}/{}", config.server, config.root);
        let state = SyncState::load(&config.dir, &remote_id)?;
        let ignore = Ignore::load(&config.dir, &config.ignore)?;
        let index = state.parsed_index();
        // When the last run ended in agreement, the index is the server as of the saved
        // position; ignore patterns that changed make paths visible that it never held.
        let needs_manifest = state.channel.is_none()
            || state.position.is_none()
            || state.ignore_digest != ignore.digest;
        let view = index
            .iter()
            .map(|(path, e)| (path.clone(), entry_from_index(path, e)))
            .collect();
        Ok(Engine {
            remote: Remote {
                http: config.http.clone(),
                server: config.server.clone(),
                root: config.root.clone(),
                token: config.token.clone(),
                source: state.source.clone(),
                put_max: config.put_max,
            },
            config: config.clone(),
            position: state.position.clone(),
            version: state.version,
            state,
            index,
            view,
            ignore,
            events,
            manifest_requests: 0,
            reported_collisions: Default::default(),
            reported_skips: Default::default(),
            needs_manifest,
            changes: 0,
            incremental: false,
            local_cache: None,
            changed_paths: Default::default(),
            full_scan: true,
        })
    }

    pub fn emit(&self, event: SyncEvent) {
        let _ = self.events.send(event);
    }

    fn error(&self, path: Option<&SyncPath>, error: &SyncError) {
        self.emit(SyncEvent::Error {
            path: path.map(|p| p.to_string()),
            message: error.to_string(),
        });
    }

    /// The root's channel: from the saved state, or from the first manifest page.
    pub async fn channel(&mut self) -> Result<String, SyncError> {
        if let Some(channel) = &self.state.channel {
            return Ok(channel.clone());
        }
        self.manifest_requests += 1;
        let page = self.remote.manifest_page(0, None, Some(1)).await?;
        self.state.channel = Some(page.channel.clone());
        Ok(page.channel)
    }

    /// Read the whole manifest into the view.
    pub async fn load_manifest(&mut self) -> Result<(), SyncError> {
        let mut view = BTreeMap::new();
        let mut after: Option<String> = None;
        let mut version = None;
        loop {
            self.manifest_requests += 1;
            let page = self.remote.manifest_page(0, after.as_deref(), None).await?;
            self.state.channel = Some(page.channel.clone());
            version = Some(version.map_or(page.version, |v: Version| v.min(page.version)));
            for entry in page.entries {
                if entry.deleted {
                    continue;
                }
                if let Some(path) = self.accept(&entry.path) {
                    view.insert(path, entry);
                }
            }
            match page.next {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => break,
            }
        }
        let entries = view.len();
        self.view = view;
        self.version = version.unwrap_or(0);
        self.needs_manifest = false;
        self.emit(SyncEvent::CaughtUp {
            via: CatchUp::Manifest,
            ops: 0,
            entries,
            manifest_requests: self.manifest_requests,
        });
        Ok(())
    }

    /// Apply the manifest entries changed since the view's version.
    pub async fn load_delta(&mut self) -> Result<(), SyncError> {
        let since = self.version;
        let mut after: Option<String> = None;
        let mut entries = 0;
        let mut version = None;
        loop {
            self.manifest_requests += 1;
            let page = self
                .remote
                .manifest_page(since.max(1), after.as_deref(), None)
                .await?;
            if page.version < since {
                // The server's index was reset: only the whole manifest is right now.
                return self.load_manifest().await;
            }
            version = Some(version.map_or(page.version, |v: Version| v.min(page.version)));
            for entry in page.entries {
                entries += 1;
                let Some(path) = self.accept(&entry.path) else {
                    continue;
                };
                if entry.deleted {
                    self.remove_from_view(&path, entry.version);
                } else {
                    self.view.insert(path, entry);
                }
            }
            match page.next {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => break,
            }
        }
        self.version = self.version.max(version.unwrap_or(0));
        self.emit(SyncEvent::CaughtUp {
            via: CatchUp::ManifestDelta,
            ops: 0,
            entries,
            manifest_requests: self.manifest_requests,
        });
        Ok(())
    }

    /// A path from the server through the path rule; refused ones are reported.
    fn accept(&mut self, raw: &str) -> Option<SyncPath> {
        match SyncPath::parse(raw) {
            Ok(path) => Some(path),
            Err(e) => {
                self.skip(raw, format!("refused from the server: {}", e.reason));
                None
            }
        }
    }

    fn skip(&mut self, path: &str, reason: String) {
        if self.reported_skips.insert(path.to_string()) {
            self.emit(SyncEvent::Skipped {
                path: path.to_string(),
                reason,
            });
        }
    }

    fn remove_from_view(&mut self, path: &SyncPath, version: Version) {
        let gone: Vec<SyncPath> = self
            .view
            .range(path.clone()..)
            .take_while(|(k, _)| k.as_str().starts_with(path.as_str()))
            .filter(|(k, e)| k.starts_with(path) && e.version <= version)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.view.remove(&k);
        }
    }

    /// Apply one operation from the channel to the view. Returns whether it changed
    /// anything this client must act on (its own echoes do not).
    pub fn apply_op(&mut self, op: &FileOp, position: SavedPosition) -> bool {
        self.position = Some(position);
        if op.source == self.state.source {
            self.version = self.version.max(op.version);
            return false;
        }
        let Some(path) = self.accept(&op.path) else {
            return false;
        };
        let changed = match op.op {
            OpKind::Put => {
                let newer = self.view.get(&path).is_none_or(|e| e.version < op.version);
                if newer {
                    self.view.insert(path.clone(), entry_from_op(&path, op));
                }
                newer
            }
            OpKind::Delete => {
                let present = self.view.contains_key(&path);
                self.remove_from_view(&path, op.version);
                present
            }
            OpKind::Rename => {
                let Some(from) = op.from.as_deref().and_then(|f| self.accept(f)) else {
                    return false;
                };
                self.rename_in_view(&from, &path, op);
                self.rename_locally(&from, &path);
                true
            }
        };
        self.version = self.version.max(op.version);
        changed
    }

    fn rename_in_view(&mut self, from: &SyncPath, to: &SyncPath, op: &FileOp) {
        for (k, mut e) in take_subtree(&mut self.view, from) {
            let Some(new) = rebase(&k, from, to) else {
                continue;
            };
            e.path = new.to_string();
            e.version = op.version;
            self.view.insert(new, e);
        }
        // The operation itself describes the destination.
        self.view.insert(to.clone(), entry_from_op(to, op));
    }

    /// An operation renamed `from` to `to` on the server: when this client holds `from`
    /// as the index knows it and nothing at `to`, rename locally too (no download); the
    /// index moves with it, so local edits inside are still uploaded.
    fn rename_locally(&mut self, from: &SyncPath, to: &SyncPath) {
        if self.config.dry_run || !self.index.contains_key(from) || self.index.contains_key(to) {
            return;
        }
        let dir = &self.config.dir;
        let src = dir.join(from.as_str());
        let dst = dir.join(to.as_str());
        let ok = std::fs::symlink_metadata(&src).is_ok_and(|m| !m.file_type().is_symlink())
            && std::fs::symlink_metadata(&dst).is_err()
            && check_no_link_above(dir, from).is_ok()
            && check_no_link_above(dir, to).is_ok();
        if !ok {
            return;
        }
        if let Some(parent) = dst.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            return;
        }
        if std::fs::rename(&src, &dst).is_err() {
            return;
        }
        // The next round must see the move even before the watcher reports it.
        self.changed_paths.insert(from.clone());
        self.changed_paths.insert(to.clone());
        for (k, e) in take_subtree(&mut self.index, from) {
            if let Some(new) = rebase(&k, from, to) {
                self.index.insert(new, e);
            }
        }
        self.changes += 1;
        self.emit(SyncEvent::Renamed {
            from: from.to_string(),
            to: to.to_string(),
            side: Side::Local,
        });
    }

    /// Rounds until a plan is empty; saves the state after each.
    pub async fn settle(&mut self) -> Result<(), SyncError> {
        let mut failed = 0;
        for _ in 0..MAX_ROUNDS {
            let (acted, failures) = self.round().await?;
            if self.config.dry_run {
                return Ok(());
            }
            self.save(failures == 0)?;
            failed = failures;
            if acted == 0 {
                break;
            }
        }
        if failed > 0 {
            return Err(SyncError::Incomplete { failed });
        }
        self.clean_staging(Some(STASH_TTL));
        let changes = std::mem::take(&mut self.changes);
        self.emit(SyncEvent::Idle { changes });
        Ok(())
    }

    /// Save the index; the channel position and version only when everything the view
    /// knows was applied (`agreed`), so that a restart recovers what is still pending.
    /// Nothing is written when nothing changed.
    fn save(&mut self, agreed: bool) -> Result<(), SyncError> {
        let index: BTreeMap<String, IndexEntry> = self
            .index
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut changed = index != self.state.index;
        self.state.index = index;
        if agreed {
            changed |= self.state.position != self.position
                || self.state.version != self.version
                || self.state.ignore_digest != self.ignore.digest;
            self.state.position = self.position.clone();
            self.state.version = self.version;
            self.state.ignore_digest = self.ignore.digest.clone();
        }
        if changed || !state_dir(&self.config.dir).join("state.json").exists() {
            self.state.save(&self.config.dir)?;
        }
        Ok(())
    }

    /// Paths the watcher reported (absolute); `None`: it lost track, rescan everything.
    pub fn note_changes(&mut self, paths: Option<Vec<PathBuf>>) {
        let Some(paths) = paths else {
            self.full_scan = true;
            return;
        };
        for abs in paths {
            let Ok(rel) = abs.strip_prefix(&self.config.dir) else {
                self.full_scan = true;
                continue;
            };
            let Some(rel) = rel.to_str() else {
                continue;
            };
            if rel.is_empty() {
                self.full_scan = true;
                continue;
            }
            // Paths inside the state directory, or names the scan skips anyway, fail.
            if let Ok(path) = SyncPath::parse(&rel.replace(std::path::MAIN_SEPARATOR, "/")) {
                self.changed_paths.insert(path);
            }
        }
    }

    /// Scan the tree: only the `changed` paths of `previous` when given, else all of it.
    /// Reports what was skipped and what was found.
    async fn scan_local(
        &mut self,
        previous: Option<BTreeMap<SyncPath, LocalEntry>>,
        changed: BTreeSet<SyncPath>,
    ) -> Result<BTreeMap<SyncPath, LocalEntry>, SyncError> {
        let dir = self.config.dir.clone();
        let ignore = self.ignore.clone();
        let index = self.index.clone();
        let found = tokio::task::spawn_blocking(move || match previous {
            Some(previous) => scan::rescan(&dir, &ignore, &index, previous, &changed),
            None => scan::scan(&dir, &ignore, &index),
        })
        .await
        .map_err(|e| SyncError::State(format!("scan task failed: {e}")))?;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.full_scan = true;
                return Err(e);
            }
        };
        for (path, reason) in &found.skipped {
            self.skip(path, reason.clone());
        }
        let local = found.entries;
        self.emit(SyncEvent::Scanned {
            files: local.values().filter(|e| !e.dir).count(),
            dirs: local.values().filter(|e| e.dir).count(),
            hashed_bytes: found.hashed,
        });
        Ok(local)
    }

    /// One round: scan, plan, execute. Returns the number of actions and of those that
    /// failed (each reported).
    async fn round(&mut self) -> Result<(usize, usize), SyncError> {
        // `.ferryignore` may have changed (it syncs like any file): paths it no longer
        // ignores may exist on the server, which only the whole manifest lists.
        let ignore = Ignore::load(&self.config.dir, &self.config.ignore)?;
        if ignore.digest != self.ignore.digest {
            self.ignore = ignore;
            self.needs_manifest = true;
            self.full_scan = true;
        }
        if self.needs_manifest {
            self.load_manifest().await?;
        }
        let previous = match (self.incremental, self.full_scan) {
            (true, false) => self.local_cache.take(),
            _ => None,
        };
        self.full_scan = false;
        let incremental = previous.is_some();
        let changed = std::mem::take(&mut self.changed_paths);
        let mut local = self.scan_local(previous, changed).await?;
        let server: BTreeMap<SyncPath, ManifestEntry> = self
            .view
            .iter()
            .filter(|(p, e)| !self.ignore.is_ignored(p, e.dir))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        let naming = ConflictNaming {
            host: self.config.host.clone(),
            date: today(),
        };
        let mut actions = plan::plan(&self.index, &local, &server, &naming);
        // A file missing from an incremental scan may be the old name of a rename whose
        // new name the watcher has not reported yet (the two can land in separate
        // batches): before it is deleted on the server the whole tree is scanned once,
        // so that a rename goes out as a rename, not as a deletion and an upload.
        if incremental
            && actions
                .iter()
                .any(|a| matches!(a, Action::DeleteRemote { dir: false, .. }))
        {
            local = self.scan_local(None, BTreeSet::new()).await?;
            actions = plan::plan(&self.index, &local, &server, &naming);
        }
        self.report_collisions(&local, &server);
        if self.config.dry_run {
            for action in &actions {
                self.emit(SyncEvent::Planned {
                    action: action.name().to_string(),
                    path: action.path().to_string(),
                });
            }
            return Ok((actions.len(), 0));
        }
        let count = actions.len();
        let mut failed = 0;
        // What this round changes on disk is examined again by the next one.
        for action in &actions {
            self.changed_paths.insert(action.path().clone());
            if let Action::MoveAside { to, .. } = action {
                self.changed_paths.insert(to.clone());
            }
        }
        // The plan lists transfers together, after every delete, move and directory
        // and before the bookkeeping: run them concurrently, then apply each result.
        let (transfers, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Download { .. } | Action::Upload { .. }));
        let (before, after): (Vec<Action>, Vec<Action>) = rest
            .into_iter()
            .partition(|a| !matches!(a, Action::Record { .. } | Action::Forget { .. }));
        let mut connection_error = None;
        for action in before {
            let path = action.path().clone();
            match self.execute(action, &local).await {
                Ok(()) => {}
                Err(e) if e.is_connection() => {
                    connection_error = Some(e);
                    break;
                }
                Err(e) => {
                    self.error(Some(&path), &e);
                    failed += 1;
                }
            }
        }
        if connection_error.is_none() {
            let this = &*self;
            let results: Vec<(SyncPath, Result<Transfer, SyncError>)> =
                futures_util::stream::iter(transfers.into_iter().map(|action| {
                    let path = action.path().clone();
                    let local = &local;
                    async move { (path, this.transfer(action, local).await) }
                }))
                .buffer_unordered(TRANSFERS)
                .collect()
                .await;
            for (path, result) in results {
                match result.and_then(|done| self.finish(done, &local)) {
                    Ok(()) => {}
                    Err(e) if e.is_connection() => connection_error = Some(e),
                    Err(e) => {
                        self.error(Some(&path), &e);
                        failed += 1;
                    }
                }
            }
        }
        if let Some(e) = connection_error {
            self.save(false)?;
            self.full_scan = true;
            return Err(e);
        }
        for action in after {
            let path = action.path().clone();
            if let Err(e) = self.execute(action, &local).await {
                self.error(Some(&path), &e);
                failed += 1;
            }
        }
        self.local_cache = Some(local);
        Ok((count, failed))
    }

    fn report_collisions(
        &mut self,
        local: &BTreeMap<SyncPath, LocalEntry>,
        server: &BTreeMap<SyncPath, ManifestEntry>,
    ) {
        for group in plan::case_collisions(local.keys().chain(server.keys())) {
            let paths: Vec<String> = group.iter().map(|p| p.to_string()).collect();
            if self.reported_collisions.insert(paths.clone()) {
                self.emit(SyncEvent::CaseCollision { paths });
            }
        }
    }

    fn abs(&self, path: &SyncPath) -> PathBuf {
        self.config.dir.join(path.as_str())
    }

    fn tmp_dir(&self) -> PathBuf {
        state_dir(&self.config.dir).join("tmp")
    }

    /// Index a file this client sent: the server's entry, with the size and time the
    /// scan saw locally (so the next scan does not hash it again).
    fn record_sent(&mut self, path: &SyncPath, entry: &ManifestEntry, seen: &LocalEntry) {
        let indexed = IndexEntry {
            dir: false,
            sha256: entry.sha256.clone(),
            size: seen.size,
            modified: seen.modified,
            version: entry.version,
        };
        self.index.insert(path.clone(), indexed);
    }

    fn record_local(&mut self, path: &SyncPath, entry: &ManifestEntry) {
        let (size, modified) = match std::fs::symlink_metadata(self.abs(path)) {
            Ok(m) => (m.len(), scan::mtime_ms(&m)),
            Err(_) => (entry.size, 0),
        };
        self.index.insert(
            path.clone(),
            IndexEntry {
                dir: entry.dir,
                sha256: entry.sha256.clone(),
                size: if entry.dir { 0 } else { size },
                modified,
                version: entry.version,
            },
        );
    }

    async fn execute(
        &mut self,
        action: Action,
        local: &BTreeMap<SyncPath, LocalEntry>,
    ) -> Result<(), SyncError> {
        match action {
            Action::DeleteLocal { path, dir } => {
                check_no_link_above(&self.config.dir, &path)?;
                let abs = self.abs(&path);
                let result = if dir {
                    std::fs::remove_dir(&abs)
                } else {
                    // Kept in the staging directory under its hash until the end of the
                    // settle: when the same content comes back under another name (a
                    // rename elsewhere), the download finds it there and costs nothing.
                    let stashed = self
                        .index
                        .get(&path)
                        .and_then(|e| e.sha256.as_deref())
                        .filter(|sha| is_sha256_hex(sha))
                        .map(|sha| self.tmp_dir().join(sha));
                    match stashed {
                        Some(stash)
                            if std::fs::create_dir_all(self.tmp_dir()).is_ok()
                                && std::fs::rename(&abs, &stash).is_ok() =>
                        {
                            // Its age in the stash counts from now.
                            if let Ok(file) = std::fs::File::options().write(true).open(&stash) {
                                let _ = file.set_modified(SystemTime::now());
                            }
                            Ok(())
                        }
                        _ => std::fs::remove_file(&abs),
                    }
                };
                self.index.remove(&path);
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // A directory that still holds something (ignored files, or new ones):
                    // kept, and forgotten so that the next round re-creates it remotely.
                    Err(_) if dir && abs.is_dir() => {
                        self.skip(
                            path.as_str(),
                            "kept: the directory still holds files (ignored or new)".into(),
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(SyncError::io(&abs, e)),
                }
                self.changes += 1;
                self.emit(SyncEvent::Deleted {
                    path: path.to_string(),
                    side: Side::Local,
                });
            }
            Action::DeleteRemote { path, dir, base } => {
                if dir {
                    // Deleting a directory removes everything below it on the server:
                    // only when nothing (ignored or new) is known there any more.
                    let below = self.view.keys().any(|k| k.starts_with(&path) && *k != path);
                    if below {
                        self.index.remove(&path);
                        return Ok(());
                    }
                }
                match self.remote.delete(&path, base.as_deref()).await? {
                    Outcome::Done(_) => {
                        self.view.remove(&path);
                        self.index.remove(&path);
                        self.changes += 1;
                        self.emit(SyncEvent::Deleted {
                            path: path.to_string(),
                            side: Side::Remote,
                        });
                    }
                    Outcome::Stale(current) => self.stale(&path, current),
                }
            }
            Action::MoveAside { path, to } => {
                check_no_link_above(&self.config.dir, &to)?;
                let (src, dst) = (self.abs(&path), self.abs(&to));
                if dst.exists() {
                    return Err(SyncError::Changed(format!("{to} appeared meanwhile")));
                }
                std::fs::rename(&src, &dst).map_err(|e| SyncError::io(&src, e))?;
                self.changes += 1;
                self.emit(SyncEvent::Conflict {
                    path: path.to_string(),
                    copy: to.to_string(),
                });
            }
            Action::MkdirLocal { path, entry } => {
                check_no_link_above(&self.config.dir, &path)?;
                let abs = self.abs(&path);
                if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(SyncError::Unsafe(format!(
                        "{path} is a symbolic link here; nothing is written through it"
                    )));
                }
                let existed = abs.is_dir();
                std::fs::create_dir_all(&abs).map_err(|e| SyncError::io(&abs, e))?;
                self.record_local(&path, &entry);
                if !existed {
                    self.changes += 1;
                    self.emit(SyncEvent::Created {
                        path: path.to_string(),
                        side: Side::Local,
                    });
                }
            }
            Action::MkdirRemote { path } => {
                let entry = self.remote.mkdir(&path).await?;
                self.view.insert(path.clone(), entry.clone());
                self.record_local(&path, &entry);
                self.changes += 1;
                self.emit(SyncEvent::Created {
                    path: path.to_string(),
                    side: Side::Remote,
                });
            }
            Action::Download { .. } | Action::Upload { .. } => {
                let done = self.transfer(action, local).await;
                self.finish(done?, local)?;
            }
            Action::RenameRemote { from, path, base } => {
                // The server's rename takes no base: check what this client knows first.
                let known = self.view.get(&from).and_then(|e| e.sha256.as_deref());
                if known != Some(base.as_str()) || self.view.contains_key(&path) {
                    return Err(SyncError::Changed(format!(
                        "{from} changed on the server meanwhile; the next round decides again"
                    )));
                }
                let entry = self.remote.rename(&from, &path).await?;
                take_subtree(&mut self.view, &from);
                self.view.insert(path.clone(), entry.clone());
                self.index.remove(&from);
                // Moved content other than ours (changed just before the rename) is not
                // recorded: the next round sees both versions and keeps both.
                if entry.sha256.as_deref() == Some(base.as_str())
                    && let Some(seen) = local.get(&path)
                {
                    self.record_sent(&path, &entry, seen);
                }
                self.changes += 1;
                self.emit(SyncEvent::Renamed {
                    from: from.to_string(),
                    to: path.to_string(),
                    side: Side::Remote,
                });
            }
            Action::Record { path, entry } => self.record_local(&path, &entry),
            Action::Forget { path } => {
                self.index.remove(&path);
            }
        }
        Ok(())
    }

    /// The network half of a download or an upload; it only reads `self`, so that
    /// several run at once ([`TRANSFERS`]).
    async fn transfer(
        &self,
        action: Action,
        local: &BTreeMap<SyncPath, LocalEntry>,
    ) -> Result<Transfer, SyncError> {
        match action {
            Action::Download { path, entry } => {
                check_no_link_above(&self.config.dir, &path)?;
                let (staged, transferred) = self.fetch(&path, &entry).await?;
                Ok(Transfer::Downloaded {
                    path,
                    entry,
                    staged,
                    transferred,
                })
            }
            Action::Upload { path, base } => {
                let Some(seen) = local.get(&path) else {
                    return Ok(Transfer::Nothing);
                };
                let sha = seen.sha256.clone().unwrap_or_default();
                let abs = self.abs(&path);
                let events = self.events.clone();
                let shown = path.to_string();
                let store = state_dir(&self.config.dir).join("uploads.json");
                let (outcome, resumable) = self
                    .remote
                    .upload(
                        &path,
                        &LocalFile {
                            path: &abs,
                            size: seen.size,
                            sha256: &sha,
                        },
                        base.as_deref(),
                        &store,
                        move |loaded, total| {
                            let _ = events.send(SyncEvent::Progress {
                                path: shown.clone(),
                                to: Side::Remote,
                                loaded,
                                total,
                            });
                        },
                    )
                    .await?;
                Ok(Transfer::Uploaded {
                    path,
                    outcome,
                    resumable,
                })
            }
            _ => Ok(Transfer::Nothing),
        }
    }

    /// The local half of a transfer: a download renamed into place, an upload recorded.
    fn finish(
        &mut self,
        done: Transfer,
        local: &BTreeMap<SyncPath, LocalEntry>,
    ) -> Result<(), SyncError> {
        match done {
            Transfer::Nothing => {}
            Transfer::Downloaded {
                path,
                entry,
                staged,
                transferred,
            } => {
                let abs = self.abs(&path);
                check_no_link_above(&self.config.dir, &path)?;
                if let Some(parent) = abs.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| SyncError::io(parent, e))?;
                }
                // What the plan saw locally must still be there: never replace a file
                // edited meanwhile.
                let now = std::fs::symlink_metadata(&abs).ok();
                let seen = local.get(&path);
                let unchanged = match (&now, seen) {
                    (None, _) => true,
                    (Some(m), Some(l)) => {
                        !m.file_type().is_symlink()
                            && m.is_file()
                            && m.len() == l.size
                            && scan::mtime_ms(m) == l.modified
                    }
                    (Some(_), None) => false,
                };
                if !unchanged {
                    return Err(SyncError::Changed(format!(
                        "{path} changed locally meanwhile; the next round decides again"
                    )));
                }
                std::fs::rename(&staged, &abs).map_err(|e| SyncError::io(&abs, e))?;
                if entry.modified > 0
                    && let Ok(file) = std::fs::File::options().write(true).open(&abs)
                {
                    let when = UNIX_EPOCH + Duration::from_millis(entry.modified);
                    let _ = file.set_modified(when);
                }
                self.record_local(&path, &entry);
                self.changes += 1;
                self.emit(SyncEvent::Downloaded {
                    path: path.to_string(),
                    size: entry.size,
                    transferred,
                });
            }
            Transfer::Uploaded {
                path,
                outcome,
                resumable,
            } => {
                let Some(seen) = local.get(&path) else {
                    return Ok(());
                };
                match outcome {
                    Outcome::Done(Some(entry)) => {
                        self.view.insert(path.clone(), entry.clone());
                        self.record_sent(&path, &entry, seen);
                        self.changes += 1;
                        self.emit(SyncEvent::Uploaded {
                            path: path.to_string(),
                            size: seen.size,
                            resumable,
                        });
                    }
                    Outcome::Done(None) => {
                        return Err(SyncError::Protocol(format!(
                            "the server accepted {path} without answering its entry"
                        )));
                    }
                    Outcome::Stale(current) => self.stale(&path, current),
                }
            }
        }
        Ok(())
    }

    /// The server's content was not the base (`412`): take its current entry into the
    /// view; the next round sees a conflict (or agreement) and acts on it.
    fn stale(&mut self, path: &SyncPath, current: Option<ManifestEntry>) {
        match current {
            Some(entry) if !entry.deleted => {
                self.view.insert(path.clone(), entry);
            }
            _ => {
                self.view.remove(path);
            }
        }
        self.emit(SyncEvent::Error {
            path: Some(path.to_string()),
            message: "changed on the server meanwhile; reconciling again".into(),
        });
    }

    /// A verified copy of `entry`'s content in the staging directory: from a local file
    /// with the same content when there is one (a copy or a move on the server costs no
    /// transfer), else downloaded.
    async fn fetch(
        &self,
        path: &SyncPath,
        entry: &ManifestEntry,
    ) -> Result<(PathBuf, u64), SyncError> {
        let tmp = self.tmp_dir();
        if let Some(sha) = entry.sha256.as_deref()
            && let Some(source) = self.local_copy_of(sha)
        {
            std::fs::create_dir_all(&tmp).map_err(|e| SyncError::io(&tmp, e))?;
            let staged = tmp.join(format!("{sha}.copy"));
            if std::fs::copy(&source, &staged).is_ok()
                && scan::hash_file(&staged).is_ok_and(|h| h == sha)
            {
                return Ok((staged, 0));
            }
            let _ = std::fs::remove_file(&staged);
        }
        let events = self.events.clone();
        let shown = path.to_string();
        self.remote
            .download(path, entry, &tmp, move |loaded, total| {
                let _ = events.send(SyncEvent::Progress {
                    path: shown.clone(),
                    to: Side::Local,
                    loaded,
                    total,
                });
            })
            .await
    }

    fn local_copy_of(&self, sha: &str) -> Option<PathBuf> {
        self.index
            .iter()
            .find(|(_, e)| e.sha256.as_deref() == Some(sha))
            .map(|(p, _)| self.abs(p))
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Empty the staging directory of everything but resumable partial downloads
    /// (`*.part`, `*.part.json`): deleted files kept for a rename (once older than
    /// `max_age`), copies, leftovers of a crash.
    pub fn clean_staging(&self, max_age: Option<Duration>) {
        let tmp = self.tmp_dir();
        let Ok(entries) = std::fs::read_dir(&tmp) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") || name.ends_with(".part.json") {
                continue;
            }
            let young = max_age.is_some_and(|max| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < max)
            });
            if !young || name.ends_with(".copy") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

/// Remove `from` and everything below it from `map`; what was removed.
fn take_subtree<V>(map: &mut BTreeMap<SyncPath, V>, from: &SyncPath) -> Vec<(SyncPath, V)> {
    let keys: Vec<SyncPath> = map
        .keys()
        .filter(|k| k.starts_with(from))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

fn rebase(path: &SyncPath, from: &SyncPath, to: &SyncPath) -> Option<SyncPath> {
    let rest = &path.as_str()[from.as_str().len()..];
    SyncPath::parse(&format!("{to}{rest}")).ok()
}

fn entry_from_index(path: &SyncPath, e: &IndexEntry) -> ManifestEntry {
    ManifestEntry {
        path: path.to_string(),
        dir: e.dir,
        size: e.size,
        sha256: e.sha256.clone(),
        modified: e.modified,
        version: e.version,
        deleted: false,
    }
}

fn entry_from_op(path: &SyncPath, op: &FileOp) -> ManifestEntry {
    ManifestEntry {
        path: path.to_string(),
        dir: op.dir,
        size: op.size,
        sha256: op.sha256.clone(),
        modified: op.modified,
        version: op.version,
        deleted: false,
    }
}

/// Today (UTC) as `YYYY-MM-DD`.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    civil_date(days as i64)
}
