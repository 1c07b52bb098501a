//! One request: what to send (H1, H2) and the pipeline that sends it: cache lookup (H6),
//! attempts with retries (H7), cancellation and timeouts (H4).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use reqwest::Url;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Http;
use super::cache::{CacheStatus, Lookup};
use super::error::{ErrorCode, HttpError};
use super::response::{Body, BodyStream, Response, wire_stream};
use super::retry::{RetryPolicy, is_idempotent};

/// A request body.
pub(crate) enum RequestBody {
    Empty,
    /// In memory; sent again as is on a retry.
    Bytes(Bytes),
    /// Streamed from disk; reopened for each attempt.
    File(PathBuf),
    /// Can be sent once only (multipart streams): never retried.
    OneShot(Option<reqwest::multipart::Form>),
}

#[derive(Debug, Clone, Copy)]
enum CacheMode {
    Default,
    Bypass,
    Ttl(Duration),
}

/// A request being built; [`send`](Self::send) sends it. Made by [`Http::get`] and the
/// other method helpers. Invalid input (a bad header name, a body that cannot be
/// serialised) is reported by `send`, so calls can be chained.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    http: Http,
    method: Method,
    url: Result<Url, HttpError>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: RequestBody,
    timeout: Option<Option<Duration>>,
    cancel: Option<CancellationToken>,
    retry: Option<RetryPolicy>,
    idempotent: Option<bool>,
    cache: CacheMode,
    error: Option<HttpError>,
}

impl std::fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(Url::as_str))
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    pub(crate) fn new(http: Http, method: Method, url: Result<Url, HttpError>) -> RequestBuilder {
        RequestBuilder {
            http,
            method,
            url,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: RequestBody::Empty,
            timeout: None,
            cancel: None,
            retry: None,
            idempotent: None,
            cache: CacheMode::Default,
            error: None,
        }
    }

    fn fail(mut self, e: HttpError) -> RequestBuilder {
        self.error.get_or_insert(e);
        self
    }

    /// Add a query parameter (appended to any already in the URL; repeats are kept).
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> RequestBuilder {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Add a header (repeats are kept, like several `-H` to curl).
    pub fn header(self, name: impl AsRef<str>, value: impl AsRef<str>) -> RequestBuilder {
        let (name, value) = (name.as_ref(), value.as_ref());
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::invalid(format!("invalid header name {name:?}")))
            .and_then(|n| {
                HeaderValue::from_str(value)
                    .map(|v| (n, v))
                    .map_err(|_| HttpError::invalid(format!("invalid value for header {name}")))
            });
        match parsed {
            Ok((n, v)) => self.header_value(n, v),
            Err(e) => self.fail(e),
        }
    }

    /// Add a typed header.
    pub fn header_value(mut self, name: HeaderName, value: HeaderValue) -> RequestBuilder {
        self.headers.append(name, value);
        self
    }

    /// Add every header of `headers`.
    pub fn headers(mut self, headers: HeaderMap) -> RequestBuilder {
        for (name, value) in &headers {
            self.headers.append(name.clone(), value.clone());
        }
        self
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn bearer_auth(self, token: impl AsRef<str>) -> RequestBuilder {
        let value = format!("Bearer {}", token.as_ref());
        self.sensitive_header(header::AUTHORIZATION, &value)
    }

    /// `Authorization: Basic ...` for `user` and an optional password.
    pub fn basic_auth(self, user: impl AsRef<str>, password: Option<&str>) -> RequestBuilder {
        use base64::Engine;
        let raw = format!("{}:{}", user.as_ref(), password.unwrap_or(""));
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        self.sensitive_header(header::AUTHORIZATION, &value)
    }

    fn sensitive_header(self, name: HeaderName, value: &str) -> RequestBuilder {
        match HeaderValue::from_str(value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                self.header_value(name, v)
            }
            Err(_) => self.fail(HttpError::invalid(format!(
                "invalid value for header {name}"
            ))),
        }
    }

    fn content_type_default(mut self, value: &'static str) -> RequestBuilder {
        if !self.headers.contains_key(header::CONTENT_TYPE) {
            self.headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        }
        self
    }

    /// A JSON body (`Content-Type: application/json` unless set). A value that cannot be
    /// serialised fails the send with `DECODE_ERROR`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> RequestBuilder {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = RequestBody::Bytes(body.into());
                self.content_type_default("application/json")
            }
            Err(e) => self.fail(
                HttpError::new(
                    ErrorCode::DecodeError,
                    format!("cannot encode JSON body: {e}"),
                )
                .with_source(e),
            ),
        }
    }

    /// A form body (`application/x-www-form-urlencoded`).
    pub fn form<K, V>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> RequestBuilder
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k.as_ref(), v.as_ref());
        }
        self.body = RequestBody::Bytes(s.finish().into());
        self.content_type_default("application/x-www-form-urlencoded")
    }

    /// A text body (`text/plain; charset=utf-8` unless set).
    pub fn text(mut self, text: impl Into<String>) -> RequestBuilder {
        self.body = RequestBody::Bytes(Bytes::from(text.into()));
        self.content_type_default("text/plain; charset=utf-8")
    }

    /// A binary body (`application/octet-stream` unless set).
    pub fn bytes(mut self, body: impl Into<Bytes>) -> RequestBuilder {
        self.body = RequestBody::Bytes(body.into());
        self.content_type_default("application/octet-stream")
    }

    /// A body streamed from a file, with its length and a content type guessed from the
    /// extension (unless set). The file is opened at send time; a missing file fails the
    /// send with `IO_ERROR`.
    pub fn file(mut self, path: impl Into<PathBuf>) -> RequestBuilder {
        self.body = RequestBody::File(path.into());
        self
    }

    pub(crate) fn multipart_form(mut self, form: reqwest::multipart::Form) -> RequestBuilder {
        self.body = RequestBody::OneShot(Some(form));
        self
    }

    /// Total timeout for this request, from connecting to the end of the body (per
    /// attempt), instead of the client's.
    pub fn timeout(mut self, timeout: Duration) -> RequestBuilder {
        self.timeout = Some(Some(timeout));
        self
    }

    /// No total timeout for this request (the connect timeout still applies).
    pub fn no_timeout(mut self) -> RequestBuilder {
        self.timeout = Some(None);
        self
    }

    /// Cancel the request, and the reading of its body, when `token` is cancelled: the
    /// pending call returns a `CANCELLED` error and the connection is dropped.
    pub fn cancel_token(mut self, token: CancellationToken) -> RequestBuilder {
        self.cancel = Some(token);
        self
    }

    /// The retry policy for this request instead of the client's.
    pub fn retry(mut self, policy: RetryPolicy) -> RequestBuilder {
        self.retry = Some(policy);
        self
    }

    /// Declare whether repeating this request is safe, overriding the method's default
    /// (e.g. a POST carrying an `Idempotency-Key` may be retried).
    pub fn idempotent(mut self, idempotent: bool) -> RequestBuilder {
        self.idempotent = Some(idempotent);
        self
    }

    /// Neither read nor write the cache for this request.
    pub fn no_cache(mut self) -> RequestBuilder {
        self.cache = CacheMode::Bypass;
        self
    }

    /// Keep this response fresh in the cache for `ttl`, whatever the server's headers say
    /// (`no-store` still wins). Needs a cache on the client.
    pub fn cache_ttl(mut self, ttl: Duration) -> RequestBuilder {
        self.cache = CacheMode::Ttl(ttl);
        self
    }

    /// Send the request and wait for the response head (the body is read by the
    /// [`Response`] accessors). Statuses 4xx/5xx are responses, not errors.
    ///
    /// Errors: `INVALID_REQUEST`, `CONNECTION_ERROR`, `TLS_ERROR`, `TIMEOUT`,
    /// `NETWORK_ERROR`, `CANCELLED`, `IO_ERROR` (file body), `DECODE_ERROR` (JSON body).
    pub async fn send(self) -> Result<Response, HttpError> {
        match self.cancel.clone() {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => Err(HttpError::cancelled()),
                r = self.run() => r,
            },
            None => self.run().await,
        }
    }

    async fn run(mut self) -> Result<Response, HttpError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut url = std::mem::replace(&mut self.url, Err(HttpError::invalid("already sent")))?;
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        let shared = self.http.shared.clone();
        let ttl = match self.cache {
            CacheMode::Ttl(ttl) => Some(ttl),
            _ => None,
        };
        let cache = shared.cache.as_ref().filter(|_| {
            self.method == Method::GET
                && !matches!(self.cache, CacheMode::Bypass)
                && !self.headers.contains_key(header::RANGE)
        });
        let mut revalidating = false;
        if let Some(cache) = cache {
            match cache.lookup(&url, &self.headers, Instant::now()) {
                Lookup::Fresh(hit) => {
                    return Ok(Response {
                        status: hit.status,
                        version: http::Version::HTTP_11,
                        headers: hit.headers,
                        url,
                        body: Body::Buffered(hit.body),
                        cache_status: CacheStatus::Hit,
                        attempts: 0,
                        cancel: self.cancel,
                    });
                }
                Lookup::Stale(validators) => {
                    for (name, value) in validators {
                        if !self.headers.contains_key(&name) {
                            self.headers.insert(name, value);
                            revalidating = true;
                        }
                    }
                }
                Lookup::Miss => {}
            }
        }

        let policy = self.retry.clone().unwrap_or_else(|| shared.retry.clone());
        let idempotent = self
            .idempotent
            .unwrap_or_else(|| is_idempotent(&self.method));
        let reproducible = !matches!(self.body, RequestBody::OneShot(_));
        let timeout = self.timeout.unwrap_or(shared.timeout);
        let mut attempt = 1;
        let response = loop {
            let outcome = self.attempt(&shared.client, &url, timeout).await;
            let delay = match &outcome {
                _ if !reproducible => None,
                Ok(r) => policy.after_response(
                    attempt,
                    idempotent,
                    r.status(),
                    r.headers(),
                    SystemTime::now(),
                    rand::random(),
                ),
                Err(e) => policy.after_error(attempt, idempotent, e, rand::random()),
            };
            match delay {
                None => break outcome?,
                Some(delay) => {
                    let why = match &outcome {
                        Ok(r) => r.status().to_string(),
                        Err(e) => e.code().to_string(),
                    };
                    tracing::debug!(%url, attempt, ?delay, why, "retrying");
                    drop(outcome);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        };

        let status = response.status();
        let version = response.version();
        let final_url = response.url().clone();
        let safe = matches!(
            self.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        // A successful unsafe request makes what the cache holds for the URL stale.
        if let Some(all) = shared
            .cache
            .as_ref()
            .filter(|_| !safe && status.is_success())
        {
            all.invalidate(&url);
        }
        let mut out = Response {
            status,
            version,
            headers: response.headers().clone(),
            url: final_url,
            body: Body::Buffered(Bytes::new()),
            cache_status: if cache.is_some() {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            },
            attempts: attempt,
            cancel: self.cancel.clone(),
        };
        let Some(cache) = cache else {
            out.body = Body::Streaming(wire_stream(response));
            return Ok(out);
        };
        let refreshed = if status == StatusCode::NOT_MODIFIED && revalidating {
            cache.revalidated(
                &url,
                response.headers(),
                ttl,
                Instant::now(),
                SystemTime::now(),
            )
        } else {
            None
        };
        if let Some(hit) = refreshed {
            out.status = hit.status;
            out.headers = hit.headers;
            out.body = Body::Buffered(hit.body);
            out.cache_status = CacheStatus::Revalidated;
            return Ok(out);
        }
        if !cache.is_storable(status, &self.headers, &out.headers, ttl, SystemTime::now()) {
            out.body = Body::Streaming(wire_stream(response));
            return Ok(out);
        }
        let (prefix, rest) =
            read_up_to(wire_stream(response), cache.config().max_entry_bytes).await?;
        match rest {
            None => {
                cache.store(
                    &url,
                    &self.headers,
                    status,
                    &out.headers,
                    prefix.clone(),
                    ttl,
                    Instant::now(),
                    SystemTime::now(),
                );
                out.body = Body::Buffered(prefix);
            }
            Some(rest) => {
                // Too big to store: hand back what was read, then the rest.
                let head = futures_util::stream::iter([Ok(prefix)]);
                out.body = Body::Streaming(Box::pin(head.chain(rest)));
            }
        }
        Ok(out)
    }

    /// One attempt: a fresh reqwest request with a fresh body.
    async fn attempt(
        &mut self,
        client: &reqwest::Client,
        url: &Url,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, HttpError> {
        let mut req = client
            .request(self.method.clone(), url.clone())
            .headers(self.headers.clone());
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        req = match &mut self.body {
            RequestBody::Empty => req,
            RequestBody::Bytes(b) => req.body(b.clone()),
            RequestBody::File(path) => {
                let (file, len) = open_file(path).await?;
                if !self.headers.contains_key(header::CONTENT_TYPE) {
                    let mime = mime_guess::from_path(&*path).first_or_octet_stream();
                    req = req.header(header::CONTENT_TYPE, mime.as_ref());
                }
                req.header(header::CONTENT_LENGTH, len)
                    .body(reqwest::Body::wrap_stream(
                        tokio_util::io::ReaderStream::new(file),
                    ))
            }
            RequestBody::OneShot(form) => match form.take() {
                Some(form) => req.multipart(form),
                None => {
                    return Err(HttpError::invalid("a one-shot body cannot be sent twice"));
                }
            },
        };
        let connect_timeout = self.http.shared.connect_timeout;
        req.send().await.map_err(|e| {
            let connecting = e.is_connect();
            let e = HttpError::from_reqwest(e);
            if !e.is_timeout() {
                return e;
            }
            // Say which limit passed, so the user knows which one to raise.
            let message = match (connecting, connect_timeout, timeout) {
                (true, Some(t), _) => format!("could not connect within {}", secs(t)),
                (_, _, Some(t)) => format!("no complete response within {}", secs(t)),
                _ => "timed out".to_string(),
            };
            e.with_message(message)
        })
    }
}

/// `path` opened for sending, and its length. Errors: `IO_ERROR` naming the file.
pub(super) async fn open_file(path: &Path) -> Result<(tokio::fs::File, u64), HttpError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| HttpError::io(format!("cannot open {}", path.display()), e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| HttpError::io(format!("cannot read {}", path.display()), e))?
        .len();
    Ok((file, len))
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Read up to `limit` bytes. `(all, None)` when the body ended within the limit, else
/// `(what was read, the rest of the stream)`.
async fn read_up_to(
    mut stream: BodyStream,
    limit: usize,
) -> Result<(Bytes, Option<BodyStream>), HttpError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() > limit {
            return Ok((buf.freeze(), Some(stream)));
        }
    }
    Ok((buf.freeze(), None))
}
