//! Discovery targets in place of a URL (`ferry://_any`, `ferry://NAME[/path][?query]`)
//! and the [`Locator`] the WebSocket driver asks for an address before each attempt.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Url;

use super::memory::{self, Remembered};
use super::{Discovery, DiscoveryOptions};
use crate::ws::transport::{self, Endpoint, Opened};
use crate::ws::{Error, ErrorKind};

/// The scheme of discovery targets.
pub const SCHEME: &str = "ferry";

/// The host of `ferry://_any`: whichever hub answers first.
pub const ANY: &str = "_any";

/// Where to connect, found by discovery: a node name or any hub, with an optional path
/// and query in place of the announced WebSocket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    name: Option<String>,
    path: Option<String>,
    query: Option<String>,
}

impl Target {
    /// Parse `ferry://_any` or `ferry://NAME` (percent-encoded where needed), optionally
    /// followed by a path and query; `Ok(None)` for any other scheme.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a `ferry://` URL without a host.
    pub fn parse(url: &str) -> Result<Option<Target>, Error> {
        let Some(rest) = url.get(..SCHEME.len() + 3) else {
            return Ok(None);
        };
        if !rest.eq_ignore_ascii_case("ferry://") {
            return Ok(None);
        }
        let parsed = Url::parse(url)
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("`{url}` is not a URL: {e}")))?;
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidUrl,
                format!("`{url}` names no hub; use ferry://_any or ferry://NODE-NAME"),
            )
        })?;
        let host = percent_encoding::percent_decode_str(host)
            .decode_utf8_lossy()
            .into_owned();
        let name = (host != ANY).then_some(host);
        let path = Some(parsed.path())
            .filter(|p| !p.is_empty() && *p != "/")
            .map(str::to_string);
        Ok(Some(Target {
            name,
            path,
            query: parsed.query().map(str::to_string),
        }))
    }

    /// The node name asked for; `None` for `_any`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The key under which the state file remembers this target: `_any` or the name in
    /// lowercase.
    pub fn key(&self) -> String {
        match &self.name {
            Some(n) => n.to_lowercase(),
            None => ANY.to_string(),
        }
    }

    /// The path and query to use on a hub that announced `announced`.
    fn path_for(&self, announced: &str) -> String {
        let mut path = self.path.clone().unwrap_or_else(|| announced.to_string());
        if let Some(q) = &self.query {
            path.push('?');
            path.push_str(q);
        }
        path
    }
}

/// Before each connection attempt of a `ferry://` WebSocket: which address to try, and
/// what to remember when it works.
pub(crate) struct Locator {
    target: Target,
    options: DiscoveryOptions,
    /// The address that worked last (or was remembered), and whose hub it was.
    current: Option<(Url, String)>,
    /// Failed attempts in a row at `current`.
    failures: u32,
    opened_once: bool,
    loaded: bool,
}

impl Locator {
    pub(crate) fn new(target: Target, options: DiscoveryOptions) -> Self {
        Locator {
            target,
            options,
            current: None,
            failures: 0,
            opened_once: false,
            loaded: false,
        }
    }

    /// A placeholder until the first lookup: never connected to.
    pub(crate) fn placeholder_url() -> Result<Url, Error> {
        transport::parse_url("ws://0.0.0.0/")
    }

    /// One connection attempt: the remembered address while it keeps working (at start,
    /// or fewer than `rediscover_after` failures in a row), else discovery.
    pub(crate) async fn connect(
        &mut self,
        endpoint: &mut Endpoint,
        token: Option<&str>,
    ) -> Result<Opened, Error> {
        if !self.loaded {
            self.loaded = true;
            self.load().await;
        }
        if let Some((url, name)) = self.current.clone() {
            let at_start = !self.opened_once;
            if at_start || self.failures < self.options.rediscover_after {
                endpoint.url = url.clone();
                match transport::connect(endpoint, token).await {
                    Ok(opened) => {
                        self.worked(url, name).await;
                        return Ok(opened);
                    }
                    Err(error) => {
                        self.failures += 1;
                        tracing::debug!(%error, failures = self.failures, "remembered hub address failed");
                        if !at_start {
                            return Err(error);
                        }
                    }
                }
            }
        }
        let hub = self.find().await?;
        let mut last = None;
        for url in hub.urls_with_path(&self.target.path_for(&hub.path)) {
            let url = transport::parse_url(&url)?;
            endpoint.url = url.clone();
            match transport::connect(endpoint, token).await {
                Ok(opened) => {
                    self.worked(url, hub.name.clone()).await;
                    return Ok(opened);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Connection,
                format!("hub {} has no address", hub.name),
            )
        }))
    }

    async fn find(&self) -> Result<super::DiscoveredHub, Error> {
        let mut builder = self.options.discovery.clone();
        if let Some(name) = self.target.name() {
            builder = builder.name(name);
        }
        let timeout = builder.timeout;
        let mut run: Discovery = builder
            .start()
            .map_err(|e| Error::new(ErrorKind::Connection, e.to_string()))?;
        run.next().await.ok_or_else(|| {
            let which = match self.target.name() {
                Some(name) => format!("no hub named `{name}`"),
                None => "no hub".to_string(),
            };
            Error::new(
                ErrorKind::Connection,
                format!(
                    "{which} answered discovery within {timeout:?}; is it running with a non-loopback --listen address, and is it on this network?"
                ),
            )
        })
    }

    async fn load(&mut self) {
        let Some(path) = &self.options.state_file else {
            return;
        };
        if let Some(entry) = memory::load(path, &self.target.key()).await {
            match transport::parse_url(&entry.url) {
                Ok(url) => self.current = Some((url, entry.name)),
                Err(error) => tracing::debug!(%error, "ignoring a remembered address"),
            }
        }
    }

    async fn worked(&mut self, url: Url, name: String) {
        self.failures = 0;
        self.opened_once = true;
        self.current = Some((url.clone(), name.clone()));
        let Some(path) = &self.options.state_file else {
            return;
        };
        let saved_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let entry = Remembered {
            url: url.to_string(),
            name,
            saved_at,
        };
        if let Err(error) = memory::save(path, &self.target.key(), entry).await {
            tracing::warn!(%error, path = %path.display(), "could not remember the hub's address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("ws://127.0.0.1:1/ws").expect("ok"), None);
        let any = Target::parse("ferry://_any").expect("ok").expect("target");
        assert_eq!(any.name(), None);
        assert_eq!(any.key(), "_any");
        assert_eq!(any.path_for("/ws"), "/ws");
        let named = Target::parse("ferry://Kitchen%20Hub/test/echo?x=1")
            .expect("ok")
            .expect("target");
        assert_eq!(named.name(), Some("Kitchen Hub"));
        assert_eq!(named.key(), "kitchen hub");
        assert_eq!(named.path_for("/ws"), "/test/echo?x=1");
        assert!(Target::parse("ferry://").is_err());
    }
}
