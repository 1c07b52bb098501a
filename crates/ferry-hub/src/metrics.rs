//! The hub's metrics (SPEC G2): counters and latency histograms kept with relaxed atomics
//! where they happen, and one [`MetricsSnapshot`] of them (with the hub's and the sockets'
//! figures) rendered as Prometheus text at `/metrics` and as JSON once a second at
//! `/metrics/stream`.
//!
//! Why not the `metrics` + `metrics-exporter-prometheus` pair: its histogram handle
//! buffers every sample until a scrape or an upkeep task drains it, so an unscraped hub
//! would grow without bound, and each sample is a shared append on the fan-out path. The
//! histograms here are fixed buckets (one relaxed add each, no allocation), so recording
//! costs the same whether anyone scrapes or not; the text format is small and is checked
//! against an independent parser in the tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// Upper bounds of the latency buckets, in seconds (10 µs to 10 s); the last bucket is
/// `+Inf`.
pub const LATENCY_BOUNDS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BOUNDS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The figures now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0u64;
        for bucket in &self.buckets {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        HistogramSnapshot {
            count: total,
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            cumulative,
        }
    }
}

/// A histogram's figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    /// Samples recorded.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
    /// Samples at or under each of [`LATENCY_BOUNDS`], then the total (`+Inf`).
    #[serde(skip)]
    pub cumulative: Vec<u64>,
}

impl HistogramSnapshot {
    /// The upper bound (seconds) of the bucket holding quantile `q` (0..=1); `None` with no
    /// samples, `+Inf` past the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let index = self.cumulative.iter().position(|c| *c >= rank)?;
        Some(LATENCY_BOUNDS.get(index).copied().unwrap_or(f64::INFINITY))
    }
}

/// What a rate limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// A command over `limits.rate_per_second`.
    Command,
    /// A login over the per-address or global login limit.
    Login,
}

/// A history store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOp {
    /// Store a publication (until it is durable).
    Append,
    /// Read a page (`history`, recovery).
    Read,
}

/// The transports counted in `ferry_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/ws`.
    WebSocket,
    /// `/sse`.
    Sse,
}

/// Counters and histograms kept where things happen (the hub's own counts, such as
/// publications and deliveries, stay in the hub and join at snapshot time).
#[derive(Debug, Default)]
pub struct Metrics {
    ws_open: AtomicI64,
    sse_open: AtomicI64,
    auth_failures: Mutex<BTreeMap<String, u64>>,
    rate_limited_commands: AtomicU64,
    rate_limited_logins: AtomicU64,
    history_appends: Histogram,
    history_reads: Histogram,
    history_errors: AtomicU64,
    /// From a publish call to its fan-out enqueued to every local subscriber.
    pub publish_enqueue: Histogram,
    /// From fan-out to the socket write of the oldest publication in a write, for one write
    /// in [`ENQUEUE_WRITE_SAMPLING`].
    pub enqueue_write: Histogram,
}

/// Each connection times its first socket write and every this-many-th after it for
/// `ferry_enqueue_write_seconds` (a sample: timing every write would cost a clock read
/// and a shared add per delivery).
pub const ENQUEUE_WRITE_SAMPLING: u32 = 16;

impl Metrics {
    /// The open-connections gauge of `transport` (see `Hub::connection_opened`).
    pub(crate) fn connections(&self, transport: Transport) -> &AtomicI64 {
        match transport {
            Transport::WebSocket => &self.ws_open,
            Transport::Sse => &self.sse_open,
        }
    }

    /// An authentication refused with `code` (`AUTH_FAILED`, `AUTH_REQUIRED`, ...).
    pub fn auth_failed(&self, code: &str) {
        *self
            .auth_failures
            .lock()
            .entry(code.to_string())
            .or_default() += 1;
    }

    /// A request refused by a rate limit.
    pub fn rate_limited(&self, what: RateLimited) {
        match what {
            RateLimited::Command => &self.rate_limited_commands,
            RateLimited::Login => &self.rate_limited_logins,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A history operation that took `elapsed`; failed ones are counted apart.
    pub fn history(&self, op: HistoryOp, elapsed: Duration, ok: bool) {
        if !ok {
            self.history_errors.fetch_add(1, Ordering::Relaxed);
        }
        match op {
            HistoryOp::Append => &self.history_appends,
            HistoryOp::Read => &self.history_reads,
        }
        .observe(elapsed);
    }
}

/// Every figure at one moment: what `/metrics` renders and `/metrics/stream` sends.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// Seconds since the hub started.
    pub uptime_secs: u64,
    /// Open connections by transport.
    pub connections: ConnectionsByTransport,
    /// Accepted TCP sockets open now (every route).
    pub sockets: usize,
    /// Channels with a local subscriber.
    pub channels: usize,
    /// Subscriptions over every connection.
    pub subscriptions: usize,
    /// Publications accepted since start.
    pub publications: u64,
    /// Frames queued to subscribers since start.
    pub deliveries: u64,
    /// TCP payload bytes read, every transport.
    pub bytes_in: u64,
    /// TCP payload bytes written, every transport.
    pub bytes_out: u64,
    /// Slow consumers closed since start, by reason.
    pub slow_consumer_closes: SlowConsumerCloses,
    /// Authentications refused since start, by error code.
    pub auth_failures: BTreeMap<String, u64>,
    /// Requests refused by a rate limit since start.
    pub rate_limited: RateLimitedCounts,
    /// History operations since start.
    pub history: HistoryCounts,
    /// Publish → enqueued to every subscriber.
    pub publish_enqueue: LatencySummary,
    /// Enqueued → written to the socket (sampled writes).
    pub enqueue_write: LatencySummary,
    #[serde(skip)]
    histograms: Histograms,
}

/// Connections by transport.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsByTransport {
    /// `/ws`.
    pub ws: i64,
    /// `/sse`.
    pub sse: i64,
}

/// Slow consumers closed, by reason.
#[derive(Debug, Clone, Serialize)]
pub struct SlowConsumerCloses {
    /// Send queue overflowed (1013).
    pub queue_full: u64,
    /// Writes stalled past `limits.write_timeout_ms`.
    pub write_stalled: u64,
}

/// Rate-limit refusals.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitedCounts {
    /// Commands over `limits.rate_per_second`.
    pub commands: u64,
    /// Logins over the login limits.
    pub logins: u64,
}

/// History store operations.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryCounts {
    /// Appends (publications stored).
    pub appends: u64,
    /// Page reads.
    pub reads: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Append latency (until durable).
    pub append_latency: LatencySummary,
    /// Read latency.
    pub read_latency: LatencySummary,
}

/// A histogram in brief, for the JSON stream: count, mean and bucket quantiles (in
/// milliseconds; the upper bound of the bucket holding the quantile).
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean, in ms.
    pub mean_ms: Option<f64>,
    /// Median bucket bound, in ms.
    pub p50_ms: Option<f64>,
    /// 99th-percentile bucket bound, in ms.
    pub p99_ms: Option<f64>,
}

impl From<&HistogramSnapshot> for LatencySummary {
    fn from(h: &HistogramSnapshot) -> LatencySummary {
        let ms = |s: f64| if s.is_finite() { s * 1e3 } else { f64::MAX };
        LatencySummary {
            count: h.count,
            mean_ms: (h.count > 0).then(|| h.sum_secs / h.count as f64 * 1e3),
            p50_ms: h.quantile(0.5).map(ms),
            p99_ms: h.quantile(0.99).map(ms),
        }
    }
}

#[derive(Debug, Clone)]
struct Histograms {
    publish_enqueue: HistogramSnapshot,
    enqueue_write: HistogramSnapshot,
    history_append: HistogramSnapshot,
    history_read: HistogramSnapshot,
}

/// The hub's and the sockets' own counts, joined at snapshot time.
#[derive(Debug, Clone, Copy)]
pub struct External {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Open sockets.
    pub sockets: usize,
    /// Channels.
    pub channels: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Publications.
    pub publications: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Send-queue overflows.
    pub queue_full: u64,
    /// Stalled writes cut.
    pub write_stalled: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl Metrics {
    /// Every figure now.
    pub fn snapshot(&self, external: External) -> MetricsSnapshot {
        let histograms = Histograms {
            publish_enqueue: self.publish_enqueue.snapshot(),
            enqueue_write: self.enqueue_write.snapshot(),
            history_append: self.history_appends.snapshot(),
            history_read: self.history_reads.snapshot(),
        };
        MetricsSnapshot {
            uptime_secs: external.uptime_secs,
            connections: ConnectionsByTransport {
                ws: self.ws_open.load(Ordering::Relaxed),
                sse: self.sse_open.load(Ordering::Relaxed),
            },
            sockets: external.sockets,
            channels: external.channels,
            subscriptions: external.subscriptions,
            publications: external.publications,
            deliveries: external.deliveries,
            bytes_in: external.bytes_in,
            bytes_out: external.bytes_out,
            slow_consumer_closes: SlowConsumerCloses {
                queue_full: external.queue_full,
                write_stalled: external.write_stalled,
            },
            auth_failures: self.auth_failures.lock().clone(),
            rate_limited: RateLimitedCounts {
                commands: self.rate_limited_commands.load(Ordering::Relaxed),
                logins: self.rate_limited_logins.load(Ordering::Relaxed),
            },
            history: HistoryCounts {
                appends: histograms.history_append.count,
                reads: histograms.history_read.count,
                errors: self.history_errors.load(Ordering::Relaxed),
                append_latency: (&histograms.history_append).into(),
                read_latency: (&histograms.history_read).into(),
            },
            publish_enqueue: (&histograms.publish_enqueue).into(),
            enqueue_write: (&histograms.enqueue_write).into(),
            histograms,
        }
    }
}

/// Prometheus text exposition format 0.0.4 (what `/metrics` answers with).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        let mut w = Writer { out: &mut out };
        w.single(
            "ferry_uptime_seconds",
            "gauge",
            "Seconds since the hub started.",
            self.uptime_secs,
        );
        w.family(
            "ferry_connections",
            "gauge",
            "Open client connections, by transport.",
            &[
                ("transport=\"ws\"", self.connections.ws.to_string()),
                ("transport=\"sse\"", self.connections.sse.to_string()),
            ],
        );
        w.single(
            "ferry_sockets",
            "gauge",
            "Accepted TCP sockets open now, every route.",
            self.sockets,
        );
        w.single(
            "ferry_channels",
            "gauge",
            "Channels with at least one local subscriber.",
            self.channels,
        );
        w.single(
            "ferry_subscriptions",
            "gauge",
            "Subscriptions over every connection.",
            self.subscriptions,
        );
        w.single(
            "ferry_publications_total",
            "counter",
            "Publications accepted.",
            self.publications,
        );
        w.single(
            "ferry_deliveries_total",
            "counter",
            "Frames queued to subscribers.",
            self.deliveries,
        );
        w.single(
            "ferry_received_bytes_total",
            "counter",
            "TCP payload bytes read, every transport.",
            self.bytes_in,
        );
        w.single(
            "ferry_sent_bytes_total",
            "counter",
            "TCP payload bytes written, every transport.",
            self.bytes_out,
        );
        w.family(
            "ferry_slow_consumer_closes_total",
            "counter",
            "Connections closed for not keeping up, by reason.",
            &[
                (
                    "reason=\"queue_full\"",
                    self.slow_consumer_closes.queue_full.to_string(),
                ),
                (
                    "reason=\"write_stalled\"",
                    self.slow_consumer_closes.write_stalled.to_string(),
                ),
            ],
        );
        let auth: Vec<(String, String)> = self
            .auth_failures
            .iter()
            .map(|(code, n)| (format!("code=\"{}\"", escape(code)), n.to_string()))
            .collect();
        let auth: Vec<(&str, String)> = auth.iter().map(|(l, v)| (l.as_str(), v.clone())).collect();
        w.family(
            "ferry_auth_failures_total",
            "counter",
            "Authentications refused, by error code.",
            &auth,
        );
        w.family(
            "ferry_rate_limited_total",
            "counter",
            "Requests refused by a rate limit, by what was limited.",
            &[
                ("what=\"command\"", self.rate_limited.commands.to_string()),
                ("what=\"login\"", self.rate_limited.logins.to_string()),
            ],
        );
        w.single(
            "ferry_history_errors_total",
            "counter",
            "History store operations that failed.",
            self.history.errors,
        );
        w.histogram(
            "ferry_publish_enqueue_seconds",
            "From a publish to its frames queued for every local subscriber.",
            &[("", &self.histograms.publish_enqueue)],
        );
        w.histogram(
            "ferry_enqueue_write_seconds",
            "From fan-out to the socket write of a publication (one write in 16, sampled).",
            &[("", &self.histograms.enqueue_write)],
        );
        w.histogram(
            "ferry_history_operation_seconds",
            "History store operations and their latency (append: until durable).",
            &[
                ("op=\"append\"", &self.histograms.history_append),
                ("op=\"read\"", &self.histograms.history_read),
            ],
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, String)]) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, help: &str, series: &[(&str, &HistogramSnapshot)]) {
        self.header(name, "histogram", help);
        for (labels, h) in series {
            let sep = if labels.is_empty() { "" } else { "," };
            for (i, count) in h.cumulative.iter().enumerate() {
                let le = match LATENCY_BOUNDS.get(i) {
                    Some(bound) => bound.to_string(),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(
                    self.out,
                    "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}"
                );
            }
            let braces = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(self.out, "{name}_sum{braces} {}", h.sum_secs);
            let _ = writeln!(self.out, "{name}_count{braces} {}", h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_quantiles_land_on_bounds() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.observe(Duration::from_micros(80));
        }
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(30));
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.cumulative.last(), Some(&100));
        assert_eq!(s.quantile(0.5), Some(0.0001));
        assert_eq!(s.quantile(0.99), Some(0.005));
        assert_eq!(s.quantile(1.0), Some(f64::INFINITY));
        assert!((s.sum_secs - (98.0 * 80e-6 + 0.003 + 30.0)).abs() < 1e-9);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
