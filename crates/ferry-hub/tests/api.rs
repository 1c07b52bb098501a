//! The server HTTP API (`/api/*`, API key) over real sockets.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{API_KEY, TestServer};

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let body = json!({"channel": "chat:x", "data": 1});
    let r = http
        .post(server.http("/api/publish"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "AUTH_REQUIRED");
    let r = http
        .post(server.http("/api/publish"))
        .header("authorization", "apikey wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "AUTH_FAILED");
    // A client JWT is not an API key.
    let r = http
        .post(server.http("/api/publish"))
        .header("authorization", format!("Bearer {}", server.token("alice")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let server = TestServer::start_with(|c| c.limits.max_body_size = 1024).await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(server.http("/api/publish"))
            .header("authorization", format!("apikey {API_KEY}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{oops".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "INVALID_MESSAGE");
    let r = post(json!({"data": 1}).to_string()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("channel")
    );
    let r = post(json!({"channel": "chat:x", "data": "z".repeat(4096)}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "MESSAGE_TOO_BIG");
    let r = post(json!({"channel": "nope:x", "data": 1}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "UNKNOWN_CHANNEL");
    server.stop().await;
}

#[tokio::test]
async fn broadcast_publishes_to_each_channel_and_reports_each_result() {
    let server = TestServer::start().await;
    let mut a = server.client("a").await;
    a.request("subscribe", json!({"channel": "chat:one"})).await;
    a.request("subscribe", json!({"channel": "chat:two"})).await;
    let (status, body) = server
        .api()
        .post(
            "/api/broadcast",
            json!({"channels": ["chat:one", "chat:two", "bad:ns"], "data": {"v": 1}}),
        )
        .await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 1);
    assert_eq!(results[1]["channel"], "chat:two");
    assert_eq!(results[2]["error"]["code"], "UNKNOWN_CHANNEL");
    let mut channels = vec![
        a.next_of_type("message").await["payload"]["channel"]
            .as_str()
            .unwrap()
            .to_string(),
        a.next_of_type("message").await["payload"]["channel"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    channels.sort();
    assert_eq!(channels, ["chat:one", "chat:two"]);
    server.stop().await;
}

#[tokio::test]
async fn history_presence_channels_and_stats() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut a = server.client("alice").await;
    a.request("subscribe", json!({"channel": "chat:room"}))
        .await;
    for i in 0..3 {
        api.post("/api/publish", json!({"channel": "chat:room", "data": i}))
            .await;
    }
    let (status, h) = api
        .post(
            "/api/history",
            json!({"channel": "chat:room", "limit": 2, "reverse": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h["offset"], 3);
    assert_eq!(h["has_more"], true);
    assert_eq!(h["publications"][0]["data"], 2);
    let (_, p) = api
        .post("/api/presence", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(p["count"], 1);
    assert_eq!(
        p["clients"].as_object().unwrap().values().next().unwrap()["user"],
        "alice"
    );
    let (status, ch) = api.get("/api/channels").await;
    assert_eq!(status, 200);
    assert_eq!(
        ch["channels"],
        json!([{"channel": "chat:room", "subscribers": 1}])
    );
    let (status, s) = api.get("/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(s["connections"], 1);
    assert_eq!(s["subscriptions"], 1);
    assert_eq!(s["publications"], 3);
    assert!(s["deliveries"].as_u64().unwrap() >= 3);
    server.stop().await;
}

#[tokio::test]
async fn stats_count_the_bytes_that_cross_the_sockets() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut a = server.client("alice").await;
    a.request("subscribe", json!({"channel": "chat:bytes"}))
        .await;
    let (_, before) = api.get("/api/stats").await;
    let text = "x".repeat(100_000);
    let (status, _) = api
        .post(
            "/api/publish",
            json!({"channel": "chat:bytes", "data": text}),
        )
        .await;
    assert_eq!(status, 200);
    let m = a.next_of_type("message").await;
    assert_eq!(m["payload"]["data"].as_str().map(str::len), Some(100_000));
    let (_, after) = api.get("/api/stats").await;
    let grew = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    // The publish request came in once, the message went out once (plus HTTP and frame
    // overhead, and the first stats reply).
    assert!(grew("bytes_in") >= 100_000, "{before} → {after}");
    assert!(grew("bytes_out") >= 100_000, "{before} → {after}");
    assert!(grew("bytes_out") < 400_000, "{before} → {after}");
    server.stop().await;
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_a_user() {
    let server = TestServer::start().await;
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (status, body) = server
        .api()
        .post("/api/disconnect", json!({"user": "alice"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["disconnected"], 2);
    assert_eq!(a1.expect_close().await.0, 1008);
    assert_eq!(a2.expect_close().await.0, 1008);
    assert_eq!(bob.request("ping", json!({})).await["type"], "reply");
    let (_, body) = server
        .api()
        .post("/api/disconnect", json!({"user": "bob", "reconnect": true}))
        .await;
    assert_eq!(body["disconnected"], 1);
    assert_eq!(bob.expect_close().await.0, 1013);
    let (status, body) = server.api().post("/api/disconnect", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "INVALID_MESSAGE");
    server.stop().await;
}
