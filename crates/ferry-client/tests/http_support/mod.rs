//! Shared support for the `http_*` tests: the ferry hub (with its /test/* testbed) on an
//! ephemeral loopback port, and a tiny scripted HTTP/1.1 server for what the hub cannot
//! show (connection reuse, a request that hangs at a known point).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_client::http::{Http, RetryPolicy};
use ferry_hub::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Safety net for anything a test awaits; never a way to wait for an event.
pub const WAIT: Duration = Duration::from_secs(20);

/// The shared test hub (ferry-testkit: the test keys, memory history, the testbed),
/// shut down gracefully (without waiting) when dropped.
pub struct Hub(ferry_testkit::server::TestServer);

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Hub {
        Hub(ferry_testkit::server::TestServer::start_with(edit).await)
    }

    pub fn url(&self, path: &str) -> String {
        self.0.http(path)
    }
}

/// A client that does not retry (tests that want retries say so).
pub fn http() -> Http {
    Http::builder().retry(RetryPolicy::none()).build().unwrap()
}

/// A client with retries whose backoff is negligible, so that only `Retry-After` shows in
/// the elapsed time.
pub fn http_fast_retries(n: u32) -> Http {
    Http::builder()
        .retry(RetryPolicy {
            max_retries: n,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

#[allow(unused_imports)] // not every test binary refuses a connection
pub use ferry_testkit::server::closed_port;

/// What a scripted server does with one request.
pub enum Script {
    /// Answer 200 with this body, keeping the connection open.
    Reply(&'static str),
    /// Send the head and part of a body, then hold the connection without sending more.
    Stall,
    /// Never answer.
    Hang,
}

/// A minimal HTTP/1.1 server: reports every request head on `requests`, counts accepted
/// connections, and answers each request per `script`.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: mpsc::UnboundedReceiver<String>,
    /// Reports each connection's end (the peer closed or reset it).
    pub closed: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    pub async fn start(script: fn(&str) -> Script) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let req_tx = req_tx.clone();
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    serve_connection(stream, script, req_tx).await;
                    let _ = closed_tx.send(());
                });
            }
        });
        ScriptedServer {
            addr,
            connections,
            requests,
            closed,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    script: fn(&str) -> Script,
    requests: mpsc::UnboundedSender<String>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (the tests send no request bodies here).
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                break head;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let action = script(&head);
        let _ = requests.send(head);
        match action {
            Script::Reply(body) => {
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
                    body.len(),
                    body
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            Script::Stall => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                wait_for_close(&mut stream).await;
                return;
            }
            Script::Hang => {
                wait_for_close(&mut stream).await;
                return;
            }
        }
    }
}

/// Returns when the peer closes or resets the connection.
async fn wait_for_close(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The bytes `/test/range/{n}?seed=S` serves, fetched in one plain request.
pub async fn expected_range_bytes(hub: &Hub, n: usize, seed: u64) -> Vec<u8> {
    http()
        .get(&hub.url(&format!("/test/range/{n}?seed={seed}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}
