//! The terminal client against a real hub on loopback (in-process `ferry_hub::Server`,
//! configured by `examples/chat/ferry.toml`), driven through its stdin and read from its
//! stdout as a user would: it shows the room's history when it opens, a message typed by
//! alice reaches bob (a `HubClient`), bob's answer, his typing indicator and his arrival
//! show up in alice's terminal, `/who` lists both, and `/dm bob` opens the private channel
//! that the web page uses too.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::hub::HubClient;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(20);

/// Read lines until one equals `wanted`; the lines read, for the failure message.
async fn expect_line(out: &mut Lines<BufReader<ChildStdout>>, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = out.next_line().await.unwrap() {
            let hit = line == wanted;
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no line {wanted:?} in the client's output: {seen:?}"
    );
    seen
}

#[tokio::test]
async fn alice_chats_with_bob_from_the_terminal() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = ferry_hub::Config::load(
        Some(&root.join("ferry.toml")),
        json!({"listen": "127.0.0.1:0", "jwt_secret": "chat-test", "history": "memory"}),
    )
    .unwrap();
    let hub = ferry_hub::Hub::new(Arc::new(config)).unwrap();
    let (alice_token, _) = hub.auth().issue("alice").unwrap();
    let (bob_token, _) = hub.auth().issue("bob").unwrap();
    let welcome = serde_json::value::to_raw_value(&json!({"text": "welcome"})).unwrap();
    hub.publish("room:general", welcome, None, None)
        .await
        .unwrap();
    let server = ferry_testkit::server::TestServer::start_hub(hub).await;
    let url = server.ws_url("/ws");

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-chat"))
        .args(["--url", &url, "--room", "general"])
        .env("FERRY_TOKEN", &alice_token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    expect_line(&mut out, "* you are alice; /help lists the commands").await;
    expect_line(&mut out, "* room:general").await;
    expect_line(&mut out, "server: welcome").await;

    let bob = HubClient::builder(&url)
        .token(&bob_token)
        .connect()
        .await
        .unwrap();
    let mut room = bob.subscribe("room:general").await.unwrap();
    expect_line(&mut out, "* bob joined").await;

    stdin.write_all(b"hello bob\n").await.unwrap();
    let said = tokio::time::timeout(WAIT, room.next_publication())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(said.data.to_json_value(), json!({"text": "hello bob"}));
    assert_eq!(said.info.unwrap().user, "alice");

    bob.publish("typing:general", &json!({"typing": true}))
        .await
        .unwrap();
    expect_line(&mut out, "* bob is typing…").await;
    bob.publish("room:general", &json!({"text": "hi alice"}))
        .await
        .unwrap();
    expect_line(&mut out, "bob: hi alice").await;

    stdin.write_all(b"/who\n").await.unwrap();
    expect_line(&mut out, "* here: alice, bob").await;

    let mut dm = bob.subscribe("dm:pair#alice,bob").await.unwrap();
    stdin.write_all(b"/dm bob\nsecret\n").await.unwrap();
    expect_line(&mut out, "* dm:pair#alice,bob").await;
    let private = tokio::time::timeout(WAIT, dm.next_publication())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(private.data.to_json_value(), json!({"text": "secret"}));

    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    bob.close().await;
}
