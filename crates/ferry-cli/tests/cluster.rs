//! X1–X3: several `ferry serve` nodes on one Redis (Debian redis-server on an ephemeral
//! loopback port) act as one hub: publications from any node reach every subscriber in
//! offset order, presence and `/api/send` work across nodes, a node killed with `kill -9`
//! loses nothing, and a Redis that restarts empty is reported, never hidden.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use ferry_client::hub::{HubApi, HubClient, HubEvent, Position, SubscriptionEvent};
use ferry_testkit::redis::TestRedis;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, WAIT, token_for, within};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A node on `redis`, with presence leases of 2 s (so a dead node's entries go quickly).
async fn node(redis: &TestRedis) -> FerryServer {
    FerryServer::start_with(
        &["--broker", &redis.url()],
        &[("FERRY_REDIS__PRESENCE_LEASE_SECS", "2")],
        true,
    )
    .await
    .unwrap()
}

async fn client(node: &FerryServer, user: &str) -> HubClient {
    HubClient::builder(&node.ws_url("/ws"))
        .token(&token_for(user))
        .connect()
        .await
        .unwrap()
}

fn n_of(p: &ferry_proto::envelope::Publication) -> u64 {
    let data: Value = serde_json::from_str(p.data.to_json().get()).unwrap();
    data["n"].as_u64().unwrap()
}

/// A raw `/ws` connection (no client-side dedupe), authenticated.
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Raw {
    async fn connect(node: &FerryServer, user: &str) -> Raw {
        let mut request = node
            .ws_url(&format!("/ws?token={}", token_for(user)))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "ferry.json".parse().unwrap());
        let (ws, _) = within(
            "a raw connection",
            tokio_tungstenite::connect_async(request),
        )
        .await
        .unwrap();
        let mut raw = Raw { ws };
        raw.next_of("auth_success").await;
        raw
    }

    async fn next(&mut self) -> Value {
        loop {
            let message = within("a frame", self.ws.next())
                .await
                .expect("open")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn three_nodes_act_as_one_hub() {
    let redis = TestRedis::start();
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);

    let alice = client(&a, "alice").await;
    let mut room = alice.subscribe("chat:room").await.unwrap();
    let bob = client(&b, "bob").await;
    let _bobs = bob.subscribe("chat:room").await.unwrap();
    let api_c = HubApi::new(&c.base_url, API_KEY).unwrap();

    // Publications from node B's WebSocket and node C's HTTP API, interleaved.
    for n in 1..=10u64 {
        if n % 2 == 0 {
            bob.publish("chat:room", &json!({"n": n})).await.unwrap();
        } else {
            api_c.publish("chat:room", &json!({"n": n})).await.unwrap();
        }
    }
    let mut offsets = Vec::new();
    for n in 1..=10u64 {
        let p = within("a publication on node A", room.next_publication())
            .await
            .unwrap();
        assert_eq!(n_of(&p), n, "in the order they were published");
        offsets.push(p.offset);
    }
    assert_eq!(
        offsets,
        (1..=10).collect::<Vec<_>>(),
        "offset order, no gap"
    );

    // Presence is the same from every node.
    for node in [&a, &b, &c] {
        let api = HubApi::new(&node.base_url, API_KEY).unwrap();
        let presence = api
            .call("presence", json!({"channel": "chat:room"}))
            .await
            .unwrap();
        let mut users: Vec<&str> = presence["clients"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["user"].as_str().unwrap())
            .collect();
        users.sort_unstable();
        assert_eq!(users, ["alice", "bob"], "presence from {}", node.base_url);
    }

    // Node C has no subscriber, but its API sees the whole cluster.
    let channels = api_c.channels().await.unwrap();
    assert_eq!(channels["nodes"], 3, "{channels}");
    assert_eq!(
        channels["channels"],
        json!([{"channel": "chat:room", "subscribers": 2}])
    );
    let stats = api_c.stats().await.unwrap();
    assert_eq!(stats["subscriptions"], 0, "node C's own");
    assert_eq!(stats["cluster"]["nodes"], 3, "{stats}");
    assert_eq!(stats["cluster"]["total"]["subscriptions"], 2, "{stats}");
    assert_eq!(stats["cluster"]["total"]["connections"], 2, "{stats}");

    // /api/send on node C reaches alice on node A.
    let sent = api_c
        .call(
            "send",
            json!({"user": "alice", "data": {"hello": "from C"}}),
        )
        .await
        .unwrap();
    assert_eq!(sent["delivered"], 0, "nobody on node C");
    assert_eq!(sent["forwarded_to_nodes"], 2);
    let direct = within("the direct message", async {
        loop {
            if let Some(HubEvent::Direct(data)) = alice.next_event().await {
                return data;
            }
        }
    })
    .await;
    assert_eq!(direct.to_json().get(), r#"{"hello":"from C"}"#);
}

#[tokio::test]
async fn a_node_killed_with_kill_9_loses_nothing() {
    let redis = TestRedis::start();
    let a = node(&redis).await;
    let mut b = node(&redis).await;
    let api_a = HubApi::new(&a.base_url, API_KEY).unwrap();

    // carol is on node B, and has seen 1..=5.
    let carol = client(&b, "carol").await;
    let mut sub = carol.subscribe("chat:k").await.unwrap();
    for n in 1..=5u64 {
        api_a.publish("chat:k", &json!({"n": n})).await.unwrap();
    }
    let mut last = None;
    for n in 1..=5u64 {
        let p = within("a publication on node B", sub.next_publication())
            .await
            .unwrap();
        assert_eq!(n_of(&p), n);
        last = Some(Position {
            offset: p.offset,
            epoch: p.epoch.clone(),
        });
    }
    let last = last.unwrap();

    b.kill().await.unwrap();
    for n in 6..=10u64 {
        api_a.publish("chat:k", &json!({"n": n})).await.unwrap();
    }

    // carol comes back on node A and recovers from where she was, on the wire: the reply
    // holds exactly 6..=10, and live pushes continue at 11 with nothing twice.
    let mut raw = Raw::connect(&a, "carol").await;
    raw.send(json!({"type": "subscribe", "id": "1", "payload": {
        "channel": "chat:k", "recover": true, "offset": last.offset, "epoch": last.epoch,
    }}))
    .await;
    let reply = raw.next_of("reply").await;
    assert_eq!(reply["payload"]["recovered"], true, "{reply}");
    let recovered: Vec<u64> = reply["payload"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(recovered, (6..=10).collect::<Vec<_>>());
    for n in 11..=13u64 {
        api_a.publish("chat:k", &json!({"n": n})).await.unwrap();
    }
    for offset in 11..=13u64 {
        let push = raw.next_of("message").await;
        assert_eq!(push["payload"]["offset"], offset, "{push}");
    }

    // The dead node's presence lease runs out: only the live connection stays.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let presence = api_a
            .call("presence", json!({"channel": "chat:k"}))
            .await
            .unwrap();
        if presence["count"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B's presence never expired: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_redis_restart_is_reported_and_delivery_resumes() {
    let mut redis = TestRedis::start();
    let a = node(&redis).await;
    let api = HubApi::new(&a.base_url, API_KEY).unwrap();
    let dave = client(&a, "dave").await;
    let mut sub = dave.subscribe("chat:r").await.unwrap();
    for n in 1..=3u64 {
        api.publish("chat:r", &json!({"n": n})).await.unwrap();
    }
    let mut epoch = String::new();
    for n in 1..=3u64 {
        let p = within("a publication", sub.next_publication())
            .await
            .unwrap();
        assert_eq!(n_of(&p), n);
        epoch = p.epoch;
    }

    redis.stop();
    // A publish while Redis is away is refused with the documented error, not lost.
    let refused = api.publish("chat:r", &json!({"n": 4})).await.unwrap_err();
    assert_eq!(refused.code(), "INTERNAL_ERROR", "{refused}");
    assert!(
        refused.to_string().contains("Redis is unreachable"),
        "{refused}"
    );
    let ready = format!("{}/ready", a.base_url);
    let http = reqwest::Client::new();
    let status = |http: reqwest::Client, ready: String| async move {
        http.get(&ready).send().await.unwrap().status().as_u16()
    };
    within("/ready to turn 503", async {
        while status(http.clone(), ready.clone()).await != 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Redis comes back empty: the node reconnects, and dave is told his history is gone.
    redis.restart();
    within("/ready to turn 200", async {
        while status(http.clone(), ready.clone()).await != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let told = within("the recovery verdict", async {
        loop {
            match sub.next().await {
                Some(SubscriptionEvent::Recovered { recovered, .. }) => return recovered,
                Some(_) => {}
                None => panic!("the subscription ended"),
            }
        }
    })
    .await;
    assert!(!told, "history was lost: recovery must say so");
    api.publish("chat:r", &json!({"n": 5})).await.unwrap();
    let p = within("a publication after the restart", sub.next_publication())
        .await
        .unwrap();
    assert_eq!(n_of(&p), 5);
    assert_eq!(p.offset, 1, "a new epoch starts at 1");
    assert_ne!(p.epoch, epoch);
}
