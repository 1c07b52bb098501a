//! The response value (SPEC H2): status, status text, headers, and a body read as JSON,
//! text, bytes or a stream.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, Version};
use reqwest::Url;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::cache::CacheStatus;
use super::error::{ErrorCode, HttpError};

/// A stream of body chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, HttpError>> + Send + 'static>>;

pub(crate) enum Body {
    /// Already in memory (from the cache, or buffered to be stored).
    Buffered(Bytes),
    /// Still on the wire.
    Streaming(BodyStream),
}

/// An HTTP response. Any status is a response, not an error; use
/// [`error_for_status`](Self::error_for_status) to turn 4xx and 5xx into
/// [`ErrorCode::HttpStatus`] errors.
pub struct Response {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) url: Url,
    pub(crate) body: Body,
    pub(crate) cache_status: CacheStatus,
    pub(crate) attempts: u32,
    pub(crate) cancel: Option<CancellationToken>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &self.url.as_str())
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("cache_status", &self.cache_status)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Turn a reqwest body into a [`BodyStream`] with classified errors.
pub(crate) fn wire_stream(response: reqwest::Response) -> BodyStream {
    Box::pin(
        response
            .bytes_stream()
            .map(|chunk| chunk.map_err(HttpError::from_reqwest)),
    )
}

impl Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason phrase for the status ("Not Found"), or "" for an unknown code. HTTP/2
    /// carries no reason phrase, so this is the standard one for the code.
    pub fn status_text(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("")
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The HTTP version the response came with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value as text, when present and valid UTF-8 (the first one if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Content-Length`, when the server sent one.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The final URL (after redirects).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// How the cache took part.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }

    /// How many requests this response took (1 without retries; 0 when served from the
    /// cache without contacting the server).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// `Ok(self)` for 1xx–3xx; an [`ErrorCode::HttpStatus`] error with the status (and the
    /// start of a text body, for the message) for 4xx and 5xx.
    pub async fn error_for_status(self) -> Result<Response, HttpError> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Ok(self);
        }
        let status = self.status;
        let url = self.url.clone();
        let detail = match self.bytes().await {
            Ok(body) => excerpt(&body),
            Err(_) => String::new(),
        };
        Err(HttpError::http_status(status, &url, &detail))
    }

    /// The whole body. Errors: `TIMEOUT`, `NETWORK_ERROR`, `CANCELLED`, `DECODE_ERROR`
    /// (a corrupt compressed body).
    pub async fn bytes(self) -> Result<Bytes, HttpError> {
        let cancel = self.cancel.clone();
        let read = async move {
            match self.body {
                Body::Buffered(b) => Ok(b),
                Body::Streaming(mut s) => {
                    let mut out = bytes::BytesMut::new();
                    while let Some(chunk) = s.next().await {
                        out.extend_from_slice(&chunk?);
                    }
                    Ok(out.freeze())
                }
            }
        };
        match cancel {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => Err(HttpError::cancelled()),
                r = read => r,
            },
            None => read.await,
        }
    }

    /// The body as UTF-8 text. Invalid UTF-8 is a `DECODE_ERROR`.
    pub async fn text(self) -> Result<String, HttpError> {
        let url = self.url.clone();
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            HttpError::new(ErrorCode::DecodeError, format!("body is not UTF-8: {e}")).with_url(&url)
        })
    }

    /// The body parsed as JSON into `T`. A body that is not valid JSON for `T` is a
    /// `DECODE_ERROR`.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        let url = self.url.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            HttpError::new(
                ErrorCode::DecodeError,
                format!("body is not the expected JSON: {e}"),
            )
            .with_url(&url)
            .with_source(e)
        })
    }

    /// The body as a stream of chunks, as they arrive. A cancelled token ends the stream
    /// with a `CANCELLED` error.
    pub fn stream(self) -> BodyStream {
        let inner: BodyStream = match self.body {
            Body::Buffered(b) => {
                Box::pin(futures_util::stream::iter((!b.is_empty()).then_some(Ok(b))))
            }
            Body::Streaming(s) => s,
        };
        match self.cancel {
            None => inner,
            Some(token) => Box::pin(futures_util::stream::unfold(
                (inner, token, false),
                |(mut inner, token, done)| async move {
                    if done {
                        return None;
                    }
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => {
                            Some((Err(HttpError::cancelled()), (inner, token, true)))
                        }
                        item = inner.next() => item.map(|i| (i, (inner, token, false))),
                    }
                },
            )),
        }
    }
}

/// The start of a body for an error message: text only, one line, at most 200 chars.
fn excerpt(body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        let cut: String = line.chars().take(200).collect();
        format!("{cut}…")
    } else {
        line
    }
}
