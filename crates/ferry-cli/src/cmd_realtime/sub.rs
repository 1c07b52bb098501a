//! `ferry sub CHANNEL...`: subscribe to hub channels and print publications.

use std::process::ExitCode;

use clap::Args;
use ferry_client::hub::SubscriptionEvent;
use tokio::sync::mpsc;

use super::*;

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
    #[arg(long, value_name = "ENCODING", default_value = "json")]
    proto: Codec,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

/// `ferry sub CHANNEL...`.
pub fn sub(args: SubArgs) -> anyhow::Result<ExitCode> {
    run(args.json, run_sub(args))
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
