//! `ferry ws`, `ferry sse`, `ferry sub` and `ferry pub`: websocat-like realtime commands
//! over `ferry_client::{ws, event_source, hub}`. Argument parsing and output only; the
//! work is the library's.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use clap::Args;
use ferry_client::event_source::{self, EventSource};
use ferry_client::hub::{HubClient, HubError, HubEvent, SubscriptionEvent};
use ferry_client::ws::{self, ConnectionState, Message, MessageKind, StateStream, WebSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::urls::{Family, complete};

/// The common tail of every realtime command's exit codes.
macro_rules! exit_tail {
    () => {
        "  4    TIMEOUT: the server did not answer in time
  130  interrupted (Ctrl-C)
Errors print `error: CODE: message` and a `hint:` line on stderr."
    };
}

/// Shown after `ferry ws --help`.
pub const WS_HELP: &str = concat!(
    "Each line of standard input is sent as one message (binary with --binary); each
message received is written to standard output: text as a line, binary as raw bytes
(--json: one {kind, data, timestamp} object per line, binary data in base64). End of
input sends a close (1000) after everything queued, and waits for the server's answer.
State changes go to standard error.

Examples:
  echo hello | ferry ws ws://127.0.0.1:8080/test/echo
  ferry ws ws://127.0.0.1:8080/ws --subprotocol ferry.json --token \"$FERRY_TOKEN\"
  ferry ws wss://example.invalid/feed -H 'Authorization: Bearer abc' --reconnect

Exit codes:
  0    input ended, --count reached, or the server closed normally (1000)
  1    CONNECTION_ERROR, TLS_ERROR, PROTOCOL_ERROR, CONNECTION_LOST, QUEUE_FULL, an
       abnormal close
  2    an invalid URL or header
  3    the server refused: HTTP_STATUS on the upgrade, a policy close (1008)
",
    exit_tail!()
);

/// Shown after `ferry sse --help`.
pub const SSE_HELP: &str = concat!(
    "Prints the data of each event (one line per data line; --json: one {event, id, data}
object per line). Reconnects as browsers do, honouring `retry:` and sending
Last-Event-ID, unless --no-reconnect. State changes go to standard error.

Examples:
  ferry sse 'http://127.0.0.1:8080/test/sse?count=5' --event tick
  ferry sse 'http://127.0.0.1:8080/sse?channel=chat:lobby' --token \"$FERRY_TOKEN\" --json

Exit codes:
  0    --count reached, or the stream ended with --no-reconnect
  1    CONNECTION_ERROR, TLS_ERROR, PROTOCOL_ERROR (not an event stream)
  2    an invalid URL or header
  3    the server refused: HTTP_STATUS, with the server's own code and message
",
    exit_tail!()
);

/// Shown after `ferry sub --help`.
pub const SUB_HELP: &str = concat!(
    "Prints each publication as `[CHANNEL #OFFSET USER] DATA` (--json: the publication
object, one per line). Reconnects with backoff and recovers what was published
meanwhile; `subscribed`, `recovered` and state lines go to standard error.

Examples:
  ferry sub chat:lobby --token \"$FERRY_TOKEN\"
  FERRY_TOKEN=... ferry sub chat:a chat:b --url ws://10.0.0.5:8080 --json

Exit codes:
  0    --count reached
  1    CONNECTION_ERROR, CONNECTION_LOST, an abnormal close
  2    an invalid URL
  3    the server refused: AUTH_REQUIRED, AUTH_FAILED (see `ferry token check`),
       AUTH_EXPIRED, PERMISSION_DENIED, UNKNOWN_CHANNEL, a policy close (1008)
",
    exit_tail!()
);

/// Shown after `ferry pub --help`.
pub const PUB_HELP: &str = concat!(
    "DATA must be JSON ('{\"text\":\"hi\"}', 42, true, '\"hi\"'); --raw sends it as a JSON
string instead. Prints `published to CHANNEL at offset N` (--json: {channel, offset,
epoch}). Uses the server API (POST /api/publish) with the API key: --api-key,
FERRY_API_KEY, ferry.toml, or DATA_DIR/secrets.toml next to the hub.

Examples:
  ferry pub chat:lobby '{\"text\":\"hi\"}'
  ferry pub chat:lobby hello --raw --url :8080

Exit codes:
  0    published
  1    CONNECTION_ERROR: no server at --url
  2    DATA is not JSON (INVALID_JSON; use --raw for text), no API key found, a bad URL
  3    the server refused: AUTH_FAILED (wrong API key), UNKNOWN_CHANNEL, MESSAGE_TOO_BIG
",
    exit_tail!()
);

/// `ferry ws URL`.
#[derive(Args, Debug)]
pub struct WsArgs {
    /// ws:// or wss:// URL.
    url: String,
    /// Send each input line as a binary message (received binary is always written raw).
    #[arg(long)]
    binary: bool,
    /// Extra header for the upgrade request (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Offer a subprotocol (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "PROTOCOL")]
    subprotocols: Vec<String>,
    /// Token sent as ?token= on every connection attempt.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Reconnect with backoff when the connection drops (input lines wait in the queue).
    #[arg(long)]
    reconnect: bool,
    /// Exit after receiving this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per received message.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// `ferry sse URL`.
#[derive(Args, Debug)]
pub struct SseArgs {
    /// http:// or https:// URL of an event stream.
    url: String,
    /// Only events of this type (repeatable).
    #[arg(long = "event", value_name = "TYPE")]
    events: Vec<String>,
    /// Extra request header (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Sent as `Authorization: Bearer TOKEN`.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Resume after this event ID (sent as Last-Event-ID).
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,
    /// Exit when the stream ends instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per event.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// `ferry sub CHANNEL...`.
#[derive(Args, Debug)]
pub struct SubArgs {
    /// Channels to subscribe to, e.g. chat:lobby.
    #[arg(required = true, value_name = "CHANNEL")]
    channels: Vec<String>,
    /// The hub (the /ws path is added when the URL has none; `:8080` and `http://` forms
    /// are accepted).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Client token (JWT).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Exit after this many publications.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per publication.
    #[arg(long)]
    json: bool,
    /// The encoding to speak: json (ferry.json) or msgpack (ferry.msgpack, MessagePack
    /// in binary frames). Publications arrive whatever encoding they were made in;
    /// MessagePack binary values print as base64.
    #[arg(long, value_enum, default_value_t = Proto::Json)]
    proto: Proto,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// The hub protocol's encodings, as `--proto` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// `ferry.json`: JSON text frames.
    Json,
    /// `ferry.msgpack`: MessagePack binary frames.
    Msgpack,
}

impl Proto {
    pub(crate) fn codec(self) -> ferry_client::hub::Codec {
        match self {
            Proto::Json => ferry_client::hub::Codec::Json,
            Proto::Msgpack => ferry_client::hub::Codec::MsgPack,
        }
    }
}

/// `ferry pub CHANNEL DATA`.
#[derive(Args, Debug)]
pub struct PubArgs {
    /// The channel, e.g. chat:lobby.
    channel: String,
    /// The data: JSON (text with --raw).
    data: String,
    /// Send DATA as a JSON string instead of parsing it as JSON.
    #[arg(long)]
    raw: bool,
    /// Publish over the WebSocket protocol in this encoding, as the user of --token,
    /// instead of through the HTTP API with the API key. With msgpack, DATA (JSON) is
    /// sent as the equivalent MessagePack value.
    #[arg(long, value_enum, value_name = "ENCODING")]
    proto: Option<Proto>,
    /// Client token (JWT) for --proto.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true, requires = "proto")]
    token: Option<String>,
    #[command(flatten)]
    api: crate::cmd_api::ApiArgs,
}

/// A failure with its exit code and a suggestion (shared with the server API commands).
pub(crate) struct Failure {
    pub(crate) exit: u8,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            exit: crate::exit::USAGE,
            code: "USAGE".into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// For commands that use the API key: `AUTH_*` is about the key, not a token.
    pub(crate) fn for_api_key(mut self) -> Failure {
        if self.code.starts_with("AUTH_") || self.message.contains(": AUTH_") {
            self.hint = API_KEY_HINT.into();
        }
        self
    }

    pub(crate) fn from_code(code: &str, message: String) -> Failure {
        let exit = match code {
            "INVALID_URL" => crate::exit::USAGE,
            "TIMEOUT" => crate::exit::TIMEOUT,
            "CONNECTION_ERROR" | "TLS_ERROR" | "PROTOCOL_ERROR" | "CONNECTION_LOST"
            | "QUEUE_FULL" | "CLOSED" | "DECODE_ERROR" | "INTERNAL_ERROR" => crate::exit::FAILED,
            // HTTP_STATUS and every hub error code: the server said no.
            _ => crate::exit::REFUSED,
        };
        // An HTTP refusal that carries the hub's `{code, message}`: the hint of that code.
        let hint = match code {
            "HTTP_STATUS" => server_code_in(&message)
                .map(hint_for)
                .unwrap_or(hint_for(code)),
            // reqwest reports a refused certificate as a connection error.
            _ if message.contains("certificate") => hint_for("TLS_ERROR"),
            _ => hint_for(code),
        };
        Failure {
            exit,
            code: code.to_string(),
            hint: hint.to_string(),
            message,
        }
    }

    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("error: {}: {}", self.code, self.message);
        if !self.hint.is_empty() {
            eprintln!("hint: {}", self.hint);
        }
        ExitCode::from(self.exit)
    }
}

impl From<crate::tls_args::BadTlsFlag> for Failure {
    fn from(e: crate::tls_args::BadTlsFlag) -> Failure {
        Failure::usage(e.0, crate::tls_args::HINT)
    }
}

impl From<ws::Error> for Failure {
    fn from(e: ws::Error) -> Failure {
        Failure::from_code(e.code(), e.message().to_string())
    }
}

impl From<HubError> for Failure {
    fn from(e: HubError) -> Failure {
        let message = match &e {
            HubError::Server { message, .. } => message.clone(),
            HubError::Transport(t) => t.message().to_string(),
            HubError::Decode(m) => m.clone(),
        };
        Failure::from_code(e.code(), message)
    }
}

/// The hint for a refused API key.
pub(crate) const API_KEY_HINT: &str = "check the API key: it is api_key in the server's ferry-data/secrets.toml (read automatically when you run ferry next to ferry-data, or give --data-dir), or pass --api-key KEY / FERRY_API_KEY";

/// The hub error code inside a transport message such as
/// `URL answered HTTP 400 Bad Request: INVALID_MESSAGE: ...`.
fn server_code_in(message: &str) -> Option<&'static str> {
    const CODES: &[&str] = &[
        "AUTH_REQUIRED",
        "AUTH_FAILED",
        "AUTH_EXPIRED",
        "PERMISSION_DENIED",
        "INVALID_MESSAGE",
        "UNKNOWN_CHANNEL",
        "CONNECTION_LIMIT",
        "RATE_LIMIT_EXCEEDED",
        "MESSAGE_TOO_BIG",
    ];
    CODES
        .iter()
        .find(|c| message.contains(&format!(": {c}: ")))
        .copied()
}

fn hint_for(code: &str) -> &'static str {
    match code {
        "INVALID_URL" => {
            "URLs look like ws://127.0.0.1:8080/ws (ws, sse: http://127.0.0.1:8080/sse?channel=NAME)"
        }
        "CONNECTION_ERROR" => {
            "is the server running? start one with `ferry serve`, or check the host and port"
        }
        "TLS_ERROR" => {
            "the server's certificate is not trusted here: --cacert FILE trusts its CA (for `ferry serve --tls-self-signed`: DATA_DIR/tls/self-signed-cert.pem), and a --pin must match its key"
        }
        "HTTP_STATUS" => "the server refused the request: check the path and the credentials",
        "PROTOCOL_ERROR" => "the peer broke the protocol: is this the right endpoint?",
        "TIMEOUT" => "the server did not answer in time: check that it is reachable",
        "QUEUE_FULL" => {
            "the connection is down or too slow for the input; try --reconnect or slow down"
        }
        "CONNECTION_LOST" => "the connection dropped; add --reconnect to keep going",
        "AUTH_REQUIRED" => {
            "pass a token with --token or FERRY_TOKEN (mint one with `ferry token --user NAME`)"
        }
        "AUTH_FAILED" => {
            "the server refused the token: `ferry token check TOKEN` says why; mint a new one with `ferry token --user NAME`"
        }
        "AUTH_EXPIRED" => "the token expired: mint a fresh one with `ferry token --user NAME`",
        "PERMISSION_DENIED" => {
            "the server's message says which permission is missing; grants go in the token (`ferry token --caps`) or the namespace options in ferry.toml"
        }
        "UNKNOWN_CHANNEL" => {
            "add the namespace to ferry.toml ([namespaces.NAME]); `ferry serve --print-config` lists those configured"
        }
        "INVALID_MESSAGE" => "the server could not use the request: its message says what to fix",
        _ => "",
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::from_code("INTERNAL_ERROR", format!("starting the async runtime: {e}"))
        })
}

/// Run a command on its own runtime. The runtime is shut down without waiting for
/// blocking tasks: a read of standard input may be stuck in one until the next line.
pub(crate) fn run<F: std::future::Future<Output = Result<ExitCode, Failure>>>(
    command: F,
) -> anyhow::Result<ExitCode> {
    let result = match runtime() {
        Ok(rt) => {
            let result = rt.block_on(command);
            rt.shutdown_background();
            result
        }
        Err(f) => Err(f),
    };
    Ok(match result {
        Ok(code) => code,
        Err(f) => f.report(),
    })
}

fn split_header(raw: &str) -> Result<(&str, &str), Failure> {
    raw.split_once(':')
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| {
            Failure::usage(
                format!("header `{raw}` is not NAME:VALUE"),
                "e.g. -H 'Authorization: Bearer abc'",
            )
        })
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Write to stdout; a closed pipe (e.g. `| head`) ends the command quietly.
fn emit(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).is_ok()
}

fn describe_state(state: ConnectionState) -> String {
    match state {
        ConnectionState::Connecting => "connecting".into(),
        ConnectionState::Open => "open".into(),
        ConnectionState::Closing => "closing".into(),
        ConnectionState::Closed => "closed".into(),
        ConnectionState::Reconnecting { attempt, delay } => {
            format!(
                "reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            )
        }
    }
}

/// Report state changes on stderr until the stream ends.
fn log_states(mut states: StateStream) {
    tokio::spawn(async move {
        while let Some(state) = states.next().await {
            eprintln!("ferry: {}", describe_state(state));
        }
    });
}

/// `ferry ws URL`.
pub fn ws(args: WsArgs) -> anyhow::Result<ExitCode> {
    run(run_ws(args))
}

async fn run_ws(args: WsArgs) -> Result<ExitCode, Failure> {
    let url = complete(&args.url, Family::Ws);
    let mut builder = WebSocket::builder(&url).queue_capacity(1 << 16);
    if let Some(tls) = args.tls.websocket_config()? {
        builder = builder.tls_config(tls);
    }
    for h in &args.headers {
        let (name, value) = split_header(h)?;
        builder = builder.header(name, value);
    }
    for p in &args.subprotocols {
        builder = builder.subprotocol(p);
    }
    if let Some(token) = &args.token {
        builder = builder.token(token);
    }
    if !args.reconnect {
        builder = builder.no_reconnect();
    }
    let ws = builder.connect().await?;
    eprintln!(
        "ferry: connected to {}{}",
        url,
        ws.protocol()
            .map(|p| format!(" (subprotocol {p})"))
            .unwrap_or_default()
    );
    log_states(ws.states());

    // Input lines arrive through a channel so that reading stdin never blocks the loop.
    let (lines_tx, mut lines) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if lines_tx.send(line).await.is_err() {
                break;
            }
        }
    });

    let mut input_open = true;
    let mut closing = false;
    let mut received = 0u64;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) => {
                    let message = if args.binary { Message::binary(line.into_bytes()) } else { Message::text(line) };
                    ws.send(message)?;
                }
                None => {
                    // End of input: close after what is queued; keep printing until closed.
                    input_open = false;
                    closing = true;
                    let ws = ws.clone();
                    tokio::spawn(async move { ws.close().await });
                }
            },
            message = ws.recv() => {
                let Some(message) = message else { break };
                if !print_message(&message, args.json) {
                    return Ok(ExitCode::SUCCESS);
                }
                received += 1;
                if args.count.is_some_and(|n| received >= n) {
                    ws.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ = &mut interrupt => {
                ws.close().await;
                return Ok(ExitCode::from(crate::exit::INTERRUPTED));
            }
        }
    }
    if closing {
        return Ok(ExitCode::SUCCESS);
    }
    // Closed by the server or lost for good.
    match (ws.close_info(), ws.last_error()) {
        (Some(close), _) if close.code == 1000 => {
            eprintln!("ferry: the server closed the connection (1000)");
            Ok(ExitCode::SUCCESS)
        }
        (Some(close), _) if close.code == 1008 => Err(Failure {
            exit: crate::exit::REFUSED,
            code: "CLOSED".into(),
            message: format!(
                "the server closed the connection with 1008 (policy): {}",
                close.reason
            ),
            hint: "the server refused this client (authentication, permissions or abuse limits)"
                .into(),
        }),
        (_, Some(error)) => Err(error.into()),
        (Some(close), None) => Err(Failure {
            exit: crate::exit::FAILED,
            code: "CLOSED".into(),
            message: format!(
                "the server closed the connection with {}: {}",
                close.code, close.reason
            ),
            hint: "add --reconnect to reconnect automatically".into(),
        }),
        (None, None) => Ok(ExitCode::SUCCESS),
    }
}

fn print_message(message: &Message, json: bool) -> bool {
    if json {
        let (kind, data) = match message.kind() {
            MessageKind::Text => (
                "text",
                Value::String(message.as_text().unwrap_or_default().to_string()),
            ),
            MessageKind::Binary => (
                "binary",
                Value::String(base64::engine::general_purpose::STANDARD.encode(message.data())),
            ),
        };
        let line = json!({"kind": kind, "data": data, "timestamp": millis(message.timestamp())});
        return emit(format!("{line}\n").as_bytes());
    }
    match message.kind() {
        MessageKind::Text => {
            let mut line = message.data().to_vec();
            line.push(b'\n');
            emit(&line)
        }
        MessageKind::Binary => emit(message.data()),
    }
}

/// `ferry sse URL`.
pub fn sse(args: SseArgs) -> anyhow::Result<ExitCode> {
    run(run_sse(args))
}

async fn run_sse(args: SseArgs) -> Result<ExitCode, Failure> {
    let mut builder = EventSource::builder(&complete(&args.url, Family::Http));
    if let Some(tls) = args.tls.websocket_config()? {
        builder = builder.tls_config(tls);
    }
    for h in &args.headers {
        let (name, value) = split_header(h)?;
        builder = builder.header(name, value);
    }
    for e in &args.events {
        builder = builder.event(e);
    }
    if let Some(token) = &args.token {
        builder = builder.bearer_auth(token);
    }
    if let Some(id) = &args.last_event_id {
        builder = builder.last_event_id(id);
    }
    if args.no_reconnect {
        builder = builder.no_reconnect();
    }
    let es = builder.connect().await?;
    log_states(es.states());
    let mut received = 0u64;
    let mut last_error = None;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let event = tokio::select! {
            event = es.recv() => event,
            _ = &mut interrupt => {
                es.close().await;
                return Ok(ExitCode::from(crate::exit::INTERRUPTED));
            }
        };
        match event {
            None => break,
            Some(event_source::Event::Open) => {}
            Some(event_source::Event::Error(e)) => {
                eprintln!("ferry: {e}");
                last_error = Some(e);
            }
            Some(event_source::Event::Message(m)) => {
                let text = if args.json {
                    format!(
                        "{}\n",
                        json!({"event": m.event, "id": m.id, "data": m.data})
                    )
                } else {
                    format!("{}\n", m.data)
                };
                if !emit(text.as_bytes()) {
                    return Ok(ExitCode::SUCCESS);
                }
                received += 1;
                if args.count.is_some_and(|n| received >= n) {
                    es.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    // Closed for good: after --no-reconnect a stream that simply ended is a success.
    match last_error {
        Some(e) if !(args.no_reconnect && e.kind() == ws::ErrorKind::ConnectionLost) => {
            Err(e.into())
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The hub URL with `/ws` added when it names no path.
fn hub_ws_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let after_scheme = trimmed
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(trimmed);
    if after_scheme.contains('/') {
        url.to_string()
    } else {
        format!("{trimmed}/ws")
    }
}

/// Wait for the server's verdict on the token: `auth_success`, or the `auth_error`
/// with its code and reason.
async fn wait_for_auth(hub: &HubClient) -> Result<(), Failure> {
    let verdict = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = hub.next_event().await {
            match event {
                HubEvent::AuthSuccess { user, .. } => {
                    eprintln!("ferry: authenticated as {user}");
                    return Ok(());
                }
                HubEvent::AuthError(e) => return Err(Failure::from(e)),
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    verdict.unwrap_or_else(|_| {
        Err(Failure::from_code(
            "TIMEOUT",
            "the server did not answer the token within 30 s".into(),
        ))
    })
}

/// `ferry sub CHANNEL...`.
pub fn sub(args: SubArgs) -> anyhow::Result<ExitCode> {
    run(run_sub(args))
}

/// Connect a `HubClient` to the hub at `url` (the /ws path added when missing) speaking
/// `proto`; with a token, wait for the server's verdict on it, so that AUTH_FAILED and why
/// is reported rather than a later AUTH_REQUIRED.
async fn connect_hub(
    url: &str,
    proto: Proto,
    tls: &crate::tls_args::TlsArgs,
    token: Option<&str>,
) -> Result<HubClient, Failure> {
    let url = hub_ws_url(&complete(url, Family::Ws));
    let mut builder = HubClient::builder(&url).codec(proto.codec());
    if let Some(tls) = tls.websocket_config()? {
        builder = builder.tls_config(tls);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }
    let hub = builder.connect().await?;
    if token.is_some() {
        wait_for_auth(&hub).await?;
    }
    Ok(hub)
}

async fn run_sub(args: SubArgs) -> Result<ExitCode, Failure> {
    let hub = connect_hub(&args.url, args.proto, &args.tls, args.token.as_deref()).await?;
    log_states(hub.states());
    let (events_tx, mut events) = mpsc::unbounded_channel::<(String, SubscriptionEvent)>();
    for channel in &args.channels {
        let mut subscription = hub.subscribe(channel).await?;
        let tx = events_tx.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            while let Some(event) = subscription.next().await {
                if tx.send((channel.clone(), event)).is_err() {
                    break;
                }
            }
        });
    }
    drop(events_tx);
    let mut received = 0u64;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = &mut interrupt => {
                hub.close().await;
                return Ok(ExitCode::from(crate::exit::INTERRUPTED));
            }
        };
        let Some((channel, event)) = event else { break };
        match event {
            SubscriptionEvent::Subscribed { position } => {
                eprintln!(
                    "ferry: subscribed to {channel} at offset {} (epoch {})",
                    position.offset, position.epoch
                );
            }
            SubscriptionEvent::Recovered {
                recovered,
                missed,
                position,
            } => {
                if recovered {
                    eprintln!(
                        "ferry: resubscribed to {channel}, recovering {missed} missed publication(s)"
                    );
                } else {
                    eprintln!(
                        "ferry: resubscribed to {channel} at offset {}, but publications missed while disconnected are lost",
                        position.offset
                    );
                }
            }
            SubscriptionEvent::Join(info) => eprintln!("ferry: {channel}: {} joined", info.user),
            SubscriptionEvent::Leave(info) => eprintln!("ferry: {channel}: {} left", info.user),
            SubscriptionEvent::Error(e) => eprintln!("ferry: {channel}: {e}"),
            SubscriptionEvent::Publication(p) => {
                let text = if args.json {
                    format!("{}\n", serde_json::to_string(&p).unwrap_or_default())
                } else {
                    let who = p
                        .info
                        .as_ref()
                        .map(|i| format!(" {}", i.user))
                        .unwrap_or_default();
                    format!(
                        "[{} #{}{who}] {}\n",
                        p.channel,
                        p.offset,
                        p.data.to_json().get()
                    )
                };
                if !emit(text.as_bytes()) {
                    return Ok(ExitCode::SUCCESS);
                }
                received += 1;
                if args.count.is_some_and(|n| received >= n) {
                    hub.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    // Every subscription ended: the connection is closed for good.
    let error = hub
        .websocket()
        .last_error()
        .map(Failure::from)
        .unwrap_or_else(|| {
            let close = hub.websocket().close_info();
            Failure {
                exit: if close.as_ref().is_some_and(|c| c.code == 1008) {
                    crate::exit::REFUSED
                } else {
                    crate::exit::FAILED
                },
                code: "CLOSED".into(),
                message: match close {
                    Some(c) => format!(
                        "the server closed the connection with {}: {}",
                        c.code, c.reason
                    ),
                    None => "the connection closed".into(),
                },
                hint: String::new(),
            }
        });
    Err(error)
}

/// `ferry pub CHANNEL DATA`.
pub fn publish(args: PubArgs) -> anyhow::Result<ExitCode> {
    run(run_pub(args))
}

async fn run_pub(args: PubArgs) -> Result<ExitCode, Failure> {
    let data = crate::cmd_api::parse_data(&args.data, args.raw)?;
    let timed_out = || {
        Failure::from_code(
            "TIMEOUT",
            format!("{} did not answer within 60 s", args.api.url),
        )
    };
    let published = match args.proto {
        Some(proto) => {
            let hub =
                connect_hub(&args.api.url, proto, &args.api.tls, args.token.as_deref()).await?;
            tokio::time::timeout(Duration::from_secs(60), hub.publish(&args.channel, &data))
                .await
                .map_err(|_| timed_out())??
        }
        None => {
            let api = args.api.client()?;
            tokio::time::timeout(Duration::from_secs(60), api.publish(&args.channel, &data))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| Failure::from(e).for_api_key())?
        }
    };
    if args.api.json {
        println!(
            "{}",
            json!({"channel": args.channel, "offset": published.offset, "epoch": published.epoch})
        );
    } else {
        println!(
            "published to {} at offset {}",
            args.channel, published.offset
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_get_the_ws_path_when_they_have_none() {
        assert_eq!(hub_ws_url("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(hub_ws_url("ws://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(hub_ws_url("wss://h/custom/ws"), "wss://h/custom/ws");
    }

    #[test]
    fn error_codes_map_to_documented_exit_codes() {
        assert_eq!(
            Failure::from_code("INVALID_URL", String::new()).exit,
            crate::exit::USAGE
        );
        assert_eq!(
            Failure::from_code("CONNECTION_ERROR", String::new()).exit,
            crate::exit::FAILED
        );
        assert_eq!(
            Failure::from_code("HTTP_STATUS", String::new()).exit,
            crate::exit::REFUSED
        );
        assert_eq!(
            Failure::from_code("AUTH_REQUIRED", String::new()).exit,
            crate::exit::REFUSED
        );
        assert_eq!(
            Failure::from_code("TIMEOUT", String::new()).exit,
            crate::exit::TIMEOUT
        );
        assert!(
            !Failure::from_code("CONNECTION_ERROR", String::new())
                .hint
                .is_empty()
        );
    }

    #[test]
    fn headers_must_be_name_colon_value() {
        assert_eq!(
            split_header("A: b")
                .ok()
                .map(|(n, v)| (n.to_string(), v.to_string())),
            Some(("A".into(), "b".into()))
        );
        assert!(split_header("nocolon").is_err());
        assert!(split_header(":x").is_err());
    }
}
