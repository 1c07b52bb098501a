//! A root's index: one SQLite file per root (`DATA_DIR/sync/NAME.sqlite3`) with every
//! path the root ever held (size, sha256, modified, the version that last changed it, and
//! a tombstone once deleted) and the root's version counter.
//!
//! The index is what makes a restart quiet (the startup scan compares the disk with it
//! and publishes only differences), what the manifest is read from, and what a delta since
//! a version is computed from. It is written only under the root's lock
//! ([`super::root::SyncRoot`]); every change and the version it gets commit in one
//! transaction. Schema versions are `PRAGMA user_version` with ordered migrations
//! (`store::sqlite::apply_migrations`, shared with the history file).

use std::path::Path;

use ferry_proto::sync::{ManifestEntry, Version};
use rusqlite::{Connection, OptionalExtension, params};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the version counter and one row per path ever seen.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('version', 0);
     CREATE TABLE entries (
         path TEXT PRIMARY KEY,
         case_key TEXT NOT NULL,
         dir INTEGER NOT NULL,
         size INTEGER NOT NULL,
         sha256 TEXT,
         modified INTEGER NOT NULL,
         version INTEGER NOT NULL,
         deleted INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX entries_by_version ON entries (version);
     CREATE INDEX entries_by_case_key ON entries (case_key);",
    // 2: the file's modification time in ns, for change detection only (0 = unknown:
    // the next scan hashes the file).
    "ALTER TABLE entries ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;",
];

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
#[error("sync index {path}: {message}")]
pub struct IndexError {
    /// The index file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// One root's index. Not shared: the root holds it under its lock.
pub struct SyncIndex {
    conn: Connection,
    path: String,
}

const COLUMNS: &str = "path, dir, size, sha256, modified, version, deleted";

fn row_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestEntry> {
    Ok(ManifestEntry {
        path: row.get(0)?,
        dir: row.get(1)?,
        size: row.get::<_, i64>(2)?.max(0) as u64,
        sha256: row.get(3)?,
        modified: row.get::<_, i64>(4)?.max(0) as u64,
        version: row.get::<_, i64>(5)?.max(0) as u64,
        deleted: row.get(6)?,
    })
}

/// SQLite stores signed 64-bit integers; sizes, times and versions stay far below.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `LIKE`-free prefix match: the paths strictly below `dir` are those in
/// `[dir + "/", dir + "0")` (`0` is the byte after `/`).
fn below_bounds(dir: &str) -> (String, String) {
    (format!("{dir}/"), format!("{dir}0"))
}

impl SyncIndex {
    /// Open (or create) the index file and bring its schema up to date.
    pub fn open(path: &Path) -> Result<SyncIndex, IndexError> {
        let shown = path.display().to_string();
        let err = |e: rusqlite::Error| IndexError {
            path: shown.clone(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| IndexError {
                path: shown.clone(),
                message: format!("cannot create its directory: {e}"),
            })?;
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .map_err(err)?;
        if let Err(found) = crate::store::sqlite::apply_migrations(&tx, MIGRATIONS).map_err(err)? {
            return Err(IndexError {
                path: shown,
                message: format!(
                    "schema version {found} is newer than this build knows ({}); run the newer ferry or move the file away (the root is then rescanned)",
                    MIGRATIONS.len()
                ),
            });
        }
        tx.commit().map_err(err)?;
        Ok(SyncIndex { conn, path: shown })
    }

    fn err(&self, e: rusqlite::Error) -> IndexError {
        IndexError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The root's version: that of the last change.
    pub fn version(&self) -> Result<Version, IndexError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// The row of `path`, tombstone or not.
    pub fn get(&self, path: &str) -> Result<Option<ManifestEntry>, IndexError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM entries WHERE path = ?1"),
                [path],
                row_entry,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The live (not deleted) entry of `path`.
    pub fn live(&self, path: &str) -> Result<Option<ManifestEntry>, IndexError> {
        Ok(self.get(path)?.filter(|e| !e.deleted))
    }

    /// A live entry other than `path` whose case key is `case_key` (a name that would
    /// collide with it on a case-insensitive filesystem).
    pub fn case_collision(&self, path: &str, case_key: &str) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row(
                "SELECT path FROM entries WHERE case_key = ?1 AND path != ?2 AND deleted = 0 LIMIT 1",
                params![case_key, path],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every live entry strictly below directory `dir` (`None`: the whole root), by path.
    pub fn live_below(&self, dir: Option<&str>) -> Result<Vec<ManifestEntry>, IndexError> {
        let mut out = Vec::new();
        let map = |e| self.err(e);
        match dir {
            None => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM entries WHERE deleted = 0 ORDER BY path"
                    ))
                    .map_err(map)?;
                for row in stmt.query_map([], row_entry).map_err(map)? {
                    out.push(row.map_err(map)?);
                }
            }
            Some(dir) => {
                let (low, high) = below_bounds(dir);
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM entries WHERE path >= ?1 AND path < ?2 AND deleted = 0 ORDER BY path"
                    ))
                    .map_err(map)?;
                for row in stmt.query_map([low, high], row_entry).map_err(map)? {
                    out.push(row.map_err(map)?);
                }
            }
        }
        Ok(out)
    }

    /// Bytes in the live files of the root.
    pub fn total_size(&self) -> Result<u64, IndexError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(size), 0) FROM entries WHERE deleted = 0 AND dir = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// One page of the manifest: with `since == 0` the live entries, otherwise every entry
    /// (tombstones included) changed after `since`; ordered by path, after `after`, at
    /// most `limit`. Returns the entries and whether more follow.
    pub fn page(
        &self,
        since: Version,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ManifestEntry>, bool), IndexError> {
        let map = |e| self.err(e);
        // Two statements, so each can use its index: the full tree walks the paths in
        // order; a delta finds the few changed rows by version, then sorts them.
        let sql = if since == 0 {
            format!(
                "SELECT {COLUMNS} FROM entries WHERE path > ?1 AND deleted = 0 AND ?2 = 0
                 ORDER BY path LIMIT ?3"
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM entries WHERE path > ?1 AND version > ?2
                 ORDER BY path LIMIT ?3"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(map)?;
        let mut out = Vec::new();
        let rows = stmt
            .query_map(
                params![after.unwrap_or(""), int(since), int(limit as u64 + 1)],
                row_entry,
            )
            .map_err(map)?;
        for row in rows {
            out.push(row.map_err(map)?);
        }
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    /// Apply the rows of one operation and make `version` the root's version, in one
    /// transaction. Each row replaces the row of its path.
    pub fn commit(&mut self, version: Version, rows: &[ManifestEntry]) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| IndexError {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO entries
                     (path, case_key, dir, size, sha256, modified, version, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            for e in rows {
                stmt.execute(params![
                    e.path,
                    e.path.to_lowercase(),
                    e.dir,
                    int(e.size),
                    e.sha256,
                    int(e.modified),
                    int(e.version),
                    e.deleted
                ])
                .map_err(err)?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'version'",
                [int(version)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Update the stored modification time of an unchanged file (same size and content,
    /// touched): no version, nothing published, only so the next scan needs no hash.
    pub fn touch(&self, path: &str, modified: u64, stamp: i64) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE entries SET modified = ?1, stamp = ?2 WHERE path = ?3",
                params![int(modified), stamp, path],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Remember the ns modification time of a file just written or hashed (a row written
    /// by [`SyncIndex::commit`] starts with 0, unknown).
    pub fn set_stamp(&self, path: &str, stamp: i64) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE entries SET stamp = ?1 WHERE path = ?2",
                params![stamp, path],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The ns modification time remembered for `path` (0: unknown).
    pub fn stamp(&self, path: &str) -> Result<i64, IndexError> {
        self.conn
            .query_row("SELECT stamp FROM entries WHERE path = ?1", [path], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(path: &str, version: Version, deleted: bool) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            dir: false,
            size: 3,
            sha256: Some("a".repeat(64)),
            modified: 1,
            version,
            deleted,
        }
    }

    #[test]
    fn pages_deltas_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sync/x.sqlite3");
        let mut index = SyncIndex::open(&file).unwrap();
        assert_eq!(index.version().unwrap(), 0);
        index.commit(1, &[entry("a", 1, false)]).unwrap();
        index.commit(2, &[entry("b/c", 2, false)]).unwrap();
        index.commit(3, &[entry("b/d", 3, false)]).unwrap();
        index.commit(4, &[entry("a", 4, true)]).unwrap();
        assert_eq!(index.version().unwrap(), 4);
        let (full, more) = index.page(0, None, 10).unwrap();
        let paths: Vec<_> = full.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["b/c", "b/d"]);
        assert!(!more);
        let (first, more) = index.page(0, None, 1).unwrap();
        assert!(more);
        let (second, _) = index.page(0, Some(&first[0].path), 1).unwrap();
        assert_eq!(second[0].path, "b/d");
        let (delta, _) = index.page(2, None, 10).unwrap();
        let paths: Vec<_> = delta.iter().map(|e| (e.path.as_str(), e.deleted)).collect();
        assert_eq!(paths, [("a", true), ("b/d", false)]);
        assert_eq!(index.live_below(Some("b")).unwrap().len(), 2);
        assert_eq!(index.live_below(Some("b/c")).unwrap().len(), 0);
        assert_eq!(index.total_size().unwrap(), 6);
        assert_eq!(
            index.case_collision("B/C", "b/c").unwrap().as_deref(),
            Some("b/c")
        );
        drop(index);
        let index = SyncIndex::open(&file).unwrap();
        assert_eq!(index.version().unwrap(), 4, "the counter survives a reopen");
    }
}
