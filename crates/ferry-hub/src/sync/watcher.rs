//! The server's watcher: notify (inotify, FSEvents, ...) through notify-debouncer-full,
//! which coalesces a burst of events per path and pairs the two halves of a rename. Each
//! debounced batch becomes the set of paths it touched (plus the renames it saw), which
//! the root compares with its index ([`SyncRoot::reconcile`]); so the watcher never
//! trusts an event's kind, only the disk. An overflow (`need_rescan`) or a watcher error
//! triggers a full rescan. Links are not followed; `.ferry-sync/` is ignored.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferry_proto::sync::STATE_DIR;
use ferry_proto::sync::SyncPath;
use notify_debouncer_full::notify::event::{ModifyKind, RenameMode};
use notify_debouncer_full::notify::{self, EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer_opt};

use super::root::SyncRoot;

/// How long a path must be quiet before its events are handled: long enough that a file
/// being written in several calls is reported once, short enough to feel live.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What one batch asks the root to compare.
#[derive(Debug, Default)]
struct Work {
    /// Compare the whole root.
    rescan: bool,
    /// Compare these paths (and what is below them).
    paths: Vec<SyncPath>,
    /// Renames reported (from, to).
    renames: Vec<(SyncPath, SyncPath)>,
}

impl Work {
    fn is_empty(&self) -> bool {
        !self.rescan && self.paths.is_empty()
    }
}

/// Start watching `root`; the watcher stops with the hub's shutdown or when the root is
/// dropped.
pub(super) fn start(root: &Arc<SyncRoot>) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer_opt::<
        _,
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >(
        DEBOUNCE,
        None,
        move |result: DebounceEventResult| {
            let _ = tx.send(result);
        },
        notify_debouncer_full::RecommendedCache::new(),
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| format!("cannot start the watcher: {e}"))?;
    debouncer
        .watch(root.dir(), RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", root.dir().display()))?;
    let weak: Weak<SyncRoot> = Arc::downgrade(root);
    let stop = root.hub().shutdown_token().clone();
    tokio::spawn(async move {
        // Owned by the task: dropping it (shutdown) stops the watcher thread.
        let _debouncer = debouncer;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                batch = rx.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
            };
            let Some(root) = weak.upgrade() else { return };
            let mut work = Work::default();
            collect(root.dir(), first, &mut work);
            // Whatever else is already queued goes into the same pass.
            while let Ok(more) = rx.try_recv() {
                collect(root.dir(), more, &mut work);
            }
            if work.is_empty() {
                continue;
            }
            let scope = (!work.rescan).then_some(work.paths);
            if let Err(e) = root.reconcile(scope, work.renames).await {
                tracing::warn!(root = %root.name(), error = %e, "sync: applying changes seen on disk failed; rescanning");
                if let Err(e) = root.reconcile(None, Vec::new()).await {
                    tracing::error!(root = %root.name(), error = %e, "sync: rescan failed");
                }
            }
        }
    });
    Ok(())
}

/// Add what a debounced batch touched to `work`.
fn collect(root: &Path, batch: DebounceEventResult, work: &mut Work) {
    let events = match batch {
        Ok(events) => events,
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "sync: watcher error; rescanning the root");
            }
            work.rescan = true;
            return;
        }
    };
    for event in events {
        if event.need_rescan() {
            tracing::info!(root = %root.display(), "sync: the watcher lost events; rescanning the root");
            work.rescan = true;
            continue;
        }
        if matches!(event.kind, EventKind::Access(_)) {
            continue;
        }
        let paths: Vec<SyncPath> = event
            .paths
            .iter()
            .filter_map(|p| relative(root, p))
            .collect();
        if let EventKind::Modify(ModifyKind::Name(RenameMode::Both)) = event.kind
            && let [from, to] = paths.as_slice()
        {
            work.renames.push((from.clone(), to.clone()));
        }
        for p in paths {
            if !work.paths.contains(&p) {
                work.paths.push(p);
            }
        }
    }
}

/// `full` as a path of the root; `None` for the root itself, the state directory and
/// names that break the path rule.
fn relative(root: &Path, full: &Path) -> Option<SyncPath> {
    let rel = full.strip_prefix(root).ok()?;
    let text = rel.to_str()?;
    if text.is_empty() || text == STATE_DIR || text.starts_with(&format!("{STATE_DIR}/")) {
        return None;
    }
    SyncPath::parse(text).ok()
}
