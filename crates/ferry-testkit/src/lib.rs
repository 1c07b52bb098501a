//! ferry-testkit: the contracts every backend implementation must keep, as suites the
//! tests of each implementation run (memory, SQLite and Redis today), and a throwaway
//! Debian `redis-server` for the tests that need one.
//!
//! - [`store`]: `HistoryStore` (offsets, pages, retention).
//! - [`broker`]: `Broker` (order per channel, join/leave, append-and-publish, forwarding
//!   between nodes).
//! - [`presence`]: `PresenceStore` (join, get, leave).
//! - [`redis`]: [`redis::TestRedis`], a redis-server on an ephemeral loopback port.
//! - [`server`]: [`server::TestServer`], the in-process test hub of the hub's and the
//!   client's test suites.

pub mod broker;
pub mod presence;
pub mod redis;
pub mod server;
pub mod store;
