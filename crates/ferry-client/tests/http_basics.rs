//! H1, H2, H5: methods, query, headers, bodies and the response value, against the hub's
//! testbed over loopback.
#![allow(clippy::unwrap_used)]

mod http_support;

use std::sync::atomic::Ordering;

use ferry_client::http::{ErrorCode, Http, RetryPolicy};
use futures_util::StreamExt;
use http_support::{Hub, Script, ScriptedServer, WAIT, http};
use serde_json::{Value, json};

#[tokio::test]
async fn every_method_reaches_the_server_with_query_and_headers() {
    let hub = Hub::start().await;
    let http = http();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, &hub.url("/test/anything?fixed=1"))
            .query("q", "a b")
            .query("q", "c")
            .header("x-custom", "yes")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["method"], method);
        assert_eq!(body["args"]["fixed"], "1");
        assert_eq!(body["args"]["q"], json!(["a b", "c"]));
        assert_eq!(body["headers"]["x-custom"], "yes");
        assert!(
            body["headers"]["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("ferry/")
        );
    }
    let head = http.head(&hub.url("/test/anything")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn base_url_and_default_headers() {
    let hub = Hub::start().await;
    let http = Http::builder()
        .base_url(hub.url("/test"))
        .default_header("x-app", "demo")
        .build()
        .unwrap();
    let body: Value = http
        .get("anything/deep")
        .bearer_auth("tok")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/test/anything/deep");
    assert_eq!(body["headers"]["x-app"], "demo");
    assert_eq!(body["headers"]["authorization"], "Bearer tok");
}

#[tokio::test]
async fn json_form_text_bytes_and_file_bodies() {
    let hub = Hub::start().await;
    let http = http();
    let url = hub.url("/test/anything");

    let body: Value = http
        .post(&url)
        .json(&json!({"a": [1, 2]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["json"], json!({"a": [1, 2]}));
    assert_eq!(body["headers"]["content-type"], "application/json");

    let body: Value = http
        .post(&url)
        .form([("k", "v 1"), ("x", "&")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["form"], json!({"k": "v 1", "x": "&"}));

    let body: Value = http
        .put(&url)
        .text("héllo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"], "héllo");
    assert_eq!(body["headers"]["content-type"], "text/plain; charset=utf-8");

    let body: Value = http
        .patch(&url)
        .bytes(vec![b'x'; 10])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"], "xxxxxxxxxx");
    assert_eq!(body["headers"]["content-type"], "application/octet-stream");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("note.txt");
    std::fs::write(&path, "from disk\n".repeat(1000)).unwrap();
    let body: Value = http
        .post(&url)
        .file(&path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"].as_str().unwrap().len(), 10_000);
    assert_eq!(body["headers"]["content-length"], "10000");
    assert_eq!(body["headers"]["content-type"], "text/plain");

    let missing = http
        .post(&url)
        .file(dir.path().join("nope"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::IoError);
}

#[tokio::test]
async fn response_value_and_body_accessors() {
    let hub = Hub::start().await;
    let http = http();
    let r = http.get(&hub.url("/test/status/418")).send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.status_text(), "I'm a teapot");
    assert!(!r.is_success());

    let r = http
        .get(&hub.url("/test/bytes/1000?seed=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.bytes().await.unwrap().len(), 1000);

    let r = http.get(&hub.url("/test/stream/5")).send().await.unwrap();
    assert!(r.headers().contains_key("content-type"));
    let mut stream = r.stream();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    let lines: Vec<Value> = String::from_utf8(all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["id"], 4);

    let text = http
        .get(&hub.url("/test/anything"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with('{'));
}

#[tokio::test]
async fn status_errors_and_decode_errors_have_codes() {
    let hub = Hub::start().await;
    let http = http();
    let e = http
        .get(&hub.url("/test/status/404"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpStatus);
    assert!(e.is_status());
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
    assert!(
        e.to_string().starts_with("HTTP_STATUS: HTTP 404 Not Found"),
        "{e}"
    );

    let ok = http.get(&hub.url("/test/status/204")).send().await.unwrap();
    assert_eq!(ok.error_for_status().await.unwrap().status(), 204);

    let e = http
        .get(&hub.url("/test/bytes/10"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::DecodeError);
    assert!(e.is_decode());
}

#[tokio::test]
async fn invalid_urls_and_headers_fail_before_sending() {
    let http = http();
    for url in [
        "not a url",
        "ftp://example.invalid/x",
        "http://",
        "/relative/without/base",
    ] {
        let e = http.get(url).send().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{url}: {e}");
    }
    let e = http
        .get("http://127.0.0.1:1/")
        .header("bad header", "x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    let e = Http::builder().pin("sha256/short").build().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    let e = Http::builder().base_url("::").build().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn one_pooled_connection_serves_sequential_requests() {
    let mut server = ScriptedServer::start(|_| Script::Reply("ok")).await;
    let http = Http::builder().retry(RetryPolicy::none()).build().unwrap();
    let clone = http.clone();
    for client in [&http, &clone, &http] {
        let text = client
            .get(&server.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text, "ok");
    }
    for _ in 0..3 {
        tokio::time::timeout(WAIT, server.requests.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}
