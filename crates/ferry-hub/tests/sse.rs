//! `/sse` over real loopback sockets: auth, refusals, message events with recovery ids,
//! keep-alive comments, `Last-Event-ID` recovery and connection accounting.
#![allow(clippy::unwrap_used)]

mod support;

use ferry_hub::config::NamespaceConfig;
use ferry_proto::sse::SseEvent;
use serde_json::{Value, json};
use support::{SseClient, TestServer, WAIT};

/// Publish through `POST /api/publish`; returns the publication's offset.
async fn publish(server: &TestServer, channel: &str, data: Value) -> u64 {
    let (status, body) = server
        .api()
        .post("/api/publish", json!({"channel": channel, "data": data}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["offset"].as_u64().unwrap()
}

/// `(epoch, offset, publications)` of a channel, from `POST /api/history`.
async fn history(server: &TestServer, channel: &str) -> (String, u64, Vec<Value>) {
    let (status, body) = server
        .api()
        .post("/api/history", json!({"channel": channel}))
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["epoch"].as_str().unwrap().to_string(),
        body["offset"].as_u64().unwrap(),
        body["publications"].as_array().unwrap().clone(),
    )
}

/// The publication JSON carried by a `message` event.
fn message(event: &SseEvent) -> Value {
    assert_eq!(event.event, "message");
    serde_json::from_str(&event.data).unwrap()
}

/// `(channel, text)` of a message event whose data is `{"text": ...}`.
fn channel_and_text(event: &SseEvent) -> (String, String) {
    let m = message(event);
    (
        m["channel"].as_str().unwrap().to_string(),
        m["data"]["text"].as_str().unwrap().to_string(),
    )
}

/// A refused `/sse` request: its status and JSON body.
async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Poll `/api/stats` until it reports `n` connections (the safety-net timeout fails it).
async fn await_connections(server: &TestServer, n: u64) {
    let api = server.api();
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, stats) = api.get("/api/stats").await;
            assert_eq!(status, 200);
            if stats["connections"] == n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/api/stats never showed {n} connections"));
}

#[tokio::test]
async fn publications_arrive_as_message_events_with_the_position_of_every_channel() {
    let server = TestServer::start().await;
    let mut sse = server.sse("alice", "channel=chat:a&channel=chat:b").await;
    let (epoch_a, _, _) = history(&server, "chat:a").await;
    let (epoch_b, _, _) = history(&server, "chat:b").await;

    assert_eq!(publish(&server, "chat:a", json!({"text": "one"})).await, 1);
    let first = sse.next_event().await;
    let (_, _, published) = history(&server, "chat:a").await;
    assert_eq!(
        message(&first),
        published[0],
        "data is the publication JSON"
    );
    assert_eq!(message(&first)["data"], json!({"text": "one"}));
    assert_eq!(message(&first)["offset"], 1);
    assert_eq!(first.id, format!("{epoch_a}:1;{epoch_b}:0"));

    publish(&server, "chat:b", json!({"text": "two"})).await;
    let second = sse.next_event().await;
    assert_eq!(channel_and_text(&second), ("chat:b".into(), "two".into()));
    assert_eq!(second.id, format!("{epoch_a}:1;{epoch_b}:1"));

    publish(&server, "chat:a", json!({"text": "three"})).await;
    let third = sse.next_event().await;
    assert_eq!(channel_and_text(&third), ("chat:a".into(), "three".into()));
    assert_eq!(third.id, format!("{epoch_a}:2;{epoch_b}:1"));
    assert_eq!(sse.last_event_id(), third.id);
}

#[tokio::test]
async fn a_bearer_token_in_the_authorization_header_is_accepted() {
    let server = TestServer::start().await;
    let bearer = format!("Bearer {}", server.token("bob"));
    let mut sse = SseClient::open(
        &server.http("/sse?channel=chat:lobby"),
        &[("authorization", &bearer)],
    )
    .await;
    publish(&server, "chat:lobby", json!({"text": "hi"})).await;
    let event = sse.next_event().await;
    assert_eq!(channel_and_text(&event), ("chat:lobby".into(), "hi".into()));
}

#[tokio::test]
async fn without_a_valid_token_the_stream_is_refused_with_401() {
    // The namespace would let anonymous readers in, but the server does not.
    let server = TestServer::start_with(|cfg| {
        cfg.namespaces.insert(
            "public".into(),
            NamespaceConfig {
                allow_anonymous: true,
                ..NamespaceConfig::default()
            },
        );
    })
    .await;
    let response = reqwest::get(server.http("/sse?channel=chat:lobby"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "AUTH_REQUIRED");
    assert!(!body["message"].as_str().unwrap().is_empty());

    let (status, body) = refused(&server.http("/sse?channel=public:news"), &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("AUTH_REQUIRED"))
    );

    let (status, body) =
        refused(&server.http("/sse?channel=chat:lobby&token=not.a.jwt"), &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("AUTH_FAILED")));
}

#[tokio::test]
async fn anonymous_readers_get_in_only_where_server_and_namespace_allow_it() {
    let server = TestServer::start_with(|cfg| {
        cfg.allow_anonymous = true;
        cfg.namespaces.insert(
            "public".into(),
            NamespaceConfig {
                allow_anonymous: true,
                ..NamespaceConfig::default()
            },
        );
    })
    .await;
    let mut sse = SseClient::open(&server.http("/sse?channel=public:news"), &[]).await;
    publish(&server, "public:news", json!({"text": "extra"})).await;
    let event = sse.next_event().await;
    assert_eq!(
        channel_and_text(&event),
        ("public:news".into(), "extra".into())
    );

    let (status, body) = refused(&server.http("/sse?channel=chat:lobby"), &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
}

#[tokio::test]
async fn refusals_carry_a_code_and_a_fitting_status() {
    let server = TestServer::start_with(|cfg| {
        cfg.namespaces.insert(
            "locked".into(),
            NamespaceConfig {
                allow_subscribe: false,
                ..NamespaceConfig::default()
            },
        );
    })
    .await;
    let token = server.token("alice");
    let cases = [
        ("/sse?channel=locked:vault", 403, "PERMISSION_DENIED"),
        // One refused channel refuses the whole stream.
        (
            "/sse?channel=chat:ok&channel=locked:vault",
            403,
            "PERMISSION_DENIED",
        ),
        ("/sse?channel=nowhere:x", 404, "UNKNOWN_CHANNEL"),
        ("/sse", 400, "INVALID_MESSAGE"),
        ("/sse?other=1", 400, "INVALID_MESSAGE"),
    ];
    for (path, status, code) in cases {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (got, body) = refused(&server.http(&format!("{path}{sep}token={token}")), &[]).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    // Nothing refused was left behind as a connection.
    let (_, stats) = server.api().get("/api/stats").await;
    assert_eq!(stats["connections"], 0);
}

#[tokio::test]
async fn keep_alive_comments_arrive_on_an_idle_stream() {
    let server = TestServer::start_with(|cfg| cfg.limits.sse_keep_alive_ms = 200).await;
    let mut sse = server.sse("alice", "channel=chat:quiet").await;
    sse.wait_for_comment("keep-alive").await;
    sse.wait_for_comment("keep-alive").await;
    // The stream is still live after the comments.
    publish(&server, "chat:quiet", json!({"text": "still here"})).await;
    let event = sse.next_event().await;
    assert_eq!(
        channel_and_text(&event),
        ("chat:quiet".into(), "still here".into())
    );
}

#[tokio::test]
async fn last_event_id_recovers_missed_publications_once_and_in_order_then_live_ones() {
    let server = TestServer::start().await;
    let bearer = format!("Bearer {}", server.token("alice"));
    let url = server.http("/sse?channel=chat:a&channel=chat:b");
    let mut sse = SseClient::open(&url, &[("authorization", &bearer)]).await;
    publish(&server, "chat:a", json!({"text": "a1"})).await;
    let seen = sse.next_event().await;
    assert_eq!(channel_and_text(&seen).1, "a1");
    drop(sse);

    for (channel, text) in [
        ("chat:a", "a2"),
        ("chat:b", "b1"),
        ("chat:a", "a3"),
        ("chat:b", "b2"),
    ] {
        publish(&server, channel, json!({"text": text})).await;
    }
    let mut sse = SseClient::open(
        &url,
        &[("authorization", &bearer), ("last-event-id", &seen.id)],
    )
    .await;
    let mut recovered = Vec::new();
    for _ in 0..4 {
        recovered.push(sse.next_event().await);
    }
    let texts: Vec<String> = recovered.iter().map(|e| channel_and_text(e).1).collect();
    let of = |prefix: &str| {
        texts
            .iter()
            .filter(|t| t.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("a"),
        ["a2", "a3"],
        "each channel's missed publications, in order"
    );
    assert_eq!(of("b"), ["b1", "b2"]);

    let (epoch_a, _, _) = history(&server, "chat:a").await;
    let (epoch_b, _, _) = history(&server, "chat:b").await;
    assert_eq!(recovered[3].id, format!("{epoch_a}:3;{epoch_b}:2"));

    publish(&server, "chat:b", json!({"text": "b3"})).await;
    let live = sse.next_event().await;
    assert_eq!(
        channel_and_text(&live),
        ("chat:b".into(), "b3".into()),
        "nothing twice, then live"
    );
    assert_eq!(live.id, format!("{epoch_a}:3;{epoch_b}:3"));
}

#[tokio::test]
async fn resuming_from_any_event_of_a_recovery_loses_nothing() {
    let server = TestServer::start().await;
    let token = server.token("alice");
    let url = server.http(&format!("/sse?channel=chat:a&channel=chat:b&token={token}"));
    let mut sse = SseClient::open(&url, &[]).await;
    publish(&server, "chat:a", json!({"text": "a1"})).await;
    let seen = sse.next_event().await;
    drop(sse);
    for (channel, text) in [("chat:a", "a2"), ("chat:b", "b1"), ("chat:a", "a3")] {
        publish(&server, channel, json!({"text": text})).await;
    }

    // The client takes one recovered event, then drops again.
    let mut sse = SseClient::open(&url, &[("last-event-id", &seen.id)]).await;
    let first = sse.next_event().await;
    let first_text = channel_and_text(&first).1;
    drop(sse);

    // Resuming from that event's id (here through `?last_event_id=`) brings exactly
    // the rest.
    let resume = format!("{url}&last_event_id={}", first.id);
    let mut sse = SseClient::open(&resume, &[]).await;
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(channel_and_text(&sse.next_event().await).1);
    }
    let mut all: Vec<String> = std::iter::once(first_text).chain(rest).collect();
    all.sort();
    assert_eq!(all, ["a2", "a3", "b1"]);
    publish(&server, "chat:a", json!({"text": "a4"})).await;
    assert_eq!(
        channel_and_text(&sse.next_event().await).1,
        "a4",
        "no duplicate before live"
    );
}

#[tokio::test]
async fn an_open_stream_counts_as_a_connection_until_the_client_leaves() {
    let server = TestServer::start().await;
    let sse = server.sse("alice", "channel=chat:a").await;
    await_connections(&server, 1).await;
    let (_, channels) = server.api().get("/api/channels").await;
    assert_eq!(
        channels["channels"],
        json!([{"channel": "chat:a", "subscribers": 1}])
    );

    drop(sse);
    await_connections(&server, 0).await;
    let (_, channels) = server.api().get("/api/channels").await;
    assert_eq!(channels["channels"], json!([]));
}
