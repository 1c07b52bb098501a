//! ferry-client: resilient async clients for HTTP, WebSocket, Server-Sent Events and the
//! ferry hub. Reconnect, backoff and heartbeat policy come from `ferry_proto::reconnect`;
//! SSE parsing from `ferry_proto::sse`.

pub mod discover;
pub mod event_source;
pub mod framing;
pub mod http;
pub mod hub;
pub mod sync;
pub mod upload;

pub mod scan;
pub mod ws;

pub use discover::discover;
