//! `ferry monitor` (also `ferry top`): a live view of a hub's traffic from its metrics
//! stream (`/metrics/stream`, one JSON event per interval) and its busiest channels
//! (`/api/channels`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use ferry_client::event_source::EventSource;
use ferry_client::hub::HubApi;
use serde_json::{Value, json};

/// Examples shown under `ferry monitor --help`.
pub const MONITOR_HELP: &str = "\
Examples:
  FERRY_API_KEY=$KEY ferry monitor                      # http://127.0.0.1:8080
  ferry monitor http://127.0.0.1:8081 --api-key $KEY --json --count 10

Rates are per second between two samples. --json prints one object per sample:
{\"time\", \"connections\", \"connections_ws\", \"connections_sse\", \"subscriptions\",
\"channels\", \"publications_per_sec\", \"deliveries_per_sec\", \"bytes_in_per_sec\",
\"bytes_out_per_sec\", \"slow_consumers\", \"slow_consumers_per_sec\", \"auth_failures\",
\"rate_limited\", \"publish_enqueue_p99_ms\", \"enqueue_write_p99_ms\", \"top_channels\"}.
Bytes are TCP payload of every transport; latencies are bucket bounds since start.
The same figures, for Prometheus, are at /metrics.";

/// `ferry monitor` flags.
#[derive(Args)]
pub struct MonitorArgs {
    /// The hub's HTTP address.
    #[arg(default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server API key.
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Milliseconds between samples.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Stop after this many samples (rates start with the second).
    #[arg(long)]
    count: Option<u64>,
    /// Channels shown, busiest first (by subscribers).
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per sample, one per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// Run the monitor until --count samples or Ctrl-C.
pub fn monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let Some(key) = args.api_key.clone().filter(|k| !k.is_empty()) else {
        eprintln!("error: an API key is required: pass --api-key KEY or set FERRY_API_KEY");
        return Ok(ExitCode::from(crate::exit::USAGE));
    };
    let tls = match args.tls.websocket_config() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {}\nhint: {}", e.0, crate::tls_args::HINT);
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    let api = match &tls {
        Some(tls) => HubApi::with_tls(&args.url, &key, tls.clone()),
        None => HubApi::new(&args.url, &key),
    };
    let api = match api {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        tokio::select! {
            r = run(&api, &key, &args, tls) => r,
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(crate::exit::INTERRUPTED)),
        }
    })
}

async fn run(
    api: &HubApi,
    key: &str,
    args: &MonitorArgs,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> anyhow::Result<ExitCode> {
    let live = !args.json && std::io::stdout().is_terminal();
    let interval = args.interval_ms.clamp(100, 60_000);
    let url = format!(
        "{}/metrics/stream?interval_ms={interval}",
        args.url.trim_end_matches('/')
    );
    let mut builder = EventSource::builder(&url).header("authorization", &format!("apikey {key}"));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls);
    }
    let stream = builder.connect().await;
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("error: {url}: {}", e.message());
            let refused = e.message().contains("401") || e.message().contains("403");
            if refused {
                eprintln!("hint: {}", crate::failure::API_KEY_HINT);
            }
            return Ok(ExitCode::from(if refused { 3 } else { 1 }));
        }
    };
    let mut previous: Option<(Instant, Value)> = None;
    let mut taken = 0u64;
    while args.count.is_none_or(|c| taken < c) {
        let Some(event) = stream.next_message().await else {
            eprintln!("error: the metrics stream closed");
            return Ok(ExitCode::from(crate::exit::FAILED));
        };
        let Ok(figures) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let stats = flatten(&figures);
        let channels = match api.channels().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(if e.to_string().contains("AUTH") {
                    3
                } else {
                    1
                }));
            }
        };
        let now = Instant::now();
        let sample = sample(&stats, &channels, previous.as_ref(), now, args.top);
        previous = Some((now, stats));
        taken += 1;
        if args.json {
            println!("{sample}");
        } else {
            render(&sample, &args.url, live);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn counter(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// The stream's nested figures as the flat counters a sample reads.
fn flatten(figures: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let sum = |v: &Value| {
        v.as_object()
            .map(|o| o.values().map(n).sum::<u64>())
            .unwrap_or(0)
    };
    json!({
        "connections": sum(&figures["connections"]),
        "connections_ws": n(&figures["connections"]["ws"]),
        "connections_sse": n(&figures["connections"]["sse"]),
        "subscriptions": n(&figures["subscriptions"]),
        "channels": n(&figures["channels"]),
        "publications": n(&figures["publications"]),
        "deliveries": n(&figures["deliveries"]),
        "bytes_in": n(&figures["bytes_in"]),
        "bytes_out": n(&figures["bytes_out"]),
        "slow_consumers": sum(&figures["slow_consumer_closes"]),
        "auth_failures": sum(&figures["auth_failures"]),
        "rate_limited": sum(&figures["rate_limited"]),
        "publish_enqueue_p99_ms": figures["publish_enqueue"]["p99_ms"],
        "enqueue_write_p99_ms": figures["enqueue_write"]["p99_ms"],
    })
}

/// One sample: gauges as they are, counters as rates against the previous sample.
fn sample(
    stats: &Value,
    channels: &Value,
    previous: Option<&(Instant, Value)>,
    now: Instant,
    top: usize,
) -> Value {
    let rate = |key: &str| -> Value {
        match previous {
            Some((then, before)) => {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                let delta = counter(stats, key).saturating_sub(counter(before, key));
                json!((delta as f64 / secs * 10.0).round() / 10.0)
            }
            None => Value::Null,
        }
    };
    let mut busiest: Vec<(String, u64)> = channels["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["channel"].as_str().unwrap_or_default().to_string(),
                        counter(c, "subscribers"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    busiest.truncate(top);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({
        "time": unix_ms,
        "connections": counter(stats, "connections"),
        "connections_ws": counter(stats, "connections_ws"),
        "connections_sse": counter(stats, "connections_sse"),
        "subscriptions": counter(stats, "subscriptions"),
        "channels": counter(stats, "channels"),
        "publications": counter(stats, "publications"),
        "deliveries": counter(stats, "deliveries"),
        "publications_per_sec": rate("publications"),
        "deliveries_per_sec": rate("deliveries"),
        "bytes_in": counter(stats, "bytes_in"),
        "bytes_out": counter(stats, "bytes_out"),
        "bytes_in_per_sec": rate("bytes_in"),
        "bytes_out_per_sec": rate("bytes_out"),
        "slow_consumers": counter(stats, "slow_consumers"),
        "slow_consumers_per_sec": rate("slow_consumers"),
        "auth_failures": counter(stats, "auth_failures"),
        "rate_limited": counter(stats, "rate_limited"),
        "publish_enqueue_p99_ms": stats["publish_enqueue_p99_ms"],
        "enqueue_write_p99_ms": stats["enqueue_write_p99_ms"],
        "top_channels": busiest
            .iter()
            .map(|(c, n)| json!({"channel": c, "subscribers": n}))
            .collect::<Vec<_>>(),
    })
}

/// A byte rate for people: `-` before the second sample, then B, KiB, MiB or GiB.
fn bytes_rate(v: &Value) -> String {
    let Some(mut n) = v.as_f64() else {
        return "-".into();
    };
    for unit in ["B", "KiB", "MiB"] {
        if n < 1024.0 {
            return format!("{n:.1} {unit}");
        }
        n /= 1024.0;
    }
    format!("{n:.1} GiB")
}

fn render(s: &Value, url: &str, live: bool) {
    let num = |k: &str| match &s[k] {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let mut out = String::new();
    if live {
        out.push_str("\x1b[2J\x1b[H"); // clear, home
    }
    out.push_str(&format!(
        "ferry monitor {url}\n\
         connections {:>8} (ws {}, sse {})   subscriptions {:>8}   channels {:>6}\n\
         publications/s {:>8}   deliveries/s {:>10}   slow consumers {} (+{}/s)\n\
         in {:>12}/s   out {:>12}/s\n\
         p99 publish→enqueue {} ms   enqueue→write {} ms   auth failures {}   rate-limited {}\n",
        num("connections"),
        num("connections_ws"),
        num("connections_sse"),
        num("subscriptions"),
        num("channels"),
        num("publications_per_sec"),
        num("deliveries_per_sec"),
        num("slow_consumers"),
        num("slow_consumers_per_sec"),
        bytes_rate(&s["bytes_in_per_sec"]),
        bytes_rate(&s["bytes_out_per_sec"]),
        num("publish_enqueue_p99_ms"),
        num("enqueue_write_p99_ms"),
        num("auth_failures"),
        num("rate_limited"),
    ));
    if let Some(top) = s["top_channels"].as_array().filter(|t| !t.is_empty()) {
        out.push_str("top channels (subscribers):\n");
        for c in top {
            out.push_str(&format!(
                "  {:<40} {}\n",
                c["channel"].as_str().unwrap_or_default(),
                c["subscribers"]
            ));
        }
    }
    print!("{out}");
    if !live {
        println!();
    }
}
