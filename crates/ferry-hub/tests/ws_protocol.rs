//! The `/ws` protocol over real loopback sockets: every command, push and reply shape.
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{TestServer, WsClient};
use tokio_tungstenite::tungstenite::Message;

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
    bob.send_text(
        r#"{"type":"publish","id":"2","payload":{"channel":"chat:lobby","data":{"text":"hi"}}}"#,
    )
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
        .post(
            "/api/publish",
            json!({"channel": "chat:lobby", "data": {"text": "from api"}}),
        )
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

async fn offsets_grow_by_exactly_one_and_publisher_gets_its_own_unless_skipped() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    let r = c
        .request("subscribe", json!({"channel": "chat:count"}))
        .await;
    assert_eq!(r["type"], "reply");
    for i in 1..=5u64 {
        let r = c
            .request("publish", json!({"channel": "chat:count", "data": i}))
            .await;
        assert_eq!(r["payload"]["offset"], i);
        let m = c.next_of_type("message").await;
        assert_eq!(m["payload"]["offset"], i);
        assert_eq!(m["payload"]["data"], i);
    }
    let r = c
        .request(
            "publish",
            json!({"channel": "chat:count", "data": "quiet", "skip_self": true}),
        )
        .await;
    assert_eq!(r["payload"]["offset"], 6);
    // A ping round trip after the skipped publish proves nothing else was queued first.
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["type"], "reply");
    assert!(
        c.buffered().iter().all(|f| f["type"] != "message"),
        "{:?}",
        c.buffered()
    );
    server.stop().await;
}

async fn connection_without_token_must_auth_first() {
    let server = TestServer::start().await;
    let mut c = WsClient::connect(&server.ws_url("/ws")).await;
    let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["payload"]["code"], "AUTH_REQUIRED");
    let r = c
        .request("auth", json!({"token": server.token("carol")}))
        .await;
    assert_eq!(r["type"], "reply");
    assert_eq!(r["payload"]["user"], "carol");
    assert!(r["payload"]["client"].as_str().unwrap().len() >= 8);
    let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(r["type"], "reply");
    server.stop().await;
}

async fn unsubscribe_stops_delivery_and_errors_name_the_problem() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    c.request("subscribe", json!({"channel": "chat:a"})).await;
    let again = c.request("subscribe", json!({"channel": "chat:a"})).await;
    assert_eq!(again["payload"]["code"], "ALREADY_SUBSCRIBED");
    let r = c.request("unsubscribe", json!({"channel": "chat:a"})).await;
    assert_eq!(r["type"], "reply");
    assert_eq!(r["payload"]["channel"], "chat:a");
    let r = c.request("unsubscribe", json!({"channel": "chat:a"})).await;
    assert_eq!(r["payload"]["code"], "NOT_SUBSCRIBED");
    server
        .api()
        .post("/api/publish", json!({"channel": "chat:a", "data": 1}))
        .await;
    c.request("ping", json!({})).await;
    assert!(c.buffered().iter().all(|f| f["type"] != "message"));
    server.stop().await;
}

async fn history_pages_forward_and_backward() {
    let server = TestServer::start().await;
    let api = server.api();
    for i in 1..=5 {
        api.post(
            "/api/publish",
            json!({"channel": "chat:h", "data": {"n": i}}),
        )
        .await;
    }
    let mut c = server.client("alice").await;
    let r = c
        .request("history", json!({"channel": "chat:h", "limit": 2}))
        .await;
    let p = &r["payload"];
    assert_eq!(p["offset"], 5);
    assert_eq!(p["has_more"], true);
    let offsets = support::offsets(&p["publications"]);
    assert_eq!(offsets, vec![1, 2]);
    let r = c
        .request("history", json!({"channel": "chat:h", "since": 2}))
        .await;
    let offsets = support::offsets(&r["payload"]["publications"]);
    assert_eq!(offsets, vec![3, 4, 5]);
    assert_eq!(r["payload"]["has_more"], false);
    assert_eq!(r["payload"]["publications"][0]["data"]["n"], 3);
    let r = c
        .request(
            "history",
            json!({"channel": "chat:h", "reverse": true, "limit": 2}),
        )
        .await;
    let offsets = support::offsets(&r["payload"]["publications"]);
    assert_eq!(offsets, vec![5, 4]);
    server.stop().await;
}

async fn presence_and_join_leave_pushes() {
    // Join/leave pushes are off by default (their cost is quadratic in a channel's size).
    let server = TestServer::start_with(|cfg| {
        if let Some(chat) = cfg.namespaces.get_mut("chat") {
            chat.join_leave = true;
        }
    })
    .await;
    let mut alice = server.client("alice").await;
    alice
        .request("subscribe", json!({"channel": "chat:p"}))
        .await;
    let mut bob = server.client("bob").await;
    bob.request("subscribe", json!({"channel": "chat:p"})).await;
    let join = alice.next_of_type("join").await;
    assert_eq!(join["payload"]["channel"], "chat:p");
    assert_eq!(join["payload"]["info"]["user"], "bob");
    let r = alice
        .request("presence", json!({"channel": "chat:p"}))
        .await;
    assert_eq!(r["payload"]["count"], 2);
    let users: Vec<&str> = r["payload"]["clients"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["user"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"alice") && users.contains(&"bob"),
        "{users:?}"
    );
    drop(bob);
    let leave = alice.next_of_type("leave").await;
    assert_eq!(leave["payload"]["info"]["user"], "bob");
    let r = alice
        .request("presence", json!({"channel": "chat:p"}))
        .await;
    assert_eq!(r["payload"]["count"], 1);
    server.stop().await;
}

async fn ping_without_id_gets_pong_and_batch_answers_each_command() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_of_type("pong").await["payload"], json!({}));
    c.send_json(json!({"type": "batch", "id": "b", "payload": {"commands": [
        {"type": "subscribe", "id": "b1", "payload": {"channel": "chat:batch"}},
        {"type": "publish", "id": "b2", "payload": {"channel": "chat:batch", "data": "x"}},
        {"type": "subscribe", "id": "b3", "payload": {"channel": "nope:x"}}
    ]}}))
    .await;
    assert_eq!(c.answer("b1").await["type"], "reply");
    assert_eq!(c.answer("b2").await["payload"]["offset"], 1);
    let e = c.answer("b3").await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["payload"]["code"], "UNKNOWN_CHANNEL");
    assert_eq!(c.answer("b").await["payload"]["count"], 3);
    assert_eq!(c.next_of_type("message").await["payload"]["data"], "x");
    server.stop().await;
}

async fn recovery_returns_missed_publications_or_says_it_cannot() {
    let server = TestServer::start().await;
    let api = server.api();
    let (_, first) = api
        .post("/api/publish", json!({"channel": "chat:r", "data": 1}))
        .await;
    let epoch = first["epoch"].as_str().unwrap().to_string();
    for i in 2..=4 {
        api.post("/api/publish", json!({"channel": "chat:r", "data": i}))
            .await;
    }
    let mut c = server.client("alice").await;
    let r = c
        .request(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["payload"]["recovered"], true);
    let offsets = support::offsets(&r["payload"]["publications"]);
    assert_eq!(offsets, vec![2, 3, 4]);
    api.post("/api/publish", json!({"channel": "chat:r", "data": 5}))
        .await;
    assert_eq!(c.next_of_type("message").await["payload"]["offset"], 5);

    let mut d = server.client("dave").await;
    let r = d
        .request(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": 3, "epoch": "other-epoch"}),
        )
        .await;
    assert_eq!(r["payload"]["recovered"], false);
    assert_eq!(r["payload"]["offset"], 5);
    assert!(r["payload"].get("publications").is_none());
    let bad = d
        .request("subscribe", json!({"channel": "chat:r2", "recover": true}))
        .await;
    assert_eq!(bad["payload"]["code"], "INVALID_MESSAGE");
    server.stop().await;
}

async fn recovery_beyond_retained_history_is_flagged() {
    let server = TestServer::start_with(|cfg| {
        cfg.namespaces.get_mut("chat").unwrap().history_size = 2;
    })
    .await;
    let api = server.api();
    let (_, first) = api
        .post("/api/publish", json!({"channel": "chat:short", "data": 1}))
        .await;
    for i in 2..=5 {
        api.post("/api/publish", json!({"channel": "chat:short", "data": i}))
            .await;
    }
    let mut c = server.client("alice").await;
    let r = c
        .request(
            "subscribe",
            json!({"channel": "chat:short", "recover": true, "offset": 1, "epoch": first["epoch"]}),
        )
        .await;
    assert_eq!(r["payload"]["recovered"], false);
    server.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_invalid_message_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    c.send_text("{not json").await;
    let e = c.next_of_type("error").await;
    assert_eq!(e["payload"]["code"], "INVALID_MESSAGE");
    c.send_text(r#"{"type":"teleport","id":"t"}"#).await;
    let e = c.answer("t").await;
    assert_eq!(e["payload"]["code"], "INVALID_MESSAGE");
    assert!(
        e["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("teleport")
    );
    c.send_text(r#"{"type":"publish","id":"m","payload":{"channel":"chat:x"}}"#)
        .await;
    let e = c.answer("m").await;
    assert_eq!(e["payload"]["code"], "INVALID_MESSAGE");
    assert!(e["payload"]["message"].as_str().unwrap().contains("data"));
    let r = c.request("ping", json!({})).await;
    assert_eq!(r["type"], "reply");
    server.stop().await;
}

async fn channel_rules_unknown_namespace_and_permissions() {
    let server = TestServer::start_with(|cfg| {
        cfg.namespaces.insert(
            "news".into(),
            ferry_hub::config::NamespaceConfig {
                allow_publish: false,
                ..Default::default()
            },
        );
    })
    .await;
    let mut c = server.client("alice").await;
    let r = c
        .request("subscribe", json!({"channel": "nope:room"}))
        .await;
    assert_eq!(r["payload"]["code"], "UNKNOWN_CHANNEL");
    let r = c
        .request("subscribe", json!({"channel": "news:today"}))
        .await;
    assert_eq!(r["type"], "reply");
    let r = c
        .request("publish", json!({"channel": "news:today", "data": 1}))
        .await;
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    // A token grant opens publishing where the namespace does not.
    let token = support::token_with(json!({
        "sub": "editor", "exp": support::now() + 60,
        "caps": [{"channels": ["news:*"], "allow": ["publish"]}]
    }));
    let mut editor = WsClient::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    editor.next_of_type("auth_success").await;
    let r = editor
        .request("publish", json!({"channel": "news:today", "data": "scoop"}))
        .await;
    assert_eq!(r["type"], "reply");
    assert_eq!(c.next_of_type("message").await["payload"]["data"], "scoop");
    server.stop().await;
}

async fn user_channels_are_private_to_their_users() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut eve = server.client("eve").await;
    let r = alice
        .request("subscribe", json!({"channel": "chat:dm#alice,bob"}))
        .await;
    assert_eq!(r["type"], "reply");
    let r = eve
        .request("subscribe", json!({"channel": "chat:dm#alice,bob"}))
        .await;
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    let r = eve
        .request(
            "publish",
            json!({"channel": "chat:dm#alice,bob", "data": "spam"}),
        )
        .await;
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    let mut bob = server.client("bob").await;
    let r = bob
        .request(
            "publish",
            json!({"channel": "chat:dm#alice,bob", "data": "psst"}),
        )
        .await;
    assert_eq!(r["type"], "reply");
    assert_eq!(
        alice.next_of_type("message").await["payload"]["data"],
        "psst"
    );
    server.stop().await;
}

async fn direct_sends_reach_one_connection_or_all_of_a_user() {
    let server = TestServer::start().await;
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (status, body) = server
        .api()
        .post(
            "/api/send",
            json!({"user": "alice", "data": {"hi": "all of you"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["delivered"], 2);
    assert_eq!(
        a1.next_of_type("direct").await["payload"]["data"]["hi"],
        "all of you"
    );
    assert_eq!(
        a2.next_of_type("direct").await["payload"]["data"]["hi"],
        "all of you"
    );
    let r = bob
        .request("auth", json!({"token": server.token("bob")}))
        .await;
    let client = r["payload"]["client"].as_str().unwrap().to_string();
    let (_, body) = server
        .api()
        .post("/api/send", json!({"client": client, "data": "just you"}))
        .await;
    assert_eq!(body["delivered"], 1);
    assert_eq!(
        bob.next_of_type("direct").await["payload"]["data"],
        "just you"
    );
    server.stop().await;
}

/// A client whose process dies (its TCP connection reset, no close frame) leaves no ghost
/// in presence: the entry is gone as soon as the hub sees the socket end.
async fn presence_of_a_crashed_client_is_cleaned_up() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut crashing = server.client("crashing").await;
    crashing
        .request("subscribe", json!({"channel": "chat:ghosts"}))
        .await;
    let mut watcher = server.client("watcher").await;
    watcher
        .request("subscribe", json!({"channel": "chat:ghosts"}))
        .await;
    let (_, p) = api
        .post("/api/presence", json!({"channel": "chat:ghosts"}))
        .await;
    assert_eq!(p["count"], 2, "{p}");
    // A crash: the socket is reset (SO_LINGER 0), no close frame is sent.
    let tcp = match crashing.stream.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("the test server is plain TCP"),
    };
    tcp.set_zero_linger().unwrap();
    drop(crashing);
    tokio::time::timeout(support::WAIT, async {
        loop {
            let (_, p) = api
                .post("/api/presence", json!({"channel": "chat:ghosts"}))
                .await;
            if p["count"] == 1 {
                let users: Vec<&serde_json::Value> =
                    p["clients"].as_object().unwrap().values().collect();
                assert_eq!(users[0]["user"], "watcher");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the crashed client's presence entry is removed");
    assert_eq!(
        watcher.request("ping", json!({})).await["type"],
        "reply",
        "the other client is untouched"
    );
    server.stop().await;
}

both_codecs!(
    offsets_grow_by_exactly_one_and_publisher_gets_its_own_unless_skipped,
    connection_without_token_must_auth_first,
    unsubscribe_stops_delivery_and_errors_name_the_problem,
    history_pages_forward_and_backward,
    presence_and_join_leave_pushes,
    ping_without_id_gets_pong_and_batch_answers_each_command,
    recovery_returns_missed_publications_or_says_it_cannot,
    recovery_beyond_retained_history_is_flagged,
    channel_rules_unknown_namespace_and_permissions,
    user_channels_are_private_to_their_users,
    direct_sends_reach_one_connection_or_all_of_a_user,
    presence_of_a_crashed_client_is_cleaned_up,
);

/// A publication made in one codec reaches subscribers of the other with the same value;
/// MessagePack binary reaches a JSON subscriber as base64 and a MessagePack subscriber as
/// the same bytes; history and recovery answer in each reader's codec.
#[tokio::test]
async fn a_publication_crosses_codecs() {
    use support::{Codec, with_codec};
    let server = TestServer::start().await;
    let mut json_side = with_codec(Codec::Json, server.client("alice")).await;
    let mut packed_side = with_codec(Codec::MsgPack, server.client("bob")).await;
    for c in [&mut json_side, &mut packed_side] {
        let r = c.request("subscribe", json!({"channel": "chat:mix"})).await;
        assert_eq!(r["type"], "reply", "{r}");
    }
    // JSON → both.
    let r = json_side
        .request(
            "publish",
            json!({"channel": "chat:mix", "data": {"n": -2, "f": 0.5, "s": "é"}}),
        )
        .await;
    assert_eq!(r["payload"]["offset"], 1);
    for c in [&mut json_side, &mut packed_side] {
        let m = c.next_of_type("message").await;
        assert_eq!(m["payload"]["data"], json!({"n": -2, "f": 0.5, "s": "é"}));
    }
    // MessagePack with a binary value → both (raw frame, to send real `bin`).
    let frame = rmpv::Value::Map(vec![
        ("type".into(), "publish".into()),
        ("id".into(), "bin".into()),
        (
            "payload".into(),
            rmpv::Value::Map(vec![
                ("channel".into(), "chat:mix".into()),
                (
                    "data".into(),
                    rmpv::Value::Map(vec![("blob".into(), rmpv::Value::Binary(vec![0, 1, 254]))]),
                ),
            ]),
        ),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &frame).unwrap();
    packed_side
        .stream
        .send(Message::binary(bytes))
        .await
        .unwrap();
    let reply = packed_side.answer("bin").await;
    assert_eq!(reply["payload"]["offset"], 2, "{reply}");
    let m = json_side.next_of_type("message").await;
    assert_eq!(
        m["payload"]["data"],
        json!({"blob": "AAH+"}),
        "base64 in JSON"
    );
    // The MessagePack subscriber gets a real binary value: read its raw frame.
    let raw = loop {
        let msg = tokio::time::timeout(support::WAIT, packed_side.stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(b) = msg {
            let v = rmpv::decode::read_value(&mut &b[..]).unwrap();
            if v["type"].as_str() == Some("message") {
                break v;
            }
        }
    };
    assert_eq!(
        raw["payload"]["data"]["blob"],
        rmpv::Value::Binary(vec![0, 1, 254])
    );
    // History read over JSON converts; recovery over MessagePack keeps the binary.
    let h = json_side
        .request("history", json!({"channel": "chat:mix"}))
        .await;
    assert_eq!(
        h["payload"]["publications"][1]["data"],
        json!({"blob": "AAH+"})
    );
    let mut late = with_codec(Codec::MsgPack, server.client("carol")).await;
    let epoch = h["payload"]["epoch"].clone();
    let r = late
        .request(
            "subscribe",
            json!({"channel": "chat:mix", "recover": true, "offset": 0, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["payload"]["recovered"], true, "{r}");
    assert_eq!(
        r["payload"]["publications"][1]["data"],
        json!({"blob": "AAH+"}),
        "the test client shows binary as base64 too"
    );
    server.stop().await;
}

/// The wrong kind of frame for the codec closes 1003, naming what to send.
#[tokio::test]
async fn a_text_frame_on_msgpack_closes_1003() {
    use support::{Codec, with_codec};
    let server = TestServer::start().await;
    let mut c = with_codec(Codec::MsgPack, server.client("alice")).await;
    c.send_text(r#"{"type":"ping","id":"1"}"#).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1003);
    assert!(reason.contains("binary frames"), "{reason}");
    server.stop().await;
}
