//! The terminal client of the chat example: the same rooms, private conversations, typing
//! indicators and presence list as the web page (`examples/chat/web`), on the same hub.
//!
//! ```text
//! ferry serve -c examples/chat/ferry.toml --static examples/chat/web
//! cargo run -p ferry-example-chat -- --url ws://127.0.0.1:8080/ws \
//!     --token "$(ferry token --user alice)"
//! ```
//!
//! Each conversation is a channel. Opening one prints its last messages from history and
//! subscribes from exactly where that page ends, so nothing published in between is lost
//! or shown twice; after a reconnect the client recovers what it missed.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use ferry_client::hub::{
    HistoryOptions, HubClient, HubEvent, Position, Subscription, SubscriptionEvent,
};
use ferry_proto::envelope::Publication;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// Chat on a ferry hub from the terminal.
///
/// Type a line to send it to the open conversation. Commands: /join ROOM, /dm USER, /who,
/// /help, /quit.
#[derive(Parser, Debug)]
#[command(name = "ferry-chat")]
struct Args {
    /// The hub's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// A JWT for your user (`ferry token --user NAME`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: String,
    /// The room to open first.
    #[arg(long, default_value = "general")]
    room: String,
    /// How many earlier messages to show when a conversation opens.
    #[arg(long, default_value_t = 20)]
    history: usize,
}

/// The open conversation.
struct Open {
    channel: String,
    messages: Subscription,
    /// Typing indicators (rooms only).
    typing: Option<Subscription>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = HubClient::builder(&args.url)
        .token(&args.token)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let me = loop {
        match client.next_event().await {
            Some(HubEvent::AuthSuccess { user, .. }) => break user,
            Some(HubEvent::AuthError(e)) => anyhow::bail!("the hub refused the token: {e}"),
            Some(_) => {}
            None => anyhow::bail!("the connection closed before it was authenticated"),
        }
    };
    say(&format!("* you are {me}; /help lists the commands"));
    let first_room = format!("room:{}", args.room);
    let mut open = Some(open_channel(&client, &first_room, args.history).await?);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(current) = open.as_mut() {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let command = command(line.trim(), &me);
                if command == Command::Quit {
                    break;
                }
                run(&client, &mut open, command, &first_room, args.history).await?;
            }
            event = current.messages.next() => match event {
                Some(event) => show(&event, &me),
                None => break,
            },
            Some(event) = next_typing(&mut current.typing) => {
                if let SubscriptionEvent::Publication(p) = event
                    && let Some(who) = p.info.as_ref().map(|i| i.user.clone())
                    && who != me
                {
                    say(&format!("* {who} is typing…"));
                }
            }
        }
    }
    client.close().await;
    Ok(())
}

/// Carry out a command on the open conversation. An error only when neither the
/// conversation asked for nor the first room can be opened.
async fn run(
    client: &HubClient,
    open: &mut Option<Open>,
    command: Command,
    first_room: &str,
    history: usize,
) -> anyhow::Result<()> {
    let Some(current) = open.as_ref() else {
        return Ok(());
    };
    match command {
        Command::Nothing | Command::Quit => {}
        Command::Help => say("* /join ROOM  /dm USER  /who  /quit; anything else is sent"),
        Command::Send(text) => {
            let sent = client
                .publish(&current.channel, &json!({ "text": text }))
                .await;
            if let Err(e) = sent {
                say(&format!("* not sent: {e}"));
            }
        }
        Command::Who => match client.presence(&current.channel).await {
            Ok(p) => {
                let mut users: Vec<_> = p.clients.values().map(|c| c.user.clone()).collect();
                users.sort();
                users.dedup();
                say(&format!("* here: {}", users.join(", ")));
            }
            Err(e) => say(&format!("* presence unavailable: {e}")),
        },
        Command::Open(channel) => {
            if let Some(old) = open.take() {
                let _ = client.unsubscribe(&old.channel).await;
                if let (Some(_), Some(typing)) = (old.typing, typing_channel(&old.channel)) {
                    let _ = client.unsubscribe(&typing).await;
                }
            }
            match open_channel(client, &channel, history).await {
                Ok(o) => *open = Some(o),
                Err(e) => {
                    say(&format!("* cannot open {channel}: {e:#}"));
                    *open = Some(open_channel(client, first_room, history).await?);
                }
            }
        }
    }
    Ok(())
}

async fn next_typing(typing: &mut Option<Subscription>) -> Option<SubscriptionEvent> {
    match typing {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// Open a conversation: print its last `history` messages, then subscribe from exactly
/// where they end.
async fn open_channel(client: &HubClient, channel: &str, history: usize) -> anyhow::Result<Open> {
    let page = client
        .history(
            channel,
            HistoryOptions {
                limit: Some(history),
                reverse: true,
                ..HistoryOptions::default()
            },
        )
        .await?;
    let shown = page.publications;
    let messages = client
        .subscribe_from(
            channel,
            Position {
                offset: page.offset,
                epoch: page.epoch,
            },
        )
        .await?;
    let typing = match typing_channel(channel) {
        Some(t) => client.subscribe(&t).await.ok(),
        None => None,
    };
    // Printed once subscribed: what follows is live.
    say(&format!("* {channel}"));
    for p in shown.iter().rev() {
        say(&message_line(p));
    }
    Ok(Open {
        channel: channel.to_string(),
        messages,
        typing,
    })
}

/// What a line of input asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Nothing,
    Quit,
    Help,
    Who,
    Send(String),
    Open(String),
}

fn command(line: &str, me: &str) -> Command {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match word {
        "" => Command::Nothing,
        "/quit" | "/exit" => Command::Quit,
        "/help" => Command::Help,
        "/who" => Command::Who,
        "/join" if !rest.is_empty() => {
            Command::Open(format!("room:{}", rest.trim_start_matches('#')))
        }
        "/dm" if !rest.is_empty() => Command::Open(dm_channel(me, rest)),
        w if w.starts_with('/') => Command::Help,
        _ => Command::Send(line.to_string()),
    }
}

/// The private channel of two users: the same name whoever opens it (as the web page).
fn dm_channel(me: &str, other: &str) -> String {
    let mut pair = [me, other];
    pair.sort();
    format!("dm:pair#{},{}", pair[0], pair[1])
}

/// Where a room's typing indicators go; private conversations have none.
fn typing_channel(channel: &str) -> Option<String> {
    channel
        .strip_prefix("room:")
        .map(|room| format!("typing:{room}"))
}

fn show(event: &SubscriptionEvent, me: &str) {
    match event {
        SubscriptionEvent::Publication(p) => say(&message_line(p)),
        SubscriptionEvent::Join(c) if c.user != me => say(&format!("* {} joined", c.user)),
        SubscriptionEvent::Leave(c) if c.user != me => say(&format!("* {} left", c.user)),
        SubscriptionEvent::Recovered {
            recovered: false, ..
        } => say("* reconnected; some messages could not be recovered"),
        SubscriptionEvent::Error(e) => say(&format!("* {e}")),
        _ => {}
    }
}

fn message_line(p: &Publication) -> String {
    let who = p.info.as_ref().map(|i| i.user.as_str()).unwrap_or("server");
    let data = p.data.to_json_value();
    match data.get("text").and_then(|t| t.as_str()) {
        Some(text) => format!("{who}: {text}"),
        None => format!("{who}: {data}"),
    }
}

/// One line on stdout, flushed (the output may be a pipe).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_commands() {
        assert_eq!(
            command("hello there", "al"),
            Command::Send("hello there".into())
        );
        assert_eq!(
            command("/join #random", "al"),
            Command::Open("room:random".into())
        );
        assert_eq!(
            command("/dm bob", "zoe"),
            Command::Open("dm:pair#bob,zoe".into())
        );
        assert_eq!(command("/dm", "zoe"), Command::Help);
        assert_eq!(command("/who", "al"), Command::Who);
        assert_eq!(command("", "al"), Command::Nothing);
        assert_eq!(command("/quit", "al"), Command::Quit);
        assert_eq!(typing_channel("room:a").as_deref(), Some("typing:a"));
        assert_eq!(typing_channel("dm:pair#a,b"), None);
    }
}
