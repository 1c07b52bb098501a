//! `ferry ws`, `ferry sse`, `ferry sub` and `ferry pub` as a user runs them: the real
//! binary against a real `ferry serve` on loopback, with the documented exit codes and
//! `error:`/`hint:` messages for a bad URL, a refused connection and refusals.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command as AssertCommand;
use predicates::prelude::*;
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, token_for};
use tokio::io::{AsyncBufReadExt, BufReader};

fn ferry() -> AssertCommand {
    let mut cmd = AssertCommand::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_TOKEN")
        .env_remove("FERRY_API_KEY")
        .timeout(Duration::from_secs(60));
    cmd
}

async fn server() -> FerryServer {
    FerryServer::start(&[]).await.unwrap()
}

/// The JSON lines a `ferry sub --json` printed, once it exited successfully.
async fn json_lines_at_exit(sub: tokio::process::Child) -> Vec<Value> {
    let output = tokio::time::timeout(Duration::from_secs(30), sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    support::json_lines(&String::from_utf8_lossy(&output.stdout)).unwrap()
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn ws_sends_stdin_lines_and_prints_the_echo() {
    let server = server().await;
    ferry()
        .args(["ws", &server.ws_url("/test/echo")])
        .write_stdin("hello\nwörld\n")
        .assert()
        .success()
        .stdout("hello\nwörld\n")
        .stderr(predicate::str::contains("connected to"));
}

#[tokio::test]
async fn ws_binary_and_json_output() {
    let server = server().await;
    let out = ferry()
        .args(["ws", &server.ws_url("/test/echo"), "--binary", "--json"])
        .write_stdin("abc\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let line: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["kind"], "binary");
    assert_eq!(line["data"], "YWJj", "base64 of abc");
    assert!(line["timestamp"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn ws_with_subprotocol_token_and_header_reaches_the_hub() {
    let server = server().await;
    let out = ferry()
        .args([
            "ws",
            &server.ws_url("/ws"),
            "--subprotocol",
            "ferry.json",
            "--count",
            "1",
        ])
        .args(["-H", "X-Trace: cli-test"])
        .env("FERRY_TOKEN", token_for("wes"))
        .write_stdin("")
        .assert()
        .success()
        .stderr(predicate::str::contains("subprotocol ferry.json"))
        .get_output()
        .stdout
        .clone();
    let hello: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(hello["type"], "auth_success");
    assert_eq!(hello["payload"]["user"], "wes");
}

#[tokio::test]
async fn ws_refused_and_bad_urls_have_codes_hints_and_exit_codes() {
    let port = closed_port();
    ferry()
        .args(["ws", &format!("ws://127.0.0.1:{port}/")])
        .write_stdin("")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: CONNECTION_ERROR"))
        .stderr(predicate::str::contains("hint: is the server running?"));
    ferry()
        .args(["ws", "ftp://127.0.0.1:1/"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: INVALID_URL"))
        .stderr(predicate::str::contains("hint:"));
    ferry()
        .args(["ws", "ws://127.0.0.1:1/", "-H", "no-colon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("NAME:VALUE"));

    let server = server().await;
    ferry()
        .args(["ws", &server.ws_url("/no/such/socket")])
        .write_stdin("")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("error: HTTP_STATUS"));
}

#[tokio::test]
async fn ws_reports_a_policy_close_by_the_server() {
    let server = server().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["ws", &server.ws_url("/ws"), "--subprotocol", "ferry.json"])
        .env("FERRY_TOKEN", token_for("kicked"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Input stays open: the close must come from the server.
    let _stdin = child.stdin.take();
    // Wait for the auth_success line: the connection is up and authenticated.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.contains("auth_success"), "{first}");
    let api = ferry_client::hub::HubApi::new(&server.base_url, API_KEY).unwrap();
    assert_eq!(api.disconnect_user("kicked", false).await.unwrap(), 1);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("1008"), "{stderr}");
}

#[tokio::test]
async fn sse_prints_event_data_filters_and_counts() {
    let server = server().await;
    let url = format!("{}/test/sse?count=3&interval_ms=10", server.base_url);
    let out = ferry()
        .args(["sse", &url, "--no-reconnect"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = support::json_lines(&String::from_utf8_lossy(&out)).unwrap();
    assert_eq!(
        lines.iter().map(|v| v["n"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)]
    );

    let out = ferry()
        .args([
            "sse",
            &url,
            "--event",
            "tick",
            "--json",
            "--count",
            "2",
            "--last-event-id",
            "1",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let events = support::json_lines(&String::from_utf8_lossy(&out)).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0]["event"].as_str(), events[0]["id"].as_str()),
        (Some("tick"), Some("2"))
    );
    assert_eq!(events[1]["id"], "3");

    ferry()
        .args(["sse", &url, "--event", "other", "--no-reconnect"])
        .assert()
        .success()
        .stdout("");
}

#[tokio::test]
async fn sse_errors_have_codes_and_exit_codes() {
    let port = closed_port();
    ferry()
        .args(["sse", &format!("http://127.0.0.1:{port}/events")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: CONNECTION_ERROR"));
    ferry()
        .args(["sse", "ftp://127.0.0.1/"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: INVALID_URL"));
    let server = server().await;
    ferry()
        .args(["sse", &format!("{}/test/status/404", server.base_url)])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("error: HTTP_STATUS"));
}

#[tokio::test]
async fn sub_prints_what_pub_publishes() {
    let server = server().await;
    let ws_base = format!("ws://127.0.0.1:{}", server.port);
    let (sub, _) = support::subscriber(
        &["chat:cli", "--url", &ws_base, "--count", "2", "--json"],
        &token_for("subscriber"),
        "chat:cli",
    )
    .await;

    ferry()
        .args(["pub", "chat:cli", r#"{"n":1}"#, "--url", &server.base_url])
        .env("FERRY_API_KEY", API_KEY)
        .assert()
        .success()
        .stdout("published to chat:cli at offset 1\n");
    let out = ferry()
        .args([
            "pub",
            "chat:cli",
            "plain text",
            "--raw",
            "--url",
            &server.base_url,
            "--api-key",
            API_KEY,
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let published: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (published["channel"].as_str(), published["offset"].as_u64()),
        (Some("chat:cli"), Some(2))
    );

    let lines = json_lines_at_exit(sub).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"], json!({"n": 1}));
    assert_eq!(lines[0]["offset"], 1);
    assert_eq!(lines[1]["data"], "plain text");
}

/// `--proto msgpack`: `ferry sub` reads MessagePack frames and `ferry pub` publishes a
/// MessagePack value over /ws; a JSON publication from the API reaches the same reader.
#[tokio::test]
async fn sub_and_pub_speak_msgpack() {
    let server = server().await;
    let ws_base = format!("ws://127.0.0.1:{}", server.port);
    let (sub, _) = support::subscriber(
        &[
            "chat:mp", "--url", &ws_base, "--count", "2", "--json", "--proto", "msgpack",
        ],
        &token_for("reader"),
        "chat:mp",
    )
    .await;
    ferry()
        .args([
            "pub",
            "chat:mp",
            r#"{"via":"api"}"#,
            "--url",
            &server.base_url,
        ])
        .env("FERRY_API_KEY", API_KEY)
        .assert()
        .success();
    ferry()
        .args([
            "pub",
            "chat:mp",
            r#"{"via":"msgpack","n":[1,-2,0.5]}"#,
            "--url",
            &server.base_url,
            "--proto",
            "msgpack",
        ])
        .env("FERRY_TOKEN", token_for("writer"))
        .assert()
        .success()
        .stdout("published to chat:mp at offset 2\n");
    let lines = json_lines_at_exit(sub).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["data"], json!({"via": "api"}));
    assert_eq!(
        lines[1]["data"],
        json!({"via": "msgpack", "n": [1, -2, 0.5]})
    );
    assert_eq!(lines[1]["info"]["user"], "writer");
}

#[tokio::test]
async fn pub_and_sub_errors_have_codes_hints_and_exit_codes() {
    let server = server().await;
    // No key anywhere: not given, and no ferry-data/secrets.toml in the directory.
    let empty = tempfile::tempdir().unwrap();
    ferry()
        .current_dir(empty.path())
        .args(["pub", "chat:x", "1", "--url", &server.base_url])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no API key"))
        .stderr(predicate::str::contains("hint: pass --api-key"));
    ferry()
        .args([
            "pub",
            "chat:x",
            "1",
            "--url",
            &server.base_url,
            "--api-key",
            "wrong",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("error: AUTH_FAILED"));
    ferry()
        .args([
            "pub",
            "nope:x",
            "1",
            "--url",
            &server.base_url,
            "--api-key",
            API_KEY,
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("error: UNKNOWN_CHANNEL"));
    let port = closed_port();
    ferry()
        .args([
            "pub",
            "chat:x",
            "1",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--api-key",
            "k",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: CONNECTION_ERROR"));
    ferry()
        .args(["pub", "chat:x", "1", "--url", "not a url", "--api-key", "k"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: INVALID_URL"));

    let ws_base = format!("ws://127.0.0.1:{}", server.port);
    ferry()
        .args(["sub", "chat:x", "--url", &ws_base, "--token", "not-a-jwt"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("error: AUTH_FAILED"))
        .stderr(predicate::str::contains("malformed JWT"))
        .stderr(predicate::str::contains(
            "hint: the server refused the token",
        ));
    ferry()
        .args(["sub", "chat:x", "--url", &format!("ws://127.0.0.1:{port}")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: CONNECTION_ERROR"));
    // With --json the failure is also one document on stdout, as for `ferry get`.
    let out = ferry()
        .args([
            "sub",
            "chat:x",
            "--json",
            "--url",
            &format!("ws://127.0.0.1:{port}"),
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc: Value = serde_json::from_slice(&out).expect("one JSON error document");
    assert_eq!(doc["error"]["code"], "CONNECTION_ERROR");
    assert!(doc["error"]["hint"].as_str().is_some_and(|h| !h.is_empty()));
}
