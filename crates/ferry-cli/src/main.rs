//! `ferry`: the command-line tool. Argument parsing and output only; the work lives in
//! the library crates.
//!
//! Exit codes (the same for every command):
//! - 0 success
//! - 1 runtime failure: connection failed or lost, TLS, I/O
//! - 2 usage or configuration error, invalid URL
//! - 3 the server refused: HTTP 4xx/5xx, a hub error code, close 1008
//! - 4 timeout
//! - 130 interrupted (Ctrl-C)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use ferry_hub::secrets::{SecretsOutcome, ensure_secrets};
use ferry_hub::{Config, Server};

mod cmd_api;
mod cmd_discover;
mod cmd_http;
mod cmd_init;
mod cmd_man;
mod cmd_monitor;
mod cmd_net;
mod cmd_proxy;
mod cmd_realtime;
mod cmd_scan;
mod cmd_sync;
mod cmd_token;
mod exit;
mod failure;
mod local;
mod password;
mod serve_dev;
mod tls_args;
mod urls;

/// ferry: a realtime hub (WebSocket, SSE, HTTP API) and network tools in one binary.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the realtime hub with embedded defaults (127.0.0.1:8080, data in ./ferry-data).
    ///
    /// Example: `ferry serve`, then publish with
    /// `curl -H "Authorization: apikey $KEY" -d '{"channel":"chat:lobby","data":{"text":"hi"}}' http://127.0.0.1:8080/api/publish`
    /// or `ferry pub chat:lobby '{"text":"hi"}'`. For local development: `ferry serve --dev`.
    #[command(
        after_help = serve_dev::SERVE_HELP,
        after_long_help = format!("{}\n\n{SERVE_LIMITS_HELP}", serve_dev::SERVE_HELP)
    )]
    Serve(ServeArgs),
    /// Mint a client token (JWT) with the local hub's secret, or `check` one.
    #[command(after_help = cmd_token::TOKEN_HELP)]
    Token(cmd_token::TokenArgs),
    /// Write a commented ferry.toml with every option at its default.
    #[command(after_help = cmd_init::INIT_HELP)]
    Init(cmd_init::InitArgs),
    /// Read a channel's history through the server API.
    #[command(after_help = cmd_api::API_HELP)]
    History(cmd_api::HistoryArgs),
    /// List who is subscribed to a channel (server API).
    #[command(after_help = cmd_api::API_HELP)]
    Presence(cmd_api::PresenceArgs),
    /// List channels with subscribers (server API).
    #[command(after_help = cmd_api::API_HELP)]
    Channels(cmd_api::PlainArgs),
    /// Show the hub's connection and channel counts (server API).
    #[command(after_help = cmd_api::API_HELP)]
    Stats(cmd_api::PlainArgs),
    /// Close the connections of a user or one client (server API).
    #[command(after_help = cmd_api::API_HELP)]
    Disconnect(cmd_api::DisconnectArgs),
    /// Send a message to a user's connections or one client (server API).
    #[command(after_help = cmd_api::API_HELP)]
    Send(cmd_api::SendArgs),
    /// Hash a password for `[[users]]` in ferry.toml (hidden prompt, asked twice; or stdin).
    #[command(after_help = password::HASH_PASSWORD_HELP)]
    HashPassword,
    /// Print the manual page (generated from these definitions), or write all of them.
    Man(cmd_man::ManArgs),
    /// Load-test a hub (or a peer server) over loopback: idle, fanout, latency, echo, sse, persist, soak.
    ///
    /// Example: `ferry bench --jwt-secret S fanout --subscribers 1000 --duration 5`.
    /// See bench/README.md for the side-by-side harness.
    Bench(ferry_bench::BenchArgs),
    /// HTTP GET, HTTPie-style: `ferry get :8080/test/anything page==2 X-Trace:abc`.
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Get(cmd_http::RequestArgs),
    /// HTTP POST: `ferry post :8080/test/anything name=Ada age:=36` sends JSON.
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Post(cmd_http::RequestArgs),
    /// HTTP PUT (body items as for post).
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Put(cmd_http::RequestArgs),
    /// HTTP PATCH (body items as for post).
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Patch(cmd_http::RequestArgs),
    /// HTTP DELETE.
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Delete(cmd_http::RequestArgs),
    /// HTTP HEAD: prints the status line and headers.
    #[command(after_help = cmd_http::REQUEST_HELP)]
    Head(cmd_http::RequestArgs),
    /// Download a URL to a file with a progress bar; `--resume` continues an interrupted one.
    #[command(after_help = cmd_http::DOWNLOAD_HELP)]
    Download(cmd_http::DownloadArgs),
    /// Sync a folder both ways with a root of a hub, live (conflicts kept as copies).
    #[command(after_help = cmd_sync::SYNC_HELP)]
    Sync(cmd_sync::SyncArgs),
    /// Upload files over tus (resumable) or multipart, with a progress bar per file.
    #[command(after_help = cmd_http::UPLOAD_HELP)]
    Upload(cmd_http::UploadArgs),
    /// WebSocket client, websocat-like: stdin lines → messages, messages → stdout.
    #[command(after_help = cmd_realtime::WS_HELP)]
    Ws(cmd_realtime::WsArgs),
    /// Server-Sent Events client: prints each event's data; reconnects with Last-Event-ID.
    #[command(after_help = cmd_realtime::SSE_HELP)]
    Sse(cmd_realtime::SseArgs),
    /// Subscribe to hub channels and print their publications (recovers after reconnects).
    #[command(after_help = cmd_realtime::SUB_HELP)]
    Sub(cmd_realtime::SubArgs),
    /// Publish to a hub channel through the server API (POST /api/publish).
    #[command(after_help = cmd_realtime::PUB_HELP)]
    Pub(cmd_realtime::PubArgs),
    /// Find hubs on the local network (mDNS and UDP broadcast): name, addresses, port, TLS.
    #[command(after_help = cmd_discover::DISCOVER_HELP)]
    Discover(cmd_discover::DiscoverArgs),
    /// Reverse proxy and load balancer for ferry nodes: policies, health checks, WebSocket.
    #[command(after_help = cmd_proxy::PROXY_HELP)]
    Proxy(cmd_proxy::ProxyArgs),
    /// TCP connect scan of the given targets only: states, service names, banners.
    #[command(after_help = cmd_scan::SCAN_HELP)]
    Scan(cmd_scan::ScanArgs),
    /// Raw TCP: `ferry tcp listen PORT [--echo]`, `ferry tcp connect HOST:PORT`, `--framed`.
    #[command(subcommand, after_help = cmd_net::TCP_HELP)]
    Tcp(cmd_net::TcpCommand),
    /// Raw UDP: `ferry udp listen PORT [--echo]`, `ferry udp send HOST:PORT [MESSAGE]`.
    #[command(subcommand, after_help = cmd_net::UDP_HELP)]
    Udp(cmd_net::UdpCommand),
    /// Live view of a hub's traffic (connections, publications/s, latencies, top channels).
    #[command(after_help = cmd_monitor::MONITOR_HELP, visible_alias = "top")]
    Monitor(cmd_monitor::MonitorArgs),
    /// Print shell completions, e.g. `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Every limit and timeout a peer can reach, with its default (docs/PROTOCOL.md has the
/// same table). Kept beside the flags so `ferry serve --help` teaches them.
const SERVE_LIMITS_HELP: &str = "\
Limits and timeouts ([limits] in ferry.toml, FERRY_LIMITS__NAME=VALUE; defaults):
  max_sockets = 16000              accepted TCP sockets of any kind; more are closed at once
                                   (lowered to fit the open-files limit, which is raised to its maximum)
  max_connections = 15000          WebSocket + SSE connections; more -> 503 CONNECTION_LIMIT
  max_connections_per_ip = 2000
  header_timeout_ms = 10000        silent sockets, slow headers, idle keep-alive connections closed
  request_timeout_ms = 30000       /api and /auth requests -> 408 after it
  write_timeout_ms = 10000         a peer that takes no bytes for this long is dropped (WS, SSE, HTTP)
  max_message_size = 1048576       larger /ws message -> close 1009
  max_body_size = 1048576          larger /api body -> 413
  max_reply_size = 4194304         history pages and recoveries split at it
  send_queue_size = 1024           queued frames per connection; overflow -> close 1013
  send_queue_bytes = 16777216      queued bytes per connection; overflow -> close 1013
  rate_per_second = 100, rate_burst = 200, rate_abuse_strikes = 50
                                   commands (malformed ones too); abuse -> close 1008
  max_subscriptions_per_connection = 128
  auth_timeout_ms = 10000, auth_refresh_grace_ms = 30000
  idle_timeout_ms = 90000, ping_interval_ms = 25000, pong_timeout_ms = 10000
  sse_keep_alive_ms = 15000, shutdown_grace_ms = 5000
  testbed_max_echo_size = 1048576, testbed_max_bytes = 10485760, testbed_max_delay_secs = 10
  max_data_depth = 32              nesting of publication data; deeper -> INVALID_MESSAGE
  login_concurrency = 2, login_queue_size = 16
                                   argon2 checks at once, and waiting; more -> 429
  login_rate_per_second = 20, login_rate_burst = 40
                                   /auth/login attempts, all addresses together
Listener: listen_backlog = 4096 (capped by net.core.somaxconn), reuse_port = false.
TLS ([tls]): cert, key or self_signed; reload_interval_ms = 2000 (and SIGHUP);
  redirect_from = ADDR (plain HTTP -> 308 https); hsts_max_age_secs (a year; none self-signed).
Metrics: GET /metrics (Prometheus text) and /metrics/stream (JSON events), with the API key
  or `Authorization: Bearer METRICS_TOKEN` (metrics_token = \"...\").
History: history = \"sqlite\" (DATA_DIR/history.sqlite3, exclusive to one server), history_durability = \"normal\"
  (a publish is acknowledged after its commit; \"full\" adds an fsync per commit, for power loss).
Namespaces: join_leave = false (N joins cost N(N-1)/2 pushes), history_size = 100, history_ttl_secs = 0.
See the effective values with --print-config.";

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for generated secrets and data [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file [default: ./ferry.toml when it exists].
    #[arg(long, short = 'c', env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// API key for /api/* [default: generated into DATA_DIR/secrets.toml].
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// HS256 secret for client tokens [default: generated into DATA_DIR/secrets.toml].
    #[arg(long, env = "FERRY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Let clients without a token in. They may only use namespaces that also set
    /// allow_anonymous = true in ferry.toml (--dev sets both).
    #[arg(long)]
    allow_anonymous: bool,
    /// Local development: loopback only, anonymous access, any origin, the testbed on, and
    /// a dev token and browser snippet printed at start.
    #[arg(long)]
    dev: bool,
    /// Load and validate the configuration (files, variables, flags, key files), print a
    /// summary and exit.
    #[arg(long)]
    check_config: bool,
    /// Serve the /test/* testbed (echo WebSocket, delays, byte streams for testing
    /// clients). Off by default: it is unauthenticated.
    #[arg(long)]
    testbed: bool,
    /// Serve this directory's files at / (with compression and CORS).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Where channel history lives: sqlite (DATA_DIR/history.sqlite3; survives restarts
    /// and crashes, so clients recover what they missed) or memory (lost on restart)
    /// [default: sqlite].
    #[arg(long, value_name = "KIND", value_parser = ["sqlite", "memory"])]
    history: Option<String>,
    /// Serve https and wss with this PEM certificate chain (with --tls-key). It is reloaded
    /// when the file changes or on SIGHUP; open connections keep theirs.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "FERRY_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "FERRY_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
    /// Serve https and wss with a self-signed certificate generated into DATA_DIR/tls/
    /// (for development); the banner prints its pin for clients' --pin.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// With TLS: also listen here with plain HTTP and redirect every request to https
    /// (e.g. 0.0.0.0:80).
    #[arg(long, value_name = "ADDR")]
    tls_redirect_from: Option<SocketAddr>,
    /// permessage-deflate on /ws and /test/echo: off, or on (accepted when a client offers
    /// it; no context takeover, so an idle connection keeps no compression state)
    /// [default: off].
    #[arg(long, value_name = "MODE", value_parser = ["off", "on"])]
    compression: Option<String>,
    /// Share publications, history and presence with other nodes through Redis:
    /// redis://HOST:PORT (several `ferry serve` on one Redis act as one hub)
    /// [default: memory, this process only].
    #[arg(long, value_name = "URL", env = "FERRY_BROKER")]
    broker: Option<String>,
    /// Print the effective configuration (secrets redacted) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log as JSON lines on stdout instead of text, the banner included.
    #[arg(long)]
    log_json: bool,
    /// Do not announce the hub on the local network (mDNS and broadcast). Default: it is
    /// announced when --listen is not a loopback address.
    #[arg(long, conflicts_with = "announce")]
    no_announce: bool,
    /// Announce even if ferry.toml turns it off (a loopback-only listener never is).
    #[arg(long)]
    announce: bool,
    /// Node name clients see in `ferry discover` and ask for with ferry://NAME
    /// [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Serve and watch this directory for `ferry sync` at /sync/NAME/ (repeatable; NAME
    /// defaults to `default`; operations on channel sync:NAME). Replaces the
    /// [[sync.roots]] of ferry.toml.
    #[arg(long = "sync-root", value_name = "[NAME=]DIR")]
    sync_roots: Vec<String>,
}

impl ServeArgs {
    /// Only the flags that were given, as configuration overrides.
    fn overrides(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        if let Some(v) = &self.listen {
            o.insert("listen".into(), v.to_string().into());
        }
        if let Some(v) = &self.data_dir {
            o.insert("data_dir".into(), v.display().to_string().into());
        }
        if let Some(v) = &self.api_key {
            o.insert("api_key".into(), v.clone().into());
        }
        if let Some(v) = &self.jwt_secret {
            o.insert("jwt_secret".into(), v.clone().into());
        }
        if self.allow_anonymous {
            o.insert("allow_anonymous".into(), true.into());
        }
        if self.testbed {
            o.insert("testbed".into(), true.into());
        }
        if let Some(v) = &self.static_dir {
            o.insert("static_dir".into(), v.display().to_string().into());
        }
        if let Some(v) = &self.history {
            o.insert("history".into(), v.clone().into());
        }
        if let Some(v) = &self.compression {
            o.insert("compression".into(), v.clone().into());
        }
        if let Some(v) = &self.broker {
            o.insert("broker".into(), v.clone().into());
        }
        let mut tls = serde_json::Map::new();
        if let Some(v) = &self.tls_cert {
            tls.insert("cert".into(), v.display().to_string().into());
        }
        if let Some(v) = &self.tls_key {
            tls.insert("key".into(), v.display().to_string().into());
        }
        if self.tls_self_signed {
            tls.insert("self_signed".into(), true.into());
        }
        if let Some(v) = &self.tls_redirect_from {
            tls.insert("redirect_from".into(), v.to_string().into());
        }
        if !tls.is_empty() {
            o.insert("tls".into(), tls.into());
        }
        let mut announce = serde_json::Map::new();
        if self.no_announce || self.announce {
            announce.insert("enabled".into(), self.announce.into());
        }
        if let Some(v) = &self.name {
            announce.insert("name".into(), v.clone().into());
        }
        if !announce.is_empty() {
            o.insert("announce".into(), announce.into());
        }
        if !self.sync_roots.is_empty() {
            let roots: Vec<serde_json::Value> = self
                .sync_roots
                .iter()
                .map(|arg| {
                    let root = ferry_hub::config::SyncRootConfig::from_arg(arg);
                    serde_json::json!({"name": root.name, "path": root.path})
                })
                .collect();
            o.insert("sync".into(), serde_json::json!({ "roots": roots }));
        }
        serde_json::Value::Object(o)
    }
}

/// mimalloc instead of glibc's malloc: `ferry proxy` spends about 10 % less CPU per
/// request and `ferry bench` generates load with less CPU; the hub's fan-out is the same
/// within noise. Its arenas are committed as used (`.cargo/config.toml`), which keeps an
/// idle WebSocket connection at about 3 KiB (ARCHITECTURE.md, "Performance notes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::HashPassword => password::hash_password(),
        Command::Token(args) => cmd_token::run(args),
        Command::Init(args) => cmd_init::init(args),
        Command::History(args) => cmd_api::history(args),
        Command::Presence(args) => cmd_api::presence(args),
        Command::Channels(args) => cmd_api::channels(args),
        Command::Stats(args) => cmd_api::stats(args),
        Command::Disconnect(args) => cmd_api::disconnect(args),
        Command::Send(args) => cmd_api::send(args),
        Command::Man(args) => cmd_man::run(args, Cli::command()),
        Command::Bench(args) => ferry_bench::run(args),
        Command::Get(args) => cmd_http::request(http::Method::GET, args),
        Command::Post(args) => cmd_http::request(http::Method::POST, args),
        Command::Put(args) => cmd_http::request(http::Method::PUT, args),
        Command::Patch(args) => cmd_http::request(http::Method::PATCH, args),
        Command::Delete(args) => cmd_http::request(http::Method::DELETE, args),
        Command::Head(args) => cmd_http::request(http::Method::HEAD, args),
        Command::Download(args) => cmd_http::download(args),
        Command::Upload(args) => cmd_http::upload(args),
        Command::Sync(args) => cmd_sync::sync(args),
        Command::Ws(args) => cmd_realtime::ws(args),
        Command::Sse(args) => cmd_realtime::sse(args),
        Command::Sub(args) => cmd_realtime::sub(args),
        Command::Pub(args) => cmd_realtime::publish(args),
        Command::Discover(args) => cmd_discover::discover(args),
        Command::Proxy(args) => cmd_proxy::proxy(args),
        Command::Scan(args) => cmd_scan::scan(args),
        Command::Tcp(cmd) => cmd_net::tcp(cmd),
        Command::Udp(cmd) => cmd_net::udp(cmd),
        Command::Monitor(args) => cmd_monitor::monitor(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(crate::exit::FAILED)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let json = args.log_json;
    if !args.print_config && !args.check_config {
        serve_dev::init_logging(json);
    }
    let mut config = match Config::load(args.config.as_deref(), args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            serve_dev::say_error(json, &e.to_string());
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    };
    if args.dev
        && let Err(e) = serve_dev::apply_dev(&mut config)
    {
        serve_dev::say_error(json, &e);
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    if args.print_config {
        return cmd_init::print_config(&config);
    }
    if args.check_config {
        return Ok(cmd_init::check_config(&config));
    }
    match ensure_secrets(&mut config) {
        Ok(SecretsOutcome::Generated(path)) => serve_dev::say(
            json,
            &format!(
                "generated an API key and a JWT secret into {} (mode 0600)",
                path.display()
            ),
        ),
        Ok(SecretsOutcome::Loaded(path)) => serve_dev::say(
            json,
            &format!("using the API key and JWT secret in {}", path.display()),
        ),
        Ok(SecretsOutcome::Configured) => {}
        Err(e) => {
            serve_dev::say_error(json, &e.to_string());
            return Ok(ExitCode::from(crate::exit::USAGE));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config_file = args.config.clone();
    runtime.block_on(async move {
        let shown = config.clone();
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                serve_dev::say_error(json, &e.to_string());
                return Ok(ExitCode::from(crate::exit::USAGE));
            }
        };
        let addr = server.local_addr()?;
        let scheme = server.scheme();
        // Scripts and tests read this line to learn the port (with --listen ...:0); with
        // --log-json it is a JSON event with a `url` field.
        if json {
            tracing::info!(url = %format!("{scheme}://{addr}"), "ferry listening on {scheme}://{addr}");
        } else {
            println!("ferry listening on {scheme}://{addr}");
        }
        serve_dev::banner(json, addr, &shown, config_file.as_deref(), &server);
        if args.dev {
            serve_dev::dev_banner(json, addr, &shown);
        }
        server.run(ferry_hub::shutdown_signal()).await?;
        serve_dev::say(json, "ferry stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod serve_help_tests {
    #[test]
    fn serve_help_names_every_limit() {
        let limits =
            serde_json::to_value(ferry_hub::config::Limits::default()).expect("limits serialise");
        let missing: Vec<&String> = limits
            .as_object()
            .expect("an object")
            .keys()
            .filter(|key| !super::SERVE_LIMITS_HELP.contains(key.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "`ferry serve --help` misses {missing:?}"
        );
    }
}
