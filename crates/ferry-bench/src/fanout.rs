//! `fanout` and `latency`: N subscribers on one channel, P publishers, a publication
//! rate (or as fast as a window of undelivered messages allows), a message size.
//!
//! Subscribers are served in groups: one task polls many connections, so a burst of
//! deliveries costs one task wake-up per group, not one per connection. Every delivery
//! carries its send timestamp; the latency histogram and the delivery count cover only
//! the measurement window (after the warm-up), and so does the server's CPU time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamFuture};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use super::client::{Protocol, Target, Ws, clip};
use super::probe::Probe;
use super::report::{Errors, Latency, Report, ServerUsage};
use super::wire::{self, EnginePacket};

/// A publisher that cannot publish for this long (its window stays full because
/// deliveries stopped arriving) ends the run as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// After the window, time given to deliveries still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a fan-out run does.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Publications per second over all publishers; 0 = as fast as the window allows.
    pub rate: f64,
    /// Publications that may be undelivered (to some subscriber) at once.
    pub window: u64,
    /// Size of the JSON data of a publication, bytes.
    pub size: usize,
    /// Warm-up before the measurement window.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Connections per subscriber task.
    pub group_size: usize,
}

/// State shared by publishers and subscriber groups.
pub struct Shared {
    /// Deliveries and latency count only while this is set.
    pub measuring: AtomicBool,
    /// Publications sent (all phases).
    pub published: AtomicU64,
    /// Deliveries received (all phases).
    pub delivered: AtomicU64,
    /// Deliveries expected per publication (the subscribers that were connected).
    pub receivers: u64,
    /// Most deliveries that may be outstanding.
    limit: u64,
    waiting: AtomicBool,
    notify: Notify,
}

impl Shared {
    /// Shared state for `receivers` subscribers and a window of `window` publications.
    pub fn new(receivers: u64, window: u64) -> Arc<Shared> {
        Arc::new(Shared {
            measuring: AtomicBool::new(false),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            receivers,
            limit: window.saturating_mul(receivers.max(1)),
            waiting: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    fn outstanding(&self) -> u64 {
        let expected = self
            .published
            .load(Ordering::Acquire)
            .saturating_mul(self.receivers);
        expected.saturating_sub(self.delivered.load(Ordering::Acquire))
    }

    /// Count one delivery; wakes a publisher waiting for room in the window.
    pub fn on_delivery(&self) {
        self.delivered.fetch_add(1, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) && self.outstanding() < self.limit {
            self.waiting.store(false, Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// Wait until the window has room; `false` after [`STALL_TIMEOUT`] without room.
    async fn room(&self) -> bool {
        loop {
            let notified = self.notify.notified();
            self.waiting.store(true, Ordering::Release);
            if self.outstanding() < self.limit {
                self.waiting.store(false, Ordering::Release);
                return true;
            }
            if timeout(STALL_TIMEOUT, notified).await.is_err() {
                return self.outstanding() < self.limit;
            }
        }
    }
}

/// A latency histogram in microseconds, up to a minute.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// What one subscriber task saw.
pub struct GroupResult {
    /// Deliveries inside the window.
    pub measured: u64,
    /// Their latency.
    pub latency: Histogram<u64>,
    /// Errors (lost connections, error frames).
    pub errors: Errors,
}

impl GroupResult {
    /// An empty result.
    pub fn new() -> Self {
        GroupResult {
            measured: 0,
            latency: histogram(),
            errors: Errors::default(),
        }
    }

    /// Count one received payload.
    pub fn record(&mut self, shared: &Shared, ts: u64) {
        if shared.measuring.load(Ordering::Relaxed) {
            self.measured += 1;
            let _ = self
                .latency
                .record(wire::now_micros().saturating_sub(ts).max(1));
        }
        shared.on_delivery();
    }

    /// Merge several results.
    pub fn merge(results: impl IntoIterator<Item = GroupResult>) -> GroupResult {
        let mut all = GroupResult::new();
        for r in results {
            all.measured += r.measured;
            let _ = all.latency.add(&r.latency);
            all.errors.merge(r.errors);
        }
        all
    }
}

/// Serve a group of subscriber connections until `stop` turns true.
pub async fn subscriber_group(
    conns: Vec<Ws>,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> GroupResult {
    let mut result = GroupResult::new();
    let mut pending: FuturesUnordered<StreamFuture<Ws>> =
        conns.into_iter().map(StreamExt::into_future).collect();
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            next = pending.next() => next,
        };
        let Some((item, mut ws)) = next else {
            // Every connection is gone; wait for the end of the run.
            let _ = stop.wait_for(|s| *s).await;
            break;
        };
        match item {
            Some(Ok(Message::Text(text))) => {
                if let Some((_, ts)) = wire::parse_delivery(&text) {
                    result.record(&shared, ts);
                } else {
                    match protocol {
                        Protocol::Socketio if wire::engine_packet(&text) == EnginePacket::Ping => {
                            let pong = ws.send(Message::text(wire::ENGINE_PONG)).await;
                            if pong.is_err() {
                                result
                                    .errors
                                    .add("connection lost (answering an Engine.IO ping)");
                                continue;
                            }
                        }
                        Protocol::Ferry if wire::ferry_type(&text) == Some("error") => {
                            result.errors.add(format!("server error: {}", clip(&text)));
                        }
                        _ => {}
                    }
                }
                pending.push(ws.into_future());
            }
            Some(Ok(Message::Binary(frame))) => {
                // A `ferry.msgpack` subscriber.
                if let Some((_, ts)) = wire::parse_msgpack_delivery(&frame) {
                    result.record(&shared, ts);
                }
                pending.push(ws.into_future());
            }
            Some(Ok(Message::Close(frame))) => {
                result
                    .errors
                    .add(format!("subscriber closed by the server: {frame:?}"));
            }
            Some(Ok(_)) => pending.push(ws.into_future()),
            Some(Err(e)) => result
                .errors
                .add(format!("subscriber connection lost: {e}")),
            None => result.errors.add("subscriber connection closed"),
        }
    }
    result
}

/// Spread `conns` over subscriber tasks of `group_size` connections.
pub fn spawn_groups(
    mut conns: Vec<Ws>,
    group_size: usize,
    protocol: Protocol,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<GroupResult>> {
    let mut handles = Vec::new();
    while !conns.is_empty() {
        let rest = conns.split_off(conns.len().min(group_size.max(1)));
        let group = std::mem::replace(&mut conns, rest);
        handles.push(tokio::spawn(subscriber_group(
            group,
            protocol,
            shared.clone(),
            stop.clone(),
        )));
    }
    handles
}

/// What one publisher did.
#[derive(Default)]
pub struct PublisherResult {
    /// Publications sent inside the window.
    pub measured: u64,
    /// Errors (error frames, a lost connection, a stall).
    pub errors: Errors,
}

/// Publish at `period` intervals (or as fast as the window allows when `None`) until `end`.
pub async fn publisher(
    ws: Ws,
    target: Arc<Target>,
    shared: Arc<Shared>,
    period: Option<Duration>,
    size: usize,
    end: Instant,
) -> PublisherResult {
    let mut result = PublisherResult::default();
    let protocol = target.protocol;
    let (mut sink, mut stream) = ws.split();
    let pongs = Arc::new(AtomicU64::new(0));
    // The reader drains what the server sends publishers: error frames, Engine.IO pings,
    // and (plain, socketio) other publishers' broadcasts.
    let reader = {
        let pongs = pongs.clone();
        tokio::spawn(async move {
            let mut errors = Errors::default();
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    match protocol {
                        Protocol::Ferry if wire::ferry_type(&text) == Some("error") => {
                            errors.add(format!("publish error: {}", clip(&text)));
                        }
                        Protocol::Socketio if wire::engine_packet(&text) == EnginePacket::Ping => {
                            pongs.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            errors
        })
    };
    let mut ticker = period.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        t
    });
    while Instant::now() < end {
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = t.tick() => {}
                _ = sleep_until(end) => break,
            }
        }
        if !shared.room().await {
            result.errors.add(format!(
                "stalled: deliveries stopped arriving for {STALL_TIMEOUT:?} ({} outstanding)",
                shared.outstanding()
            ));
            break;
        }
        if pongs.swap(0, Ordering::Relaxed) > 0
            && sink.send(Message::text(wire::ENGINE_PONG)).await.is_err()
        {
            result.errors.add("publisher connection lost");
            break;
        }
        let seq = shared.published.fetch_add(1, Ordering::AcqRel);
        let data = wire::payload(seq, wire::now_micros(), size);
        let frame = protocol.publish_frame(&target.channel, &data);
        if sink.send(Message::text(frame)).await.is_err() {
            result.errors.add("publisher connection lost");
            break;
        }
        if shared.measuring.load(Ordering::Relaxed) {
            result.measured += 1;
        }
    }
    let _ = sink.close().await;
    if let Ok(Ok(errors)) = timeout(Duration::from_secs(2), reader).await {
        result.errors.merge(errors);
    }
    result
}

/// What a publish window produced.
pub struct WindowOutcome {
    /// The measured window's length.
    pub elapsed: Duration,
    /// The server's CPU and memory over the window, when it could be probed.
    pub usage: Option<ServerUsage>,
    /// Publications sent inside the window.
    pub publications: u64,
    /// What the receivers counted (their errors not yet merged into the caller's).
    pub received: GroupResult,
}

impl WindowOutcome {
    /// The report of a publish/deliver scenario: the receivers' errors join `errors`, and
    /// the server's CPU is set per million deliveries.
    pub fn report(
        mut self,
        scenario: &str,
        protocol: &str,
        url: &str,
        connections: usize,
        setup_s: f64,
        mut errors: Errors,
    ) -> Report {
        errors.merge(std::mem::take(&mut self.received.errors));
        let measured = self.received.measured;
        if let Some(u) = self.usage.as_mut() {
            u.cpu_s_per_million = (measured > 0).then(|| u.cpu_s / (measured as f64 / 1e6));
        }
        Report {
            scenario: scenario.into(),
            protocol: protocol.into(),
            url: url.into(),
            connections,
            setup_s,
            duration_s: self.elapsed.as_secs_f64(),
            publications: self.publications,
            messages: measured,
            messages_per_s: measured as f64 / self.elapsed.as_secs_f64(),
            latency: Latency::from_micros(&self.received.latency),
            errors: errors.count,
            error_samples: errors.samples,
            server: self.usage,
        }
    }
}

/// Publish from `pubs` through the warm-up and the measured window, let deliveries drain,
/// then stop the receivers and collect what they counted. Shared by the WebSocket and SSE
/// fan-out scenarios.
#[allow(clippy::too_many_arguments)]
pub async fn publish_window(
    pubs: Vec<Ws>,
    target: &Arc<Target>,
    shared: &Arc<Shared>,
    plan: &FanoutPlan,
    probe: Option<&Probe>,
    receivers: Vec<JoinHandle<GroupResult>>,
    stop: watch::Sender<bool>,
    errors: &mut Errors,
) -> anyhow::Result<WindowOutcome> {
    let end = Instant::now() + plan.warmup + plan.duration;
    let period = (plan.rate > 0.0).then(|| Duration::from_secs_f64(pubs.len() as f64 / plan.rate));
    let publishers: Vec<_> = pubs
        .into_iter()
        .map(|ws| {
            tokio::spawn(publisher(
                ws,
                target.clone(),
                shared.clone(),
                period,
                plan.size,
                end,
            ))
        })
        .collect();
    let (elapsed, usage) = measure_window(shared, probe, plan.warmup, plan.duration).await?;
    let mut publications = 0;
    for p in publishers {
        if let Ok(r) = p.await {
            publications += r.measured;
            errors.merge(r.errors);
        }
    }
    drain(shared).await;
    let _ = stop.send(true);
    let mut results = Vec::new();
    for r in receivers {
        if let Ok(r) = r.await {
            results.push(r);
        }
    }
    Ok(WindowOutcome {
        elapsed,
        usage,
        publications,
        received: GroupResult::merge(results),
    })
}

/// Run the measurement window: warm up, sample the server, measure, sample again.
/// Returns the window's real length and the server usage (CPU only).
pub async fn measure_window(
    shared: &Shared,
    probe: Option<&Probe>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Duration, Option<ServerUsage>)> {
    sleep(warmup).await;
    let before = probe.map(Probe::sample).transpose()?;
    let start = Instant::now();
    shared.measuring.store(true, Ordering::Release);
    sleep(duration).await;
    shared.measuring.store(false, Ordering::Release);
    let elapsed = start.elapsed();
    let after = probe.map(Probe::sample).transpose()?;
    let usage = before.zip(after).map(|(b, a)| ServerUsage {
        rss_before_kib: b.rss_kib,
        rss_after_kib: a.rss_kib,
        kib_per_connection: None,
        cpu_s: a.cpu_s - b.cpu_s,
        kernel_cpu_s: a.kernel_cpu_s - b.kernel_cpu_s,
        cpu_s_per_million: None,
    });
    Ok((elapsed, usage))
}

/// Wait until every publication reached every subscriber, or the drain timeout.
pub async fn drain(shared: &Shared) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.outstanding() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
}

/// What a fan-out scenario has once its subscribers and publishers are open.
pub(crate) struct Opened {
    pub pubs: Vec<Ws>,
    /// Delivery counters for the subscribers.
    pub shared: Arc<Shared>,
    pub stop_tx: watch::Sender<bool>,
    pub stop_rx: watch::Receiver<bool>,
    /// Seconds since `setup_start` (subscribers and publishers open).
    pub setup_s: f64,
    /// Subscribers and publishers.
    pub connections: usize,
}

/// Open `plan.publishers` connections on `target` once the subscribers are open
/// (`subscribed`: how many, and what kind), and set up what both fan-out scenarios share
/// from there; an error naming both counts when either side has none.
pub(crate) async fn open_publishers(
    target: &Target,
    common: &Common,
    plan: &FanoutPlan,
    (setup_start, deadline): (Instant, Instant),
    errors: &mut Errors,
    subscribed: (usize, &str),
) -> anyhow::Result<Opened> {
    let (pubs, pub_errors) = target
        .open_many(plan.publishers, false, common.concurrency(), deadline)
        .await;
    errors.merge(pub_errors);
    if subscribed.0 == 0 || pubs.is_empty() {
        anyhow::bail!(
            "could not open the connections ({} {}, {} publishers): {}",
            subscribed.0,
            subscribed.1,
            pubs.len(),
            errors.samples.join("; ")
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    Ok(Opened {
        setup_s: setup_start.elapsed().as_secs_f64(),
        connections: subscribed.0 + pubs.len(),
        shared: Shared::new(subscribed.0 as u64, plan.window),
        pubs,
        stop_tx,
        stop_rx,
    })
}

/// Run `fanout` or `latency`: subscribers spread round-robin over `subscribe_at` (one
/// hub, or the nodes of one cluster), publishers on `target`.
pub async fn run_spread(
    common: &Common,
    target: Arc<Target>,
    subscribe_at: &[Arc<Target>],
    plan: FanoutPlan,
    scenario: &str,
) -> anyhow::Result<Report> {
    let probe = common.probe()?;
    let setup_start = Instant::now();
    let deadline = setup_start + common.setup_timeout();
    let mut subs = Vec::with_capacity(plan.subscribers);
    let mut errors = Errors::default();
    let nodes = subscribe_at.len().max(1);
    for (i, at) in subscribe_at.iter().enumerate() {
        let share = plan.subscribers / nodes + usize::from(i < plan.subscribers % nodes);
        let (opened, failed) = at
            .open_many(share, true, common.concurrency(), deadline)
            .await;
        subs.extend(opened);
        errors.merge(failed);
    }
    let run = open_publishers(
        &target,
        common,
        &plan,
        (setup_start, deadline),
        &mut errors,
        (subs.len(), "subscribers"),
    )
    .await?;
    let groups = spawn_groups(
        subs,
        plan.group_size,
        target.protocol,
        &run.shared,
        &run.stop_rx,
    );
    let outcome = publish_window(
        run.pubs,
        &target,
        &run.shared,
        &plan,
        probe.as_ref(),
        groups,
        run.stop_tx,
        &mut errors,
    )
    .await?;
    let missing = run.shared.outstanding();
    errors.add_n(
        missing,
        format!("{missing} deliveries had not arrived {DRAIN_TIMEOUT:?} after the window"),
    );
    Ok(outcome.report(
        scenario,
        target.protocol.name(),
        &target.url,
        run.connections,
        run.setup_s,
        errors,
    ))
}
