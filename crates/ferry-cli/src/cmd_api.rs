//! `ferry history`, `presence`, `channels`, `stats`, `disconnect` and `send`: the server
//! API (`/api/*`, API key) without curl. The key comes from `--api-key`, `FERRY_API_KEY`,
//! ferry.toml or the local `ferry-data/secrets.toml`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ferry_client::hub::HubApi;
use serde_json::{Value, json};

use crate::cmd_realtime::run;
use crate::failure::Failure;
use crate::local::{LocalArgs, Which};
use crate::urls::{Family, complete};

/// The exit codes of the server API commands, appended to their help.
pub const API_HELP: &str =
    "The API key: --api-key, FERRY_API_KEY, api_key in ferry.toml, or api_key in
DATA_DIR/secrets.toml (read when you run ferry next to the hub's ferry-data, or give
--data-dir). Add --json for the server's answer as one JSON document.

Exit codes:
  0    the server did it
  1    CONNECTION_ERROR: no server at --url (start one with `ferry serve`)
  2    usage: bad arguments, DATA that is not JSON (use --raw for text), no API key found
  3    the server refused: AUTH_FAILED (wrong API key), UNKNOWN_CHANNEL, INVALID_MESSAGE
  4    TIMEOUT: the server did not answer within 60 s";

/// How to reach the server API; shared by every server API command (and `ferry pub`).
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The hub's HTTP address (`:8080`, `host:port` and `ws://` forms are accepted).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server API key [default: from ferry.toml or DATA_DIR/secrets.toml].
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub local: LocalArgs,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ApiArgs {
    /// The client, with the key from the flag, the environment or the local files.
    pub fn client(&self) -> Result<HubApi, Failure> {
        let key = match self.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => key.to_string(),
            None => self.local.secret(Which::ApiKey).map_err(|why| {
                Failure::usage(
                    format!("no API key: {why}"),
                    "pass --api-key KEY or set FERRY_API_KEY",
                )
            })?,
        };
        let base = complete(&self.url, Family::Http);
        Ok(match self.tls.websocket_config()? {
            Some(tls) => HubApi::with_tls(&base, &key, tls)?,
            None => HubApi::new(&base, &key)?,
        })
    }

    /// Call `/api/{name}` with a 60 s safety net.
    pub async fn call(&self, name: &str, body: Value) -> Result<Value, Failure> {
        let api = self.client()?;
        tokio::time::timeout(Duration::from_secs(60), api.call(name, body))
            .await
            .map_err(|_| {
                Failure::from_code(
                    "TIMEOUT",
                    format!("{} did not answer within 60 s", self.url),
                )
            })?
            .map_err(|e| Failure::from(e).for_api_key())
    }

    /// Print `doc` as JSON when asked, else `text()`.
    fn print(&self, doc: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{doc}");
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// DATA for `pub` and `send`: JSON unless `raw`, in which case it is sent as a string.
pub fn parse_data(data: &str, raw: bool) -> Result<Value, Failure> {
    if raw {
        return Ok(Value::String(data.to_string()));
    }
    serde_json::from_str(data).map_err(|e| Failure {
        exit: crate::exit::USAGE,
        code: "INVALID_JSON".into(),
        message: format!("DATA is not JSON ({e}): {data}"),
        hint: "quote JSON strings inside the shell quotes ('{\"text\":\"hi\"}'), or add --raw to send the text as a JSON string".into(),
    })
}

/// `ferry history CHANNEL`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The channel, e.g. chat:lobby.
    channel: String,
    /// At most this many publications.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Only publications after this offset.
    #[arg(long, value_name = "OFFSET")]
    since: Option<u64>,
    /// Newest first.
    #[arg(long)]
    reverse: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// `ferry presence CHANNEL`.
#[derive(Args, Debug)]
pub struct PresenceArgs {
    /// The channel, e.g. chat:lobby.
    channel: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// `ferry channels` and `ferry stats`.
#[derive(Args, Debug)]
pub struct PlainArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// Who `disconnect` and `send` address.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Every connection of this user.
    #[arg(long)]
    user: Option<String>,
    /// One connection, by the client id from `ferry presence`.
    #[arg(long)]
    client: Option<String>,
}

impl Target {
    fn body(&self) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        if let Some(user) = &self.user {
            body.insert("user".into(), user.clone().into());
        }
        if let Some(client) = &self.client {
            body.insert("client".into(), client.clone().into());
        }
        body
    }
}

/// `ferry disconnect --user NAME | --client ID`.
#[derive(Args, Debug)]
pub struct DisconnectArgs {
    #[command(flatten)]
    target: Target,
    /// Close with 1013 (clients reconnect) instead of 1008 (they stay away).
    #[arg(long)]
    reconnect: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// `ferry send --user NAME | --client ID DATA`.
#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    target: Target,
    /// The message: JSON (text with --raw).
    data: String,
    /// Send DATA as a JSON string.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// `[CHANNEL #OFFSET USER] DATA` for a publication document.
fn publication_line(p: &Value) -> String {
    let user = p["info"]["user"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    format!(
        "[{} #{}{user}] {}",
        p["channel"].as_str().unwrap_or_default(),
        p["offset"],
        p["data"]
    )
}

/// `ferry history CHANNEL`.
pub fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let mut body =
            json!({"channel": args.channel, "limit": args.limit, "reverse": args.reverse});
        if let Some(since) = args.since {
            body["since"] = since.into();
        }
        let doc = args.api.call("history", body).await?;
        args.api.print(&doc, || {
            let lines: Vec<String> = doc["publications"]
                .as_array()
                .map(|ps| ps.iter().map(publication_line).collect())
                .unwrap_or_default();
            eprintln!(
                "ferry: {}: {} publication(s) shown; the channel is at offset {} (epoch {}){}",
                args.channel,
                lines.len(),
                doc["offset"],
                doc["epoch"].as_str().unwrap_or_default(),
                if doc["has_more"] == true {
                    "; more with --since or --limit"
                } else {
                    ""
                }
            );
            lines.join("\n")
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `ferry presence CHANNEL`.
pub fn presence(args: PresenceArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let doc = args
            .api
            .call("presence", json!({"channel": args.channel}))
            .await?;
        args.api.print(&doc, || {
            eprintln!("ferry: {}: {} subscriber(s)", args.channel, doc["count"]);
            // `clients` maps client ids to {user, client}.
            doc["clients"]
                .as_object()
                .map(|cs| {
                    cs.values()
                        .map(|c| {
                            let user = c["user"].as_str().unwrap_or_default();
                            format!(
                                "{}  client {}",
                                if user.is_empty() { "(anonymous)" } else { user },
                                c["client"].as_str().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `ferry channels`.
pub fn channels(args: PlainArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let doc = args.api.call("channels", json!({})).await?;
        args.api.print(&doc, || {
            let list = doc["channels"].as_array().cloned().unwrap_or_default();
            eprintln!("ferry: {} channel(s) with subscribers", list.len());
            list.iter()
                .map(|c| {
                    format!(
                        "{}  {} subscriber(s)",
                        c["channel"].as_str().unwrap_or_default(),
                        c["subscribers"]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `ferry stats`.
pub fn stats(args: PlainArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let doc = args.api.call("stats", json!({})).await?;
        args.api.print(&doc, || match doc.as_object() {
            Some(fields) => fields
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            None => doc.to_string(),
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `ferry disconnect`.
pub fn disconnect(args: DisconnectArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let mut body = args.target.body();
        body.insert("reconnect".into(), args.reconnect.into());
        let doc = args.api.call("disconnect", Value::Object(body)).await?;
        args.api.print(&doc, || {
            format!(
                "disconnected {} connection(s){}",
                doc["disconnected"],
                if args.reconnect {
                    " (1013: they may reconnect)"
                } else {
                    " (1008: they should not reconnect)"
                }
            )
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `ferry send`.
pub fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    run(args.api.json, async move {
        let data = parse_data(&args.data, args.raw)?;
        let mut body = args.target.body();
        body.insert("data".into(), data);
        let doc = args.api.call("send", Value::Object(body)).await?;
        args.api.print(&doc, || {
            format!("delivered to {} connection(s)", doc["delivered"])
        });
        Ok(ExitCode::SUCCESS)
    })
}
