//! The `/test/*` testbed over real loopback sockets: the WebSocket echo and the
//! httpbin-like HTTP endpoints, with their caps.
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{SseClient, TestServer, WAIT};
use tokio_tungstenite::tungstenite::Message;

type Echo =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A plain WebSocket (no subprotocol) to `/test/echo`.
async fn echo_socket(server: &TestServer) -> Echo {
    let (socket, response) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(server.ws_url("/test/echo")),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    assert_eq!(response.status().as_u16(), 101);
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    socket
}

/// The next text or binary message (control frames skipped).
async fn next_data(socket: &mut Echo) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("message");
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            return message;
        }
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn echo_returns_text_and_binary_messages_unchanged() {
    let server = TestServer::start_with(|cfg| cfg.limits.testbed_max_echo_size = 4 << 20).await;
    let mut socket = echo_socket(&server).await;

    socket.send(Message::text("héllo, ferry")).await.unwrap();
    assert_eq!(next_data(&mut socket).await, Message::text("héllo, ferry"));

    let small = vec![0u8, 1, 2, 0xfe, 0xff];
    socket.send(Message::binary(small.clone())).await.unwrap();
    assert_eq!(next_data(&mut socket).await, Message::binary(small));

    // 2 MiB: past /ws's 1 MiB default, within the 4 MiB echo cap set above.
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    socket.send(Message::binary(big.clone())).await.unwrap();
    match next_data(&mut socket).await {
        Message::Binary(echoed) => assert!(echoed[..] == big[..], "2 MiB echoed byte for byte"),
        other => panic!("expected binary, got {other:?}"),
    }

    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn echo_closes_with_1009_when_a_message_is_over_the_limit() {
    let server = TestServer::start_with(|cfg| cfg.limits.testbed_max_echo_size = 64 * 1024).await;
    let mut socket = echo_socket(&server).await;

    // Just under the limit still echoes.
    let fits = vec![7u8; 60 * 1024];
    socket.send(Message::binary(fits.clone())).await.unwrap();
    assert_eq!(next_data(&mut socket).await, Message::binary(fits));

    socket
        .send(Message::binary(vec![7u8; 100 * 1024]))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before the close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    };
    assert_eq!(code, 1009, "message too big");
}

#[tokio::test]
async fn anything_reflects_method_args_headers_and_bodies() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();

    let body: Value = client
        .post(server.http("/test/anything?a=1&a=2&b=x%20y"))
        .header("x-ferry-test", "yes")
        .json(&json!({"k": "v", "n": [1, 2]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/test/anything");
    assert_eq!(body["args"], json!({"a": ["1", "2"], "b": "x y"}));
    assert_eq!(body["headers"]["x-ferry-test"], "yes");
    assert_eq!(body["headers"]["content-type"], "application/json");
    assert_eq!(body["json"], json!({"k": "v", "n": [1, 2]}));
    assert_eq!(body["form"], json!({}));
    assert_eq!(body["origin"], "127.0.0.1");

    let body: Value = client
        .put(server.http("/test/anything/some/path"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=ferry&greeting=hello+world")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/test/anything/some/path");
    assert_eq!(
        body["form"],
        json!({"name": "ferry", "greeting": "hello world"})
    );
    assert_eq!(body["json"], Value::Null);
    assert_eq!(body["data"], "name=ferry&greeting=hello+world");

    let body: Value = client
        .delete(server.http("/test/anything"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["args"], json!({}));
}

#[tokio::test]
async fn status_answers_with_the_code_asked_for() {
    let server = TestServer::start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(server.http(path)).send();

    for code in [200u16, 204, 404, 418, 500] {
        assert_eq!(
            get(&format!("/test/status/{code}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            code
        );
    }

    let r = get("/test/status/503?retry_after=7").await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "7");

    for code in [301u16, 302, 307] {
        let r = get(&format!("/test/status/{code}")).await.unwrap();
        assert_eq!(r.status().as_u16(), code);
        assert_eq!(r.headers()["location"], "/test/anything");
    }

    let r = get("/test/status/401").await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    for bad in ["/test/status/99", "/test/status/600", "/test/status/abc"] {
        assert_eq!(get(bad).await.unwrap().status().as_u16(), 400, "{bad}");
    }
}

#[tokio::test]
async fn delay_waits_but_never_longer_than_the_cap() {
    let server = TestServer::start_with(|cfg| cfg.limits.testbed_max_delay_secs = 1).await;
    let (status, body) = get_json(&server.http("/test/delay/0.05")).await;
    assert_eq!(status, 200);
    assert_eq!(body["delay"].as_f64(), Some(0.05));

    let capped = tokio::time::timeout(WAIT, get_json(&server.http("/test/delay/100")))
        .await
        .expect("a capped delay answers in time");
    assert_eq!(capped.0, 200);
    assert_eq!(capped.1["delay"].as_f64(), Some(1.0), "the cap, not 100");

    let (status, body) = get_json(&server.http("/test/delay/-5")).await;
    assert_eq!((status, body["delay"].as_f64()), (200, Some(0.0)));
}

async fn fetch_bytes(url: String) -> bytes::Bytes {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    r.bytes().await.unwrap()
}

#[tokio::test]
async fn bytes_are_deterministic_per_seed_and_capped() {
    let server = TestServer::start_with(|cfg| cfg.limits.testbed_max_bytes = 4096).await;
    let fetch = |path: &str| fetch_bytes(server.http(path));
    let a = fetch("/test/bytes/1000?seed=1").await;
    assert_eq!(a.len(), 1000);
    assert_eq!(
        a,
        fetch("/test/bytes/1000?seed=1").await,
        "same seed, same bytes"
    );
    assert_ne!(
        a,
        fetch("/test/bytes/1000?seed=2").await,
        "another seed, other bytes"
    );
    assert_eq!(
        fetch("/test/bytes/1000").await,
        fetch("/test/bytes/1000?seed=0").await
    );
    assert!(a.iter().any(|b| *b != a[0]), "not a constant fill");

    assert_eq!(
        fetch("/test/bytes/100000").await.len(),
        4096,
        "capped by testbed_max_bytes"
    );
    assert_eq!(fetch("/test/bytes/0").await.len(), 0);
}

#[tokio::test]
async fn stream_sends_n_json_lines_at_most_100() {
    let server = TestServer::start().await;
    let lines = |n: usize| {
        let url = server.http(&format!("/test/stream/{n}"));
        async move {
            let r = reqwest::get(url).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.headers()["content-type"], "application/x-ndjson");
            let text = r.text().await.unwrap();
            assert!(text.is_empty() || text.ends_with('\n'));
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let five = lines(5).await;
    let ids: Vec<u64> = five.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert_eq!(five[0]["url"], "/test/stream/5");
    assert_eq!(lines(500).await.len(), 100, "capped at 100 lines");
    assert!(lines(0).await.is_empty());
}

#[tokio::test]
async fn sse_ticks_with_ids_and_resumes_after_last_event_id() {
    let server = TestServer::start().await;
    let mut ticker = SseClient::open(&server.http("/test/sse?count=3&interval_ms=10"), &[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let event = ticker.next_event().await;
        assert_eq!(event.event, "tick");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["n"].to_string(), event.id);
        assert!(data["time"].as_u64().unwrap() > 0);
        ids.push(event.id);
    }
    assert_eq!(ids, ["1", "2", "3"]);
    assert!(
        ticker.expect_end().await.is_empty(),
        "count is honoured: the stream ends"
    );

    let mut resumed = SseClient::open(
        &server.http("/test/sse?count=5&interval_ms=10"),
        &[("last-event-id", "2")],
    )
    .await;
    let events = resumed.expect_end().await;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["3", "4", "5"], "resumes at the next id");
}

#[tokio::test]
async fn without_the_testbed_its_routes_are_not_found() {
    let server = TestServer::start_with(|cfg| cfg.testbed = false).await;
    for path in [
        "/test/anything",
        "/test/status/200",
        "/test/delay/0",
        "/test/bytes/10",
        "/test/stream/1",
        "/test/sse",
        "/test/echo",
    ] {
        assert_eq!(server.status_of(path).await, 404, "{path}");
    }
    let refused = tokio_tungstenite::connect_async(server.ws_url("/test/echo")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 404);
        }
        other => panic!(
            "echo upgrade without the testbed: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // The hub itself still serves.
    assert_eq!(server.status_of("/health").await, 200);
}
