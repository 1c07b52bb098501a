//! H10: multipart upload of one or many files streamed from disk, with progress.
#![allow(clippy::unwrap_used)]

mod http_support;

use std::sync::{Arc, Mutex};

use ferry_client::http::{ErrorCode, Progress};
use http_support::{Hub, http};
use serde_json::Value;

#[tokio::test]
async fn uploads_several_files_and_fields_with_progress() {
    let hub = Hub::start_with(|c| c.limits.max_body_size = 8 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.json");
    std::fs::write(&a, "A".repeat(300_000)).unwrap();
    std::fs::write(&b, format!("{{\"pad\":\"{}\"}}", "b".repeat(200_000))).unwrap();
    let total = std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len();

    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = seen.clone();
    let r = http()
        .multipart(&hub.url("/test/anything"))
        .text("title", "two files")
        .files("upload", [&a, &b])
        .on_progress(move |p| sink.lock().unwrap().push(*p))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content_type = body["headers"]["content-type"].as_str().unwrap();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let data = body["data"].as_str().unwrap();
    assert!(data.contains("name=\"title\"\r\n\r\ntwo files\r\n"));
    assert!(data.contains("filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nAAAA"));
    assert!(data.contains("filename=\"b.json\"\r\nContent-Type: application/json\r\n\r\n{\"pad\""));
    assert!(data.contains(&"A".repeat(300_000)));
    // The length is announced, not chunked: the files were sized up front.
    assert!(body["headers"]["content-length"].as_str().is_some());

    let seen = seen.lock().unwrap();
    assert!(seen.len() > 2);
    assert!(seen.windows(2).all(|w| w[0].loaded <= w[1].loaded));
    let last = seen.last().unwrap();
    assert_eq!(last.loaded, total);
    assert_eq!(last.total, Some(total));
    assert_eq!(last.percentage, Some(100.0));
}

#[tokio::test]
async fn explicit_file_name_and_type_and_method() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("raw");
    std::fs::write(&a, "xyz").unwrap();
    let body: Value = http()
        .multipart(&hub.url("/test/anything"))
        .method(http::Method::PUT)
        .file_with(
            "doc",
            &a,
            Some("report.csv".into()),
            Some("text/csv".into()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["method"], "PUT");
    let data = body["data"].as_str().unwrap();
    assert!(
        data.contains("name=\"doc\"; filename=\"report.csv\"\r\nContent-Type: text/csv\r\n\r\nxyz"),
        "{data}"
    );
}

#[tokio::test]
async fn missing_file_is_io_error_and_nothing_is_sent() {
    let hub = Hub::start().await;
    let e = http()
        .multipart(&hub.url("/test/anything"))
        .file("f", "/definitely/not/here.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::IoError);
}
