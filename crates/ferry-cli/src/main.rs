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

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use ferry_hub::secrets::{SecretsOutcome, ensure_secrets};
use ferry_hub::{Config, Server};

mod bench;
mod cmd_http;
mod cmd_monitor;
mod cmd_net;
mod cmd_proxy;
mod cmd_realtime;
mod cmd_scan;

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
    Serve(ServeArgs),
    /// Hash a password for `[[users]]` in ferry.toml (reads it from stdin, or prompts).
    HashPassword,
    /// Load-test a hub (or a peer server) over loopback: idle, fanout, latency, echo, sse.
    ///
    /// Example: `ferry bench --jwt-secret S fanout --subscribers 1000 --duration 5`.
    /// See bench/README.md for the side-by-side harness.
    Bench(bench::BenchArgs),
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
    /// Live view of a hub's traffic (connections, publications/s, top channels).
    #[command(after_help = cmd_monitor::MONITOR_HELP)]
    Monitor(cmd_monitor::MonitorArgs),
    /// Print shell completions, e.g. `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

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
    /// Let clients without a token in where a namespace allows anonymous access.
    #[arg(long)]
    allow_anonymous: bool,
    /// Do not serve the /test/* testbed.
    #[arg(long)]
    no_testbed: bool,
    /// Serve this directory's files at / (with compression and CORS).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
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
        if self.no_testbed {
            o.insert("testbed".into(), false.into());
        }
        if let Some(v) = &self.static_dir {
            o.insert("static_dir".into(), v.display().to_string().into());
        }
        serde_json::Value::Object(o)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::HashPassword => hash_password(),
        Command::Bench(args) => bench::run(args),
        Command::Get(args) => cmd_http::request(http::Method::GET, args),
        Command::Post(args) => cmd_http::request(http::Method::POST, args),
        Command::Put(args) => cmd_http::request(http::Method::PUT, args),
        Command::Patch(args) => cmd_http::request(http::Method::PATCH, args),
        Command::Delete(args) => cmd_http::request(http::Method::DELETE, args),
        Command::Head(args) => cmd_http::request(http::Method::HEAD, args),
        Command::Download(args) => cmd_http::download(args),
        Command::Ws(args) => cmd_realtime::ws(args),
        Command::Sse(args) => cmd_realtime::sse(args),
        Command::Sub(args) => cmd_realtime::sub(args),
        Command::Pub(args) => cmd_realtime::publish(args),
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
            ExitCode::from(1)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(args.config.as_deref(), args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("rendering the configuration")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(args.log_json);
    match ensure_secrets(&mut config) {
        Ok(SecretsOutcome::Generated(path)) => {
            eprintln!(
                "generated an API key and a JWT secret into {} (mode 0600)",
                path.display()
            )
        }
        Ok(SecretsOutcome::Loaded(path)) => {
            eprintln!("using the API key and JWT secret in {}", path.display())
        }
        Ok(SecretsOutcome::Configured) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let addr = server.local_addr()?;
        // Scripts and tests read this line to learn the port (with --listen ...:0).
        println!("ferry listening on http://{addr}");
        eprintln!(
            "  WebSocket ws://{addr}/ws   SSE http://{addr}/sse?channel=NAME   API http://{addr}/api/"
        );
        server.run(ferry_hub::shutdown_signal()).await?;
        eprintln!("ferry stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn hash_password() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is shown; pipe it in to hide it): ");
    }
    let mut password = String::new();
    if stdin.is_terminal() {
        stdin
            .read_line(&mut password)
            .context("reading the password")?;
    } else {
        stdin
            .lock()
            .read_to_string(&mut password)
            .context("reading the password")?;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password; pipe one in: echo -n 'secret' | ferry hash-password");
        return Ok(ExitCode::from(2));
    }
    let hash = ferry_hub::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
