//! `ferry scan`: argument parsing and output for `ferry_client::scan`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferry_client::scan::{self, PortState, ScanOptions, ScanPlan};

/// Examples shown under `ferry scan --help`.
pub const SCAN_HELP: &str = "\
Examples:
  ferry scan 127.0.0.1                      # ports 1-1024
  ferry scan 127.0.0.1 -p 22,80,8000-8100 --timeout 300
  ferry scan 192.168.1.0/28 -p top100 --json

Only the given targets are probed; scan only hosts you are allowed to. States: open
(accepted), closed (refused), filtered (no answer within --timeout), unscanned (the
--max-time limit came first; exit code 4).";

/// `ferry scan` flags.
#[derive(Args)]
pub struct ScanArgs {
    /// Hosts or networks: HOST, IP or IP/PREFIX (e.g. 127.0.0.1/30).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Ports: 1-1024, a list like 22,80,8000-8010, or top100.
    #[arg(short, long, default_value = "1-1024")]
    ports: String,
    /// Probes in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Milliseconds a connect may take before the port counts as filtered.
    #[arg(long, default_value_t = 1000)]
    timeout: u64,
    /// Milliseconds to wait for a banner on an open port (0: do not read).
    #[arg(long, default_value_t = 300)]
    banner_timeout: u64,
    /// Seconds the whole scan may take; later probes are reported unscanned.
    #[arg(long, default_value_t = 60)]
    max_time: u64,
    /// Refuse target lists with more addresses than this.
    #[arg(long, default_value_t = 256)]
    max_hosts: usize,
    /// One JSON object per probed port, one per line.
    #[arg(long)]
    json: bool,
}

/// Run a scan and print it.
pub fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let plan = async {
        let hosts = scan::expand_targets(&args.targets, args.max_hosts).await?;
        let ports = scan::parse_ports(&args.ports)?;
        ScanPlan::new(hosts, ports)
    }
    .await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    let options = ScanOptions {
        concurrency: args.concurrency.max(1),
        timeout: Duration::from_millis(args.timeout.max(1)),
        banner_timeout: Duration::from_millis(args.banner_timeout),
        max_time: Duration::from_secs(args.max_time.max(1)),
    };
    let bar = (!args.json && plan.len() > 100 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(plan.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ports  {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let tick = bar.clone();
    let started = std::time::Instant::now();
    let results = scan::scan(&plan, &options, move |_| {
        if let Some(b) = &tick {
            b.inc(1);
        }
    })
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let count = |s| results.iter().filter(|r| r.state == s).count();
    if args.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!("{:<22} {:<10} {:<16} BANNER", "PORT", "STATE", "SERVICE");
        for r in results
            .iter()
            .filter(|r| matches!(r.state, PortState::Open | PortState::Filtered))
        {
            let state = match r.state {
                PortState::Open => "open",
                _ => "filtered",
            };
            println!(
                "{:<22} {:<10} {:<16} {}",
                std::net::SocketAddr::new(r.host, r.port).to_string() + "/tcp",
                state,
                r.service.unwrap_or("-"),
                r.banner.as_deref().unwrap_or("")
            );
        }
        eprintln!(
            "{} probes in {:.1}s: {} open, {} closed, {} filtered, {} unscanned",
            results.len(),
            started.elapsed().as_secs_f64(),
            count(PortState::Open),
            count(PortState::Closed),
            count(PortState::Filtered),
            count(PortState::Unscanned)
        );
    }
    Ok(if count(PortState::Unscanned) > 0 {
        eprintln!("error: --max-time passed before every port was probed");
        ExitCode::from(crate::exit::TIMEOUT)
    } else {
        ExitCode::SUCCESS
    })
}
