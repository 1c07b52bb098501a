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
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        let mut root = SyncRootConfig::new(ROOT, dir.path().join("root"));
        edit(&mut root);
        let server = start_server(dir.path(), root).await;
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

    /// A WebSocket subscribed to the root's channel.
    async fn subscribe(&self) -> WsClient {
        let mut ws = self.server.client("watcher").await;
        let r = ws.request("subscribe", json!({"channel": CHANNEL})).await;
        assert_eq!(r["type"], "reply", "{r}");
        ws
    }
}

async fn start_server(dir: &Path, root: SyncRootConfig) -> TestServer {
    let data = dir.join("data");
    TestServer::start_with(move |c: &mut Config| {
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

    let r = f
        .read("files/notes/a.bin")
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap(), content[10..20]);

    let r = f
        .read("files/notes/a.bin")
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */100000");

    let r = f
        .read("files/notes/a.bin")
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .unwrap();
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
    assert!(
        std::fs::read_dir(f.root().join(".ferry-sync/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no staging file left behind"
    );

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
    let listed: Vec<_> = f
        .manifest("since=0")
        .await
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(listed.contains(&"moved/deep/n.txt".to_string()), "{listed:?}");

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
    let paths: Vec<_> = f
        .manifest("since=0")
        .await
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(paths, ["after-link.txt", "renamed.txt"]);

    // An API write is seen by the watcher too, and publishes once.
    assert!(f.put("api.txt", b"api", None).await.status().is_success());
    std::fs::write(f.root().join("marker.txt"), b"m").unwrap();
    let (op, _) = next_op(&mut ws).await;
    assert_eq!((op.path.as_str(), op.source.as_str()), ("api.txt", SOURCE));
    let (op, _) = next_op(&mut ws).await;
    assert_eq!(op.path, "marker.txt", "nothing in between");
    f.server.stop().await;
}

#[tokio::test]
async fn a_restart_publishes_only_what_changed_while_the_hub_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("same.txt"), b"unchanged").unwrap();
    std::fs::write(root.join("edited.txt"), b"before").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/kept.txt"), b"kept").unwrap();

    let config = SyncRootConfig::new(ROOT, &root);
    let server = start_server(dir.path(), config.clone()).await;
    let api = server.api();
    let (_, history) = api
        .post("/api/history", json!({"channel": CHANNEL, "limit": 100}))
        .await;
    let first: Vec<FileOp> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_value(p["data"].clone()).unwrap())
        .collect();
    assert_eq!(
        first.len(),
        4,
        "the first scan publishes every path: {first:?}"
    );
    assert!(first.iter().all(|o| o.source == "server"));
    let version = first.last().unwrap().version;
    server.stop().await;

    std::fs::write(root.join("edited.txt"), b"after, longer").unwrap();
    let server = start_server(dir.path(), config).await;
    let api = server.api();
    let (_, history) = api
        .post("/api/history", json!({"channel": CHANNEL, "limit": 100}))
        .await;
    let ops: Vec<FileOp> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_value(p["data"].clone()).unwrap())
        .collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].path, "edited.txt");
    assert_eq!(ops[0].op, OpKind::Put);
    assert_eq!(
        ops[0].version,
        version + 1,
        "versions continue across restarts"
    );
    assert_eq!(
        ops[0].sha256.as_deref(),
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
    assert!(
        std::fs::read_dir(f.root().join(".ferry-sync/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    f.server.stop().await;
}

#[tokio::test]
async fn tokens_and_capabilities_are_checked() {
    let f = Fixture::start().await;
    let r = f.http.get(f.url("manifest")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await.0, 401);
    let r = f
        .http
        .put(f.url("files/a.txt"))
        .header("x-ferry-sync-source", SOURCE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 401);
    let r = f
        .http
        .get(f.url("manifest"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 401);
    // A reader reads, and may not write.
    let r = f
        .http
        .put(f.url("files/a.txt"))
        .bearer_auth(&f.reader)
        .header("x-ferry-sync-source", SOURCE)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"));
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
    f.server.stop().await;
}

#[tokio::test]
async fn a_finished_tus_upload_is_committed_into_the_root() {
    let f = Fixture::start().await;
    let mut ws = f.subscribe().await;
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let r = f
        .http
        .post(f.server.http("/files/"))
        .bearer_auth(&f.writer)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", content.len().to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let upload = location.rsplit('/').next().unwrap().to_string();

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
