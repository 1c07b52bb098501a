//! A private in-memory HTTP cache (SPEC H6) following RFC 9111 for what a client needs:
//! `Cache-Control` (`max-age`, `no-store`, `no-cache`), `Expires`, `Age`, `Vary`, and
//! revalidation with `ETag` / `If-None-Match` and `Last-Modified` / `If-Modified-Since`,
//! where a `304 Not Modified` is answered from the stored body. An explicit TTL, per cache
//! or per request, overrides the server's freshness (but never `no-store`).
//!
//! Only `GET` responses are stored. A successful unsafe request (POST, PUT, PATCH, DELETE)
//! to a URL drops its entry (RFC 9111 §4.4). Times are parameters, so the rules are tested
//! without a clock.

mod rules;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use reqwest::Url;

use rules::{
    age_header, cacheable_status, conditional_headers, directives, freshness_lifetime, key,
    vary_names,
};

/// Settings of an [`HttpCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries kept; the least recently used goes first. Default 256.
    pub max_entries: usize,
    /// Larger bodies are not stored. Default 2 MiB: the cache is for API responses, not
    /// downloads.
    pub max_entry_bytes: usize,
    /// When set, every stored response is fresh for this long whatever the server said
    /// (except `no-store`, which is always honoured). Default `None`: the server decides.
    pub ttl: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 256,
            max_entry_bytes: 2 << 20,
            ttl: None,
        }
    }
}

/// How the cache took part in a response ([`Response::cache_status`](super::Response::cache_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// The cache was not consulted: no cache configured, a non-GET request, or bypassed.
    Bypass,
    /// Not in the cache (or stale without validators): fetched from the server.
    Miss,
    /// Served from the cache without contacting the server.
    Hit,
    /// The stored response was stale; the server confirmed it with `304 Not Modified` and
    /// the stored body was served.
    Revalidated,
}

/// A shared in-memory cache; cheap to clone (all clones share the entries).
#[derive(Clone)]
pub struct HttpCache {
    config: CacheConfig,
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("config", &self.config)
            .field("entries", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    tick: u64,
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Instant,
    /// `Age` the response already had when it arrived.
    initial_age: Duration,
    lifetime: Duration,
    /// The request headers named by `Vary`, as they were when the entry was stored.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    last_used: u64,
}

/// A stored response being served.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the cache has for a request.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Fresh: serve it.
    Fresh(Cached),
    /// Stale but revalidatable: send these conditional headers.
    Stale(Vec<(HeaderName, HeaderValue)>),
    /// Nothing usable.
    Miss,
}

impl HttpCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> HttpCache {
        HttpCache {
            config,
            store: Arc::new(Mutex::new(Store::default())),
        }
    }

    /// The settings this cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // The store holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of stored responses.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every entry.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// Drop the entry for `url`, if any.
    pub fn invalidate(&self, url: &Url) {
        self.lock().entries.remove(&key(url));
    }

    /// What the cache holds for a GET of `url` with `request` headers at `now`.
    pub(crate) fn lookup(&self, url: &Url, request: &HeaderMap, now: Instant) -> Lookup {
        let req = directives(request);
        let mut store = self.lock();
        store.tick += 1;
        let tick = store.tick;
        let Some(entry) = store.entries.get_mut(&key(url)) else {
            return Lookup::Miss;
        };
        let vary_matches = entry
            .vary
            .iter()
            .all(|(name, value)| request.get(name) == value.as_ref());
        if !vary_matches {
            return Lookup::Miss;
        }
        entry.last_used = tick;
        let age = entry.initial_age + now.saturating_duration_since(entry.stored_at);
        let must_revalidate = req.no_cache || req.max_age.is_some_and(|m| age.as_secs() >= m);
        if age < entry.lifetime && !must_revalidate {
            return Lookup::Fresh(Cached {
                status: entry.status,
                headers: entry.headers.clone(),
                body: entry.body.clone(),
            });
        }
        let validators = conditional_headers(&entry.headers);
        if validators.is_empty() {
            Lookup::Miss
        } else {
            Lookup::Stale(validators)
        }
    }

    /// Whether a response to a GET could be stored, judging by headers only.
    pub(crate) fn is_storable(
        &self,
        status: StatusCode,
        request: &HeaderMap,
        response: &HeaderMap,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> bool {
        if !cacheable_status(status)
            || directives(request).no_store
            || directives(response).no_store
            || vary_names(response).is_none()
        {
            return false;
        }
        let too_big = response
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > self.config.max_entry_bytes);
        if too_big {
            return false;
        }
        let ttl = ttl.or(self.config.ttl);
        let fresh_for_a_while =
            freshness_lifetime(response, ttl, now).is_some_and(|l| l > Duration::ZERO);
        fresh_for_a_while || !conditional_headers(response).is_empty()
    }

    /// Store a response to a GET of `url`. Returns whether it was stored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &self,
        url: &Url,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        body: Bytes,
        ttl: Option<Duration>,
        now: Instant,
        now_system: SystemTime,
    ) -> bool {
        if body.len() > self.config.max_entry_bytes
            || !self.is_storable(status, request, response, ttl, now_system)
        {
            return false;
        }
        let Some(names) = vary_names(response) else {
            return false;
        };
        let ttl = ttl.or(self.config.ttl);
        let entry = Entry {
            status,
            headers: response.clone(),
            body,
            stored_at: now,
            initial_age: age_header(response),
            lifetime: freshness_lifetime(response, ttl, now_system).unwrap_or(Duration::ZERO),
            vary: names
                .into_iter()
                .map(|n| {
                    let v = request.get(&n).cloned();
                    (n, v)
                })
                .collect(),
            last_used: 0,
        };
        let mut store = self.lock();
        store.tick += 1;
        let tick = store.tick;
        store.entries.insert(
            key(url),
            Entry {
                last_used: tick,
                ..entry
            },
        );
        while store.entries.len() > self.config.max_entries.max(1) {
            let oldest = store
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => store.entries.remove(&k),
                None => break,
            };
        }
        true
    }

    /// The server answered `304 Not Modified` for the stored response of `url`: update
    /// its headers and freshness from the 304 (RFC 9111 §4.3.4) and return it.
    pub(crate) fn revalidated(
        &self,
        url: &Url,
        not_modified: &HeaderMap,
        ttl: Option<Duration>,
        now: Instant,
        now_system: SystemTime,
    ) -> Option<Cached> {
        let ttl = ttl.or(self.config.ttl);
        let mut store = self.lock();
        let entry = store.entries.get_mut(&key(url))?;
        for name in not_modified.keys() {
            // Framing headers describe the empty 304, not the stored body.
            if name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::CONTENT_ENCODING
            {
                continue;
            }
            entry.headers.remove(name);
            for value in not_modified.get_all(name) {
                entry.headers.append(name.clone(), value.clone());
            }
        }
        entry.stored_at = now;
        entry.initial_age = age_header(not_modified);
        entry.lifetime =
            freshness_lifetime(&entry.headers, ttl, now_system).unwrap_or(Duration::ZERO);
        Some(Cached {
            status: entry.status,
            headers: entry.headers.clone(),
            body: entry.body.clone(),
        })
    }
}
