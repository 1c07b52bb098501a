//! What `ferry serve` says and how: logging (plain text without colour codes when the
//! output is not a terminal; `--log-json`: every line a JSON object on stdout, the banner
//! included), the start banner, the route list of `ferry serve --help`, and `--dev`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ferry_hub::Config;

/// Every route `ferry serve` answers, shown after `ferry serve --help`.
pub const SERVE_HELP: &str = "Routes:
  GET  /ws                      hub WebSocket (subprotocol ferry.json), ?token=JWT
  GET  /sse?channel=NAME        hub Server-Sent Events, ?token=JWT or Authorization: Bearer
  POST /api/publish             server API, `Authorization: apikey KEY`: {channel, data}
  POST /api/broadcast           {channels, data}
  POST /api/history             {channel, since?, limit?, reverse?}   (ferry history)
  POST /api/presence            {channel}                             (ferry presence)
  GET  /api/channels            channels with subscribers              (ferry channels)
  GET  /api/stats               connection and channel counts          (ferry stats)
  POST /api/disconnect          {user|client, reconnect?}              (ferry disconnect)
  POST /api/send                {user|client, data}                    (ferry send)
  POST /auth/login              {user, password} -> token, for [[users]] in ferry.toml
  GET  /health                  liveness: 200 {\"status\":\"ok\"}
  GET  /ready                   readiness: 503 while shutting down
  /test/* (testbed; on with --dev or testbed = true):
       /test/echo (WebSocket echo)   /test/anything[/...]   /test/status/CODE[?retry_after=N]
       /test/delay/SECS   /test/bytes/N[?seed=S] (ETag, Range)   /test/stream/N
       /test/sse[?count=N&interval_ms=M]   /test/cache/KEY   /test/range/N
       /test/flaky/KEY/N
  /    files of --static DIR, when given

--dev: loopback only, anonymous access in every namespace, any origin, the testbed on,
and a dev token plus a browser snippet printed at start.

Exit codes:
  0    stopped by Ctrl-C / SIGTERM after a graceful shutdown (--check-config: valid)
  1    a runtime failure while serving
  2    configuration error: invalid ferry.toml or FERRY_* value, the address is taken,
       --dev with a non-loopback --listen";

/// Whether colour codes may be written to a stream.
fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none()
}

/// Set up logging. Text goes to stderr, with ANSI colours only on a terminal; JSON goes
/// to stdout, where the banner goes too, so that every line is one JSON object.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Never the WebSocket library's frame dumps: they print `auth` tokens.
    let frames = tracing_subscriber::filter::filter_fn(|meta| {
        ferry_hub::redact::may_log(meta.target(), meta.level())
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let result = if json {
        builder
            .json()
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .finish()
            .with(frames)
            .try_init()
    } else {
        builder
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .with_writer(std::io::stderr)
            .finish()
            .with(frames)
            .try_init()
    };
    // Already set (only possible when embedded twice): keep the first.
    let _ = result;
}

/// One line of the banner or a notice: plain text on stderr, or an `info` event (a JSON
/// line on stdout) with `--log-json`.
pub fn say(json: bool, text: &str) {
    if json {
        tracing::info!("{}", text.trim_start());
    } else {
        eprintln!("{text}");
    }
}

/// An error before or instead of serving.
pub fn say_error(json: bool, text: &str) {
    if json {
        tracing::error!("{text}");
    } else {
        eprintln!("error: {text}");
    }
}

/// `--dev`: refuse a non-loopback address, then open everything up for local work.
pub fn apply_dev(config: &mut Config) -> Result<(), String> {
    if !config.listen.ip().is_loopback() {
        return Err(format!(
            "--dev serves without authentication and to any origin, so it listens on loopback only; {} is not a loopback address (use --listen 127.0.0.1:PORT, or drop --dev)",
            config.listen
        ));
    }
    config.allow_anonymous = true;
    config.default_namespace.allow_anonymous = true;
    if !config.sync.roots.is_empty() {
        // The sync roots' built-in namespace opens up like the configured ones.
        config
            .namespaces
            .entry(ferry_hub::config::SYNC_NAMESPACE_NAME.to_string())
            .or_insert_with(|| ferry_hub::config::SYNC_NAMESPACE.clone());
    }
    for ns in config.namespaces.values_mut() {
        ns.allow_anonymous = true;
    }
    config.allowed_origins = vec!["*".to_string()];
    config.testbed = true;
    Ok(())
}

/// The start banner, after the listening line.
pub fn banner(
    json: bool,
    addr: SocketAddr,
    config: &Config,
    config_file: Option<&Path>,
    server: &ferry_hub::Server,
) {
    let http = server.scheme();
    let ws = if server.tls().is_some() { "wss" } else { "ws" };
    if json {
        tracing::info!(
            ws = %format!("{ws}://{addr}/ws"),
            sse = %format!("{http}://{addr}/sse?channel=NAME"),
            api = %format!("{http}://{addr}/api/"),
            "endpoints"
        );
    } else {
        eprintln!(
            "  WebSocket {ws}://{addr}/ws   SSE {http}://{addr}/sse?channel=NAME   API {http}://{addr}/api/"
        );
    }
    if let Some(tls) = server.tls() {
        let store = tls.store();
        let cert = store.files().cert.display();
        let pin = store.pin();
        let mut line = if tls.is_self_signed() {
            format!(
                "  tls: self-signed {cert}, pin {pin} (clients: --pin {pin} or --cacert {cert})"
            )
        } else {
            format!("  tls: {cert}, pin {pin}; reloaded when it changes or on SIGHUP")
        };
        if let Some(redirect) = server.redirect_addr() {
            line.push_str(&format!("; http://{redirect} redirects here"));
        }
        if json {
            tracing::info!(%pin, cert = %cert, "{}", line.trim());
        } else {
            eprintln!("{line}");
        }
    }
    let config_line = match config_file {
        Some(path) => format!("  config: {}", path.display()),
        None if Path::new("ferry.toml").exists() => "  config: ./ferry.toml".to_string(),
        None => "  config: built-in defaults (no ./ferry.toml; `ferry init` writes one with every option)".to_string(),
    };
    say(json, &config_line);
    say(
        json,
        &format!("  {}", crate::cmd_init::history_summary(config)),
    );
    say(
        json,
        &match &config.static_dir {
            Some(dir) => format!("  static files: {} at /", dir.display()),
            None => "  static files: none (--static DIR serves a directory at /)".to_string(),
        },
    );
    say(
        json,
        if config.testbed {
            "  testbed: /test/* on (routes: ferry serve --help)"
        } else {
            "  testbed: off (--dev or testbed = true turns /test/* on)"
        },
    );
    if config.allow_anonymous {
        say(json, "  anonymous access: on");
    }
    for warning in crate::cmd_init::warnings(config) {
        if json {
            tracing::warn!("{warning}");
        } else {
            eprintln!("warning: {warning}");
        }
    }
}

/// `--dev`: a token for user `dev` and a snippet to paste into a browser console.
pub fn dev_banner(json: bool, addr: SocketAddr, config: &Config) {
    let Some(secret) = &config.jwt_secret else {
        return;
    };
    let ttl = Duration::from_secs(24 * 3600);
    let token = match crate::cmd_token::mint(secret.expose(), "dev", ttl, None, None) {
        Ok((token, _)) => token,
        Err(e) => {
            say_error(json, &format!("cannot mint the dev token: {e}"));
            return;
        }
    };
    let ws = if config.tls.enabled() { "wss" } else { "ws" };
    let snippet = format!(
        r#"const ws = new WebSocket("{ws}://{addr}/ws?token={token}", "ferry.json");
ws.onopen = () => ws.send(JSON.stringify({{type: "subscribe", id: "1", payload: {{channel: "chat:lobby"}}}}));
ws.onmessage = (e) => console.log(JSON.parse(e.data));"#
    );
    if json {
        tracing::info!(
            %token,
            %snippet,
            "dev mode: loopback only, anonymous access, any origin, testbed on; not for production"
        );
        return;
    }
    eprintln!(
        "dev mode: loopback only, anonymous access, any origin, testbed on; not for production"
    );
    eprintln!("dev token (user dev, 24 h): {token}");
    eprintln!("paste into the console of any page (any origin is allowed):");
    for line in snippet.lines() {
        eprintln!("  {line}");
    }
    eprintln!("then: ferry pub chat:lobby '{{\"text\":\"hi\"}}'   (or ferry sub chat:lobby)");
}
