//! `ferry monitor`: a live view of a hub's traffic from its `/api/stats` and
//! `/api/channels`, one sample a second.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ferry_client::hub::HubApi;
use serde_json::{Value, json};

/// Examples shown under `ferry monitor --help`.
pub const MONITOR_HELP: &str = "\
Examples:
  FERRY_API_KEY=$KEY ferry monitor                      # http://127.0.0.1:8080
  ferry monitor http://127.0.0.1:8081 --api-key $KEY --json --count 10

Rates are per second between two samples. --json prints one object per sample:
{\"time\", \"connections\", \"subscriptions\", \"channels\", \"publications_per_sec\",
\"deliveries_per_sec\", \"bytes_in_per_sec\", \"bytes_out_per_sec\", \"slow_consumers\",
\"slow_consumers_per_sec\", \"top_channels\"}. Bytes are TCP payload of every transport.";

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
}

/// Run the monitor until --count samples or Ctrl-C.
pub fn monitor(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let Some(key) = args.api_key.clone().filter(|k| !k.is_empty()) else {
        eprintln!("error: an API key is required: pass --api-key KEY or set FERRY_API_KEY");
        return Ok(ExitCode::from(2));
    };
    let api = match HubApi::new(&args.url, &key) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        tokio::select! {
            r = run(&api, &args) => r,
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
        }
    })
}

async fn run(api: &HubApi, args: &MonitorArgs) -> anyhow::Result<ExitCode> {
    let live = !args.json && std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(50)));
    let mut previous: Option<(Instant, Value)> = None;
    let mut taken = 0u64;
    while args.count.is_none_or(|c| taken < c) {
        tick.tick().await;
        let (stats, channels) = match tokio::try_join!(api.stats(), api.channels()) {
            Ok(s) => s,
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
         connections {:>8}   subscriptions {:>8}   channels {:>6}\n\
         publications/s {:>8}   deliveries/s {:>10}   slow consumers {} (+{}/s)\n\
         in {:>12}/s   out {:>12}/s\n",
        num("connections"),
        num("subscriptions"),
        num("channels"),
        num("publications_per_sec"),
        num("deliveries_per_sec"),
        num("slow_consumers"),
        num("slow_consumers_per_sec"),
        bytes_rate(&s["bytes_in_per_sec"]),
        bytes_rate(&s["bytes_out_per_sec"]),
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
