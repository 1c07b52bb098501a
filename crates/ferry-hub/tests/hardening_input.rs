//! Hardening (issue 8, part B) against hostile peers and operator slips, over real loopback sockets:
//! tokens not valid yet, `--static` symlinks out of the directory, numeric ids beyond
//! 2^64, invisible characters in channel names, deeply nested `data`, and a secrets file
//! left readable by others.
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{TestServer, WAIT, WsClient, now, token_with};
use tokio_tungstenite::tungstenite::Message;

// --- Tokens: `nbf` and `iat` ---------------------------------------------------------

#[tokio::test]
async fn tokens_not_valid_yet_are_refused_on_ws_sse_and_in_band() {
    let server = TestServer::start().await;
    let tomorrow = now() + 86_400;
    let cases = [
        (
            token_with(json!({"sub": "early", "nbf": tomorrow, "exp": tomorrow + 3600})),
            "not valid yet",
        ),
        (
            token_with(json!({"sub": "early", "iat": tomorrow, "exp": tomorrow + 3600})),
            "`iat` is in the future",
        ),
    ];
    for (token, why) in &cases {
        // /ws?token=
        let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
        let e = c.next_of_type("auth_error").await;
        assert_eq!(e["payload"]["code"], "AUTH_FAILED", "{e}");
        let message = e["payload"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
        // In-band `auth` on the same (still unauthenticated) connection.
        let r = c.request("auth", json!({"token": token})).await;
        assert_eq!(r["type"], "error");
        assert_eq!(r["payload"]["code"], "AUTH_FAILED");
        assert!(r["payload"]["message"].as_str().unwrap().contains(why));
        let r = c.request("subscribe", json!({"channel": "chat:x"})).await;
        assert_eq!(r["payload"]["code"], "AUTH_REQUIRED");
        // /sse?token=
        let r = reqwest::get(server.http(&format!("/sse?channel=chat:x&token={token}")))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "AUTH_FAILED");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    // Within the leeway (5 s) a token is accepted: clocks drift a little.
    let token =
        token_with(json!({"sub": "ok", "nbf": now() + 2, "iat": now() + 2, "exp": now() + 600}));
    let mut c = WsClient::connect(&server.ws_url(&format!("/ws?token={token}"))).await;
    assert_eq!(
        c.next_of_type("auth_success").await["payload"]["user"],
        "ok"
    );
    server.stop().await;
}

// --- `--static`: never outside its directory ---------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn static_files_never_resolve_outside_the_directory() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<p>inside</p>").unwrap();
    std::fs::create_dir(root.path().join("docs")).unwrap();
    std::fs::write(root.path().join("docs/a.txt"), "inside a").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret").unwrap();
    std::fs::write(outside.path().join("index.html"), "outside index").unwrap();
    symlink("/etc/passwd", root.path().join("passwd")).unwrap();
    symlink(
        outside.path().join("secret.txt"),
        root.path().join("secret.txt"),
    )
    .unwrap();
    symlink(outside.path(), root.path().join("out")).unwrap();
    // Links that stay inside the directory are fine.
    symlink(
        root.path().join("index.html"),
        root.path().join("home.html"),
    )
    .unwrap();
    symlink("docs", root.path().join("documents")).unwrap();
    let dir = root.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.static_dir = Some(dir)).await;
    let get = |path: &str| {
        let url = server.http(path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for path in [
        "/passwd",
        "/secret.txt",
        "/out/secret.txt",
        "/out/",
        "/out",
        "/out/index.html",
        "/%6fut/secret.txt",
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, 404, "{path} must be refused, got {body:?}");
        assert!(
            !body.contains("outside") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    assert_eq!(get("/home.html").await, (200, "<p>inside</p>".to_string()));
    assert_eq!(get("/documents/a.txt").await, (200, "inside a".to_string()));
    assert_eq!(get("/docs/a.txt").await, (200, "inside a".to_string()));
    assert_eq!(get("/").await, (200, "<p>inside</p>".to_string()));
    server.stop().await;
}

// --- Ids beyond 2^64 come back exactly -----------------------------------------------

/// The next text frame, as received.
async fn next_text(c: &mut WsClient) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, c.stream.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return t.as_str().to_string();
        }
    }
}

#[tokio::test]
async fn numeric_ids_are_echoed_verbatim() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    for id in [
        "18446744073709551617",
        "-99999999999999999999999",
        "1.50",
        "7",
    ] {
        c.send_text(&format!(r#"{{"type":"ping","id":{id}}}"#))
            .await;
        let text = next_text(&mut c).await;
        assert_eq!(
            text,
            format!(r#"{{"type":"reply","id":{id},"payload":{{}}}}"#)
        );
        // Errors echo it as well.
        c.send_text(&format!(
            r#"{{"type":"subscribe","id":{id},"payload":{{"channel":"nope:x"}}}}"#
        ))
        .await;
        let text = next_text(&mut c).await;
        assert!(text.contains(&format!(r#""id":{id},"#)), "{text}");
        assert!(text.contains("UNKNOWN_CHANNEL"), "{text}");
    }
    server.stop().await;
}

// --- Invisible characters in channel names -------------------------------------------

#[tokio::test]
async fn channel_names_with_format_characters_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    for name in [
        "chat:invoice\u{202E}fdp.exe",
        "chat:ad\u{200B}min",
        "chat:\u{2066}x\u{2069}",
    ] {
        let r = c.request("subscribe", json!({"channel": name})).await;
        assert_eq!(r["type"], "error", "{r}");
        assert_eq!(r["payload"]["code"], "UNKNOWN_CHANNEL");
        let message = r["payload"]["message"].as_str().unwrap();
        assert!(
            message.contains("invisible formatting characters"),
            "{message}"
        );
        let (status, body) = server
            .api()
            .post("/api/publish", json!({"channel": name, "data": 1}))
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "UNKNOWN_CHANNEL");
    }
    // Ordinary non-ASCII names are still fine.
    let r = c
        .request("subscribe", json!({"channel": "chat:café-日本"}))
        .await;
    assert_eq!(r["type"], "reply", "{r}");
    server.stop().await;
}

// --- Nesting depth of `data` ---------------------------------------------------------

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deeply_nested_data_is_refused_on_ws_and_the_api() {
    let server = TestServer::start().await;
    let mut c = server.client("alice").await;
    let deep = nested(40); // under serde_json's own limit of 128, over the default 32
    c.send_text(&format!(
        r#"{{"type":"publish","id":"p1","payload":{{"channel":"chat:d","data":{deep}}}}}"#
    ))
    .await;
    let r = c.answer("p1").await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["payload"]["code"], "INVALID_MESSAGE");
    assert!(
        r["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 32 deep"),
        "{r}"
    );
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/publish",
            format!(r#"{{"channel":"chat:d","data":{deep}}}"#),
        ),
        (
            "/api/broadcast",
            format!(r#"{{"channels":["chat:d","chat:e"],"data":{deep}}}"#),
        ),
    ] {
        let r = client
            .post(server.http(path))
            .header("authorization", format!("apikey {}", support::API_KEY))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "INVALID_MESSAGE", "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("max_data_depth"));
    }
    // At the limit it is accepted, and delivered unchanged.
    let r = c.request("subscribe", json!({"channel": "chat:d"})).await;
    assert_eq!(r["type"], "reply");
    let ok = nested(32);
    c.send_text(&format!(
        r#"{{"type":"publish","id":"p2","payload":{{"channel":"chat:d","data":{ok}}}}}"#
    ))
    .await;
    assert_eq!(c.answer("p2").await["type"], "reply");
    let m = c.next_of_type("message").await;
    assert_eq!(m["payload"]["data"].to_string(), ok);
    server.stop().await;
}

// --- secrets.toml left readable by others ---------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn a_readable_secrets_file_is_made_private_when_a_secret_is_added() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, "api_key = \"operator-key\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut config = support::test_config();
    config.data_dir = dir.path().to_path_buf();
    config.api_key = None;
    config.jwt_secret = None;
    ferry_hub::secrets::ensure_secrets(&mut config).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("operator-key") && text.contains("jwt_secret"),
        "{text}"
    );
    // The server uses the kept key and the added secret.
    let running = ferry_hub::Server::bind(config)
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/stats", running.local_addr()))
        .header("authorization", "apikey operator-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    running.shutdown().await.unwrap();
}
