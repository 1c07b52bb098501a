//! The three-way reconcile planner of a sync client, sans-IO: from the local index (the
//! base both sides last agreed on), a scan of the local folder and the server's manifest,
//! the list of [`Action`]s that brings the folder and the server together without losing
//! content. The client executes the actions in order, rescans and plans again until a
//! plan is empty; a round whose preconditions turned out stale (a `412` on upload, a
//! download whose hash differs) is simply planned again from fresh state.
//!
//! Per path, with `B` the base, `L` the local disk and `R` the server (each: absent, a
//! directory, or a file with a sha256):
//!
//! | case | action |
//! |---|---|
//! | `L == R` | record `R` in the index (or forget the path when both are absent) |
//! | only `R` changed (`L == B`) | download / make the directory / delete locally |
//! | only `L` changed (`R == B`) | upload with base `B` / make the directory / delete remotely |
//! | `L` deleted, `R` modified | the modification wins: download |
//! | `R` deleted, `L` modified | the modification wins: upload (base `none`) |
//! | both changed, differently | the server wins the path; the local version is moved aside as a conflict copy and uploaded as a new file |
//!
//! Directories: a directory is deleted (on either side) only when nothing below it
//! survives; otherwise it is re-created where it was deleted. When one side turned a
//! directory into a file (or back), the old one is removed first when nothing in it
//! survives, else the case is a conflict and the local one is moved aside.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{ManifestEntry, SyncPath, Version, conflict_copy_name};

/// What the local index keeps per path: the state both sides last agreed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Whether it is a directory.
    #[serde(default)]
    pub dir: bool,
    /// Lowercase hex sha256 of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size in bytes of the local file when it was recorded.
    #[serde(default)]
    pub size: u64,
    /// Local modification time (ms since the Unix epoch) when it was recorded; with
    /// `size` it lets a scan reuse `sha256` instead of hashing an unchanged file again.
    #[serde(default)]
    pub modified: u64,
    /// The server's version of the path when it was recorded.
    #[serde(default)]
    pub version: Version,
}

/// A path as a scan of the local folder found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Whether it is a directory.
    pub dir: bool,
    /// Lowercase hex sha256 of a file's content (`None` for a directory).
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ms since the Unix epoch.
    pub modified: u64,
}

/// One step of a plan, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove the local file, or the local directory if it is empty by then (a
    /// directory that still holds something is kept and forgotten). Then forget the path.
    DeleteLocal {
        /// The path.
        path: SyncPath,
        /// Whether it is a directory.
        dir: bool,
    },
    /// `DELETE` the path on the server with `base` (a file's sha256, `None` for a
    /// directory, which is deleted only when nothing new appeared below it). Then forget
    /// the path.
    DeleteRemote {
        /// The path.
        path: SyncPath,
        /// Whether it is a directory.
        dir: bool,
        /// The content the deletion is based on.
        base: Option<String>,
    },
    /// A conflict: move the local file or directory at `path` aside to `to` (a free
    /// conflict-copy name); the server's version then takes `path` by the actions that
    /// follow, and the copy is uploaded as a new path (in this plan for a file, in the
    /// next round for a directory's content).
    MoveAside {
        /// The path both sides changed.
        path: SyncPath,
        /// The conflict copy's path.
        to: SyncPath,
    },
    /// Create the directory locally (and its parents), then record `entry`.
    MkdirLocal {
        /// The path.
        path: SyncPath,
        /// The server's entry.
        entry: ManifestEntry,
    },
    /// `PUT dirs/{path}` on the server, then record the answer.
    MkdirRemote {
        /// The path.
        path: SyncPath,
    },
    /// Download the server's file to a staging file, check its sha256 against `entry`,
    /// rename it into place, then record `entry`.
    Download {
        /// The path.
        path: SyncPath,
        /// The server's entry.
        entry: ManifestEntry,
    },
    /// Upload the local file at `path` with `x-ferry-sync-base: base` (`None` = the path
    /// must not exist on the server), then record the answer. A `412` means the server
    /// changed meanwhile: the next round sees a conflict.
    Upload {
        /// The path.
        path: SyncPath,
        /// The content the upload is based on.
        base: Option<String>,
    },
    /// Both sides already agree: record `entry` in the index.
    Record {
        /// The path.
        path: SyncPath,
        /// The server's entry.
        entry: ManifestEntry,
    },
    /// Neither side has the path any more: drop it from the index.
    Forget {
        /// The path.
        path: SyncPath,
    },
    /// A local rename: `from` was deleted here and a file with the content `from` had
    /// (`base`) appeared at `path`, which the server does not have. `POST rename` moves
    /// it on the server instead of a delete and an upload; done first, before deletions
    /// empty the directories it leaves. If the server's `from` is no longer `base`, or
    /// the rename is refused, the next round plans again (a delete against a
    /// modification keeps the modification).
    RenameRemote {
        /// The old path.
        from: SyncPath,
        /// The new path.
        path: SyncPath,
        /// The content both had.
        base: String,
    },
}

impl Action {
    /// The path the action is about (for a conflict, the contested one).
    pub fn path(&self) -> &SyncPath {
        match self {
            Action::DeleteLocal { path, .. }
            | Action::DeleteRemote { path, .. }
            | Action::MoveAside { path, .. }
            | Action::MkdirRemote { path }
            | Action::Upload { path, .. }
            | Action::Forget { path }
            | Action::RenameRemote { path, .. }
            | Action::MkdirLocal { path, .. }
            | Action::Download { path, .. }
            | Action::Record { path, .. } => path,
        }
    }

    /// A stable name for reports (`ferry sync --dry-run`): `delete_local`,
    /// `delete_remote`, `conflict_copy`, `mkdir_local`, `mkdir_remote`, `download`,
    /// `upload`, `record`, `forget`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::DeleteLocal { .. } => "delete_local",
            Action::DeleteRemote { .. } => "delete_remote",
            Action::MoveAside { .. } => "conflict_copy",
            Action::MkdirLocal { .. } => "mkdir_local",
            Action::MkdirRemote { .. } => "mkdir_remote",
            Action::Download { .. } => "download",
            Action::Upload { .. } => "upload",
            Action::Record { .. } => "record",
            Action::Forget { .. } => "forget",
            Action::RenameRemote { .. } => "rename_remote",
        }
    }

    /// Order of execution: remote renames, deletes (deepest first), moves aside,
    /// directories (parents first), transfers, index bookkeeping.
    fn phase(&self) -> u8 {
        match self {
            Action::RenameRemote { .. } => 0,
            Action::DeleteLocal { .. } | Action::DeleteRemote { .. } => DELETE_PHASE,
            Action::MoveAside { .. } => 2,
            Action::MkdirLocal { .. } | Action::MkdirRemote { .. } => 3,
            Action::Download { .. } | Action::Upload { .. } => 4,
            Action::Record { .. } | Action::Forget { .. } => 5,
        }
    }
}

/// The phase of deletions, which run deepest path first.
const DELETE_PHASE: u8 = 1;

/// How conflict copies are named: `conflict_copy_name(path, host, date, n)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictNaming {
    /// This machine's name.
    pub host: String,
    /// Today, `YYYY-MM-DD` (the caller reads the clock).
    pub date: String,
}

/// The state of one path on one side, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node<'a> {
    Dir,
    File(Option<&'a str>),
}

fn node_of(dir: bool, sha: &Option<String>) -> Node<'_> {
    if dir {
        Node::Dir
    } else {
        Node::File(sha.as_deref())
    }
}

/// What a path becomes, before directories are checked against their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Nothing,
    Record,
    Forget,
    DeleteLocal,
    DeleteRemote,
    /// Take the server's version (download or make the directory), replacing what is
    /// local when it is unchanged.
    TakeRemote,
    /// Send the local version (upload or make the directory).
    SendLocal,
    /// Both changed: move local aside, take the server's.
    Conflict,
}

/// Plan one round. `server` holds the manifest (tombstones left out) keyed by parsed
/// path; paths the client ignores must be left out of all three maps.
pub fn plan(
    base: &BTreeMap<SyncPath, IndexEntry>,
    local: &BTreeMap<SyncPath, LocalEntry>,
    server: &BTreeMap<SyncPath, ManifestEntry>,
    naming: &ConflictNaming,
) -> Vec<Action> {
    let paths: BTreeSet<&SyncPath> = base
        .keys()
        .chain(local.keys())
        .chain(server.keys())
        .collect();
    let mut decisions: BTreeMap<&SyncPath, Decision> = BTreeMap::new();
    for path in &paths {
        let b = base.get(*path).map(|e| node_of(e.dir, &e.sha256));
        let l = local.get(*path).map(|e| node_of(e.dir, &e.sha256));
        let r = server.get(*path).map(|e| node_of(e.dir, &e.sha256));
        let decision = if l == r {
            match (&r, base.get(*path), server.get(*path)) {
                (None, Some(_), _) => Decision::Forget,
                (None, None, _) => Decision::Nothing,
                (Some(_), Some(index), Some(entry)) if b == r && index.version == entry.version => {
                    Decision::Nothing
                }
                _ => Decision::Record,
            }
        } else if l == b {
            if r.is_none() {
                Decision::DeleteLocal
            } else {
                Decision::TakeRemote
            }
        } else if r == b {
            if l.is_none() {
                Decision::DeleteRemote
            } else {
                Decision::SendLocal
            }
        } else if l.is_none() {
            Decision::TakeRemote
        } else if r.is_none() {
            Decision::SendLocal
        } else {
            Decision::Conflict
        };
        decisions.insert(path, decision);
    }

    // Directories against their content, deepest first so that a kept subdirectory
    // keeps its parent too.
    let kept_locally = |decisions: &BTreeMap<&SyncPath, Decision>, dir: &SyncPath| {
        below(local, dir).any(|p| !matches!(decisions.get(p), Some(Decision::DeleteLocal)))
    };
    let kept_remotely = |decisions: &BTreeMap<&SyncPath, Decision>, dir: &SyncPath| {
        below(server, dir).any(|p| !matches!(decisions.get(p), Some(Decision::DeleteRemote)))
    };
    let ordered: Vec<&SyncPath> = paths.iter().rev().copied().collect();
    for path in ordered {
        let decision = decisions[path];
        let l_dir = local.get(path).map(|e| e.dir);
        let r_dir = server.get(path).map(|e| e.dir);
        let updated = match decision {
            Decision::DeleteLocal if l_dir == Some(true) && kept_locally(&decisions, path) => {
                Decision::SendLocal
            }
            Decision::DeleteRemote if r_dir == Some(true) && kept_remotely(&decisions, path) => {
                Decision::TakeRemote
            }
            // A local directory that must become the server's file: only when empty.
            Decision::TakeRemote | Decision::Conflict
                if l_dir == Some(true) && r_dir == Some(false) =>
            {
                if kept_locally(&decisions, path) || decision == Decision::Conflict {
                    Decision::Conflict
                } else {
                    Decision::TakeRemote
                }
            }
            // A server directory that must become the local file: only when empty.
            Decision::SendLocal if l_dir == Some(false) && r_dir == Some(true) => {
                if kept_remotely(&decisions, path) {
                    Decision::Conflict
                } else {
                    Decision::SendLocal
                }
            }
            other => other,
        };
        decisions.insert(path, updated);
    }

    // Everything below a local directory moved aside travels with it: next round it is
    // new content under the copy's name.
    let moved_dirs: Vec<&SyncPath> = decisions
        .iter()
        .filter(|(p, d)| **d == Decision::Conflict && local.get(**p).is_some_and(|e| e.dir))
        .map(|(p, _)| *p)
        .collect();
    for dir in &moved_dirs {
        for (path, decision) in decisions.iter_mut() {
            if path.starts_with(dir) && path != dir && local.contains_key(*path) {
                *decision = if base.contains_key(*path) {
                    Decision::Forget
                } else {
                    Decision::Nothing
                };
            }
        }
    }

    let mut taken: HashMap<String, ()> = HashMap::new();
    let mut actions = Vec::new();
    for (path, decision) in &decisions {
        let path = (*path).clone();
        let l = local.get(&path);
        let r = server.get(&path);
        match decision {
            Decision::Nothing => {}
            Decision::Record => {
                if let Some(entry) = r {
                    actions.push(Action::Record {
                        path,
                        entry: entry.clone(),
                    });
                }
            }
            Decision::Forget => actions.push(Action::Forget { path }),
            Decision::DeleteLocal => {
                let dir = l.is_some_and(|e| e.dir);
                actions.push(Action::DeleteLocal { path, dir });
            }
            Decision::DeleteRemote => {
                let dir = r.is_some_and(|e| e.dir);
                let base = r.and_then(|e| e.sha256.clone());
                actions.push(Action::DeleteRemote { path, dir, base });
            }
            Decision::TakeRemote => {
                let Some(entry) = r else { continue };
                // Replace an unchanged local thing of the other kind.
                if let Some(l) = l
                    && l.dir != entry.dir
                {
                    actions.push(Action::DeleteLocal {
                        path: path.clone(),
                        dir: l.dir,
                    });
                }
                let entry = entry.clone();
                actions.push(if entry.dir {
                    Action::MkdirLocal { path, entry }
                } else {
                    Action::Download { path, entry }
                });
            }
            Decision::SendLocal => {
                let Some(l) = l else { continue };
                if let Some(r) = r
                    && r.dir != l.dir
                {
                    actions.push(Action::DeleteRemote {
                        path: path.clone(),
                        dir: r.dir,
                        base: r.sha256.clone(),
                    });
                }
                if l.dir {
                    actions.push(Action::MkdirRemote { path });
                } else {
                    // The server's content is what the upload replaces: the base when the
                    // server did not change, nothing when it deleted the path.
                    let base = match r {
                        Some(r) if !r.dir => r.sha256.clone(),
                        _ => None,
                    };
                    actions.push(Action::Upload { path, base });
                }
            }
            Decision::Conflict => {
                let (Some(l), Some(entry)) = (l, r) else {
                    continue;
                };
                let to = free_copy_name(&path, naming, base, local, server, &mut taken);
                actions.push(Action::MoveAside {
                    path: path.clone(),
                    to: to.clone(),
                });
                if !l.dir {
                    actions.push(Action::Upload {
                        path: to,
                        base: None,
                    });
                }
                let entry = entry.clone();
                actions.push(if entry.dir {
                    Action::MkdirLocal { path, entry }
                } else {
                    Action::Download { path, entry }
                });
            }
        }
    }
    pair_renames(&mut actions, local);
    actions.sort_by(|a, b| {
        a.phase().cmp(&b.phase()).then_with(|| {
            if a.phase() == DELETE_PHASE {
                b.path().cmp(a.path())
            } else {
                a.path().cmp(b.path())
            }
        })
    });
    actions
}

/// Turn a remote deletion of a file and the upload of a new local file with the same
/// content into one [`Action::RenameRemote`].
fn pair_renames(actions: &mut Vec<Action>, local: &BTreeMap<SyncPath, LocalEntry>) {
    let mut deleted: HashMap<String, Vec<SyncPath>> = HashMap::new();
    for action in actions.iter() {
        if let Action::DeleteRemote {
            path,
            dir: false,
            base: Some(sha),
        } = action
        {
            deleted.entry(sha.clone()).or_default().push(path.clone());
        }
    }
    if deleted.is_empty() {
        return;
    }
    let mut renames = Vec::new();
    for action in actions.iter() {
        if let Action::Upload { path, base: None } = action
            && let Some(sha) = local.get(path).and_then(|e| e.sha256.as_deref())
            && let Some(candidates) = deleted.get_mut(sha)
            // A file cannot move below itself, nor onto the directory that holds it: the
            // server would refuse the rename in every round, before the deletion that
            // clears the way could run. Those stay a deletion and an upload.
            && let Some(i) = candidates
                .iter()
                .rposition(|from| !path.starts_with(from) && !from.starts_with(path))
        {
            renames.push((candidates.remove(i), path.clone(), sha.to_string()));
        }
    }
    for (from, to, sha) in renames {
        actions.retain(|a| match a {
            Action::DeleteRemote { path, .. } => *path != from,
            Action::Upload { path, .. } => *path != to,
            _ => true,
        });
        actions.push(Action::RenameRemote {
            from,
            path: to,
            base: sha,
        });
    }
}

fn below<'a, V>(
    map: &'a BTreeMap<SyncPath, V>,
    dir: &'a SyncPath,
) -> impl Iterator<Item = &'a SyncPath> + 'a {
    map.range(dir.clone()..)
        .skip(1)
        .map(|(p, _)| p)
        .take_while(move |p| p.as_str().starts_with(dir.as_str()))
        .filter(move |p| p.starts_with(dir))
}

fn free_copy_name(
    path: &SyncPath,
    naming: &ConflictNaming,
    base: &BTreeMap<SyncPath, IndexEntry>,
    local: &BTreeMap<SyncPath, LocalEntry>,
    server: &BTreeMap<SyncPath, ManifestEntry>,
    taken: &mut HashMap<String, ()>,
) -> SyncPath {
    let mut n = 1;
    loop {
        let name = conflict_copy_name(path, &naming.host, &naming.date, n);
        let key = name.case_key();
        let used = base.contains_key(&name)
            || local.contains_key(&name)
            || server.contains_key(&name)
            || taken.contains_key(&key);
        if !used {
            taken.insert(key, ());
            return name;
        }
        n += 1;
    }
}

/// Groups of paths that differ only by case: they collide on a case-insensitive
/// filesystem (macOS, Windows), so a client there cannot hold both.
pub fn case_collisions<'a>(paths: impl IntoIterator<Item = &'a SyncPath>) -> Vec<Vec<SyncPath>> {
    let mut groups: BTreeMap<String, Vec<SyncPath>> = BTreeMap::new();
    for path in paths {
        groups
            .entry(path.case_key())
            .or_default()
            .push(path.clone());
    }
    groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g.dedup();
            g
        })
        .filter(|g| g.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SyncPath {
        SyncPath::parse(s).expect("valid path")
    }

    fn sha(c: char) -> Option<String> {
        Some(c.to_string().repeat(64))
    }

    /// Per path: (base, local, server), each `None`, `Some("/")` for a directory or
    /// `Some("a")` for a file whose sha256 is "aaa…".
    /// One path's (path, base, local, server).
    type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    fn run(rows: &[Row]) -> Vec<Action> {
        let mut base = BTreeMap::new();
        let mut local = BTreeMap::new();
        let mut server = BTreeMap::new();
        let file = |k: &str| -> (bool, Option<String>) {
            if k == "/" {
                (true, None)
            } else {
                (false, sha(k.chars().next().expect("kind")))
            }
        };
        for (path, b, l, r) in rows {
            if let Some(k) = b {
                let (dir, sha256) = file(k);
                base.insert(
                    p(path),
                    IndexEntry {
                        dir,
                        sha256,
                        size: 1,
                        modified: 1,
                        version: 1,
                    },
                );
            }
            if let Some(k) = l {
                let (dir, sha256) = file(k);
                local.insert(
                    p(path),
                    LocalEntry {
                        dir,
                        sha256,
                        size: 1,
                        modified: 1,
                    },
                );
            }
            if let Some(k) = r {
                let (dir, sha256) = file(k);
                let version = if b == r { 1 } else { 2 };
                server.insert(
                    p(path),
                    ManifestEntry {
                        path: path.to_string(),
                        dir,
                        size: 1,
                        sha256,
                        modified: 1,
                        version,
                        deleted: false,
                    },
                );
            }
        }
        let naming = ConflictNaming {
            host: "laptop".into(),
            date: "2026-11-30".into(),
        };
        plan(&base, &local, &server, &naming)
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| format!("{} {}", a.name(), a.path()))
            .collect()
    }

    #[test]
    fn nothing_changed_plans_nothing() {
        assert!(
            run(&[
                ("a", Some("a"), Some("a"), Some("a")),
                ("d", Some("/"), Some("/"), Some("/"))
            ])
            .is_empty()
        );
    }

    #[test]
    fn only_local_changes_are_sent_with_their_base() {
        let actions = run(&[
            ("new", None, Some("n"), None),
            ("edited", Some("a"), Some("b"), Some("a")),
            ("gone", Some("a"), None, Some("a")),
            ("dir", None, Some("/"), None),
        ]);
        assert_eq!(
            kinds(&actions),
            [
                "delete_remote gone",
                "mkdir_remote dir",
                "upload edited",
                "upload new"
            ]
        );
        assert!(actions.contains(&Action::Upload {
            path: p("edited"),
            base: sha('a')
        }));
        assert!(actions.contains(&Action::Upload {
            path: p("new"),
            base: None
        }));
        assert!(actions.contains(&Action::DeleteRemote {
            path: p("gone"),
            dir: false,
            base: sha('a')
        }));
    }

    #[test]
    fn only_server_changes_are_applied_locally() {
        let actions = run(&[
            ("new", None, None, Some("n")),
            ("edited", Some("a"), Some("a"), Some("b")),
            ("gone", Some("a"), Some("a"), None),
            ("dir", None, None, Some("/")),
        ]);
        assert_eq!(
            kinds(&actions),
            [
                "delete_local gone",
                "mkdir_local dir",
                "download edited",
                "download new"
            ]
        );
    }

    #[test]
    fn same_content_on_both_sides_is_only_recorded() {
        let actions = run(&[
            ("both_new", None, Some("s"), Some("s")),
            ("both_edited", Some("a"), Some("b"), Some("b")),
            ("both_gone", Some("a"), None, None),
        ]);
        assert_eq!(
            kinds(&actions),
            ["record both_edited", "forget both_gone", "record both_new"]
        );
    }

    #[test]
    fn a_newer_server_version_of_the_same_content_is_recorded() {
        let mut actions = run(&[("a", Some("a"), Some("a"), Some("a"))]);
        assert!(actions.is_empty());
        // Same content, but the server's version moved on (our own echo, a touch).
        let base = BTreeMap::from([(
            p("a"),
            IndexEntry {
                dir: false,
                sha256: sha('a'),
                size: 1,
                modified: 1,
                version: 1,
            },
        )]);
        let local = BTreeMap::from([(
            p("a"),
            LocalEntry {
                dir: false,
                sha256: sha('a'),
                size: 1,
                modified: 1,
            },
        )]);
        let entry = ManifestEntry {
            path: "a".into(),
            dir: false,
            size: 1,
            sha256: sha('a'),
            modified: 1,
            version: 9,
            deleted: false,
        };
        let server = BTreeMap::from([(p("a"), entry.clone())]);
        let naming = ConflictNaming {
            host: "h".into(),
            date: "2026-11-30".into(),
        };
        actions = plan(&base, &local, &server, &naming);
        assert_eq!(
            actions,
            [Action::Record {
                path: p("a"),
                entry
            }]
        );
    }

    #[test]
    fn both_edited_keeps_a_conflict_copy_and_the_server_wins_the_path() {
        let actions = run(&[
            ("docs/r.txt", Some("a"), Some("l"), Some("s")),
            ("docs", Some("/"), Some("/"), Some("/")),
        ]);
        let copy = p("docs/r (conflict from laptop 2026-11-30).txt");
        assert_eq!(
            actions,
            [
                Action::MoveAside {
                    path: p("docs/r.txt"),
                    to: copy.clone()
                },
                Action::Upload {
                    path: copy,
                    base: None
                },
                Action::Download {
                    path: p("docs/r.txt"),
                    entry: ManifestEntry {
                        path: "docs/r.txt".into(),
                        dir: false,
                        size: 1,
                        sha256: sha('s'),
                        modified: 1,
                        version: 2,
                        deleted: false
                    }
                },
            ]
        );
    }

    #[test]
    fn both_created_differently_is_a_conflict_and_copy_names_are_free() {
        let actions = run(&[
            ("x.txt", None, Some("l"), Some("s")),
            (
                "x (conflict from laptop 2026-11-30).txt",
                None,
                None,
                Some("o"),
            ),
        ]);
        assert!(actions.contains(&Action::MoveAside {
            path: p("x.txt"),
            to: p("x (conflict from laptop 2026-11-30 2).txt")
        }));
    }

    #[test]
    fn delete_against_modify_keeps_the_modification() {
        let actions = run(&[
            ("deleted_here", Some("a"), None, Some("b")),
            ("deleted_there", Some("a"), Some("b"), None),
        ]);
        assert_eq!(
            kinds(&actions),
            ["download deleted_here", "upload deleted_there"]
        );
        assert!(actions.contains(&Action::Upload {
            path: p("deleted_there"),
            base: None
        }));
    }

    #[test]
    fn a_deleted_directory_goes_only_when_nothing_below_survives() {
        // Deleted locally; the server added a file inside: the directory stays.
        let actions = run(&[
            ("d", Some("/"), None, Some("/")),
            ("d/old", Some("a"), None, Some("a")),
            ("d/new", None, None, Some("n")),
        ]);
        assert_eq!(
            kinds(&actions),
            ["delete_remote d/old", "mkdir_local d", "download d/new"]
        );
        // Deleted on the server; edited locally: re-created there.
        let actions = run(&[
            ("d", Some("/"), Some("/"), None),
            ("d/f", Some("a"), Some("b"), None),
        ]);
        assert_eq!(kinds(&actions), ["mkdir_remote d", "upload d/f"]);
        // Deleted on the server, nothing new locally: deleted, children first.
        let actions = run(&[
            ("d", Some("/"), Some("/"), None),
            ("d/e", Some("/"), Some("/"), None),
            ("d/e/f", Some("a"), Some("a"), None),
        ]);
        assert_eq!(
            kinds(&actions),
            ["delete_local d/e/f", "delete_local d/e", "delete_local d"]
        );
    }

    #[test]
    fn a_directory_turned_into_a_file_replaces_it_when_empty() {
        let actions = run(&[
            ("d", Some("/"), Some("/"), Some("f")),
            ("d/x", Some("a"), Some("a"), None),
        ]);
        assert_eq!(
            kinds(&actions),
            ["delete_local d/x", "delete_local d", "download d"]
        );
        let actions = run(&[
            ("d", Some("/"), Some("f"), Some("/")),
            ("d/x", Some("a"), None, Some("a")),
        ]);
        assert_eq!(
            kinds(&actions),
            ["delete_remote d/x", "delete_remote d", "upload d"]
        );
    }

    #[test]
    fn a_directory_turned_into_a_file_with_content_below_is_a_conflict() {
        // The server made `d` a file while `d/new` was created locally: the local
        // directory is moved aside whole; its content is uploaded next round.
        let actions = run(&[
            ("d", Some("/"), Some("/"), Some("f")),
            ("d/new", None, Some("n"), None),
        ]);
        assert_eq!(kinds(&actions), ["conflict_copy d", "download d"]);
        // Locally `d` became a file while the server added `d/new`: the file moves aside.
        let actions = run(&[
            ("d", Some("/"), Some("f"), Some("/")),
            ("d/new", None, None, Some("n")),
        ]);
        assert_eq!(
            kinds(&actions),
            [
                "conflict_copy d",
                "mkdir_local d",
                "upload d (conflict from laptop 2026-11-30)",
                "download d/new"
            ]
        );
    }

    #[test]
    fn a_local_rename_is_one_remote_rename_before_the_deletions() {
        let actions = run(&[
            ("old", Some("/"), None, Some("/")),
            ("old/f.txt", Some("a"), None, Some("a")),
            ("new", None, Some("/"), None),
            ("new/f.txt", None, Some("a"), None),
        ]);
        assert_eq!(
            kinds(&actions),
            [
                "rename_remote new/f.txt",
                "delete_remote old",
                "mkdir_remote new"
            ]
        );
        assert_eq!(
            actions[0],
            Action::RenameRemote {
                from: p("old/f.txt"),
                path: p("new/f.txt"),
                base: "a".repeat(64)
            }
        );
    }

    #[test]
    fn case_collisions_are_grouped() {
        let paths = [p("Readme.md"), p("README.md"), p("other")];
        assert_eq!(
            case_collisions(&paths),
            vec![vec![p("README.md"), p("Readme.md")]]
        );
    }
}
