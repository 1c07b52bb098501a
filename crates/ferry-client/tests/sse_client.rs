//! EventSource over loopback against the hub's /test/sse ticker, the hub's /sse endpoint
//! and a tiny scripted server: Last-Event-ID on reconnect, retry, filtering, states,
//! headers and auth.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::time::Duration;

use ferry_client::event_source::{ConnectionState, Event, EventSource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ws_support::{TestServer, next_state, within};

#[tokio::test]
async fn ticker_events_with_type_id_and_data() {
    let server = TestServer::start().await;
    let es = EventSource::builder(&server.http("/test/sse?count=3&interval_ms=10"))
        .no_reconnect()
        .connect()
        .await
        .unwrap();
    assert_eq!(es.state(), ConnectionState::Open);
    assert_eq!(within("open", es.recv()).await, Some(Event::Open));
    for n in 1..=3u64 {
        let m = within("tick", es.next_message()).await.unwrap();
        assert_eq!(m.event, "tick");
        assert_eq!(m.id, n.to_string());
        let data: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(data["n"], n);
    }
    assert_eq!(es.last_event_id(), "3");
    // The stream ends and reconnecting is off: an error, then closed.
    assert!(matches!(
        within("end", es.recv()).await,
        Some(Event::Error(_))
    ));
    assert_eq!(within("closed", es.recv()).await, None);
    assert_eq!(es.state(), ConnectionState::Closed);
    server.stop().await;
}

#[tokio::test]
async fn reconnects_with_last_event_id_and_continues_from_the_next_id() {
    let server = TestServer::start().await;
    // Resume as if ids 1 and 2 were seen: the first request sends Last-Event-ID: 2.
    let es = EventSource::builder(&server.http("/test/sse?count=5&interval_ms=10"))
        .last_event_id("2")
        .connect()
        .await
        .unwrap();
    let mut states = es.states();
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(within("tick", es.next_message()).await.unwrap().id);
        }
        ids
    };
    assert_eq!(ids, ["3", "4", "5"]);
    // The ticker ends after id 5; the client reconnects after the server's `retry: 1000`
    // with Last-Event-ID: 5, and the ticker has nothing after 5: no duplicate arrives.
    match next_state(&mut states).await {
        ConnectionState::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 1);
            assert_eq!(
                delay,
                Duration::from_millis(1000),
                "the server's retry: is honoured"
            );
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    es.reconnect_now();
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { .. }
    ));
    assert_eq!(es.last_event_id(), "5");
    es.close().await;
    // Everything delivered after the ticks: only Open and Error events, no message.
    while let Some(event) = es.recv().await {
        assert!(
            !matches!(event, Event::Message(_)),
            "duplicate after reconnect: {event:?}"
        );
    }
    server.stop().await;
}

/// A scripted SSE server: the first connection sends ids 1 and 2 then drops mid-stream;
/// later ones report the Last-Event-ID they got and continue from the next id.
async fn dropping_sse_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_string();
            let last_id = request.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("last-event-id:")
                    .map(|_| l[14..].trim().to_string())
            });
            let auth_ok = request
                .lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: Bearer sesame"));
            let _ = seen_tx.send(last_id.clone());
            if !auth_ok {
                let _ = tcp
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await;
                continue;
            }
            let start: u64 = last_id
                .and_then(|v| v.parse().ok())
                .map(|n: u64| n + 1)
                .unwrap_or(1);
            let mut body = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nretry: 20\n\n",
            );
            let end = if start == 1 { 2 } else { start + 1 };
            for n in start..=end {
                body.push_str(&format!("event: note\nid: {n}\ndata: {{\"n\":{n}}}\n\n: a comment\nevent: other\ndata: skip me\n\n"));
            }
            // Connection: close without chunked framing: the stream just stops, as when
            // a server or proxy dies mid-stream.
            let _ = tcp.write_all(body.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
    });
    (url, seen_rx)
}

#[tokio::test]
async fn a_dropped_stream_resumes_after_the_last_id_with_filtering_and_auth() {
    let (url, mut seen) = dropping_sse_server().await;
    let es = EventSource::builder(&url)
        .bearer_auth("sesame")
        .event("note")
        .connect()
        .await
        .unwrap();
    assert_eq!(within("first request", seen.recv()).await.unwrap(), None);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let m = within("note", es.next_message()).await.unwrap();
        assert_eq!(m.event, "note", "other types are filtered out");
        ids.push(m.id);
    }
    assert_eq!(ids, ["1", "2", "3", "4"]);
    // The reconnect sent the last id it had seen.
    assert_eq!(
        within("second request", seen.recv())
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    es.close().await;
}

#[tokio::test]
async fn refused_bad_status_and_wrong_type_are_errors_with_codes() {
    let (url, _seen) = dropping_sse_server().await;
    // Without the token: 401 is final, not retried.
    let e = EventSource::connect(&url).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("HTTP_STATUS", Some(401)));

    let refused = ws_support::closed_port();
    let e = EventSource::connect(&format!("http://{refused}/"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "CONNECTION_ERROR", "{e}");
    let e = EventSource::connect("ws://127.0.0.1:1/").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_URL");

    let server = TestServer::start().await;
    let e = EventSource::connect(&server.http("/test/anything"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PROTOCOL_ERROR");
    assert!(e.message().contains("text/event-stream"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn hub_sse_recovers_publications_missed_while_disconnected() {
    let server = TestServer::start().await;
    let es = EventSource::builder(&server.http("/sse?channel=chat:news"))
        .bearer_auth(&server.token("frank"))
        .connect()
        .await
        .unwrap();
    let mut states = es.states();
    server.publish("chat:news", json!(1)).await;
    let first: Value =
        serde_json::from_str(&within("live", es.next_message()).await.unwrap().data).unwrap();
    assert_eq!(first["data"], 1);

    assert!(matches!(
        server.drop_user("frank", &mut states).await,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    // Published while the client is away.
    server.publish("chat:news", json!(2)).await;
    server.publish("chat:news", json!(3)).await;
    es.reconnect_now();
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    server.publish("chat:news", json!(4)).await;
    let mut data = Vec::new();
    for _ in 0..3 {
        let m = within("recovered or live", es.next_message())
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&m.data).unwrap();
        data.push(v["data"].clone());
    }
    assert_eq!(data, [json!(2), json!(3), json!(4)], "no gap, no duplicate");
    es.close().await;
    server.stop().await;
}
