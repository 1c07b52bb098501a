//! `Upload` against a real hub: pause and resume, cancel and resume from the store in a new
//! `Upload`, retries across a server restart, multipart mode, progress figures.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::http::{Http, Progress};
use ferry_client::upload::{Upload, UploadControl};
use ferry_proto::reconnect::Backoff;
use tempfile::TempDir;
use tokio::sync::mpsc;
use ws_support::{TestServer, test_config, within};

fn payload(dir: &Path, len: usize) -> PathBuf {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let path = dir.join("file.bin");
    std::fs::write(&path, data).unwrap();
    path
}

async fn server(data: &Path) -> TestServer {
    let mut config = test_config("127.0.0.1:0".parse().unwrap());
    config.data_dir = data.to_path_buf();
    TestServer::start_with(config).await
}

async fn fetch(http: &Http, url: &str, server: &TestServer) -> Vec<u8> {
    http.get(url)
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn pause_holds_between_chunks_and_resume_finishes() {
    let tmp = TempDir::new().unwrap();
    let server = server(&tmp.path().join("data")).await;
    let file = payload(tmp.path(), 100_000);
    let http = Http::new().unwrap();
    let control = UploadControl::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let pauser = control.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let all = seen.clone();
    let upload = Upload::tus(&http, &server.http("/files/"), &file)
        .chunk_size(30_000)
        .header("Authorization", format!("Bearer {}", server.token("alice")))
        .control(control.clone())
        .on_progress(move |p| {
            if p.loaded == 30_000 {
                pauser.pause();
            }
            all.lock().unwrap().push(p.loaded);
            let _ = tx.send(*p);
        });
    let task = tokio::spawn(upload.start());
    loop {
        let p = within("progress", rx.recv()).await.unwrap();
        if p.loaded == 30_000 {
            assert_eq!(p.total, Some(100_000));
            assert_eq!(p.percentage, Some(30.0));
            break;
        }
    }
    // Paused after the first chunk: nothing more is sent until resume.
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    assert_eq!(*seen.lock().unwrap().last().unwrap(), 30_000);
    control.resume();
    let done = within("upload", task).await.unwrap().unwrap();
    assert_eq!(done.size, 100_000);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![0, 30_000, 60_000, 90_000, 100_000]
    );
    assert_eq!(
        fetch(&http, &done.url, &server).await,
        std::fs::read(&file).unwrap()
    );
}

#[tokio::test]
async fn cancel_then_a_new_upload_resumes_from_the_store() {
    let tmp = TempDir::new().unwrap();
    let server = server(&tmp.path().join("data")).await;
    let file = payload(tmp.path(), 64_000);
    let store = tmp.path().join("resume.json");
    let http = Http::new().unwrap();
    let auth = format!("Bearer {}", server.token("alice"));
    let control = UploadControl::new();
    let canceller = control.clone();
    let err = Upload::tus(&http, &server.http("/files/"), &file)
        .chunk_size(16_000)
        .resume_store(&store)
        .header("Authorization", &auth)
        .control(control)
        .on_progress(move |p| {
            if p.loaded >= 32_000 {
                canceller.cancel();
            }
        })
        .start()
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(
        kept.as_object().unwrap().len(),
        1,
        "the store keeps the URL"
    );

    let done = Upload::tus(&http, &server.http("/files/"), &file)
        .chunk_size(16_000)
        .resume_store(&store)
        .header("Authorization", &auth)
        .start()
        .await
        .unwrap();
    assert_eq!(done.resumed_from, 32_000);
    assert_eq!(
        fetch(&http, &done.url, &server).await,
        std::fs::read(&file).unwrap()
    );
    let left: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert!(
        left.as_object().unwrap().is_empty(),
        "a finished upload leaves the store"
    );
}

#[tokio::test]
async fn chunks_are_retried_with_backoff_across_a_server_restart() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let server = server(&data).await;
    let addr = server.addr;
    let token = server.token("alice");
    let file = payload(tmp.path(), 50_000);
    let http = Http::new().unwrap();
    let control = UploadControl::new();
    let pauser = control.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let upload = Upload::tus(&http, &server.http("/files/"), &file)
        .chunk_size(10_000)
        .header("Authorization", format!("Bearer {token}"))
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            max_attempts: Some(100),
            ..Backoff::default()
        })
        .control(control.clone())
        .on_progress(move |p| {
            if p.loaded == 10_000 {
                pauser.pause();
            }
            let _ = tx.send(p.loaded);
        });
    let task = tokio::spawn(upload.start());
    while within("progress", rx.recv()).await.unwrap() != 10_000 {}
    server.stop().await;
    // In the server's place, a listener that drops every connection: the next chunk
    // fails, and its retry (after a backoff delay) is seen here.
    let refuser = tokio::net::TcpListener::bind(addr).await.unwrap();
    control.resume();
    for _ in 0..2 {
        let (conn, _) = within("a retried chunk", refuser.accept()).await.unwrap();
        drop(conn);
    }
    drop(refuser);
    // The server comes back on the same port with the same data dir; the upload goes on.
    let mut config = test_config(addr);
    config.data_dir = data.clone();
    let server = TestServer::start_with(config).await;
    let done = within("upload", task).await.unwrap().unwrap();
    assert_eq!(
        fetch(&http, &done.url, &server).await,
        std::fs::read(&file).unwrap()
    );
}

#[tokio::test]
async fn multipart_mode_posts_the_file() {
    let tmp = TempDir::new().unwrap();
    let server = server(&tmp.path().join("data")).await;
    let file = payload(tmp.path(), 20_000);
    let http = Http::new().unwrap();
    let done = Upload::multipart(&http, &server.http("/upload"), &file)
        .header("Authorization", format!("Bearer {}", server.token("alice")))
        .start()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&done.response).unwrap();
    let url = server.http(answer["files"][0]["url"].as_str().unwrap());
    assert_eq!(answer["files"][0]["size"], 20_000);
    assert_eq!(
        fetch(&http, &url, &server).await,
        std::fs::read(&file).unwrap()
    );
}
