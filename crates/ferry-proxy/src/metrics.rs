//! The admin endpoints: `/metrics` (Prometheus text format) and `/status` (JSON).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use crate::balancer::LATENCY_BUCKETS_MS;
use crate::forward::Shared;

/// Per-backend requests, failures, requests in flight, health and latency histogram.
pub fn render_prometheus(shared: &Shared) -> String {
    let now = Instant::now();
    let mut out = String::new();
    let backends = shared.pool.backends();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, b) in backends.iter().enumerate() {
            let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", b.address, value(i));
        }
    };
    family(
        "ferry_proxy_requests_total",
        "counter",
        "Requests sent to the backend.",
        &|i| backends[i].requests.load(Ordering::Relaxed).to_string(),
    );
    family(
        "ferry_proxy_failures_total",
        "counter",
        "Connect errors, timeouts and 502/503/504 answers from the backend.",
        &|i| backends[i].failures.load(Ordering::Relaxed).to_string(),
    );
    family(
        "ferry_proxy_in_flight",
        "gauge",
        "Requests and upgraded connections in flight.",
        &|i| backends[i].in_flight().to_string(),
    );
    family(
        "ferry_proxy_healthy",
        "gauge",
        "1 when the backend gets traffic (active checks pass, not ejected).",
        &|i| u8::from(backends[i].is_available(now)).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP ferry_proxy_response_seconds Time to the backend's response headers.\n\
         # TYPE ferry_proxy_response_seconds histogram"
    );
    for b in backends {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += b.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ferry_proxy_response_seconds_bucket{{backend=\"{}\",le=\"{}\"}} {cumulative}",
                b.address,
                *le as f64 / 1000.0
            );
        }
        cumulative += b.latency_buckets[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ferry_proxy_response_seconds_bucket{{backend=\"{0}\",le=\"+Inf\"}} {cumulative}\n\
             ferry_proxy_response_seconds_sum{{backend=\"{0}\"}} {1}\n\
             ferry_proxy_response_seconds_count{{backend=\"{0}\"}} {cumulative}",
            b.address,
            b.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "# HELP ferry_proxy_errors_total Requests the proxy answered itself (no backend could).\n\
         # TYPE ferry_proxy_errors_total counter\nferry_proxy_errors_total {}",
        shared.proxy_errors.load(Ordering::Relaxed)
    );
    out
}

/// `{"policy": ..., "backends": [{"address", "healthy", "ejected", "in_flight", "requests", "failures"}]}`.
pub fn status_json(shared: &Shared) -> serde_json::Value {
    let now = Instant::now();
    let backends: Vec<_> = shared
        .pool
        .backends()
        .iter()
        .map(|b| {
            json!({
                "address": b.address,
                "weight": b.weight,
                "healthy": b.is_healthy(),
                "ejected": b.is_ejected(now),
                "available": b.is_available(now),
                "in_flight": b.in_flight(),
                "requests": b.requests.load(Ordering::Relaxed),
                "failures": b.failures.load(Ordering::Relaxed),
            })
        })
        .collect();
    json!({ "policy": shared.config.policy, "backends": backends })
}
