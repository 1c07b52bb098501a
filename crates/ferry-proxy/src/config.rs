//! Every knob of `ferry proxy`, with its default and the reason for it.
//!
//! Layered like the hub's configuration: built-in defaults, then the `[proxy]` section of
//! `ferry.toml` (or `--config FILE`), then command-line flags (passed in as overrides).

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};

/// How a request picks its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each healthy backend in turn.
    #[default]
    RoundRobin,
    /// In turn, each backend as often as its `weight` (smooth weighted round-robin, as in
    /// nginx: weights 1:2:3 send a, b, c in the order c b c a b c, never bursts).
    WeightedRoundRobin,
    /// The healthy backend with the fewest requests in flight (ties: in turn).
    LeastConnections,
    /// Rendezvous hashing of a key (`hash_key`): the same key goes to the same backend
    /// while that backend is healthy; when one leaves, only its keys move.
    ConsistentHash,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum HashKey {
    /// The client's IP address (the TCP peer, not `X-Forwarded-For`, which a client can
    /// forge).
    #[default]
    ClientIp,
    /// The value of a request header, e.g. `X-Client-Id`; requests without it fall back to
    /// the client IP.
    Header(String),
    /// The value of a cookie; requests without it fall back to the client IP.
    Cookie(String),
}

impl std::str::FromStr for HashKey {
    type Err = String;
    /// `ip`, `header:NAME` or `cookie:NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "ip" => Ok(HashKey::ClientIp),
            Some(("header", name)) if !name.is_empty() => Ok(HashKey::Header(name.to_string())),
            Some(("cookie", name)) if !name.is_empty() => Ok(HashKey::Cookie(name.to_string())),
            _ => Err(format!(
                "hash key {s:?}: expected `ip`, `header:NAME` or `cookie:NAME`"
            )),
        }
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port` of a plain-HTTP backend, e.g. `127.0.0.1:8081`.
    pub address: String,
    /// Share of requests under `weighted_round_robin` and `consistent_hash`. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl std::str::FromStr for BackendConfig {
    type Err = String;
    /// `HOST:PORT` or `HOST:PORT,weight=N` (an `http://` prefix is accepted).
    fn from_str(s: &str) -> Result<Self, String> {
        let (address, weight) = match s.split_once(",weight=") {
            Some((a, w)) => (
                a,
                w.parse::<u32>()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| format!("backend {s:?}: weight must be a positive integer"))?,
            ),
            None => (s, 1),
        };
        let address = address.strip_prefix("http://").unwrap_or(address);
        let address = address.trim_end_matches('/');
        if address.is_empty() || !address.contains(':') || address.contains('/') {
            return Err(format!(
                "backend {s:?}: expected HOST:PORT or HOST:PORT,weight=N"
            ));
        }
        Ok(BackendConfig {
            address: address.to_string(),
            weight,
        })
    }
}

/// Active health checks: a GET to each backend every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Run them. Default true.
    pub enabled: bool,
    /// Path checked; a 2xx answer is healthy. Default `/ready` (a ferry node answers 503
    /// there while it is not ready to serve).
    pub path: String,
    /// Time between checks of one backend, in ms. Default 2000.
    pub interval_ms: u64,
    /// A check that has no answer within this many ms fails. Default 1000.
    pub timeout_ms: u64,
    /// Consecutive passes that bring an unhealthy backend back. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy backend out. Default 2. Worst case from a
    /// node's death to its ejection: `unhealthy_threshold × (interval_ms + timeout_ms)`.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: true,
            path: "/ready".into(),
            interval_ms: 2000,
            timeout_ms: 1000,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

/// Passive health checks: failures seen on real traffic eject a backend for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Failures (connect errors, timeouts, 502/503/504 answers) within `window_ms` that
    /// eject a backend; 0 turns passive checks off. Default 3.
    pub max_failures: u32,
    /// Window in which failures are counted, in ms. Default 10000.
    pub window_ms: u64,
    /// How long an ejected backend gets no traffic, in ms. Default 10000.
    pub cooldown_ms: u64,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            max_failures: 3,
            window_ms: 10_000,
            cooldown_ms: 10_000,
        }
    }
}

/// Limits on what clients and backends may cost, like the hub's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyLimits {
    /// Client connections held at once; more wait in the kernel's accept queue. Default
    /// 10000.
    pub max_connections: usize,
    /// A client must send its request headers within this many ms (the wait between
    /// requests on a kept-alive connection counts), and may not pause for longer in the
    /// middle of a body. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Connecting to a backend must succeed within this many ms. Default 2000.
    pub connect_timeout_ms: u64,
    /// A backend must start its answer (status and headers) within this many ms of the
    /// request's end (an upload's clock starts when its body is sent); the answer's body
    /// (an SSE stream, a download) may then take as long as it takes. A backend that takes
    /// none of an upload, or a client that takes none of its answer, for this long is
    /// given up on. Default 30000.
    pub response_timeout_ms: u64,
    /// On SIGTERM, in-flight requests get this many ms to finish. Default 10000.
    pub drain_timeout_ms: u64,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
        }
    }
}

/// The proxy's configuration. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address clients connect to. Default `127.0.0.1:8000`.
    pub listen: SocketAddr,
    /// Where `/metrics` (Prometheus text) and `/status` (JSON) are served: a separate
    /// address, so that the proxy never shadows a backend's own paths. Default none.
    pub admin_listen: Option<SocketAddr>,
    /// The backends. Default none (at least one is required).
    pub backends: Vec<BackendConfig>,
    /// How requests are spread. Default `round_robin`.
    pub policy: Policy,
    /// What `consistent_hash` hashes. Default the client IP.
    pub hash_key: HashKey,
    /// Idempotent requests without a body (GET, HEAD, OPTIONS, DELETE, TRACE) that fail
    /// before the backend answered are retried this many times, each on another backend.
    /// Default 2.
    pub retries: u32,
    /// Active checks.
    pub health_check: HealthCheckConfig,
    /// Passive checks.
    pub passive_health: PassiveHealthConfig,
    /// Limits and timeouts.
    pub limits: ProxyLimits,
    /// TLS termination on `listen` (https, wss), with `ferry serve`'s `[tls]` options:
    /// `cert` and `key` (reloaded when they change or on SIGHUP), or `self_signed` (made
    /// into `./ferry-data/tls/`). Backends are still spoken to in plain HTTP. Default off.
    pub tls: ferry_hub::config::TlsConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            admin_listen: None,
            backends: Vec::new(),
            policy: Policy::default(),
            hash_key: HashKey::default(),
            retries: 2,
            health_check: HealthCheckConfig::default(),
            passive_health: PassiveHealthConfig::default(),
            limits: ProxyLimits::default(),
            tls: ferry_hub::config::TlsConfig::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(std::path::PathBuf),
    /// The file could not be read or is not TOML.
    #[error("reading {path}: {message}")]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A value has the wrong type or an unknown key was given.
    #[error("invalid proxy configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// The values do not make a working proxy.
    #[error("invalid proxy configuration: {0}")]
    Unusable(String),
}

impl ProxyConfig {
    /// Defaults, then the `[proxy]` table of `file` (or of `./ferry.toml` when it exists and
    /// `file` is `None`), then `overrides` (the flags that were given, as a JSON object).
    pub fn load(
        file: Option<&Path>,
        overrides: serde_json::Value,
    ) -> Result<ProxyConfig, ConfigError> {
        let path = match file {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_owned())),
            Some(p) => Some(p.to_owned()),
            None => Some(Path::new("ferry.toml").to_owned()).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(ProxyConfig::default()));
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Unreadable {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Unreadable {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if let Some(section) = table.get("proxy") {
                figment = figment.merge(Serialized::defaults(section.clone()));
            }
        }
        let config: ProxyConfig = figment
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.check()?;
        Ok(config)
    }

    /// Refuse values that cannot work (no backends, zero thresholds).
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Unusable(m.to_string()));
        if self.backends.is_empty() {
            return bad("no backends: give --backend HOST:PORT or [[proxy.backends]]");
        }
        if self.backends.iter().any(|b| b.weight == 0) {
            return bad("a backend weight must be at least 1");
        }
        if let Some(b) = self
            .backends
            .iter()
            .find(|b| b.address.parse::<http::uri::Authority>().is_err())
        {
            return Err(ConfigError::Unusable(format!(
                "backend '{}' is not HOST:PORT",
                b.address
            )));
        }
        let h = &self.health_check;
        if h.interval_ms == 0 || h.timeout_ms == 0 {
            return bad("health_check.interval_ms and timeout_ms must be positive");
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            return bad("health_check thresholds must be at least 1");
        }
        if !h.path.starts_with('/') {
            return bad("health_check.path must start with /");
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections must be at least 1");
        }
        if self.tls.redirect_from.is_some() || self.tls.hsts_max_age_secs.is_some() {
            return bad(
                "tls.redirect_from and tls.hsts_max_age_secs are ferry serve's; the proxy passes its backends' headers through",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_keys_parse_from_flags() {
        let b: BackendConfig = "http://127.0.0.1:8081,weight=3".parse().expect("parses");
        assert_eq!(b.address, "127.0.0.1:8081");
        assert_eq!(b.weight, 3);
        assert!("127.0.0.1:8081,weight=0".parse::<BackendConfig>().is_err());
        assert!("nonsense".parse::<BackendConfig>().is_err());
        assert_eq!(
            "header:X-Client-Id".parse::<HashKey>(),
            Ok(HashKey::Header("X-Client-Id".into()))
        );
        assert!("header:".parse::<HashKey>().is_err());
    }

    #[test]
    fn a_backend_that_is_not_host_port_is_refused_at_start() {
        let mut cfg = ProxyConfig {
            backends: vec![BackendConfig {
                address: "bad host:80".into(),
                weight: 1,
            }],
            ..ProxyConfig::default()
        };
        let err = cfg.check().expect_err("refused").to_string();
        assert!(err.contains("'bad host:80' is not HOST:PORT"), "{err}");
        cfg.backends[0].address = "[::1]:8081".into();
        cfg.check().expect("an IPv6 backend is fine");
        // The hub's TLS keys that mean nothing to a proxy are refused, not ignored.
        cfg.tls.redirect_from = Some(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let err = cfg.check().expect_err("refused").to_string();
        assert!(err.contains("tls.redirect_from"), "{err}");
    }

    #[test]
    fn the_proxy_section_of_ferry_toml_is_read() {
        let dir = std::env::temp_dir().join(format!("ferry-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("ferry.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9\"\n[proxy]\npolicy = \"least_connections\"\n\
             hash_key = { kind = \"cookie\", name = \"sid\" }\n\
             [[proxy.backends]]\naddress = \"127.0.0.1:8081\"\nweight = 2\n\
             [proxy.health_check]\ninterval_ms = 500\n\
             [proxy.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        )
        .expect("write");
        let cfg = ProxyConfig::load(Some(&file), serde_json::json!({"retries": 0})).expect("loads");
        assert_eq!(
            cfg.tls.cert.as_deref(),
            Some(std::path::Path::new("cert.pem")),
            "[proxy.tls] takes ferry serve's [tls] keys"
        );
        assert!(cfg.tls.enabled());
        assert_eq!(cfg.policy, Policy::LeastConnections);
        assert_eq!(cfg.hash_key, HashKey::Cookie("sid".into()));
        assert_eq!(cfg.backends[0].weight, 2);
        assert_eq!(cfg.health_check.interval_ms, 500);
        assert_eq!(cfg.health_check.path, "/ready");
        assert_eq!(cfg.retries, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
