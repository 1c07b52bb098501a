//! H8: download to a file with progress, resume by Range verified by If-Range, restart
//! when the resource changed — against `/test/range/{n}`.
#![allow(clippy::unwrap_used)]

mod http_support;

use std::sync::{Arc, Mutex};

use ferry_client::http::{CancellationToken, ErrorCode, Progress};
use http_support::{Hub, expected_range_bytes, http};

const SIZE: usize = 1 << 20;

fn recorder() -> (
    Arc<Mutex<Vec<Progress>>>,
    impl FnMut(&Progress) + Send + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |p: &Progress| sink.lock().unwrap().push(*p))
}

#[tokio::test]
async fn download_reports_progress_and_writes_the_file() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.bin");
    let (seen, cb) = recorder();
    let outcome = http()
        .download(&hub.url("/test/range/1048576?seed=1"), &path)
        .on_progress(cb)
        .start()
        .await
        .unwrap();
    assert_eq!(outcome.size, SIZE as u64);
    assert_eq!(outcome.resumed_from, 0);
    assert!(!outcome.restarted);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, SIZE, 1).await
    );
    assert!(!dir.path().join("file.bin.part").exists());
    assert!(!dir.path().join("file.bin.part.json").exists());

    let seen = seen.lock().unwrap();
    assert!(seen.len() > 2, "one report per chunk");
    assert!(seen.windows(2).all(|w| w[0].loaded <= w[1].loaded));
    let last = seen.last().unwrap();
    assert_eq!(last.loaded, SIZE as u64);
    assert_eq!(last.total, Some(SIZE as u64));
    assert_eq!(last.percentage, Some(100.0));
    assert!(last.speed >= 0.0);
}

#[tokio::test]
async fn cancelled_download_resumes_byte_identical() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let url = hub.url("/test/range/1048576?seed=2");
    let token = CancellationToken::new();
    let stop = token.clone();
    let e = http()
        .download(&url, &path)
        .cancel_token(token)
        .on_progress(move |p| {
            if p.loaded >= (SIZE / 3) as u64 {
                stop.cancel();
            }
        })
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cancelled);
    assert!(!path.exists());
    let partial = std::fs::metadata(dir.path().join("big.bin.part"))
        .unwrap()
        .len();
    assert!(
        partial >= (SIZE / 3) as u64 && partial < SIZE as u64,
        "{partial}"
    );

    let (seen, cb) = recorder();
    let outcome = http()
        .download(&url, &path)
        .resume(true)
        .on_progress(cb)
        .start()
        .await
        .unwrap();
    assert_eq!(outcome.resumed_from, partial);
    assert!(!outcome.restarted);
    assert_eq!(outcome.size, SIZE as u64);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, SIZE, 2).await
    );
    // Progress starts where the part file ended.
    assert_eq!(seen.lock().unwrap().first().unwrap().loaded, partial);
}

#[tokio::test]
async fn broken_connection_resumes_byte_identical() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.bin");
    let url = hub.url("/test/range/1048576?seed=3");
    let e = http()
        .download(&url, &path)
        .header("x-fail-after", "300000")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e.code(), ErrorCode::NetworkError), "{e:?}");
    // What arrived before the break (hyper may drop the last chunk the server flushed).
    let partial = std::fs::metadata(dir.path().join("net.bin.part"))
        .unwrap()
        .len();
    assert!(partial > 0 && partial <= 300_000, "{partial}");

    let outcome = http()
        .download(&url, &path)
        .resume(true)
        .start()
        .await
        .unwrap();
    assert_eq!(outcome.resumed_from, partial);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, SIZE, 3).await
    );
}

#[tokio::test]
async fn changed_resource_restarts_instead_of_splicing() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changed.bin");
    let url = hub.url("/test/range/200000?seed=4");
    let e = http()
        .download(&url, &path)
        .header("x-fail-after", "50000")
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NetworkError, "{e:?}");
    // Pretend the part came from another version of the resource.
    let meta_path = dir.path().join("changed.bin.part.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    assert!(meta.contains("range-200000-4"), "{meta}");
    std::fs::write(
        &meta_path,
        meta.replace("range-200000-4", "an-older-version"),
    )
    .unwrap();

    let outcome = http()
        .download(&url, &path)
        .resume(true)
        .start()
        .await
        .unwrap();
    assert!(outcome.restarted);
    assert_eq!(outcome.resumed_from, 0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, 200_000, 4).await
    );
}

#[tokio::test]
async fn without_resume_a_part_file_is_overwritten() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.bin");
    std::fs::write(dir.path().join("fresh.bin.part"), b"garbage").unwrap();
    let outcome = http()
        .download(&hub.url("/test/range/1000?seed=5"), &path)
        .start()
        .await
        .unwrap();
    assert_eq!(outcome.resumed_from, 0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, 1000, 5).await
    );
}

#[tokio::test]
async fn already_complete_part_is_finished_without_data() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("done.bin");
    let url = hub.url("/test/range/5000?seed=6");
    let token = CancellationToken::new();
    let stop = token.clone();
    // Cancel after the last chunk is written: the part is complete but not renamed.
    let _ = http()
        .download(&url, &path)
        .cancel_token(token)
        .on_progress(move |p| {
            if p.loaded == 5000 {
                stop.cancel();
            }
        })
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        std::fs::metadata(dir.path().join("done.bin.part"))
            .unwrap()
            .len(),
        5000
    );
    let outcome = http()
        .download(&url, &path)
        .resume(true)
        .start()
        .await
        .unwrap();
    assert_eq!(outcome.resumed_from, 5000);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        expected_range_bytes(&hub, 5000, 6).await
    );
}

#[tokio::test]
async fn http_error_status_fails_the_download() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.bin");
    let e = http()
        .download(&hub.url("/test/status/404"), &path)
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpStatus);
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
    assert!(!path.exists());
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let e = http()
        .download(&hub.url("/test/delay/5"), dir.path().join("slow"))
        .idle_timeout(Some(std::time::Duration::from_millis(300)))
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e:?}");
}
