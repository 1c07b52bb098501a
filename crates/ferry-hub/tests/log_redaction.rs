//! Tokens and API keys never reach the logs, at any level: every log line of this process
//! (the hub runs in it) is captured at `trace` while clients authenticate with `?token=`,
//! `Authorization: Bearer`, `Authorization: apikey` and an in-band `auth` command.
//! Alone in its test binary because it installs the process-wide log subscriber.
#![allow(clippy::unwrap_used)]

mod raw_http;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::{API_KEY, TestServer, WsClient, now, token_with};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Every formatted log line, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The subscriber `ferry serve` installs (crates/ferry-cli/src/main.rs: level filter plus
/// `redact::may_log`), at `trace` for everything, writing into `captured`.
fn install(captured: &Captured) {
    let writer = captured.clone();
    let frames = tracing_subscriber::filter::filter_fn(|meta| {
        ferry_hub::redact::may_log(meta.target(), meta.level())
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
        .with(frames)
        .try_init()
        .unwrap();
}

#[tokio::test]
async fn tokens_and_api_keys_never_appear_in_logs_at_trace_level() {
    let captured = Captured::default();
    install(&captured);
    let server = TestServer::start().await;
    // secrets[1] refreshes secrets[0] (same user: a connection cannot switch users).
    let secrets: Vec<String> = (0..4u64)
        .map(|i| token_with(json!({"sub": format!("user{}", if i == 1 { 0 } else { i }), "exp": now() + 600 + i})))
        .collect();

    // WebSocket: token in the URL, then a refresh in-band.
    let mut ws = WsClient::connect(&server.ws_url(&format!("/ws?token={}", secrets[0]))).await;
    ws.next_of_type("auth_success").await;
    let r = ws.request("auth", json!({"token": secrets[1]})).await;
    assert_eq!(r["type"], "reply", "{r}");
    // A percent-encoded parameter name is decoded by the server, so it is a token too.
    let mut ws2 = WsClient::connect(&server.ws_url(&format!("/ws?%74oken={}", secrets[2]))).await;
    ws2.next_of_type("auth_success").await;

    // SSE with the token in the URL, and with a bearer header.
    let sse = raw_http::request(
        server.addr,
        None,
        "GET",
        &format!("/sse?channel=chat:a&token={}", secrets[3]),
        &[],
        None,
        true,
    )
    .await;
    assert_eq!(sse.status, 200);
    let bearer = format!("Bearer {}", secrets[0]);
    let sse = raw_http::request(
        server.addr,
        None,
        "GET",
        "/sse?channel=chat:b",
        &[("authorization", &bearer)],
        None,
        true,
    )
    .await;
    assert_eq!(sse.status, 200);

    // The server API with its key in the header, and (wrongly) in the query.
    let key = format!("apikey {API_KEY}");
    let stats = raw_http::request(
        server.addr,
        None,
        "GET",
        "/api/stats",
        &[("authorization", &key)],
        None,
        false,
    )
    .await;
    assert_eq!(stats.status, 200);
    raw_http::request(
        server.addr,
        None,
        "GET",
        &format!("/api/stats?api_key={API_KEY}"),
        &[],
        None,
        false,
    )
    .await;
    drop((ws, ws2));
    server.stop().await;

    let logs = captured.text();
    // The requests were logged (at debug), with the credentials redacted.
    assert!(logs.contains("/ws?token=<redacted>"), "{logs}");
    assert!(logs.contains("/ws?%74oken=<redacted>"), "{logs}");
    assert!(
        logs.contains("/sse?channel=chat:a&token=<redacted>"),
        "{logs}"
    );
    assert!(logs.contains("/api/stats?api_key=<redacted>"), "{logs}");
    for secret in secrets.iter().map(String::as_str).chain([API_KEY]) {
        // A JWT's signature part alone is enough to give it away.
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!logs.contains(tail), "`{tail}` was logged:\n{logs}");
    }
}
