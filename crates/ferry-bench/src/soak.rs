//! `soak`: many connections for a long time, with every kind of peer a real deployment
//! sees at once, checking that nobody well-behaved misses a publication, that every
//! stalled reader is reaped, and that the server's memory stays flat.
//!
//! The mix (all over `ferry.json` WebSockets, publications over `POST /api/publish`):
//!
//! - **well-behaved subscribers** (the rest of `--connections`), spread over `--channels`
//!   channels, each checking that the offsets it sees per channel are contiguous (a gap, a
//!   duplicate or an epoch change is a miss) and, after the run, that it reached the last
//!   offset published;
//! - **stalled readers** (`--stalled-percent`): a TCP socket with a tiny `SO_RCVBUF` that
//!   subscribes and then never reads. Each is judged `--stalled-check` seconds after it
//!   opened by reading it: end of stream, a reset or a close frame means the server reaped
//!   it; data that never ends means it did not. Then a fresh one takes its place, so the
//!   pressure lasts the whole run;
//! - **slow readers** (`--slow-percent`): subscribed to `--slow-channels` channels, they
//!   read one frame and sleep `--slow-sleep-ms`. Closed with 1013 when their send queue
//!   overflows (expected), they reconnect and recover;
//! - **reconnect storms**: every `--storm-every` seconds, `--storm-size` well-behaved
//!   subscribers drop their socket at once and reconnect, subscribing with
//!   `recover: true` and their last offset and epoch; `recovered: false` is a miss;
//! - **publishers**: `--publishers` keep-alive HTTP connections publishing `--rate`
//!   publications per second of `--size` bytes over all channels, plus one of
//!   `--big-size` bytes every `--big-every` seconds (rotating over the channels) so that
//!   writes to stalled readers block.
//!
//! With `--server-pid` the server's RSS is sampled every `--sample-every` seconds from
//! `/proc/PID/status`, and `/api/stats` is read at the same time. Every loop ends at the
//! end of the run (or its drain and judging deadlines); every wait has a timeout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Common;
use super::client::{Target, Ws, clip};
use super::probe::Probe;
use super::report::Errors;
use super::wire;

/// Receive buffer of a stalled reader's socket (the kernel rounds it up to its minimum).
const STALLED_RCVBUF: u32 = 1024;
/// Longest a stalled reader's final read may take before it counts as not reaped.
const JUDGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the end-of-run drain may take (well-behaved subscribers reaching the last
/// offset published).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one HTTP publish may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What `ferry bench soak` does.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// Connections in total (subscribers of every kind).
    pub connections: usize,
    /// Length of the run.
    pub duration: Duration,
    /// Channels the subscribers are spread over.
    pub channels: usize,
    /// Share of stalled readers, percent.
    pub stalled_percent: f64,
    /// Share of slow readers, percent.
    pub slow_percent: f64,
    /// Channels each slow reader subscribes to.
    pub slow_channels: usize,
    /// Sleep of a slow reader after each frame.
    pub slow_sleep: Duration,
    /// Age at which a stalled reader is judged.
    pub stalled_check: Duration,
    /// Time between reconnect storms.
    pub storm_every: Duration,
    /// Well-behaved subscribers dropping at once in a storm.
    pub storm_size: usize,
    /// HTTP publisher connections.
    pub publishers: usize,
    /// Publications per second over all publishers.
    pub rate: f64,
    /// Size of a publication's data, bytes.
    pub size: usize,
    /// Size of the occasional large publication, bytes.
    pub big_size: usize,
    /// Time between large publications (zero: none).
    pub big_every: Duration,
    /// Time between server samples.
    pub sample_every: Duration,
    /// The server's API key (for `/api/publish` and `/api/stats`).
    pub api_key: String,
}

/// A server sample.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Resident memory, KiB (with `--server-pid`).
    pub rss_kib: Option<u64>,
    /// `connections` of `/api/stats`.
    pub connections: Option<u64>,
}

/// The outcome of a soak run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// The URL the connections went to.
    pub url: String,
    /// Connections planned: well-behaved, stalled, slow.
    pub planned: [usize; 3],
    /// Connections open at the end of setup.
    pub opened_at_setup: usize,
    /// Setup time, seconds.
    pub setup_s: f64,
    /// Length of the run, seconds.
    pub duration_s: f64,
    /// End-of-run drain time, seconds.
    pub drain_s: f64,
    /// Publications accepted by the server (small, large).
    pub publications: u64,
    /// Large publications among them.
    pub big_publications: u64,
    /// Failed publish requests.
    pub publish_errors: u64,
    /// Messages received by well-behaved subscribers (live and recovered).
    pub deliveries: u64,
    /// Well-behaved misses in total (the sum of the four below).
    pub misses: u64,
    /// Publications skipped between two offsets a well-behaved subscriber saw.
    pub missed_in_gaps: u64,
    /// Offsets a well-behaved subscriber saw twice (or out of order).
    pub duplicates: u64,
    /// Recoveries answered `recovered: false` (or an epoch change).
    pub recovery_failures: u64,
    /// Publications a well-behaved subscriber had not received when the drain ended.
    pub missing_at_end: u64,
    /// Well-behaved subscribers behind the last offset when the drain ended.
    pub behind_at_end: u64,
    /// Reconnect storms run.
    pub storms: u64,
    /// Well-behaved reconnects (storms and unexpected closes).
    pub reconnects: u64,
    /// Recovering subscribes answered `recovered: true`.
    pub recoveries: u64,
    /// Publications that came back through recovery (reply or follow-up pushes).
    pub recovered_publications: u64,
    /// Well-behaved connections the server closed or lost (not a storm).
    pub unexpected_closes: u64,
    /// Failed connects (all kinds, retried).
    pub connect_errors: u64,
    /// Stalled readers opened.
    pub stalled_opened: u64,
    /// Stalled readers judged reaped (close frame, end of stream or reset).
    pub stalled_reaped: u64,
    /// Of those, how many had a close frame first, by code.
    pub stalled_close_codes: HashMap<u16, u64>,
    /// Stalled readers still open when judged (a server bug).
    pub stalled_not_reaped: u64,
    /// Stalled readers too young to judge when the run ended.
    pub stalled_unjudged: u64,
    /// Messages received by slow readers.
    pub slow_deliveries: u64,
    /// Slow readers closed with 1013.
    pub slow_closed_1013: u64,
    /// Slow readers closed otherwise.
    pub slow_closed_other: u64,
    /// Slow-reader recoveries answered `recovered: true` / `false`.
    pub slow_recovered: [u64; 2],
    /// Gaps slow readers saw while connected (a server bug: 1013 comes before any gap).
    pub slow_gaps: u64,
    /// Server samples.
    pub samples: Vec<ServerSample>,
    /// RSS min, max (KiB) and max/min over the samples.
    pub rss_min_kib: Option<u64>,
    /// Largest RSS sample, KiB.
    pub rss_max_kib: Option<u64>,
    /// `rss_max_kib / rss_min_kib`.
    pub rss_ratio: Option<f64>,
    /// A few error messages.
    pub error_samples: Vec<String>,
}

/// Counters shared by every task.
#[derive(Default)]
struct Counters {
    publications: AtomicU64,
    big_publications: AtomicU64,
    publish_errors: AtomicU64,
    deliveries: AtomicU64,
    missed_in_gaps: AtomicU64,
    duplicates: AtomicU64,
    recovery_failures: AtomicU64,
    reconnects: AtomicU64,
    recoveries: AtomicU64,
    recovered_publications: AtomicU64,
    unexpected_closes: AtomicU64,
    connect_errors: AtomicU64,
    stalled_opened: AtomicU64,
    stalled_reaped: AtomicU64,
    stalled_not_reaped: AtomicU64,
    stalled_unjudged: AtomicU64,
    slow_deliveries: AtomicU64,
    slow_closed_1013: AtomicU64,
    slow_closed_other: AtomicU64,
    slow_recovered: AtomicU64,
    slow_not_recovered: AtomicU64,
    slow_gaps: AtomicU64,
    /// Connections open after their first subscribe (setup progress).
    ready: AtomicUsize,
    /// Well-behaved subscribers at the last offset during the drain.
    caught_up: AtomicUsize,
}

/// Phases of a run, as every task sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Everything runs.
    Run,
    /// Publishers, slow readers and stalled readers stop; well-behaved subscribers read on.
    Settle,
    /// Well-behaved subscribers report when they reached the last offset published.
    Drain,
    /// Everyone stops.
    Stop,
}

struct Ctx {
    target: Arc<Target>,
    plan: SoakPlan,
    channels: Vec<String>,
    /// The highest offset the publishers were answered with, per channel.
    tops: Vec<AtomicU64>,
    counters: Counters,
    errors: Mutex<Errors>,
    stalled_codes: Mutex<HashMap<u16, u64>>,
    phase: watch::Sender<Phase>,
    storm: watch::Sender<u64>,
    setup: Semaphore,
    well_behaved: usize,
}

impl Ctx {
    fn error(&self, what: impl Into<String>) {
        if let Ok(mut e) = self.errors.lock() {
            e.add(what);
        }
    }

    fn channel_index(&self, name: &str) -> Option<usize> {
        let n: usize = name.strip_prefix("chat:soak-")?.parse().ok()?;
        (n < self.channels.len()).then_some(n)
    }

    /// Open one hub connection (authenticated, nothing subscribed); `rcvbuf` sets a
    /// receive buffer before connecting.
    async fn connect(&self, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
        timeout(Duration::from_secs(20), self.connect_inner(rcvbuf))
            .await
            .map_err(|_| anyhow::anyhow!("connect and handshake took over 20 s"))?
    }

    async fn connect_inner(&self, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
        let socket = if self.target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("socket")?;
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).context("SO_RCVBUF")?;
        }
        let stream: TcpStream = socket.connect(self.target.addr).await.context("connect")?;
        self.target.handshake(stream, false).await
    }
}

/// Where a subscriber stands in one channel.
#[derive(Debug, Clone)]
struct Position {
    offset: u64,
    epoch: String,
}

/// What one subscriber (well-behaved or slow) tracks.
struct Tracker {
    slow: bool,
    /// Channel index → position, once subscribed.
    positions: HashMap<usize, Position>,
    /// Reply ids waiting, with the channel and whether it was a recovery.
    pending: HashMap<String, (usize, bool)>,
    next_id: u64,
}

/// A frame the tracker has handled.
enum Seen {
    Message,
    Reply,
    Other,
}

impl Tracker {
    fn new(slow: bool) -> Tracker {
        Tracker {
            slow,
            positions: HashMap::new(),
            pending: HashMap::new(),
            next_id: 0,
        }
    }

    /// The subscribe frame for channel `c`, recovering from the known position.
    fn subscribe_frame(&mut self, ctx: &Ctx, c: usize) -> String {
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        let mut payload = serde_json::json!({"channel": ctx.channels[c]});
        let recover = self.positions.get(&c);
        if let Some(p) = recover {
            payload["recover"] = true.into();
            payload["offset"] = p.offset.into();
            payload["epoch"] = p.epoch.clone().into();
        }
        self.pending.insert(id.clone(), (c, recover.is_some()));
        serde_json::json!({"type": "subscribe", "id": id, "payload": payload}).to_string()
    }

    /// Check one publication (`offset`, `epoch`) of channel `c` against the position.
    fn check(&mut self, ctx: &Ctx, c: usize, offset: u64, epoch: &str) {
        let k = &ctx.counters;
        let Some(p) = self.positions.get_mut(&c) else {
            // A message before the subscribe reply: not possible by the protocol.
            if !self.slow {
                k.duplicates.fetch_add(1, Relaxed);
                ctx.error(format!(
                    "{}: message offset {offset} before the subscribe reply",
                    ctx.channels[c]
                ));
            }
            return;
        };
        if p.epoch != epoch {
            if !self.slow {
                k.recovery_failures.fetch_add(1, Relaxed);
                ctx.error(format!(
                    "{}: epoch changed from {} to {epoch}",
                    ctx.channels[c], p.epoch
                ));
            }
            *p = Position {
                offset,
                epoch: epoch.to_string(),
            };
            return;
        }
        if offset == p.offset + 1 {
            p.offset = offset;
        } else if offset <= p.offset {
            if !self.slow {
                k.duplicates.fetch_add(1, Relaxed);
                ctx.error(format!(
                    "{}: offset {offset} again after {}",
                    ctx.channels[c], p.offset
                ));
            }
        } else {
            let missed = offset - p.offset - 1;
            if self.slow {
                k.slow_gaps.fetch_add(missed, Relaxed);
            } else {
                k.missed_in_gaps.fetch_add(missed, Relaxed);
            }
            ctx.error(format!(
                "{} subscriber, {}: offset {offset} after {} ({missed} missed)",
                if self.slow { "slow" } else { "well-behaved" },
                ctx.channels[c],
                p.offset
            ));
            p.offset = offset;
        }
    }

    /// Handle one text frame.
    fn on_text(&mut self, ctx: &Ctx, text: &str) -> Seen {
        match wire::ferry_type(text) {
            Some("message") => {
                let Some((channel, offset, epoch)) = message_fields(text) else {
                    ctx.error(format!("unparsable message: {}", clip(text)));
                    return Seen::Other;
                };
                let Some(c) = ctx.channel_index(channel) else {
                    return Seen::Other;
                };
                if self.slow {
                    ctx.counters.slow_deliveries.fetch_add(1, Relaxed);
                } else {
                    ctx.counters.deliveries.fetch_add(1, Relaxed);
                }
                self.check(ctx, c, offset, epoch);
                Seen::Message
            }
            Some("reply") => {
                self.on_reply(ctx, text);
                Seen::Reply
            }
            Some("error") => {
                ctx.error(format!("error frame: {}", clip(text)));
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
                    && let Some(id) = v["id"].as_str()
                {
                    self.pending.remove(id);
                }
                Seen::Other
            }
            _ => Seen::Other,
        }
    }

    fn on_reply(&mut self, ctx: &Ctx, text: &str) {
        let k = &ctx.counters;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            ctx.error(format!("unparsable reply: {}", clip(text)));
            return;
        };
        let Some((c, recovering)) = v["id"].as_str().and_then(|id| self.pending.remove(id)) else {
            return;
        };
        let p = &v["payload"];
        let offset = p["offset"].as_u64().unwrap_or_default();
        let epoch = p["epoch"].as_str().unwrap_or_default().to_string();
        if !recovering {
            self.positions.insert(c, Position { offset, epoch });
            return;
        }
        let recovered = p["recovered"].as_bool() == Some(true);
        let publications = p["publications"].as_array().cloned().unwrap_or_default();
        if recovered {
            if self.slow {
                k.slow_recovered.fetch_add(1, Relaxed);
            } else {
                k.recoveries.fetch_add(1, Relaxed);
            }
            for publication in &publications {
                let (Some(o), Some(e)) = (
                    publication["offset"].as_u64(),
                    publication["epoch"].as_str(),
                ) else {
                    continue;
                };
                if self.slow {
                    k.slow_deliveries.fetch_add(1, Relaxed);
                } else {
                    k.deliveries.fetch_add(1, Relaxed);
                    k.recovered_publications.fetch_add(1, Relaxed);
                }
                self.check(ctx, c, o, e);
            }
            return;
        }
        if self.slow {
            k.slow_not_recovered.fetch_add(1, Relaxed);
        } else {
            k.recovery_failures.fetch_add(1, Relaxed);
            let from = self.positions.get(&c).map(|p| p.offset).unwrap_or_default();
            ctx.error(format!(
                "{}: recovered: false from offset {from} (now at {offset})",
                ctx.channels[c]
            ));
        }
        // Start over from what the server says; what was lost is counted.
        let last = publications
            .last()
            .and_then(|p| p["offset"].as_u64())
            .unwrap_or(offset);
        self.positions.insert(
            c,
            Position {
                offset: last,
                epoch,
            },
        );
    }
}

/// `(channel, offset, epoch)` of a `message` push, read without parsing its data.
fn message_fields(text: &str) -> Option<(&str, u64, &str)> {
    fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        let start = text.find(key)? + key.len();
        let end = text[start..].find('"')?;
        Some(&text[start..start + end])
    }
    let channel = string_after(text, r#""channel":""#)?;
    let start = text.find(r#""offset":"#)? + 9;
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    let offset = text[start..start + digits].parse().ok()?;
    let epoch = string_after(text, r#""epoch":""#)?;
    Some((channel, offset, epoch))
}

/// Subscribe to `channels` (recovering where a position is known) and read until every
/// reply came; messages arriving meanwhile are checked as usual.
async fn subscribe_all(
    ctx: &Ctx,
    ws: &mut Ws,
    tracker: &mut Tracker,
    channels: &[usize],
) -> anyhow::Result<()> {
    // Replies owed on a connection that is gone never come.
    tracker.pending.clear();
    for &c in channels {
        let frame = tracker.subscribe_frame(ctx, c);
        ws.send(Message::text(frame)).await.context("subscribe")?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tracker.pending.is_empty() {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no subscribe reply within 30 s"))?;
        match next {
            Some(Ok(Message::Text(t))) => {
                tracker.on_text(ctx, t.as_str());
            }
            Some(Ok(Message::Close(f))) => bail!("closed while subscribing: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("while subscribing: {e}"),
            None => bail!("connection ended while subscribing"),
        }
    }
    Ok(())
}

/// Wait before reconnect attempt `attempt` (0 = at once), spread by `salt`.
async fn backoff(attempt: u32, salt: usize) {
    if attempt == 0 {
        return;
    }
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6));
    let jitter = Duration::from_millis((salt as u64 * 7919) % 250);
    sleep(base.min(MAX_BACKOFF) + jitter).await;
}

/// One load-generator connection slot (index `i`, of kind `kind`, e.g. "slow reader"):
/// opens and reopens its connection, backing off after failed attempts. Its first open
/// waits for a setup permit and is counted as ready.
struct Slot {
    i: usize,
    kind: &'static str,
    opened: bool,
    attempt: u32,
}

impl Slot {
    fn new(i: usize, kind: &'static str) -> Slot {
        Slot {
            i,
            kind,
            opened: false,
            attempt: 0,
        }
    }

    /// Connect (with receive buffer `rcvbuf`) and subscribe to `channels`; `None` after a
    /// failure, which is counted and logged (the next call backs off).
    async fn open(
        &mut self,
        ctx: &Ctx,
        rcvbuf: Option<u32>,
        tracker: &mut Tracker,
        channels: &[usize],
    ) -> Option<Ws> {
        backoff(self.attempt, self.i).await;
        let permit = if self.opened {
            None
        } else {
            ctx.setup.acquire().await.ok()
        };
        let opened = async {
            let mut ws = ctx.connect(rcvbuf).await?;
            subscribe_all(ctx, &mut ws, tracker, channels).await?;
            anyhow::Ok(ws)
        }
        .await;
        drop(permit);
        match opened {
            Ok(ws) => {
                self.attempt = 0;
                if !self.opened {
                    self.opened = true;
                    ctx.counters.ready.fetch_add(1, Relaxed);
                }
                Some(ws)
            }
            Err(e) => {
                ctx.counters.connect_errors.fetch_add(1, Relaxed);
                ctx.error(format!("{} connect: {e:#}", self.kind));
                self.attempt += 1;
                None
            }
        }
    }
}

/// One well-behaved subscriber (index `i`). Returns `(channel, final position)`.
async fn well_behaved(ctx: Arc<Ctx>, i: usize) -> (usize, Option<Position>) {
    let c = i % ctx.channels.len();
    let mut tracker = Tracker::new(false);
    let mut phase = ctx.phase.subscribe();
    let mut storms = ctx.storm.subscribe();
    let mut slot = Slot::new(i, "well-behaved");
    let mut caught_up = false;
    'connect: while *phase.borrow() != Phase::Stop {
        let Some(mut ws) = slot.open(&ctx, None, &mut tracker, &[c]).await else {
            continue;
        };
        storms.mark_unchanged();
        loop {
            if *phase.borrow() == Phase::Drain && !caught_up {
                let top = ctx.tops[c].load(Relaxed);
                if tracker.positions.get(&c).is_some_and(|p| p.offset >= top) {
                    caught_up = true;
                    ctx.counters.caught_up.fetch_add(1, Relaxed);
                }
            }
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Stop {
                        break 'connect;
                    }
                }
                changed = storms.changed(), if *phase.borrow() == Phase::Run => {
                    if changed.is_err() {
                        continue;
                    }
                    let round = *storms.borrow_and_update();
                    if in_storm(round, i, ctx.plan.storm_size, ctx.well_behaved) {
                        // Drop the socket as a network blip would: no close frame.
                        drop(ws);
                        ctx.counters.reconnects.fetch_add(1, Relaxed);
                        continue 'connect;
                    }
                }
                next = ws.next() => match next {
                    Some(Ok(Message::Text(t))) => {
                        tracker.on_text(&ctx, t.as_str());
                    }
                    Some(Ok(Message::Close(f))) => {
                        ctx.counters.unexpected_closes.fetch_add(1, Relaxed);
                        ctx.counters.reconnects.fetch_add(1, Relaxed);
                        ctx.error(format!("well-behaved subscriber closed by the server: {f:?}"));
                        continue 'connect;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        ctx.counters.unexpected_closes.fetch_add(1, Relaxed);
                        ctx.counters.reconnects.fetch_add(1, Relaxed);
                        ctx.error(format!("well-behaved subscriber lost: {e}"));
                        continue 'connect;
                    }
                    None => {
                        ctx.counters.unexpected_closes.fetch_add(1, Relaxed);
                        ctx.counters.reconnects.fetch_add(1, Relaxed);
                        ctx.error("well-behaved subscriber: connection ended by the server");
                        continue 'connect;
                    }
                },
            }
        }
    }
    (c, tracker.positions.remove(&c))
}

/// Whether well-behaved subscriber `i` drops in storm `round` (1, 2, ...): storms take
/// consecutive blocks of `size` subscribers, wrapping around.
fn in_storm(round: u64, i: usize, size: usize, total: usize) -> bool {
    if round == 0 || total == 0 {
        return false;
    }
    let start = ((round - 1) as usize).wrapping_mul(size) % total;
    (i + total - start) % total < size.min(total)
}

/// One slow reader (index `i`).
async fn slow_reader(ctx: Arc<Ctx>, i: usize) {
    let n = ctx.channels.len();
    let channels: Vec<usize> = (0..ctx.plan.slow_channels.min(n))
        .map(|k| (i + k) % n)
        .collect();
    let mut tracker = Tracker::new(true);
    let mut phase = ctx.phase.subscribe();
    let mut slot = Slot::new(i, "slow reader");
    'connect: while *phase.borrow() == Phase::Run {
        let Some(mut ws) = slot.open(&ctx, None, &mut tracker, &channels).await else {
            continue;
        };
        loop {
            let next = tokio::select! {
                _ = phase.wait_for(|p| *p != Phase::Run) => break 'connect,
                next = ws.next() => next,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    if let Seen::Message = tracker.on_text(&ctx, t.as_str()) {
                        tokio::select! {
                            _ = phase.wait_for(|p| *p != Phase::Run) => break 'connect,
                            _ = sleep(ctx.plan.slow_sleep) => {}
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    if f.as_ref().map(|f| f.code) == Some(CloseCode::Again) {
                        ctx.counters.slow_closed_1013.fetch_add(1, Relaxed);
                    } else {
                        ctx.counters.slow_closed_other.fetch_add(1, Relaxed);
                        ctx.error(format!("slow reader closed: {f:?}"));
                    }
                    // Read to the end so the close handshake completes, briefly.
                    let _ = timeout(Duration::from_secs(2), async {
                        while ws.next().await.is_some() {}
                    })
                    .await;
                    continue 'connect;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ctx.counters.slow_closed_other.fetch_add(1, Relaxed);
                    ctx.error(format!("slow reader lost: {e}"));
                    continue 'connect;
                }
                None => {
                    ctx.counters.slow_closed_other.fetch_add(1, Relaxed);
                    ctx.error("slow reader: connection ended without a close frame");
                    continue 'connect;
                }
            }
        }
    }
}

/// One stalled-reader slot (index `i`): open a stalled reader, judge it at
/// `stalled_check`, open the next one, until the run ends.
async fn stalled_slot(ctx: Arc<Ctx>, i: usize) {
    let c = i % ctx.channels.len();
    let mut phase = ctx.phase.subscribe();
    let mut slot = Slot::new(i, "stalled reader");
    while *phase.borrow() == Phase::Run {
        let mut tracker = Tracker::new(true);
        let Some(mut ws) = slot
            .open(&ctx, Some(STALLED_RCVBUF), &mut tracker, &[c])
            .await
        else {
            continue;
        };
        ctx.counters.stalled_opened.fetch_add(1, Relaxed);
        let judge_at = Instant::now() + ctx.plan.stalled_check;
        // Never read again until judged.
        let old_enough = tokio::select! {
            _ = sleep_until(judge_at) => true,
            _ = phase.wait_for(|p| *p != Phase::Run) => Instant::now() >= judge_at,
        };
        if !old_enough {
            ctx.counters.stalled_unjudged.fetch_add(1, Relaxed);
            break;
        }
        judge(&ctx, &mut ws).await;
    }
}

/// Read a stalled reader to its end: reaped when the stream ends (after a close frame or
/// not) within [`JUDGE_TIMEOUT`]; not reaped when data keeps coming or nothing ends.
async fn judge(ctx: &Ctx, ws: &mut Ws) {
    let mut close_code = None;
    let ended = timeout(JUDGE_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => {
                    close_code = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await
    .is_ok();
    if ended {
        ctx.counters.stalled_reaped.fetch_add(1, Relaxed);
        if let Some(code) = close_code
            && let Ok(mut codes) = ctx.stalled_codes.lock()
        {
            *codes.entry(code).or_default() += 1;
        }
    } else {
        ctx.counters.stalled_not_reaped.fetch_add(1, Relaxed);
        ctx.error(format!(
            "stalled reader still open {:?} after it stopped reading",
            ctx.plan.stalled_check
        ));
    }
}

/// A keep-alive HTTP/1.1 connection to the server's API.
struct Api {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Api {
    async fn open(target: &Target) -> anyhow::Result<Api> {
        let stream = TcpStream::connect(target.addr).await.context("connect")?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(conn);
        Ok(Api { sender })
    }

    async fn post(
        &mut self,
        target: &Target,
        key: &str,
        path: &str,
        body: String,
    ) -> anyhow::Result<serde_json::Value> {
        self.sender.ready().await.context("API connection")?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, target.addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("apikey {key}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("request")?;
        let response = timeout(PUBLISH_TIMEOUT, async {
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        })
        .await
        .map_err(|_| anyhow::anyhow!("{path}: no answer within {PUBLISH_TIMEOUT:?}"))??;
        let (status, body) = response;
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("{path}: answer is not JSON"))
    }
}

/// Publish one publication of `size` bytes to channel `c`; records the offset.
async fn publish_one(ctx: &Ctx, api: &mut Option<Api>, c: usize, seq: u64, size: usize) -> bool {
    if api.is_none() {
        match Api::open(&ctx.target).await {
            Ok(a) => *api = Some(a),
            Err(e) => {
                ctx.counters.publish_errors.fetch_add(1, Relaxed);
                ctx.error(format!("publisher connect: {e:#}"));
                return false;
            }
        }
    }
    let Some(conn) = api.as_mut() else {
        return false;
    };
    let data = wire::payload(seq, wire::now_micros(), size);
    let body = format!(
        r#"{{"channel":{},"data":{data}}}"#,
        serde_json::Value::from(ctx.channels[c].as_str())
    );
    match conn
        .post(&ctx.target, &ctx.plan.api_key, "/api/publish", body)
        .await
    {
        Ok(v) => {
            if let Some(o) = v["offset"].as_u64() {
                ctx.tops[c].fetch_max(o, Relaxed);
            }
            ctx.counters.publications.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            ctx.counters.publish_errors.fetch_add(1, Relaxed);
            ctx.error(format!("publish: {e:#}"));
            *api = None;
            false
        }
    }
}

/// Publisher `p` of `n`: `rate / n` publications per second, channels round robin.
async fn publisher(ctx: Arc<Ctx>, p: usize, n: usize, next: Arc<AtomicU64>) {
    let mut phase = ctx.phase.subscribe();
    let per = ctx.plan.rate / n as f64;
    if per <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / per);
    let mut tick =
        tokio::time::interval_at(Instant::now() + period.mul_f64(p as f64 / n as f64), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut api = None;
    loop {
        tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Run) => return,
            _ = tick.tick() => {}
        }
        let seq = next.fetch_add(1, Relaxed);
        let c = (seq % ctx.channels.len() as u64) as usize;
        publish_one(&ctx, &mut api, c, seq, ctx.plan.size).await;
    }
}

/// The large publications: one every `big_every`, rotating over the channels.
async fn big_publisher(ctx: Arc<Ctx>, next: Arc<AtomicU64>) {
    if ctx.plan.big_every.is_zero() || ctx.plan.big_size == 0 {
        return;
    }
    let mut phase = ctx.phase.subscribe();
    let mut tick = tokio::time::interval(ctx.plan.big_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut api = None;
    let mut k = 0usize;
    loop {
        tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Run) => return,
            _ = tick.tick() => {}
        }
        let seq = next.fetch_add(1, Relaxed);
        let c = k % ctx.channels.len();
        k += 1;
        if publish_one(&ctx, &mut api, c, seq, ctx.plan.big_size).await {
            ctx.counters.big_publications.fetch_add(1, Relaxed);
        }
    }
}

/// Sample the server every `sample_every` until the run ends.
async fn sampler(ctx: Arc<Ctx>, probe: Option<Probe>, start: Instant) -> Vec<ServerSample> {
    let mut phase = ctx.phase.subscribe();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(ctx.plan.sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut api = None;
    loop {
        tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Run) => break,
            _ = tick.tick() => {}
        }
        samples.push(sample(&ctx, probe.as_ref(), &mut api, start).await);
    }
    samples
}

async fn sample(
    ctx: &Ctx,
    probe: Option<&Probe>,
    api: &mut Option<Api>,
    start: Instant,
) -> ServerSample {
    let t_s = start.elapsed().as_secs_f64();
    let rss_kib = probe.and_then(|p| p.sample().ok()).map(|s| s.rss_kib);
    if api.is_none() {
        *api = Api::open(&ctx.target).await.ok();
    }
    let mut connections = None;
    if let Some(conn) = api.as_mut() {
        match conn
            .post(&ctx.target, &ctx.plan.api_key, "/api/stats", "{}".into())
            .await
        {
            Ok(v) => connections = v["connections"].as_u64(),
            Err(e) => {
                ctx.error(format!("stats: {e:#}"));
                *api = None;
            }
        }
    }
    ServerSample {
        t_s,
        rss_kib,
        connections,
    }
}

/// Run the soak.
pub async fn run(
    common: &Common,
    target: Arc<Target>,
    plan: SoakPlan,
) -> anyhow::Result<SoakReport> {
    if plan.channels == 0 {
        bail!("--channels must be at least 1");
    }
    let probe = common.probe()?;
    let stalled = ((plan.connections as f64) * plan.stalled_percent / 100.0).round() as usize;
    let slow = ((plan.connections as f64) * plan.slow_percent / 100.0).round() as usize;
    let Some(wb_count) = plan.connections.checked_sub(stalled + slow) else {
        bail!("--stalled-percent and --slow-percent add up to more than 100");
    };
    let channels: Vec<String> = (0..plan.channels)
        .map(|c| format!("chat:soak-{c}"))
        .collect();
    let (phase, _) = watch::channel(Phase::Run);
    let (storm, _) = watch::channel(0u64);
    let ctx = Arc::new(Ctx {
        tops: channels.iter().map(|_| AtomicU64::new(0)).collect(),
        channels,
        target: target.clone(),
        plan: plan.clone(),
        counters: Counters::default(),
        errors: Mutex::new(Errors::default()),
        stalled_codes: Mutex::new(HashMap::new()),
        phase,
        storm,
        setup: Semaphore::new(common.concurrency()),
        well_behaved: wb_count,
    });

    // Setup: every connection opens (at most --connect-concurrency handshakes at once).
    let setup_start = Instant::now();
    let mut subscribers = Vec::with_capacity(wb_count);
    for i in 0..wb_count {
        subscribers.push(tokio::spawn(well_behaved(ctx.clone(), i)));
    }
    let mut others = Vec::new();
    for i in 0..slow {
        others.push(tokio::spawn(slow_reader(ctx.clone(), i)));
    }
    for i in 0..stalled {
        others.push(tokio::spawn(stalled_slot(ctx.clone(), i)));
    }
    let setup_deadline = setup_start + common.setup_timeout();
    while ctx.counters.ready.load(Relaxed) < plan.connections && Instant::now() < setup_deadline {
        sleep(Duration::from_millis(200)).await;
    }
    let opened_at_setup = ctx.counters.ready.load(Relaxed);
    let setup_s = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "soak: {opened_at_setup}/{} connections open after {setup_s:.1} s ({wb_count} well-behaved, {slow} slow, {stalled} stalled); running {:?}",
        plan.connections, plan.duration
    );

    // The run.
    let start = Instant::now();
    let next_seq = Arc::new(AtomicU64::new(1));
    let mut workers = Vec::new();
    for p in 0..plan.publishers.max(1) {
        workers.push(tokio::spawn(publisher(
            ctx.clone(),
            p,
            plan.publishers.max(1),
            next_seq.clone(),
        )));
    }
    workers.push(tokio::spawn(big_publisher(ctx.clone(), next_seq.clone())));
    let sampler = tokio::spawn(sampler(ctx.clone(), probe.clone(), start));
    let end = start + plan.duration;
    let mut storms = 0u64;
    let mut next_storm = start + plan.storm_every;
    let mut next_progress = start + Duration::from_secs(60);
    while Instant::now() < end {
        let wake = end.min(next_progress).min(if plan.storm_every.is_zero() {
            end
        } else {
            next_storm
        });
        sleep_until(wake).await;
        let now = Instant::now();
        if !plan.storm_every.is_zero() && now >= next_storm && now < end {
            storms += 1;
            ctx.storm.send_replace(storms);
            next_storm += plan.storm_every;
        }
        if now >= next_progress {
            let k = &ctx.counters;
            eprintln!(
                "soak: {:.0} s: {} publications, {} deliveries, {} misses, {} reconnects, stalled {}/{} reaped",
                start.elapsed().as_secs_f64(),
                k.publications.load(Relaxed),
                k.deliveries.load(Relaxed),
                k.missed_in_gaps.load(Relaxed)
                    + k.duplicates.load(Relaxed)
                    + k.recovery_failures.load(Relaxed),
                k.reconnects.load(Relaxed),
                k.stalled_reaped.load(Relaxed),
                k.stalled_reaped.load(Relaxed) + k.stalled_not_reaped.load(Relaxed),
            );
            next_progress += Duration::from_secs(60);
        }
    }
    let duration_s = start.elapsed().as_secs_f64();

    // Settle: publishers stop (their last answers give the final offsets); then drain:
    // well-behaved subscribers read up to the last offset.
    ctx.phase.send_replace(Phase::Settle);
    for w in workers {
        let _ = timeout(PUBLISH_TIMEOUT + Duration::from_secs(5), w).await;
    }
    let mut samples = timeout(Duration::from_secs(40), sampler)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // Wake every subscriber so it compares itself with the final tops.
    ctx.phase.send_replace(Phase::Drain);
    let drain_start = Instant::now();
    while ctx.counters.caught_up.load(Relaxed) < wb_count && drain_start.elapsed() < DRAIN_TIMEOUT {
        sleep(Duration::from_millis(200)).await;
        ctx.phase.send_modify(|_| {});
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let mut api = None;
    samples.push(sample(&ctx, probe.as_ref(), &mut api, start).await);
    ctx.phase.send_replace(Phase::Stop);

    // Final positions of the well-behaved subscribers.
    let mut missing_at_end = 0u64;
    let mut behind_at_end = 0u64;
    for handle in subscribers {
        let Ok(Ok((c, position))) = timeout(Duration::from_secs(10), handle).await else {
            behind_at_end += 1;
            continue;
        };
        let top = ctx.tops[c].load(Relaxed);
        let last = position.map(|p| p.offset).unwrap_or_default();
        if last < top {
            behind_at_end += 1;
            missing_at_end += top - last;
        }
    }
    if behind_at_end > 0 {
        ctx.error(format!(
            "{behind_at_end} well-behaved subscribers had not reached the last offset after a {DRAIN_TIMEOUT:?} drain"
        ));
    }
    // Stalled readers old enough are judged now (up to JUDGE_TIMEOUT).
    for handle in others {
        let _ = timeout(JUDGE_TIMEOUT + Duration::from_secs(10), handle).await;
    }

    let k = &ctx.counters;
    let missed_in_gaps = k.missed_in_gaps.load(Relaxed);
    let duplicates = k.duplicates.load(Relaxed);
    let recovery_failures = k.recovery_failures.load(Relaxed);
    let rss: Vec<u64> = samples.iter().filter_map(|s| s.rss_kib).collect();
    let rss_min_kib = rss.iter().copied().min();
    let rss_max_kib = rss.iter().copied().max();
    let rss_ratio = match (rss_min_kib, rss_max_kib) {
        (Some(lo), Some(hi)) if lo > 0 => Some(hi as f64 / lo as f64),
        _ => None,
    };
    let errors = ctx
        .errors
        .lock()
        .map(|e| e.samples.clone())
        .unwrap_or_default();
    Ok(SoakReport {
        url: target.url.clone(),
        planned: [wb_count, stalled, slow],
        opened_at_setup,
        setup_s,
        duration_s,
        drain_s,
        publications: k.publications.load(Relaxed),
        big_publications: k.big_publications.load(Relaxed),
        publish_errors: k.publish_errors.load(Relaxed),
        deliveries: k.deliveries.load(Relaxed),
        misses: missed_in_gaps + duplicates + recovery_failures + missing_at_end,
        missed_in_gaps,
        duplicates,
        recovery_failures,
        missing_at_end,
        behind_at_end,
        storms,
        reconnects: k.reconnects.load(Relaxed),
        recoveries: k.recoveries.load(Relaxed),
        recovered_publications: k.recovered_publications.load(Relaxed),
        unexpected_closes: k.unexpected_closes.load(Relaxed),
        connect_errors: k.connect_errors.load(Relaxed),
        stalled_opened: k.stalled_opened.load(Relaxed),
        stalled_reaped: k.stalled_reaped.load(Relaxed),
        stalled_close_codes: ctx
            .stalled_codes
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default(),
        stalled_not_reaped: k.stalled_not_reaped.load(Relaxed),
        stalled_unjudged: k.stalled_unjudged.load(Relaxed),
        slow_deliveries: k.slow_deliveries.load(Relaxed),
        slow_closed_1013: k.slow_closed_1013.load(Relaxed),
        slow_closed_other: k.slow_closed_other.load(Relaxed),
        slow_recovered: [
            k.slow_recovered.load(Relaxed),
            k.slow_not_recovered.load(Relaxed),
        ],
        slow_gaps: k.slow_gaps.load(Relaxed),
        samples,
        rss_min_kib,
        rss_max_kib,
        rss_ratio,
        error_samples: errors,
    })
}

/// The report as a markdown table (bench/SOAK.md).
pub fn markdown(r: &SoakReport, plan: &SoakPlan) -> String {
    let mut s = String::new();
    let mib = |k: u64| k as f64 / 1024.0;
    let [wb, stalled, slow] = r.planned;
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let mut row = |what: &str, value: String| {
        let _ = writeln!(s, "| {what} | {value} |");
    };
    row(
        "connections (well-behaved / stalled / slow)",
        format!(
            "{} ({wb} / {stalled} / {slow}), {} open after {:.1} s of setup",
            r.planned.iter().sum::<usize>(),
            r.opened_at_setup,
            r.setup_s
        ),
    );
    row(
        "run / drain",
        format!("{:.0} s / {:.1} s", r.duration_s, r.drain_s),
    );
    row(
        "channels",
        format!(
            "{} (slow readers on {} each)",
            plan.channels, plan.slow_channels
        ),
    );
    row(
        "publications (HTTP /api/publish)",
        format!(
            "{} ({:.0}/s of {} B; {} of {} KiB), {} failed",
            r.publications,
            r.publications as f64 / r.duration_s.max(1e-9),
            plan.size,
            r.big_publications,
            plan.big_size / 1024,
            r.publish_errors
        ),
    );
    row(
        "well-behaved deliveries",
        format!(
            "{} ({:.0}/s)",
            r.deliveries,
            r.deliveries as f64 / r.duration_s.max(1e-9)
        ),
    );
    row(
        "**well-behaved misses**",
        format!(
            "**{}** (gaps {}, duplicates {}, recovered:false/epoch {}, missing at end {} on {} subscribers)",
            r.misses,
            r.missed_in_gaps,
            r.duplicates,
            r.recovery_failures,
            r.missing_at_end,
            r.behind_at_end
        ),
    );
    row(
        "reconnect storms",
        format!(
            "{} × {} subscribers (every {:?})",
            r.storms, plan.storm_size, plan.storm_every
        ),
    );
    row(
        "reconnects / recoveries (recovered:true)",
        format!(
            "{} / {}, {} publications recovered",
            r.reconnects, r.recoveries, r.recovered_publications
        ),
    );
    row(
        "well-behaved closed by the server",
        r.unexpected_closes.to_string(),
    );
    row("connect errors (retried)", r.connect_errors.to_string());
    let mut codes: Vec<_> = r.stalled_close_codes.iter().collect();
    codes.sort();
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
    row(
        "stalled readers opened / judged",
        format!(
            "{} / {} (judged {:?} after opening; {} too young at the end)",
            r.stalled_opened,
            r.stalled_reaped + r.stalled_not_reaped,
            plan.stalled_check,
            r.stalled_unjudged
        ),
    );
    row(
        "**stalled reaped / not reaped**",
        format!(
            "**{} / {}** (close frame seen first: {})",
            r.stalled_reaped,
            r.stalled_not_reaped,
            if codes.is_empty() {
                "none".into()
            } else {
                codes.join(", ")
            }
        ),
    );
    row(
        "slow readers: deliveries / closed 1013 / closed otherwise",
        format!(
            "{} / {} / {}",
            r.slow_deliveries, r.slow_closed_1013, r.slow_closed_other
        ),
    );
    row(
        "slow readers: recovered true / false, gaps while connected",
        format!(
            "{} / {}, {}",
            r.slow_recovered[0], r.slow_recovered[1], r.slow_gaps
        ),
    );
    match (r.rss_min_kib, r.rss_max_kib, r.rss_ratio) {
        (Some(lo), Some(hi), Some(ratio)) => row(
            "**server RSS min / max, max/min**",
            format!("{:.1} / {:.1} MiB, **{ratio:.2}**", mib(lo), mib(hi)),
        ),
        _ => row("server RSS", "not sampled (no --server-pid)".into()),
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Server samples (every {:?}; the last is after the drain):\n",
        plan.sample_every
    );
    let _ = writeln!(
        s,
        "| t (s) | RSS (MiB) | /api/stats connections |\n|---|---|---|"
    );
    for x in &r.samples {
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} |",
            x.t_s,
            x.rss_kib
                .map(|k| format!("{:.1}", mib(k)))
                .unwrap_or_else(|| "-".into()),
            x.connections
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    if !r.error_samples.is_empty() {
        let _ = writeln!(s, "\nFirst errors:\n");
        for e in &r.error_samples {
            let _ = writeln!(s, "- `{}`", e.replace('`', "'"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fields_are_read_without_parsing_the_data() {
        let text = r#"{"type":"message","payload":{"channel":"chat:soak-7","offset":42,"epoch":"ab12","data":{"seq":1,"ts":2,"pad":"xx"},"time":1}}"#;
        assert_eq!(message_fields(text), Some(("chat:soak-7", 42, "ab12")));
        assert_eq!(message_fields(r#"{"type":"message"}"#), None);
    }

    #[test]
    fn storms_take_consecutive_blocks_and_wrap() {
        let members = |round| {
            (0..10)
                .filter(|&i| in_storm(round, i, 4, 10))
                .collect::<Vec<_>>()
        };
        assert_eq!(members(0), Vec::<usize>::new());
        assert_eq!(members(1), vec![0, 1, 2, 3]);
        assert_eq!(members(2), vec![4, 5, 6, 7]);
        assert_eq!(members(3), vec![0, 1, 8, 9]);
        // A storm larger than the population takes everyone once.
        assert_eq!((0..3).filter(|&i| in_storm(5, i, 10, 3)).count(), 3);
    }
}
