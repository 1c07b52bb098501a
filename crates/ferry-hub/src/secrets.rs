//! First-start secrets: when no API key or JWT secret is configured, they are generated
//! once into `DATA_DIR/secrets.toml` (mode 0600) and reused on later starts.

use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Secret};
use crate::error::SetupError;

#[derive(Serialize, Deserialize, Default)]
struct SecretsFile {
    api_key: Option<String>,
    jwt_secret: Option<String>,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What [`ensure_secrets`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsOutcome {
    /// Both secrets were configured; nothing was read or written.
    Configured,
    /// Missing secrets were read from this file.
    Loaded(PathBuf),
    /// Missing secrets were generated into this file.
    Generated(PathBuf),
}

/// Fill in a missing API key and JWT secret from `DATA_DIR/secrets.toml`, generating the
/// file on first start. The values themselves are never printed or logged.
pub fn ensure_secrets(config: &mut Config) -> Result<SecretsOutcome, SetupError> {
    if config.api_key.is_some() && config.jwt_secret.is_some() {
        return Ok(SecretsOutcome::Configured);
    }
    let path = config.data_dir.join("secrets.toml");
    let (mut file, existed) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            toml::from_str::<SecretsFile>(&text).map_err(|e| SetupError::InvalidFile {
                path: path.clone(),
                source: Box::new(e),
            })?,
            true,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SecretsFile::default(), false),
        Err(e) => return Err(SetupError::file("read", &path, e)),
    };
    let mut changed = false;
    if file.api_key.is_none() {
        file.api_key = Some(random_secret());
        changed = true;
    }
    if file.jwt_secret.is_none() {
        file.jwt_secret = Some(random_secret());
        changed = true;
    }
    if changed {
        let text = toml::to_string(&file)
            .map_err(|e| SetupError::Config(format!("rendering {}: {e}", path.display())))?;
        write_private(&path, &text)?;
    }
    if config.api_key.is_none() {
        config.api_key = file.api_key.map(Secret::new);
    }
    if config.jwt_secret.is_none() {
        config.jwt_secret = file.jwt_secret.map(Secret::new);
    }
    Ok(if existed && !changed {
        SecretsOutcome::Loaded(path)
    } else {
        SecretsOutcome::Generated(path)
    })
}

/// Write `text` into `path`, readable and writable by its owner only.
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> Result<(), SetupError> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SetupError::file("create", dir, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| SetupError::file("write", path, e))?;
    // `mode` applies only when the file is created: an existing file readable by others
    // is tightened before the secrets are written into it.
    #[cfg(unix)]
    tighten(path, &f)?;
    f.write_all(text.as_bytes())
        .map_err(|e| SetupError::file("write", path, e))
}

/// Make `file` (open at `path`) readable and writable by its owner only, with a warning
/// when it was not.
#[cfg(unix)]
fn tighten(path: &std::path::Path, file: &std::fs::File) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(|e| SetupError::file("read the mode of", path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| SetupError::file("make private (chmod 600)", path, e))?;
        tracing::warn!(
            path = %path.display(),
            "secrets file was readable by others (mode {mode:04o}); changed it to 0600"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_mode_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let outcome = ensure_secrets(&mut cfg).expect("generate");
        let path = dir.path().join("data/secrets.toml");
        assert_eq!(outcome, SecretsOutcome::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = cfg.api_key.clone().expect("key");
        let mut again = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert_eq!(
            ensure_secrets(&mut again).expect("load"),
            SecretsOutcome::Loaded(path)
        );
        assert_eq!(again.api_key, Some(key));
    }
}
