//! `ferry bench`: a protocol-aware WebSocket/SSE load generator.
//!
//! Scenarios: `idle` (connections held), `fanout` (subscribers × publishers), `latency`
//! (publish → delivery at a low fixed rate), `echo` (any WebSocket echo URL) and `sse`
//! (EventSource subscribers of the hub), `soak` (thousands of connections of every kind
//! for minutes: misses, reaping and server memory). Protocol adapters: `ferry` (the hub protocol),
//! `plain` (the peers' trivial broadcast protocol: whatever a client sends, the server
//! sends to every other client; `/echo` echoes) and `socketio` (Engine.IO v4 over a raw
//! WebSocket).
//!
//! Everything is bounded: connection counts and durations have caps, every wait has a
//! timeout, and targets must be loopback unless `--allow-remote` is given. With
//! `--server-pid` the server's memory and CPU time are read from `/proc` around the
//! measurement window (the harness in `bench/` uses this to compare servers).

mod client;
mod echo;
mod fanout;
mod idle;
mod probe;
mod report;
mod soak;
mod sse;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use client::{Protocol, Target};
use probe::Probe;

/// Most connections one scenario may open.
const MAX_CONNECTIONS: usize = 100_000;
/// Longest measurement window, warm-up, hold or setup, in seconds.
const MAX_SECONDS: f64 = 3600.0;

/// Arguments of `ferry bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: ScenarioArgs,
}

/// Options every scenario takes.
#[derive(Args)]
pub struct Common {
    /// WebSocket URL of the server under test (`/ws` for ferry, `/` for plain peers, the
    /// server root for socketio, an echo URL for `echo`). Must be loopback unless
    /// --allow-remote.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Protocol adapter.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Ferry)]
    protocol: Protocol,
    /// HS256 secret to sign the ferry token with (user `bench`).
    #[arg(long, global = true, env = "FERRY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// A ready ferry token (instead of --jwt-secret).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Channel to subscribe and publish to (ferry, sse).
    #[arg(long, global = true, default_value = "chat:bench")]
    channel: String,
    /// Read this server process's memory and CPU time from /proc around the window.
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// Handshakes in progress at once while connecting.
    #[arg(long, global = true, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..))]
    connect_concurrency: u16,
    /// Give up opening connections after this many seconds.
    #[arg(long, global = true, default_value_t = 120.0, value_parser = seconds)]
    setup_timeout: f64,
    /// Connections served by one task.
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    group_size: u16,
    /// Allow a target that is not on this machine's loopback (127.0.0.0/8, ::1).
    #[arg(long, global = true)]
    allow_remote: bool,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
}

impl Common {
    fn probe(&self) -> anyhow::Result<Option<Probe>> {
        self.server_pid.map(Probe::new).transpose()
    }

    fn concurrency(&self) -> usize {
        self.connect_concurrency.into()
    }

    fn setup_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.setup_timeout)
    }

    fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.jwt_secret) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(secret)) => client::mint_token(secret).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn seconds(s: &str) -> Result<f64, String> {
    number_in(
        s,
        0.0..=MAX_SECONDS,
        &format!("between 0 and {MAX_SECONDS} seconds"),
    )
}

fn count(s: &str) -> Result<usize, String> {
    let v: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=MAX_CONNECTIONS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("between 1 and {MAX_CONNECTIONS}"))
    }
}

/// The plan of `echo` (`publish: None`) and `persist`.
fn echo_plan(
    connections: usize,
    in_flight: u16,
    size: usize,
    timing: Timing,
    publish: Option<echo::PublishTo>,
) -> echo::EchoPlan {
    echo::EchoPlan {
        connections,
        in_flight: in_flight.into(),
        size,
        warmup: timing.warmup(),
        duration: timing.duration(),
        publish,
    }
}

/// The measured window of a scenario: a warm-up, then the seconds measured.
#[derive(Args, Clone, Copy)]
struct Timing {
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, short = 'd', default_value_t = 5.0, value_parser = seconds)]
    duration: f64,
}

impl Timing {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }
}

/// A number in `range`, or `hint` as the error.
fn number_in(s: &str, range: std::ops::RangeInclusive<f64>, hint: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(hint.into())
    }
}

fn rate(s: &str) -> Result<f64, String> {
    number_in(
        s,
        0.0..=1e6,
        "between 0 (as fast as the window allows) and 1000000 per second",
    )
}

#[derive(Subcommand)]
enum ScenarioArgs {
    /// Open N connections (authenticated, one subscription), hold them, report the
    /// server's KiB per connection (with --server-pid).
    Idle {
        /// Connections to open.
        #[arg(long, short = 'n', default_value = "1000", value_parser = count)]
        connections: usize,
        /// Seconds to let the server settle before reading its memory.
        #[arg(long, default_value_t = 2.0, value_parser = seconds)]
        settle: f64,
        /// Seconds to hold the connections after the reading.
        #[arg(long, default_value_t = 1.0, value_parser = seconds)]
        hold: f64,
        /// Offer permessage-deflate on every connection (measures what an agreed
        /// compression costs an idle connection; the server needs compression = "on").
        #[arg(long)]
        offer_deflate: bool,
    },
    /// N subscribers, P publishers: deliveries per second, latency, server CPU per
    /// million deliveries (with --server-pid).
    Fanout(FanoutArgs),
    /// Publish → delivery latency at a low fixed rate (20/s to 1000 subscribers).
    Latency(LatencyArgs),
    /// Round trips per second against any WebSocket echo URL.
    Echo {
        /// Connections.
        #[arg(long, short = 'n', default_value = "50", value_parser = count)]
        connections: usize,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        in_flight: u16,
        /// Message size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// N EventSource subscribers of the hub's /sse, fed by ferry publishers.
    Sse(FanoutArgs),
    /// Acknowledged publications per second: C connections each keep K `publish`
    /// commands in flight (with SQLite history the hub answers after the commit), to one
    /// channel (--hot) or to a channel per connection (CHANNEL-0, CHANNEL-1, ...).
    Persist {
        /// Publisher connections.
        #[arg(long, short = 'n', default_value = "64", value_parser = count)]
        connections: usize,
        /// Publications in flight per connection.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
        in_flight: u16,
        /// Size of a publication's JSON data, bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Every connection publishes to the one channel --channel.
        #[arg(long)]
        hot: bool,
        #[command(flatten)]
        timing: Timing,
    },
    /// Many connections for a long time: well-behaved subscribers (checked for misses),
    /// stalled readers (checked to be reaped), slow readers, reconnect storms and HTTP
    /// publishers; server RSS sampled. Prints a markdown table (bench/soak.sh).
    Soak(SoakArgs),
}

#[derive(Args)]
struct SoakArgs {
    /// Connections in total (well-behaved, stalled and slow subscribers).
    #[arg(long, short = 'n', default_value = "10000", value_parser = count)]
    connections: usize,
    /// Seconds the run lasts.
    #[arg(long, short = 'd', default_value_t = 600.0, value_parser = seconds)]
    duration: f64,
    /// Channels the subscribers are spread over (`chat:soak-0` ...).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    channels: u16,
    /// Percent of the connections that are stalled readers (tiny SO_RCVBUF, never read).
    #[arg(long, default_value_t = 5.0, value_parser = percent)]
    stalled_percent: f64,
    /// Percent of the connections that are slow readers.
    #[arg(long, default_value_t = 5.0, value_parser = percent)]
    slow_percent: f64,
    /// Channels each slow reader subscribes to.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=128))]
    slow_channels: u16,
    /// Milliseconds a slow reader sleeps after each message.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    slow_sleep_ms: u64,
    /// Seconds after opening at which a stalled reader is read to judge whether the server
    /// reaped it (write timeout, or ping/pong and idle timeouts, must have passed).
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    stalled_check: f64,
    /// Seconds between reconnect storms (0: none).
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    storm_every: f64,
    /// Well-behaved subscribers that drop and reconnect (recovering) in each storm.
    #[arg(long, default_value_t = 1000)]
    storm_size: usize,
    /// HTTP publisher connections.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    publishers: u16,
    /// Publications per second over all publishers.
    #[arg(long, default_value_t = 200.0, value_parser = rate)]
    rate: f64,
    /// Size of a publication's JSON data, bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Size of the occasional large publication, bytes (0: none).
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    big_size: u64,
    /// Seconds between large publications (0: none).
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    big_every: f64,
    /// Seconds between server samples (RSS with --server-pid, /api/stats).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    sample_every: f64,
    /// The server's API key (publications go through POST /api/publish).
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true)]
    api_key: String,
}

fn percent(s: &str) -> Result<f64, String> {
    number_in(s, 0.0..=100.0, "between 0 and 100")
}

#[derive(Args)]
struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, short = 'n', default_value = "1000", value_parser = count)]
    subscribers: usize,
    /// Publisher connections.
    #[arg(long, short = 'p', default_value = "1", value_parser = count)]
    publishers: usize,
    /// Publications per second over all publishers; 0 = as fast as --window allows.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    rate: f64,
    /// Publications that may be not yet delivered to every subscriber at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    window: u64,
    /// Size of a publication's JSON data, bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    #[command(flatten)]
    timing: Timing,
    /// Spread the subscribers over this hub too, round-robin with --url (repeatable):
    /// other nodes of one Redis-backed cluster. Publishers stay on --url.
    #[arg(long = "also-url", value_name = "URL")]
    also_url: Vec<String>,
    /// The encoding subscribers speak (ferry protocol): json or msgpack. Publishers
    /// publish JSON, so msgpack measures the hub converting once and fanning out
    /// MessagePack frames; the scenario is then reported as `fanout-msgpack`.
    #[arg(long = "sub-proto", value_name = "ENCODING", default_value = "json")]
    sub_proto: ferry_proto::Codec,
}

#[derive(Args)]
struct LatencyArgs {
    /// Subscriber connections.
    #[arg(long, short = 'n', default_value = "1000", value_parser = count)]
    subscribers: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 20.0, value_parser = rate)]
    rate: f64,
    /// Size of a publication's JSON data, bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, short = 'd', default_value_t = 10.0, value_parser = seconds)]
    duration: f64,
    /// Spread the subscribers over this hub too (see `fanout --also-url`).
    #[arg(long = "also-url", value_name = "URL")]
    also_url: Vec<String>,
}

/// The targets subscribers connect to: `target`, then each of `also`.
async fn spread_targets(
    common: &Common,
    target: &Arc<Target>,
    token: Option<&str>,
    also: &[String],
) -> anyhow::Result<Vec<Arc<Target>>> {
    let mut all = vec![target.clone()];
    for url in also {
        all.push(Arc::new(
            Target::resolve(
                url,
                common.protocol,
                &common.channel,
                token,
                common.allow_remote,
            )
            .await?,
        ));
    }
    Ok(all)
}

impl FanoutArgs {
    fn plan(&self, group_size: u16) -> fanout::FanoutPlan {
        fanout::FanoutPlan {
            subscribers: self.subscribers,
            publishers: self.publishers,
            rate: self.rate,
            window: self.window,
            size: self.size,
            warmup: self.timing.warmup(),
            duration: self.timing.duration(),
            group_size: group_size.into(),
        }
    }
}

/// Run `ferry bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    // 10,000 connections need 10,000 descriptors in this process alone.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(run_scenario(args, nofile))?;
    if let Some(text) = report.printed {
        print!("{text}");
    } else if report.json_output {
        println!("{}", serde_json::to_string_pretty(&report.report)?);
    } else {
        print!("{}", report::table(&report.report));
    }
    // Thousands of sockets close faster without waiting for their tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

struct Outcome {
    report: report::Report,
    /// Output of a scenario with its own report (soak).
    printed: Option<String>,
    json_output: bool,
}

async fn run_scenario(args: BenchArgs, nofile: u64) -> anyhow::Result<Outcome> {
    let common = args.common;
    let needed = match &args.scenario {
        ScenarioArgs::Idle { connections, .. }
        | ScenarioArgs::Echo { connections, .. }
        | ScenarioArgs::Persist { connections, .. } => *connections,
        ScenarioArgs::Fanout(f) | ScenarioArgs::Sse(f) => f.subscribers + f.publishers,
        ScenarioArgs::Latency(l) => l.subscribers + 1,
        ScenarioArgs::Soak(s) => s.connections + usize::from(s.publishers) + 2,
    };
    if (nofile as usize) < needed + 64 {
        eprintln!(
            "warning: the open-files limit is {nofile}; {needed} connections need more (raise the hard limit: ulimit -Hn)"
        );
    }
    let token = common.token()?;
    let needs_token =
        common.protocol == Protocol::Ferry && !matches!(args.scenario, ScenarioArgs::Echo { .. });
    if needs_token && token.is_none() {
        anyhow::bail!(
            "the ferry protocol needs a token: pass --jwt-secret SECRET (or set FERRY_JWT_SECRET) or --token JWT"
        );
    }
    let mut target = Target::resolve(
        &common.url,
        common.protocol,
        &common.channel,
        token.as_deref(),
        common.allow_remote,
    )
    .await?;
    if matches!(args.scenario, ScenarioArgs::Echo { .. }) {
        // An echo endpoint speaks no hub protocol (the hub's is /test/echo).
        target = target.raw();
    }
    let target = Arc::new(target);
    let group_size = common.group_size;
    let report = match args.scenario {
        ScenarioArgs::Idle {
            connections,
            settle,
            hold,
            offer_deflate,
        } => {
            let target = if offer_deflate {
                Arc::new((*target).clone().offering_deflate())
            } else {
                target
            };
            let plan = idle::IdlePlan {
                connections,
                settle: Duration::from_secs_f64(settle),
                hold: Duration::from_secs_f64(hold),
                group_size: group_size.into(),
            };
            idle::run(&common, target, plan).await?
        }
        ScenarioArgs::Fanout(f) => {
            let codec = f.sub_proto;
            let subscribe_at: Vec<Arc<Target>> =
                spread_targets(&common, &target, token.as_deref(), &f.also_url)
                    .await?
                    .into_iter()
                    .map(|t| Arc::new((*t).clone().speaking(codec)))
                    .collect();
            let plan = f.plan(group_size);
            let scenario = match codec {
                ferry_proto::Codec::Json => "fanout",
                ferry_proto::Codec::MsgPack => "fanout-msgpack",
            };
            fanout::run_spread(&common, target, &subscribe_at, plan, scenario).await?
        }
        ScenarioArgs::Latency(l) => {
            let plan = fanout::FanoutPlan {
                subscribers: l.subscribers,
                publishers: 1,
                rate: l.rate,
                window: 1_000_000,
                size: l.size,
                warmup: Duration::from_secs_f64(l.warmup),
                duration: Duration::from_secs_f64(l.duration),
                group_size: group_size.into(),
            };
            if plan.rate == 0.0 {
                anyhow::bail!("latency needs a fixed --rate above 0");
            }
            let subscribe_at =
                spread_targets(&common, &target, token.as_deref(), &l.also_url).await?;
            fanout::run_spread(&common, target, &subscribe_at, plan, "latency").await?
        }
        ScenarioArgs::Echo {
            connections,
            in_flight,
            size,
            timing,
        } => {
            let plan = echo_plan(connections, in_flight, size, timing, None);
            echo::run(&common, target, plan).await?
        }
        ScenarioArgs::Persist {
            connections,
            in_flight,
            size,
            hot,
            timing,
        } => {
            if common.protocol != Protocol::Ferry {
                anyhow::bail!("persist publishes through the hub: use --protocol ferry");
            }
            let to = if hot {
                echo::PublishTo::Hot
            } else {
                echo::PublishTo::PerConnection
            };
            let plan = echo_plan(connections, in_flight, size, timing, Some(to));
            echo::run(&common, target, plan).await?
        }
        ScenarioArgs::Sse(f) => {
            if common.protocol != Protocol::Ferry {
                anyhow::bail!(
                    "sse subscribes to the hub's /sse; its publishers speak --protocol ferry"
                );
            }
            sse::run(&common, target, f.plan(group_size), token).await?
        }
        ScenarioArgs::Soak(s) => return run_soak(&common, target, s).await,
    };
    Ok(Outcome {
        report,
        printed: None,
        json_output: common.json,
    })
}

async fn run_soak(common: &Common, target: Arc<Target>, s: SoakArgs) -> anyhow::Result<Outcome> {
    if common.protocol != Protocol::Ferry {
        anyhow::bail!("soak speaks the hub protocol (--protocol ferry)");
    }
    let plan = soak::SoakPlan {
        connections: s.connections,
        duration: Duration::from_secs_f64(s.duration),
        channels: s.channels.into(),
        stalled_percent: s.stalled_percent,
        slow_percent: s.slow_percent,
        slow_channels: s.slow_channels.into(),
        slow_sleep: Duration::from_millis(s.slow_sleep_ms),
        stalled_check: Duration::from_secs_f64(s.stalled_check),
        storm_every: Duration::from_secs_f64(s.storm_every),
        storm_size: s.storm_size,
        publishers: s.publishers.into(),
        rate: s.rate,
        size: s.size,
        big_size: s.big_size as usize,
        big_every: Duration::from_secs_f64(s.big_every),
        sample_every: Duration::from_secs_f64(s.sample_every.max(0.5)),
        api_key: s.api_key,
    };
    let report = soak::run(common, target, plan.clone()).await?;
    let printed = if common.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        soak::markdown(&report, &plan)
    };
    Ok(Outcome {
        report: report::Report::default(),
        printed: Some(printed),
        json_output: common.json,
    })
}
