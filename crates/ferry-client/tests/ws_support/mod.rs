//! Shared support for the WebSocket, EventSource and hub client tests: a real ferry hub
//! on an ephemeral loopback port (restartable on the same port), its HTTP API, tokens,
//! and small misbehaving servers. Every wait has a generous timeout as a safety net only.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;

use ferry_client::ws::{ConnectionState, StateStream, WebSocket, WebSocketBuilder};
use ferry_hub::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // each test binary uses some of them
pub use ferry_testkit::server::{API_KEY, JWT_SECRET, WAIT, closed_port};

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

/// The next message as JSON.
pub async fn next_json(ws: &WebSocket, what: &str) -> Value {
    within(what, ws.recv())
        .await
        .expect("a message")
        .parse_json()
        .expect("JSON")
}

/// Send `text` and check that the next message received is that text (an echo).
pub async fn assert_echo(ws: &WebSocket, text: &str) {
    ws.send_text(text).unwrap();
    assert_eq!(
        within("echo", ws.recv()).await.unwrap().as_text(),
        Some(text)
    );
}

/// The shared test hub (ferry-testkit), with this suite's API helpers on top.
pub struct TestServer(ferry_testkit::server::TestServer);

impl std::ops::Deref for TestServer {
    type Target = ferry_testkit::server::TestServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub fn test_config(listen: SocketAddr) -> Config {
    ferry_testkit::server::test_config(listen)
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start().await)
    }

    /// Start on `addr` (e.g. the address of a server just stopped, to simulate a restart).
    pub async fn start_on(addr: SocketAddr) -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start_on(addr).await)
    }

    pub async fn start_with(config: Config) -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start_config(config).await)
    }

    /// Graceful shutdown (clients get 1001), waiting until it finished.
    pub async fn stop(self) {
        self.0.stop().await
    }

    /// POST JSON to an /api endpoint with the API key; returns (status, body).
    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api().post(path, body).await
    }

    /// A client of `/ws` speaking `ferry.json`, with `user`'s token.
    pub fn hub_ws(&self, user: &str) -> WebSocketBuilder {
        WebSocket::builder(&self.ws_url("/ws"))
            .subprotocol("ferry.json")
            .token(&self.token(user))
    }

    /// Have the hub drop `user`'s connections with 1013 (try again later); the next
    /// state `states` reports.
    pub async fn drop_user(&self, user: &str, states: &mut StateStream) -> ConnectionState {
        self.api_post(
            "/api/disconnect",
            serde_json::json!({"user": user, "reconnect": true}),
        )
        .await;
        next_state(states).await
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
