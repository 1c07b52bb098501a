//! File sync, the server half (`/sync/{root}/`, the watcher, the index) against a real hub
//! on loopback: what a client sees over HTTP and on the root's channel, and what lands on
//! the disk. Operations are awaited on the channel, never slept for.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use ferry_hub::Config;
use ferry_hub::config::{NamespaceConfig, SyncRootConfig};
use ferry_proto::sync::{FileOp, ManifestEntry, ManifestPage, OpKind};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{TestServer, WsClient, token_with};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = "docs";
const CHANNEL: &str = "sync:docs";
const SOURCE: &str = "client-1";

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hub with one root, `docs`, a writer (Publish granted by a token capability: the
/// `sync` namespace here lets plain tokens only read) and a reader.
struct Fixture {
    server: TestServer,
    dir: TempDir,
    http: Client,
    writer: String,
    reader: String,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(|_| {}).await
    }

    async fn start_with(edit: impl FnOnce(&mut SyncRootConfig)) -> Fixture {
        Self::start_full(edit, |_| {}).await
    }

    async fn start_full(
        edit: impl FnOnce(&mut SyncRootConfig),
        edit_hub: impl FnOnce(&mut Config),
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        let mut root = SyncRootConfig::new(ROOT, dir.path().join("root"));
        edit(&mut root);
        let server = start_server_with(dir.path(), root, edit_hub).await;
        let writer = token_with(json!({
            "sub": "writer",
            "exp": support::now() + 3600,
            "caps": [{"channels": ["sync:*"], "allow": ["publish"]}],
        }));
        let reader = server.token("reader");
        Fixture {
            server,
            dir,
            http: Client::new(),
            writer,
            reader,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn url(&self, rest: &str) -> String {
        self.server.http(&format!("/sync/{ROOT}/{rest}"))
    }

    /// A request as the writer, with the source header.
    fn write(&self, method: Method, rest: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(rest))
            .bearer_auth(&self.writer)
            .header("x-ferry-sync-source", SOURCE)
    }

    fn read(&self, rest: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(rest)).bearer_auth(&self.reader)
    }

    async fn put(&self, path: &str, body: &[u8], base: Option<&str>) -> reqwest::Response {
        let mut request = self
            .write(Method::PUT, &format!("files/{path}"))
            .body(body.to_vec());
        if let Some(base) = base {
            request = request.header("x-ferry-sync-base", base);
        }
        request.send().await.unwrap()
    }

    async fn manifest(&self, query: &str) -> ManifestPage {
        let r = self
            .read(&format!("manifest?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A finished tus upload of `content` as the writer: its URL path and id.
    async fn tus_upload(&self, content: &[u8]) -> (String, String) {
        let r = self
            .http
            .post(self.server.http("/files/"))
            .bearer_auth(&self.writer)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", content.len().to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let upload = location.rsplit('/').next().unwrap().to_string();
        (location, upload)
    }

    /// Nothing left behind in the staging directory.
    fn assert_no_staging_files(&self) {
        let left: Vec<_> = std::fs::read_dir(self.root().join(".ferry-sync/tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "staging files left behind: {left:?}");
    }

    /// The paths of the full manifest.
    async fn paths(&self) -> Vec<String> {
        self.manifest("since=0")
            .await
            .entries
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    /// A WebSocket subscribed to the root's channel.
    async fn subscribe(&self) -> WsClient {
        let mut ws = self.server.client("watcher").await;
        let r = ws.request("subscribe", json!({"channel": CHANNEL})).await;
        assert_eq!(r["type"], "reply", "{r}");
        ws
    }
}

async fn start_server(dir: &Path, root: SyncRootConfig) -> TestServer {
    start_server_with(dir, root, |_| {}).await
}

async fn start_server_with(
    dir: &Path,
    root: SyncRootConfig,
    edit: impl FnOnce(&mut Config),
) -> TestServer {
    let data = dir.join("data");
    TestServer::start_with(move |c: &mut Config| {
        edit(c);
        c.data_dir = data;
        c.sync.roots = vec![root];
        c.namespaces.insert(
            "sync".into(),
            NamespaceConfig {
                allow_publish: false,
                history_size: 1000,
                ..NamespaceConfig::default()
            },
        );
    })
    .await
}

/// The next operation published on the root's channel, with the publication's `info`.
async fn next_op(ws: &mut WsClient) -> (FileOp, Value) {
    let message = ws.next_of_type("message").await;
    assert_eq!(message["payload"]["channel"], CHANNEL);
    let op: FileOp = serde_json::from_value(message["payload"]["data"].clone()).unwrap();
    (op, message["payload"]["info"].clone())
}

async fn error_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn put_then_get_is_byte_exact_with_range_etag_and_one_operation() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let r = f.put("notes/a.bin", &content, Some("none")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let entry: ManifestEntry = r.json().await.unwrap();
    assert_eq!(entry.path, "notes/a.bin");
    assert_eq!(entry.size, content.len() as u64);
    assert_eq!(entry.sha256.as_deref(), Some(sha(&content).as_str()));
    assert_eq!(
        std::fs::read(f.root().join("notes/a.bin")).unwrap(),
        content
    );

    let (op, info) = next_op(&mut ws).await;
    assert_eq!(op.op, OpKind::Put);
    assert_eq!(op.path, "notes/a.bin");
    assert_eq!(op.source, SOURCE);
    assert_eq!(op.version, entry.version);
    assert_eq!(op.sha256, entry.sha256);
    assert_eq!(info["user"], "writer");
    assert_eq!(info["client"], SOURCE);

    let r = f.read("files/notes/a.bin").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = format!("\"{}\"", sha(&content));
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(
        r.headers()["x-ferry-sync-version"],
        entry.version.to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), content);

    let get =
        |name: &'static str, value: String| f.read("files/notes/a.bin").header(name, value).send();
    let r = get("range", "bytes=10-19".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap(), content[10..20]);
    let r = get("range", "bytes=100000-".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let r = get("if-none-match", etag.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let r = f
        .http
        .head(f.url("files/notes/a.bin"))
        .bearer_auth(&f.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");

    // The same content again changes nothing and publishes nothing; a new content does.
    let r = f.put("notes/a.bin", &content, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let same: ManifestEntry = r.json().await.unwrap();
    assert_eq!(same.version, entry.version);
    let r = f.put("notes/a.bin", b"second", Some(&sha(&content))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.version, entry.version + 1, "no operation in between");
    assert_eq!(op.sha256.as_deref(), Some(sha(b"second").as_str()));

    let r = f.read("files/missing.txt").send().await.unwrap();
    assert_eq!(error_code(r).await.0, 404);
    f.server.stop().await;
}

#[tokio::test]
async fn a_stale_base_is_412_with_the_current_entry_and_changes_nothing() {
    let f = Fixture::start().await;
    let r = f.put("a.txt", b"server copy", None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let current: ManifestEntry = r.json().await.unwrap();
    let before = f.manifest("since=0").await.version;

    // The client thinks the file is new, or holds other content.
    for base in ["none".to_string(), sha(b"what the client had")] {
        let r = f.put("a.txt", b"client copy", Some(&base)).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "base {base}");
        let shown: ManifestEntry = r.json().await.unwrap();
        assert_eq!(shown, current);
    }
    let r = f
        .write(Method::DELETE, "files/a.txt")
        .header("x-ferry-sync-base", sha(b"old"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // A base for a file that is gone: 412 with a tombstone.
    let r = f.put("never.txt", b"x", Some(&sha(b"old"))).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let shown: ManifestEntry = r.json().await.unwrap();
    assert!(shown.deleted);

    assert_eq!(
        std::fs::read(f.root().join("a.txt")).unwrap(),
        b"server copy"
    );
    assert!(!f.root().join("never.txt").exists());
    assert_eq!(
        f.manifest("since=0").await.version,
        before,
        "no version spent"
    );
    f.assert_no_staging_files();

    let r = f
        .put("a.txt", b"client copy", Some(&sha(b"server copy")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(f.root().join("a.txt")).unwrap(),
        b"client copy"
    );
    f.server.stop().await;
}

#[tokio::test]
async fn the_manifest_lists_the_tree_and_deltas_with_tombstones_in_pages() {
    let f = Fixture::start().await;
    for (path, body) in [("b/c.txt", "c"), ("a.txt", "a"), ("d.txt", "d")] {
        assert!(
            f.put(path, body.as_bytes(), None)
                .await
                .status()
                .is_success()
        );
    }
    let full = f.manifest("since=0").await;
    assert_eq!(full.channel, CHANNEL);
    let paths: Vec<_> = full.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a.txt", "b", "b/c.txt", "d.txt"]);
    assert!(full.entries[1].dir);
    assert!(full.next.is_none());
    let v = full.version;

    let r = f.write(Method::DELETE, "files/a.txt").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tomb: ManifestEntry = r.json().await.unwrap();
    assert!(tomb.deleted);
    assert_eq!(tomb.version, v + 1);
    assert!(f.put("d.txt", b"d2", None).await.status().is_success());

    let full = f.manifest("since=0").await;
    let paths: Vec<_> = full.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["b", "b/c.txt", "d.txt"],
        "no tombstones in the full tree"
    );
    let delta = f.manifest(&format!("since={v}")).await;
    let changes: Vec<_> = delta
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.deleted, e.version))
        .collect();
    assert_eq!(changes, [("a.txt", true, v + 1), ("d.txt", false, v + 2)]);
    assert_eq!(delta.version, v + 2);

    // Pages of one, chained by `next`.
    let mut seen = Vec::new();
    let mut query = "since=0&limit=1".to_string();
    loop {
        let page = f.manifest(&query).await;
        assert!(page.entries.len() <= 1);
        seen.extend(page.entries.iter().map(|e| e.path.clone()));
        match page.next {
            Some(next) => query = format!("since=0&limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["b", "b/c.txt", "d.txt"]);

    let r = f.read("manifest?after=../x").send().await.unwrap();
    assert_eq!(error_code(r).await.1, "INVALID_PATH");
    f.server.stop().await;
}

#[tokio::test]
async fn directories_deletes_and_renames_publish_in_version_order() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    let r = f.write(Method::PUT, "dirs/x/y").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(f.root().join("x/y").is_dir());
    let r = f.write(Method::PUT, "dirs/x/y").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "an existing directory is fine");
    assert!(f.put("x/y/f.txt", b"f", None).await.status().is_success());
    assert!(f.put("g.txt", b"g", None).await.status().is_success());

    let rename = |from: &str, to: &str| {
        f.write(Method::POST, "rename")
            .json(&json!({"from": from, "to": to}))
            .send()
    };
    let r = rename("x/y/f.txt", "g.txt").await.unwrap();
    assert_eq!(error_code(r).await.0, 409, "the target exists");
    let r = rename("x/y/f.txt", "moved/f2.txt").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(f.root().join("moved/f2.txt").is_file());
    assert!(!f.root().join("x/y/f.txt").exists());
    let r = rename("x", "z").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(f.root().join("z/y").is_dir());
    let r = rename("z", "z/inside").await.unwrap();
    assert_eq!(error_code(r).await.0, 400);
    let r = rename("nope", "other").await.unwrap();
    assert_eq!(error_code(r).await.0, 404);
    let r = f.write(Method::DELETE, "files/moved").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!f.root().join("moved").exists());

    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.push(next_op(&mut ws).await.0);
    }
    let shape: Vec<_> = ops
        .iter()
        .map(|o| (o.op, o.path.as_str(), o.from.as_deref(), o.dir))
        .collect();
    assert_eq!(
        shape,
        [
            (OpKind::Put, "x/y", None, true),
            (OpKind::Put, "x/y/f.txt", None, false),
            (OpKind::Put, "g.txt", None, false),
            (OpKind::Rename, "moved/f2.txt", Some("x/y/f.txt"), false),
            (OpKind::Rename, "z", Some("x"), true),
            (OpKind::Delete, "moved", None, true),
        ]
    );
    for pair in ops.windows(2) {
        assert_eq!(pair[1].version, pair[0].version + 1, "{ops:?}");
    }
    assert!(ops.iter().all(|o| o.source == SOURCE));

    let full = f.manifest("since=0").await;
    let paths: Vec<_> = full.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["g.txt", "z", "z/y"]);

    // Files and directories are not mistaken for each other.
    for (request, status, code) in [
        (
            f.write(Method::PUT, "files/g.txt/inner.txt").body("x"),
            409,
            "NOT_A_DIRECTORY",
        ),
        (
            f.write(Method::PUT, "files/z").body("x"),
            409,
            "IS_A_DIRECTORY",
        ),
        (f.write(Method::PUT, "dirs/g.txt"), 409, "EXISTS"),
        (
            f.http.get(f.url("files/z")).bearer_auth(&f.reader),
            409,
            "IS_A_DIRECTORY",
        ),
    ] {
        let (got, got_code, message) = error_code(request.send().await.unwrap()).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{message}");
    }
    assert_eq!(
        f.manifest("since=0").await.version,
        ops[5].version,
        "nothing changed"
    );
    f.server.stop().await;
}

#[tokio::test]
async fn changes_on_the_servers_disk_publish_with_source_server() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    std::fs::write(f.root().join("local.txt"), b"written on the server").unwrap();
    let (op, info) = next_op(&mut ws).await;
    assert_eq!(op.op, OpKind::Put);
    assert_eq!(op.path, "local.txt");
    assert_eq!(op.source, "server");
    assert_eq!(
        op.sha256.as_deref(),
        Some(sha(b"written on the server").as_str())
    );
    assert!(
        info.is_null(),
        "no client info for the server's own changes"
    );

    std::fs::rename(f.root().join("local.txt"), f.root().join("renamed.txt")).unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(
        (op.op, op.path.as_str(), op.from.as_deref()),
        (OpKind::Rename, "renamed.txt", Some("local.txt")),
        "{op:?}"
    );

    std::fs::create_dir_all(f.root().join("new/deep")).unwrap();
    std::fs::write(f.root().join("new/deep/n.txt"), b"n").unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&"new/deep/n.txt".to_string()) {
        let (op, _) = next_op(&mut ws).await;
        assert_eq!(op.op, OpKind::Put);
        seen.push(op.path);
    }
    assert_eq!(seen, ["new", "new/deep", "new/deep/n.txt"], "parents first");

    // A directory moved on disk is one rename, its content moving with it.
    std::fs::rename(f.root().join("new"), f.root().join("moved")).unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(
        (op.op, op.path.as_str(), op.from.as_deref(), op.dir),
        (OpKind::Rename, "moved", Some("new"), true),
        "{op:?}"
    );
    let listed = f.paths().await;
    assert!(
        listed.contains(&"moved/deep/n.txt".to_string()),
        "{listed:?}"
    );

    std::fs::remove_dir_all(f.root().join("moved")).unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(
        (op.op, op.path.as_str(), op.dir),
        (OpKind::Delete, "moved", true)
    );

    // A link is never synced.
    std::os::unix::fs::symlink(f.outside(), f.root().join("link")).unwrap();
    std::fs::write(f.root().join("after-link.txt"), b"x").unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.path, "after-link.txt");
    let paths = f.paths().await;
    assert_eq!(paths, ["after-link.txt", "renamed.txt"]);

    // A touch (new mtime, same content) is not a change.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(f.root().join("renamed.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::fs::write(f.root().join("after-touch.txt"), b"t").unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.path, "after-touch.txt", "the touch published nothing");

    // An API write is seen by the watcher too, and publishes once.
    assert!(f.put("api.txt", b"api", None).await.status().is_success());
    std::fs::write(f.root().join("marker.txt"), b"m").unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!((op.path.as_str(), op.source.as_str()), ("api.txt", SOURCE));
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.path, "marker.txt", "nothing in between");
    f.server.stop().await;
}

async fn channel_history(server: &TestServer) -> Vec<FileOp> {
    let (_, history) = server
        .api()
        .post("/api/history", json!({"channel": CHANNEL, "limit": 100}))
        .await;
    history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_value(p["data"].clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_restart_publishes_only_what_changed_while_the_hub_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("same.txt"), b"unchanged").unwrap();
    std::fs::write(root.join("edited.txt"), b"before").unwrap();
    std::fs::write(root.join("removed.txt"), b"removed").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/kept.txt"), b"kept").unwrap();

    let config = SyncRootConfig::new(ROOT, &root);
    let server = start_server(dir.path(), config.clone()).await;
    let first = channel_history(&server).await;
    assert_eq!(
        first.len(),
        5,
        "a new root's first scan publishes every path: {first:?}"
    );
    assert!(first.iter().all(|o| o.source == "server"));
    let version = first.last().unwrap().version;
    server.stop().await;

    // While the hub is down: an edit, a delete, a move; same.txt is only touched.
    std::fs::write(root.join("edited.txt"), b"after, longer").unwrap();
    std::fs::remove_file(root.join("removed.txt")).unwrap();
    std::fs::rename(root.join("sub/kept.txt"), root.join("kept-moved.txt")).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(root.join("same.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();

    let server = start_server(dir.path(), config).await;
    let ops = channel_history(&server).await;
    let shape: Vec<_> = ops
        .iter()
        .map(|o| (o.op, o.path.as_str(), o.from.as_deref(), o.version))
        .collect();
    assert_eq!(
        shape,
        [
            (
                OpKind::Rename,
                "kept-moved.txt",
                Some("sub/kept.txt"),
                version + 1
            ),
            (OpKind::Delete, "removed.txt", None, version + 2),
            (OpKind::Put, "edited.txt", None, version + 3),
        ],
        "only the differences, versions continuing"
    );
    assert_eq!(
        ops[2].sha256.as_deref(),
        Some(sha(b"after, longer").as_str())
    );
    server.stop().await;
}

/// Send a request line as written (no client-side normalisation of `..`) and return the
/// status code.
async fn raw_status(f: &Fixture, method: &str, target: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(f.server.addr).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nx-ferry-sync-source: {SOURCE}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil",
        f.server.addr, f.writer
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).unwrap_or_default().parse().unwrap()
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for item in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(item.path()).unwrap();
            out.push(item.path().strip_prefix(dir).unwrap().display().to_string());
            if meta.is_dir() {
                pending.push(item.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn hostile_paths_are_refused_and_nothing_is_written_outside_the_root() {
    let f = Fixture::start().await;
    std::fs::write(f.outside().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(f.outside().join("secret.txt"), f.root().join("link.txt")).unwrap();
    std::os::unix::fs::symlink(f.outside(), f.root().join("linkdir")).unwrap();
    let outside_before = tree(f.dir.path());

    for target in [
        "/sync/docs/files/../outside/x.txt",
        "/sync/docs/files/a/../../x.txt",
        "/sync/docs/files/%2E%2E/x.txt",
        "/sync/docs/files/%2Fetc%2Fx",
        "/sync/docs/files/a%00b",
        "/sync/docs/files/evil%E2%80%AEtxt.exe",
        "/sync/docs/files/.ferry-sync/tmp/x",
        "/sync/docs/files/a%5C..%5Cb",
        "/sync/docs/files/not-utf8-%FF",
        "/sync/docs/dirs/%2E%2E",
    ] {
        let status = raw_status(&f, "PUT", target).await;
        assert_eq!(status, 400, "{target}");
    }
    // Through a symlink: refused, whatever exists on the other side.
    let rename = |from: &str, to: &str| {
        f.write(Method::POST, "rename")
            .json(&json!({"from": from, "to": to}))
    };
    for (request, code) in [
        (
            f.write(Method::PUT, "files/linkdir/new.txt").body("evil"),
            "SYMLINK",
        ),
        (
            f.write(Method::PUT, "files/link.txt").body("evil"),
            "SYMLINK",
        ),
        (
            f.http.get(f.url("files/link.txt")).bearer_auth(&f.reader),
            "SYMLINK",
        ),
        (
            f.http
                .get(f.url("files/linkdir/secret.txt"))
                .bearer_auth(&f.reader),
            "SYMLINK",
        ),
        (f.write(Method::DELETE, "files/linkdir"), "SYMLINK"),
        (f.write(Method::PUT, "dirs/linkdir/sub"), "SYMLINK"),
        (rename("link.txt", "l2.txt"), "SYMLINK"),
        (rename("../outside/secret.txt", "x.txt"), "INVALID_PATH"),
        (rename("a.txt", "linkdir/x.txt"), "SYMLINK"),
    ] {
        let (status, got, message) = error_code(request.send().await.unwrap()).await;
        assert_eq!((status, got.as_str()), (400, code), "{message}");
    }

    assert_eq!(
        tree(f.dir.path()),
        outside_before,
        "nothing written anywhere"
    );
    assert_eq!(
        std::fs::read(f.outside().join("secret.txt")).unwrap(),
        b"secret"
    );
    assert!(
        f.manifest("since=0").await.entries.is_empty(),
        "links are not listed"
    );
    f.server.stop().await;
}

#[tokio::test]
async fn case_insensitive_collisions_are_refused_with_the_existing_name() {
    let f = Fixture::start().await;
    assert!(
        f.put("Docs/Readme.md", b"1", None)
            .await
            .status()
            .is_success()
    );
    let r = f.put("Docs/README.md", b"2", None).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (409, "CASE_COLLISION"));
    assert!(message.contains("Docs/Readme.md"), "{message}");
    let r = f.put("docs/other.md", b"3", None).await;
    let (status, _, message) = error_code(r).await;
    assert_eq!(status, 409);
    assert!(message.contains("\"Docs\""), "{message}");
    // Changing only the case of a name is a rename, not a collision.
    let r = f
        .write(Method::POST, "rename")
        .json(&json!({"from": "Docs/Readme.md", "to": "Docs/README.md"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!f.root().join("docs").exists());
    f.server.stop().await;
}

#[tokio::test]
async fn file_and_root_size_limits() {
    let f = Fixture::start_with(|root| {
        root.put_max_size = 1000;
        root.max_file_size = 1500;
        root.max_root_size = 2500;
    })
    .await;
    let r = f.put("big.bin", &[7u8; 1001], None).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (413, "TOO_LARGE"));
    assert!(message.contains("commit"), "{message}");
    assert!(
        f.put("a.bin", &[1u8; 1000], None)
            .await
            .status()
            .is_success()
    );
    assert!(
        f.put("b.bin", &[2u8; 1000], None)
            .await
            .status()
            .is_success()
    );
    let r = f.put("c.bin", &[3u8; 600], None).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (507, "ROOT_FULL"));
    assert!(message.contains("max_root_size"), "{message}");
    assert!(!f.root().join("c.bin").exists());
    // Replacing a file counts its new size only.
    assert!(
        f.put("b.bin", &[4u8; 900], None)
            .await
            .status()
            .is_success()
    );
    f.assert_no_staging_files();
    f.server.stop().await;
}

#[tokio::test]
async fn tokens_and_capabilities_are_checked() {
    let f = Fixture::start().await;
    let r = f.http.get(f.url("manifest")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await.0, 401);
    let put_as = |token: Option<&str>| {
        let request = f
            .http
            .put(f.url("files/a.txt"))
            .header("x-ferry-sync-source", SOURCE)
            .body("x");
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
        .send()
    };
    for (token, status, code) in [
        (None, 401, "AUTH_REQUIRED"),
        (Some("not-a-token"), 401, "AUTH_FAILED"),
        // A reader reads, and may not write.
        (Some(f.reader.as_str()), 403, "PERMISSION_DENIED"),
    ] {
        let (got, got_code, message) = error_code(put_as(token).await.unwrap()).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{message}");
    }
    assert!(!f.root().join("a.txt").exists());
    assert_eq!(f.read("manifest").send().await.unwrap().status(), 200);
    // ?token= works as on the other request-scoped routes.
    let r = f
        .http
        .get(f.url(&format!("manifest?token={}", f.reader)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The source header is required and checked; `server` is reserved.
    for source in [None, Some("server"), Some("has space"), Some("")] {
        let mut request = f
            .http
            .put(f.url("files/a.txt"))
            .bearer_auth(&f.writer)
            .body("x");
        if let Some(s) = source {
            request = request.header("x-ferry-sync-source", s);
        }
        let r = request.send().await.unwrap();
        assert_eq!(error_code(r).await.0, 400, "source {source:?}");
    }
    let r = f
        .write(Method::PUT, "files/a.txt")
        .header("x-ferry-sync-base", "ABC")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);
    let r = f
        .http
        .get(f.server.http("/sync/nope/manifest"))
        .bearer_auth(&f.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 404);
    // Without a token, an unknown root is not told apart from a known one.
    let r = f
        .http
        .get(f.server.http("/sync/nope/manifest"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 401);
    f.server.stop().await;
}

#[tokio::test]
async fn a_finished_tus_upload_is_committed_into_the_root() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (location, upload) = f.tus_upload(&content).await;

    let commit = |sha256: String, path: &str| {
        f.write(Method::POST, "commit")
            .json(&json!({"upload": upload, "path": path, "sha256": sha256}))
            .send()
    };
    let r = commit(sha(b"other"), "big/file.bin").await.unwrap();
    assert_eq!(error_code(r).await.1, "CHECKSUM_MISMATCH");
    // A refused commit (stale base) leaves the upload in place for another try.
    assert!(
        f.put("big/file.bin", b"meanwhile", None)
            .await
            .status()
            .is_success()
    );
    let r = f
        .write(Method::POST, "commit")
        .header("x-ferry-sync-base", "none")
        .json(&json!({"upload": upload, "path": "big/file.bin", "sha256": sha(&content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = commit(sha(&content), "big/file (conflict).bin")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let entry: ManifestEntry = r.json().await.unwrap();
    assert_eq!(entry.sha256.as_deref(), Some(sha(&content).as_str()));
    assert_eq!(
        std::fs::read(f.root().join("big/file (conflict).bin")).unwrap(),
        content
    );
    let r = f
        .http
        .head(f.server.http(&location))
        .bearer_auth(&f.writer)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the upload is gone");
    let r = commit(sha(&content), "again.bin").await.unwrap();
    assert_eq!(error_code(r).await.0, 404);

    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.path, "big/file.bin");
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(
        (op.op, op.path.as_str(), op.source.as_str()),
        (OpKind::Put, "big/file (conflict).bin", SOURCE)
    );
    assert_eq!(op.size, content.len() as u64);
    f.server.stop().await;
}

#[tokio::test]
async fn a_root_that_vanishes_is_not_published_as_deleted() {
    let f = Fixture::start().await;
    assert!(f.put("a.txt", b"a", None).await.status().is_success());
    // An unmounted disk or a moved folder: the path is gone at once, files intact.
    let moved = f.dir.path().join("root-moved");
    std::fs::rename(f.root(), &moved).unwrap();
    let r = f.read("files/a.txt").send().await.unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (500, "INTERNAL_ERROR"));
    let r = f.put("b.txt", b"b", None).await;
    assert_eq!(error_code(r).await.0, 500);
    let paths = f.paths().await;
    assert_eq!(paths, ["a.txt"], "the index still holds the file");
    let ops = channel_history(&f.server).await;
    assert!(ops.iter().all(|o| o.op == OpKind::Put), "{ops:?}");
    assert!(!f.dir.path().join("root").exists(), "nothing recreated it");
    f.server.stop().await;
}

#[tokio::test]
async fn a_data_dir_inside_a_root_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut config = support::test_config();
    config.data_dir = root.join("ferry-data");
    config.sync.roots = vec![SyncRootConfig::new(ROOT, &root)];
    let hub = ferry_hub::Hub::new(std::sync::Arc::new(config)).unwrap();
    let error = match ferry_hub::Server::bind_hub(hub).await {
        Ok(_) => panic!("a root holding the data dir was served"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("holds the hub's own files"), "{error}");
}

#[tokio::test]
async fn a_commit_copies_an_upload_from_another_filesystem() {
    // /dev/shm is tmpfs on Linux, so the upload cannot be renamed into the root and is
    // copied (where it is the same filesystem, the rename path runs: same outcome).
    let shm = Path::new("/dev/shm");
    let uploads = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let uploads_dir = uploads.path().to_path_buf();
    let f = Fixture::start_full(|_| {}, move |c| c.uploads.dir = Some(uploads_dir)).await;
    let content = vec![42u8; 70_000];
    let (_, upload) = f.tus_upload(&content).await;
    // Refused (the target is a directory): the upload stays whole where it was.
    assert!(
        f.write(Method::PUT, "dirs/taken")
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let commit = |path: &str| {
        f.write(Method::POST, "commit")
            .json(&json!({"upload": upload, "path": path, "sha256": sha(&content)}))
            .send()
    };
    let r = commit("taken").await.unwrap();
    assert_eq!(error_code(r).await.1, "IS_A_DIRECTORY");
    assert_eq!(
        std::fs::read(uploads.path().join(format!("{upload}.bin"))).unwrap(),
        content
    );
    let r = commit("copied.bin").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(f.root().join("copied.bin")).unwrap(), content);
    assert!(!uploads.path().join(format!("{upload}.bin")).exists());
    f.assert_no_staging_files();
    f.server.stop().await;
}

#[tokio::test]
async fn a_rewrite_with_the_same_size_in_the_same_millisecond_is_seen() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    let file = f.root().join("same-size.txt");
    std::fs::write(&file, b"aaaa").unwrap();
    let (first, _) = next_op(&mut ws).await;
    assert_eq!(first.path, "same-size.txt");
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let since_epoch = before.duration_since(std::time::UNIX_EPOCH).unwrap();
    // Another time within the same millisecond.
    let sub_ms = since_epoch.subsec_nanos() % 1_000_000;
    let other = if sub_ms == 999_999 {
        since_epoch - std::time::Duration::from_nanos(1)
    } else {
        since_epoch + std::time::Duration::from_nanos(1)
    };
    // Prepared outside the root and moved in: one atomic change, so the watcher never
    // sees the new content with another time.
    let prepared = f.dir.path().join("prepared.txt");
    std::fs::write(&prepared, b"bbbb").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&prepared)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + other)
        .unwrap();
    std::fs::rename(&prepared, &file).unwrap();
    let (second, _) = next_op(&mut ws).await;
    assert_eq!(second.path, "same-size.txt");
    assert_eq!(second.modified, first.modified, "the same millisecond");
    assert_eq!(second.sha256.as_deref(), Some(sha(b"bbbb").as_str()));
    f.server.stop().await;
}

#[tokio::test]
async fn only_the_hub_publishes_on_a_roots_channel() {
    let f = Fixture::start().await;
    // The writer may change files, but not forge an operation on the channel.
    let mut ws = WsClient::connect(&f.server.ws_url(&format!("/ws?token={}", f.writer))).await;
    ws.next_of_type("auth_success").await;
    let forged = json!({"op": "delete", "path": "a.txt", "version": 99, "source": "x"});
    let r = ws
        .request("publish", json!({"channel": CHANNEL, "data": forged}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["payload"]["code"], "PERMISSION_DENIED");
    assert!(channel_history(&f.server).await.is_empty());
    // Other channels of the namespace are not affected by the rule.
    let r = ws
        .request(
            "publish",
            json!({"channel": "sync:other", "data": {"x": 1}}),
        )
        .await;
    assert_eq!(r["type"], "reply", "{r}");
    f.server.stop().await;
}
