//! `ferry init [DIR]`: a commented `ferry.toml` with every option at its default, and
//! `ferry serve --check-config`: load and validate the configuration without serving.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ferry_hub::Config;

/// Every option with its default; `ferry init` writes it (through [`template`]). A test
/// proves it parses to exactly `Config::default()`, so it cannot drift from config.rs
/// silently.
pub const TEMPLATE: &str = r#"# ferry.toml: the hub's configuration, written by `ferry init`.
# Every option is shown at its default; change what you need and delete the rest.
# Order of precedence: built-in defaults < this file < FERRY_* variables < flags.
# Nested keys in variables use `__`: FERRY_LIMITS__MAX_CONNECTIONS=100. List values are
# comma-separated: FERRY_ALLOWED_ORIGINS=http://127.0.0.1:5173,https://app.example.com.
# Check a change with `ferry serve --check-config`; see the result with --print-config.

# Address to listen on. Loopback until you choose to expose the hub.
listen = "127.0.0.1:8080"
# Generated secrets (secrets.toml, mode 0600) and data.
data_dir = "ferry-data"
# API key for /api/* (`Authorization: apikey KEY`) and HS256 secret for client tokens.
# Leave unset: `ferry serve` generates both into DATA_DIR/secrets.toml on first start.
# api_key = "..."
# jwt_secret = "..."
# PEM files with RSA or EC (P-256) public keys for RS256 / ES256 tokens.
jwt_public_keys = []
# Clock skew tolerated on exp/nbf, seconds.
jwt_leeway_secs = 5
# Lifetime of tokens issued by POST /auth/login, seconds.
token_ttl_secs = 3600
# Let connections without a token in. They may only use namespaces that also set
# allow_anonymous = true (below): both switches are needed.
allow_anonymous = false
# Origins allowed for browser WebSocket/SSE and CORS, e.g. ["http://127.0.0.1:5173"].
# ["*"] allows any. Empty: same-origin pages and non-browser clients only.
allowed_origins = []
# Serve the /test/* testbed (echo, anything, status, delay, bytes, stream, sse);
# unauthenticated, so keep it for local work (`ferry serve --testbed` or --dev).
testbed = false
# Serve this directory's files at / (with compression and CORS).
# static_dir = "public"
# Where channel history lives: "sqlite" (DATA_DIR/history.sqlite3: survives restarts and
# crashes, so clients recover what they missed; one server per data dir) or "memory".
history = "sqlite"
# "normal": a publish is acknowledged after its commit (survives a crash of the server);
# "full": an fsync per commit as well (survives a power loss; slower).
history_durability = "normal"

# Users for POST /auth/login; hashes from `ferry hash-password`, never plain passwords.
users = []
# [[users]]
# name = "alice"
# password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."

# Channels without a namespace (`lobby`).
[default_namespace]
# Publications kept per channel for history and recovery (0 keeps none).
history_size = 100
# Seconds a publication stays in history; 0 = until pushed out by history_size.
history_ttl_secs = 0
# Track who is subscribed (presence) and push join/leave events.
presence = true
join_leave = false
# What authenticated users may do (tokens' caps can grant more).
allow_subscribe = true
allow_publish = true
allow_history = true
allow_presence = true
# Anonymous connections (with the top-level allow_anonymous) may subscribe and read history.
allow_anonymous = false

# A namespace: `chat:room1` uses [namespaces.chat]. Unlisted namespaces are refused
# with UNKNOWN_CHANNEL. Options as for default_namespace.
[namespaces.chat]
history_size = 100
history_ttl_secs = 0
presence = true
join_leave = false
allow_subscribe = true
allow_publish = true
allow_history = true
allow_presence = true
allow_anonymous = false

# Limits on everything a peer controls (the error or close code each one produces is in
# docs/PROTOCOL.md).
[limits]
# Open WebSocket + SSE connections in total (more: 503 CONNECTION_LIMIT) and per IP.
max_connections = 15000
max_connections_per_ip = 2000
# Largest WebSocket message on /ws, bytes (more: close 1009).
max_message_size = 1048576
# Largest HTTP body on /api/* and /auth/*, bytes (more: 413).
max_body_size = 1048576
max_subscriptions_per_connection = 128
# Commands per second per connection, burst, and rate-limited commands before close 1008.
rate_per_second = 100
rate_burst = 200
rate_abuse_strikes = 50
# Time to authenticate after connecting, and grace to refresh an expired token, ms.
auth_timeout_ms = 10000
auth_refresh_grace_ms = 30000
# Close connections silent this long (0 = never), ping interval and pong deadline, ms.
idle_timeout_ms = 90000
ping_interval_ms = 25000
pong_timeout_ms = 10000
# Frames queued for one connection before it is closed as too slow (1013).
send_queue_size = 1024
# SSE keep-alive comments, and shutdown drain time, ms.
sse_keep_alive_ms = 15000
shutdown_grace_ms = 5000
# Testbed caps: longest /test/delay (s), largest /test/bytes and /test/echo message (bytes).
testbed_max_delay_secs = 10
testbed_max_bytes = 10485760
testbed_max_echo_size = 1048576
# Socket-level limits and timeouts (each explained in `ferry serve --help`):
"#;

/// The template with every value taken from `Config::default()`, so a changed default
/// cannot leave a stale value in it; a key the template does not mention yet is added at
/// the end of its section.
pub fn template() -> String {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let table_at = |path: &str| -> Option<&toml::Table> {
        if path.is_empty() {
            return Some(&defaults);
        }
        path.split('.')
            .try_fold(&defaults, |t, part| t.get(part).and_then(|v| v.as_table()))
    };
    let mut out = String::new();
    let mut section = String::new();
    let mut written: Vec<String> = Vec::new();
    let flush = |section: &str, written: &[String], out: &mut String| {
        if let Some(table) = table_at(section) {
            for (key, value) in table {
                if !value.is_table() && !written.iter().any(|w| w == key) {
                    out.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
    };
    for line in TEMPLATE.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            flush(&section, &written, &mut out);
            section = trimmed.trim_matches(['[', ']']).to_string();
            written.clear();
            out.push_str(line);
        } else if let Some((key, _)) = line.split_once(" = ").filter(|_| !line.starts_with('#')) {
            match table_at(&section).and_then(|t| t.get(key)) {
                Some(value) => out.push_str(&format!("{key} = {value}")),
                None => out.push_str(line),
            }
            written.push(key.to_string());
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    flush(&section, &written, &mut out);
    out
}

/// `ferry init [DIR]`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where to write ferry.toml [default: the current directory].
    dir: Option<PathBuf>,
    /// Overwrite an existing ferry.toml.
    #[arg(long)]
    force: bool,
}

/// Shown after `ferry init --help`.
pub const INIT_HELP: &str = "Exit codes:
  0    written
  1    the file could not be written (I/O)
  2    ferry.toml already exists (use --force)";

/// `ferry init [DIR]`.
pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("ferry.toml");
    if path.exists() && !args.force {
        eprintln!("error: USAGE: {} already exists", path.display());
        eprintln!("hint: use --force to overwrite it, or name another directory");
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, template())) {
        eprintln!("error: IO_ERROR: cannot write {}: {e}", path.display());
        return Ok(ExitCode::from(crate::exit::FAILED));
    }
    println!("wrote {}", path.display());
    eprintln!(
        "every option is there at its default; check edits with `ferry serve --check-config`{}",
        if dir == std::path::Path::new(".") {
            String::new()
        } else {
            format!(" --config {}", path.display())
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// What is odd in a configuration that loads: warnings printed by `--check-config` and at
/// start.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let anonymous_somewhere = config.default_namespace.allow_anonymous
        || config.namespaces.values().any(|n| n.allow_anonymous);
    if config.allow_anonymous && !anonymous_somewhere {
        out.push(
            "allow_anonymous is on, but no namespace sets allow_anonymous = true, so anonymous connections can subscribe to nothing; add it to [default_namespace] or [namespaces.NAME]".into(),
        );
    }
    if !config.listen.ip().is_loopback() && config.testbed {
        out.push(format!(
            "the /test/* testbed is on while listening on {}; turn it off with testbed = false",
            config.listen
        ));
    }
    if config.allowed_origins.iter().any(|o| o == "*") && !config.listen.ip().is_loopback() {
        out.push("allowed_origins = [\"*\"] lets any web page connect".into());
    }
    for origin in &config.allowed_origins {
        if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
            out.push(format!(
                "allowed origin `{origin}` never matches: origins look like http://host:port"
            ));
        }
    }
    out
}

/// Where history lives, for people: `history in ferry-data/history.sqlite3`.
pub fn history_summary(config: &Config) -> String {
    if config.broker.trim() != "memory" {
        return format!(
            "history, presence and fan-out in Redis ({}), shared with every node on it",
            ferry_hub::config::redact_credentials(config.broker.trim())
        );
    }
    match config.history {
        ferry_hub::config::HistoryBackend::Sqlite => format!(
            "history in {}",
            config
                .data_dir
                .join(ferry_hub::store::sqlite::FILE_NAME)
                .display()
        ),
        ferry_hub::config::HistoryBackend::Memory => {
            "history in memory (lost on restart; --history sqlite keeps it)".to_string()
        }
    }
}

/// `--print-config`: the effective configuration (file, environment and flags merged) as
/// TOML on stdout.
pub fn print_config(config: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        toml::to_string_pretty(config).context("rendering the configuration")?
    );
    Ok(ExitCode::SUCCESS)
}

/// `ferry serve --check-config`: everything `serve` would check before binding.
pub fn check_config(config: &Config) -> ExitCode {
    if let Err(e) = ferry_hub::auth::Authenticator::from_config(config) {
        eprintln!("error: CONFIG: {e}");
        return ExitCode::from(crate::exit::USAGE);
    }
    if let Some(dir) = &config.static_dir
        && !dir.is_dir()
    {
        eprintln!(
            "error: CONFIG: static_dir {} is not a directory",
            dir.display()
        );
        return ExitCode::from(crate::exit::USAGE);
    }
    if let Err(e) = config.sync.check() {
        eprintln!("error: CONFIG: {e}");
        return ExitCode::from(crate::exit::USAGE);
    }
    for root in &config.sync.roots {
        let channel = root.channel_name();
        let namespace = ferry_hub::channel::ChannelName::parse(&channel)
            .map(|c| c.namespace.map(str::to_string));
        match namespace {
            Ok(ns) if config.namespace(ns.as_deref()).is_some() => {}
            _ => {
                eprintln!(
                    "error: CONFIG: sync root {:?}: channel {channel:?} is not a channel of a configured namespace",
                    root.name
                );
                return ExitCode::from(crate::exit::USAGE);
            }
        }
    }
    let tls = match ferry_hub::tls::Tls::check(config) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("error: CONFIG: {e}");
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    for warning in warnings(config) {
        eprintln!("warning: {warning}");
    }
    let history = history_summary(config);
    println!(
        "configuration OK: listen {}, data in {}, {history}, namespaces: {}",
        config.listen,
        config.data_dir.display(),
        std::iter::once("(default)".to_string())
            .chain(config.namespaces.keys().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{tls}");
    for root in &config.sync.roots {
        println!(
            "sync root {}: {} on channel {}",
            root.name,
            root.path.display(),
            root.channel_name()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_exactly_the_defaults() {
        let parsed: Config = toml::from_str(&template()).expect("the template parses");
        assert_eq!(
            toml::to_string(&parsed).expect("serialize"),
            toml::to_string(&Config::default()).expect("serialize")
        );
    }
}
