//! `ferry sync SERVER_URL/ROOT DIR [--once] [--ignore PATTERN]... [--dry-run] [--json]`:
//! argument parsing and output around `ferry_client::sync::SyncClient`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ferry_client::sync::{CatchUp, Side, SyncClient, SyncError, SyncEvent};
use ferry_proto::ErrorCode;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shown after `ferry sync --help`.
pub const SYNC_HELP: &str = "\
How it works: the first run reads the root's manifest and reconciles it with the folder
(three-way, against an index kept in DIR/.ferry-sync/); afterwards the client stays live:
a local watcher sends your changes, the root's channel brings everyone else's. A client
that was away (stopped, offline) catches up from the channel's history: only the
operations it missed travel, not the whole manifest.

Both sides changed a file since they last agreed? The server's version keeps the name,
yours is kept next to it as `NAME (conflict from HOST YYYY-MM-DD).EXT` and uploaded too:
nothing is overwritten silently. A deletion against an edit keeps the edit.

Transfers are checked by sha256; downloads are written under DIR/.ferry-sync/tmp/ and
renamed into place, so an interrupted transfer never leaves a half-written file (the
next run resumes it). Files larger than 16 MiB go through a resumable (tus) upload.
Symbolic links are never followed, paths from the server that would leave DIR are
refused, and names that differ only by case are reported.

Ignore patterns use gitignore syntax: in DIR/.ferryignore (synced like any file) and
with --ignore; ignored paths are neither sent nor received.

--json prints one JSON object per line with an `event` field: scanned, caught_up
({via: manifest|history|manifest_delta, ops, entries, manifest_requests}), uploaded,
downloaded ({path, size, transferred}), created, deleted ({side: local|remote}), renamed, conflict ({path, copy}),
case_collision, skipped, progress, idle ({changes}: both sides agree), planned
(--dry-run), error.

Examples:
  ferry serve --sync-root notes=./server-notes
  ferry sync http://127.0.0.1:8080/notes ~/notes --token \"$FERRY_TOKEN\"
  ferry sync :8080/notes ~/notes --once --dry-run
  ferry sync http://127.0.0.1:8080/notes ~/notes --ignore '*.tmp' --ignore build/ --json

Exit codes:
  0    in sync (--once, --dry-run)
  1    connection failed, an I/O error, or some paths could not be synced
  2    usage: a bad URL, DIR missing, DIR paired with another root
  3    the server refused (token, capability, unknown root)
  130  interrupted (Ctrl-C)";

/// `ferry sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The hub and the root, e.g. http://127.0.0.1:8080/default or :8080/default (the
    /// root is the last path segment; `.../sync/ROOT` works too).
    #[arg(value_name = "SERVER_URL/ROOT")]
    url: String,
    /// The local folder (it must exist).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Reconcile once and exit instead of staying live.
    #[arg(long)]
    once: bool,
    /// Ignore paths matching PATTERN (gitignore syntax), on top of DIR/.ferryignore;
    /// repeatable.
    #[arg(long, value_name = "PATTERN")]
    ignore: Vec<String>,
    /// Print what would be done and change nothing (implies --once).
    #[arg(long)]
    dry_run: bool,
    /// One JSON event per line on stdout instead of text and progress bars.
    #[arg(long)]
    json: bool,
    /// A token with Subscribe (to read) and Publish (to write) on the root's channel.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The name used in conflict copies [default: this machine's host name].
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
}

/// Split `http://host:port/ROOT` (or `.../sync/ROOT`) into the server and the root.
fn split_url(url: &str) -> Result<(String, String), String> {
    let trimmed = url.trim_end_matches('/');
    let Some(rest) = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
    else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let Some((authority_and_path, root)) = rest.rsplit_once('/') else {
        return Err(format!(
            "{url:?} names no root: add it as the last path segment, e.g. {url}/default"
        ));
    };
    let scheme_len = trimmed.len() - rest.len();
    let mut server = format!("{}{authority_and_path}", &trimmed[..scheme_len]);
    if let Some(stripped) = server.strip_suffix("/sync") {
        server = stripped.to_string();
    }
    if root.is_empty() {
        return Err(format!("{url:?} names no root"));
    }
    Ok((server, root.to_string()))
}

/// Run `ferry sync`.
pub fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let url = crate::urls::complete(&args.url, crate::urls::Family::Http);
    let (server, root) = match split_url(&url) {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: ferry sync http://127.0.0.1:8080/default ./folder");
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    let mut builder = SyncClient::builder(server, root, &args.dir).dry_run(args.dry_run);
    if let Some(token) = &args.token {
        builder = builder.token(token);
    }
    if let Some(host) = &args.host_name {
        builder = builder.host_name(host);
    }
    for pattern in &args.ignore {
        builder = builder.ignore(pattern);
    }
    let (client, events) = match builder.build() {
        Ok(parts) => parts,
        Err(e) => return Ok(report(&e, args.json)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let printer = tokio::spawn(print_events(events, args.json));
        let once = args.once || args.dry_run;
        let result = tokio::select! {
            r = async { if once { client.run_once().await } else { client.run().await } } => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        };
        drop(client);
        let _ = printer.await;
        Ok(match result {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => report(&e, args.json),
            None => ExitCode::from(crate::exit::INTERRUPTED),
        })
    })
}

fn report(error: &SyncError, json: bool) -> ExitCode {
    let code: u8 = match error {
        SyncError::State(_) | SyncError::Ignore(_) => crate::exit::USAGE,
        SyncError::Server { .. } => crate::exit::REFUSED,
        SyncError::Hub(e) if e.server_code().is_some() => crate::exit::REFUSED,
        SyncError::Http(e) if e.is_status() => crate::exit::REFUSED,
        _ => crate::exit::FAILED,
    };
    eprintln!("error: {error}");
    let refused = match error {
        SyncError::Server { status, .. } => matches!(status, 401 | 403),
        SyncError::Hub(e) => matches!(
            e.server_code(),
            Some(
                ErrorCode::AuthRequired
                    | ErrorCode::AuthFailed
                    | ErrorCode::AuthExpired
                    | ErrorCode::PermissionDenied
            )
        ),
        _ => false,
    };
    if refused {
        eprintln!(
            "hint: pass a token with Subscribe and Publish on the root's channel, e.g. --token \"$(ferry token --user me --caps '[{{\"channels\":[\"sync:*\"],\"allow\":[\"subscribe\",\"publish\"]}}]')\""
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "fatal", "code": code, "message": error.to_string()})
        );
    }
    ExitCode::from(code)
}

/// Print events until the client is dropped: JSON lines, or text with a progress bar
/// per running transfer.
async fn print_events(mut events: tokio::sync::mpsc::UnboundedReceiver<SyncEvent>, json: bool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = events.recv().await {
        if json {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
            continue;
        }
        let line = match &event {
            SyncEvent::Progress {
                path,
                loaded,
                total,
                ..
            } => {
                let bar = bars.entry(path.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(*total));
                    if let Ok(style) = ProgressStyle::with_template(
                        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_message(path.clone());
                    bar
                });
                bar.set_position(*loaded);
                continue;
            }
            SyncEvent::Uploaded { path, size, .. } => {
                finish(&mut bars, path);
                format!("uploaded    {path} ({size} bytes)")
            }
            SyncEvent::Downloaded {
                path,
                size,
                transferred,
            } => {
                finish(&mut bars, path);
                if transferred == size {
                    format!("downloaded  {path} ({size} bytes)")
                } else {
                    format!("downloaded  {path} ({size} bytes, {transferred} transferred)")
                }
            }
            SyncEvent::Created { path, side } => format!("created     {path}/ ({})", where_(*side)),
            SyncEvent::Deleted { path, side } => format!("deleted     {path} ({})", where_(*side)),
            SyncEvent::Renamed { from, to, .. } => format!("renamed     {from} -> {to}"),
            SyncEvent::Conflict { path, copy } => {
                format!("conflict    {path}: the server's version kept, yours saved as {copy}")
            }
            SyncEvent::CaseCollision { paths } => {
                format!("collision   {} differ only by case", paths.join(", "))
            }
            SyncEvent::Skipped { path, reason } => format!("skipped     {path}: {reason}"),
            SyncEvent::Planned { action, path } => format!("would {action:<13} {path}"),
            SyncEvent::CaughtUp {
                via, ops, entries, ..
            } => match via {
                CatchUp::Manifest => format!("caught up   from the manifest ({entries} entries)"),
                CatchUp::History => format!("caught up   from history ({ops} operations missed)"),
                CatchUp::ManifestDelta => {
                    format!("caught up   from a manifest delta ({entries} entries changed)")
                }
            },
            SyncEvent::Idle { changes } => format!("in sync     ({changes} changes)"),
            SyncEvent::Error { path, message } => match path {
                Some(p) => format!("error       {p}: {message}"),
                None => format!("error       {message}"),
            },
            SyncEvent::Scanned { .. } => continue,
            _ => continue,
        };
        // Above the bars on a terminal; plain stdout lines otherwise.
        multi.suspend(|| println!("{line}"));
    }
}

fn where_(side: Side) -> &'static str {
    match side {
        Side::Local => "here",
        Side::Remote => "on the server",
    }
}

fn finish(bars: &mut HashMap<String, ProgressBar>, path: &str) {
    if let Some(bar) = bars.remove(path) {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_server_and_root() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/notes").expect("ok"),
            ("http://127.0.0.1:8080".into(), "notes".into())
        );
        assert_eq!(
            split_url("https://h/sync/notes/").expect("ok"),
            ("https://h".into(), "notes".into())
        );
        assert!(split_url("http://127.0.0.1:8080").is_err());
        assert!(split_url("ftp://h/x").is_err());
    }
}
