//! ferry-hub: the ferry realtime hub as a library.
//!
//! [`Server::bind`] + [`Server::run`] give the whole `ferry serve`; [`Hub`] is the
//! transport-agnostic core for embedding. See ARCHITECTURE.md for the map.

pub mod announce;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod conn;
pub mod error;
pub mod hub;
pub mod limits;
pub mod login_pool;
pub mod metrics;
pub mod presence;
pub mod publication;
pub mod redact;
#[cfg(feature = "redis")]
pub mod redis_engine;
pub mod secrets;
pub mod server;
mod sharded;
pub mod sockets;
pub mod static_files;
pub mod store;
pub mod sync;
pub mod tls;
pub mod transports;
pub mod uploads;

pub use config::Config;
pub use error::{HubError, HubResult};
pub use hub::Hub;
pub use server::{RunningServer, ServeError, Server, shutdown_signal};
