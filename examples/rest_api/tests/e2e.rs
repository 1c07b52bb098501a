//! The REST example against a real hub on loopback (in-process `ferry_hub::Server`): every
//! change is committed to SQLite, then reaches a `todos` subscriber in order; requests
//! without the token are refused; with the hub gone a change is still saved and the answer
//! says it was not published.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ferry_client::hub::{HubApi, HubClient};
use ferry_example_rest_api::App;
use ferry_hub::config::{HistoryBackend, Secret};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_change_is_saved_then_published_in_order() {
    let config = ferry_hub::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: Some(Secret::new("hub-key")),
        jwt_secret: Some(Secret::new("hub-jwt")),
        history: HistoryBackend::Memory,
        ..ferry_hub::Config::default()
    };
    let hub = ferry_hub::Hub::new(Arc::new(config)).unwrap();
    let (token, _) = hub.auth().issue("watcher").unwrap();
    let server = ferry_hub::Server::bind_hub(hub)
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let hub_url = format!("http://{}", server.local_addr());

    let dir = tempfile::tempdir().unwrap();
    let app = App::open(
        &dir.path().join("todos.sqlite3"),
        HubApi::new(&hub_url, "hub-key").unwrap(),
        "todos",
        "secret",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.router()).await });

    let watcher = HubClient::builder(&format!("ws://{}/ws", server.local_addr()))
        .token(&token)
        .connect()
        .await
        .unwrap();
    let mut changes = watcher.subscribe("todos").await.unwrap();

    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{api}/todos"))
        .json(&json!({"title": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{api}{path}"))
            .bearer_auth("secret");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let created = send(
        reqwest::Method::POST,
        "/todos",
        Some(json!({"title": "write docs"})),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["published"], true);
    let id = created["todo"]["id"].as_i64().unwrap();
    let updated: Value = send(
        reqwest::Method::PATCH,
        &format!("/todos/{id}"),
        Some(json!({"done": true})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(updated["todo"]["done"], true);
    let deleted = send(reqwest::Method::DELETE, &format!("/todos/{id}"), None)
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    let mut ops = Vec::new();
    for _ in 0..3 {
        let p = tokio::time::timeout(WAIT, changes.next_publication())
            .await
            .unwrap()
            .unwrap();
        let change: Value = serde_json::from_str(p.data.to_json().get()).unwrap();
        ops.push(change["op"].as_str().unwrap().to_string());
        if change["op"] == "created" {
            assert_eq!(change["todo"]["title"], "write docs");
        }
    }
    assert_eq!(ops, ["created", "updated", "deleted"]);

    // The hub goes away: the change is still saved, and the answer says so.
    server.shutdown().await.unwrap();
    let saved: Value = send(
        reqwest::Method::POST,
        "/todos",
        Some(json!({"title": "offline"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(saved["published"], false);
    let all: Value = send(reqwest::Method::GET, "/todos", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all,
        json!([{"id": id + 1, "title": "offline", "done": false}])
    );
}
