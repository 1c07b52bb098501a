//! File sync (SPEC F1–F4), sans-IO: the operations a sync root publishes on its channel,
//! the manifest the server lists, the rules a relative path must pass on both sides, and
//! the name of a conflict copy. The hub's `/sync/{root}/` transport, its watcher and the
//! client's `SyncClient` all use these, so the format has one definition; docs/PROTOCOL.md
//! ("File sync") is the normative description.
//!
//! Versions: every change to a root (from the API or seen by the server's watcher) gets
//! the root's next [`Version`], a counter persisted with the root's index. A client keeps,
//! per path, the version it last agreed on with the server; the manifest can be read as a
//! delta since a version, tombstones included, so a client that was away fetches only
//! what changed.

mod path;
pub mod plan;

pub use path::{PathError, STATE_DIR, SyncPath, conflict_copy_name};

use serde::{Deserialize, Serialize};

/// The root's change counter: strictly increasing, one step per operation.
pub type Version = u64;

/// Header a client sends on every mutating `/sync/` request: its source id, echoed in
/// the published operation so that the client can ignore its own echoes.
pub const SOURCE_HEADER: &str = "x-ferry-sync-source";

/// Header with the content hash (lowercase hex sha256) the client based a change on, or
/// `none` for "the path does not exist on the server". A mismatch is answered 412 and the
/// client keeps a conflict copy instead of overwriting.
pub const BASE_HEADER: &str = "x-ferry-sync-base";

/// The source id of changes the server's watcher saw (made on the server's disk).
pub const SERVER_SOURCE: &str = "server";

/// Largest page of a manifest a server returns.
pub const MAX_MANIFEST_PAGE: usize = 10_000;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A file was created or its content changed; a directory was created.
    Put,
    /// A file or directory (with everything below it) was removed.
    Delete,
    /// A file or directory moved from `from` to `path`, content unchanged.
    Rename,
}

/// One operation on a sync root, the `data` of a publication on the root's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// What happened.
    pub op: OpKind,
    /// The path it happened to (the destination of a rename), relative to the root,
    /// `/`-separated.
    pub path: String,
    /// For a rename: the path it moved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Whether the path is a directory.
    #[serde(default)]
    pub dir: bool,
    /// Size in bytes (0 for directories and deletions).
    #[serde(default)]
    pub size: u64,
    /// Lowercase hex sha256 of the content; `None` for directories and deletions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Modification time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub modified: u64,
    /// The root's version after this operation.
    pub version: Version,
    /// Who made the change: a client's source id, or [`SERVER_SOURCE`].
    pub source: String,
}

/// One path in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative, `/`-separated path.
    pub path: String,
    /// Whether it is a directory.
    #[serde(default)]
    pub dir: bool,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Lowercase hex sha256 of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Modification time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub modified: u64,
    /// The root version that last changed this path.
    pub version: Version,
    /// A tombstone: the path was deleted at `version` (only in a delta, `since` > 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The answer to `GET /sync/{root}/manifest?since=V&after=PATH&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPage {
    /// The root's version when the page was read.
    pub version: Version,
    /// The root's channel, for live operations.
    pub channel: String,
    /// Entries ordered by path; with `since`, only those changed after it (tombstones
    /// included).
    pub entries: Vec<ManifestEntry>,
    /// Pass as `after` to read the next page; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The body of `POST /sync/{root}/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameRequest {
    /// Current path.
    pub from: String,
    /// New path; must not exist.
    pub to: String,
}

/// The body of `POST /sync/{root}/commit`: move a finished tus upload into the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The tus upload id (the last segment of its URL).
    pub upload: String,
    /// Where the file goes.
    pub path: String,
    /// The sha256 the client computed; the server checks it before moving the file.
    pub sha256: String,
}

/// Whether `sha` is a lowercase hex sha256.
pub fn is_sha256_hex(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_round_trips_through_json() {
        let op = FileOp {
            op: OpKind::Rename,
            path: "b/c.txt".into(),
            from: Some("a.txt".into()),
            dir: false,
            size: 3,
            sha256: Some("a".repeat(64)),
            modified: 1,
            version: 7,
            source: "c1".into(),
        };
        let text = serde_json::to_string(&op).expect("encodes");
        assert!(text.contains(r#""op":"rename""#), "{text}");
        assert_eq!(serde_json::from_str::<FileOp>(&text).expect("decodes"), op);
    }

    #[test]
    fn sha_hex_is_checked() {
        assert!(is_sha256_hex(&"0f".repeat(32)));
        assert!(!is_sha256_hex(&"0F".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
