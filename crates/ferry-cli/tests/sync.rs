//! `ferry sync` end to end (issue 18): a real `ferry serve --sync-root` and two or three
//! real `ferry sync` processes on 127.0.0.1, each with its own temporary folder. Every
//! wait polls the filesystem or the clients' `--json` events under a generous safety
//! timeout; nothing sleeps for a fixed time.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{API_KEY, FerryServer};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A safety net against a hang, never a timing assertion: debug builds on a loaded
/// 2-core machine are slow, and the 200 MB cases move 600 MB through loopback.
const PATIENCE: Duration = Duration::from_secs(240);

/// A token that may read and write every sync root.
fn writer_token(user: &str) -> String {
    support::token_with(
        user,
        json!({"caps": [{"channels": ["sync:*"], "allow": ["subscribe", "publish", "history"]}]}),
    )
}

/// A hub with one root, `default`, served from a temporary directory.
struct Hub {
    server: FerryServer,
    root: TempDir,
}

impl Hub {
    async fn start() -> Hub {
        Self::start_with(&[]).await
    }

    /// With extra `ferry serve` arguments.
    async fn start_with(extra: &[&str]) -> Hub {
        let root = tempfile::tempdir().expect("root dir");
        let arg = format!("default={}", root.path().display());
        let mut args = vec!["--sync-root", &arg];
        args.extend_from_slice(extra);
        let server = FerryServer::start(&args).await.expect("ferry serve starts");
        Hub { server, root }
    }

    fn url(&self) -> String {
        format!("{}/default", self.server.base_url)
    }

    fn root(&self) -> &Path {
        self.root.path()
    }
}

/// One `ferry sync --json` process with its folder and the events it printed.
struct SyncClient {
    name: String,
    dir: TempDir,
    child: Option<Child>,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    url: String,
    extra: Vec<String>,
}

impl SyncClient {
    /// A client named `name` (its host name in conflict copies) for `hub`, live.
    async fn start(hub: &Hub, name: &str, extra: &[&str]) -> SyncClient {
        Self::start_in(hub, name, extra, tempfile::tempdir().expect("client dir")).await
    }

    /// [`start`](Self::start) on a prepared folder.
    async fn start_in(hub: &Hub, name: &str, extra: &[&str], dir: TempDir) -> SyncClient {
        let mut client = SyncClient {
            name: name.to_string(),
            dir,
            child: None,
            events: Arc::default(),
            stderr: Arc::default(),
            url: hub.url(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        client.spawn();
        client
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .arg("sync")
            .arg(&self.url)
            .arg(self.dir.path())
            .args(["--json", "--host-name", &self.name])
            .args(["--token", &writer_token(&self.name)])
            .args(&self.extra)
            .env_remove("FERRY_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawning ferry sync");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    events.lock().expect("events").push(v);
                }
            }
        });
        let log = self.stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().expect("stderr");
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or a pulled plug would.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill ferry sync");
        }
    }

    /// Start again on the same folder; the earlier events stay, marked by `restarts`.
    fn restart(&mut self) {
        self.events
            .lock()
            .expect("events")
            .push(json!({"event": "test_restart"}));
        self.spawn();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write");
    }

    /// Events since the last restart (all of them when `all`).
    fn events_since_restart(&self) -> Vec<Value> {
        let events = self.events.lock().expect("events");
        let start = events
            .iter()
            .rposition(|e| e["event"] == "test_restart")
            .map_or(0, |i| i + 1);
        events[start..].to_vec()
    }

    fn describe(&self) -> String {
        let events = self.events.lock().expect("events");
        let shown: Vec<String> = events
            .iter()
            .filter(|e| !matches!(e["event"].as_str(), Some("idle" | "scanned" | "progress")))
            .map(|e| e.to_string())
            .collect();
        let tail = &shown[shown.len().saturating_sub(60)..];
        format!(
            "client {}: last events:\n{}\nstderr:\n{}",
            self.name,
            tail.join("\n"),
            self.stderr.lock().expect("stderr")
        )
    }

    /// Wait for an event matching `want` since the last restart.
    async fn wait_event(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let found = poll(what, || {
            self.events_since_restart().into_iter().find(|e| want(e))
        })
        .await;
        match found {
            Some(v) => v,
            None => panic!("{what}: not seen\n{}", self.describe()),
        }
    }
}

/// Call `probe` every 50 ms until it returns `Some`, at most [`PATIENCE`].
async fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("gave up waiting for {what}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until every folder in `dirs` holds `rel` with exactly `content`.
async fn wait_content(dirs: &[&Path], rel: &str, content: &[u8], clients: &[&SyncClient]) {
    for dir in dirs {
        let path = dir.join(rel);
        let ok = poll(&format!("{} to hold {rel}", dir.display()), || {
            std::fs::read(&path)
                .ok()
                .filter(|c| c == content)
                .map(|_| ())
        })
        .await;
        if ok.is_none() {
            let shown: Vec<String> = clients.iter().map(|c| c.describe()).collect();
            panic!(
                "{} never held {rel} with the expected content\n{}",
                dir.display(),
                shown.join("\n")
            );
        }
    }
}

/// Wait until no folder in `dirs` has `rel`.
async fn wait_gone(dirs: &[&Path], rel: &str, clients: &[&SyncClient]) {
    for dir in dirs {
        let path = dir.join(rel);
        let ok = poll(&format!("{rel} to leave {}", dir.display()), || {
            (!path.exists()).then_some(())
        })
        .await;
        if ok.is_none() {
            let shown: Vec<String> = clients.iter().map(|c| c.describe()).collect();
            panic!("{rel} never left {}\n{}", dir.display(), shown.join("\n"));
        }
    }
}

/// The files below `dir` (relative, `/`-separated), without the client's state.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .expect("below base")
                .to_string_lossy()
                .replace('\\', "/");
            if rel == ".ferry-sync" {
                continue;
            }
            if path.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `size` bytes that differ per MiB (so a misplaced chunk is caught), written quickly.
fn write_big(path: &Path, size: usize) -> String {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create big"));
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let mut left = size;
    let mut n: u64 = 0;
    while left > 0 {
        block[..8].copy_from_slice(&n.to_le_bytes());
        let take = left.min(block.len());
        file.write_all(&block[..take]).expect("write big");
        hasher.update(&block[..take]);
        left -= take;
        n += 1;
    }
    file.flush().expect("flush big");
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha_file(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex(&hasher.finalize()))
}

/// Wait until `path` is a complete copy (sha256) in every dir.
async fn wait_sha(dirs: &[&Path], rel: &str, sha: &str, clients: &[&SyncClient]) {
    for dir in dirs {
        let path = dir.join(rel);
        let ok = poll(&format!("{rel} complete in {}", dir.display()), || {
            // The size first: hashing a file still being renamed in would be wasted.
            sha_file(&path).filter(|s| s == sha).map(|_| ())
        })
        .await;
        if ok.is_none() {
            let shown: Vec<String> = clients.iter().map(|c| c.describe()).collect();
            panic!(
                "{rel} never complete in {}\n{}",
                dir.display(),
                shown.join("\n")
            );
        }
    }
}

/// Wait until `client` downloaded every one of `paths` and then reported `idle` (its
/// index and channel position are saved).
async fn settled_after_downloads(client: &SyncClient, paths: &[&str]) {
    let done = poll("downloads then idle", || {
        let events = client.events_since_restart();
        let mut last = 0;
        for path in paths {
            let i = events
                .iter()
                .rposition(|e| e["event"] == "downloaded" && e["path"] == *path)?;
            last = last.max(i);
        }
        events[last..]
            .iter()
            .any(|e| e["event"] == "idle")
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "not settled\n{}", client.describe());
}

/// `client` did not download `path` since it was last restarted.
fn assert_not_downloaded(client: &SyncClient, path: &str) {
    let after = client.events_since_restart();
    assert!(
        after
            .iter()
            .all(|e| !(e["event"] == "downloaded" && e["path"] == path)),
        "{path} was downloaded again: {after:?}"
    );
}

/// Move a 200 MB `big.bin` into `from`'s folder and wait until `watched` reports a
/// transfer of it towards `to` (`remote`: uploading, `local`: downloading) short of the
/// end. Its sha256.
async fn big_file_in_transit(from: &SyncClient, watched: &SyncClient, to: &str) -> String {
    let staging = tempfile::tempdir().expect("staging");
    let sha = write_big(&staging.path().join("big.bin"), 200 << 20);
    std::fs::rename(staging.path().join("big.bin"), from.path("big.bin")).expect("move in");
    watched
        .wait_event("transfer progress", |e| {
            e["event"] == "progress"
                && e["path"] == "big.bin"
                && e["to"] == to
                && e["loaded"].as_u64() < e["total"].as_u64()
        })
        .await;
    sha
}

/// alpha, bravo and charlie on `hub`, each past its first reconcile.
async fn three_idle_clients(hub: &Hub) -> (SyncClient, SyncClient, SyncClient) {
    let a = SyncClient::start(hub, "alpha", &[]).await;
    let b = SyncClient::start(hub, "bravo", &[]).await;
    let c = SyncClient::start(hub, "charlie", &[]).await;
    for client in [&a, &b, &c] {
        idle(client).await;
    }
    (a, b, c)
}

async fn idle(client: &SyncClient) {
    client
        .wait_event("an idle event", |e| e["event"] == "idle")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_renames_and_deletes_reach_every_client() {
    let hub = Hub::start().await;
    let (a, b, c) = three_idle_clients(&hub).await;
    let all = [&a, &b, &c];
    let everywhere = [a.dir.path(), b.dir.path(), c.dir.path(), hub.root()];

    // Create, with nested directories, on a.
    a.write("notes/2026/plan.md", b"first draft");
    a.write("top.txt", b"top");
    std::fs::create_dir_all(a.path("empty/inner")).expect("mkdir");
    wait_content(&everywhere, "notes/2026/plan.md", b"first draft", &all).await;
    wait_content(&everywhere, "top.txt", b"top", &all).await;
    for dir in &everywhere {
        let inner = dir.join("empty/inner");
        poll("an empty directory", || inner.is_dir().then_some(()))
            .await
            .unwrap_or_else(|| panic!("{} has no empty/inner\n{}", dir.display(), a.describe()));
    }

    // Update on b.
    b.write("notes/2026/plan.md", b"second draft, from bravo");
    wait_content(
        &everywhere,
        "notes/2026/plan.md",
        b"second draft, from bravo",
        &all,
    )
    .await;

    // Rename on c (a file and a directory).
    std::fs::rename(c.path("top.txt"), c.path("renamed.txt")).expect("rename");
    std::fs::rename(c.path("notes"), c.path("archive")).expect("rename dir");
    wait_content(&everywhere, "renamed.txt", b"top", &all).await;
    wait_content(
        &everywhere,
        "archive/2026/plan.md",
        b"second draft, from bravo",
        &all,
    )
    .await;
    wait_gone(&everywhere, "top.txt", &all).await;
    wait_gone(&everywhere, "notes", &all).await;
    // c renamed on the server (one `POST rename` per file, nothing uploaded again); the
    // rename reaches the others as operations that cost them no download.
    c.wait_event("the rename sent as a rename", |e| {
        e["event"] == "renamed" && e["from"] == "top.txt" && e["to"] == "renamed.txt"
    })
    .await;
    assert!(
        c.events_since_restart()
            .iter()
            .all(|e| !(e["event"] == "uploaded" && e["path"] == "renamed.txt")),
        "{}",
        c.describe()
    );
    for client in [&a, &b] {
        client
            .wait_event("renamed.txt renamed locally", |e| {
                e["event"] == "renamed" && e["to"] == "renamed.txt" && e["side"] == "local"
            })
            .await;
        let fetched: u64 = client
            .events_since_restart()
            .iter()
            .filter(|e| e["event"] == "downloaded" && e["path"] == "renamed.txt")
            .map(|e| e["transferred"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(fetched, 0, "{}", client.describe());
    }

    // Delete on a.
    std::fs::remove_file(a.path("renamed.txt")).expect("delete");
    std::fs::remove_dir_all(a.path("empty")).expect("delete dir");
    wait_gone(&everywhere, "renamed.txt", &all).await;
    wait_gone(&everywhere, "empty", &all).await;

    for client in all {
        idle(client).await;
    }
    let expected = tree(hub.root());
    for client in all {
        let dir = client.dir.path();
        let ok = poll("identical trees", || (tree(dir) == expected).then_some(())).await;
        assert!(
            ok.is_some(),
            "{:?} != {expected:?}\n{}",
            tree(dir),
            client.describe()
        );
    }
    assert!(
        all.iter().all(|c| c
            .events_since_restart()
            .iter()
            .all(|e| e["event"] != "conflict")),
        "no conflict in a sequential session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_file_reaches_every_client_intact() {
    let hub = Hub::start().await;
    let (a, b, c) = three_idle_clients(&hub).await;
    // Written outside the folder and moved in, as a finished save lands.
    let staging = tempfile::tempdir().expect("staging");
    let sha = write_big(&staging.path().join("big.bin"), 200 << 20);
    std::fs::create_dir_all(a.path("media")).expect("mkdir");
    std::fs::rename(staging.path().join("big.bin"), a.path("media/big.bin")).expect("move in");
    let all = [&a, &b, &c];
    wait_sha(
        &[hub.root(), b.dir.path(), c.dir.path()],
        "media/big.bin",
        &sha,
        &all,
    )
    .await;
    let uploaded = a
        .wait_event("the upload", |e| {
            e["event"] == "uploaded" && e["path"] == "media/big.bin"
        })
        .await;
    assert_eq!(uploaded["size"], 200 << 20);
    assert_eq!(
        uploaded["resumable"], true,
        "above the PUT limit: tus + commit"
    );
    for client in [&b, &c] {
        let tmp = client.path(".ferry-sync/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "staging files left: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_client_catches_up_from_history_without_the_manifest() {
    let hub = Hub::start().await;
    let a = SyncClient::start(&hub, "alpha", &[]).await;
    let mut b = SyncClient::start(&hub, "bravo", &[]).await;
    a.write("keep.txt", b"unchanged");
    a.write("edit.txt", b"v1");
    a.write("drop.txt", b"to be deleted");
    settled_after_downloads(&b, &["keep.txt", "edit.txt", "drop.txt"]).await;
    b.kill().await;

    // While b is away: create, update, delete, nested.
    a.write("new/deep/file.txt", b"made while bravo was away");
    a.write("edit.txt", b"v2");
    std::fs::remove_file(a.path("drop.txt")).expect("delete");
    let server = [hub.root()];
    wait_content(
        &server,
        "new/deep/file.txt",
        b"made while bravo was away",
        &[&a],
    )
    .await;
    wait_content(&server, "edit.txt", b"v2", &[&a]).await;
    wait_gone(&server, "drop.txt", &[&a]).await;

    b.restart();
    let dir = [b.dir.path()];
    wait_content(
        &dir,
        "new/deep/file.txt",
        b"made while bravo was away",
        &[&b],
    )
    .await;
    wait_content(&dir, "edit.txt", b"v2", &[&b]).await;
    wait_gone(&dir, "drop.txt", &[&b]).await;
    let caught_up = b
        .wait_event("caught up", |e| e["event"] == "caught_up")
        .await;
    assert_eq!(caught_up["via"], "history", "{caught_up}");
    assert!(
        caught_up["ops"].as_u64().unwrap_or(0) >= 3,
        "the missed operations came from history: {caught_up}"
    );
    assert_eq!(
        caught_up["manifest_requests"], 0,
        "no manifest was read: {caught_up}"
    );
    let after = b.events_since_restart();
    assert!(
        after
            .iter()
            .all(|e| e["event"] != "caught_up" || e["via"] == "history"),
        "{after:?}"
    );
    let transferred: u64 = after
        .iter()
        .filter(|e| e["event"] == "downloaded")
        .map(|e| e["transferred"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        transferred,
        (b"made while bravo was away".len() + b"v2".len()) as u64,
        "only the changed content travelled: {after:?}"
    );
    // Nothing b already had travelled again.
    assert_not_downloaded(&b, "keep.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_longer_than_the_history_catches_up_by_a_manifest_delta() {
    // The sync namespace keeps only 2 operations: the gap cannot be recovered.
    let config = tempfile::tempdir().expect("config dir");
    let file = config.path().join("ferry.toml");
    std::fs::write(&file, "[namespaces.sync]\nhistory_size = 2\n").expect("write config");
    let hub = Hub::start_with(&["--config", file.to_str().expect("utf-8")]).await;
    let a = SyncClient::start(&hub, "alpha", &[]).await;
    let mut b = SyncClient::start(&hub, "bravo", &[]).await;
    a.write("old.txt", b"before");
    a.write("stays.txt", b"unchanged");
    wait_content(&[b.dir.path()], "old.txt", b"before", &[&a, &b]).await;
    settled_after_downloads(&b, &["old.txt", "stays.txt"]).await;
    b.kill().await;
    for i in 0..5 {
        a.write(&format!("while-away-{i}.txt"), format!("op {i}").as_bytes());
    }
    std::fs::remove_file(a.path("old.txt")).expect("delete");
    wait_gone(&[hub.root()], "old.txt", &[&a]).await;
    wait_content(&[hub.root()], "while-away-4.txt", b"op 4", &[&a]).await;

    b.restart();
    for i in 0..5 {
        let name = format!("while-away-{i}.txt");
        wait_content(&[b.dir.path()], &name, format!("op {i}").as_bytes(), &[&b]).await;
    }
    wait_gone(&[b.dir.path()], "old.txt", &[&b]).await;
    let caught_up = b
        .wait_event("caught up", |e| e["event"] == "caught_up")
        .await;
    assert_eq!(caught_up["via"], "manifest_delta", "{caught_up}");
    let entries = caught_up["entries"].as_u64().unwrap_or(0);
    assert!(
        (6..10).contains(&entries),
        "the delta lists the 5 new files and the tombstone, not the whole tree: {caught_up}"
    );
    assert_not_downloaded(&b, "stays.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_keep_exactly_one_conflict_copy() {
    let hub = Hub::start().await;
    let a = SyncClient::start(&hub, "alpha", &[]).await;
    let mut b = SyncClient::start(&hub, "bravo", &[]).await;
    a.write("doc.txt", b"base");
    settled_after_downloads(&b, &["doc.txt"]).await;
    b.kill().await;
    // Both edit the same file since they last agreed.
    a.write("doc.txt", b"alpha's edit");
    wait_content(&[hub.root()], "doc.txt", b"alpha's edit", &[&a]).await;
    b.write("doc.txt", b"bravo's edit");
    b.restart();

    let conflict = b
        .wait_event("a conflict", |e| e["event"] == "conflict")
        .await;
    assert_eq!(conflict["path"], "doc.txt");
    let copy = conflict["copy"].as_str().expect("copy").to_string();
    assert!(
        copy.starts_with("doc (conflict from bravo ") && copy.ends_with(").txt"),
        "{copy}"
    );
    let all = [&a, &b];
    let everywhere = [a.dir.path(), b.dir.path(), hub.root()];
    wait_content(&everywhere, "doc.txt", b"alpha's edit", &all).await;
    wait_content(&everywhere, &copy, b"bravo's edit", &all).await;
    for client in all {
        idle(client).await;
    }
    for dir in everywhere {
        let copies: Vec<String> = tree(dir)
            .into_iter()
            .filter(|p| p.contains("conflict from"))
            .collect();
        assert_eq!(copies, vec![copy.clone()], "in {}", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_download_leaves_no_partial_file_and_completes() {
    let hub = Hub::start().await;
    let a = SyncClient::start(&hub, "alpha", &[]).await;
    let mut b = SyncClient::start(&hub, "bravo", &[]).await;
    idle(&b).await;
    // Kill b as soon as it reports download progress short of the end.
    let sha = big_file_in_transit(&a, &b, "local").await;
    b.kill().await;
    let part = b.path(&format!(".ferry-sync/tmp/{sha}.part"));
    eprintln!(
        "killed with {} bytes staged",
        std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0)
    );
    // What a user sees in the folder: nothing, or the whole file (if the last bytes
    // landed before the signal) — never a prefix.
    match std::fs::metadata(b.path("big.bin")) {
        Err(_) => {}
        Ok(m) => assert_eq!(m.len(), 200 << 20, "a partial file is visible"),
    }
    b.restart();
    wait_sha(&[b.dir.path()], "big.bin", &sha, &[&a, &b]).await;
    idle(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_upload_resumes_and_the_others_get_the_whole_file() {
    let hub = Hub::start().await;
    let mut a = SyncClient::start(&hub, "alpha", &[]).await;
    let b = SyncClient::start(&hub, "bravo", &[]).await;
    idle(&a).await;
    let sha = big_file_in_transit(&a, &a, "remote").await;
    a.kill().await;
    // Neither the server's folder nor b shows a partial file, then or later.
    for dir in [hub.root(), b.dir.path()] {
        if let Ok(m) = std::fs::metadata(dir.join("big.bin")) {
            assert_eq!(m.len(), 200 << 20, "a partial file in {}", dir.display());
        }
    }
    a.restart();
    wait_sha(&[hub.root(), b.dir.path()], "big.bin", &sha, &[&a, &b]).await;
    let uploaded = a
        .wait_event("the upload", |e| {
            e["event"] == "uploaded" && e["path"] == "big.bin"
        })
        .await;
    assert_eq!(uploaded["resumable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_links_write_nothing_outside_the_folder() {
    let hub = Hub::start().await;
    let outside = tempfile::tempdir().expect("outside");
    let b = SyncClient::start(&hub, "bravo", &[]).await;
    idle(&b).await;
    // A link in b's folder pointing outside it: never followed, never uploaded.
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), b.path("escape")).expect("symlink");
    b.wait_event("the link skipped", |e| {
        e["event"] == "skipped" && e["path"] == "escape"
    })
    .await;
    // Operations with hostile paths published on the root's channel (as a compromised
    // server or API key could).
    let http = reqwest::Client::new();
    for (n, path) in [
        "../escaped.txt",
        "/tmp/absolute.txt",
        "a/../../x.txt",
        "nul\u{0}.txt",
    ]
    .iter()
    .enumerate()
    {
        let op = json!({
            "op": "put", "path": path, "size": 4, "version": 100_000 + n as u64,
            "sha256": "0".repeat(64), "modified": 1, "source": "evil",
        });
        let response = http
            .post(format!("{}/api/publish", hub.server.base_url))
            .header("authorization", format!("apikey {API_KEY}"))
            .json(&json!({"channel": "sync:default", "data": op}))
            .send()
            .await
            .expect("publish");
        assert!(response.status().is_success(), "{}", response.status());
    }
    for path in ["../escaped.txt", "/tmp/absolute.txt", "a/../../x.txt"] {
        b.wait_event(&format!("{path} refused"), |e| {
            e["event"] == "skipped"
                && e["path"] == path
                && e["reason"].as_str().is_some_and(|r| r.contains("refused"))
        })
        .await;
    }
    // A directory on the server where b has the link: b must not write through it.
    std::fs::create_dir_all(hub.root().join("escape")).expect("mkdir");
    std::fs::write(hub.root().join("escape/inside.txt"), b"x").expect("write");
    std::fs::write(hub.root().join("marker.txt"), b"after").expect("write");
    wait_content(&[b.dir.path()], "marker.txt", b"after", &[&b]).await;
    b.wait_event("the write through the link refused", |e| {
        e["event"] == "error"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("symbolic link"))
    })
    .await;
    assert_eq!(
        tree(outside.path()),
        Vec::<String>::new(),
        "nothing written outside the folder"
    );
    let parent = b.dir.path().parent().expect("parent");
    assert!(!parent.join("escaped.txt").exists());
    assert!(!Path::new("/tmp/absolute.txt").exists());
    assert!(!hub.root().join("escape/../escaped.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_patterns_hold_in_both_directions() {
    let hub = Hub::start().await;
    let a_dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        a_dir.path().join(".ferryignore"),
        "build/\n# comments work\n",
    )
    .expect("write");
    let a = SyncClient::start_in(&hub, "alpha", &["--ignore", "*.tmp"], a_dir).await;
    let b = SyncClient::start(&hub, "bravo", &[]).await;
    idle(&b).await;
    a.write("keep.txt", b"synced");
    a.write("scratch.tmp", b"local only");
    a.write("build/out.o", b"local only");
    wait_content(
        &[b.dir.path(), hub.root()],
        "keep.txt",
        b"synced",
        &[&a, &b],
    )
    .await;
    wait_content(
        &[b.dir.path()],
        ".ferryignore",
        b"build/\n# comments work\n",
        &[&a, &b],
    )
    .await;
    // b's files matching a's patterns are not taken in by a either.
    b.write("theirs.tmp", b"not for alpha");
    b.write("after.txt", b"sentinel");
    wait_content(&[a.dir.path()], "after.txt", b"sentinel", &[&a, &b]).await;
    idle(&a).await;
    for (dir, gone) in [
        (b.dir.path(), "scratch.tmp"),
        (b.dir.path(), "build"),
        (hub.root(), "scratch.tmp"),
        (hub.root(), "build"),
        (a.dir.path(), "theirs.tmp"),
    ] {
        assert!(!dir.join(gone).exists(), "{gone} reached {}", dir.display());
    }
    assert!(
        hub.root().join("theirs.tmp").exists(),
        "b has no ignore patterns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_and_changes_nothing() {
    let hub = Hub::start().await;
    std::fs::write(hub.root().join("remote.txt"), b"on the server").expect("write");
    // The server's watcher indexes the file; the manifest then lists it.
    let http = reqwest::Client::new();
    let manifest = format!("{}/sync/default/manifest", hub.server.base_url);
    let token = writer_token("dry");
    let mut listed = false;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !listed && tokio::time::Instant::now() < deadline {
        let page: Value = http
            .get(&manifest)
            .bearer_auth(&token)
            .send()
            .await
            .expect("manifest")
            .json()
            .await
            .expect("manifest JSON");
        listed = page["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["path"] == "remote.txt"));
        if !listed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        listed,
        "the server never listed remote.txt\n{}",
        hub.server.logs()
    );
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("local.txt"), b"here").expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .arg("sync")
        .arg(format!("{}/default", hub.server.base_url))
        .arg(dir.path())
        .args(["--dry-run", "--json", "--token", &writer_token("dry")]);
    let done = support::run_to_completion(command, PATIENCE)
        .await
        .expect("ferry sync --dry-run");
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    let planned: Vec<Value> = done
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "planned")
        .collect();
    assert!(
        planned.contains(&json!({"event": "planned", "action": "upload", "path": "local.txt"})),
        "{planned:?}"
    );
    assert!(
        planned.contains(&json!({"event": "planned", "action": "download", "path": "remote.txt"})),
        "{planned:?}"
    );
    assert!(!dir.path().join("remote.txt").exists());
    assert!(!hub.root().join("local.txt").exists());
    assert!(!dir.path().join(".ferry-sync/state.json").exists());
}
