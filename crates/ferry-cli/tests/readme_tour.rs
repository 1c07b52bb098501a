//! The README's tour, end to end, as a new user runs it: `ferry serve --dev` in an empty
//! directory (it generates its secrets), `ferry token --user alice` there (it reads them),
//! a page in headless chromium served from ANOTHER origin subscribing with that token
//! using the README's snippet, and `ferry pub` (API key read from the same secrets)
//! delivering to it.
//!
//! Needs `node`, `tests/browser/node_modules` (`npm ci --prefix tests/browser`) and
//! `/usr/bin/chromium` (or `FERRY_CHROMIUM`); `scripts/peers.sh` installs all three. A
//! missing piece fails the test with that instruction rather than skipping it.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::FerryServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Safety net for each step (the browser starts in a few seconds).
const STEP_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn readme_tour_dev_server_token_foreign_origin_browser_and_pub() {
    let root = support::workspace_root();
    let peers = support::browser_peers();

    // 1. `ferry serve --dev` in an empty directory: secrets generated, a dev token shown.
    let server = FerryServer::start_with(&["--dev"], &[], false)
        .await
        .unwrap();
    let ferry = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args(args)
            .current_dir(server.dir())
            .env_remove("FERRY_API_KEY")
            .env_remove("FERRY_JWT_SECRET")
            .env_remove("FERRY_TOKEN");
        c
    };
    let logs = server.logs();
    assert!(
        server.dir().join("ferry-data/secrets.toml").is_file(),
        "{logs}"
    );

    // 2. `ferry token --user alice`, next to ferry-data.
    let minted = support::run_to_completion(ferry(&["token", "--user", "alice"]), STEP_LIMIT)
        .await
        .unwrap();
    assert!(minted.status.success(), "{}", minted.stderr);
    let token = minted.stdout.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout: {token}");

    // 3. The browser page on another origin subscribes with it.
    let mut tour = Command::new("node");
    tour.arg(peers.dir.join("tour.mjs"))
        .arg(&server.base_url)
        .current_dir(&root)
        .env("FERRY_TOKEN", &token)
        .env("FERRY_CHANNEL", "chat:lobby")
        .env("FERRY_CHROMIUM", &peers.chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut tour = match tour.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`node` is not on PATH: {}", peers.setup)
        }
        Err(e) => panic!("spawning node: {e}"),
    };
    let mut lines = BufReader::new(tour.stdout.take().unwrap()).lines();
    let mut tour_stderr = tour.stderr.take().unwrap();
    let mut next_json = async || -> Value {
        match tokio::time::timeout(STEP_LIMIT, lines.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap(),
            other => {
                let mut err = String::new();
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut tour_stderr, &mut err).await;
                panic!(
                    "tour.mjs stopped ({other:?}); its stderr:\n{err}\nserver log:\n{}",
                    server.logs()
                )
            }
        }
    };
    let ready = next_json().await;
    let ready = &ready["ready"];
    assert_ne!(
        ready["pageOrigin"], ready["hubOrigin"],
        "the page must come from another origin"
    );
    assert_eq!(ready["authSuccess"]["user"], "alice", "{ready}");
    assert_eq!(ready["subscribed"]["channel"], "chat:lobby", "{ready}");
    assert_eq!(ready["errors"], json!([]), "{ready}");

    // 4. `ferry pub`, with the API key read from ferry-data/secrets.toml.
    let published = support::run_to_completion(
        ferry(&[
            "pub",
            "chat:lobby",
            r#"{"text":"hi from the tour"}"#,
            "--url",
            &format!(":{}", server.port),
        ]),
        STEP_LIMIT,
    )
    .await
    .unwrap();
    assert!(
        published.status.success(),
        "{}{}",
        published.stdout,
        published.stderr
    );
    assert!(
        published
            .stdout
            .contains("published to chat:lobby at offset 1"),
        "{}",
        published.stdout
    );

    let result = next_json().await;
    let result = &result["result"];
    let message = &result["messages"][0];
    assert_eq!(message["channel"], "chat:lobby", "{result}");
    assert_eq!(message["offset"], 1, "{result}");
    assert_eq!(
        message["data"],
        json!({"text": "hi from the tour"}),
        "{result}"
    );
    assert_eq!(result["pageErrors"], json!([]), "{result}");
    let status = tokio::time::timeout(STEP_LIMIT, tour.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // The dev banner printed a token and a snippet (stderr, not a terminal: no colours).
    let logs = server.logs();
    assert!(logs.contains("dev token (user dev"), "{logs}");
    assert!(logs.contains("new WebSocket(\"ws://127.0.0.1:"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no ANSI escapes in a log file:\n{logs}"
    );
}
