//! `SyncClient`: two-way file sync of a local folder with a root of a ferry hub (SPEC F3,
//! F4; docs/PROTOCOL.md, "File sync"). The CLI's `ferry sync` and a desktop app use the
//! same client and follow it through [`SyncEvent`]s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::sync::SyncError> {
//! use ferry_client::sync::SyncClient;
//!
//! let (client, mut events) = SyncClient::builder("http://127.0.0.1:8080", "default", "./notes")
//!     .token("JWT")
//!     .ignore("*.tmp")
//!     .build()?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{}", serde_json::to_string(&event).unwrap_or_default());
//!     }
//! });
//! client.run().await?; // initial reconcile, then live until the process ends
//! # Ok(()) }
//! ```
//!
//! How it works: the planner of `ferry_proto::sync::plan` compares, per path, the local
//! index in `DIR/.ferry-sync/` (what both sides last agreed on), a scan of the folder and
//! the client's view of the server, and the client executes the resulting actions until a
//! plan is empty. The view of the server comes from the manifest on the first run, then
//! from the operations published on the root's channel, recovered from the channel's
//! history after a disconnect or a restart (from the saved {offset, epoch}), and from a
//! manifest delta since the saved version when recovery is impossible. Downloads go to
//! `DIR/.ferry-sync/tmp/`, are checked against their sha256 and renamed into place;
//! uploads are conditional on the content they replace, so a concurrent change on the
//! server is never overwritten: it becomes a conflict, and the local version is kept as
//! a conflict copy.

mod engine;
mod live;
mod remote;
mod scan;
mod state;

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;

pub use scan::IGNORE_FILE;

use crate::http::{Http, HttpError};
use crate::hub::HubError;

/// Default largest file sent by one `PUT` (the server's default `put_max_size`); larger
/// files go through a resumable tus upload and `POST /sync/{root}/commit`. A server with
/// a smaller limit answers `413` and the client falls back to tus.
pub const DEFAULT_PUT_MAX: u64 = 16 << 20;

/// Which side an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The local folder.
    Local,
    /// The server.
    Remote,
}

/// How the client learnt what changed on the server while it was away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// The whole manifest (first run, or the ignore patterns changed).
    Manifest,
    /// The operations missed, recovered from the channel's history.
    History,
    /// Recovery was impossible: the manifest entries changed since the saved version.
    ManifestDelta,
}

/// What a [`SyncClient`] reports, in order. Serialized as one JSON object with an
/// `event` field (the `--json` lines of `ferry sync`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncEvent {
    /// The local folder was scanned.
    Scanned {
        /// Files found (not ignored).
        files: usize,
        /// Directories found.
        dirs: usize,
        /// Bytes hashed because they were new or changed since the index.
        hashed_bytes: u64,
    },
    /// The view of the server is up to date.
    CaughtUp {
        /// How.
        via: CatchUp,
        /// Operations recovered from history (for `history`).
        ops: usize,
        /// Manifest entries read (for `manifest` and `manifest_delta`).
        entries: usize,
        /// Manifest requests this client made since it started.
        manifest_requests: u64,
    },
    /// A dry run would do this.
    Planned {
        /// The action, e.g. `upload`, `download`, `delete_local`.
        action: String,
        /// The path.
        path: String,
    },
    /// A file was sent to the server.
    Uploaded {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// Whether it went through the resumable (tus) upload.
        resumable: bool,
    },
    /// A file came from the server.
    Downloaded {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// Bytes that travelled: less than `size` for a resumed download, 0 when the
        /// content was already here (a file renamed or copied elsewhere).
        transferred: u64,
    },
    /// A directory was made.
    Created {
        /// The path.
        path: String,
        /// Where.
        side: Side,
    },
    /// A file or directory was deleted.
    Deleted {
        /// The path.
        path: String,
        /// Where.
        side: Side,
    },
    /// A path was renamed: on the server (`remote`: a local rename sent as `POST
    /// rename`, nothing uploaded again) or here (`local`: a rename from elsewhere applied
    /// without downloading anything).
    Renamed {
        /// Old path.
        from: String,
        /// New path.
        to: String,
        /// Where.
        side: Side,
    },
    /// Both sides changed `path`: the server's version took it, the local one was kept
    /// as `copy` (and uploaded).
    Conflict {
        /// The contested path.
        path: String,
        /// The conflict copy.
        copy: String,
    },
    /// Paths that differ only by case: they cannot coexist on a case-insensitive
    /// filesystem (macOS, Windows).
    CaseCollision {
        /// The colliding paths.
        paths: Vec<String>,
    },
    /// A path that is not synced (a symbolic link, a name the path rule refuses, a path
    /// from the server that would leave the folder).
    Skipped {
        /// The path as found.
        path: String,
        /// Why.
        reason: String,
    },
    /// Progress of a transfer.
    Progress {
        /// The path.
        path: String,
        /// Which way: `remote` = uploading, `local` = downloading.
        to: Side,
        /// Bytes done.
        loaded: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Both sides agree; `changes` actions were applied since the last `idle`.
    Idle {
        /// Actions applied.
        changes: usize,
    },
    /// Something failed; the client goes on and retries in a later round.
    Error {
        /// The path, when the error is about one.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// What went wrong.
        message: String,
    },
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// An HTTP request failed (connection, timeout, TLS, ...).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The hub connection failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The server refused a request.
    #[error("{what}: the server answered {status} {code}: {message}")]
    Server {
        /// What the client was doing.
        what: String,
        /// HTTP status.
        status: u16,
        /// The error code of the body, if any.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server sent something the protocol does not allow (a hostile path, a
    /// missing hash).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server's content changed while it was transferred; the next round retries.
    #[error("{0}")]
    Changed(String),
    /// A write was refused because it would go through a symbolic link or outside the
    /// folder.
    #[error("refused: {0}")]
    Unsafe(String),
    /// The ignore patterns are invalid.
    #[error("ignore patterns: {0}")]
    Ignore(String),
    /// Some paths could not be synced in the last round (each was reported as a
    /// [`SyncEvent::Error`]); a later round retries them.
    #[error("{failed} path(s) could not be synced; see the errors reported")]
    Incomplete {
        /// How many actions failed.
        failed: usize,
    },
    /// The saved state cannot be used, or the configuration is wrong.
    #[error("{0}")]
    State(String),
}

impl SyncError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SyncError {
        SyncError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the error is about the network or the server being unreachable (the
    /// live mode retries these), as opposed to a refusal or a local problem.
    pub fn is_connection(&self) -> bool {
        match self {
            SyncError::Http(e) => e.is_connect() || e.is_timeout() || e.is_network(),
            SyncError::Hub(HubError::Transport(_)) => true,
            _ => false,
        }
    }
}

/// Builds a [`SyncClient`]; made by [`SyncClient::builder`].
#[derive(Debug)]
pub struct SyncClientBuilder {
    server: String,
    root: String,
    dir: PathBuf,
    token: Option<String>,
    ignore: Vec<String>,
    host: Option<String>,
    dry_run: bool,
    put_max: u64,
    http: Option<Http>,
}

impl SyncClientBuilder {
    /// Authenticate with this token (needs Subscribe on the root's channel to read and
    /// Publish to write).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Another ignore pattern (gitignore syntax), on top of `DIR/.ferryignore`.
    pub fn ignore(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(pattern.into());
        self
    }

    /// The machine name used in conflict copies' names. Default: the host name.
    pub fn host_name(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Only report what would be done ([`SyncEvent::Planned`]); change nothing on either
    /// side and save no state.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Largest file sent by one `PUT`. Default [`DEFAULT_PUT_MAX`].
    pub fn put_max(mut self, bytes: u64) -> Self {
        self.put_max = bytes;
        self
    }

    /// The HTTP client to use (for TLS settings). Default: a new one without a total
    /// timeout (transfers can be long).
    pub fn http(mut self, http: Http) -> Self {
        self.http = Some(http);
        self
    }

    /// Check the settings and make the client, with the receiving end of its events.
    ///
    /// # Errors
    ///
    /// [`SyncError::State`] for a server URL that is not http(s), an empty root or a
    /// folder that does not exist; [`SyncError::Http`] when the HTTP client cannot be
    /// built.
    pub fn build(self) -> Result<(SyncClient, mpsc::UnboundedReceiver<SyncEvent>), SyncError> {
        let server = self.server.trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(SyncError::State(format!(
                "the server URL must start with http:// or https://, not {server:?}"
            )));
        }
        if self.root.is_empty() || self.root.contains('/') {
            return Err(SyncError::State(format!(
                "{:?} is not a root name (one path segment, e.g. `default`)",
                self.root
            )));
        }
        if !self.dir.is_dir() {
            return Err(SyncError::State(format!(
                "{} is not a directory (create it first)",
                self.dir.display()
            )));
        }
        // The watcher reports absolute paths under the folder as it was given: one
        // spelling of it, so that they can be made relative again.
        let dir = std::fs::canonicalize(&self.dir).map_err(|e| SyncError::io(&self.dir, e))?;
        let http = match self.http {
            Some(http) => http,
            None => Http::builder()
                .timeout(None)
                .user_agent(concat!("ferry-sync/", env!("CARGO_PKG_VERSION")))
                .build()?,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let host = self.host.unwrap_or_else(host_name);
        Ok((
            SyncClient {
                config: Config {
                    server,
                    root: self.root,
                    dir,
                    token: self.token,
                    ignore: self.ignore,
                    host,
                    dry_run: self.dry_run,
                    put_max: self.put_max,
                    http,
                },
                events: tx,
            },
            rx,
        ))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub server: String,
    pub root: String,
    pub dir: PathBuf,
    pub token: Option<String>,
    pub ignore: Vec<String>,
    pub host: String,
    pub dry_run: bool,
    pub put_max: u64,
    pub http: Http,
}

/// A two-way sync of one local folder with one root of a ferry hub.
#[derive(Debug)]
pub struct SyncClient {
    config: Config,
    events: mpsc::UnboundedSender<SyncEvent>,
}

impl SyncClient {
    /// A builder for syncing `dir` with root `root` of the hub at `server`
    /// (`http://host:port`).
    pub fn builder(
        server: impl Into<String>,
        root: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> SyncClientBuilder {
        SyncClientBuilder {
            server: server.into(),
            root: root.into(),
            dir: dir.into(),
            token: None,
            ignore: Vec::new(),
            host: None,
            dry_run: false,
            put_max: DEFAULT_PUT_MAX,
            http: None,
        }
    }

    /// Reconcile once (catch up with the server, then plan and execute rounds until
    /// both sides agree) and return.
    ///
    /// # Errors
    ///
    /// A failure to reach the server, a refused request that stops the round, or a
    /// local I/O error; per-path failures are reported as [`SyncEvent::Error`] instead,
    /// and make the result an error only when the last round still had them.
    pub async fn run_once(&self) -> Result<(), SyncError> {
        let mut engine = engine::Engine::open(&self.config, self.events.clone()).await?;
        let hub = live::connect(&mut engine).await?;
        let result = engine.settle().await;
        hub.close().await;
        result
    }

    /// Reconcile, then stay live: local changes (watched) and the server's operations
    /// (the root's channel) are applied as they come. Returns only on an error that
    /// retrying cannot fix (a refusal, a broken state file).
    ///
    /// # Errors
    ///
    /// As [`run_once`](Self::run_once) for the first connection; afterwards network
    /// failures are retried.
    pub async fn run(&self) -> Result<(), SyncError> {
        let mut engine = engine::Engine::open(&self.config, self.events.clone()).await?;
        live::run(&mut engine).await
    }
}

/// This machine's name, for conflict copies.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferry".to_string())
}

/// `YYYY-MM-DD` (UTC) for a time in days since the Unix epoch (Howard Hinnant's
/// civil-from-days).
pub(crate) fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_787), "2026-11-30");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn events_serialize_as_tagged_lines() {
        let event = SyncEvent::Conflict {
            path: "a.txt".into(),
            copy: "a (conflict from h 2026-11-30).txt".into(),
        };
        let line = serde_json::to_string(&event).expect("encode");
        assert_eq!(
            line,
            r#"{"event":"conflict","path":"a.txt","copy":"a (conflict from h 2026-11-30).txt"}"#
        );
    }
}
