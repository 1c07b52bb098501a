//! The result of one scenario run: what is printed as a table or as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds; `None` when it is empty.
    pub fn from_micros(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        })
    }
}

/// What the server process cost, read from `/proc/PID` (with `--server-pid`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    /// Resident memory before the connections were opened, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every connection open, KiB.
    pub rss_after_kib: u64,
    /// `(after - before) / connections`, KiB (idle scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kib_per_connection: Option<f64>,
    /// User + system CPU seconds the server used during the measurement window.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`: on loopback it includes the receiving side's
    /// TCP processing of what the server sent.
    pub kernel_cpu_s: f64,
    /// CPU seconds per million messages delivered in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_million: Option<f64>,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `idle`, `fanout`, `latency`, `echo` or `sse`.
    pub scenario: String,
    /// `ferry`, `plain` or `socketio`.
    pub protocol: String,
    /// The URL the connections went to.
    pub url: String,
    /// Connections established (subscribers, publishers and echo clients).
    pub connections: usize,
    /// Time spent opening connections (and authenticating, subscribing), seconds.
    pub setup_s: f64,
    /// Length of the measurement window, seconds.
    pub duration_s: f64,
    /// Publications sent in the window (fan-out, latency, sse).
    pub publications: u64,
    /// Messages received in the window: deliveries to subscribers, or echoes.
    pub messages: u64,
    /// `messages / duration_s`.
    pub messages_per_s: f64,
    /// Send → receive latency.
    pub latency: Option<Latency>,
    /// Failed connects, dropped connections, error frames, stalls, lost deliveries.
    pub errors: u64,
    /// The first few errors, for humans.
    pub error_samples: Vec<String>,
    /// Server process usage, with `--server-pid`.
    pub server: Option<ServerUsage>,
}

/// Collects error counts and a few examples.
#[derive(Debug, Default)]
pub struct Errors {
    /// How many.
    pub count: u64,
    /// The first few, deduplicated.
    pub samples: Vec<String>,
}

impl Errors {
    /// Record one error.
    pub fn add(&mut self, what: impl Into<String>) {
        self.add_n(1, what);
    }

    /// Record `n` errors of one kind.
    pub fn add_n(&mut self, n: u64, what: impl Into<String>) {
        if n == 0 {
            return;
        }
        self.count += n;
        let what = what.into();
        if self.samples.len() < 5 && !self.samples.contains(&what) {
            self.samples.push(what);
        }
    }

    /// Merge another collection into this one.
    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for s in other.samples {
            if self.samples.len() < 5 && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The report as an aligned two-line table (header and values), plus error samples.
pub fn table(r: &Report) -> String {
    let lat = r.latency;
    let server = r.server;
    let columns: Vec<(&str, String)> = vec![
        ("scenario", r.scenario.clone()),
        ("protocol", r.protocol.clone()),
        ("connections", r.connections.to_string()),
        ("msgs/s", format!("{:.0}", r.messages_per_s)),
        ("p50 ms", opt(lat.map(|l| l.p50_ms), 2)),
        ("p90 ms", opt(lat.map(|l| l.p90_ms), 2)),
        ("p99 ms", opt(lat.map(|l| l.p99_ms), 2)),
        ("max ms", opt(lat.map(|l| l.max_ms), 2)),
        ("errors", r.errors.to_string()),
        (
            "srv KiB/conn",
            opt(server.and_then(|s| s.kib_per_connection), 2),
        ),
        (
            "srv CPU-s/M",
            opt(server.and_then(|s| s.cpu_s_per_million), 2),
        ),
    ];
    let mut header = String::new();
    let mut values = String::new();
    for (i, (name, value)) in columns.iter().enumerate() {
        let width = name.len().max(value.len());
        if i > 0 {
            header.push_str("  ");
            values.push_str("  ");
        }
        header.push_str(&format!("{name:>width$}"));
        values.push_str(&format!("{value:>width$}"));
    }
    let mut out = format!("{header}\n{values}\n");
    out.push_str(&format!(
        "{} messages in {:.1} s ({} publications), setup {:.1} s, {}\n",
        r.messages, r.duration_s, r.publications, r.setup_s, r.url
    ));
    for e in &r.error_samples {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for v in 1..=1000u64 {
            h.record(v * 10).expect("record");
        }
        let l = Latency::from_micros(&h).expect("samples");
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p90_ms - 9.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert_eq!(Latency::from_micros(&Histogram::new(3).expect("h")), None);
    }

    #[test]
    fn table_aligns_columns_and_shows_missing_values_as_dashes() {
        let r = Report {
            scenario: "fanout".into(),
            protocol: "ferry".into(),
            url: "ws://127.0.0.1:1/ws".into(),
            connections: 1001,
            duration_s: 5.0,
            messages: 1_000_000,
            messages_per_s: 200_000.0,
            latency: Some(Latency {
                count: 10,
                p50_ms: 1.234,
                p90_ms: 2.0,
                p99_ms: 3.0,
                max_ms: 12.5,
            }),
            errors: 2,
            error_samples: vec!["connect: refused".into()],
            ..Report::default()
        };
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{t}");
        assert!(
            lines[0].starts_with("scenario  protocol  connections"),
            "{t}"
        );
        assert!(lines[1].contains("  1.23  "), "{t}");
        assert!(lines[1].trim_end().ends_with('-'), "no server usage: {t}");
        assert!(t.contains("error: connect: refused"), "{t}");
    }

    #[test]
    fn errors_count_everything_but_keep_few_distinct_samples() {
        let mut e = Errors::default();
        for _ in 0..10 {
            e.add("same");
        }
        e.add_n(0, "never");
        let mut other = Errors::default();
        other.add_n(3, "other");
        e.merge(other);
        assert_eq!(e.count, 13);
        assert_eq!(e.samples, vec!["same".to_string(), "other".to_string()]);
    }
}
