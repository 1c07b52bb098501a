//! Shared test support: a real server on an ephemeral loopback port and a small WebSocket
//! client that speaks either codec (its frames are read and written as JSON values, so
//! one test body runs over `ferry.json` and `ferry.msgpack`: see [`both_codecs!`]).
//! Every wait has a generous timeout as a safety net only.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_hub::{Config, Hub};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use ferry_proto::Codec;

thread_local! {
    /// The codec `WsClient::connect` speaks on this thread (tests run on a current-thread
    /// runtime, so a test and everything it spawns share it).
    static CODEC: Cell<Codec> = const { Cell::new(Codec::Json) };
}

/// Run a test body with every `WsClient` it opens speaking `codec`.
pub async fn with_codec<F: std::future::Future>(codec: Codec, body: F) -> F::Output {
    CODEC.with(|c| c.set(codec));
    body.await
}

/// The codec this thread's clients speak.
pub fn codec() -> Codec {
    CODEC.with(Cell::get)
}

/// Run each named `async fn` (no `#[tokio::test]` of its own) as two tests,
/// `NAME::json` and `NAME::msgpack`: one suite, both codecs.
#[macro_export]
macro_rules! both_codecs {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn json() {
                    super::support::with_codec(super::support::Codec::Json, super::$name()).await
                }
                #[tokio::test]
                async fn msgpack() {
                    super::support::with_codec(super::support::Codec::MsgPack, super::$name()).await
                }
            }
        )*
    };
}

#[allow(unused_imports)] // each test binary uses some of them
pub use ferry_testkit::server::{API_KEY, Api, JWT_SECRET, WAIT, now, token_with};

/// The shared test hub (ferry-testkit), with this suite's WebSocket client and API
/// helper on top.
pub struct TestServer(ferry_testkit::server::TestServer);

impl std::ops::Deref for TestServer {
    type Target = ferry_testkit::server::TestServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The test configuration on an ephemeral loopback port.
pub fn test_config() -> Config {
    ferry_testkit::server::test_config("127.0.0.1:0".parse().unwrap())
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start().await)
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start_with(edit).await)
    }

    /// Serve an existing hub (for custom backends).
    pub async fn start_hub(hub: Hub) -> TestServer {
        TestServer(ferry_testkit::server::TestServer::start_hub(hub).await)
    }

    /// Trigger graceful shutdown and wait for the server to finish.
    pub async fn stop(self) {
        self.0.stop().await
    }

    /// The status of a plain `GET` of `path`.
    pub async fn status_of(&self, path: &str) -> u16 {
        reqwest::get(self.http(path))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// An `/sse` stream with `query` (e.g. `channel=chat:a`), authenticated as `user`
    /// through `&token=`.
    pub async fn sse(&self, user: &str, query: &str) -> SseClient {
        let url = self.http(&format!("/sse?{query}&token={}", self.token(user)));
        SseClient::open(&url, &[]).await
    }

    /// A `/ws` connection authenticated as `user` through `?token=`, after its
    /// `auth_success` push.
    pub async fn client(&self, user: &str) -> WsClient {
        let mut c =
            WsClient::connect(&self.ws_url(&format!("/ws?token={}", self.token(user)))).await;
        let ok = c.next_of_type("auth_success").await;
        assert_eq!(ok["payload"]["user"], user);
        c
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsClient {
    pub stream: Stream,
    pub codec: Codec,
    pending: VecDeque<Value>,
    next_id: AtomicU64,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let codec = codec();
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            codec.subprotocol().parse().unwrap(),
        );
        let (stream, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
                .await
                .expect("connect in time")
                .expect("connect");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some(codec.subprotocol())
        );
        WsClient {
            stream,
            codec,
            pending: VecDeque::new(),
            next_id: AtomicU64::new(1),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// Send a frame given as JSON, encoded in the client's codec.
    pub async fn send_json(&mut self, v: Value) {
        match self.codec {
            Codec::Json => self.send_text(&v.to_string()).await,
            Codec::MsgPack => {
                let frame = rmp_serde::to_vec_named(&v).unwrap();
                self.stream.send(Message::binary(frame)).await.unwrap();
            }
        }
    }

    /// The next JSON frame from the server (pings and pongs skipped). Panics on close.
    async fn read_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("stream open")
                .expect("frame");
            match msg {
                Message::Text(t) => {
                    assert_eq!(self.codec, Codec::Json, "a text frame on {:?}", self.codec);
                    return serde_json::from_str(t.as_str()).expect("JSON frame");
                }
                Message::Binary(b) => {
                    assert_eq!(
                        self.codec,
                        Codec::MsgPack,
                        "a binary frame on {:?}",
                        self.codec
                    );
                    return Codec::MsgPack.frame_to_json(&b).expect("MessagePack frame");
                }
                Message::Close(c) => panic!("closed by server: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next frame, buffered ones first.
    pub async fn recv(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(v) => v,
            None => self.read_frame().await,
        }
    }

    /// The next frame of a type, buffering the others.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        self.next_where(|v| v["type"] == kind).await
    }

    /// The first frame, buffered ones first, that `wanted` accepts; the others stay
    /// buffered in order.
    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&wanted) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let v = self.read_frame().await;
            if wanted(&v) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Send a command with a fresh id and return the one answer with that id.
    pub async fn request(&mut self, kind: &str, payload: Value) -> Value {
        let id = format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send_json(json!({"type": kind, "id": id, "payload": payload}))
            .await;
        self.answer(&id).await
    }

    /// The answer (reply or error) with this id, buffering other frames.
    pub async fn answer(&mut self, id: &str) -> Value {
        self.next_where(|v| v["id"] == id).await
    }

    /// Read until the server closes; returns the close code and reason (frames before it
    /// are buffered). A connection dropped without a close frame returns 1006.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(Message::Text(t))) => self
                    .pending
                    .push_back(serde_json::from_str(t.as_str()).unwrap_or(Value::Null)),
                Some(Ok(Message::Binary(b))) => self
                    .pending
                    .push_back(Codec::MsgPack.frame_to_json(&b).unwrap_or(Value::Null)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (1006, String::new()),
            }
        }
    }

    /// Frames received so far and not consumed.
    pub fn buffered(&self) -> &VecDeque<Value> {
        &self.pending
    }
}

/// An open `text/event-stream` response, read through the project's own SSE parser.
/// Events queue up in order; comments (which the parser drops, as the standard says)
/// are visible through [`SseClient::wait_for_comment`].
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: ferry_proto::sse::SseParser,
    events: VecDeque<ferry_proto::sse::SseEvent>,
    /// Raw text received and not yet searched by `wait_for_comment`.
    raw: String,
}

impl SseClient {
    /// Wrap a response; panics unless it is `200 text/event-stream`.
    pub fn new(response: reqwest::Response) -> SseClient {
        assert_eq!(response.status().as_u16(), 200, "SSE status");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        SseClient {
            body: Box::pin(response.bytes_stream()),
            parser: ferry_proto::sse::SseParser::new(),
            events: VecDeque::new(),
            raw: String::new(),
        }
    }

    /// `GET url` with extra headers, as an SSE stream.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("SSE response in time")
            .expect("SSE request");
        SseClient::new(response)
    }

    /// Read one chunk; `false` when the stream has ended.
    async fn read_chunk(&mut self) -> bool {
        let chunk = tokio::time::timeout(WAIT, self.body.next())
            .await
            .expect("SSE bytes in time");
        match chunk {
            Some(Ok(bytes)) => {
                self.raw.push_str(&String::from_utf8_lossy(&bytes));
                let mut parsed = Vec::new();
                self.parser
                    .feed(&bytes, &mut parsed)
                    .expect("valid event stream");
                self.events.extend(parsed);
                true
            }
            Some(Err(_)) | None => false,
        }
    }

    /// The next event. Panics if the stream ends first.
    pub async fn next_event(&mut self) -> ferry_proto::sse::SseEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            assert!(
                self.read_chunk().await,
                "SSE stream ended while an event was awaited"
            );
        }
    }

    /// Read until a comment line `: text` arrives (events read meanwhile stay queued).
    pub async fn wait_for_comment(&mut self, text: &str) {
        let needle = format!(": {text}\n");
        loop {
            if let Some(at) = self.raw.find(&needle) {
                self.raw.drain(..at + needle.len());
                return;
            }
            assert!(
                self.read_chunk().await,
                "SSE stream ended while `{needle}` was awaited"
            );
        }
    }

    /// Read until the server ends the stream; returns the events not consumed before.
    pub async fn expect_end(&mut self) -> Vec<ferry_proto::sse::SseEvent> {
        while self.read_chunk().await {}
        self.events.drain(..).collect()
    }

    /// The last event id seen (what an EventSource would send as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }
}

impl WsClient {
    /// After [`WsClient::expect_close`]: answer the server's close frame and read until
    /// the connection ends, as a browser does, so the server need not wait for the reply.
    pub async fn finish_close(&mut self) {
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// The offsets of a JSON array of publications, in order.
pub fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .map(|list| list.iter().filter_map(|p| p["offset"].as_u64()).collect())
        .unwrap_or_default()
}
