//! The `/ws` protocol over real loopback sockets: every command, push and reply shape.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{TestServer, WsClient};

#[tokio::test]
async fn documented_examples_work_as_written() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice
        .send_text(r#"{"type":"subscribe","id":"1","payload":{"channel":"chat:lobby"}}"#)
        .await;
    let reply = alice.answer("1").await;
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["payload"]["channel"], "chat:lobby");
    assert_eq!(reply["payload"]["offset"], 0);
    let epoch = reply["payload"]["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty());

    let mut bob = server.client("bob").await;
    bob.send_text(r#"{"type":"publish","id":"2","payload":{"channel":"chat:lobby","data":{"text":"hi"}}}"#)
        .await;
    let reply = bob.answer("2").await;
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["payload"]["offset"], 1);
    assert_eq!(reply["payload"]["epoch"], epoch.as_str());

    let message = alice.next_of_type("message").await;
    assert_eq!(message["payload"]["channel"], "chat:lobby");
    assert_eq!(message["payload"]["offset"], 1);
    assert_eq!(message["payload"]["epoch"], epoch.as_str());
    assert_eq!(message["payload"]["data"], json!({"text": "hi"}));
    assert_eq!(message["payload"]["info"]["user"], "bob");
    assert!(message["payload"]["time"].as_u64().unwrap() > 0);

    let (status, body) = server
        .api()
        .post("/api/publish", json!({"channel": "chat:lobby", "data": {"text": "from api"}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["offset"], 2);
    assert_eq!(body["epoch"], epoch.as_str());
    let message = alice.next_of_type("message").await;
    assert_eq!(message["payload"]["data"]["text"], "from api");
    assert_eq!(message["payload"]["offset"], 2);
    assert!(message["payload"].get("info").is_none());
    server.stop().await;
}

#[tokio::test]
async fn offsets_grow_by_exactly_one_and_publisher_gets_its_own_unless_skipped() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    let r = c.request("subscribe", json!({"channel": "chat:count"})).await;
    assert_eq!(r["type"], "reply");
    for i in 1..=5u64 {
        let r = c.request("publish", json!({"channel": "chat:count", "data": i})).await;
        assert_eq!(r["payload"]["offset"], i);
        let m = c.next_of_type("message").await;
        assert_eq!(m["payload"]["offset"], i);
        assert_eq!(m["payload"]["data"], i);
    }
    let r = c
        .request("publish", json!({"channel": "chat:count", "data": "quiet", "skip_self": true}))
        .await;
    assert_eq!(r["payload"]["offset"], 6);
    // A ping round trip after the skipped publish proves nothing else was queued first.
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["type"], "reply");
    assert!(c.buffered().iter().all(|f| f["type"] != "message"), "{:?}", c.buffered());
    server.stop().await;
}

#[tokio::test]
async fn connection_without_token_must_auth_first() {
    let server = TestServer::start().await;
    let mut c = WsClient::connect(&server.ws_url("/ws")).await;
    let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["payload"]["code"], "AUTH_REQUIRED");
    let r = c.request("auth", json!({"token": server.token("carol")})).await;
    assert_eq!(r["type"], "reply");
    assert_eq!(r["payload"]["user"], "carol");
    assert!(r["payload"]["client"].as_str().unwrap().len() >= 8);
    let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(r["type"], "reply");
    server.stop().await;
}
