//! `ferry ws URL`: a websocat-like WebSocket client on stdin/stdout.

use std::process::ExitCode;

use base64::Engine;
use clap::Args;
use ferry_client::ws::{Message, MessageKind, WebSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::urls::{Family, complete};

use super::*;

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

/// `ferry ws URL`.
pub fn ws(args: WsArgs) -> anyhow::Result<ExitCode> {
    run(args.json, run_ws(args))
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
