//! The live half of a sync client: the root's channel through [`HubClient`] (recovering
//! missed operations from the saved position), the local watcher (notify, debounced),
//! and the loop that reconciles whenever either side changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::sync::{FileOp, STATE_DIR};
use futures_util::FutureExt;
use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::engine::Engine;
use super::state::SavedPosition;
use super::{CatchUp, SyncError, SyncEvent};
use crate::hub::{HubClient, Position, Subscription, SubscriptionEvent};

/// How long the local watcher waits for a burst of changes to end.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Retry delays after a failed round: doubling from 1 s to 30 s.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A hub connection subscribed to the root's channel.
pub(crate) struct Live {
    hub: HubClient,
    sub: Subscription,
}

impl Live {
    pub async fn close(self) {
        self.hub.close().await;
    }
}

fn ws_url(server: &str) -> String {
    let rest = server
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| server.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| server.to_string());
    format!("{rest}/ws")
}

/// Connect to the hub, subscribe to the root's channel and bring the view of the server
/// up to date: from the channel's history after the saved position, from a manifest
/// delta when the history cannot fill the gap, or from the whole manifest on a first run.
pub(crate) async fn connect(engine: &mut Engine) -> Result<Live, SyncError> {
    let channel = engine.channel().await?;
    let mut builder = HubClient::builder(&ws_url(&engine.config.server));
    if let Some(token) = &engine.config.token {
        builder = builder.token(token);
    }
    let hub = builder.connect().await?;
    let resume = match (&engine.position, engine.needs_manifest) {
        (Some(p), false) => Some(Position {
            offset: p.offset,
            epoch: p.epoch.clone(),
        }),
        _ => None,
    };
    let mut sub = match resume {
        Some(position) => hub.subscribe_from(&channel, position).await?,
        None => hub.subscribe(&channel).await?,
    };
    loop {
        let Some(event) = sub.next().await else {
            return Err(SyncError::State("the hub client closed".into()));
        };
        match event {
            SubscriptionEvent::Subscribed { position } => {
                engine.position = Some(saved(&position));
                engine.load_manifest().await?;
                break;
            }
            SubscriptionEvent::Recovered {
                recovered: true,
                missed,
                position,
            } => {
                engine.position = Some(saved(&position));
                for _ in 0..missed {
                    match sub.next().await {
                        Some(SubscriptionEvent::Publication(p)) => {
                            apply(engine, &p);
                        }
                        Some(_) => {}
                        None => return Err(SyncError::State("the hub client closed".into())),
                    }
                }
                engine.emit(SyncEvent::CaughtUp {
                    via: CatchUp::History,
                    ops: missed,
                    entries: 0,
                    manifest_requests: engine.manifest_requests,
                });
                break;
            }
            SubscriptionEvent::Recovered {
                recovered: false,
                position,
                ..
            } => {
                engine.position = Some(saved(&position));
                engine.load_delta().await?;
                break;
            }
            SubscriptionEvent::Error(e) => return Err(e.into()),
            _ => {}
        }
    }
    Ok(Live { hub, sub })
}

fn saved(position: &Position) -> SavedPosition {
    SavedPosition {
        offset: position.offset,
        epoch: position.epoch.clone(),
    }
}

/// Apply one publication of the root's channel; whether the client must reconcile.
fn apply(engine: &mut Engine, p: &ferry_proto::envelope::Publication) -> bool {
    let position = SavedPosition {
        offset: p.offset,
        epoch: p.epoch.clone(),
    };
    match serde_json::from_str::<FileOp>(p.data.to_json().get()) {
        Ok(op) => engine.apply_op(&op, position),
        Err(e) => {
            engine.position = Some(position);
            engine.emit(SyncEvent::Error {
                path: None,
                message: format!("ignored a malformed operation on the channel: {e}"),
            });
            false
        }
    }
}

/// Watch `dir` recursively; every debounced batch sends the paths it names outside the
/// state directory on `tx`, or `None` when the watcher lost track (overflow, error).
fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<Option<Vec<PathBuf>>>,
) -> Result<impl Drop + use<>, SyncError> {
    let state: PathBuf = dir.join(STATE_DIR);
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let message = match result {
            Ok(events) => {
                // Reads (the scan's own opens included) change nothing.
                let paths: Vec<PathBuf> = events
                    .iter()
                    .filter(|e| !e.kind.is_access())
                    .flat_map(|e| e.paths.iter())
                    .filter(|p| !p.starts_with(&state))
                    .cloned()
                    .collect();
                if paths.is_empty() {
                    return;
                }
                Some(paths)
            }
            Err(_) => None,
        };
        let _ = tx.send(message);
    })
    .map_err(|e| SyncError::State(format!("cannot watch {}: {e}", dir.display())))?;
    debouncer
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| SyncError::State(format!("cannot watch {}: {e}", dir.display())))?;
    Ok(debouncer)
}

/// One event of the root's channel; whether the client must reconcile.
async fn handle(engine: &mut Engine, event: SubscriptionEvent) -> bool {
    match event {
        SubscriptionEvent::Publication(p) => apply(engine, &p),
        SubscriptionEvent::Recovered {
            recovered: false,
            position,
            ..
        } => {
            engine.position = Some(saved(&position));
            if let Err(e) = engine.load_delta().await {
                engine.emit(SyncEvent::Error {
                    path: None,
                    message: e.to_string(),
                });
                engine.needs_manifest = true;
            }
            true
        }
        SubscriptionEvent::Recovered {
            recovered: true,
            missed,
            ..
        } => {
            engine.emit(SyncEvent::CaughtUp {
                via: CatchUp::History,
                ops: missed,
                entries: 0,
                manifest_requests: engine.manifest_requests,
            });
            false
        }
        SubscriptionEvent::Error(e) => {
            engine.emit(SyncEvent::Error {
                path: None,
                message: e.to_string(),
            });
            false
        }
        _ => false,
    }
}

/// Live mode: reconcile, then follow both sides until an error retrying cannot fix.
pub(crate) async fn run(engine: &mut Engine) -> Result<(), SyncError> {
    engine.clean_staging(None);
    engine.incremental = true;
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let _watcher = watch(engine.dir(), watch_tx)?;
    let mut delay = RETRY_MIN;
    let mut live = loop {
        match connect(engine).await {
            Ok(live) => break live,
            Err(e) if e.is_connection() => {
                engine.emit(SyncEvent::Error {
                    path: None,
                    message: format!("{e}; retrying in {}s", delay.as_secs()),
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    };
    let mut dirty = true;
    let mut retry_at: Option<tokio::time::Instant> = None;
    delay = RETRY_MIN;
    loop {
        if dirty && retry_at.is_none() {
            dirty = false;
            match engine.settle().await {
                Ok(()) => delay = RETRY_MIN,
                Err(e) if e.is_connection() || matches!(e, SyncError::Incomplete { .. }) => {
                    if e.is_connection() {
                        engine.emit(SyncEvent::Error {
                            path: None,
                            message: format!("{e}; retrying in {}s", delay.as_secs()),
                        });
                    }
                    retry_at = Some(tokio::time::Instant::now() + delay);
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = live.sub.next() => match event {
                Some(event) => {
                    dirty |= handle(engine, event).await;
                    // Take every event already waiting before reconciling: one round for
                    // a burst of operations instead of one per operation.
                    while let Some(Some(event)) = live.sub.next().now_or_never() {
                        dirty |= handle(engine, event).await;
                    }
                }
                None => {
                    live.close().await;
                    live = connect(engine).await?;
                    dirty = true;
                }
            },
            Some(changes) = watch_rx.recv() => {
                engine.note_changes(changes);
                while let Ok(changes) = watch_rx.try_recv() {
                    engine.note_changes(changes);
                }
                dirty = true;
            }
            () = retry => {
                retry_at = None;
                dirty = true;
            }
        }
        // A manifest to read again (a failed delta) is read by the next round.
        dirty |= engine.needs_manifest;
    }
}
