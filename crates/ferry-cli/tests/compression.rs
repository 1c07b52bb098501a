//! S10/W9: permessage-deflate on `/ws` and `/test/echo` with `compression = "on"`, against
//! npm `ws` (a peer nobody here wrote) and ferry's own client: compressed messages of every
//! size in both directions arrive intact, a compressed and a plain subscriber of one
//! channel get the same publications, and the compressed one reads far fewer bytes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, run_to_completion, token_for};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(60);
const SETUP: &str = "needs node and clients/js/node_modules: run `bash scripts/peers.sh`";

fn peer() -> std::path::PathBuf {
    support::workspace_root().join("crates/ferry-cli/tests/compression/peer.mjs")
}

async fn server() -> FerryServer {
    FerryServer::start_with(&[], &[("FERRY_COMPRESSION", "on")], true)
        .await
        .unwrap()
}

/// Compressible JSON data of about `n` bytes.
fn data(n: usize, seed: usize) -> Value {
    let mut text = String::new();
    while text.len() < n {
        text.push_str(&format!("publication {seed} repeats itself, as feeds do. "));
    }
    json!({"seed": seed, "text": text})
}

/// npm ws subscribed to `channel` on the hub as `user`, expecting `count` publications:
/// the child (killed when dropped) and its output lines, after its subscribe succeeded.
async fn node_subscriber(
    server: &FerryServer,
    user: &str,
    channel: &str,
    count: usize,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let url = server.ws_url(&format!("/ws?token={}", token_for(user)));
    let (node, lines, first) = spawn_peer(&["subscribe", &url, channel, &count.to_string()]).await;
    assert_eq!(first, r#"{"subscribed":true}"#, "{}", server.logs());
    (node, lines)
}

/// Run peer.mjs with `args` to completion.
async fn run_node_peer(args: &[&str]) -> support::Finished {
    let mut node = Command::new("node");
    node.arg(peer()).args(args);
    run_to_completion(node, WAIT).await.expect(SETUP)
}

/// Run peer.mjs with `args` (killed when dropped): the child, its output lines and the
/// first of them.
async fn spawn_peer(
    args: &[&str],
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    String,
) {
    let mut node = Command::new("node")
        .arg(peer())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect(SETUP);
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a first line from the peer");
    (node, lines, first)
}

#[tokio::test]
async fn compressed_messages_of_every_size_echo_intact() {
    let server = server().await;
    let done = run_node_peer(&["echo", &server.ws_url("/test/echo")]).await;
    assert!(done.status.success(), "{}\n{}", done.stderr, server.logs());
    let report: Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(report["extensions"], "permessage-deflate", "negotiated");
    assert_eq!(report["echoed"], 16);
}

#[tokio::test]
async fn a_message_that_inflates_past_the_limit_is_closed_with_1009() {
    let server = server().await;
    let done = run_node_peer(&["bomb", &server.ws_url("/test/echo")]).await;
    let report: Value = serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", done.stdout, done.stderr));
    assert_eq!(report["code"], 1009, "{report}");
    // It was small on the wire: the limit held on the inflated size.
    assert!(
        report["written"].as_u64().unwrap_or(u64::MAX) < 64 << 10,
        "{report}"
    );
    assert!(server.logs().len() < 1 << 20, "no runaway logging");
}

#[tokio::test]
async fn compressed_and_plain_subscribers_get_the_same_publications() {
    let server = server().await;
    let channel = "chat:deflate";
    // npm ws, offering permessage-deflate.
    let (_node, mut lines) = node_subscriber(&server, "ana", channel, 4).await;
    // A plain subscriber: no extension offered, so no compression.
    let mut request = server
        .ws_url(&format!("/ws?token={}", token_for("ben")))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ferry.json".parse().unwrap());
    let (mut plain, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    plain
        .send_text(json!({"type": "subscribe", "id": "1", "payload": {"channel": channel}}))
        .await;

    // Three large compressible publications and one under compression_min_size.
    let published = [
        data(20_000, 1),
        data(50_000, 2),
        json!({"small": true}),
        data(30_000, 3),
    ];
    let api = ferry_client::hub::HubApi::new(&server.base_url, API_KEY).unwrap();
    let mut wait_reply = true;
    for item in &published {
        if wait_reply {
            // The plain subscriber's subscribe reply, before the first publication.
            loop {
                let frame = plain.next_json().await;
                if frame["type"] == "reply" {
                    break;
                }
            }
            wait_reply = false;
        }
        api.publish(channel, item).await.unwrap();
    }
    let mut plain_got = Vec::new();
    while plain_got.len() < published.len() {
        let frame = plain.next_json().await;
        if frame["type"] == "message" {
            plain_got.push(frame["payload"]["data"].clone());
        }
    }
    let mut node_got = Vec::new();
    let mut summary = Value::Null;
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        let value: Value = serde_json::from_str(&line).unwrap();
        if value.get("data").is_some() {
            node_got.push(value["data"].clone());
        } else {
            summary = value;
        }
    }
    assert_eq!(plain_got, published, "the plain subscriber");
    assert_eq!(node_got, published, "the compressed subscriber");
    assert_eq!(summary["extensions"], "permessage-deflate");
    let payload: usize = published.iter().map(|p| p.to_string().len()).sum();
    let read = summary["bytes_read"].as_u64().unwrap() as usize;
    assert!(
        read * 4 < payload,
        "compressed: read {read} bytes for {payload} of data"
    );
}

#[tokio::test]
async fn a_compressed_publish_reaches_a_plain_subscriber_intact() {
    let server = server().await;
    let channel = "chat:up";
    let client = ferry_client::hub::HubClient::builder(&server.ws_url("/ws"))
        .token(&token_for("cy"))
        .compression(false)
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe(channel).await.unwrap();
    let url = server.ws_url(&format!("/ws?token={}", token_for("dee")));
    let done = run_node_peer(&["publish", &url, channel, "200000"]).await;
    assert!(done.status.success(), "{}\n{}", done.stderr, server.logs());
    let report: Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(report["extensions"], "permessage-deflate");
    assert!(
        report["bytes_written"].as_u64().unwrap() < 50_000,
        "sent compressed: {report}"
    );
    let p = tokio::time::timeout(WAIT, sub.next_publication())
        .await
        .unwrap()
        .unwrap();
    let got: Value = serde_json::from_str(p.data.to_json().get()).unwrap();
    assert_eq!(got["text"].as_str().unwrap().len(), 200_000);
    assert!(
        got["text"]
            .as_str()
            .unwrap()
            .starts_with("ferry p compresses")
    );
}

#[tokio::test]
async fn a_namespace_with_compress_false_is_sent_plain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "compression = \"on\"\n[namespaces.raw]\ncompress = false\n",
    )
    .unwrap();
    let server = FerryServer::start(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let (_node, mut lines) = node_subscriber(&server, "fay", "raw:x", 1).await;
    let item = data(50_000, 9);
    let api = ferry_client::hub::HubApi::new(&server.base_url, API_KEY).unwrap();
    api.publish("raw:x", &item).await.unwrap();
    let got = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap()["data"], item);
    let summary = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary["extensions"], "permessage-deflate",
        "agreed all the same"
    );
    assert!(
        summary["bytes_read"].as_u64().unwrap() > 50_000,
        "sent plain: {summary}"
    );
}

#[tokio::test]
async fn ferry_client_inflates_what_the_hub_compresses() {
    let server = server().await;
    let client = ferry_client::hub::HubClient::builder(&server.ws_url("/ws"))
        .token(&token_for("eve"))
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe("chat:inflate").await.unwrap();
    let api = ferry_client::hub::HubApi::new(&server.base_url, API_KEY).unwrap();
    let sent = [data(100_000, 7), json!({"tiny": 1}), data(3_000, 8)];
    for item in &sent {
        api.publish("chat:inflate", item).await.unwrap();
    }
    for item in &sent {
        let p = tokio::time::timeout(WAIT, sub.next_publication())
            .await
            .unwrap()
            .unwrap();
        let got: Value = serde_json::from_str(p.data.to_json().get()).unwrap();
        assert_eq!(&got, item);
    }
}

#[tokio::test]
async fn ferry_client_inflates_what_npm_ws_compresses() {
    let (_node, _lines, port) = spawn_peer(&["server"]).await;
    let ws = ferry_client::ws::WebSocket::builder(&format!("ws://127.0.0.1:{port}/"))
        .connect()
        .await
        .unwrap();
    // The peer sends each size as text, then as binary, compressed; the content is
    // deterministic, rebuilt here.
    for (i, size) in [0usize, 10, 125, 126, 5_000, 65_536, 400_000]
        .iter()
        .enumerate()
    {
        for binary in [false, true] {
            let message = tokio::time::timeout(WAIT, ws.recv())
                .await
                .unwrap()
                .expect("a message");
            let expected = peer_text(*size, i);
            assert_eq!(!message.is_text(), binary, "message {i}");
            assert_eq!(
                &message.data()[..],
                expected.as_bytes(),
                "message {i} ({size} bytes)"
            );
        }
    }
}

/// What peer.mjs's `text(n, seed)` makes.
fn peer_text(n: usize, seed: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&format!("ferry {seed} compresses repeated words well. "));
    }
    s.truncate(n);
    s
}

/// Test helpers on a raw client socket.
trait Raw {
    async fn send_text(&mut self, frame: Value);
    async fn next_json(&mut self) -> Value;
}

impl Raw
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_text(&mut self, frame: Value) {
        use futures_util::SinkExt;
        self.send(Message::text(frame.to_string())).await.unwrap();
    }

    async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }
}
