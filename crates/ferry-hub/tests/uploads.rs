//! `/files/` (tus 1.0), `GET /files/{id}` with Range and `/upload` (multipart) against a
//! real server on loopback: restart mid-upload, checksums, limits, expiry, termination,
//! concatenation, hostile input, locking, the completion event.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_hub::Config;
use reqwest::{Client, Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{API_KEY, TestServer, WAIT};
use tempfile::TempDir;

fn uploads_config(dir: &Path) -> impl FnOnce(&mut Config) {
    let dir = dir.to_path_buf();
    move |c: &mut Config| {
        c.data_dir = dir.join("data");
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

struct Tus {
    http: Client,
    base: String,
    auth: String,
}

impl Tus {
    fn new(server: &TestServer, user: &str) -> Tus {
        Tus {
            http: Client::new(),
            base: server.http(""),
            auth: format!("Bearer {}", server.token(user)),
        }
    }
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.http
            .request(method, url)
            .header("Tus-Resumable", "1.0.0")
            .header("Authorization", &self.auth)
    }
    async fn create(&self, len: u64, metadata: Option<&str>) -> reqwest::Response {
        let mut r = self
            .req(Method::POST, "/files/")
            .header("Upload-Length", len.to_string());
        if let Some(m) = metadata {
            r = r.header("Upload-Metadata", m);
        }
        r.send().await.unwrap()
    }
    async fn create_ok(&self, len: u64) -> String {
        let r = self.create(len, Some("filename cGF5bG9hZC5iaW4=")).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with("/files/"), "{loc}");
        loc
    }
    async fn patch(&self, loc: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
        self.req(Method::PATCH, loc)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .unwrap()
    }
    async fn offset(&self, loc: &str) -> (StatusCode, Option<u64>) {
        let r = self.req(Method::HEAD, loc).send().await.unwrap();
        let o = r
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (r.status(), o)
    }
    async fn get(&self, loc: &str, range: Option<&str>) -> reqwest::Response {
        let mut r = self.req(Method::GET, loc);
        if let Some(range) = range {
            r = r.header("Range", range);
        }
        r.send().await.unwrap()
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(list) = std::fs::read_dir(dir) {
        for e in list.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_in(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn options_advertise_version_extensions_and_checksums() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let r = Client::new()
        .request(Method::OPTIONS, server.http("/files/"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let h = r.headers();
    assert_eq!(h["tus-version"], "1.0.0");
    let ext = h["tus-extension"].to_str().unwrap();
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "termination",
        "concatenation",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e} missing from {ext}");
    }
    assert_eq!(h["tus-checksum-algorithm"], "sha1,sha256");
    assert_eq!(h["tus-max-size"], (4u64 << 30).to_string().as_str());
}

#[tokio::test]
async fn a_server_restart_mid_upload_loses_nothing() {
    let tmp = TempDir::new().unwrap();
    let body = data(300_000, 7);
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let loc = tus.create_ok(body.len() as u64).await;
    let r = tus.patch(&loc, 0, body[..120_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], "120000");
    server.stop().await;

    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    assert_eq!(tus.offset(&loc).await, (StatusCode::OK, Some(120_000)));
    // A stale offset is refused, never written at the wrong place.
    assert_eq!(
        tus.patch(&loc, 0, body[..10].to_vec()).await.status(),
        StatusCode::CONFLICT
    );
    let r = tus.patch(&loc, 120_000, body[120_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got = tus.get(&loc, None).await;
    assert_eq!(got.status(), StatusCode::OK);
    let etag = got.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());
    assert_eq!(etag, format!("\"{:x}\"", Sha256::digest(&body)));
}

#[tokio::test]
async fn checksum_mismatch_is_460_and_discards_the_chunk() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let body = data(2000, 1);
    let loc = tus.create_ok(2000).await;
    let bad = tus
        .req(Method::PATCH, &loc)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header(
            "Upload-Checksum",
            format!(
                "sha1 {}",
                STANDARD.encode(sha1::Sha1::digest(b"other bytes"))
            ),
        )
        .body(body[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 460);
    assert_eq!(tus.offset(&loc).await.1, Some(0));
    let unsupported = tus
        .req(Method::PATCH, &loc)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")
        .body(body[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), StatusCode::BAD_REQUEST);
    for (offset, part, algo) in [
        (0usize, &body[..1000], "sha1"),
        (1000, &body[1000..], "sha256"),
    ] {
        let digest = if algo == "sha1" {
            STANDARD.encode(sha1::Sha1::digest(part))
        } else {
            STANDARD.encode(Sha256::digest(part))
        };
        let ok = tus
            .req(Method::PATCH, &loc)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", format!("{algo} {digest}"))
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT, "{algo}");
    }
    assert_eq!(
        tus.get(&loc, None).await.bytes().await.unwrap().as_ref(),
        body.as_slice()
    );
}

#[tokio::test]
async fn size_type_and_quota_limits() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let server = TestServer::start_with(move |c| {
        c.data_dir = dir.join("data");
        c.uploads.max_size = 1000;
        c.uploads.user_quota = 1500;
        c.uploads.allowed_types = vec!["image/*".into(), "application/octet-stream".into()];
    })
    .await;
    let tus = Tus::new(&server, "alice");
    let meta = |t: &str| format!("filetype {}", STANDARD.encode(t));
    let octets = meta("application/octet-stream");
    assert_eq!(
        tus.create(1001, Some(&octets)).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        tus.create(10, Some(&meta("text/html"))).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        tus.create(10, None).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        tus.create(10, Some(&meta("image/png"))).await.status(),
        StatusCode::CREATED
    );
    let first = tus.create(1000, Some(&octets)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let loc = first.headers()["location"].to_str().unwrap().to_string();
    // 1010 of 1500 bytes used: 600 more would pass the quota.
    assert_eq!(
        tus.create(600, Some(&octets)).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Another user has a quota of their own.
    assert_eq!(
        Tus::new(&server, "bob")
            .create(600, Some(&octets))
            .await
            .status(),
        StatusCode::CREATED
    );
    // Bytes past Upload-Length are refused.
    assert_eq!(
        tus.patch(&loc, 0, vec![0; 1001]).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A deferred length is capped by the size limit as bytes arrive.
    let deferred = tus
        .req(Method::POST, "/files/")
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", &octets)
        .send()
        .await
        .unwrap();
    assert_eq!(deferred.status(), StatusCode::CREATED);
    let dloc = deferred.headers()["location"].to_str().unwrap().to_string();
    let r = tus
        .req(Method::PATCH, &dloc)
        .header("Upload-Offset", "0")
        .header("Upload-Length", "2000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Multipart: the same limits.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![0u8; 1200])
            .file_name("big.bin")
            .mime_str("application/octet-stream")
            .unwrap(),
    );
    let r = tus
        .http
        .post(server.http("/upload"))
        .header("Authorization", &tus.auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn deferred_length_and_creation_with_upload() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let body = data(5000, 3);
    let r = tus
        .req(Method::POST, "/files/")
        .header("Upload-Length", "5000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(body[..3000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["upload-offset"], "3000");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        tus.patch(&loc, 3000, body[3000..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tus.get(&loc, None).await.bytes().await.unwrap().as_ref(),
        body.as_slice()
    );

    let r = tus
        .req(Method::POST, "/files/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let head = tus.req(Method::HEAD, &loc).send().await.unwrap();
    assert_eq!(head.headers()["upload-defer-length"], "1");
    assert_eq!(
        tus.patch(&loc, 0, body[..100].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = tus
        .req(Method::PATCH, &loc)
        .header("Upload-Offset", "100")
        .header("Upload-Length", "5000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(body[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus.get(&loc, None).await.bytes().await.unwrap().as_ref(),
        body.as_slice()
    );
}

#[tokio::test]
async fn expired_partial_uploads_are_swept() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let server = TestServer::start_with(move |c| {
        c.data_dir = dir.join("data");
        c.uploads.expiration_secs = 1;
        c.uploads.sweep_interval_ms = 50;
    })
    .await;
    let tus = Tus::new(&server, "alice");
    let partial = tus.create_ok(100).await;
    let done = tus.create_ok(4).await;
    assert_eq!(
        tus.patch(&done, 0, b"abcd".to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let head = tus.req(Method::HEAD, &partial).send().await.unwrap();
    assert!(head.headers().contains_key("upload-expires"));
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            if tus.offset(&partial).await.0 == StatusCode::NOT_FOUND {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the expired upload was not swept");
    assert_eq!(tus.offset(&done).await, (StatusCode::OK, Some(4)));
    let id = partial.rsplit('/').next().unwrap();
    assert!(!tmp.path().join(format!("data/uploads/{id}.bin")).exists());
}

#[tokio::test]
async fn termination_removes_the_upload() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let loc = tus.create_ok(10).await;
    assert_eq!(
        tus.patch(&loc, 0, b"12345".to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    // Someone else cannot see it, let alone delete it.
    let bob = Tus::new(&server, "bob");
    assert_eq!(
        bob.req(Method::DELETE, &loc).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = tus.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.offset(&loc).await.0, StatusCode::NOT_FOUND);
    assert!(files_in(&tmp.path().join("data/uploads")).is_empty());
}

#[tokio::test]
async fn concatenation_joins_partial_uploads() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let (a, b) = (data(70_000, 1), data(33_333, 2));
    let mut parts = Vec::new();
    for part in [&a, &b] {
        let r = tus
            .req(Method::POST, "/files/")
            .header("Upload-Length", part.len().to_string())
            .header("Upload-Concat", "partial")
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            tus.patch(&loc, 0, part.to_vec()).await.status(),
            StatusCode::NO_CONTENT
        );
        parts.push(loc);
    }
    let r = tus
        .req(Method::POST, "/files/")
        .header(
            "Upload-Concat",
            format!("final;{} {}", parts[0], server.http(&parts[1])),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let fin = r.headers()["location"].to_str().unwrap().to_string();
    let head = tus.req(Method::HEAD, &fin).send().await.unwrap();
    assert_eq!(head.headers()["upload-length"], "103333");
    assert!(
        head.headers()["upload-concat"]
            .to_str()
            .unwrap()
            .starts_with("final;")
    );
    let got = tus.get(&fin, None).await.bytes().await.unwrap();
    assert_eq!(got.as_ref(), [a, b].concat().as_slice());
    // A final upload cannot be patched; an incomplete part cannot be concatenated.
    assert_eq!(
        tus.patch(&fin, 103_333, vec![1]).await.status(),
        StatusCode::FORBIDDEN
    );
    let r = tus
        .req(Method::POST, "/files/")
        .header("Upload-Length", "5")
        .header("Upload-Concat", "partial")
        .send()
        .await
        .unwrap();
    let open = r.headers()["location"].to_str().unwrap().to_string();
    let r = tus
        .req(Method::POST, "/files/")
        .header("Upload-Concat", format!("final;{open}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn hostile_ids_and_names_are_refused_and_nothing_lands_outside_the_data_dir() {
    let tmp = TempDir::new().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let loc = tus.create_ok(4).await;
    let before = files_in(tmp.path());

    for id in [
        "..%2F..%2Foutside%2Fx",
        "%2e%2e",
        "..",
        "a%00b",
        &"a".repeat(200),
        "%EF%BC%A1",       // fullwidth A
        "abc%E2%80%AEfdp", // right-to-left override
        "abc.bin",
    ] {
        let path = format!("/files/{id}");
        for method in [Method::HEAD, Method::PATCH, Method::DELETE, Method::GET] {
            let r = tus
                .req(method.clone(), &path)
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/offset+octet-stream")
                .body(b"evil".to_vec())
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::BAD_REQUEST,
                "{method} {path}: {}",
                r.status()
            );
        }
    }
    for name in [
        "../../outside/evil",
        "a\0b",
        "evil\u{202E}gpj.exe",
        "..",
        "a/b",
        "a\\b",
    ] {
        let meta = format!("filename {}", STANDARD.encode(name));
        let r = tus.create(4, Some(&meta)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name:?}");
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"evil".to_vec()).file_name(name.to_string()),
        );
        let r = tus
            .http
            .post(server.http("/upload"))
            .header("Authorization", &tus.auth)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "multipart {name:?}");
    }
    assert_eq!(
        files_in(tmp.path()),
        before,
        "no file was created or removed"
    );
    assert!(files_in(&outside).is_empty());

    // A symlinked data file (planted by someone with access to the directory) is not
    // followed after a restart: the upload is skipped.
    let id = loc.rsplit('/').next().unwrap();
    let bin = tmp.path().join(format!("data/uploads/{id}.bin"));
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), &bin).unwrap();
    server.stop().await;
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    assert_eq!(tus.offset(&loc).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        tus.patch(&loc, 0, b"evil".to_vec()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"top secret"
    );
}

#[tokio::test]
async fn range_downloads_are_byte_exact() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let body = data(100_000, 9);
    let loc = tus.create_ok(body.len() as u64).await;
    // Not downloadable before it is complete.
    assert_eq!(tus.get(&loc, None).await.status(), StatusCode::CONFLICT);
    tus.patch(&loc, 0, body.clone()).await;
    for (range, start, end) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=10-9999", 10, 9999),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-100", 99_900, 99_999),
        ("bytes=50000-200000", 50_000, 99_999),
    ] {
        let r = tus
            .req(Method::GET, &loc)
            .header("Range", range)
            .header("Accept-Encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/100000").as_str()
        );
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &body[start..=end],
            "{range}"
        );
    }
    let r = tus.get(&loc, Some("bytes=100000-")).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    // A full download is not compressed either, and says it serves ranges.
    let r = tus
        .req(Method::GET, &loc)
        .header("Accept-Encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert!(r.headers().get("content-encoding").is_none());
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    // If-Range: the same version → the range; another → everything.
    let r = tus
        .req(Method::GET, &loc)
        .header("Range", "bytes=5-9")
        .header("If-Range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let r = tus
        .req(Method::GET, &loc)
        .header("Range", "bytes=5-9")
        .header("If-Range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
}

#[tokio::test]
async fn a_second_concurrent_patch_is_refused_not_interleaved() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let tus = Tus::new(&server, "alice");
    let loc = tus.create_ok(8).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let first = tus
        .req(Method::PATCH, &loc)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let first = tokio::spawn(first);
    tx.send(Ok(b"abcd".to_vec())).await.unwrap();
    // Wait until the first PATCH holds the upload. The probe asks at a wrong offset, so
    // it never takes the upload itself: 409 while the upload is free, 423 once it is held.
    tokio::time::timeout(WAIT, async {
        loop {
            let status = tus.patch(&loc, 8, Vec::new()).await.status();
            match status {
                StatusCode::LOCKED => break,
                StatusCode::CONFLICT => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("the probe got {other}"),
            }
        }
    })
    .await
    .expect("the first PATCH takes the upload");
    let second = tus.patch(&loc, 4, b"WXYZ".to_vec()).await;
    assert_eq!(second.status().as_u16(), 423);
    tx.send(Ok(b"efgh".to_vec())).await.unwrap();
    drop(tx);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus.get(&loc, None).await.bytes().await.unwrap().as_ref(),
        b"abcdefgh"
    );
}

#[tokio::test]
async fn a_finished_upload_is_announced_on_the_configured_channel() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let server = TestServer::start_with(move |c| {
        c.data_dir = dir.join("data");
        c.uploads.event_channel = "chat:uploads".into();
    })
    .await;
    let mut watcher = server.client("watcher").await;
    let r = watcher
        .request("subscribe", json!({"channel": "chat:uploads"}))
        .await;
    assert_eq!(r["type"], "reply");
    let tus = Tus::new(&server, "alice");
    let body = b"hello uploads".to_vec();
    let loc = tus.create_ok(body.len() as u64).await;
    tus.patch(&loc, 0, body.clone()).await;
    let m = watcher.next_of_type("message").await;
    let event = &m["payload"]["data"];
    assert_eq!(event["id"], loc.rsplit('/').next().unwrap());
    assert_eq!(event["name"], "payload.bin");
    assert_eq!(event["size"], body.len());
    assert_eq!(event["sha256"], format!("{:x}", Sha256::digest(&body)));
    assert_eq!(event["user"], "alice");
    assert_eq!(event["url"], loc.as_str());
    // Multipart uploads are announced too.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"xyz".to_vec()).file_name("m.txt"),
    );
    let r = Client::new()
        .post(server.http("/upload"))
        .header("Authorization", format!("apikey {API_KEY}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = watcher.next_of_type("message").await;
    assert_eq!(m["payload"]["data"]["name"], "m.txt");
    assert_eq!(m["payload"]["data"]["user"], "api");
}

#[tokio::test]
async fn uploads_need_auth_and_a_tus_version() {
    let tmp = TempDir::new().unwrap();
    let server = TestServer::start_with(uploads_config(tmp.path())).await;
    let r = Client::new()
        .post(server.http("/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let tus = Tus::new(&server, "alice");
    let r = tus
        .http
        .post(server.http("/files/"))
        .header("Authorization", &tus.auth)
        .header("Tus-Resumable", "0.2.2")
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = tus
        .http
        .post(server.http("/upload"))
        .body("not multipart")
        .header("Authorization", &tus.auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_cross_origin_browser_may_read_the_tus_headers() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let server = TestServer::start_with(move |c| {
        c.data_dir = dir.join("data");
        c.allowed_origins = vec!["http://app.example".into()];
    })
    .await;
    let tus = Tus::new(&server, "alice");
    let r = tus
        .req(Method::POST, "/files/")
        .header("Origin", "http://app.example")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "location",
        "upload-offset",
        "upload-length",
        "tus-resumable",
        "etag",
    ] {
        assert!(exposed.contains(name), "{name} is not exposed: {exposed}");
    }
}
