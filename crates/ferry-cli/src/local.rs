//! The local hub's secrets, for client commands run next to it: `ferry token` signs with
//! its JWT secret, `ferry pub` and the server API commands send its API key, so that
//! neither needs `sed` on `secrets.toml`.
//!
//! Order: the flag (or its `FERRY_*` variable), then `ferry.toml` (or `--config`), then
//! `DATA_DIR/secrets.toml` as `ferry serve` generated it. Nothing is generated here.

use std::path::PathBuf;

use clap::Args;
use ferry_hub::Config;

/// Where to find the local hub's configuration and secrets.
#[derive(Args, Debug, Clone, Default)]
pub struct LocalArgs {
    /// The hub's data directory, for its secrets.toml [default: ./ferry-data, or data_dir in
    /// ferry.toml].
    #[arg(long, value_name = "DIR", env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The hub's configuration file [default: ./ferry.toml when it exists].
    #[arg(long, value_name = "FILE", env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Which secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// `api_key`.
    ApiKey,
    /// `jwt_secret`.
    JwtSecret,
}

impl Which {
    fn key(self) -> &'static str {
        match self {
            Which::ApiKey => "api_key",
            Which::JwtSecret => "jwt_secret",
        }
    }
}

impl LocalArgs {
    /// The secret from configuration or the data directory's secrets.toml; `Err` says
    /// where it looked and what to do.
    pub fn secret(&self, which: Which) -> Result<String, String> {
        let mut overrides = serde_json::Map::new();
        if let Some(dir) = &self.data_dir {
            overrides.insert("data_dir".into(), dir.display().to_string().into());
        }
        let config =
            Config::load(self.config.as_deref(), overrides.into()).map_err(|e| e.to_string())?;
        let configured = match which {
            Which::ApiKey => config.api_key.as_ref(),
            Which::JwtSecret => config.jwt_secret.as_ref(),
        };
        if let Some(secret) = configured {
            return Ok(secret.expose().to_string());
        }
        let path = config.data_dir.join("secrets.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no {} given and {} cannot be read ({e}); start `ferry serve` once here (it generates the file), or pass --data-dir DIR",
                which.key(),
                path.display()
            )
        })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
        table
            .get(which.key())
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{} has no {}", path.display(), which.key()))
    }
}
