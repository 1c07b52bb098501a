//! Durable history in one SQLite file (`DATA_DIR/history.sqlite3`), the default of
//! `ferry serve`: offsets and each channel's epoch survive a restart and a `kill -9`, so
//! a client that reconnects after a restart recovers exactly what it missed.
//!
//! Shape:
//! - **One writer thread** owns the only connection. Publications staged while a commit
//!   runs are written together in the next transaction (group commit); a publication is
//!   durable (and readable, and acknowledged) only after its transaction committed. A
//!   channel may have many publications on their way at once: offsets are assigned when
//!   they are staged, and the writer makes them durable in that order.
//! - **A failed commit stops history writes** until a restart: every later publication
//!   fails too, so the file never holds offset N + 1 without N.
//! - **A window per active channel** in memory (its retained publications, the same as the
//!   memory store keeps), loaded from the file on first use, so reads and recoveries never
//!   wait on the disk. Windows idle for [`IDLE_EVICT`] are dropped and reloaded on demand.
//! - **Chunks** ([`chunk`]): a commit writes each channel's publications as one row, and
//!   rows are appended in commit order. SQLite's work per commit follows the channels it
//!   touches, and the data pages it writes are new ones at the end of the table, so the
//!   bytes written stay close to the bytes published. (Version 1 of the file kept a row
//!   per publication keyed by channel and offset: every commit rewrote a B-tree page per
//!   channel, ~3 KB written per publication.)
//! - **Pruning** follows the windows: what a window trimmed (by size or TTL) is deleted
//!   from the file by the housekeeping tick; the channel's `floor` records how far, so a
//!   chunk that is only partly pruned shows nothing below it.
//! - **The file is exclusive** (`locking_mode=EXCLUSIVE`): a second server on the same
//!   data dir fails at start with [`StoreError::Locked`] instead of assigning the same
//!   offsets twice.
//! - WAL with `synchronous=NORMAL`: a committed publication survives a crash of the
//!   process; with [`Durability::Full`] it also survives a power loss (an fsync per commit).
//!
//! A channel that was never published to reports offset 0 and an epoch derived from the
//! file's random salt and the channel name: stable across restarts without writing
//! anything for reads and subscribes, and the epoch its first publication gets.

mod chunk;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_proto::Data;
use ferry_proto::codes::ErrorCode;
use ferry_proto::envelope::ClientInfo;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{
    Durable, HistoryPage, HistoryQuery, HistoryStore, Retention, Staged, now_millis, page,
};
use crate::error::{HubError, HubResult};
use crate::publication::{Publication, StreamPosition};
use crate::sharded::Sharded;

/// The history file's name inside the data dir.
pub const FILE_NAME: &str = "history.sqlite3";

/// A window not read or written for this long leaves memory (it stays in the file).
const IDLE_EVICT: Duration = Duration::from_secs(120);

/// At most this many queued operations go into one transaction.
const MAX_BATCH: usize = 4096;

/// At most this many publications in one chunk, so that loading a window never reads
/// much more than it keeps.
const MAX_CHUNK: usize = 256;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: channels with their epoch and last offset; publications by (channel, offset).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE channels (
         name TEXT PRIMARY KEY,
         epoch TEXT NOT NULL,
         top INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE publications (
         channel TEXT NOT NULL,
         offset INTEGER NOT NULL,
         data TEXT NOT NULL,
         info TEXT,
         time INTEGER NOT NULL,
         PRIMARY KEY (channel, offset)
     ) WITHOUT ROWID;",
    // 2: publications in chunks, appended in commit order (the rows of version 1 are
    // moved by `convert_v1`); `floor`: offsets up to it are pruned.
    "CREATE TABLE chunks (
         id INTEGER PRIMARY KEY,
         channel TEXT NOT NULL,
         last INTEGER NOT NULL,
         newest INTEGER NOT NULL,
         body BLOB NOT NULL
     );
     CREATE INDEX chunks_by_channel ON chunks (channel, last);
     ALTER TABLE channels ADD COLUMN floor INTEGER NOT NULL DEFAULT 0;",
];

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL, `synchronous=NORMAL`: committed publications survive a process crash; the
    /// last commits before a power loss may be lost.
    #[default]
    Normal,
    /// WAL, `synchronous=FULL`: every commit is fsynced.
    Full,
}

/// Why the history file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the file.
    #[error(
        "the history file {path} is in use by another process (is another `ferry serve` running with the same --data-dir?); stop it or choose another --data-dir"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a SQLite database or is damaged.
    #[error(
        "the history file {path} is damaged or not a ferry history file ({detail}); move it away to start with empty history"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The file or its directory cannot be written.
    #[error(
        "the history file {path} cannot be written ({detail}); check the permissions and free space of the data dir, or run with history = \"memory\""
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// The file was written by a newer ferry.
    #[error(
        "the history file {path} has schema version {found}, newer than this ferry knows ({known}); upgrade ferry"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// Anything else.
    #[error("the history file {path} cannot be opened: {detail}")]
    Other {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

impl StoreError {
    fn from_sqlite(path: &Path, e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        let detail = e.to_string();
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Locked { path },
            Some(C::NotADatabase | C::DatabaseCorrupt) => StoreError::Corrupt { path, detail },
            Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied | C::DiskFull) => {
                StoreError::ReadOnly { path, detail }
            }
            _ => StoreError::Other { path, detail },
        }
    }
}

/// One channel's retained publications in memory.
struct Window {
    epoch: Arc<str>,
    /// The last durable offset.
    top: u64,
    /// The last offset handed out (`top` plus the publications on their way to disk).
    staged: u64,
    items: VecDeque<Arc<Publication>>,
    retention: Retention,
    /// Offsets up to this one are deleted from the file (or were never there).
    pruned_through: u64,
    used: Instant,
}

impl Window {
    fn trim(&mut self, retention: Retention, now_ms: u64) {
        super::trim(&mut self.items, retention, now_ms);
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.to_string(),
        }
    }

    /// The highest offset the file may delete.
    fn prunable_through(&self) -> u64 {
        self.items
            .front()
            .map(|p| p.offset() - 1)
            .unwrap_or(self.top)
    }
}

struct Row {
    publication: Arc<Publication>,
    /// `false`: the namespace keeps no history; only the channel's offset is saved.
    keep: bool,
    /// `publication`'s info as JSON.
    info: Option<String>,
    retention: Retention,
}

/// A publication's data in a version 1 row: JSON as TEXT, MessagePack as BLOB. `None`
/// when a row holds neither valid form.
struct StoredData(Option<Data>);

impl rusqlite::types::FromSql for StoredData {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        Ok(StoredData(match value {
            ValueRef::Text(text) => std::str::from_utf8(text)
                .ok()
                .and_then(|t| RawValue::from_string(t.to_owned()).ok())
                .map(Data::from),
            ValueRef::Blob(bytes) => Data::from_msgpack(bytes).ok(),
            _ => None,
        }))
    }
}

struct Loaded {
    /// `(epoch, top)` of a channel that was published to.
    position: Option<(String, u64)>,
    /// Oldest first.
    rows: Vec<chunk::Entry>,
}

enum Op {
    Append(Row, Option<oneshot::Sender<Result<(), String>>>),
    Load {
        channel: Box<str>,
        limit: usize,
        since_ms: u64,
        reply: oneshot::Sender<Result<Loaded, String>>,
    },
    Position {
        channel: Box<str>,
        reply: oneshot::Sender<Result<Option<(String, u64)>, String>>,
    },
    Prune {
        channel: Box<str>,
        through: u64,
    },
}

type Windows = Sharded<HashMap<Box<str>, Window>>;

/// Why history writes stopped, once a commit failed.
type Failure = Arc<parking_lot::Mutex<Option<String>>>;

/// History in a SQLite file. See the module docs.
pub struct SqliteStore {
    windows: Arc<Windows>,
    writer: mpsc::Sender<Op>,
    failure: Failure,
    salt: String,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (or create) `dir/history.sqlite3`, apply migrations, take the file for this
    /// process and start the writer thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::ReadOnly {
            path: path.clone(),
            detail: format!("cannot create {}: {e}", dir.display()),
        })?;
        let mut conn = open_connection(&path, durability)?;
        let salt = migrate(&mut conn, &path)?;
        let (writer, ops) = mpsc::channel();
        let windows: Arc<Windows> = Arc::new(Sharded::new(64));
        let failure = Failure::default();
        let writer_state = Writer {
            windows: windows.clone(),
            failure: failure.clone(),
        };
        std::thread::Builder::new()
            .name("ferry-history".into())
            .spawn(move || writer_state.run(conn, ops))
            .map_err(|e| StoreError::Other {
                path: path.clone(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            windows,
            writer,
            failure,
            salt,
            path,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Channels whose window is in memory now.
    pub fn cached_channels(&self) -> usize {
        self.windows.iter().map(|s| s.lock().len()).sum()
    }

    /// The epoch of a channel never published to: stable for this file.
    fn derived_epoch(&self, channel: &str) -> Arc<str> {
        let digest = Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update([0])
            .chain_update(channel.as_bytes())
            .finalize();
        digest[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    }

    async fn call<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> HubResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| unavailable("the history writer stopped"))?;
        rx.await
            .map_err(|_| unavailable("the history writer stopped"))
    }

    /// Make sure `channel`'s window is in memory.
    async fn load(&self, channel: &str, retention: Retention) -> HubResult<()> {
        let now = now_millis();
        let since_ms = retention
            .ttl
            .map(|ttl| now.saturating_sub(ttl.as_millis() as u64))
            .unwrap_or(0);
        let loaded = self
            .call(|reply| Op::Load {
                channel: channel.into(),
                limit: retention.size,
                since_ms,
                reply,
            })
            .await?
            .map_err(|e| unavailable(&format!("reading history failed: {e}")))?;
        let (epoch, top): (Arc<str>, u64) = match loaded.position {
            Some((epoch, top)) => (epoch.into(), top),
            None => (self.derived_epoch(channel), 0),
        };
        let mut items = VecDeque::with_capacity(loaded.rows.len());
        for row in loaded.rows {
            let Some(data) = row.data else {
                tracing::warn!(
                    channel,
                    offset = row.offset,
                    "skipping a damaged history row"
                );
                continue;
            };
            let info = row
                .info
                .and_then(|i| serde_json::from_str::<ClientInfo>(&i).ok());
            items.push_back(Publication::new(
                channel, row.offset, &epoch, data, info, row.time,
            ));
        }
        let mut shard = self.windows.shard(channel).lock();
        shard.entry(channel.into()).or_insert(Window {
            epoch,
            top,
            staged: top,
            items,
            retention,
            pruned_through: 0,
            used: Instant::now(),
        });
        Ok(())
    }

    /// Run `f` on the channel's window, loading it first when needed.
    async fn with_window<T>(
        &self,
        channel: &str,
        retention: Retention,
        mut f: impl FnMut(&mut Window) -> T,
    ) -> HubResult<T> {
        // A window evicted between the load and the lock is loaded again.
        loop {
            if let Some(w) = self.windows.shard(channel).lock().get_mut(channel) {
                w.used = Instant::now();
                return Ok(f(w));
            }
            self.load(channel, retention).await?;
        }
    }
}

fn unavailable(message: &str) -> HubError {
    HubError::new(ErrorCode::InternalError, message.to_string())
}

fn open_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let err = |e| StoreError::from_sqlite(path, e);
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_millis(200)).map_err(err)?;
    // Exclusive before WAL: the WAL index then lives in this process's memory and no
    // other process can open the file while this one holds it.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other {
            path: path.to_path_buf(),
            detail: format!("WAL journal mode unavailable (got {mode})"),
        });
    }
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    // Windows answer most reads; what reaches the file (loads, pruning, the B-tree pages a
    // commit touches) stays in SQLite's page cache instead of being read back each time.
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(err)?;
    Ok(conn)
}

/// Run the `migrations` that `PRAGMA user_version` says are pending, inside `tx`, and
/// record the new version. `Ok(Err(found))` when the file's version is newer than this
/// build knows (nothing is changed). Shared by every SQLite file of the hub (history, the
/// sync indexes).
pub(crate) fn apply_migrations(
    tx: &rusqlite::Transaction<'_>,
    migrations: &[&str],
) -> rusqlite::Result<Result<(), u32>> {
    let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations.len() as u32;
    if version > known {
        return Ok(Err(version));
    }
    for sql in &migrations[version as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    Ok(Ok(()))
}

/// Apply pending migrations (taking the file's write lock) and return the file's salt.
fn migrate(conn: &mut Connection, path: &Path) -> Result<String, StoreError> {
    let err = |e| StoreError::from_sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(err)?;
    if let Err(found) = apply_migrations(&tx, MIGRATIONS).map_err(err)? {
        return Err(StoreError::Newer {
            path: path.to_path_buf(),
            found,
            known: MIGRATIONS.len() as u32,
        });
    }
    convert_v1(&tx).map_err(err)?;
    let salt: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    let salt = match salt {
        Some(s) => s,
        None => {
            let s = format!("{:032x}", rand::random::<u128>());
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('salt', ?1)",
                params![s],
            )
            .map_err(err)?;
            s
        }
    };
    tx.commit().map_err(err)?;
    Ok(salt)
}

/// Move the rows of a version 1 file (one per publication) into chunks, oldest first,
/// and drop their table. Runs in the migration's transaction: a crash leaves version 1.
fn convert_v1(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let exists: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'publications'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let mut chunks = Chunks::default();
    {
        let mut rows = tx.prepare(
            "SELECT channel, offset, data, info, time FROM publications ORDER BY channel, offset",
        )?;
        let mut rows = rows.query([])?;
        let mut insert = tx.prepare(INSERT_CHUNK)?;
        let mut current: Option<String> = None;
        while let Some(r) = rows.next()? {
            let channel: String = r.get(0)?;
            if current.as_deref() != Some(&channel) {
                chunks.insert(&mut insert)?;
                current = Some(channel.clone());
            }
            let offset = r.get::<_, i64>(1)?.max(0) as u64;
            let StoredData(data) = r.get(2)?;
            let Some(data) = data else {
                tracing::warn!(channel, offset, "dropping a damaged history row");
                continue;
            };
            let info: Option<String> = r.get(3)?;
            let time = r.get::<_, i64>(4)?.max(0) as u64;
            chunks.push(&channel, offset, time, &data, info.as_deref());
        }
        chunks.insert(&mut insert)?;
    }
    tx.execute_batch("DROP TABLE publications")
}

const INSERT_CHUNK: &str =
    "INSERT INTO chunks (channel, last, newest, body) VALUES (?1, ?2, ?3, ?4)";

/// A commit's chunks being built: one per channel (more past [`MAX_CHUNK`]), in the
/// order their channels first appear.
#[derive(Default)]
struct Chunks {
    open: HashMap<Box<str>, usize>,
    built: Vec<Chunk>,
}

struct Chunk {
    channel: Box<str>,
    count: usize,
    last: u64,
    newest: u64,
    body: Vec<u8>,
}

impl Chunks {
    fn push(&mut self, channel: &str, offset: u64, time: u64, data: &Data, info: Option<&str>) {
        let index = match self.open.get(channel) {
            Some(&i) if self.built[i].count < MAX_CHUNK => i,
            _ => {
                self.built.push(Chunk {
                    channel: channel.into(),
                    count: 0,
                    last: 0,
                    newest: 0,
                    body: Vec::new(),
                });
                self.open.insert(channel.into(), self.built.len() - 1);
                self.built.len() - 1
            }
        };
        let c = &mut self.built[index];
        chunk::push(&mut c.body, offset, time, data, info);
        c.count += 1;
        c.last = offset;
        c.newest = c.newest.max(time);
    }

    /// Insert every chunk built so far and start again.
    fn insert(&mut self, insert: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
        for c in self.built.drain(..) {
            insert.execute(params![
                &*c.channel,
                sql_int(c.last),
                sql_int(c.newest),
                c.body
            ])?;
        }
        self.open.clear();
        Ok(())
    }
}

/// The writer thread's view of the store.
struct Writer {
    windows: Arc<Windows>,
    failure: Failure,
}

impl Writer {
    fn run(self, mut conn: Connection, ops: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(64);
        while let Ok(op) = ops.recv() {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.write_batch(&mut conn, &mut batch);
        }
        // Every sender is gone: the store was dropped. Closing checkpoints the WAL.
        if let Err((_, e)) = conn.close() {
            tracing::warn!(error = %e, "closing the history file failed");
        }
    }

    /// Commit every append and prune of `batch` in one transaction, make the appends
    /// readable in their windows and acknowledge them, then answer the reads (which
    /// therefore see the batch's writes).
    fn write_batch(&self, conn: &mut Connection, batch: &mut Vec<Op>) {
        let mut acks = Vec::new();
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Append(row, ack) => {
                    acks.push(ack);
                    writes.push(Ok(row));
                }
                Op::Prune { channel, through } => writes.push(Err((channel, through))),
                read => reads.push(read),
            }
        }
        if !writes.is_empty() {
            let stopped = self.failure.lock().clone();
            let result = match stopped {
                Some(why) => Err(why),
                None => commit(conn, &writes).map_err(|e| e.to_string()),
            };
            match &result {
                Ok(()) => self.publish(&writes),
                Err(e) => {
                    let mut failure = self.failure.lock();
                    if failure.is_none() {
                        tracing::error!(
                            error = %e,
                            "saving history failed; publishing is refused until the server restarts"
                        );
                        *failure = Some(e.clone());
                    }
                }
            }
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(result.clone());
            }
        }
        for op in reads {
            match op {
                Op::Load {
                    channel,
                    limit,
                    since_ms,
                    reply,
                } => {
                    let _ = reply
                        .send(load(conn, &channel, limit, since_ms).map_err(|e| e.to_string()));
                }
                Op::Position { channel, reply } => {
                    let _ = reply.send(position(conn, &channel).map_err(|e| e.to_string()));
                }
                Op::Append(..) | Op::Prune { .. } => {}
            }
        }
    }

    /// Make committed publications readable, in offset order.
    fn publish(&self, writes: &[Write]) {
        let now = now_millis();
        for row in writes.iter().filter_map(|w| w.as_ref().ok()) {
            let p = &row.publication;
            let mut shard = self.windows.shard(p.channel()).lock();
            // A window loaded after the commit already holds it.
            if let Some(w) = shard.get_mut(p.channel())
                && w.top + 1 == p.offset()
            {
                w.top = p.offset();
                w.retention = row.retention;
                if row.keep {
                    w.items.push_back(p.clone());
                }
                w.trim(row.retention, now);
            }
        }
    }
}

type Write = Result<Row, (Box<str>, u64)>;

fn commit(conn: &mut Connection, writes: &[Write]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(INSERT_CHUNK)?;
        let mut top = tx.prepare_cached(
            "INSERT INTO channels (name, epoch, top) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET top = max(top, excluded.top)",
        )?;
        let mut prune =
            tx.prepare_cached("DELETE FROM chunks WHERE channel = ?1 AND last <= ?2")?;
        let mut floor =
            tx.prepare_cached("UPDATE channels SET floor = max(floor, ?2) WHERE name = ?1")?;
        // Each channel's last offset is saved once per transaction.
        let mut tops: HashMap<&str, (&str, u64)> = HashMap::new();
        let mut chunks = Chunks::default();
        for write in writes {
            match write {
                Ok(row) => {
                    let p = &row.publication;
                    if row.keep {
                        chunks.push(
                            p.channel(),
                            p.offset(),
                            p.time(),
                            p.data(),
                            row.info.as_deref(),
                        );
                    }
                    let entry = tops.entry(p.channel()).or_insert((p.epoch(), 0));
                    entry.1 = entry.1.max(p.offset());
                }
                // A prune reaches only publications of earlier commits.
                Err((channel, through)) => {
                    prune.execute(params![&**channel, sql_int(*through)])?;
                    floor.execute(params![&**channel, sql_int(*through)])?;
                }
            }
        }
        chunks.insert(&mut insert)?;
        for (channel, (epoch, offset)) in tops {
            top.execute(params![channel, epoch, sql_int(offset)])?;
        }
    }
    tx.commit()
}

/// SQLite integers are signed; offsets and times stay far below `i64::MAX`.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn position(conn: &Connection, channel: &str) -> rusqlite::Result<Option<(String, u64)>> {
    conn.prepare_cached("SELECT epoch, top FROM channels WHERE name = ?1")?
        .query_row(params![channel], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .optional()
}

fn load(conn: &Connection, channel: &str, limit: usize, since_ms: u64) -> rusqlite::Result<Loaded> {
    let known: Option<(String, u64, u64)> = conn
        .prepare_cached("SELECT epoch, top, floor FROM channels WHERE name = ?1")?
        .query_row(params![channel], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })
        .optional()?;
    let Some((epoch, top, floor)) = known else {
        return Ok(Loaded {
            position: None,
            rows: Vec::new(),
        });
    };
    let mut rows = Vec::new();
    if limit > 0 {
        // Offsets above `after` may be in the window; chunks wholly below it are skipped.
        let after = floor.max(top.saturating_sub(limit as u64));
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM chunks WHERE channel = ?1 AND last > ?2 AND newest >= ?3
             ORDER BY last",
        )?;
        let mut found = stmt.query(params![channel, sql_int(after), sql_int(since_ms)])?;
        while let Some(r) = found.next()? {
            let body = r.get_ref(0)?.as_blob()?;
            match chunk::decode(body) {
                Ok(entries) => rows.extend(
                    entries
                        .into_iter()
                        .filter(|e| e.offset > after && e.time >= since_ms),
                ),
                Err(chunk::Damaged) => {
                    tracing::warn!(channel, "skipping a damaged history chunk");
                }
            }
        }
        let extra = rows.len().saturating_sub(limit);
        rows.drain(..extra);
    }
    Ok(Loaded {
        position: Some((epoch, top)),
        rows,
    })
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn stage(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Staged> {
        if let Some(why) = self.failure.lock().clone() {
            return Err(unavailable(&format!(
                "history cannot be saved ({why}); restart the server"
            )));
        }
        // The hub serialises staging per channel; the writer moves `top` up to `staged`,
        // except where nothing is kept: there the offset counts at once.
        let keep = retention.size > 0;
        let (offset, epoch) = self
            .with_window(channel, retention, |w| {
                w.staged += 1;
                if !keep {
                    w.top = w.staged;
                }
                (w.staged, w.epoch.clone())
            })
            .await?;
        let row_info = info.as_ref().and_then(|i| serde_json::to_string(i).ok());
        let publication = Publication::new(channel, offset, &epoch, data, info, now_millis());
        let row = Row {
            publication: publication.clone(),
            keep,
            info: row_info,
            retention,
        };
        if keep {
            let (ack, durable) = oneshot::channel();
            self.writer
                .send(Op::Append(row, Some(ack)))
                .map_err(|_| unavailable("the history writer stopped"))?;
            Ok(Staged {
                publication,
                durable: Durable::Pending(durable),
            })
        } else {
            // Nothing to recover from a namespace that keeps no history: its offset is
            // saved with the next commit, and nobody waits for it.
            self.writer
                .send(Op::Append(row, None))
                .map_err(|_| unavailable("the history writer stopped"))?;
            Ok(Staged {
                publication,
                durable: Durable::Now,
            })
        }
    }

    async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage> {
        let now = now_millis();
        self.with_window(channel, retention, |w| {
            w.trim(retention, now);
            let (publications, has_more) = page(w.items.iter(), query);
            HistoryPage {
                publications,
                position: w.position(),
                has_more,
            }
        })
        .await
    }

    async fn position(&self, channel: &str) -> HubResult<StreamPosition> {
        if let Some(w) = self.windows.shard(channel).lock().get(channel) {
            return Ok(w.position());
        }
        let known = self
            .call(|reply| Op::Position {
                channel: channel.into(),
                reply,
            })
            .await?
            .map_err(|e| unavailable(&format!("reading history failed: {e}")))?;
        Ok(match known {
            Some((epoch, offset)) => StreamPosition { offset, epoch },
            None => StreamPosition {
                offset: 0,
                epoch: self.derived_epoch(channel).to_string(),
            },
        })
    }

    async fn maintain(&self) {
        let now = now_millis();
        let mut prunes = Vec::new();
        for shard in self.windows.iter() {
            let mut shard = shard.lock();
            shard.retain(|channel, w| {
                let retention = w.retention;
                w.trim(retention, now);
                let through = w.prunable_through();
                if through > w.pruned_through {
                    prunes.push((channel.clone(), through));
                    w.pruned_through = through;
                }
                // A window with publications on their way keeps their offsets: it stays.
                w.staged != w.top || w.used.elapsed() < IDLE_EVICT
            });
            if shard.capacity() > shard.len() * 2 + 16 {
                shard.shrink_to_fit();
            }
        }
        for (channel, through) in prunes {
            if self.writer.send(Op::Prune { channel, through }).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> ferry_proto::Data {
        RawValue::from_string(s.to_string()).expect("json").into()
    }

    const KEEP: Retention = Retention {
        size: 100,
        ttl: None,
    };

    fn all() -> HistoryQuery {
        HistoryQuery {
            since: None,
            limit: 1000,
            reverse: false,
        }
    }

    async fn reopen(dir: &Path, store: SqliteStore) -> SqliteStore {
        drop(store);
        // The writer thread closes the file once the last sender is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match SqliteStore::open(dir, Durability::Normal) {
                Ok(s) => return s,
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn offsets_epochs_and_history_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        let fresh = store.position("c").await.expect("position");
        assert_eq!(fresh.offset, 0);
        for i in 1..=5u64 {
            let p = store
                .append("c", raw(&format!("{{\"n\":{i}}}")), None, KEEP)
                .await
                .expect("append");
            assert_eq!(p.offset(), i);
            assert_eq!(
                p.epoch(),
                fresh.epoch,
                "the first publication keeps the epoch"
            );
        }
        let store = reopen(dir.path(), store).await;
        let page = store.read("c", all(), KEEP).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, [1, 2, 3, 4, 5]);
        assert_eq!(page.position.epoch, fresh.epoch);
        assert_eq!(page.publications[2].data().to_json().get(), "{\"n\":3}");
        let p = store
            .append("c", raw("6"), None, KEEP)
            .await
            .expect("append");
        assert_eq!(p.offset(), 6, "offsets continue after a restart");
        // A channel never published to keeps its epoch too, without being written.
        let other = store.position("never").await.expect("position");
        let store = reopen(dir.path(), store).await;
        assert_eq!(store.position("never").await.expect("p"), other);
    }

    #[tokio::test]
    async fn a_second_process_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        store
            .append("c", raw("1"), None, KEEP)
            .await
            .expect("append");
        match SqliteStore::open(dir.path(), Durability::Normal) {
            Err(e @ StoreError::Locked { .. }) => {
                assert!(e.to_string().contains("--data-dir"), "{e}")
            }
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second store opened the same file"),
        }
    }

    #[tokio::test]
    async fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(FILE_NAME), vec![0x42; 8192]).expect("write");
        match SqliteStore::open(dir.path(), Durability::Normal) {
            Err(e @ StoreError::Corrupt { .. }) => {
                assert!(e.to_string().contains("move it away"), "{e}")
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("a damaged file opened"),
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open");
            conn.pragma_update(None, "user_version", 99)
                .expect("version");
        }
        match SqliteStore::open(dir.path(), Durability::Normal) {
            Err(StoreError::Newer { found: 99, .. }) => {}
            Err(e) => panic!("expected Newer, got {e}"),
            Ok(_) => panic!("a newer file opened"),
        }
    }

    #[tokio::test]
    async fn trimmed_history_is_pruned_from_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        let keep2 = Retention { size: 2, ttl: None };
        for i in 1..=5 {
            store
                .append("c", raw(&i.to_string()), None, keep2)
                .await
                .expect("append");
        }
        store.maintain().await;
        // A large retention after a reopen shows what the file still holds.
        let store = reopen(dir.path(), store).await;
        let page = store.read("c", all(), KEEP).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, [4, 5]);
        assert_eq!(page.position.offset, 5);
    }

    #[tokio::test]
    async fn a_partly_pruned_chunk_shows_nothing_below_the_floor() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        let keep2 = Retention { size: 2, ttl: None };
        // Staged back to back, the publications share commits (and so chunks).
        let mut pending = Vec::new();
        for i in 1..=40 {
            let staged = store
                .stage("c", raw(&i.to_string()), None, keep2)
                .await
                .expect("stage");
            pending.push(staged.durable);
        }
        for d in pending {
            d.wait().await.expect("durable");
        }
        store.maintain().await;
        let store = reopen(dir.path(), store).await;
        let page = store.read("c", all(), KEEP).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, [39, 40]);
        assert_eq!(page.publications[1].data().to_json().get(), "40");
    }

    #[tokio::test]
    async fn a_version_1_file_is_converted_to_chunks() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("v1");
            conn.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO meta VALUES ('salt', 'abc');
                 INSERT INTO channels VALUES ('a', 'e1', 3), ('b', 'e2', 1);
                 INSERT INTO publications VALUES
                     ('a', 2, '{\"n\":2}', '{\"user\":\"u\",\"client\":\"c\"}', 10),
                     ('a', 3, x'a3616263', NULL, 11),
                     ('a', 4, 'not json', NULL, 12),
                     ('b', 1, '[1]', NULL, 13);",
            )
            .expect("rows");
        }
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        let a = store.read("a", all(), KEEP).await.expect("read a");
        assert_eq!(a.position.offset, 3);
        assert_eq!(a.position.epoch, "e1");
        let offsets: Vec<u64> = a.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, [2, 3], "the damaged row is dropped");
        assert_eq!(a.publications[0].data().to_json().get(), r#"{"n":2}"#);
        assert_eq!(a.publications[0].info().map(|i| i.user.as_str()), Some("u"));
        assert_eq!(a.publications[1].data().to_json().get(), r#""abc""#);
        assert_eq!(a.publications[1].time(), 11);
        let b = store.read("b", all(), KEEP).await.expect("read b");
        assert_eq!(b.publications.len(), 1);
        let next = store
            .append("a", raw("5"), None, KEEP)
            .await
            .expect("append");
        assert_eq!(next.offset(), 4, "offsets continue from the channel's top");
        let store = reopen(dir.path(), store).await;
        let a = store.read("a", all(), KEEP).await.expect("read a");
        assert_eq!(a.publications.len(), 3);
        drop(store);
        // The writer thread releases the file shortly after the store is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        let tables: i64 = loop {
            let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open");
            match conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'publications'",
                [],
                |r| r.get(0),
            ) {
                Ok(n) => break n,
                Err(e) if Instant::now() < deadline => {
                    drop((conn, e));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reading the file: {e}"),
            }
        };
        assert_eq!(tables, 0, "the version 1 table is dropped");
    }
}
