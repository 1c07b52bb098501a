//! The HTTP surface around the hub over real loopback sockets: a static directory with
//! compression, CORS, health and readiness, and the Origin check on upgrades.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{SseClient, TestServer, WAIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const INDEX: &str = "<!doctype html><title>ferry</title><p>hello</p>\n";
const ALLOWED: &str = "https://app.example";

/// A script well past the compression threshold.
fn app_js() -> String {
    (0..200)
        .map(|i| format!("console.log('ferry static file line {i}');\n"))
        .collect()
}

/// A static directory with `index.html` and `app.js`, and a server serving it.
async fn static_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), INDEX).unwrap();
    std::fs::write(dir.path().join("app.js"), app_js()).unwrap();
    let path = dir.path().to_path_buf();
    let server = TestServer::start_with(move |cfg| {
        cfg.static_dir = Some(path);
        cfg.allowed_origins = vec![ALLOWED.to_string()];
    })
    .await;
    (server, dir)
}

#[tokio::test]
async fn the_static_directory_is_served_at_the_root() {
    let (server, _dir) = static_server().await;
    let r = reqwest::get(server.http("/")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.text().await.unwrap(), INDEX);

    let r = reqwest::get(server.http("/app.js")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers().get("content-encoding").is_none(),
        "no compression unless asked"
    );
    assert_eq!(r.text().await.unwrap(), app_js());

    assert_eq!(server.status_of("/missing.js").await, 404);
    // The hub's own routes still win over the directory.
    assert_eq!(server.status_of("/health").await, 200);
}

#[tokio::test]
async fn files_are_gzip_compressed_for_clients_that_accept_it() {
    let (server, _dir) = static_server().await;
    // no_gzip: see the raw encoding even when reqwest's own decompression is compiled in
    // (cargo unifies reqwest's features across the workspace).
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = client
        .get(server.http("/app.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(
        body.len() < app_js().len() / 2,
        "{} bytes compressed",
        body.len()
    );
}

#[tokio::test]
async fn event_streams_are_never_compressed() {
    // A buffering encoder would hold events back; the stream must stay plain.
    let server = TestServer::start().await;
    let url = server.http(&format!(
        "/sse?channel=chat:a&token={}",
        server.token("alice")
    ));
    let response = reqwest::Client::new()
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    let mut sse = SseClient::new(response);
    let (status, _) = server
        .api()
        .post(
            "/api/publish",
            json!({"channel": "chat:a", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 200);
    let event = sse.next_event().await;
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["data"], json!({"n": 1}));
}

#[tokio::test]
async fn cors_preflight_is_answered_for_allowed_origins_only() {
    let (server, _dir) = static_server().await;
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, server.http("/api/publish"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight(ALLOWED).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED);
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods == "*" || methods.contains("POST"), "{methods}");
    assert!(r.headers().get("access-control-allow-headers").is_some());

    let r = preflight("https://other.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // A plain request from the allowed origin is labelled for the browser too.
    let r = reqwest::Client::new()
        .get(server.http("/health"))
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED);
}

#[tokio::test]
async fn health_and_ready_report_status() {
    let server = TestServer::start().await;
    let r = reqwest::get(server.http("/health")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = reqwest::get(server.http("/ready")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ready"}));
}

/// Upgrade to `/ws` with this `Origin`: `Ok(())` when accepted, `Err(status)` when refused.
async fn ws_with_origin(server: &TestServer, origin: &str) -> Result<(), u16> {
    let url = server.ws_url(&format!("/ws?token={}", server.token("alice")));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ferry.json".parse().unwrap());
    let result = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time");
    match result {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let (server, _dir) = static_server().await;
    assert_eq!(
        ws_with_origin(&server, "https://evil.example").await,
        Err(403)
    );
    assert_eq!(ws_with_origin(&server, ALLOWED).await, Ok(()));
    let same_origin = format!("http://{}", server.addr);
    assert_eq!(ws_with_origin(&server, &same_origin).await, Ok(()));

    // EventSource requests get the same check.
    let url = server.http(&format!(
        "/sse?channel=chat:a&token={}",
        server.token("alice")
    ));
    let r = reqwest::Client::new()
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "PERMISSION_DENIED"
    );
    SseClient::open(&url, &[("origin", ALLOWED)]).await;
}
