//! File sync, the server half (SPEC F1, F2, F4): roots on this machine's disk, each with
//! an index of its paths and versions, a watcher that turns changes made on the disk into
//! operations, and the operations the `/sync/` routes ask for. Every change of a root, from
//! either side, is published on the root's channel as a [`FileOp`] in version order.
//!
//! - `index.rs`: the SQLite index (paths, versions, tombstones) behind the manifest.
//! - `disk.rs`: the only code that touches a root's files: paths resolved without ever
//!   going through a symlink, staging files, hashing, the scan walk.
//! - `root.rs`: one root's operations under one lock (version, index, publish);
//!   `root/reconcile.rs` compares the disk with the index and records the difference.
//! - `watcher.rs`: notify + notify-debouncer-full; a rescan on overflow or error.
//!
//! The HTTP side is `transports/sync.rs`. The format (FileOp, manifest, the path rule) is
//! `ferry_proto::sync`; docs/PROTOCOL.md ("File sync") describes it.
//!
//! [`FileOp`]: ferry_proto::sync::FileOp

mod disk;
pub mod index;
pub mod root;
mod watcher;

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_proto::sync::ManifestEntry;

pub use root::SyncRoot;

use crate::error::SetupError;
use crate::hub::Hub;

/// Why a sync operation was refused or failed: the HTTP status, a stable code and a
/// message that says what to do; a 412 carries the server's current entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SyncError {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`INVALID_PATH`, `NOT_FOUND`, `EXISTS`, `CASE_COLLISION`, `CONFLICT`,
    /// `TOO_LARGE`, `ROOT_FULL`, `SYMLINK`, `NOT_A_DIRECTORY`, `IS_A_DIRECTORY`,
    /// `CHECKSUM_MISMATCH`, `INVALID_REQUEST`, `INTERNAL_ERROR`, and the hub's auth codes).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// For `CONFLICT` (412): the server's current entry of the path (a tombstone,
    /// `deleted: true`, when it does not exist).
    pub current: Option<Box<ManifestEntry>>,
}

impl SyncError {
    /// An error without an entry.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        SyncError {
            status,
            code,
            message: message.into(),
            current: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        SyncError::new(400, "INVALID_REQUEST", message)
    }

    pub(crate) fn not_found(path: &str) -> Self {
        SyncError::new(404, "NOT_FOUND", format!("{path:?} does not exist"))
    }

    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "sync: {what}");
        SyncError::new(500, "INTERNAL_ERROR", format!("server error while {what}"))
    }
}

impl From<ferry_proto::sync::PathError> for SyncError {
    fn from(e: ferry_proto::sync::PathError) -> Self {
        SyncError::new(400, "INVALID_PATH", e.to_string())
    }
}

impl From<index::IndexError> for SyncError {
    fn from(e: index::IndexError) -> Self {
        SyncError::internal("using the sync index", e)
    }
}

/// The roots a hub serves, by name.
#[derive(Clone, Default)]
pub struct SyncRoots(Arc<BTreeMap<String, Arc<SyncRoot>>>);

impl SyncRoots {
    /// Open every configured root: check its directory and channel, open its index, start
    /// its watcher and scan it (publishing only what changed while the hub was down).
    /// Watchers stop with the hub's shutdown.
    pub async fn open(hub: &Hub) -> Result<SyncRoots, SetupError> {
        let config = hub.config().clone();
        config.sync.check()?;
        let mut roots = BTreeMap::new();
        for root in &config.sync.roots {
            let opened = SyncRoot::open(hub, root)
                .await
                .map_err(SetupError::Config)?;
            roots.insert(root.name.clone(), opened);
        }
        Ok(SyncRoots(Arc::new(roots)))
    }

    /// The root called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<SyncRoot>> {
        self.0.get(name)
    }

    /// Whether no root is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every root, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SyncRoot>> {
        self.0.values()
    }
}
