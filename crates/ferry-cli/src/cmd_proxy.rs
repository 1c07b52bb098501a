//! `ferry proxy`: argument parsing and output for the reverse proxy in `ferry-proxy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_proxy::{BackendConfig, HashKey, Policy, Proxy, ProxyConfig};

/// Examples shown under `ferry proxy --help`.
pub const PROXY_HELP: &str = "\
Examples:
  ferry proxy --backend 127.0.0.1:8081 --backend 127.0.0.1:8082 --backend 127.0.0.1:8083
  ferry proxy --listen 127.0.0.1:8000 --admin 127.0.0.1:9000 --policy consistent-hash \\
      --hash-key header:X-Client-Id --backend 127.0.0.1:8081,weight=2 --backend 127.0.0.1:8082

Or in ferry.toml:
  [proxy]
  listen = \"127.0.0.1:8000\"
  policy = \"least_connections\"
  [[proxy.backends]]
  address = \"127.0.0.1:8081\"
  [proxy.health_check]
  path = \"/ready\"
  interval_ms = 2000

TLS termination (https, wss; backends stay plain HTTP), with ferry serve's [tls] options:
  ferry proxy --tls-cert cert.pem --tls-key key.pem --backend 127.0.0.1:8081
  [proxy.tls]
  cert = \"cert.pem\"
  key = \"key.pem\"

The admin address serves /metrics (Prometheus) and /status (JSON). SIGTERM or Ctrl-C stops
accepting and lets in-flight requests finish (limits.drain_timeout_ms).";

/// `ferry proxy` flags; each overrides the `[proxy]` section of ferry.toml.
#[derive(Args)]
pub struct ProxyArgs {
    /// Address clients connect to [default: 127.0.0.1:8000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address for /metrics and /status [default: none].
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Worker threads [default: one per CPU]. Each accepts connections of its own and keeps
    /// a request, its backend call and its backend connections on one thread (no
    /// cross-thread wake-ups), as nginx's worker processes do.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// A backend, HOST:PORT or HOST:PORT,weight=N (repeat; replaces the file's list).
    #[arg(long = "backend", value_name = "HOST:PORT[,weight=N]")]
    backends: Vec<BackendConfig>,
    /// How requests are spread [default: round-robin].
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// What consistent-hash hashes: ip, header:NAME or cookie:NAME [default: ip].
    #[arg(long, value_name = "KEY")]
    hash_key: Option<HashKey>,
    /// Retries of bodiless idempotent requests on another backend [default: 2].
    #[arg(long)]
    retries: Option<u32>,
    /// Health check path [default: /ready].
    #[arg(long)]
    health_path: Option<String>,
    /// Milliseconds between health checks [default: 2000].
    #[arg(long)]
    health_interval_ms: Option<u64>,
    /// Health check timeout in ms [default: 1000].
    #[arg(long)]
    health_timeout_ms: Option<u64>,
    /// Consecutive passes that re-admit a backend [default: 2].
    #[arg(long)]
    healthy_threshold: Option<u32>,
    /// Consecutive failures that eject a backend [default: 2].
    #[arg(long)]
    unhealthy_threshold: Option<u32>,
    /// Turn active health checks off.
    #[arg(long)]
    no_health_check: bool,
    /// Failures on real traffic within --fail-window-ms that eject a backend; 0 = off
    /// [default: 3].
    #[arg(long)]
    max_failures: Option<u32>,
    /// Window for --max-failures in ms [default: 10000].
    #[arg(long)]
    fail_window_ms: Option<u64>,
    /// How long a passively ejected backend rests, in ms [default: 10000].
    #[arg(long)]
    cooldown_ms: Option<u64>,
    /// Time in-flight requests get after SIGTERM, in ms [default: 10000].
    #[arg(long)]
    drain_timeout_ms: Option<u64>,
    /// Terminate TLS (https, wss) with this PEM certificate chain (with --tls-key), as
    /// `ferry serve --tls-cert` does: reloaded when the file changes or on SIGHUP.
    /// Backends are still spoken to in plain HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Terminate TLS with a self-signed certificate for localhost, made into
    /// ./ferry-data/tls/ (for development; clients trust it with --cacert or --pin).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// Configuration file whose [proxy] section is read [default: ./ferry.toml if present].
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    ConsistentHash,
}

impl ProxyArgs {
    /// Only the flags that were given, as overrides of the file.
    fn overrides(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let mut o = serde_json::Map::new();
        let mut put = |path: &[&str], v: Value| {
            let mut map = &mut o;
            for key in &path[..path.len() - 1] {
                let entry = map
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Default::default()));
                let Value::Object(inner) = entry else { return };
                map = inner;
            }
            map.insert(path[path.len() - 1].to_string(), v);
        };
        if let Some(v) = self.listen {
            put(&["listen"], json!(v.to_string()));
        }
        if let Some(v) = self.admin {
            put(&["admin_listen"], json!(v.to_string()));
        }
        if !self.backends.is_empty() {
            put(&["backends"], json!(self.backends));
        }
        if let Some(p) = self.policy {
            let p = match p {
                PolicyArg::RoundRobin => Policy::RoundRobin,
                PolicyArg::WeightedRoundRobin => Policy::WeightedRoundRobin,
                PolicyArg::LeastConnections => Policy::LeastConnections,
                PolicyArg::ConsistentHash => Policy::ConsistentHash,
            };
            put(&["policy"], json!(p));
        }
        if let Some(k) = &self.hash_key {
            put(&["hash_key"], json!(k));
        }
        if let Some(v) = self.retries {
            put(&["retries"], json!(v));
        }
        if let Some(v) = &self.health_path {
            put(&["health_check", "path"], json!(v));
        }
        if let Some(v) = self.health_interval_ms {
            put(&["health_check", "interval_ms"], json!(v));
        }
        if let Some(v) = self.health_timeout_ms {
            put(&["health_check", "timeout_ms"], json!(v));
        }
        if let Some(v) = self.healthy_threshold {
            put(&["health_check", "healthy_threshold"], json!(v));
        }
        if let Some(v) = self.unhealthy_threshold {
            put(&["health_check", "unhealthy_threshold"], json!(v));
        }
        if self.no_health_check {
            put(&["health_check", "enabled"], json!(false));
        }
        if let Some(v) = self.max_failures {
            put(&["passive_health", "max_failures"], json!(v));
        }
        if let Some(v) = self.fail_window_ms {
            put(&["passive_health", "window_ms"], json!(v));
        }
        if let Some(v) = self.cooldown_ms {
            put(&["passive_health", "cooldown_ms"], json!(v));
        }
        if let Some(v) = self.drain_timeout_ms {
            put(&["limits", "drain_timeout_ms"], json!(v));
        }
        if let Some(v) = &self.tls_cert {
            put(&["tls", "cert"], json!(v.display().to_string()));
        }
        if let Some(v) = &self.tls_key {
            put(&["tls", "key"], json!(v.display().to_string()));
        }
        if self.tls_self_signed {
            put(&["tls", "self_signed"], json!(true));
        }
        Value::Object(o)
    }
}

/// Run `ferry proxy` until SIGTERM / Ctrl-C, then drain.
pub fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let config = match ProxyConfig::load(args.config.as_deref(), args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    if args.print_config {
        return crate::cmd_init::print_config(&config);
    }
    crate::serve_dev::init_logging(args.log_json);
    let workers = match args.threads {
        Some(threads) => usize::from(threads),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let backends: Vec<String> = config.backends.iter().map(|b| b.address.clone()).collect();
        let proxy = match Proxy::bind(config, workers) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(crate::exit::USAGE));
            }
        };
        // Scripts and tests read these lines to learn the ports (with --listen ...:0).
        println!(
            "ferry proxy listening on {}://{}",
            proxy.scheme(),
            proxy.local_addr()?
        );
        if let Some(admin) = proxy.admin_addr() {
            println!("ferry proxy admin on http://{admin}");
        }
        eprintln!("  backends: {}", backends.join(", "));
        if let Some(tls) = proxy.tls() {
            let store = tls.store();
            eprintln!(
                "  tls: {}, pin {} (clients: --cacert FILE or --pin PIN)",
                store.files().cert.display(),
                store.pin()
            );
        }
        proxy.run(ferry_hub::shutdown_signal()).await?;
        eprintln!("ferry proxy stopped");
        Ok(ExitCode::SUCCESS)
    })
}
