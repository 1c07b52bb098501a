//! The first hour with ferry (issue 14), on the real binary: one test per numbered
//! friction item, and one per new command (`token`, `init`, `serve --check-config`,
//! `serve --dev`, the server API commands, `man`), exit codes included.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command as AssertCommand;
use predicates::prelude::*;
use serde_json::Value;
use support::{API_KEY, FerryServer, JWT_SECRET, token_for};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Safety net for one command (they take milliseconds).
const LIMIT: Duration = Duration::from_secs(60);

fn ferry() -> AssertCommand {
    let mut cmd = AssertCommand::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_TOKEN")
        .env_remove("FERRY_API_KEY")
        .env_remove("FERRY_JWT_SECRET")
        .env_remove("FERRY_DATA_DIR")
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_ALLOWED_ORIGINS")
        .timeout(LIMIT);
    cmd
}

/// A directory laid out as next to a running hub: `ferry-data/secrets.toml` with the test
/// server's secrets, so that commands run there find them without flags.
fn hub_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ferry-data")).unwrap();
    std::fs::write(
        dir.path().join("ferry-data/secrets.toml"),
        format!("api_key = \"{API_KEY}\"\njwt_secret = \"{JWT_SECRET}\"\n"),
    )
    .unwrap();
    dir
}

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

async fn subscribed(
    server: &FerryServer,
    channel: &str,
    token: &str,
) -> (Child, tokio::task::JoinHandle<String>) {
    let url = format!(":{}", server.port);
    support::subscriber(&[channel, "--json", "--url", &url], token, channel).await
}

// --- 1. a token from the CLI, and why a token is refused -------------------------------

#[tokio::test]
async fn item1_token_mints_from_the_local_secret_and_check_explains_refusals() {
    let server = FerryServer::start(&[]).await.unwrap();
    let dir = hub_dir();
    // Minted next to ferry-data, with nothing but --user.
    let out = ferry()
        .current_dir(dir.path())
        .args(["token", "--user", "alice", "--ttl", "30m"])
        .assert()
        .success()
        .stderr(predicate::str::contains("token for user alice"));
    let token = stdout(&out).trim().to_string();
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "alice");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 1800, "--ttl 30m: {claims}");

    // The hub takes it: a subscription as alice.
    let (mut sub, _) = subscribed(&server, "chat:first", &token).await;
    let _ = sub.start_kill();

    // check: accepted, then each reason for a refusal, with exit 3.
    ferry()
        .current_dir(dir.path())
        .args(["token", "check", &token])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("ok   signature"))
        .stdout(predicate::str::contains(
            "accepted: the hub takes this token as user alice",
        ));
    let mut tampered = token.clone();
    tampered.push('x');
    ferry()
        .current_dir(dir.path())
        .args(["token", "check", &tampered])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("FAIL signature"))
        .stdout(predicate::str::contains("refused: AUTH_FAILED"));
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "bob", "exp": 1_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    ferry()
        .current_dir(dir.path())
        .args(["token", "check", &expired])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("FAIL exp: expired"))
        .stdout(predicate::str::contains("refused: AUTH_EXPIRED"));
    let forever = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "carol"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    ferry()
        .current_dir(dir.path())
        .args(["token", "check", &forever])
        .assert()
        .stdout(predicate::str::contains("never expires"));
    ferry()
        .current_dir(dir.path())
        .args(["token", "check", "garbage"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("not a JWT"));
    // Caps are checked before signing; no secret anywhere is a usage error.
    ferry()
        .current_dir(dir.path())
        .args(["token", "--user", "a", "--caps", "[{\"channels\":1}]"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--caps is not a list of grants"));
    let empty = tempfile::tempdir().unwrap();
    ferry()
        .current_dir(empty.path())
        .args(["token", "--user", "a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("secrets.toml"))
        .stderr(predicate::str::contains("ferry serve"));
    // --jwt-secret works anywhere, --caps and --channel-info land in the claims.
    let out = ferry()
        .current_dir(empty.path())
        .args(["token", "--user", "d", "--jwt-secret", "s3", "--json"])
        .args(["--caps", r#"[{"channels":["chat:*"],"allow":["publish"]}]"#])
        .args(["--channel-info", r#"{"name":"Dee"}"#])
        .assert()
        .success();
    let doc: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        doc["token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(b"s3"),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["caps"][0]["allow"][0], "publish");
    assert_eq!(claims["info"]["name"], "Dee");
    assert_eq!(doc["expires_at"], claims["exp"]);
}

// --- 2. a page on another origin -------------------------------------------------------

async fn upgrade_status(server: &FerryServer, origin: &str) -> u16 {
    let mut request = server
        .ws_url(&format!("/ws?token={}", token_for("o")))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn item2_foreign_origins_are_logged_and_allowed_by_a_comma_separated_variable() {
    let server = FerryServer::start(&[]).await.unwrap();
    assert_eq!(upgrade_status(&server, "http://127.0.0.1:5173").await, 403);
    let logs = server.logs();
    assert!(
        logs.contains("INFO") && logs.contains("refused a browser connection"),
        "{logs}"
    );
    assert!(logs.contains("http://127.0.0.1:5173"), "{logs}");
    assert!(logs.contains("allowed_origins"), "{logs}");

    let allowed = FerryServer::start_with(
        &[],
        &[(
            "FERRY_ALLOWED_ORIGINS",
            "http://127.0.0.1:5173, http://localhost:5173",
        )],
        true,
    )
    .await
    .unwrap();
    assert_eq!(upgrade_status(&allowed, "http://127.0.0.1:5173").await, 101);
    assert_eq!(upgrade_status(&allowed, "http://localhost:5173").await, 101);
    assert_eq!(upgrade_status(&allowed, "http://evil.example").await, 403);

    ferry()
        .env("FERRY_ALLOWED_ORIGINS", "http://a.example,http://b.example")
        .args(["serve", "--print-config"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .assert()
        .success()
        .stdout(predicate::str::contains("\"http://a.example\""))
        .stdout(predicate::str::contains("\"http://b.example\""));
    // `*` is documented where people look.
    ferry().args(["init", "--help"]).assert().success();
    let dir = tempfile::tempdir().unwrap();
    ferry().args(["init"]).arg(dir.path()).assert().success();
    let toml = std::fs::read_to_string(dir.path().join("ferry.toml")).unwrap();
    assert!(toml.contains(r#"["*"] allows any"#), "{toml}");
}

// --- 3. errors carry the server's code and message --------------------------------------

#[tokio::test]
async fn item3_sub_and_sse_report_what_the_server_said() {
    let server = FerryServer::start(&[]).await.unwrap();
    ferry()
        .args(["sub", "chat:x", "--token", "garbage"])
        .args(["--url", &format!(":{}", server.port)])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "error: AUTH_FAILED: invalid token: malformed JWT",
        ))
        .stderr(predicate::str::contains("ferry token check"));
    ferry()
        .args(["sse", &format!("{}/sse", server.base_url)])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "INVALID_MESSAGE: name at least one channel",
        ));
    ferry()
        .args([
            "sse",
            &format!(
                "{}/sse?channel=nope:x&token={}",
                server.base_url,
                token_for("u")
            ),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "namespace `nope` is not configured",
        ))
        .stderr(predicate::str::contains(
            "hint: add the namespace to ferry.toml",
        ));
}

// --- 4. logs ----------------------------------------------------------------------------

#[tokio::test]
async fn item4_refusals_are_logged_at_info_without_secrets_or_colours() {
    let server = FerryServer::start(&[]).await.unwrap();
    let bad = format!("{}x", token_for("mallory"));
    ferry()
        .args(["sub", "chat:x", "--token", &bad])
        .args(["--url", &format!(":{}", server.port)])
        .assert()
        .code(3);
    ferry()
        .args([
            "stats",
            "--url",
            &server.base_url,
            "--api-key",
            "not-the-key-123",
        ])
        .assert()
        .code(3);
    let logs = server.logs();
    assert!(
        logs.contains("refused a WebSocket client's token") && logs.contains("AUTH_FAILED"),
        "{logs}"
    );
    assert!(logs.contains("signature does not match"), "{logs}");
    assert!(
        logs.contains("refused a server API call to /api/stats"),
        "{logs}"
    );
    let signature = bad.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "the token leaked:\n{logs}");
    assert!(!logs.contains("not-the-key-123"), "the key leaked:\n{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{logs}"
    );
}

#[tokio::test]
async fn item4_log_json_makes_every_line_json_banner_included() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--log-json", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("FERRY_API_KEY")
        .env_remove("FERRY_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = tokio::time::timeout(LIMIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("serve ended");
            let event: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            seen.push(event.clone());
            if let Some(url) = event["fields"]["url"].as_str() {
                return url.to_string();
            }
        }
    })
    .await
    .unwrap();
    // A refused token produces a JSON event too.
    ferry()
        .args(["stats", "--url", &url, "--api-key", "wrong"])
        .assert()
        .code(3);
    tokio::time::timeout(LIMIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("serve ended");
            let event: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let refused = event["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("refused a server API call"));
            seen.push(event);
            if refused {
                return;
            }
        }
    })
    .await
    .unwrap();
    let messages: Vec<&str> = seen
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("generated an API key")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("config:")),
        "{messages:?}"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    assert_eq!(err, "", "nothing outside the JSON stream");
}

// --- 5. --allow-anonymous alone ---------------------------------------------------------

#[tokio::test]
async fn item5_anonymous_refusals_name_both_switches() {
    let server = FerryServer::start(&["--allow-anonymous"]).await.unwrap();
    ferry()
        .args(["sub", "chat:x", "--url", &format!(":{}", server.port)])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("PERMISSION_DENIED"))
        .stderr(predicate::str::contains(
            "allow_anonymous = true in [namespaces.chat]",
        ));
    ferry()
        .args(["serve", "--check-config", "--allow-anonymous"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: allow_anonymous is on, but no namespace sets allow_anonymous = true",
        ));
    ferry()
        .args(["serve", "--help"])
        .assert()
        .stdout(predicate::str::contains("namespaces that also set"));
}

// --- 6. ferry pub ------------------------------------------------------------------------

#[tokio::test]
async fn item6_pub_validates_json_reads_shorthands_and_explains_keys() {
    let server = FerryServer::start(&[]).await.unwrap();
    let dir = hub_dir();
    let short = format!(":{}", server.port);
    ferry()
        .current_dir(dir.path())
        .args(["pub", "chat:six", r#"{"text": hi}"#, "--url", &short])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: INVALID_JSON"))
        .stderr(predicate::str::contains("--raw"));
    ferry()
        .current_dir(dir.path())
        .args(["pub", "chat:six", "hi there", "--raw", "--url", &short])
        .assert()
        .success()
        .stdout("published to chat:six at offset 1\n");
    // Nothing else was published: the broken JSON never left.
    ferry()
        .current_dir(dir.path())
        .args(["history", "chat:six", "--json", "--url", &short])
        .assert()
        .success()
        .stdout(predicate::str::contains(r#""data":"hi there""#))
        .stdout(predicate::str::contains(r#""offset":1"#));
    ferry()
        .args([
            "pub",
            "chat:six",
            "1",
            "--url",
            &short,
            "--api-key",
            "wrong",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "error: AUTH_FAILED: wrong API key",
        ))
        .stderr(predicate::str::contains("hint: check the API key"))
        .stderr(predicate::str::contains("token").not());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = ferry()
        .args(["pub", "chat:six", "1", "--api-key", "k"])
        .args(["--url", &format!("127.0.0.1:{port}")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: CONNECTION_ERROR"));
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(
        err.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "the URL once:\n{err}"
    );
}

// --- 7. resume on the README's example ---------------------------------------------------

#[tokio::test]
async fn item7_download_resume_of_test_bytes_continues() {
    let server = FerryServer::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/test/bytes/300000?seed=7", server.base_url);
    let file = dir.path().join("blob.bin");
    let file_arg = file.to_str().unwrap();
    ferry()
        .args(["download", &url, "X-Fail-After:100000", "-o", file_arg])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--resume"));
    assert!(dir.path().join("blob.bin.part").exists());
    ferry()
        .args(["download", &url, "-o", file_arg, "--resume"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resumed from byte"))
        .stderr(predicate::str::contains("restarted").not());
    let whole = dir.path().join("whole.bin");
    ferry()
        .args(["download", &url, "-o", whole.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    assert_eq!(std::fs::read(&file).unwrap().len(), 300_000);
}

// --- 8. hash-password: hidden, confirmed -------------------------------------------------

/// Drive `ferry hash-password` on a pseudo-terminal (python's pty module): wait for each
/// prompt and for echo to be off before typing.
fn on_a_terminal(first: &str, second: &str) -> (i32, String) {
    let script = r#"
import os, pty, sys, termios, time
binary, first, second = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "hash-password"])
seen = b""
def until(marker):
    global seen
    while marker not in seen:
        seen += os.read(fd, 1024)
def typed(text):
    deadline = time.time() + 20
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            raise SystemExit("echo was never turned off")
        time.sleep(0.01)
    os.write(fd, text.encode() + b"\n")
until(b"password: ")
typed(first)
until(b"again: ")
typed(second)
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_ferry"), first, second])
        .output()
        .expect("python3 runs (it drives the pseudo-terminal)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn item8_hash_password_hides_the_password_and_asks_twice() {
    let (code, screen) = on_a_terminal("hunter22-secret", "hunter22-secret");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("$argon2id$"), "{screen}");
    assert!(
        !screen.contains("hunter22-secret"),
        "the password was shown:\n{screen}"
    );
    let (code, screen) = on_a_terminal("one-password", "another-one");
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("the two entries differ"), "{screen}");
    assert!(!screen.contains("$argon2id$"), "{screen}");
    ferry()
        .arg("hash-password")
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("empty password"));
}

// --- 9. the smaller ones -----------------------------------------------------------------

#[tokio::test]
async fn item9_help_exit_codes_files_newlines_banner_routes_and_man() {
    // Per-command exit codes.
    let sub_help = stdout(&ferry().args(["sub", "--help"]).assert().success());
    let pub_help = stdout(&ferry().args(["pub", "--help"]).assert().success());
    assert!(pub_help.contains("INVALID_JSON") && !sub_help.contains("INVALID_JSON"));
    assert!(sub_help.contains("--count reached") && !pub_help.contains("--count reached"));
    assert!(!sub_help.contains("QUEUE_FULL"), "{sub_help}");
    let get_help = stdout(&ferry().args(["get", "--help"]).assert().success());
    assert!(
        get_help.contains("a file@path that is missing"),
        "{get_help}"
    );

    let server = FerryServer::start(&[]).await.unwrap();
    let short = format!(":{}", server.port);
    // A missing file is a usage error (2), as the help says.
    ferry()
        .args([
            "post",
            &format!("{short}/test/anything"),
            "photo@/nonexistent/cat.jpg",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no such file"));
    // Piped text ends with a newline; binary stays byte-exact.
    let text = ferry()
        .args(["get", &format!("{short}/test/anything")])
        .assert()
        .success();
    assert!(stdout(&text).ends_with("}\n"), "{}", stdout(&text));
    let bytes = ferry()
        .args(["get", &format!("{short}/test/bytes/10")])
        .assert()
        .success();
    assert_eq!(bytes.get_output().stdout.len(), 10);
    // Status lines name the channel.
    let (mut sub, _) = subscribed(&server, "chat:nine", &token_for("n")).await;
    let _ = sub.start_kill();
    // The banner says where configuration and static files come from.
    let logs = server.logs();
    assert!(logs.contains("config: built-in defaults"), "{logs}");
    assert!(logs.contains("ferry init"), "{logs}");
    assert!(logs.contains("--static DIR"), "{logs}");
    // Every route in `ferry serve --help`.
    let serve_help = stdout(&ferry().args(["serve", "--help"]).assert().success());
    for route in [
        "/ws",
        "/sse",
        "/api/publish",
        "/api/broadcast",
        "/api/history",
        "/api/presence",
        "/api/channels",
        "/api/stats",
        "/api/disconnect",
        "/api/send",
        "/auth/login",
        "/health",
        "/ready",
        "/test/echo",
        "/test/anything",
        "/test/status/CODE",
        "/test/delay/SECS",
        "/test/bytes/N",
        "/test/stream/N",
        "/test/sse",
        "/test/cache/KEY",
        "/test/range/N",
        "/test/flaky/KEY/N",
    ] {
        assert!(
            serve_help.contains(route),
            "{route} missing from serve --help"
        );
    }
    // A man page from the clap definitions.
    let man = stdout(&ferry().arg("man").assert().success());
    assert!(man.starts_with(".ie") || man.contains(".TH ferry"), "{man}");
    assert!(man.contains("token") && man.contains("serve"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    ferry()
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    assert!(dir.path().join("ferry-token.1").is_file());
    assert!(dir.path().join("ferry.1").is_file());
}

// --- the new commands ----------------------------------------------------------------------

#[tokio::test]
async fn server_api_commands_read_the_local_key_and_show_what_the_hub_knows() {
    let server = FerryServer::start(&[]).await.unwrap();
    let dir = hub_dir();
    let short = format!(":{}", server.port);
    let run = |args: &[&str]| {
        let mut cmd = ferry();
        cmd.current_dir(dir.path())
            .args(args)
            .args(["--url", &short]);
        cmd.assert()
    };
    let (mut sub, sub_stderr) = subscribed(&server, "chat:room", &token_for("alice")).await;
    run(&["presence", "chat:room"])
        .success()
        .stdout(predicate::str::contains("alice  client "));
    run(&["channels"])
        .success()
        .stdout(predicate::str::contains("chat:room  1 subscriber(s)"));
    let stats: Value =
        serde_json::from_str(stdout(&run(&["stats", "--json"]).success()).trim()).unwrap();
    assert_eq!(stats["connections"], 1, "{stats}");
    run(&["pub", "chat:room", r#"{"n":1}"#]).success();
    run(&["history", "chat:room"])
        .success()
        .stdout("[chat:room #1] {\"n\":1}\n")
        .stderr(predicate::str::contains("1 publication(s) shown"));
    run(&["send", "--user", "alice", r#"{"hello":"alice"}"#])
        .success()
        .stdout("delivered to 1 connection(s)\n");
    run(&["send", "--user", "alice", "not json"])
        .code(2)
        .stderr(predicate::str::contains("INVALID_JSON"));
    run(&["send", r#"{"a":1}"#]).code(2);
    run(&["history", "nope:x"])
        .code(3)
        .stderr(predicate::str::contains("UNKNOWN_CHANNEL"));
    run(&["disconnect", "--user", "alice"])
        .success()
        .stdout(predicate::str::contains("disconnected 1 connection(s)"));
    let status = tokio::time::timeout(LIMIT, sub.wait())
        .await
        .unwrap()
        .unwrap();
    let sub_stderr = sub_stderr.await.unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "closed with 1008: refused\n{sub_stderr}"
    );
    assert!(sub_stderr.contains("1008"), "{sub_stderr}");
    // Without any key: a usage error that says where it looked.
    ferry()
        .current_dir(tempfile::tempdir().unwrap().path())
        .args(["stats", "--url", &short])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no API key"));
}

#[test]
fn init_writes_every_option_and_check_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    ferry()
        .current_dir(dir.path())
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote"));
    let path = dir.path().join("ferry.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "listen",
        "allowed_origins",
        "[limits]",
        "max_connections",
        "[namespaces.chat]",
    ] {
        assert!(text.contains(key), "{key} missing");
    }
    ferry()
        .current_dir(dir.path())
        .arg("init")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "configuration OK: listen 127.0.0.1:8080",
        ))
        .stdout(predicate::str::contains(
            "history in ferry-data/history.sqlite3",
        ));
    std::fs::write(
        &path,
        text.replace("history_size = 100", "history_size = \"lots\""),
    )
    .unwrap();
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("history_size"));
    std::fs::write(&path, "jwt_public_keys = [\"/nonexistent/key.pem\"]\n").unwrap();
    ferry()
        .current_dir(dir.path())
        .args(["serve", "--check-config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/key.pem"));
    assert!(
        !Path::new(&dir.path().join("ferry-data")).exists(),
        "checking writes nothing"
    );
}

#[test]
fn dev_mode_refuses_a_public_address() {
    ferry()
        .args(["serve", "--dev", "--listen", "0.0.0.0:0"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("loopback only"));
    let config = stdout(
        &ferry()
            .args(["serve", "--dev", "--print-config"])
            .current_dir(tempfile::tempdir().unwrap().path())
            .assert()
            .success(),
    );
    assert!(config.contains("allowed_origins = [\"*\"]"), "{config}");
    assert!(config.contains("testbed = true"), "{config}");
    assert!(config.contains("allow_anonymous = true"), "{config}");
}
