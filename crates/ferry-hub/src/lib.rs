//! ferry-hub: the ferry realtime hub as a library.
//!
//! [`Server::bind`] + [`Server::run`] give the whole `ferry serve`; [`Hub`] is the
//! transport-agnostic core for embedding. See ARCHITECTURE.md for the map.

pub(crate) mod announce;
pub mod auth;
pub mod broker;
pub mod channel;
pub(crate) mod commands;
pub mod config;
pub(crate) mod conn;
pub mod error;
pub mod hub;
pub(crate) mod limits;
pub(crate) mod login_pool;
pub(crate) mod metrics;
pub mod presence;
pub mod publication;
pub mod redact;
#[cfg(feature = "redis")]
pub mod redis_engine;
pub mod secrets;
pub mod server;
mod sharded;
pub(crate) mod sockets;
pub(crate) mod static_files;
pub mod store;
pub(crate) mod sync;
pub mod tls;
pub(crate) mod transports;
pub(crate) mod uploads;

pub use config::Config;
pub use error::{HubError, HubResult, SetupError};
pub use hub::Hub;
pub use server::{RunningServer, ServeError, Server, shutdown_signal};
