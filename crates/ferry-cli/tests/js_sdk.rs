//! The TypeScript SDK (clients/js) against the real `ferry` binary.
//!
//! - The committed browser bundle (`clients/js/dist/ferry.min.js`, which the hub embeds and
//!   serves at `/sdk/ferry.js`) must equal a fresh esbuild build of `clients/js/src`, and
//!   the sources must type-check.
//! - `clients/js/test/node.test.mjs` (Node, with npm `ws` as its WebSocket) and
//!   `clients/js/test/browser.test.mjs` (headless Debian chromium via playwright-core) run
//!   under `node --test` against a `ferry serve` started here on a loopback port: connect,
//!   publish and receive, recovery after cut and stalled connections, reconnect after a
//!   server restart (1001; the new epoch reported as not recoverable), token
//!   refresh through `getToken()`, the SSE fallback, the offline queue, tabs sharing one
//!   connection, the React hooks.
//!
//! Needs `node` and `clients/js/node_modules` (`npm ci --prefix clients/js`), and for the
//! browser part `/usr/bin/chromium` (or `FERRY_CHROMIUM`); `scripts/peers.sh` installs all
//! of them (scripts/peers.d/30-js-sdk.sh). A missing piece fails with that instruction.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::FerryServer;
use tokio::process::Command;

/// Safety net for one `node` run (each takes seconds).
const NODE_LIMIT: Duration = Duration::from_secs(600);
const SETUP: &str = "run `bash scripts/peers.sh`, or `npm ci --prefix clients/js` (and `apt-get install -y chromium` for the browser part)";

fn sdk_dir() -> PathBuf {
    support::workspace_root().join("clients/js")
}

fn require_node_modules() {
    for package in ["esbuild", "typescript", "ws", "playwright-core", "react"] {
        let manifest = sdk_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {SETUP}",
            manifest.display()
        );
    }
}

async fn run_node(args: &[&str], envs: &[(&str, String)]) -> support::Finished {
    require_node_modules();
    let mut command = Command::new("node");
    command.args(args).current_dir(sdk_dir());
    for (k, v) in envs {
        command.env(k, v);
    }
    support::run_peer(command, NODE_LIMIT, || {
        format!("`node` is not on PATH: {SETUP}")
    })
    .await
    .unwrap_or_else(|e| panic!("running node {args:?}: {e:#}"))
}

/// Check that `run` exited successfully; `what` and its output otherwise.
fn assert_succeeded(run: &support::Finished, what: &str) {
    assert!(
        run.status.success(),
        "{what}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// The `# pass N` / `# fail N` summary of a `node --test` run.
fn summary(stdout: &str, key: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# {key} ")))
        .and_then(|n| n.trim().parse().ok())
}

/// Run `node --test FILE` and check that exactly `expected_tests` tests ran and passed.
async fn run_tests(file: &str, expected_tests: u32, envs: &[(&str, String)]) -> support::Finished {
    let run = run_node(
        &[
            "--test",
            "--test-concurrency=1",
            "--test-reporter=tap",
            file,
        ],
        envs,
    )
    .await;
    println!("{}", run.stdout);
    if run.status.success() {
        assert_eq!(summary(&run.stdout, "fail"), Some(0), "{}", run.stdout);
        assert_eq!(
            summary(&run.stdout, "pass"),
            Some(expected_tests),
            "every test of {file} ran and passed:\n{}",
            run.stdout
        );
    }
    run
}

/// [`run_tests`] against a `ferry serve` started here. The `chat` namespace pushes
/// join/leave (the React presence test follows them); everything else is the default.
async fn run_suite(file: &str, expected_tests: u32, extra_env: &[(&str, String)]) {
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("ferry.toml");
    std::fs::write(&config, "[namespaces.chat]\njoin_leave = true\n").expect("writing ferry.toml");
    let config = config.to_str().expect("UTF-8 temp path");
    let server = FerryServer::start(&["--config", config])
        .await
        .expect("ferry serve starts");
    let mut envs = vec![
        ("FERRY_URL", server.base_url.clone()),
        ("FERRY_API_KEY", support::API_KEY.to_string()),
        ("FERRY_JWT_SECRET", support::JWT_SECRET.to_string()),
        ("FERRY_BIN", env!("CARGO_BIN_EXE_ferry").to_string()),
    ];
    envs.extend(extra_env.iter().cloned());
    let run = run_tests(file, expected_tests, &envs).await;
    run.assert_success(file, &server);
}

#[tokio::test]
async fn the_committed_bundle_is_a_fresh_build_of_the_sources() {
    let out = tempfile::tempdir().expect("temp dir");
    let out_dir = out.path().to_str().expect("UTF-8 temp path").to_string();
    let run = run_node(&["scripts/build.mjs", "--outdir", &out_dir, "--size"], &[]).await;
    assert_succeeded(&run, "build failed");
    println!("{}", run.stdout.trim());
    let fresh = std::fs::read(out.path().join("ferry.min.js")).expect("built bundle");
    let committed = std::fs::read(sdk_dir().join("dist/ferry.min.js")).expect("committed bundle");
    assert!(
        fresh == committed,
        "clients/js/dist/ferry.min.js is stale: run `npm run build --prefix clients/js` and commit it"
    );
}

#[tokio::test]
async fn the_sdk_sources_type_check() {
    let tsc = Path::new("node_modules/typescript/bin/tsc");
    let run = run_node(
        &[tsc.to_str().unwrap_or_default(), "-p", ".", "--noEmit"],
        &[],
    )
    .await;
    assert_succeeded(&run, "tsc reported errors");
}

#[tokio::test]
async fn the_sdk_recovery_sse_parser_and_backoff_logic() {
    let run = run_tests("test/unit.test.mjs", 5, &[]).await;
    assert_succeeded(&run, "test/unit.test.mjs failed");
}

#[tokio::test]
async fn the_sdk_in_node_against_ferry_serve() {
    run_suite("test/node.test.mjs", 10, &[]).await;
}

#[tokio::test]
async fn the_sdk_in_chromium_against_ferry_serve() {
    let chromium =
        std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).is_file(),
        "no chromium at {chromium} (set FERRY_CHROMIUM to use another): {SETUP}"
    );
    run_suite("test/browser.test.mjs", 7, &[("FERRY_CHROMIUM", chromium)]).await;
}
