//! A real browser against the real `ferry` binary: headless Debian chromium, driven by npm
//! `playwright-core` through `tests/browser/run.mjs`, opens `tests/browser/page/` served by
//! `ferry serve --static`. The page's native WebSocket (subprotocol `ferry.json`) and
//! EventSource both subscribe to one channel; a publication made through `POST /api/publish`
//! must reach both, unchanged.
//!
//! Needs `node`, `tests/browser/node_modules` (`npm ci --prefix tests/browser`) and
//! `/usr/bin/chromium` (or `FERRY_CHROMIUM`); `scripts/peers.sh` installs all three. A missing piece
//! fails the test with that instruction rather than skipping it.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::FerryServer;
use tokio::process::Command;

/// Safety net for the whole browser run (it takes a few seconds).
const BROWSER_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn browser_websocket_and_eventsource_receive_an_api_publication() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = support::workspace_root();
    let peers = support::browser_peers();

    let page_dir = peers.dir.join("page");
    let page_dir = page_dir.to_str().expect("the checkout path is UTF-8");
    let server = FerryServer::start(&["--static", page_dir]).await?;

    let channel = "chat:browser";
    let nonce = std::process::id();
    let data =
        json!({ "text": "hello from the ferry browser test", "nonce": nonce, "unicode": "é ✓ 🚢" });
    let mut command = Command::new("node");
    command
        .arg(peers.dir.join("run.mjs"))
        .arg(&server.base_url)
        .current_dir(&root)
        .env("FERRY_TOKEN", support::token_for("browser"))
        .env("FERRY_API_KEY", support::API_KEY)
        .env("FERRY_CHANNEL", channel)
        .env("FERRY_PUBLISH_DATA", data.to_string())
        .env("FERRY_CHROMIUM", &peers.chromium);
    let run = support::run_peer(command, BROWSER_LIMIT, || {
        format!("`node` is not on PATH: {}", peers.setup)
    })
    .await?;
    run.assert_success("the browser run", &server);
    let result: Value = serde_json::from_str(run.stdout.trim()).map_err(|e| {
        anyhow::anyhow!(
            "run.mjs printed no JSON result ({e}):\n{}\n{}",
            run.stdout,
            run.stderr
        )
    })?;
    println!("{}", serde_json::to_string_pretty(&result)?);

    let published = &result["published"];
    let offset = published["offset"]
        .as_u64()
        .expect("the publish answer has an offset");
    let epoch = published["epoch"]
        .as_str()
        .expect("the publish answer has an epoch");
    assert_eq!(
        offset, 1,
        "the first publication on a fresh channel has offset 1"
    );
    assert!(!epoch.is_empty());

    let ready = &result["ready"];
    assert_eq!(
        ready["ws"]["protocol"], "ferry.json",
        "the browser negotiated the subprotocol"
    );
    assert_eq!(
        ready["ws"]["authSuccess"]["user"], "browser",
        "auth_success push names the token's user"
    );
    assert_eq!(ready["ws"]["subscribeReply"]["channel"], channel);
    assert_eq!(ready["sse"]["readyState"], 1, "EventSource is OPEN");

    for transport in ["ws", "sse"] {
        let publication = &result[transport];
        assert_eq!(
            publication["channel"], channel,
            "{transport}: {publication}"
        );
        assert_eq!(publication["offset"], offset, "{transport}: {publication}");
        assert_eq!(publication["epoch"], epoch, "{transport}: {publication}");
        assert_eq!(
            publication["data"], data,
            "{transport}: the data arrives unchanged"
        );
        assert_eq!(
            result["receivedCounts"][transport], 1,
            "{transport}: exactly one publication"
        );
    }
    assert_eq!(
        result["sse"]["lastEventId"],
        format!("{epoch}:{offset}"),
        "the SSE id is the stream position EPOCH:OFFSET"
    );
    assert_eq!(
        result["pageErrors"],
        json!([]),
        "the page logged errors; server log:\n{}",
        server.logs()
    );
    println!("browser test took {:.1?}", started.elapsed());
    Ok(())
}
