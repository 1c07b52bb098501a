//! Reconnect (W4), heartbeat (W5) and the offline queue (W6) against real servers over
//! loopback: the hub drops the connection, stops and restarts on the same port, or a
//! peer stops answering pings. The tests await state changes; they never sleep.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::time::Duration;

use ferry_client::ws::{Backoff, ConnectionState, ErrorKind, Heartbeat, WebSocket};
use serde_json::json;
use ws_support::{
    EchoServer, TestServer, assert_echo, closed_port, next_json, next_state, silent_server, within,
};

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Backoff::default()
    }
}

#[tokio::test]
async fn server_drop_reconnects_with_backoff_and_reports_the_state_sequence() {
    let server = TestServer::start().await;
    let ws = server
        .hub_ws("dana")
        .backoff(fast_backoff())
        .connect()
        .await
        .unwrap();
    let first = next_json(&ws, "auth").await;
    assert_eq!(first["type"], "auth_success");
    let mut states = ws.states();

    // The server closes with 1013 (try again later) mid-stream.
    let (status, body) = server
        .api_post(
            "/api/disconnect",
            json!({"user": "dana", "reconnect": true}),
        )
        .await;
    assert_eq!((status, &body["disconnected"]), (200, &json!(1)));

    match next_state(&mut states).await {
        ConnectionState::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 1);
            assert!(
                delay <= Duration::from_millis(50),
                "first delay {delay:?} above the backoff ceiling"
            );
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    assert_eq!(ws.close_info().map(|c| c.code), Some(1013));
    // The new connection works (and authenticated again from the token).
    let again = next_json(&ws, "auth again").await;
    assert_eq!(again["type"], "auth_success");
    ws.close().await;
    assert_eq!(next_state(&mut states).await, ConnectionState::Closing);
    assert_eq!(next_state(&mut states).await, ConnectionState::Closed);
    server.stop().await;
}

#[tokio::test]
async fn policy_close_1008_is_final_unless_configured() {
    let server = TestServer::start().await;
    let ws = server
        .hub_ws("erin")
        .backoff(fast_backoff())
        .connect()
        .await
        .unwrap();
    let mut states = ws.states();
    server
        .api_post("/api/disconnect", json!({"user": "erin"}))
        .await;
    assert_eq!(next_state(&mut states).await, ConnectionState::Closed);
    assert_eq!(ws.close_info().map(|c| c.code), Some(1008));
    // What was received before the close is still readable, then the end.
    while within("drain", ws.recv()).await.is_some() {}
    assert_eq!(ws.send_text("x").unwrap_err().kind(), ErrorKind::Closed);

    let ws = server
        .hub_ws("erin")
        .backoff(fast_backoff())
        .reconnect_on_normal_close(true)
        .connect()
        .await
        .unwrap();
    let mut states = ws.states();
    server
        .api_post("/api/disconnect", json!({"user": "erin"}))
        .await;
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn messages_sent_while_offline_arrive_in_order_after_a_restart_none_twice() {
    let server = EchoServer::start().await;
    let addr = server.addr;
    let ws = WebSocket::builder(&server.url())
        .backoff(fast_backoff())
        .queue_capacity(100)
        .connect()
        .await
        .unwrap();
    assert_echo(&ws, "before").await;
    let mut states = ws.states();

    // Stop the server: 1001, then refused connections while it is down.
    server.stop().await;
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(ws.close_info().map(|c| c.code), Some(1001));
    for i in 0..20 {
        ws.send_text(format!("offline {i}")).unwrap();
    }
    assert_eq!(ws.queued(), 20);
    // Wait for a refused attempt, so the queue really sat out a failure.
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { attempt: 2, .. }
    ));
    assert_eq!(ws.last_error().map(|e| e.code()), Some("CONNECTION_ERROR"));

    // Start again on the same port: the client reconnects and flushes in order.
    let server = EchoServer::start_on(addr).await;
    within("reopen", ws.wait_for(|s| *s == ConnectionState::Open)).await;
    for i in 0..20 {
        let m = within("flushed echo", ws.recv()).await.unwrap();
        assert_eq!(m.as_text(), Some(format!("offline {i}").as_str()));
    }
    // A marker after the flush proves nothing was sent twice.
    assert_echo(&ws, "after").await;
    assert_eq!(ws.queued(), 0);
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_a_clear_error() {
    let addr = closed_port();
    // Never connects: every attempt is refused, with long delays in between.
    let ws = WebSocket::builder(&format!("ws://{addr}/"))
        .backoff(Backoff {
            initial: Duration::from_secs(60),
            ..Backoff::default()
        })
        .queue_capacity(3)
        .build()
        .unwrap();
    for i in 0..3 {
        ws.send_text(format!("m{i}")).unwrap();
    }
    let e = ws.send_text("one too many").unwrap_err();
    assert_eq!(e.code(), "QUEUE_FULL");
    assert!(e.is_queue_full());
    assert!(e.message().contains("capacity"), "{e}");
    assert_eq!(ws.queued(), 3);
    ws.close().await;
    assert_eq!(ws.state(), ConnectionState::Closed);
}

#[tokio::test]
async fn a_missed_pong_means_dead_and_reconnects() {
    let (addr, mut accepted) = silent_server().await;
    let ws = WebSocket::builder(&format!("ws://{addr}/"))
        .heartbeat(Some(Heartbeat {
            interval: Duration::from_millis(100),
            pong_timeout: Duration::from_millis(200),
        }))
        .backoff(fast_backoff())
        .connect()
        .await
        .unwrap();
    within("first accept", accepted.recv()).await.unwrap();
    let mut states = ws.states();
    // The server never answers the ping: dead → reconnect.
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    let error = ws.last_error().unwrap();
    assert_eq!(error.code(), "TIMEOUT");
    assert!(error.message().contains("ping"), "{error}");
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    within("second accept", accepted.recv()).await.unwrap();
    // No close handshake: this server would never answer it.
    drop(ws);
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let server = TestServer::start().await;
    let ws = WebSocket::builder(&server.ws_url("/test/echo"))
        .heartbeat(Some(Heartbeat {
            interval: Duration::from_millis(20),
            pong_timeout: Duration::from_millis(2000),
        }))
        .connect()
        .await
        .unwrap();
    // Many heartbeat intervals pass while messages flow; the connection stays up.
    for i in 0..50 {
        assert_echo(&ws, &i.to_string()).await;
    }
    assert_eq!(ws.state(), ConnectionState::Open);
    assert!(ws.last_error().is_none(), "{:?}", ws.last_error());
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let addr = closed_port();
    let ws = WebSocket::builder(&format!("ws://{addr}/"))
        .backoff(Backoff {
            max_attempts: Some(2),
            ..fast_backoff()
        })
        .build()
        .unwrap();
    let closed = within("give up", ws.wait_for(|s| *s == ConnectionState::Closed)).await;
    assert_eq!(closed, ConnectionState::Closed);
    assert_eq!(ws.last_error().map(|e| e.code()), Some("CONNECTION_ERROR"));
    assert!(ws.recv().await.is_none());
}
