//! The one in-process test hub the test suites of ferry-hub and ferry-client share: a real
//! `Server` on an ephemeral loopback port (or a given address, to restart on the same
//! port), with the test API key and JWT secret, memory history and the testbed routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_hub::config::{HistoryBackend, Secret};
use ferry_hub::{Config, Hub, RunningServer, Server};
use serde_json::{Value, json};

/// Safety-net timeout for anything a test awaits.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server API key of every test hub.
pub const API_KEY: &str = "test-api-key";

/// The HS256 JWT secret of every test hub.
pub const JWT_SECRET: &str = "test-jwt-secret";

/// The test configuration listening on `listen`: the test key and secret, memory history
/// (tests share the data dir; those about durable history set their own), the testbed.
pub fn test_config(listen: SocketAddr) -> Config {
    Config {
        listen,
        api_key: Some(Secret::new(API_KEY)),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        data_dir: std::env::temp_dir().join("ferry-test-unused"),
        history: HistoryBackend::Memory,
        testbed: true,
        ..Config::default()
    }
}

/// Seconds since the Unix epoch (for token claims).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HS256 token with arbitrary claims, signed with [`JWT_SECRET`].
pub fn token_with(claims: Value) -> String {
    sign_hs256(&claims, JWT_SECRET)
}

/// `claims` signed as an HS256 token with `secret`. Minted with `jsonwebtoken` rather than
/// the hub's own issuer, so that the server is checked against an independent
/// implementation.
pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of JSON claims cannot fail")
}

/// A loopback address on which nothing listens (bound, then released), for refused
/// connections.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a bound address")
}

/// A running test hub; [`TestServer::stop`] shuts it down gracefully.
pub struct TestServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The hub it serves.
    pub hub: Hub,
    running: Option<RunningServer>,
}

impl TestServer {
    /// The test configuration on an ephemeral loopback port.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// The test configuration on `addr` (the address of a server just stopped, to
    /// simulate a restart).
    pub async fn start_on(addr: SocketAddr) -> TestServer {
        Self::start_config(test_config(addr)).await
    }

    /// The test configuration on an ephemeral loopback port, changed by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(SocketAddr::from(([127, 0, 0, 1], 0)));
        edit(&mut config);
        Self::start_config(config).await
    }

    /// Exactly `config`.
    pub async fn start_config(config: Config) -> TestServer {
        Self::start_hub(Hub::new(Arc::new(config)).expect("hub")).await
    }

    /// Serve an existing hub (for custom backends).
    pub async fn start_hub(hub: Hub) -> TestServer {
        let running = Server::bind_hub(hub)
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

    /// `http://ADDR` + `path`.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://ADDR` + `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server API, authenticated with [`API_KEY`].
    pub fn api(&self) -> Api {
        Api {
            base: self.http(""),
            client: reqwest::Client::new(),
        }
    }

    /// An HS256 token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        token_with(json!({"sub": user, "exp": now() + 3600}))
    }

    /// Graceful shutdown (clients get 1001), waiting until it finished.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running.shutdown())
                .await
                .expect("shutdown in time")
                .expect("serve");
        }
    }
}

/// The server API of a test hub (`/api/*` with [`API_KEY`]).
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// POST JSON to an `/api` endpoint; the status and the JSON body (`null` when the body
    /// is not JSON).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.client
                .post(format!("{}{}", self.base, path))
                .json(&body),
        )
        .await
    }

    /// GET an `/api` endpoint; as [`post`](Self::post).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{}", self.base, path)))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .header("authorization", format!("apikey {API_KEY}"))
            .send()
            .await
            .expect("the test hub answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
