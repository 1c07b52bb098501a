//! What a sync client keeps in `DIR/.ferry-sync/`: the index (per path, the state both
//! sides last agreed on), the channel position and root version it has applied, and its
//! source id. Written atomically (a temporary file renamed over the old one), so a crash
//! leaves either the old state or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_proto::sync::plan::IndexEntry;
use ferry_proto::sync::{STATE_DIR, SyncPath, Version};
use serde::{Deserialize, Serialize};

use super::SyncError;

/// The format of `state.json`; a different one is refused rather than misread.
const FORMAT: u32 = 1;

/// A saved channel position (the offset and epoch of the last operation applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedPosition {
    pub offset: u64,
    pub epoch: String,
}

/// `DIR/.ferry-sync/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncState {
    pub format: u32,
    /// The server and root this folder is paired with (`http://host:port/ROOT`).
    pub remote: String,
    /// This client's source id, echoed in the operations it causes.
    pub source: String,
    /// The root's channel, known after the first manifest.
    #[serde(default)]
    pub channel: Option<String>,
    /// Operations up to this position are reflected in `index`.
    #[serde(default)]
    pub position: Option<SavedPosition>,
    /// The root version `index` reflects (for a manifest delta when recovery fails).
    #[serde(default)]
    pub version: Version,
    /// A digest of the ignore patterns `index` was built with; when they change, a full
    /// manifest is read again (paths ignored before may now be wanted).
    #[serde(default)]
    pub ignore_digest: String,
    /// Per path, the state both sides agreed on.
    #[serde(default)]
    pub index: BTreeMap<String, IndexEntry>,
}

/// Where the state lives.
pub(crate) fn state_dir(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR)
}

impl SyncState {
    /// A fresh state with a new random source id.
    pub fn new(remote: &str) -> SyncState {
        let id: u64 = rand::random();
        SyncState {
            format: FORMAT,
            remote: remote.to_string(),
            source: format!("c-{id:016x}"),
            channel: None,
            position: None,
            version: 0,
            ignore_digest: String::new(),
            index: BTreeMap::new(),
        }
    }

    /// Load the state of `dir`, or a fresh one. A folder paired with another server or
    /// root is refused: mixing two roots' histories would delete the wrong files.
    pub fn load(dir: &Path, remote: &str) -> Result<SyncState, SyncError> {
        let path = state_dir(dir).join("state.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SyncState::new(remote));
            }
            Err(e) => return Err(SyncError::io(&path, e)),
        };
        let state: SyncState = serde_json::from_str(&text).map_err(|e| {
            SyncError::State(format!("{} is not a ferry sync state: {e}", path.display()))
        })?;
        if state.format != FORMAT {
            return Err(SyncError::State(format!(
                "{} has format {}, this ferry reads {FORMAT}",
                path.display(),
                state.format
            )));
        }
        if state.remote != remote {
            return Err(SyncError::State(format!(
                "{} is paired with {}, not {remote}; sync another folder, or remove {} to pair it anew",
                dir.display(),
                state.remote,
                state_dir(dir).display()
            )));
        }
        Ok(state)
    }

    /// The index with parsed paths; entries a hand-edited file made invalid are dropped.
    pub fn parsed_index(&self) -> BTreeMap<SyncPath, IndexEntry> {
        self.index
            .iter()
            .filter_map(|(k, v)| SyncPath::parse(k).ok().map(|p| (p, v.clone())))
            .collect()
    }

    /// Write atomically to `dir/.ferry-sync/state.json`.
    pub fn save(&self, dir: &Path) -> Result<(), SyncError> {
        let sdir = state_dir(dir);
        std::fs::create_dir_all(&sdir).map_err(|e| SyncError::io(&sdir, e))?;
        let path = sdir.join("state.json");
        let tmp = sdir.join("state.json.tmp");
        let text = serde_json::to_vec(self)
            .map_err(|e| SyncError::State(format!("cannot encode the sync state: {e}")))?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| SyncError::io(&tmp, e))?;
        file.write_all(&text).map_err(|e| SyncError::io(&tmp, e))?;
        file.sync_all().map_err(|e| SyncError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| SyncError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_another_remote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = SyncState::new("http://127.0.0.1:1/a");
        state.index.insert(
            "x".into(),
            IndexEntry {
                dir: false,
                sha256: Some("0".repeat(64)),
                size: 1,
                modified: 2,
                version: 3,
            },
        );
        state.save(dir.path()).expect("save");
        let back = SyncState::load(dir.path(), "http://127.0.0.1:1/a").expect("load");
        assert_eq!(back.source, state.source);
        assert_eq!(back.parsed_index().len(), 1);
        let err = SyncState::load(dir.path(), "http://127.0.0.1:1/b").expect_err("other root");
        assert!(err.to_string().contains("paired with"), "{err}");
    }
}
