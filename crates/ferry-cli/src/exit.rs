//! The one table of exit codes every `ferry` command uses (each command's `--help` lists
//! the ones it can return).

/// The operation failed without an answer from the peer: no server, TLS, a lost
/// connection, an undecodable answer.
pub const FAILED: u8 = 1;
/// Usage: bad flags or arguments, an invalid URL, a missing file or secret.
pub const USAGE: u8 = 2;
/// The peer answered and refused: an HTTP 4xx/5xx, a hub error code, a refused token.
pub const REFUSED: u8 = 3;
/// No answer in time.
pub const TIMEOUT: u8 = 4;
/// Interrupted (Ctrl-C), as a shell reports SIGINT.
pub const INTERRUPTED: u8 = 130;
