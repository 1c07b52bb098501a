//! Shared by the ferry-cli integration tests: the real `ferry` binary serving on an
//! ephemeral loopback port, plus child processes that die with the test.
//!
//! Every process started here is spawned with `kill_on_drop`, so a failing assertion (a
//! panic unwinding through the test) still kills the server and any tool it drove.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long `ferry serve` may take to print its listening line (a safety net only: a debug
/// build starts in well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The API key every test server is started with.
pub const API_KEY: &str = "ferry-cli-test-api-key";
/// The HS256 secret every test server is started with.
pub const JWT_SECRET: &str = "ferry-cli-test-jwt-secret";

/// Safety net for anything a test awaits from a server or client (never a timing
/// assertion: a debug build on a busy machine is still far quicker).
pub const WAIT: Duration = Duration::from_secs(30);

/// Await `f`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Every line of `text` parsed as a JSON document (what `--json` commands print).
pub fn json_lines(text: &str) -> serde_json::Result<Vec<serde_json::Value>> {
    text.lines().map(serde_json::from_str).collect()
}

/// The workspace root (where `tests/browser`, `docs/` and `.ci/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The cargo target directory (`target/` or `$CARGO_TARGET_DIR`): the parent of the
/// integration tests' scratch directory.
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// A running `ferry serve`, killed when dropped. Its data directory is a fresh temporary
/// directory and its logs (stderr) go to a file there, shown by [`FerryServer::logs`].
pub struct FerryServer {
    /// `http://127.0.0.1:PORT`, as printed by the server.
    pub base_url: String,
    /// The bound port.
    pub port: u16,
    child: Child,
    // Kept open: the server may write to stdout again, and must not get EPIPE for it.
    _stdout: BufReader<ChildStdout>,
    log_path: PathBuf,
    _data_dir: TempDir,
}

impl FerryServer {
    /// Start `ferry serve --listen 127.0.0.1:0` with [`API_KEY`], [`JWT_SECRET`], a fresh
    /// data dir and `extra_args`, and wait for its `ferry listening on URL` line.
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<FerryServer> {
        Self::start_with(extra_args, &[], true).await
    }

    /// [`FerryServer::start`] on a given `listen` address (to bring a node back on the
    /// port it had).
    pub async fn start_listen(listen: &str, extra_args: &[&str]) -> anyhow::Result<FerryServer> {
        Self::start_full(listen, extra_args, &[], true).await
    }

    /// `ferry serve` on `listen` with the test secrets and the given data dir, which
    /// outlives the server (to restart a node on the history it wrote).
    pub async fn start_on_data(
        listen: &str,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<FerryServer> {
        let data_dir = data_dir.to_str().context("a UTF-8 data dir")?;
        let mut args = vec![
            "--api-key",
            API_KEY,
            "--jwt-secret",
            JWT_SECRET,
            "--data-dir",
            data_dir,
        ];
        args.extend_from_slice(extra_args);
        Self::start_full(listen, &args, &[], false).await
    }

    /// Like [`start`](Self::start), with extra environment variables; without
    /// `fixed_secrets` the server generates its own into `DIR/ferry-data/secrets.toml`,
    /// `DIR` being [`dir`](Self::dir), its working directory, as after `cd DIR; ferry serve`.
    pub async fn start_with(
        extra_args: &[&str],
        envs: &[(&str, &str)],
        fixed_secrets: bool,
    ) -> anyhow::Result<FerryServer> {
        Self::start_full("127.0.0.1:0", extra_args, envs, fixed_secrets).await
    }

    async fn start_full(
        listen: &str,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        fixed_secrets: bool,
    ) -> anyhow::Result<FerryServer> {
        let data_dir = tempfile::Builder::new()
            .prefix("ferry-cli-test-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let log_path = data_dir.path().join("ferry-serve.log");
        let log = std::fs::File::create(&log_path).context("creating the server log file")?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.arg("serve").args(["--listen", listen]);
        // The testbed is off by default; the CLI tests use it as their HTTP peer.
        command.arg("--testbed");
        if fixed_secrets {
            command
                .args(["--api-key", API_KEY])
                .args(["--jwt-secret", JWT_SECRET])
                .arg("--data-dir")
                .arg(data_dir.path().join("data"));
        }
        command.current_dir(data_dir.path());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .args(extra_args)
            .env_remove("FERRY_API_KEY")
            .env_remove("FERRY_JWT_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning the ferry binary")?;
        let mut stdout = BufReader::new(child.stdout.take().context("ferry's stdout is piped")?);
        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line)).await;
        let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => bail!(
                "ferry serve exited before printing its listening line ({:?}); its log:\n{}",
                child.try_wait().ok().flatten(),
                logs()
            ),
            Ok(Err(e)) => bail!("reading ferry serve's stdout: {e}"),
            Err(_) => bail!(
                "ferry serve printed nothing within {START_TIMEOUT:?}; its log:\n{}",
                logs()
            ),
        }
        let base_url = line
            .trim()
            .strip_prefix("ferry listening on ")
            .with_context(|| format!("unexpected first stdout line from ferry serve: {line:?}"))?
            .to_string();
        let port = base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {base_url:?}"))?;
        Ok(FerryServer {
            base_url,
            port,
            child,
            _stdout: stdout,
            log_path,
            _data_dir: data_dir,
        })
    }

    /// The server's working directory (its `ferry-data/` when started without fixed
    /// secrets).
    pub fn dir(&self) -> &Path {
        self._data_dir.path()
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// What the server logged so far (for failure messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// An HS256 token for `user`, signed with [`JWT_SECRET`], valid for an hour (by
/// `jsonwebtoken`, not the hub's own issuer).
pub fn token_for(user: &str) -> String {
    token_with(user, serde_json::json!({}))
}

/// Like [`token_for`], with extra claims merged in (e.g. `caps`).
pub fn token_with(user: &str, extra: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let mut claims = serde_json::json!({ "sub": user, "exp": exp });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    ferry_testkit::server::sign_hs256(&claims, JWT_SECRET)
}

/// The output of a finished helper process.
pub struct Finished {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// Check that the process exited successfully; `what` failed, with its output and
    /// `server`'s log, otherwise.
    pub fn assert_success(&self, what: &str, server: &FerryServer) {
        assert!(
            self.status.success(),
            "{what} failed ({}).\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            self.status,
            self.stdout,
            self.stderr,
            server.logs()
        );
    }
}

/// Run `command` to completion with piped output, killing it if it takes longer than
/// `limit` (a safety net against a hang, not a timing assertion) or if the test fails
/// while it runs.
pub async fn run_to_completion(mut command: Command, limit: Duration) -> anyhow::Result<Finished> {
    let program = format!("{:?}", command.as_std().get_program());
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    // Dropping the `wait_with_output` future on timeout drops the child: kill_on_drop.
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{program} did not finish within {limit:?}; killed it"))?
        .with_context(|| format!("waiting for {program}"))?;
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// [`run_to_completion`] for a peer tool the test needs installed: when the program is
/// not found, the test fails with `missing()` (the instruction to install it) rather than
/// with a bare spawn error.
pub async fn run_peer(
    command: Command,
    limit: Duration,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<Finished> {
    match run_to_completion(command, limit).await {
        Err(e)
            if e.root_cause()
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
        {
            panic!("{}", missing())
        }
        other => other,
    }
}

/// What `tests/browser` needs to drive headless chromium.
pub struct BrowserPeers {
    /// `tests/browser`, with playwright-core installed.
    pub dir: PathBuf,
    /// The chromium executable (`FERRY_CHROMIUM`, default `/usr/bin/chromium`).
    pub chromium: String,
    /// How to install what is missing.
    pub setup: &'static str,
}

/// The browser peers, checked: a missing piece fails the test with the instruction to
/// install it rather than skipping it.
pub fn browser_peers() -> BrowserPeers {
    let dir = workspace_root().join("tests/browser");
    let chromium =
        std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let setup = "run `bash scripts/peers.sh`, or `apt-get install -y chromium` and `npm ci --prefix tests/browser`";
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "{} is missing: {setup}",
        dir.join("node_modules/playwright-core").display()
    );
    assert!(
        Path::new(&chromium).is_file(),
        "no chromium at {chromium} (set FERRY_CHROMIUM to use another): {setup}"
    );
    BrowserPeers {
        dir,
        chromium,
        setup,
    }
}

impl FerryServer {
    /// The server's process id (for sending signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kill the server (SIGKILL) and wait until it is gone, so its port is free.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing ferry serve")
    }

    /// Wait (at most 30 s) for the server to exit; its exit code.
    pub async fn wait(&mut self) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("ferry serve did not exit")??;
        Ok(status.code())
    }
}

/// Start `ferry sub ARGS...` with `FERRY_TOKEN=token` and wait until it reports its
/// subscription to `channel`; returns the process (stdout piped) and a task that collects
/// the rest of its stderr.
pub async fn subscriber(
    args: &[&str],
    token: &str,
    channel: &str,
) -> (Child, tokio::task::JoinHandle<String>) {
    let mut sub = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("sub")
        .args(args)
        .env("FERRY_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ferry sub starts");
    let mut stderr = BufReader::new(sub.stderr.take().expect("piped")).lines();
    let wanted = format!("subscribed to {channel} at offset");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains(&wanted) {
                return;
            }
        }
        panic!("ferry sub ended before subscribing");
    })
    .await
    .expect("ferry sub subscribes in time");
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    (sub, rest)
}
