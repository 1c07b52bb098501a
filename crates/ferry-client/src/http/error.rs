//! The one error type of [`Http`](super::Http) (SPEC H3): opaque, with a stable code.
//!
//! Like `reqwest::Error`, [`HttpError`] is a struct with accessors rather than a public
//! enum, so new failure details can be added without breaking callers. What callers match
//! on is [`ErrorCode`], whose string forms (`TIMEOUT`, `CONNECTION_ERROR`, ...) are part of
//! the public contract: the CLI prints them and scripts compare them.

use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;
use reqwest::Url;

/// What kind of failure an [`HttpError`] is. The string forms ([`ErrorCode::as_str`]) are
/// stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `TIMEOUT`: the connect timeout, the total timeout or the idle (read) timeout passed.
    Timeout,
    /// `CONNECTION_ERROR`: no connection could be made: refused, unreachable, DNS failure.
    /// Nothing was sent.
    ConnectionError,
    /// `TLS_ERROR`: the TLS handshake failed: untrusted or expired certificate, wrong host
    /// name, a certificate that matches no pinned key, no common protocol.
    TlsError,
    /// `HTTP_STATUS`: the server answered with a 4xx or 5xx status where a success was
    /// required ([`Response::error_for_status`](super::Response::error_for_status)).
    HttpStatus,
    /// `DECODE_ERROR`: the body could not be decoded as asked (invalid JSON or UTF-8, a
    /// corrupt compressed body) or a request body could not be encoded.
    DecodeError,
    /// `CANCELLED`: the request was cancelled through its cancellation token.
    Cancelled,
    /// `NETWORK_ERROR`: the connection broke after it was made (reset, closed early).
    NetworkError,
    /// `INVALID_REQUEST`: the URL, a header or the client configuration is invalid;
    /// nothing was sent.
    InvalidRequest,
    /// `IO_ERROR`: a local file could not be read or written (upload source, download
    /// target).
    IoError,
}

impl ErrorCode {
    /// The stable string form, e.g. `"TIMEOUT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::ConnectionError => "CONNECTION_ERROR",
            ErrorCode::TlsError => "TLS_ERROR",
            ErrorCode::HttpStatus => "HTTP_STATUS",
            ErrorCode::DecodeError => "DECODE_ERROR",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::NetworkError => "NETWORK_ERROR",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::IoError => "IO_ERROR",
        }
    }

    /// A short, human suggestion of what to try next (used by the CLI).
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "the server is slow or unreachable; retry, or allow more time",
            ErrorCode::ConnectionError => {
                "check that the server is running and that the host and port are right"
            }
            ErrorCode::TlsError => {
                "check the certificate (trusted CA, host name, expiry) or the configured pins"
            }
            ErrorCode::HttpStatus => "the server refused the request; read the response body",
            ErrorCode::DecodeError => "the body is not in the expected format",
            ErrorCode::Cancelled => "the request was cancelled",
            ErrorCode::NetworkError => "the connection broke; retry (downloads can resume)",
            ErrorCode::InvalidRequest => "check the URL, headers and options",
            ErrorCode::IoError => "check the file path and permissions",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// An HTTP client failure: a stable [`code`](Self::code), a human message, and where known
/// the URL and the response status.
pub struct HttpError {
    inner: Box<Inner>,
}

struct Inner {
    code: ErrorCode,
    message: String,
    url: Option<Url>,
    status: Option<StatusCode>,
    source: Option<BoxError>,
}

impl HttpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> HttpError {
        HttpError {
            inner: Box::new(Inner {
                code,
                message: message.into(),
                url: None,
                status: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_url(mut self, url: &Url) -> HttpError {
        self.inner.url = Some(url.clone());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> HttpError {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> HttpError {
        self.inner.message = message.into();
        self
    }

    pub(crate) fn cancelled() -> HttpError {
        HttpError::new(ErrorCode::Cancelled, "request cancelled")
    }

    pub(crate) fn timeout(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::Timeout, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::InvalidRequest, message)
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> HttpError {
        let message = format!("{}: {source}", message.into());
        HttpError::new(ErrorCode::IoError, message).with_source(source)
    }

    pub(crate) fn http_status(status: StatusCode, url: &Url, detail: &str) -> HttpError {
        let mut message = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let detail = detail.trim();
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        let mut e = HttpError::new(ErrorCode::HttpStatus, message.trim_end()).with_url(url);
        e.inner.status = Some(status);
        e
    }

    /// Classify a reqwest error by walking its source chain: a rustls error anywhere means
    /// TLS, whatever layer reported it.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> HttpError {
        let tls = find_tls_error(&e);
        let code = if e.is_timeout() {
            ErrorCode::Timeout
        } else if tls.is_some() {
            ErrorCode::TlsError
        } else if e.is_connect() {
            ErrorCode::ConnectionError
        } else if connection_broke(&e) {
            // reqwest reports a body cut short as a decode error when decompression is
            // enabled; it is the connection that failed, and a download can resume.
            ErrorCode::NetworkError
        } else if e.is_decode() {
            ErrorCode::DecodeError
        } else if e.is_builder() {
            ErrorCode::InvalidRequest
        } else {
            ErrorCode::NetworkError
        };
        let message = match (code, tls) {
            (ErrorCode::TlsError, Some(tls)) => {
                format!("TLS handshake failed: {}", tls_message(tls))
            }
            (ErrorCode::Timeout, _) => "timed out".to_string(),
            _ => root_cause(&e),
        };
        let mut out = HttpError::new(code, message);
        out.inner.url = e.url().cloned();
        out.inner.status = e.status();
        out.with_source(e)
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.inner.code
    }

    /// The human message (without the code).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The URL of the request, when the failure is tied to one.
    pub fn url(&self) -> Option<&Url> {
        self.inner.url.as_ref()
    }

    /// The response status, for [`ErrorCode::HttpStatus`].
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// [`ErrorCode::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.inner.code == ErrorCode::Timeout
    }

    /// [`ErrorCode::ConnectionError`]: no connection was made.
    pub fn is_connect(&self) -> bool {
        self.inner.code == ErrorCode::ConnectionError
    }

    /// [`ErrorCode::TlsError`].
    pub fn is_tls(&self) -> bool {
        self.inner.code == ErrorCode::TlsError
    }

    /// [`ErrorCode::HttpStatus`].
    pub fn is_status(&self) -> bool {
        self.inner.code == ErrorCode::HttpStatus
    }

    /// [`ErrorCode::DecodeError`].
    pub fn is_decode(&self) -> bool {
        self.inner.code == ErrorCode::DecodeError
    }

    /// [`ErrorCode::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.inner.code == ErrorCode::Cancelled
    }

    /// [`ErrorCode::NetworkError`].
    pub fn is_network(&self) -> bool {
        self.inner.code == ErrorCode::NetworkError
    }
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HttpError");
        d.field("code", &self.inner.code)
            .field("message", &self.inner.message);
        if let Some(url) = &self.inner.url {
            d.field("url", &url.as_str());
        }
        if let Some(status) = &self.inner.status {
            d.field("status", status);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.code, self.inner.message)?;
        if let Some(url) = &self.inner.url {
            write!(f, " ({url})")?;
        }
        Ok(())
    }
}

impl StdError for HttpError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

/// Every error in the chain, including the payloads of `io::Error`s: `io::Error::source`
/// skips its own payload, and hyper-rustls reports TLS failures as an `io::Error` wrapping
/// the `rustls::Error`.
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(payload) => Some(payload as &(dyn StdError + 'static)),
            None => e.source(),
        };
        if out.len() > 32 {
            break;
        }
    }
    out
}

/// A TLS error for people: rustls shows application errors (a pin mismatch) with `Debug`.
fn tls_message(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("invalid peer certificate: {}", other.0)
        }
        rustls::Error::Other(other) => other.0.to_string(),
        e => e.to_string(),
    }
}

fn find_tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    chain(e)
        .into_iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// Whether the chain holds an I/O error that means the connection broke mid-way.
fn connection_broke(e: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind;
    chain(e).into_iter().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            )
        })
    })
}

/// The most specific message in the chain: the innermost error, which names the cause
/// ("Connection refused (os error 111)") where the outer ones name the layer.
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let all = chain(e);
    let last = all.last().map(|e| e.to_string()).unwrap_or_default();
    let outer = e.to_string();
    if last.is_empty() || last == outer {
        outer
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_stable_strings() {
        let all = [
            (ErrorCode::Timeout, "TIMEOUT"),
            (ErrorCode::ConnectionError, "CONNECTION_ERROR"),
            (ErrorCode::TlsError, "TLS_ERROR"),
            (ErrorCode::HttpStatus, "HTTP_STATUS"),
            (ErrorCode::DecodeError, "DECODE_ERROR"),
            (ErrorCode::Cancelled, "CANCELLED"),
            (ErrorCode::NetworkError, "NETWORK_ERROR"),
            (ErrorCode::InvalidRequest, "INVALID_REQUEST"),
            (ErrorCode::IoError, "IO_ERROR"),
        ];
        for (code, s) in all {
            assert_eq!(code.as_str(), s);
            assert_eq!(code.to_string(), s);
        }
    }

    #[test]
    fn tls_error_is_found_inside_io_error() {
        let tls = rustls::Error::General("pin mismatch".into());
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let found = find_tls_error(&io).map(|e| e.to_string());
        assert_eq!(found.as_deref(), Some("unexpected error: pin mismatch"));
    }

    #[test]
    fn display_has_code_message_and_url() {
        let url = Url::parse("http://127.0.0.1:1/x").expect("url");
        let e = HttpError::http_status(StatusCode::NOT_FOUND, &url, "");
        assert_eq!(
            e.to_string(),
            "HTTP_STATUS: HTTP 404 Not Found (http://127.0.0.1:1/x)"
        );
        assert!(e.is_status());
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
    }
}
