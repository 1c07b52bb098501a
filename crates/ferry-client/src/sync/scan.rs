//! The local side: which paths are ignored (gitignore syntax from `.ferryignore` and the
//! caller's patterns), a scan of the folder that hashes only files whose size or
//! modification time changed since the index recorded them, and the file hash itself.
//! Symbolic links are never followed: a scan skips them and reports them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use ferry_proto::sync::plan::{IndexEntry, LocalEntry};
use ferry_proto::sync::{STATE_DIR, SyncPath};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

use super::SyncError;

/// The file in the top of a synced folder that holds ignore patterns.
pub const IGNORE_FILE: &str = ".ferryignore";

/// Ignore patterns: `.ferryignore` at the top of the folder plus extra ones.
#[derive(Debug, Clone)]
pub(crate) struct Ignore {
    matcher: Gitignore,
    /// A digest of every pattern, to notice when they change between runs.
    pub digest: String,
}

impl Ignore {
    /// Read `DIR/.ferryignore` (if any) and add `extra`.
    pub fn load(dir: &Path, extra: &[String]) -> Result<Ignore, SyncError> {
        let mut builder = GitignoreBuilder::new(dir);
        let file = dir.join(IGNORE_FILE);
        let mut all = String::new();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for line in text.lines() {
                    builder
                        .add_line(Some(file.clone()), line)
                        .map_err(|e| SyncError::Ignore(format!("{}: {e}", file.display())))?;
                }
                all.push_str(&text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::io(&file, e)),
        }
        for pattern in extra {
            builder
                .add_line(None, pattern)
                .map_err(|e| SyncError::Ignore(format!("--ignore {pattern:?}: {e}")))?;
            all.push('\n');
            all.push_str(pattern);
        }
        let matcher = builder
            .build()
            .map_err(|e| SyncError::Ignore(e.to_string()))?;
        Ok(Ignore {
            matcher,
            digest: hex(&Sha256::digest(all.as_bytes())),
        })
    }

    /// Whether `path` (or a directory above it) is ignored.
    pub fn is_ignored(&self, path: &SyncPath, dir: bool) -> bool {
        self.matcher
            .matched_path_or_any_parents(path.as_str(), dir)
            .is_ignore()
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub entries: BTreeMap<SyncPath, LocalEntry>,
    /// Paths not synced and why (symbolic links, names the path rule refuses).
    pub skipped: Vec<(String, String)>,
    /// Bytes hashed because the file was new or changed.
    pub hashed: u64,
}

/// Walk `dir` (blocking: run it on a blocking thread).
pub(crate) fn scan(
    dir: &Path,
    ignore: &Ignore,
    index: &BTreeMap<SyncPath, IndexEntry>,
) -> Result<Scan, SyncError> {
    let mut out = Scan::default();
    walk(dir, None, ignore, index, &mut out)?;
    Ok(out)
}

/// Bring `previous` (an earlier scan) up to date for the paths a watcher reported as
/// changed: each is examined again, with everything below it when it is a directory, and
/// its parents are added when they are new. Blocking.
pub(crate) fn rescan(
    dir: &Path,
    ignore: &Ignore,
    index: &BTreeMap<SyncPath, IndexEntry>,
    previous: BTreeMap<SyncPath, LocalEntry>,
    changed: &BTreeSet<SyncPath>,
) -> Result<Scan, SyncError> {
    let mut out = Scan {
        entries: previous,
        ..Scan::default()
    };
    for path in changed {
        remove_subtree(&mut out.entries, path);
        let mut ancestors: Vec<SyncPath> = Vec::new();
        let mut cur = path.parent();
        while let Some(parent) = cur {
            cur = parent.parent();
            ancestors.push(parent);
        }
        for ancestor in ancestors.into_iter().rev() {
            if !out.entries.contains_key(&ancestor) {
                examine(dir, &ancestor, ignore, index, &mut out)?;
            }
        }
        if examine(dir, path, ignore, index, &mut out)? == Some(true) {
            walk(dir, Some(path.clone()), ignore, index, &mut out)?;
        }
    }
    // The watcher may fold "created, then renamed" into one create of the new name (the
    // debouncer rewrites events still pending), so the old name is never reported: drop
    // what is gone from the directories the changed paths live in.
    let parents: BTreeSet<Option<SyncPath>> = changed.iter().map(SyncPath::parent).collect();
    for parent in parents {
        let abs = parent
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |p| dir.join(p.as_str()));
        let present: std::collections::HashSet<std::ffi::OsString> = match std::fs::read_dir(&abs) {
            Ok(reader) => reader
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(SyncError::io(&abs, e)),
        };
        // The direct children the scan holds, found by prefix (no walk over every entry).
        let children: Vec<&SyncPath> = match &parent {
            None => out
                .entries
                .keys()
                .filter(|k| !k.as_str().contains('/'))
                .collect(),
            Some(p) => out
                .entries
                .range(p.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.as_str().starts_with(p.as_str()))
                .filter(|k| {
                    k.as_str()
                        .strip_prefix(p.as_str())
                        .and_then(|rest| rest.strip_prefix('/'))
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .collect(),
        };
        let gone: Vec<SyncPath> = children
            .into_iter()
            .filter(|k| !present.contains(std::ffi::OsStr::new(k.file_name())))
            .cloned()
            .collect();
        for path in gone {
            remove_subtree(&mut out.entries, &path);
        }
    }
    Ok(out)
}

/// Drop `path` and everything below it, found by prefix (no walk over every entry).
fn remove_subtree(entries: &mut BTreeMap<SyncPath, LocalEntry>, path: &SyncPath) {
    let below: Vec<SyncPath> = entries
        .range(path.clone()..)
        .map(|(k, _)| k)
        .take_while(|k| k.as_str().starts_with(path.as_str()))
        .filter(|k| k.starts_with(path))
        .cloned()
        .collect();
    for k in below {
        entries.remove(&k);
    }
}

/// Scan everything below `start` (the folder itself for `None`) into `out`.
fn walk(
    dir: &Path,
    start: Option<SyncPath>,
    ignore: &Ignore,
    index: &BTreeMap<SyncPath, IndexEntry>,
    out: &mut Scan,
) -> Result<(), SyncError> {
    let mut stack: Vec<Option<SyncPath>> = vec![start];
    while let Some(rel) = stack.pop() {
        let abs = match &rel {
            Some(rel) => dir.join(rel.as_str()),
            None => dir.to_path_buf(),
        };
        let reader = match std::fs::read_dir(&abs) {
            Ok(r) => r,
            // Removed while we walked: the watcher will tell us again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SyncError::io(&abs, e)),
        };
        for item in reader {
            let item = item.map_err(|e| SyncError::io(&abs, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                out.skipped.push((
                    item.path().display().to_string(),
                    "the name is not UTF-8".into(),
                ));
                continue;
            };
            if rel.is_none() && name == STATE_DIR {
                continue;
            }
            let joined = match &rel {
                Some(parent) => format!("{parent}/{name}"),
                None => name.to_string(),
            };
            let path = match SyncPath::parse(&joined) {
                Ok(p) => p,
                Err(e) => {
                    out.skipped.push((joined, e.reason.to_string()));
                    continue;
                }
            };
            if examine(dir, &path, ignore, index, out)? == Some(true) {
                stack.push(Some(path));
            }
        }
    }
    Ok(())
}

/// Look at one path and record it in `out`: `Some(is_dir)` when it is synced, `None`
/// when it is absent, ignored or skipped (links, special files).
fn examine(
    dir: &Path,
    path: &SyncPath,
    ignore: &Ignore,
    index: &BTreeMap<SyncPath, IndexEntry>,
    out: &mut Scan,
) -> Result<Option<bool>, SyncError> {
    let abs = dir.join(path.as_str());
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SyncError::io(&abs, e)),
    };
    if meta.file_type().is_symlink() {
        out.skipped
            .push((path.to_string(), "a symbolic link (never followed)".into()));
        return Ok(None);
    }
    let is_dir = meta.is_dir();
    if !is_dir && !meta.is_file() {
        out.skipped
            .push((path.to_string(), "not a regular file".into()));
        return Ok(None);
    }
    if ignore.is_ignored(path, is_dir) {
        return Ok(None);
    }
    let modified = mtime_ms(&meta);
    if is_dir {
        let entry = LocalEntry {
            dir: true,
            sha256: None,
            size: 0,
            modified,
        };
        out.entries.insert(path.clone(), entry);
        return Ok(Some(true));
    }
    let size = meta.len();
    let known = index
        .get(path)
        .filter(|e| !e.dir && e.size == size && e.modified == modified)
        .and_then(|e| e.sha256.clone());
    let sha256 = match known {
        Some(sha) => sha,
        None => match hash_file(&abs) {
            Ok(sha) => {
                out.hashed += size;
                sha
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SyncError::io(&abs, e)),
        },
    };
    let entry = LocalEntry {
        dir: false,
        sha256: Some(sha256),
        size,
        modified,
    };
    out.entries.insert(path.clone(), entry);
    Ok(Some(false))
}

/// Modification time in milliseconds since the Unix epoch (0 when unknown).
pub(crate) fn mtime_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lowercase hex sha256 of a file's content.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuse to write at `path` inside `dir` when a component above it is a symbolic link
/// (or not a directory): a link planted in the folder must not carry a write outside it.
pub(crate) fn check_no_link_above(dir: &Path, path: &SyncPath) -> Result<(), SyncError> {
    let mut cur = dir.to_path_buf();
    let components: Vec<&str> = path.components().collect();
    for component in &components[..components.len().saturating_sub(1)] {
        cur.push(component);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SyncError::Unsafe(format!(
                    "{path}: {} is a symbolic link; nothing is written through it",
                    cur.display()
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(SyncError::Unsafe(format!(
                    "{path}: {} is not a directory",
                    cur.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SyncError::io(&cur, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SyncPath {
        SyncPath::parse(s).expect("valid path")
    }

    /// A temporary folder holding each (relative path, content), with the directories
    /// they need.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        dir
    }

    /// The debouncer can fold "created, then renamed" into one create of the new name;
    /// the old name, never reported, must not survive the rescan.
    #[test]
    fn a_rename_reported_only_by_its_new_name_drops_the_old_one() {
        let dir = tree(&[("top.txt", "top"), ("d/in.txt", "in"), ("d/stays.txt", "s")]);
        let root = dir.path();
        let ignore = Ignore::load(root, &[]).expect("ignore");
        let before = scan(root, &ignore, &BTreeMap::new()).expect("scan");
        std::fs::rename(root.join("top.txt"), root.join("renamed.txt")).expect("rename");
        std::fs::rename(root.join("d/in.txt"), root.join("d/out.txt")).expect("rename");
        let changed: BTreeSet<SyncPath> = [p("renamed.txt"), p("d/out.txt")].into();
        let after =
            rescan(root, &ignore, &BTreeMap::new(), before.entries, &changed).expect("rescan");
        let paths: Vec<&str> = after.entries.keys().map(|p| p.as_str()).collect();
        assert_eq!(paths, ["d", "d/out.txt", "d/stays.txt", "renamed.txt"]);
    }

    #[test]
    fn scan_hashes_skips_links_and_honours_ignores() {
        let dir = tree(&[
            ("a/b/f.txt", "hello"),
            ("x.log", "noise"),
            ("build/out", "noise"),
            (IGNORE_FILE, "*.log\nbuild/\n"),
        ]);
        let root = dir.path();
        std::fs::create_dir_all(root.join(STATE_DIR)).expect("mkdir");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", root.join("link")).expect("symlink");
        let ignore = Ignore::load(root, &["*.tmp".into()]).expect("ignore");
        std::fs::write(root.join("y.tmp"), "noise").expect("write");
        let found = scan(root, &ignore, &BTreeMap::new()).expect("scan");
        let paths: Vec<&str> = found.entries.keys().map(|p| p.as_str()).collect();
        assert_eq!(paths, [".ferryignore", "a", "a/b", "a/b/f.txt"]);
        assert_eq!(
            found.entries[&p("a/b/f.txt")].sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        #[cfg(unix)]
        assert!(
            found.skipped.iter().any(|(p, _)| p == "link"),
            "{:?}",
            found.skipped
        );
        #[cfg(unix)]
        assert!(check_no_link_above(root, &p("link/passwd")).is_err());
        assert!(check_no_link_above(root, &p("a/b/new")).is_ok());

        // Incremental: a new directory with a file, a removed file, nothing else read.
        std::fs::create_dir_all(root.join("n/m")).expect("mkdir");
        std::fs::write(root.join("n/m/g.txt"), "new").expect("write");
        std::fs::remove_file(root.join("a/b/f.txt")).expect("remove");
        let changed = BTreeSet::from([p("n"), p("a/b/f.txt")]);
        let again =
            rescan(root, &ignore, &BTreeMap::new(), found.entries, &changed).expect("rescan");
        let paths: Vec<&str> = again.entries.keys().map(|p| p.as_str()).collect();
        assert_eq!(paths, [".ferryignore", "a", "a/b", "n", "n/m", "n/m/g.txt"]);
        assert_eq!(again.hashed, 3);
    }
}
