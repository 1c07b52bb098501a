//! examples/chat in a real browser: `ferry serve -c examples/chat/ferry.toml --static
//! examples/chat/web` and headless Debian chromium driven by `examples/chat/test.mjs`
//! (npm playwright-core from tests/browser): a message from one user appears in the other's
//! page, typing is shown, a reload recovers the history, and a private conversation works.
//!
//! Needs node, tests/browser/node_modules and /usr/bin/chromium: `bash scripts/peers.sh`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{FerryServer, run_to_completion, token_for};
use tokio::process::Command;

#[tokio::test]
async fn two_users_chat_with_history_typing_and_a_private_conversation() -> anyhow::Result<()> {
    let root = support::workspace_root();
    let example = root.join("examples/chat");
    let config = example.join("ferry.toml");
    let web = example.join("web");
    let server = FerryServer::start(&[
        "--config",
        config.to_str().unwrap_or_default(),
        "--static",
        web.to_str().unwrap_or_default(),
    ])
    .await?;
    let mut node = Command::new("node");
    node.arg(example.join("test.mjs"))
        .arg(&server.base_url)
        .env("ALICE_TOKEN", token_for("alice"))
        .env("BOB_TOKEN", token_for("bob"));
    let done = run_to_completion(node, Duration::from_secs(180)).await?;
    done.assert_success("examples/chat/test.mjs", &server);
    let report: Value = serde_json::from_str(done.stdout.trim())?;
    assert_eq!(report["ok"], true);
    assert!(
        report["bob_dm_log"]
            .as_array()
            .is_some_and(|log| log.iter().any(|l| l == "alice: psst")),
        "{report}"
    );
    Ok(())
}
