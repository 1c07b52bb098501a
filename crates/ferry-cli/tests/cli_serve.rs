//! `ferry serve`, `ferry hash-password` and `ferry completions` as a user runs them: the
//! real binary, real files, real signals.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command as AssertCommand;
use futures_util::StreamExt;
use predicates::prelude::*;
use support::{FerryServer, token_for};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

fn ferry() -> AssertCommand {
    let mut cmd = AssertCommand::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_API_KEY")
        .env_remove("FERRY_JWT_SECRET");
    cmd
}

#[test]
fn print_config_merges_file_env_and_flags_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ferry.toml"),
        "allowed_origins = [\"https://app.example\"]\n[namespaces.news]\nhistory_size = 7\n[limits]\nrate_per_second = 9\n",
    )
    .unwrap();
    ferry()
        .current_dir(dir.path())
        .env("FERRY_LIMITS__RATE_BURST", "33")
        .env("FERRY_TOKEN", "client-side-variable-is-not-config")
        .args([
            "serve",
            "--print-config",
            "--listen",
            "127.0.0.1:9999",
            "--api-key",
            "sup3r-s3cret",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("listen = \"127.0.0.1:9999\""))
        .stdout(predicate::str::contains("https://app.example"))
        .stdout(predicate::str::contains("history_size = 7"))
        .stdout(predicate::str::contains("rate_per_second = 9"))
        .stdout(predicate::str::contains("rate_burst = 33"))
        .stdout(predicate::str::contains("[namespaces.chat]"))
        .stdout(predicate::str::contains("api_key = \"<redacted>\""))
        .stdout(predicate::str::contains("sup3r-s3cret").not());
}

#[test]
fn bad_configuration_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ferry.toml"), "no_such_key = 1\n").unwrap();
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--print-config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no_such_key"));
    ferry()
        .args(["serve", "--config", "/nonexistent/ferry.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not found"));
}

#[test]
fn sync_roots_from_flags_are_shown_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let root = |arg: &str| format!("docs={}", dir.path().join(arg).display());
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--print-config", "--sync-root", &root("shared")])
        .assert()
        .success()
        .stdout(predicate::str::contains("[[sync.roots]]"))
        .stdout(predicate::str::contains("name = \"docs\""))
        .stdout(predicate::str::contains("put_max_size = 16777216"));
    // --dev opens the roots' built-in namespace to anonymous readers like the others.
    ferry()
        .current_dir(dir.path())
        .args([
            "serve",
            "--dev",
            "--print-config",
            "--sync-root",
            &root("shared"),
        ])
        .assert()
        .success()
        .stdout(predicate::str::is_match(
            r"\[namespaces\.sync\]\nhistory_size = 10000\nhistory_ttl_secs = 2592000\n(\w+ = \w+\n)*allow_anonymous = true\n",
        )
        .unwrap());
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config", "--sync-root", &root("shared")])
        .assert()
        .success()
        .stdout(predicate::str::contains("sync root docs:"))
        .stdout(predicate::str::contains("on channel sync:docs"));
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config", "--sync-root", &root("missing")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("create the directory first"));
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config", "--sync-root"])
        .arg(root("shared"))
        .arg("--sync-root")
        .arg(root("shared"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "two sync roots are named \"docs\"",
        ));
}

#[test]
fn hash_password_makes_an_argon2_hash_that_verifies() {
    let out = ferry()
        .arg("hash-password")
        .write_stdin("correct horse\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let hash = String::from_utf8(out).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(ferry_hub::auth::verify_password(
        hash.trim(),
        "correct horse"
    ));
    assert!(!ferry_hub::auth::verify_password(hash.trim(), "wrong"));
    ferry()
        .arg("hash-password")
        .write_stdin("")
        .assert()
        .code(2);
}

#[test]
fn completions_are_printed_for_bash() {
    ferry()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ferry"))
        .stdout(predicate::str::contains("serve"));
}

#[tokio::test]
async fn first_start_generates_private_secrets_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("FERRY_API_KEY")
        .env_remove("FERRY_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("ferry listening on http://127.0.0.1:"),
        "{line}"
    );
    let secrets_path = data.join("secrets.toml");
    let secrets = std::fs::read_to_string(&secrets_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let table: toml::Table = toml::from_str(&secrets).unwrap();
    let key = table["api_key"].as_str().unwrap().to_string();
    let jwt = table["jwt_secret"].as_str().unwrap().to_string();
    assert!(key.len() >= 40 && jwt.len() >= 40);
    // The key works against the API.
    let url = format!(
        "{}/api/stats",
        line.trim().trim_start_matches("ferry listening on ")
    );
    let r = http_status_with_api_key(&url, &key).await;
    assert_eq!(r, 200);
    // Stop it and check that neither secret was ever printed.
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("generated an API key and a JWT secret into"),
        "{stderr}"
    );
    assert!(stderr.contains("secrets.toml"));
    for secret in [&key, &jwt] {
        assert!(!stderr.contains(secret.as_str()) && !line.contains(secret.as_str()));
    }
}

async fn http_status_with_api_key(url: &str, key: &str) -> u16 {
    // A raw HTTP/1.1 request keeps this test free of an HTTP client dependency.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: apikey {key}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let mut server = FerryServer::start(&[]).await.unwrap();
    let url = server.ws_url(&format!("/ws?token={}", token_for("alice")));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("auth_success"));
    let pid = server.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(1001));
    drop(ws);
    let code = server.wait().await.unwrap();
    assert_eq!(code, Some(0), "{}", server.logs());
    assert!(server.logs().contains("ferry stopped"));
}
