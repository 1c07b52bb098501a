//! Uploads between ferry and tus software nobody here wrote, plus `curl -F`:
//! - npm `tus-js-client` uploads to `ferry serve`, is interrupted, and a new process resumes;
//! - PyPI `tuspy` uploads to `ferry serve`;
//! - `curl -F` posts to `/upload`;
//! - `ferry upload` is killed mid-upload and a new process resumes, byte-identical, against
//!   both `ferry serve` and npm `@tus/server` + `@tus/file-store`.
//!
//! Needs `node` with `tests/tus/node_modules` (`npm ci --prefix tests/tus`), `python3` with
//! `tuspy`, and `curl`; `bash scripts/peers.sh` provisions them (scripts/peers.d/40-tus.sh).
//! A missing peer fails the test with that instruction rather than skipping it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use support::FerryServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Safety net for one helper process.
const LIMIT: Duration = Duration::from_secs(120);

const SETUP: &str = "run `bash scripts/peers.sh` (or `npm ci --prefix tests/tus`, `pip install tuspy==1.1.0`, `apt-get install -y curl`)";

fn tus_dir() -> PathBuf {
    support::workspace_root().join("tests/tus")
}

fn require_node_modules() {
    for package in ["tus-js-client", "@tus/server", "@tus/file-store"] {
        let dir = tus_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(dir.is_file(), "{} is missing: {SETUP}", dir.display());
    }
}

/// A file of `len` pseudo-random bytes (a fixed xorshift stream: no two chunks equal).
fn random_file(dir: &Path, len: usize) -> PathBuf {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join("payload.bin");
    std::fs::write(&path, &data).expect("write the payload");
    path
}

async fn run(command: Command, what: &str) -> anyhow::Result<support::Finished> {
    support::run_peer(command, LIMIT, || format!("{what} is not on PATH: {SETUP}")).await
}

fn last_json(stdout: &str) -> Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null)
}

/// GET a finished ferry upload with the API key.
async fn download(url: &str) -> anyhow::Result<Vec<u8>> {
    let http = ferry_client::http::Http::new()?;
    let body = http
        .get(url)
        .header("Authorization", format!("apikey {}", support::API_KEY))
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    Ok(body.to_vec())
}

fn absolute(server: &FerryServer, url: &str) -> String {
    if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", server.base_url)
    }
}

#[tokio::test]
async fn tus_js_client_uploads_to_ferry_and_resumes_after_an_interruption() -> anyhow::Result<()> {
    require_node_modules();
    let server = FerryServer::start(&[]).await?;
    let scratch = tempfile::tempdir()?;
    let file = random_file(scratch.path(), 3 << 20);
    let store = scratch.path().join("tus-js-urls.json");
    let endpoint = format!("{}/files/", server.base_url);
    let script = tus_dir().join("js-upload.mjs");
    let node = |abort: Option<&str>| {
        let mut c = Command::new("node");
        c.arg(&script).arg(&endpoint).arg(&file).arg(&store);
        if let Some(a) = abort {
            c.arg(a);
        }
        c.env("FERRY_TOKEN", support::token_for("js"));
        c
    };
    let first = run(node(Some("1000000")), "node").await?;
    assert!(
        first.status.success(),
        "first run: {}\n{}",
        first.stderr,
        server.logs()
    );
    let aborted = last_json(&first.stdout);
    let url = aborted["url"]
        .as_str()
        .context("aborted run names its URL")?
        .to_string();
    assert!(aborted["aborted"].as_u64() >= Some(1_000_000), "{aborted}");

    let second = run(node(None), "node").await?;
    assert!(
        second.status.success(),
        "second run: {}\n{}",
        second.stderr,
        server.logs()
    );
    let done = last_json(&second.stdout);
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(
        done["url"].as_str(),
        Some(url.as_str()),
        "the same upload was resumed"
    );
    assert!(done["resumedFrom"].as_u64() >= Some(1_000_000), "{done}");
    assert_eq!(download(&url).await?, std::fs::read(&file)?);
    Ok(())
}

#[tokio::test]
async fn tuspy_uploads_to_ferry() -> anyhow::Result<()> {
    let server = FerryServer::start(&[]).await?;
    let scratch = tempfile::tempdir()?;
    let file = random_file(scratch.path(), (1 << 20) + 12345);
    let mut c = Command::new("python3");
    c.arg(tus_dir().join("tuspy_upload.py"))
        .arg(format!("{}/files/", server.base_url))
        .arg(&file)
        .env("FERRY_TOKEN", support::token_for("py"));
    let out = run(c, "python3").await?;
    assert!(
        out.status.success(),
        "tuspy failed (is it installed? {SETUP}):\n{}\n{}",
        out.stderr,
        server.logs()
    );
    let url = last_json(&out.stdout)["url"]
        .as_str()
        .context("tuspy printed its URL")?
        .to_string();
    assert_eq!(download(&url).await?, std::fs::read(&file)?);
    Ok(())
}

#[tokio::test]
async fn curl_multipart_posts_to_upload() -> anyhow::Result<()> {
    let server = FerryServer::start(&[]).await?;
    let scratch = tempfile::tempdir()?;
    let file = random_file(scratch.path(), 2 << 20);
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            support::token_for("curl")
        ))
        .arg("-F")
        .arg(format!(
            "file=@{};type=application/octet-stream",
            file.display()
        ))
        .args(["-F", "note=ignored"])
        .arg(format!("{}/upload", server.base_url));
    let out = run(c, "curl").await?;
    assert!(out.status.success(), "curl: {}\n{}", out.stderr, out.stdout);
    let answer: Value = serde_json::from_str(&out.stdout)?;
    let first = &answer["files"][0];
    assert_eq!(first["name"], "payload.bin");
    assert_eq!(first["size"], 2 << 20);
    let url = absolute(&server, first["url"].as_str().context("url")?);
    assert_eq!(download(&url).await?, std::fs::read(&file)?);
    Ok(())
}

/// `ferry upload --json` in 4 KiB chunks, killed (SIGKILL) once the server confirmed some
/// bytes, then run again with `--resume` by a new process. While killed the first process
/// cannot finish: nothing reads its stdout after the first progress line, so it blocks
/// writing progress lines long before its last chunk. Returns the second run's `done`.
async fn kill_and_resume(
    endpoint: &str,
    file: &Path,
    state: &Path,
    auth: &[&str],
) -> anyhow::Result<Value> {
    let ferry = |resume: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("upload")
            .arg(file)
            .args(["--tus", endpoint, "--chunk-size", "4K", "--json", "--state"])
            .arg(state)
            .args(auth);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let mut first = ferry(false)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(first.stdout.take().context("stdout")?).lines();
    let confirmed = tokio::time::timeout(LIMIT, async {
        while let Some(line) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["event"] == "progress" && v["loaded"].as_u64() > Some(0) {
                return anyhow::Ok(v["loaded"].as_u64().unwrap_or(0));
            }
        }
        anyhow::bail!("ferry upload ended without progress")
    })
    .await??;
    first.start_kill()?;
    let status = first.wait().await?;
    assert!(!status.success(), "the first run was killed, not finished");
    assert!(confirmed > 0);

    let second = run(ferry(true), "ferry").await?;
    assert!(
        second.status.success(),
        "resumed run failed: {}",
        second.stderr
    );
    let done = last_json(&second.stdout);
    assert_eq!(done["event"], "done", "{}", second.stdout);
    assert!(
        done["resumed_from"].as_u64() >= Some(confirmed),
        "resumed from {} but {confirmed} bytes were confirmed before the kill",
        done["resumed_from"]
    );
    assert!(done["resumed_from"].as_u64() < done["size"].as_u64());
    Ok(done)
}

#[tokio::test]
async fn ferry_upload_killed_and_resumed_by_a_new_process_is_byte_identical() -> anyhow::Result<()>
{
    let server = FerryServer::start(&[]).await?;
    let scratch = tempfile::tempdir()?;
    let file = random_file(scratch.path(), 8 << 20);
    let auth = format!("Authorization:Bearer {}", support::token_for("cli"));
    let done = kill_and_resume(
        &format!("{}/files/", server.base_url),
        &file,
        &scratch.path().join("state.json"),
        &["-H", &auth],
    )
    .await?;
    let url = done["url"].as_str().context("url")?;
    assert_eq!(download(url).await?, std::fs::read(&file)?);
    Ok(())
}

#[tokio::test]
async fn ferry_upload_to_tus_node_server_resumes_after_a_kill() -> anyhow::Result<()> {
    require_node_modules();
    let scratch = tempfile::tempdir()?;
    let store_dir = scratch.path().join("tus-store");
    std::fs::create_dir_all(&store_dir)?;
    let mut node = Command::new("node")
        .arg(tus_dir().join("tus-server.mjs"))
        .arg(&store_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node: {SETUP}"))?;
    let mut out = BufReader::new(node.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(LIMIT, out.next_line())
        .await??
        .context("@tus/server printed no port")?;
    let port = serde_json::from_str::<Value>(&line)?["port"]
        .as_u64()
        .context("port")?;
    let file = random_file(scratch.path(), 8 << 20);
    let done = kill_and_resume(
        &format!("http://127.0.0.1:{port}/files"),
        &file,
        &scratch.path().join("state.json"),
        &[],
    )
    .await?;
    let id = done["url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .context("upload id")?;
    assert_eq!(std::fs::read(store_dir.join(id))?, std::fs::read(&file)?);
    Ok(())
}
