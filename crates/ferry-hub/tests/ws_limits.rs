//! Limits and bad input on `/ws`: every close code and limit error, over real sockets.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{TestServer, WAIT, WsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn message_over_the_limit_closes_1009() {
    let server = TestServer::start_with(|c| c.limits.max_message_size = 1024).await;
    let mut c = server.client("alice").await;
    let big =
        json!({"type": "publish", "payload": {"channel": "chat:x", "data": "x".repeat(2048)}});
    c.send_json(big).await;
    assert_eq!(c.expect_close().await.0, 1009);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.stream.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.expect_close().await.0, 1007);
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_close_1003() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    c.stream
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1003);
    assert!(reason.contains("binary"), "{reason}");
    server.stop().await;
}

async fn rate_limit_refuses_then_persistent_abuse_closes_1008() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 3;
        c.limits.rate_abuse_strikes = 10;
    })
    .await;
    let mut c = server.client("alice").await;
    for i in 0..40 {
        c.send_json(json!({"type": "ping", "id": i})).await;
    }
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.contains("rate"), "{reason}");
    let limited = c
        .buffered()
        .iter()
        .filter(|f| f["payload"]["code"] == "RATE_LIMIT_EXCEEDED")
        .count();
    assert!(limited >= 9, "{:?}", c.buffered());
    let first_reply = c.buffered().iter().find(|f| f["type"] == "reply");
    assert_eq!(first_reply.unwrap()["id"], 0);
    server.stop().await;
}

async fn rate_limited_command_is_refused_but_connection_stays() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 2;
    })
    .await;
    let mut c = server.client("alice").await;
    for i in 0..4 {
        c.send_json(json!({"type": "ping", "id": i.to_string()}))
            .await;
    }
    let mut codes = Vec::new();
    for i in 0..4 {
        let a = c.answer(&i.to_string()).await;
        codes.push(a["payload"]["code"].as_str().unwrap_or("ok").to_string());
    }
    assert_eq!(codes[0], "ok");
    assert!(
        codes.contains(&"RATE_LIMIT_EXCEEDED".to_string()),
        "{codes:?}"
    );
    // Refused, not disconnected: once the bucket refills the connection works again.
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            let r = c.request("ping", json!({})).await;
            if r["type"] == "reply" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(answered.is_ok());
    server.stop().await;
}

async fn subscriptions_per_connection_are_capped() {
    let server = TestServer::start_with(|c| c.limits.max_subscriptions_per_connection = 2).await;
    let mut c = server.client("alice").await;
    for ch in ["chat:1", "chat:2"] {
        assert_eq!(
            c.request("subscribe", json!({"channel": ch})).await["type"],
            "reply"
        );
    }
    let r = c.request("subscribe", json!({"channel": "chat:3"})).await;
    assert_eq!(r["payload"]["code"], "SUBSCRIPTION_LIMIT");
    server.stop().await;
}

async fn upgrade_status(server: &TestServer) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(server.http("/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn connection_limits_per_ip_and_global_answer_503() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let _a = server.client("a").await;
    let _b = server.client("b").await;
    let (status, body) = upgrade_status(&server).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "CONNECTION_LIMIT");
    server.stop().await;

    let server = TestServer::start_with(|c| c.limits.max_connections = 1).await;
    let a = server.client("a").await;
    let (status, body) = upgrade_status(&server).await;
    assert_eq!(status, 503);
    assert!(body["message"].as_str().unwrap().contains("maximum"));
    drop(a);
    // The slot frees once the server has seen the first connection go.
    let freed = tokio::time::timeout(WAIT, async {
        loop {
            if server.hub.connection_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(freed.is_ok());
    let _again = server.client("a2").await;
    server.stop().await;
}

async fn missing_auth_is_closed_1008_after_the_deadline() {
    let server = TestServer::start_with(|c| c.limits.auth_timeout_ms = 200).await;
    let mut c = WsClient::connect(&server.ws_url("/ws")).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.contains("authentication timeout"));
    assert_eq!(c.buffered()[0]["payload"]["code"], "AUTH_REQUIRED");
    server.stop().await;
}

async fn idle_connections_are_closed() {
    let server = TestServer::start_with(|c| c.limits.idle_timeout_ms = 300).await;
    let mut c = server.client("alice").await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "idle timeout");
    server.stop().await;
}

#[tokio::test]
async fn server_pings_keep_live_peers_and_reap_dead_ones() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval_ms = 100;
        c.limits.pong_timeout_ms = 1500;
    })
    .await;
    // A live client: tungstenite answers pings by itself while we read.
    let mut live = server.client("alice").await;
    let mut pings = 0;
    while pings < 3 {
        let msg = tokio::time::timeout(WAIT, live.stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(msg, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert_eq!(live.request("ping", json!({})).await["type"], "reply");

    // A dead peer: completes the handshake, then never reads or writes again.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let token = server.token("zombie");
    let handshake = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    // Read without answering anything until the server gives up on us and closes.
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut received))
        .await
        .expect("server closes the dead connection")
        .unwrap();
    // The close frame: opcode 0x88, then the payload starting with 1011 (0x03F3).
    let close = received
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xF3);
    assert!(close, "no 1011 close frame in {} bytes", received.len());
    server.stop().await;
}

/// A peer that stops reading while deliveries keep coming (more than one a second, each
/// written at once into the kernel's buffer) is still reaped by the pong deadline.
#[tokio::test]
async fn a_peer_that_never_answers_pings_is_reaped_under_steady_traffic() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval_ms = 300;
        c.limits.pong_timeout_ms = 500;
    })
    .await;
    let mut deaf = server.client("deaf").await;
    deaf.request("subscribe", json!({"channel": "chat:steady"}))
        .await;
    assert_eq!(server.hub.connection_count(), 1);
    // Publish every 50 ms (bounded: at most 10 s) until the server drops the peer; the
    // peer reads nothing meanwhile, so it answers no ping.
    let hub = server.hub.clone();
    let reaped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let data: std::sync::Arc<serde_json::value::RawValue> =
                serde_json::value::RawValue::from_string("\"tick\"".into())
                    .unwrap()
                    .into();
            hub.publish("chat:steady", data, None, None).await.unwrap();
            if hub.connection_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reaped.is_ok(), "the deaf peer was never reaped");
    // What it finally reads ends with the 1011 close.
    let mut close = None;
    while close.is_none() {
        match tokio::time::timeout(WAIT, deaf.stream.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => close = Some(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    assert_eq!(close, Some(Some(1011)));
    server.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_memory_stays_bounded() {
    let server = TestServer::start_with(|c| c.limits.send_queue_size = 8).await;
    let mut slow = server.client("slow").await;
    slow.request("subscribe", json!({"channel": "chat:flood"}))
        .await;
    let api = server.api();
    let payload = "y".repeat(256 * 1024);
    // Publish until the server gives up on the reader that never reads (bounded count).
    let mut gave_up = false;
    for _ in 0..400 {
        api.post(
            "/api/publish",
            json!({"channel": "chat:flood", "data": payload}),
        )
        .await;
        let (_, stats) = api.get("/api/stats").await;
        if stats["slow_consumers"].as_u64().unwrap() >= 1 {
            gave_up = true;
            break;
        }
    }
    assert!(gave_up, "the slow consumer was never disconnected");
    let (code, _) = slow.expect_close().await;
    assert!(code == 1013 || code == 1006, "close code {code}");
    server.stop().await;
}

both_codecs!(
    message_over_the_limit_closes_1009,
    rate_limit_refuses_then_persistent_abuse_closes_1008,
    rate_limited_command_is_refused_but_connection_stays,
    subscriptions_per_connection_are_capped,
    missing_auth_is_closed_1008_after_the_deadline,
    idle_connections_are_closed,
);
