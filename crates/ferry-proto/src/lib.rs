//! ferry-proto: the ferry wire protocol and pure protocol logic.
//!
//! This crate never does I/O, never reads a clock and never spawns tasks: time is a
//! parameter wherever it matters. Everything here is shared by the hub, the clients and
//! the CLI, so that the wire format has exactly one definition.

pub mod codec;
pub mod codes;
pub mod data;
pub mod deflate;
pub mod discovery;
pub mod envelope;
pub mod json_depth;
pub mod reconnect;
pub mod session;
pub mod sse;
pub mod sync;
pub mod tus;
pub mod ws_frame;

pub use codec::Codec;
pub use codes::{CloseCode, ErrorCode};
pub use data::Data;
pub use envelope::{Envelope, ErrorPayload};
