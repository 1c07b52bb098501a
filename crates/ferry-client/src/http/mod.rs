//! `Http`: one shared, pooled HTTP client (SPEC H1–H10).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::http::HttpError> {
//! use std::time::Duration;
//! use ferry_client::http::{CacheConfig, Http};
//!
//! let http = Http::builder()
//!     .base_url("http://127.0.0.1:8080/")
//!     .timeout(Some(Duration::from_secs(10)))
//!     .cache(CacheConfig::default())
//!     .build()?;
//! let answer: serde_json::Value = http
//!     .post("test/anything")
//!     .query("page", "2")
//!     .header("x-trace", "abc")
//!     .json(&serde_json::json!({"hello": "world"}))
//!     .send()
//!     .await?
//!     .error_for_status()
//!     .await?
//!     .json()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! What happens to one request, in order: the cache is asked (GET only; a fresh entry is
//! served without a request, a stale one with validators turns into a conditional
//! request); then attempts are made until one is final, retrying idempotent requests on
//! 408/429/5xx, broken connections and timeouts with backoff or `Retry-After`; a `304` to a
//! conditional request is served from the cache; a cacheable response is stored. The whole
//! thing races the request's cancellation token.
//!
//! Module map: `request` (the builder and that pipeline), `response`, `error` (codes),
//! `cache`, `retry`, `download` (H8), `multipart` (H10), `progress`, `tls` (H9).

mod cache;
mod download;
mod error;
mod multipart;
pub(crate) mod progress;
mod request;
mod response;
mod retry;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use reqwest::Url;

pub use cache::{CacheConfig, CacheStatus, HttpCache};
pub use download::{Download, DownloadOutcome};
pub use error::{ErrorCode, HttpError};
pub use multipart::MultipartUpload;
pub use progress::Progress;
pub use request::RequestBuilder;
pub use response::{BodyStream, Response};
pub use retry::{RetryPolicy, parse_retry_after};
pub use tls::{SpkiPin, TlsTrust, install_default_provider};
/// The token that cancels a request ([`RequestBuilder::cancel_token`]).
pub use tokio_util::sync::CancellationToken;

/// The HTTP client. Cheap to clone: clones share one connection pool (HTTP/1.1 keep-alive
/// and HTTP/2 multiplexing where the server offers it over TLS), one cache and one
/// configuration. Build one per application and pass it around.
#[derive(Clone)]
pub struct Http {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    base: Option<Url>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: RetryPolicy,
    cache: Option<HttpCache>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.shared.base.as_ref().map(Url::as_str))
            .field("timeout", &self.shared.timeout)
            .field("retry", &self.shared.retry)
            .field("cache", &self.shared.cache)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// A client with the defaults of [`HttpBuilder`].
    pub fn new() -> Result<Http, HttpError> {
        HttpBuilder::default().build()
    }

    /// Start configuring a client.
    pub fn builder() -> HttpBuilder {
        HttpBuilder::default()
    }

    /// `url` made absolute against the base URL, checked to be http or https.
    pub fn resolve(&self, url: &str) -> Result<Url, HttpError> {
        let parsed = match (Url::parse(url), &self.shared.base) {
            (Ok(u), _) => u,
            (Err(url::ParseError::RelativeUrlWithoutBase), Some(base)) => base
                .join(url)
                .map_err(|e| HttpError::invalid(format!("invalid URL {url:?}: {e}")))?,
            (Err(e), _) => return Err(HttpError::invalid(format!("invalid URL {url:?}: {e}"))),
        };
        match parsed.scheme() {
            "http" | "https" if parsed.has_host() => Ok(parsed),
            "http" | "https" => Err(HttpError::invalid(format!("URL {url:?} has no host"))),
            other => Err(HttpError::invalid(format!(
                "unsupported URL scheme {other:?} in {url:?}; use http or https"
            ))),
        }
    }

    /// A request with any method.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, self.resolve(url))
    }

    /// A GET request.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A POST request.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A PUT request.
    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A PATCH request.
    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A DELETE request.
    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// A HEAD request.
    pub fn head(&self, url: &str) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// Download `url` into the file `path`, with progress and optional resume (H8).
    pub fn download(&self, url: &str, path: impl Into<PathBuf>) -> Download {
        Download::new(self.clone(), url, path.into())
    }

    /// A multipart/form-data upload (POST by default) of files streamed from disk and text
    /// fields, with progress (H10).
    pub fn multipart(&self, url: &str) -> MultipartUpload {
        MultipartUpload::new(self.clone(), url)
    }

    /// The cache, when one was configured.
    pub fn cache(&self) -> Option<&HttpCache> {
        self.shared.cache.as_ref()
    }
}

/// Configures an [`Http`]. Every setting has a default suited to an app talking to APIs.
#[derive(Debug)]
#[must_use = "call build() to get the client"]
pub struct HttpBuilder {
    base_url: Option<String>,
    headers: HeaderMap,
    user_agent: String,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    cache: Option<CacheConfig>,
    tls: TlsTrust,
    max_redirects: usize,
    error: Option<HttpError>,
}

impl Default for HttpBuilder {
    fn default() -> Self {
        HttpBuilder {
            base_url: None,
            headers: HeaderMap::new(),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(30)),
            retry: RetryPolicy::default(),
            cache: None,
            tls: TlsTrust::default(),
            max_redirects: 10,
            error: None,
        }
    }
}

impl HttpBuilder {
    fn fail(mut self, e: HttpError) -> HttpBuilder {
        self.error.get_or_insert(e);
        self
    }

    /// Relative URLs given to requests are resolved against this one (a missing trailing
    /// `/` is added, so `http://h/api` + `users` is `http://h/api/users`; `/users` is
    /// `http://h/users`). Default: none, every URL must be absolute.
    pub fn base_url(mut self, url: impl Into<String>) -> HttpBuilder {
        self.base_url = Some(url.into());
        self
    }

    /// A header sent with every request (a request's own header of the same name wins).
    pub fn default_header(mut self, name: &str, value: &str) -> HttpBuilder {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
                self
            }
            _ => self.fail(HttpError::invalid(format!(
                "invalid default header {name:?}"
            ))),
        }
    }

    /// The `User-Agent`. Default `ferry/VERSION`.
    pub fn user_agent(mut self, agent: impl Into<String>) -> HttpBuilder {
        self.user_agent = agent.into();
        self
    }

    /// Limit on establishing a connection (TCP and TLS). Default 10 s. `None`: no limit.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> HttpBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Default total time of one attempt, from connecting to the end of the body.
    /// Default 30 s. `None`: no limit. Downloads do not use it (they have an idle timeout).
    pub fn timeout(mut self, timeout: Option<Duration>) -> HttpBuilder {
        self.timeout = timeout;
        self
    }

    /// Default retry policy. Default [`RetryPolicy::default`] (2 retries).
    pub fn retry(mut self, policy: RetryPolicy) -> HttpBuilder {
        self.retry = policy;
        self
    }

    /// Cache GET responses in memory by HTTP caching rules. Default: no cache.
    pub fn cache(mut self, config: CacheConfig) -> HttpBuilder {
        self.cache = Some(config);
        self
    }

    /// Also trust the CA certificates in this PEM data (one or more certificates).
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> HttpBuilder {
        match std::mem::take(&mut self.tls).add_root_certificate_pem(pem) {
            Ok(trust) => self.trust(trust),
            Err(e) => self.fail(e),
        }
    }

    /// Trust only the CAs added with [`add_root_certificate_pem`](Self::add_root_certificate_pem),
    /// not the system's. Default false.
    pub fn only_custom_roots(mut self, only: bool) -> HttpBuilder {
        self.tls = std::mem::take(&mut self.tls).only_custom_roots(only);
        self
    }

    /// Require every TLS server to present a certificate whose public key has this
    /// SPKI SHA-256 (after normal verification). Several pins: any one may match (keep a
    /// backup key's pin). Accepts `sha256/BASE64`, `sha256//BASE64` or bare base64.
    pub fn pin(self, pin: &str) -> HttpBuilder {
        match SpkiPin::parse(pin) {
            Ok(p) => self.pin_spki(p),
            Err(e) => self.fail(e),
        }
    }

    /// [`pin`](Self::pin) with a parsed pin.
    pub fn pin_spki(mut self, pin: SpkiPin) -> HttpBuilder {
        self.tls = std::mem::take(&mut self.tls).pin_spki(pin);
        self
    }

    /// Trust what `trust` trusts (its CAs, its pins), replacing the TLS settings given so
    /// far.
    pub fn trust(mut self, trust: TlsTrust) -> HttpBuilder {
        self.tls = trust;
        self
    }

    /// Follow at most this many redirects. Default 10; 0 returns redirects as responses.
    pub fn max_redirects(mut self, n: usize) -> HttpBuilder {
        self.max_redirects = n;
        self
    }

    /// Build the client. Errors with `INVALID_REQUEST` for an invalid base URL, header,
    /// CA certificate or pin given earlier.
    pub fn build(self) -> Result<Http, HttpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let base = match &self.base_url {
            None => None,
            Some(b) => {
                let mut url = Url::parse(b)
                    .map_err(|e| HttpError::invalid(format!("invalid base URL {b:?}: {e}")))?;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
        };
        let tls = self.tls.http_config()?;
        let redirect = if self.max_redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(self.max_redirects)
        };
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(self.headers)
            .user_agent(self.user_agent)
            .redirect(redirect)
            .gzip(true);
        if let Some(t) = self.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        let client = builder
            .build()
            .map_err(|e| HttpError::invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            shared: Arc::new(Shared {
                client,
                base,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                retry: self.retry,
                cache: self.cache.map(HttpCache::new),
            }),
        })
    }
}
