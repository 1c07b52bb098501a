//! Graceful shutdown over real loopback sockets: WebSocket clients see 1001 after their
//! queued publications, SSE streams end, and the server stops taking connections.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use serde_json::value::RawValue;
use support::TestServer;

/// A grace far beyond the test's safety-net timeout: `stop()` finishing in time shows
/// that every connection closed, not that the grace ran out.
const LONG_GRACE_MS: u64 = 60_000;

fn text(t: &str) -> Box<RawValue> {
    serde_json::value::to_raw_value(&json!({ "text": t })).unwrap()
}

/// Publish m0..m19 to `chat:lobby` and begin shutdown (as the signal handler does) with no
/// await point in between at which a connection task could run: every subscriber has
/// the whole burst queued when it learns of the shutdown.
async fn queue_then_shut_down(server: &TestServer) {
    for i in 0..20 {
        server
            .hub
            .publish("chat:lobby", text(&format!("m{i}")), None, None)
            .await
            .unwrap();
    }
    server.hub.shutdown();
}

#[tokio::test]
async fn a_connected_websocket_client_sees_close_1001() {
    let server = TestServer::start_with(|cfg| cfg.limits.shutdown_grace_ms = LONG_GRACE_MS).await;
    let mut alice = server.client("alice").await;
    let reply = alice
        .request("subscribe", json!({"channel": "chat:lobby"}))
        .await;
    assert_eq!(reply["type"], "reply");

    let stopping = tokio::spawn(server.stop());
    let (code, reason) = alice.expect_close().await;
    assert_eq!(code, 1001, "going away");
    assert!(!reason.is_empty());
    alice.finish_close().await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn publications_queued_before_shutdown_are_delivered_before_the_close() {
    let server = TestServer::start_with(|cfg| cfg.limits.shutdown_grace_ms = LONG_GRACE_MS).await;
    let mut alice = server.client("alice").await;
    alice
        .request("subscribe", json!({"channel": "chat:lobby"}))
        .await;

    // Queue a burst on the connection and begin shutdown before its task gets to run,
    // so that it sees both at once.
    queue_then_shut_down(&server).await;
    let stopping = tokio::spawn(server.stop());

    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1001);
    let delivered: Vec<String> = alice
        .buffered()
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["payload"]["data"]["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(
        delivered, expected,
        "every queued publication, in order, before 1001"
    );
    alice.finish_close().await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn an_open_sse_stream_ends_after_its_queued_publications() {
    let server = TestServer::start_with(|cfg| cfg.limits.shutdown_grace_ms = LONG_GRACE_MS).await;
    let mut sse = server.sse("alice", "channel=chat:lobby").await;

    queue_then_shut_down(&server).await;
    let stopping = tokio::spawn(server.stop());

    let events = sse.expect_end().await;
    let delivered: Vec<String> = events
        .iter()
        .map(|e| {
            let m: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            m["data"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(delivered, expected, "the stream drains, then ends");
    stopping.await.unwrap();
}

#[tokio::test]
async fn ready_before_and_no_new_connections_after() {
    let server = TestServer::start().await;
    let ready = server.http("/ready");
    let ws_url = server.ws_url(&format!("/ws?token={}", server.token("late")));
    let response = reqwest::get(&ready).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ready"})
    );

    server.stop().await;

    // A fresh client: no pooled connection from before the shutdown.
    let err = reqwest::Client::new().get(&ready).send().await.unwrap_err();
    assert!(err.is_connect(), "HTTP after shutdown: {err}");
    let ws = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(ws.is_err(), "WebSocket after shutdown must be refused");
}

#[tokio::test]
async fn connections_are_refused_while_open_ones_drain() {
    let server = TestServer::start_with(|cfg| cfg.limits.shutdown_grace_ms = LONG_GRACE_MS).await;
    // This client reads nothing until the end, so the server is still draining (waiting
    // for its close handshake) while the late clients arrive.
    let mut lingering = server.client("slow").await;
    let ready = server.http("/ready");
    let ws_url = server.ws_url(&format!("/ws?token={}", server.token("late")));
    let shutting_down = server.hub.shutdown_token().clone();
    let stopping = tokio::spawn(server.stop());
    shutting_down.cancelled().await;

    match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        Err(_) => {} // the listener is already closed: refused at connect
        Ok(_) => panic!("a WebSocket upgrade was accepted during shutdown"),
    }
    match reqwest::Client::new().get(&ready).send().await {
        Ok(response) => assert_eq!(response.status().as_u16(), 503),
        Err(err) => assert!(err.is_connect(), "{err}"),
    }
    assert!(
        !stopping.is_finished(),
        "the server waits for the open connection"
    );

    assert_eq!(lingering.expect_close().await.0, 1001);
    lingering.finish_close().await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn testbed_echo_connections_are_closed_with_1001_too() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let (mut echo, _) = tokio_tungstenite::connect_async(server.ws_url("/test/echo"))
        .await
        .unwrap();
    server.hub.shutdown();
    let close = tokio::time::timeout(support::WAIT, async {
        loop {
            match echo.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(1001));
    server.stop().await;
}
