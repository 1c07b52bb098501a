//! WebSocket client basics over loopback against the hub's testbed and /ws: text and
//! binary messages, headers, subprotocols, tokens, requests, errors, close.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::time::{Duration, SystemTime};

use ferry_client::ws::{ConnectionState, ErrorKind, Message, MessageKind, WebSocket};
use serde_json::{Value, json};
use ws_support::{TestServer, closed_port, next_json, silent_server, within};

#[tokio::test]
async fn echoes_text_and_binary_with_kind_data_and_timestamp() {
    let server = TestServer::start().await;
    let before = SystemTime::now();
    let ws = WebSocket::connect(&server.ws_url("/test/echo"))
        .await
        .unwrap();
    assert_eq!(ws.state(), ConnectionState::Open);
    ws.send_text("héllo").unwrap();
    ws.send_binary(vec![0u8, 159, 146, 150]).unwrap();
    ws.send_json(&json!({"n": 1})).unwrap();

    let text = within("text echo", ws.recv()).await.unwrap();
    assert_eq!(text.kind(), MessageKind::Text);
    assert_eq!(text.as_text(), Some("héllo"));
    assert!(text.timestamp() >= before);
    let binary = within("binary echo", ws.recv()).await.unwrap();
    assert_eq!(binary.kind(), MessageKind::Binary);
    assert_eq!(binary.data().as_ref(), &[0u8, 159, 146, 150]);
    let json: Value = within("json echo", ws.recv())
        .await
        .unwrap()
        .parse_json()
        .unwrap();
    assert_eq!(json, json!({"n": 1}));

    ws.close().await;
    assert_eq!(ws.state(), ConnectionState::Closed);
    assert!(ws.recv().await.is_none(), "recv ends after close");
    let e = ws.send_text("late").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    server.stop().await;
}

#[tokio::test]
async fn token_subprotocol_and_headers_reach_the_hub() {
    let server = TestServer::start().await;
    // ?token= from `token`, subprotocol negotiated.
    let ws = server.hub_ws("alice").connect().await.unwrap();
    assert_eq!(ws.protocol().as_deref(), Some("ferry.json"));
    let hello = next_json(&ws, "auth_success").await;
    assert_eq!(hello["type"], "auth_success");
    assert_eq!(hello["payload"]["user"], "alice");
    ws.close().await;

    // The same through a custom header (Authorization: Bearer).
    let ws = WebSocket::builder(&server.ws_url("/ws"))
        .subprotocol("ferry.json")
        .header("authorization", &format!("Bearer {}", server.token("bob")))
        .connect()
        .await
        .unwrap();
    let hello = next_json(&ws, "auth_success").await;
    assert_eq!(hello["payload"]["user"], "bob");
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn request_gets_the_reply_with_the_same_id_and_others_go_to_recv() {
    let server = TestServer::start().await;
    let ws = server.hub_ws("carol").connect().await.unwrap();
    // Concurrent requests, answered by id.
    let (a, b) = tokio::join!(
        ws.request(Message::json(&json!({"type": "ping", "id": "a"})).unwrap()),
        ws.request(
            Message::json(&json!({"type": "presence", "id": 7, "payload": {"channel": "chat:x"}}))
                .unwrap()
        ),
    );
    let a: Value = a.unwrap().parse_json().unwrap();
    let b: Value = b.unwrap().parse_json().unwrap();
    assert_eq!(
        (a["type"].as_str(), a["id"].as_str()),
        (Some("reply"), Some("a"))
    );
    assert_eq!(
        (b["type"].as_str(), b["id"].as_u64()),
        (Some("reply"), Some(7))
    );
    // The push without id went to recv, not to a request.
    let hello: Value = ws.recv().await.unwrap().parse_json().unwrap();
    assert_eq!(hello["type"], "auth_success");

    let e = ws.request(Message::text("no id here")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn request_with_a_custom_id_extractor() {
    let server = TestServer::start().await;
    // The echo answers with the request itself; correlate on a `rid` field.
    let ws = WebSocket::builder(&server.ws_url("/test/echo"))
        .request_id(|m| {
            let v: Value = m.parse_json().ok()?;
            v["rid"].as_str().map(str::to_string)
        })
        .connect()
        .await
        .unwrap();
    let reply = ws
        .request(Message::text(r#"{"rid":"q1","x":1}"#))
        .await
        .unwrap();
    assert_eq!(reply.as_text(), Some(r#"{"rid":"q1","x":1}"#));
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn request_times_out_when_no_reply_comes() {
    let (addr, _accepted) = silent_server().await;
    let ws = WebSocket::builder(&format!("ws://{addr}/"))
        .heartbeat(None)
        .connect()
        .await
        .unwrap();
    let e = ws
        .request_with_timeout(
            Message::text(r#"{"id":"lost"}"#),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(e.code(), "TIMEOUT");
    assert!(e.message().contains("lost"), "{e}");
    // The id is free again after the timeout.
    let e = ws
        .request_with_timeout(Message::text(r#"{"id":"lost"}"#), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(e.is_timeout());
}

#[tokio::test]
async fn connect_errors_have_stable_codes() {
    let refused = closed_port();
    let e = WebSocket::connect(&format!("ws://{refused}/"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "CONNECTION_ERROR", "{e}");
    assert!(e.is_connect());

    let e = WebSocket::connect("http://127.0.0.1:1/").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_URL");
    let e = WebSocket::connect("ws//nope").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_URL");
    let e = WebSocket::builder("ws://127.0.0.1:1/")
        .header("bad header", "x")
        .build()
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_URL");

    let server = TestServer::start().await;
    let e = WebSocket::connect(&server.ws_url("/no/such/path"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "HTTP_STATUS", "{e}");
    assert_eq!(e.status(), Some(404));
    // Offering a subprotocol the server does not speak: the hub refuses or picks none.
    server.stop().await;
}

#[tokio::test]
async fn build_connects_in_the_background_and_queues_until_open() {
    let server = TestServer::start().await;
    let ws = WebSocket::builder(&server.ws_url("/test/echo"))
        .build()
        .unwrap();
    ws.send_text("early").unwrap();
    let open = within("open", ws.wait_for(|s| *s == ConnectionState::Open)).await;
    assert_eq!(open, ConnectionState::Open);
    assert_eq!(
        within("echo", ws.recv()).await.unwrap().as_text(),
        Some("early")
    );
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let server = TestServer::start().await;
    let ws = WebSocket::connect(&server.ws_url("/test/echo"))
        .await
        .unwrap();
    let mut states = ws.states();
    let clone = ws.clone();
    drop(ws);
    drop(clone);
    // The task closes with 1000 and ends; the state stream then ends too.
    let mut seen = Vec::new();
    while let Some(s) = within("states", states.next()).await {
        seen.push(s);
    }
    assert_eq!(seen, [ConnectionState::Closing, ConnectionState::Closed]);
    server.stop().await;
}

#[tokio::test]
async fn close_sends_what_was_queued_first_and_delivers_replies_until_the_end() {
    let server = TestServer::start().await;
    let ws = WebSocket::connect(&server.ws_url("/test/echo"))
        .await
        .unwrap();
    for i in 0..500 {
        ws.send_text(format!("m{i}")).unwrap();
    }
    // Close at once; the reader keeps taking echoes meanwhile.
    let closer = {
        let ws = ws.clone();
        tokio::spawn(async move { ws.close().await })
    };
    let mut n = 0;
    while let Some(m) = within("echo", ws.recv()).await {
        assert_eq!(m.as_text(), Some(format!("m{n}").as_str()));
        n += 1;
    }
    assert_eq!(
        n, 500,
        "every queued message went out before the close frame"
    );
    within("closed", closer).await.unwrap();
    assert_eq!(ws.send_text("late").unwrap_err().code(), "CLOSED");
    server.stop().await;
}
