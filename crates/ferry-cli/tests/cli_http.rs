//! `ferry get|post|put|patch|delete|head` and `ferry download` as a user runs them: the
//! real binary against a real `ferry serve` (its /test/* testbed) on loopback, with the
//! exit codes and messages for a bad URL, a refused connection, a timeout and an HTTP
//! error status.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use assert_cmd::Command as AssertCommand;
use predicates::prelude::*;
use serde_json::{Value, json};
use support::FerryServer;

fn ferry() -> AssertCommand {
    let mut cmd = AssertCommand::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_BEARER")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(60));
    cmd
}

async fn server() -> FerryServer {
    FerryServer::start(&[]).await.unwrap()
}

/// Run `ferry ARGS` and parse its stdout as JSON.
fn json_out(args: &[&str]) -> Value {
    let out = ferry()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

#[tokio::test]
async fn get_with_query_and_header_items_as_json_document() {
    let s = server().await;
    let url = format!("{}/test/anything", s.base_url);
    let doc = json_out(&["get", &url, "page==2", "X-Trace:abc", "--json"]);
    assert_eq!(doc["status"], 200);
    assert_eq!(doc["status_text"], "OK");
    assert_eq!(doc["headers"]["content-type"], "application/json");
    assert_eq!(doc["body"]["method"], "GET");
    assert_eq!(doc["body"]["args"]["page"], "2");
    assert_eq!(doc["body"]["headers"]["x-trace"], "abc");
}

#[tokio::test]
async fn post_fields_are_json_and_raw_body_goes_to_a_pipe() {
    let s = server().await;
    let url = format!("{}/test/anything", s.base_url);
    let out = ferry()
        .args(["post", &url, "name=Ada", "age:=36", "tags:=[\"x\"]"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    // Not a terminal: the raw body, exactly as the server sent it.
    let body: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        body["json"],
        json!({"name": "Ada", "age": 36, "tags": ["x"]})
    );
    assert_eq!(body["headers"]["content-type"], "application/json");
    assert!(
        body["headers"]["accept"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn put_form_patch_raw_and_delete() {
    let s = server().await;
    let url = format!("{}/test/anything", s.base_url);
    let doc = json_out(&["put", &url, "--form", "a=1", "b=two words", "--json"]);
    assert_eq!(doc["body"]["method"], "PUT");
    assert_eq!(doc["body"]["form"], json!({"a": "1", "b": "two words"}));

    let doc = json_out(&["patch", &url, "-d", "plain text", "--json"]);
    assert_eq!(doc["body"]["method"], "PATCH");
    assert_eq!(doc["body"]["data"], "plain text");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, "{\"from\":\"file\"}").unwrap();
    let at_file = format!("@{}", file.display());
    let doc = json_out(&[
        "put",
        &url,
        "-d",
        &at_file,
        "Content-Type:application/json",
        "--json",
    ]);
    assert_eq!(doc["body"]["json"], json!({"from": "file"}));

    let doc = ferry()
        .args(["post", &url, "-d", "@-", "--json"])
        .write_stdin("from stdin")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["body"]["data"], "from stdin");

    let doc = json_out(&["delete", &url, "--json"]);
    assert_eq!(doc["body"]["method"], "DELETE");
}

#[tokio::test]
async fn head_prints_the_status_line_and_headers() {
    let s = server().await;
    ferry()
        .args(["head", &format!("{}/test/anything", s.base_url)])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("HTTP/1.1 200 OK\n"))
        .stdout(predicate::str::contains("content-type: application/json"));
}

#[tokio::test]
async fn file_items_upload_multipart() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "file content").unwrap();
    let item = format!("doc@{}", file.display());
    let doc = json_out(&[
        "post",
        &format!("{}/test/anything", s.base_url),
        "title=hello",
        &item,
        "--json",
    ]);
    let data = doc["body"]["data"].as_str().unwrap();
    assert!(data.contains("name=\"title\"\r\n\r\nhello"), "{data}");
    assert!(
        data.contains("filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nfile content"),
        "{data}"
    );
    assert!(
        doc["body"]["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/form-data")
    );
}

#[tokio::test]
async fn pretty_output_has_status_headers_and_indented_json() {
    let s = server().await;
    ferry()
        .args([
            "get",
            &format!("{}/test/anything", s.base_url),
            "--pretty",
            "always",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("HTTP/1.1 200 OK\n"))
        .stdout(predicate::str::contains("content-type: application/json\n"))
        .stdout(predicate::str::contains("\n{\n  \"args\": {},\n"))
        // Colours are for terminals only.
        .stdout(predicate::str::contains("\u{1b}[").not());
}

#[tokio::test]
async fn http_error_status_exits_3_and_still_prints_the_response() {
    let s = server().await;
    let url = format!("{}/test/status/404", s.base_url);
    ferry()
        .args(["get", &url, "--json"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("\"status\":404"))
        .stderr(predicate::str::contains(
            "error: HTTP_STATUS: HTTP 404 Not Found",
        ));
    ferry()
        .args(["delete", &format!("{}/test/status/503", s.base_url)])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("HTTP 503"));
}

#[tokio::test]
async fn refused_connection_exits_1_with_code_and_hint() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    ferry()
        .args(["get", &url])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("error: CONNECTION_ERROR: "))
        .stderr(predicate::str::contains("hint: is the server running?"));
    // --json also gives scripts the error as a document.
    let out = ferry()
        .args(["get", &url, "--json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["error"]["code"], "CONNECTION_ERROR");
    // Usage errors print like every other failure: `error: CODE: message`.
    ferry()
        .args(["get", &url, "--timeout=-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: USAGE: invalid number of seconds",
        ));
}

#[tokio::test]
async fn timeout_exits_4() {
    let s = server().await;
    ferry()
        .args([
            "get",
            &format!("{}/test/delay/5", s.base_url),
            "--timeout",
            "0.3",
        ])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("error: TIMEOUT: "))
        .stderr(predicate::str::contains("--timeout"));
}

#[tokio::test]
async fn download_timeout_exits_4() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    ferry()
        .args([
            "download",
            &format!("{}/test/delay/5", s.base_url),
            "--timeout",
            "0.3",
            "-o",
        ])
        .arg(dir.path().join("slow"))
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "error: TIMEOUT: no response within 0.3 s",
        ));
}

#[tokio::test]
async fn bad_url_and_bad_items_exit_2() {
    ferry()
        .args(["get", "http://exa mple.com/"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: INVALID_REQUEST: invalid URL",
        ));
    ferry()
        .args(["get", "ftp://127.0.0.1/x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unsupported URL scheme"));
    ferry()
        .args(["post", "http://127.0.0.1:1/", "justaword"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a request item"));
    ferry()
        .args(["post", "http://127.0.0.1:1/", "n:={broken"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not JSON"));
    ferry().args(["get"]).assert().code(2);
}

#[tokio::test]
async fn help_documents_items_and_exit_codes() {
    ferry()
        .args(["get", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("key:=json"))
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("4    TIMEOUT"));
    ferry()
        .args(["download", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--resume"))
        .stdout(predicate::str::contains("Exit codes:"));
}

#[tokio::test]
async fn download_saves_the_file() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/test/range/200000?seed=9", s.base_url);
    let expected = ferry()
        .args(["get", &url])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(expected.len(), 200_000);
    ferry()
        .current_dir(dir.path())
        .args(["download", &url])
        .assert()
        .success()
        .stderr(predicate::str::contains("saved 200000 (200000 bytes)"));
    assert_eq!(std::fs::read(dir.path().join("200000")).unwrap(), expected);

    // An existing file is not overwritten without --force.
    ferry()
        .current_dir(dir.path())
        .args(["download", &url])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    let out = dir.path().join("copy.bin");
    let doc = json_out(&["download", &url, "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(doc["size"], 200_000);
    assert_eq!(doc["resumed_from"], 0);
}

#[tokio::test]
async fn interrupted_download_resumes_with_resume() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/test/range/300000?seed=10", s.base_url);
    let out = dir.path().join("data.bin");
    let out_str = out.to_str().unwrap();
    // The testbed breaks the connection after 100000 bytes.
    ferry()
        .args(["download", &url, "-o", out_str, "X-Fail-After:100000"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: NETWORK_ERROR: "))
        .stderr(predicate::str::contains("--resume"));
    assert!(!out.exists());
    let partial = std::fs::metadata(dir.path().join("data.bin.part"))
        .unwrap()
        .len();
    assert!(partial > 0 && partial <= 100_000, "{partial}");

    let doc = json_out(&["download", &url, "-o", out_str, "--resume", "--json"]);
    assert_eq!(doc["resumed_from"], partial);
    assert_eq!(doc["restarted"], false);
    let expected = ferry()
        .args(["get", &url])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
}

#[tokio::test]
async fn download_of_a_missing_resource_exits_3() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    ferry()
        .args(["download", &format!("{}/test/status/404", s.base_url), "-o"])
        .arg(dir.path().join("x"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("HTTP_STATUS"));
}
