//! The state file that remembers, per discovery target, the last address that worked
//! (SPEC L3). A small JSON document, written atomically (temporary file + rename):
//!
//! ```json
//! {"version":1,"targets":{"_any":{"url":"ws://10.0.0.5:8080/ws","name":"kitchen","saved_at":1767225600}}}
//! ```
//!
//! A missing or unreadable file is the same as an empty one: discovery runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default state file: `discovery.json` in `ferry/` under the platform's data
/// directory (`$XDG_DATA_HOME` or `~/.local/share` on Linux and other Unix systems,
/// `~/Library/Application Support` on macOS, `%LOCALAPPDATA%` on Windows); `None` when
/// none of those is known.
pub fn default_state_path() -> Option<PathBuf> {
    let base = if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Library/Application Support"))
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
    }?;
    Some(base.join("ferry").join("discovery.json"))
}

/// What is remembered for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    /// The WebSocket URL that last worked (no token).
    pub url: String,
    /// The node name of the hub behind it.
    pub name: String,
    /// When it last worked, seconds since the Unix epoch.
    pub saved_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    targets: BTreeMap<String, Remembered>,
}

async fn read(path: &Path) -> StateFile {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(%error, path = %path.display(), "ignoring an unreadable discovery state file");
            StateFile::default()
        }),
        Err(_) => StateFile::default(),
    }
}

/// The remembered entry for `target`, if any.
pub(crate) async fn load(path: &Path, target: &str) -> Option<Remembered> {
    read(path).await.targets.remove(target)
}

/// Remember `entry` for `target`, keeping the other targets.
pub(crate) async fn save(path: &Path, target: &str, entry: Remembered) -> std::io::Result<()> {
    let mut state = read(path).await;
    if state.targets.get(target) == Some(&entry) {
        return Ok(());
    }
    state.version = 1;
    state.targets.insert(target.to_string(), entry);
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(dir).await?;
    }
    let json = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_loads_and_survives_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/discovery.json");
        assert_eq!(load(&path, "_any").await, None);
        let entry = Remembered {
            url: "ws://10.0.0.5:8080/ws".into(),
            name: "kitchen".into(),
            saved_at: 1,
        };
        save(&path, "_any", entry.clone()).await.expect("save");
        save(&path, "other", entry.clone()).await.expect("save");
        assert_eq!(load(&path, "_any").await, Some(entry.clone()));
        assert_eq!(load(&path, "other").await, Some(entry));
        tokio::fs::write(&path, b"{not json").await.expect("write");
        assert_eq!(load(&path, "_any").await, None);
    }
}
