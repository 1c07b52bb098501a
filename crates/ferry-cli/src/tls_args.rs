//! `--cacert` and `--pin`: whom a client command trusts over TLS (https, wss).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use ferry_client::http::TlsTrust;

/// A `--cacert` or `--pin` that cannot be used (a usage error for every command).
#[derive(Debug)]
pub struct BadTlsFlag(pub String);

impl From<ferry_client::http::HttpError> for BadTlsFlag {
    fn from(e: ferry_client::http::HttpError) -> BadTlsFlag {
        BadTlsFlag(e.to_string())
    }
}

/// What to do about a [`BadTlsFlag`].
pub const HINT: &str =
    "--cacert takes a PEM certificate file; --pin takes sha256/BASE64 as ferry serve prints it";

/// The TLS trust flags every client command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Trust this CA certificate (PEM) in addition to the system's, e.g. a hub's
    /// DATA_DIR/tls/self-signed-cert.pem.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Require the server's key to have this SPKI SHA-256 (sha256/BASE64, as `ferry serve`
    /// prints it); repeatable, any one may match.
    #[arg(long, value_name = "PIN")]
    pub pin: Vec<String>,
}

impl TlsArgs {
    /// The trust the flags describe.
    pub fn trust(&self) -> Result<TlsTrust, BadTlsFlag> {
        let mut trust = TlsTrust::new();
        if let Some(path) = &self.cacert {
            let pem = std::fs::read(path)
                .map_err(|e| BadTlsFlag(format!("cannot read {}: {e}", path.display())))?;
            trust = trust.add_root_certificate_pem(&pem)?;
        }
        for pin in &self.pin {
            trust = trust.pin(pin)?;
        }
        Ok(trust)
    }

    /// The rustls configuration for wss, or `None` without flags (the client's default).
    pub fn websocket_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, BadTlsFlag> {
        if self.cacert.is_none() && self.pin.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.trust()?.websocket_config()?))
    }
}
