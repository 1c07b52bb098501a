//! `ferry proxy` in front of three real `ferry serve` nodes on loopback.
//!
//! Each node serves a `node.txt` naming itself (`--static`), so a response says which node
//! answered, independently of the proxy's own counters. What is shown: the spread of every
//! policy, HTTP/2 from the client, WebSocket and SSE pass-through with live publications,
//! ejection of a killed node by the health checks and its re-admission, sticky reconnects
//! under consistent hashing, and a drain on SIGTERM.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, token_for};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// For tests of the spread alone: no health checks, which could eject a node of a loaded
/// machine for a moment and so change the counts.
const STEADY: &[&str] = &["--no-health-check", "--max-failures", "0"];

/// Safety net for anything awaited (never a timing assertion).
const WAIT: Duration = Duration::from_secs(20);

/// Three nodes, each with a `node.txt` that names it.
struct Cluster {
    nodes: Vec<FerryServer>,
    names: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start() -> anyhow::Result<Cluster> {
        let (mut nodes, mut names, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for name in ["node-a", "node-b", "node-c"] {
            let dir = tempfile::tempdir()?;
            std::fs::write(dir.path().join("node.txt"), name)?;
            let path = dir.path().to_str().context("utf-8 temp path")?.to_string();
            nodes.push(FerryServer::start(&["--static", &path]).await?);
            names.push(name.to_string());
            dirs.push(dir);
        }
        Ok(Cluster { nodes, names, dirs })
    }

    fn backend_args(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| ["--backend".to_string(), format!("127.0.0.1:{}", n.port)])
            .collect()
    }

    /// Bring node `i` back on its old port.
    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let path = self.dirs[i].path().to_str().context("utf-8")?.to_string();
        let listen = format!("127.0.0.1:{}", self.nodes[i].port);
        self.nodes[i] = FerryServer::start_listen(&listen, &["--static", &path]).await?;
        Ok(())
    }

    /// Open connections on each node, read from its own `/api/stats`.
    /// A node that is `down` counts 0 (it cannot answer).
    async fn connections(
        &self,
        http: &reqwest::Client,
        down: Option<usize>,
    ) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if Some(i) == down {
                out.push(0);
                continue;
            }
            let stats: Value = http
                .get(format!("{}/api/stats", n.base_url))
                .header("Authorization", format!("apikey {API_KEY}"))
                .send()
                .await?
                .json()
                .await?;
            out.push(stats["connections"].as_u64().context("connections")?);
        }
        Ok(out)
    }
}

/// A running `ferry proxy`, killed when dropped.
struct ProxyProcess {
    url: String,
    admin: String,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl ProxyProcess {
    async fn start(cluster: &Cluster, extra: &[&str]) -> anyhow::Result<ProxyProcess> {
        ProxyProcess::start_with(cluster.backend_args(), extra).await
    }

    async fn start_with(backends: Vec<String>, extra: &[&str]) -> anyhow::Result<ProxyProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(backends)
            .args(extra)
            .current_dir(std::env::temp_dir()) // no stray ferry.toml
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning ferry proxy")?;
        let mut stdout = BufReader::new(child.stdout.take().context("piped")?);
        let mut read_line = async || -> anyhow::Result<String> {
            let mut line = String::new();
            tokio::time::timeout(WAIT, stdout.read_line(&mut line)).await??;
            Ok(line.trim().to_string())
        };
        let first = read_line().await?;
        let second = read_line().await?;
        let url = first
            .strip_prefix("ferry proxy listening on ")
            .with_context(|| format!("unexpected line {first:?}"))?
            .to_string();
        let admin = second
            .strip_prefix("ferry proxy admin on ")
            .with_context(|| format!("unexpected line {second:?}"))?
            .to_string();
        Ok(ProxyProcess {
            url,
            admin,
            child,
            _stdout: stdout,
        })
    }

    async fn status(&self, http: &reqwest::Client) -> anyhow::Result<Value> {
        Ok(http
            .get(format!("{}/status", self.admin))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Poll `/status` (every 20 ms, a bounded number of times) until `pred` holds.
    async fn await_status(
        &self,
        http: &reqwest::Client,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status(http).await?;
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("{what}: not reached within {WAIT:?}; last status {s}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}

/// GET `/node.txt` through the proxy `n` times; how many each node answered.
async fn spread(
    http: &reqwest::Client,
    proxy: &ProxyProcess,
    n: usize,
    key: impl Fn(usize) -> Option<String>,
) -> anyhow::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let mut req = http.get(format!("{}/node.txt", proxy.url));
        if let Some(k) = key(i) {
            req = req.header("X-Client-Id", k);
        }
        let resp = req.send().await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        *counts.entry(resp.text().await?).or_insert(0) += 1;
    }
    Ok(counts)
}

fn count(c: &HashMap<String, usize>, name: &str) -> usize {
    c.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn every_policy_spreads_requests_as_documented() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let http = client();
    let [a, b, c] = [&cluster.names[0], &cluster.names[1], &cluster.names[2]];

    // Round-robin: exactly one in three each.
    let proxy =
        ProxyProcess::start(&cluster, &[STEADY, &["--policy", "round-robin"]].concat()).await?;
    let rr = spread(&http, &proxy, 90, |_| None).await?;
    assert_eq!((count(&rr, a), count(&rr, b), count(&rr, c)), (30, 30, 30));
    // The client may speak HTTP/2 (h2c, prior knowledge); the backends get HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(WAIT)
        .build()?;
    let resp = h2.get(format!("{}/node.txt", proxy.url)).send().await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // Forwarding headers reach the backend (the testbed echoes them).
    let echo: Value = http
        .get(format!("{}/test/anything", proxy.url))
        .send()
        .await?
        .json()
        .await?;
    let headers = echo["headers"].to_string().to_ascii_lowercase();
    assert!(headers.contains("x-forwarded-for"), "{echo}");
    assert!(headers.contains("for=127.0.0.1;proto=http"), "{echo}");
    drop(proxy);

    // Weighted 1:2:3: exactly 10, 20, 30 of 60 (smooth weighted round-robin is exact).
    let weighted = cluster
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            [
                "--backend".into(),
                format!("127.0.0.1:{},weight={}", n.port, i + 1),
            ]
        })
        .collect();
    let proxy = ProxyProcess::start_with(
        weighted,
        &[STEADY, &["--policy", "weighted-round-robin"]].concat(),
    )
    .await?;
    let w = spread(&http, &proxy, 60, |_| None).await?;
    assert_eq!((count(&w, a), count(&w, b), count(&w, c)), (10, 20, 30));
    drop(proxy);

    // Least connections: two slow requests hold two nodes, so every quick one goes to the
    // third; once they finish, the three share again.
    let proxy = ProxyProcess::start(
        &cluster,
        &[STEADY, &["--policy", "least-connections"]].concat(),
    )
    .await?;
    let slow = |url: String| {
        let http = http.clone();
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    // 10 s (the testbed's most): long enough for 20 quick requests on a loaded machine.
    let s1 = slow(format!("{}/test/delay/10", proxy.url));
    let s2 = slow(format!("{}/test/delay/10", proxy.url));
    proxy
        .await_status(&http, "two slow requests in flight", |s| {
            s["backends"]
                .as_array()
                .is_some_and(|b| b.iter().filter(|b| b["in_flight"] == 1).count() == 2)
        })
        .await?;
    let quick = spread(&http, &proxy, 20, |_| None).await?;
    assert_eq!(
        quick.len(),
        1,
        "all quick requests on the idle node: {quick:?}"
    );
    assert_eq!(s1.await??, 200);
    assert_eq!(s2.await??, 200);
    let after = spread(&http, &proxy, 30, |_| None).await?;
    assert_eq!(
        (count(&after, a), count(&after, b), count(&after, c)),
        (10, 10, 10)
    );
    drop(proxy);

    // Consistent hashing on a header: 150 keys land on all three (expected 50 each; we
    // accept 25..=75), and one key always lands on the same node.
    let proxy = ProxyProcess::start(
        &cluster,
        &[
            STEADY,
            &[
                "--policy",
                "consistent-hash",
                "--hash-key",
                "header:X-Client-Id",
            ],
        ]
        .concat(),
    )
    .await?;
    let keys = spread(&http, &proxy, 150, |i| Some(format!("client-{i}"))).await?;
    for name in [a, b, c] {
        assert!((25..=75).contains(&count(&keys, name)), "{keys:?}");
    }
    let same = spread(&http, &proxy, 20, |_| Some("client-7".into())).await?;
    assert_eq!(same.len(), 1, "{same:?}");
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A hub WebSocket through the proxy, with `X-Client-Id: key`.
async fn ws_connect(proxy: &ProxyProcess, key: &str) -> anyhow::Result<Ws> {
    let url = format!(
        "{}/ws?token={}",
        proxy.url.replacen("http://", "ws://", 1),
        token_for("alice")
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ferry.json".parse()?);
    request.headers_mut().insert("x-client-id", key.parse()?);
    let (ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await??;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"ferry.json"[..])
    );
    Ok(ws)
}

/// The next text frame whose `type` is `kind`.
async fn next_of_type(ws: &mut Ws, kind: &str) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await?
            .context("stream ended")??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }
}

async fn publish(
    http: &reqwest::Client,
    proxy: &ProxyProcess,
    key: &str,
    data: Value,
) -> anyhow::Result<()> {
    let resp = http
        .post(format!("{}/api/publish", proxy.url))
        .header("Authorization", format!("apikey {API_KEY}"))
        .header("X-Client-Id", key)
        .json(&json!({"channel": "chat:room", "data": data}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "publish: {}", resp.status());
    Ok(())
}

#[tokio::test]
async fn websocket_and_sse_pass_through_and_reconnects_stick_to_their_node() -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let http = client();
    let proxy = ProxyProcess::start(
        &cluster,
        &[
            "--policy",
            "consistent-hash",
            "--hash-key",
            "header:X-Client-Id",
            "--health-interval-ms",
            "200",
            "--health-timeout-ms",
            "3000",
        ],
    )
    .await?;
    // Nodes share no broker: a publication reaches subscribers of the node it was made on.
    // The same key sends the subscription and the publication to the same node.
    let key = "sticky-client";
    let mut ws = ws_connect(&proxy, key).await?;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "1", "payload": {"channel": "chat:room"}}).to_string(),
    ))
    .await?;
    let reply = next_of_type(&mut ws, "reply").await?;
    assert_eq!(reply["id"], "1", "{reply}");

    // SSE through the proxy: the stream stays open and each event arrives as it happens.
    let sse = http
        .get(format!(
            "{}/sse?channel=chat:room&token={}",
            proxy.url,
            token_for("bob")
        ))
        .header("X-Client-Id", key)
        .send()
        .await?;
    assert_eq!(sse.status(), 200);
    assert!(
        sse.headers()["content-type"]
            .to_str()?
            .starts_with("text/event-stream")
    );
    let mut sse = sse.bytes_stream();
    let mut sse_text = String::new();
    // The stream's opening (`: ferry`, `retry:`) arrives before any publication.
    while !sse_text.contains("retry:") {
        let chunk = tokio::time::timeout(WAIT, sse.next())
            .await?
            .context("sse ended")??;
        sse_text.push_str(&String::from_utf8_lossy(&chunk));
    }

    publish(&http, &proxy, key, json!({"text": "through the proxy"})).await?;
    let msg = next_of_type(&mut ws, "message").await?;
    assert_eq!(msg["payload"]["data"]["text"], "through the proxy", "{msg}");
    while !sse_text.contains("through the proxy") {
        let chunk = tokio::time::timeout(WAIT, sse.next())
            .await?
            .context("sse ended")??;
        sse_text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(sse_text.contains("event: message"), "{sse_text}");
    drop(sse);
    ws.close(None).await?;
    drop(ws);

    // Reconnects with the same key land on the same node, seen from the nodes' own stats.
    let mut home = None;
    for _ in 0..5 {
        let ws = ws_connect(&proxy, key).await?;
        let conns = wait_for_connections(&cluster, &http, None, 1).await?;
        let node = conns
            .iter()
            .position(|c| *c == 1)
            .context("one node holds it")?;
        assert_eq!(
            *home.get_or_insert(node),
            node,
            "reconnect moved: {conns:?}"
        );
        drop(ws);
        wait_for_connections(&cluster, &http, None, 0).await?;
    }
    let home = home.context("connected")?;

    // While the home node is down, the key moves; when it is back, the key returns.
    cluster.nodes[home].kill().await?;
    proxy
        .await_status(&http, "home node ejected", |s| {
            s["backends"][home]["available"] == false
        })
        .await?;
    let ws = ws_connect(&proxy, key).await?;
    let conns = wait_for_connections(&cluster, &http, Some(home), 1).await?;
    assert_eq!(conns[home], 0, "{conns:?}");
    drop(ws);
    wait_for_connections(&cluster, &http, Some(home), 0).await?;
    cluster.restart(home).await?;
    proxy
        .await_status(&http, "home node re-admitted", |s| {
            s["backends"][home]["available"] == true
        })
        .await?;
    let ws = ws_connect(&proxy, key).await?;
    let conns = wait_for_connections(&cluster, &http, None, 1).await?;
    assert_eq!(conns[home], 1, "back on its node: {conns:?}");
    drop(ws);
    Ok(())
}

/// Poll every live node's `/api/stats` until the total of connections is `total`.
async fn wait_for_connections(
    cluster: &Cluster,
    http: &reqwest::Client,
    down: Option<usize>,
    total: u64,
) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let conns = cluster.connections(http, down).await?;
        if conns.iter().sum::<u64>() == total {
            return Ok(conns);
        }
        if Instant::now() > deadline {
            bail!("connections never summed to {total}: {conns:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_checks_eject_a_killed_node_and_readmit_it() -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let http = client();
    // Passive checks off, so that only the active checks decide.
    let proxy = ProxyProcess::start(
        &cluster,
        &[
            "--health-interval-ms",
            "200",
            "--health-timeout-ms",
            "3000",
            "--unhealthy-threshold",
            "2",
            "--healthy-threshold",
            "2",
            "--max-failures",
            "0",
        ],
    )
    .await?;
    let before = spread(&http, &proxy, 30, |_| None).await?;
    assert_eq!(count(&before, &cluster.names[1]), 10);

    let killed_at = Instant::now();
    cluster.nodes[1].kill().await?;
    let status = proxy
        .await_status(&http, "killed node ejected", |s| {
            s["backends"][1]["healthy"] == false
        })
        .await?;
    // Worst case by configuration: 2 × (200 + 3000) ms (a refused connect fails at once, so
    // it is ~2 × 200 ms in practice); 2 s of slack for a loaded machine.
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_millis(6400 + 2000),
        "ejected after {took:?}"
    );
    let sent_before = status["backends"][1]["requests"]
        .as_u64()
        .context("requests")?;

    let during = spread(&http, &proxy, 30, |_| None).await?;
    assert_eq!(count(&during, &cluster.names[1]), 0);
    assert_eq!(
        count(&during, &cluster.names[0]) + count(&during, &cluster.names[2]),
        30
    );
    let status = proxy.status(&http).await?;
    assert_eq!(
        status["backends"][1]["requests"].as_u64(),
        Some(sent_before),
        "nothing was sent to the ejected node: {status}"
    );

    cluster.restart(1).await?;
    proxy
        .await_status(&http, "node re-admitted", |s| {
            s["backends"][1]["healthy"] == true
        })
        .await?;
    let after = spread(&http, &proxy, 30, |_| None).await?;
    assert_eq!(count(&after, &cluster.names[1]), 10, "{after:?}");
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let http = client();
    let mut proxy = ProxyProcess::start(&cluster, &["--drain-timeout-ms", "15000"]).await?;
    let slow = {
        let (http, url) = (http.clone(), format!("{}/test/delay/2", proxy.url));
        tokio::spawn(async move {
            let r = http.get(url).send().await?;
            let status = r.status();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
    };
    proxy
        .await_status(&http, "slow request in flight", |s| {
            s["backends"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["in_flight"] == 1))
        })
        .await?;
    let pid = proxy.child.id().context("proxy pid")?;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(kill.success());
    let (status, body) = tokio::time::timeout(WAIT, slow).await???;
    assert_eq!(status, 200);
    assert!(body.contains("\"delay\""), "{body}");
    let exit = tokio::time::timeout(WAIT, proxy.child.wait()).await??;
    assert!(exit.success(), "proxy exit {exit:?}");
    // Gone: new connections are refused.
    let refused = http.get(format!("{}/node.txt", proxy.url)).send().await;
    assert!(refused.is_err());
    Ok(())
}
