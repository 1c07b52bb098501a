//! `ferry proxy` as a library: a reverse proxy and load balancer for ferry nodes (or any
//! HTTP backends).
//!
//! - [`config`]: every knob, loaded from the `[proxy]` section of `ferry.toml` and flags.
//! - [`balancer`]: backends, health state and the policies (round-robin, smooth weighted
//!   round-robin, least connections, rendezvous hashing on a key).
//! - [`client`]: each worker's pool of kept-alive backend connections.
//! - [`health`]: active checks. Passive ejection lives in [`balancer::Backend`].
//! - [`h1`]: the HTTP/1.1 fast path: plain requests parsed in place and forwarded on
//!   pooled sockets; everything else is handed to hyper.
//! - [`forward`]: one request to one backend: forwarding headers, retries, WebSocket
//!   upgrades, bodies streamed frame by frame (SSE is never buffered).
//! - [`server`]: accept loop with a connection limit, graceful drain, admin endpoints.
//!
//! The proxy never panics on client or backend input: every failure is a 502/503/504.

pub mod balancer;
pub mod client;
pub mod config;
pub mod forward;
pub mod h1;
pub mod health;
pub mod metrics;
pub mod server;

pub use config::{BackendConfig, HashKey, Policy, ProxyConfig};
pub use server::Proxy;
