//! `echo`: C connections to any WebSocket echo URL, each keeping K messages in flight;
//! counts round trips per second and their latency. With the Socket.IO adapter the
//! messages are `echo` events, which the peer server emits back.
//!
//! `persist` is the same loop against the hub's `/ws` with `publish` commands: a round
//! trip is a publication acknowledged by the hub, which (with SQLite history) answers
//! only after the publication's commit.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use super::client::{Protocol, Target, Ws};
use super::fanout::{GroupResult, Shared, measure_window};
use super::report::{Latency, Report};
use super::wire::{self, EnginePacket, SocketPacket};

/// What an echo run does.
#[derive(Debug, Clone)]
pub struct EchoPlan {
    /// Connections.
    pub connections: usize,
    /// Messages in flight per connection.
    pub in_flight: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// `persist`: publish to the hub instead of echoing.
    pub publish: Option<PublishTo>,
}

/// Where `persist` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishTo {
    /// Every connection to one channel.
    Hot,
    /// Each connection to a channel of its own.
    PerConnection,
}

fn echo_frame(protocol: Protocol, plan: &EchoPlan, channel: &str, seq: u64) -> String {
    let ts = wire::now_micros();
    let data = wire::payload(seq, ts, plan.size);
    if plan.publish.is_some() {
        return wire::ferry_publish_timed(channel, &data, ts);
    }
    match protocol {
        Protocol::Socketio => wire::socketio_event("echo", &data),
        Protocol::Ferry | Protocol::Plain => data,
    }
}

async fn client(
    mut ws: Ws,
    protocol: Protocol,
    plan: EchoPlan,
    channel: String,
    shared: Arc<Shared>,
    end: Instant,
) -> GroupResult {
    let mut result = GroupResult::new();
    let mut seq = 0u64;
    for _ in 0..plan.in_flight.max(1) {
        seq += 1;
        if ws
            .feed(Message::text(echo_frame(protocol, &plan, &channel, seq)))
            .await
            .is_err()
        {
            result.errors.add("echo connection lost");
            return result;
        }
    }
    if ws.flush().await.is_err() {
        result.errors.add("echo connection lost");
        return result;
    }
    let mut outstanding = plan.in_flight.max(1);
    while outstanding > 0 {
        let message = match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                result.errors.add(format!("echo connection lost: {e}"));
                break;
            }
            Ok(None) => {
                result.errors.add("echo connection closed");
                break;
            }
            Err(_) => {
                result.errors.add("no echo within 5 s");
                break;
            }
        };
        let Message::Text(text) = message else {
            continue;
        };
        let delivery = match protocol {
            Protocol::Socketio => match wire::engine_packet(&text) {
                EnginePacket::Ping => {
                    let _ = ws.send(Message::text(wire::ENGINE_PONG)).await;
                    None
                }
                EnginePacket::Message(SocketPacket::Event { name: "echo", data }) => {
                    wire::parse_delivery(data)
                }
                _ => None,
            },
            Protocol::Ferry | Protocol::Plain if plan.publish.is_some() => {
                match wire::parse_publish_reply(&text) {
                    Some(ts) => Some((0, ts)),
                    None => {
                        if text.starts_with(r#"{"type":"error""#) {
                            result.errors.add(format!("publish refused: {text}"));
                            break;
                        }
                        None
                    }
                }
            }
            Protocol::Ferry | Protocol::Plain => wire::parse_delivery(&text),
        };
        let Some((_, ts)) = delivery else { continue };
        result.record(&shared, ts);
        outstanding -= 1;
        if Instant::now() < end {
            seq += 1;
            if ws
                .send(Message::text(echo_frame(protocol, &plan, &channel, seq)))
                .await
                .is_err()
            {
                result.errors.add("echo connection lost");
                break;
            }
            outstanding += 1;
        }
    }
    result
}

/// Run `echo`.
pub async fn run(common: &Common, target: Arc<Target>, plan: EchoPlan) -> anyhow::Result<Report> {
    let probe = common.probe()?;
    let setup_start = Instant::now();
    let deadline = setup_start + common.setup_timeout();
    let (conns, mut errors) = target
        .open_many(plan.connections, false, common.concurrency(), deadline)
        .await;
    let setup_s = setup_start.elapsed().as_secs_f64();
    if conns.is_empty() {
        anyhow::bail!(
            "no connection could be opened: {}",
            errors.samples.join("; ")
        );
    }
    let connections = conns.len();
    let shared = Shared::new(1, u64::MAX);
    let end = Instant::now() + plan.warmup + plan.duration;
    let clients: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let channel = match plan.publish {
                Some(PublishTo::PerConnection) => format!("{}-{i}", target.channel),
                _ => target.channel.clone(),
            };
            tokio::spawn(client(
                ws,
                target.protocol,
                plan.clone(),
                channel,
                shared.clone(),
                end,
            ))
        })
        .collect();
    let (elapsed, mut usage) =
        measure_window(&shared, probe.as_ref(), plan.warmup, plan.duration).await?;
    let mut results = Vec::new();
    for c in clients {
        if let Ok(r) = c.await {
            results.push(r);
        }
    }
    let all = GroupResult::merge(results);
    errors.merge(all.errors);
    if let Some(u) = usage.as_mut() {
        u.cpu_s_per_million = (all.measured > 0).then(|| u.cpu_s / (all.measured as f64 / 1e6));
    }
    Ok(Report {
        scenario: match plan.publish {
            None => "echo".into(),
            Some(PublishTo::Hot) => "persist (one channel)".into(),
            Some(PublishTo::PerConnection) => "persist (a channel per connection)".into(),
        },
        protocol: target.protocol.name().into(),
        url: target.url.clone(),
        connections,
        setup_s,
        duration_s: elapsed.as_secs_f64(),
        messages: all.measured,
        messages_per_s: all.measured as f64 / elapsed.as_secs_f64(),
        latency: Latency::from_micros(&all.latency),
        errors: errors.count,
        error_samples: errors.samples,
        server: usage,
        ..Report::default()
    })
}
