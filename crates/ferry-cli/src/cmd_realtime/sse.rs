//! `ferry sse URL`: an EventSource client that prints events.

use std::process::ExitCode;

use clap::Args;
use ferry_client::event_source::{self, EventSource};
use ferry_client::ws::{self};
use serde_json::json;

use crate::urls::{Family, complete};

use super::*;

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

/// `ferry sse URL`.
pub fn sse(args: SseArgs) -> anyhow::Result<ExitCode> {
    run(args.json, run_sse(args))
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
