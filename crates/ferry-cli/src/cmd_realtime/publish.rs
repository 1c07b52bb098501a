//! `ferry pub CHANNEL DATA`: publish through the HTTP API, or over /ws with `--proto`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::*;

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
    #[arg(long, value_name = "ENCODING")]
    proto: Option<Codec>,
    /// Client token (JWT) for --proto.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true, requires = "proto")]
    token: Option<String>,
    #[command(flatten)]
    api: crate::cmd_api::ApiArgs,
}

/// `ferry pub CHANNEL DATA`.
pub fn publish(args: PubArgs) -> anyhow::Result<ExitCode> {
    run(false, run_pub(args))
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
