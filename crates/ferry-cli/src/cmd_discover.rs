//! `ferry discover`: list the hubs on the local network (SPEC L2).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferry_client::discover::{DiscoveredHub, Discovery, Via};

pub const DISCOVER_HELP: &str = "\
Hubs announce themselves when they listen on a non-loopback address
(`ferry serve --listen 0.0.0.0:8080`; off with --no-announce). Discovery asks over
mDNS/DNS-SD (_ferry._tcp.local.) and, in parallel, with a UDP broadcast probe to port
47471 for networks that drop multicast. Nothing leaves the local network.

Examples:
  ferry discover                       # every hub that answers within 3 s
  ferry discover --json --timeout 1s   # as a JSON array, for scripts
  ferry discover --name kitchen --first

Exit codes: 0 at least one hub answered, 4 none answered before the timeout.";

#[derive(Args)]
pub struct DiscoverArgs {
    /// How long to wait for answers: `3s`, `500ms` or seconds [default: 3s].
    #[arg(long, default_value = "3s", value_parser = duration)]
    timeout: Duration,
    /// Print a JSON array (name, addresses, port, tls, version, path, protocols, url,
    /// via, elapsed_ms) when done instead of lines as hubs answer.
    #[arg(long)]
    json: bool,
    /// Only the hub with this node name (case-insensitive).
    #[arg(long)]
    name: Option<String>,
    /// Stop at the first hub that answers.
    #[arg(long)]
    first: bool,
    /// Do not use mDNS (broadcast probe only).
    #[arg(long)]
    no_mdns: bool,
    /// Do not send broadcast probes (mDNS only).
    #[arg(long)]
    no_broadcast: bool,
    /// UDP port of the broadcast probe [default: 47471].
    #[arg(long, default_value_t = ferry_proto::discovery::DEFAULT_BROADCAST_PORT)]
    broadcast_port: u16,
}

/// `3s`, `500ms`, `1.5` (seconds).
fn duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 3s or 500ms"))?;
    if !value.is_finite() || value <= 0.0 || value * scale > 3600.0 {
        return Err(format!("`{s}`: use a duration between 1ms and 1h"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn via(hub: &DiscoveredHub) -> String {
    hub.via
        .iter()
        .map(|v| match v {
            Via::Mdns => "mdns",
            Via::Broadcast => "broadcast",
        })
        .collect::<Vec<_>>()
        .join("+")
}

fn line(hub: &DiscoveredHub) -> String {
    let addresses: Vec<String> = hub.addresses.iter().map(|a| a.to_string()).collect();
    format!(
        "{}  {}  port {}  tls {}  version {}  via {}  {}",
        hub.name,
        addresses.join(","),
        hub.port,
        if hub.tls { "yes" } else { "no" },
        if hub.version.is_empty() {
            "?"
        } else {
            &hub.version
        },
        via(hub),
        hub.url(),
    )
}

fn to_json(hub: &DiscoveredHub) -> serde_json::Value {
    let mut value = serde_json::to_value(hub).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("url".into(), hub.url().into());
    }
    value
}

pub fn discover(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut builder = Discovery::builder()
            .timeout(args.timeout)
            .mdns(!args.no_mdns)
            .broadcast(!args.no_broadcast)
            .broadcast_port(args.broadcast_port);
        if let Some(name) = &args.name {
            builder = builder.name(name);
        }
        let mut run = match builder.start() {
            Ok(run) => run,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(crate::exit::FAILED));
            }
        };
        let mut printed: Vec<String> = Vec::new();
        let mut stdout = std::io::stdout();
        while let Some(hub) = run.next().await {
            if !args.json && !printed.iter().any(|n| hub.is_named(n)) {
                writeln!(stdout, "{}", line(&hub))?;
                stdout.flush()?;
                printed.push(hub.name.clone());
            }
            if args.first {
                break;
            }
        }
        let found = run.found();
        if args.json {
            let list: Vec<serde_json::Value> = found.iter().map(to_json).collect();
            writeln!(stdout, "{}", serde_json::Value::Array(list))?;
        }
        if found.is_empty() {
            eprintln!(
                "no hub answered within {:?}. A hub is announced only when it listens on a non-loopback address (ferry serve --listen 0.0.0.0:8080) without --no-announce; check that this machine is on the same network and that UDP {} and multicast are not blocked.",
                args.timeout, args.broadcast_port
            );
            return Ok(ExitCode::from(crate::exit::TIMEOUT));
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(duration("soon").is_err());
        assert!(duration("0s").is_err());
    }
}
