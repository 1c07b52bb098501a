//! Shared support for the WebSocket, EventSource and hub client tests: a real ferry hub
//! on an ephemeral loopback port (restartable on the same port), its HTTP API, tokens,
//! and small misbehaving servers. Every wait has a generous timeout as a safety net only.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_client::ws::{ConnectionState, StateStream};
use ferry_hub::config::Secret;
use ferry_hub::{Config, Hub, RunningServer, Server};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Safety-net timeout for anything a test awaits.
pub const WAIT: Duration = Duration::from_secs(10);

pub const API_KEY: &str = "test-api-key";
pub const JWT_SECRET: &str = "test-jwt-secret";

/// Await `f`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The next state change.
pub async fn next_state(states: &mut StateStream) -> ConnectionState {
    within("a state change", states.next())
        .await
        .expect("state stream open")
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    running: Option<RunningServer>,
}

pub fn test_config(listen: SocketAddr) -> Config {
    Config {
        listen,
        api_key: Some(Secret::new(API_KEY)),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        data_dir: std::env::temp_dir().join("ferry-client-test-unused"),
        // Tests share that directory; history stays in memory.
        history: ferry_hub::config::HistoryBackend::Memory,
        testbed: true,
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Start on `addr` (e.g. the address of a server just stopped, to simulate a restart).
    pub async fn start_on(addr: SocketAddr) -> TestServer {
        Self::start_with(test_config(addr)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let running = Server::bind(config)
            .await
            .expect("bind")
            .spawn()
            .expect("spawn");
        TestServer {
            addr: running.local_addr(),
            hub: running.hub().clone(),
            running: Some(running),
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A token for `user` signed with the test secret.
    pub fn token(&self, user: &str) -> String {
        self.hub.auth().issue(user).unwrap().0
    }

    /// Graceful shutdown (clients get 1001), waiting until it finished.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            within("server shutdown", running.shutdown())
                .await
                .expect("serve");
        }
    }

    /// POST JSON to an /api endpoint with the API key; returns (status, body).
    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.http(path))
            .header("authorization", format!("apikey {API_KEY}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Publish through the HTTP API; returns the offset.
    pub async fn publish(&self, channel: &str, data: Value) -> u64 {
        let (status, body) = self
            .api_post(
                "/api/publish",
                serde_json::json!({"channel": channel, "data": data}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["offset"].as_u64().unwrap()
    }
}

/// A WebSocket server that completes the handshake and then never reads again: it
/// answers no ping and no request. Returns its address and a channel that reports each
/// accepted connection.
pub async fn silent_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                // Keep the socket open but never poll it: no pong is ever sent.
                held.push(ws);
                let _ = tx.send(());
            }
        }
    });
    (addr, rx)
}

/// An address on which nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A plain WebSocket echo server that can be stopped (closing every connection with
/// 1001, like a server shutting down) and started again on the same port.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> EchoServer {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            let mut shutdown = stopped.clone();
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                };
                let mut shutdown = stopped.clone();
                connections.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            frame = ws.next() => match frame {
                                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                                    if ws.send(m).await.is_err() {
                                        return;
                                    }
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                            _ = shutdown.changed() => {
                                let close = Message::Close(Some(CloseFrame {
                                    code: CloseCode::Away,
                                    reason: "restarting".into(),
                                }));
                                let _ = ws.send(close).await;
                                // Wait for the client's answer (the stream ends after it).
                                while let Some(Ok(_)) = ws.next().await {}
                                return;
                            }
                        }
                    }
                });
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        EchoServer { addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Close every connection with 1001 and release the port.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        within("echo server stop", self.task).await.unwrap();
    }
}
