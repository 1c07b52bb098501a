//! The one place that knows the WebSocket library (tokio-tungstenite) and how a
//! connection is opened: TCP (with a deadline), TLS for `wss://` (rustls, ring provider),
//! then the HTTP upgrade. The driver only sees [`Socket`], [`Frame`] and the helpers here.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TungCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Error as TungError};

use super::error::{Error, ErrorKind};
use super::message::{Message, MessageKind};

pub(crate) use tokio_tungstenite::tungstenite::Message as Frame;

/// Any byte stream a WebSocket can run over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open client WebSocket.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// Everything needed to open one connection (fixed for the life of a `WebSocket`).
pub(crate) struct Endpoint {
    pub url: Url,
    pub headers: http::HeaderMap,
    pub protocols: Vec<String>,
    pub connect_timeout: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    pub max_message_size: Option<usize>,
    pub max_frame_size: Option<usize>,
    /// Offer permessage-deflate.
    pub compression: bool,
}

/// What a successful connect returns besides the socket.
pub(crate) struct Opened {
    pub socket: Socket,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

/// Check a URL for use as a WebSocket endpoint.
pub(crate) fn parse_url(url: &str) -> Result<Url, Error> {
    let parsed = Url::parse(url)
        .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("`{url}` is not a URL: {e}")))?;
    match parsed.scheme() {
        "ws" | "wss" => {}
        other => {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                format!("`{url}` has scheme `{other}`; use ws:// or wss://"),
            ));
        }
    }
    if parsed.host().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("`{url}` has no host"),
        ));
    }
    Ok(parsed)
}

/// The platform's roots with the ring provider, built once per process.
pub(crate) fn default_tls() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_platform_verifier()
                .map(|b| Arc::new(b.with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| {
            Error::new(
                ErrorKind::Tls,
                format!("loading the system's root certificates: {e}"),
            )
        })
}

/// Open a connection to `endpoint`, adding `?token=` when a token is given.
pub(crate) async fn connect(endpoint: &Endpoint, token: Option<&str>) -> Result<Opened, Error> {
    let mut url = endpoint.url.clone();
    if let Some(token) = token {
        url.query_pairs_mut().append_pair("token", token);
    }
    let shown = redact(&url);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("{shown}: {e}")))?;
    for (name, value) in &endpoint.headers {
        request.headers_mut().append(name, value.clone());
    }
    if endpoint.compression {
        let offer = HeaderValue::from_str(&ferry_proto::deflate::client_offer())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("extension offer: {e}")))?;
        request
            .headers_mut()
            .insert("sec-websocket-extensions", offer);
    }
    if !endpoint.protocols.is_empty() {
        let value = HeaderValue::from_str(&endpoint.protocols.join(", "))
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, format!("subprotocol list: {e}")))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    let port = url.port_or_known_default().unwrap_or(80);
    // `host_str` keeps the brackets of an IPv6 literal; sockets and TLS want it bare.
    let host = match url.host_str() {
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                format!("{shown} has no host"),
            ));
        }
    };
    let deadline = endpoint.connect_timeout;
    let attempt = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Connection,
                    format!("connecting to {host}:{port}: {e}"),
                )
            })?;
        // Small messages (pings, commands) should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.scheme() == "wss" {
            let config = match &endpoint.tls {
                Some(c) => c.clone(),
                None => default_tls()?,
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidUrl,
                    format!("TLS server name `{host}`: {e}"),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Tls,
                        format!("TLS handshake with {host}:{port}: {e}"),
                    )
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        // With compression offered, the stream reads the server's answer as it passes and
        // inflates what the server compresses (tungstenite itself knows no extensions).
        let io: Box<dyn Io> = if endpoint.compression {
            let max = endpoint.max_message_size.unwrap_or(usize::MAX >> 1);
            Box::new(ferry_proto::deflate::io::Inflating::client(io, max))
        } else {
            io
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(endpoint.read_buffer_size)
            .write_buffer_size(endpoint.write_buffer_size)
            .max_message_size(endpoint.max_message_size)
            .max_frame_size(endpoint.max_frame_size);
        let (socket, response) =
            tokio_tungstenite::client_async_with_config(request, io, Some(config))
                .await
                .map_err(|e| handshake_error(&shown, e))?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(chosen) = &protocol
            && !endpoint.protocols.iter().any(|p| p == chosen)
        {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("the server chose subprotocol `{chosen}`, which was not offered"),
            ));
        }
        Ok(Opened { socket, protocol })
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("connecting to {shown} took longer than {deadline:?}"),
        )),
    }
}

/// The URL without the token, for messages.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if url.query_pairs().any(|(k, _)| k == "token") {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "token")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        shown.set_query(None);
        let mut pairs = shown.query_pairs_mut();
        for (k, v) in kept {
            pairs.append_pair(&k, &v);
        }
        pairs.append_pair("token", "REDACTED");
    }
    shown.to_string()
}

fn handshake_error(url: &str, error: TungError) -> Error {
    match error {
        TungError::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            let mut message = format!("{url} answered the upgrade with HTTP {status}");
            if !body.trim().is_empty() {
                message.push_str(": ");
                message.push_str(body.trim());
            }
            Error::http_status(status.as_u16(), message)
        }
        TungError::Io(e) => Error::new(ErrorKind::Connection, format!("{url}: {e}")),
        TungError::Url(e) => Error::new(ErrorKind::InvalidUrl, format!("{url}: {e}")),
        TungError::Tls(e) => Error::new(ErrorKind::Tls, format!("{url}: {e}")),
        TungError::ConnectionClosed | TungError::AlreadyClosed => Error::new(
            ErrorKind::Connection,
            format!("{url}: the server closed the connection during the handshake"),
        ),
        other => Error::new(
            ErrorKind::Protocol,
            format!("{url}: WebSocket handshake failed: {other}"),
        ),
    }
}

/// Describe a read or write error on an open connection.
pub(crate) fn io_error(error: &TungError) -> Error {
    match error {
        TungError::Io(e) => Error::new(ErrorKind::Connection, format!("connection lost: {e}")),
        TungError::Capacity(e) => Error::new(ErrorKind::Protocol, format!("message too big: {e}")),
        TungError::Utf8(e) => Error::new(
            ErrorKind::Protocol,
            format!("invalid UTF-8 in a text message: {e}"),
        ),
        TungError::Protocol(e) => Error::new(ErrorKind::Protocol, format!("protocol error: {e}")),
        TungError::ConnectionClosed | TungError::AlreadyClosed => {
            Error::new(ErrorKind::Connection, "connection closed")
        }
        other => Error::new(ErrorKind::Connection, format!("connection lost: {other}")),
    }
}

/// The close code and reason a read error deserves (RFC 6455 §7.4.1); `None` when the
/// transport itself failed and there is nobody left to tell.
pub(crate) fn close_for_error(error: &TungError) -> Option<(u16, &'static str)> {
    match error {
        TungError::Capacity(_) => Some((1009, "message too big")),
        TungError::Utf8(_) => Some((1007, "invalid UTF-8 in a text message")),
        TungError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

/// The wire frame for an application message.
pub(crate) fn to_frame(message: &Message) -> Result<Frame, Error> {
    match message.kind() {
        MessageKind::Binary => Ok(Frame::Binary(message.data().clone())),
        MessageKind::Text => tungstenite::Utf8Bytes::try_from(message.data().clone())
            .map(Frame::Text)
            .map_err(|_| Error::new(ErrorKind::Decode, "a text message must be valid UTF-8")),
    }
}

/// The application message for a data frame; `None` for control frames.
pub(crate) fn from_frame(frame: Frame) -> Option<Message> {
    match frame {
        Frame::Text(text) => Some(Message::from_utf8_bytes(Bytes::from(text))),
        Frame::Binary(data) => Some(Message::binary(data)),
        _ => None,
    }
}

/// A ping frame.
pub(crate) fn ping() -> Frame {
    Frame::Ping(Bytes::new())
}

/// A close frame with `code` and `reason` (cut to the 123 bytes a close frame allows).
pub(crate) fn close_frame(code: u16, reason: &str) -> Frame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Frame::Close(Some(CloseFrame {
        code: TungCloseCode::from(code),
        reason: reason[..end].into(),
    }))
}

/// The code and reason of a received close frame: `(1005, "")` for one without a code.
pub(crate) fn close_info(frame: &Frame) -> Option<(u16, String)> {
    match frame {
        Frame::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
        Frame::Close(None) => Some((1005, String::new())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_websocket_urls() {
        assert!(parse_url("ws://127.0.0.1:1/x").is_ok());
        assert!(parse_url("wss://example.invalid/").is_ok());
        let e = parse_url("http://127.0.0.1/").expect_err("scheme");
        assert_eq!(e.code(), "INVALID_URL");
        assert!(e.message().contains("ws://"), "{e}");
        assert_eq!(
            parse_url("not a url").expect_err("garbage").code(),
            "INVALID_URL"
        );
    }

    #[test]
    fn tokens_are_redacted_from_messages() {
        let url = Url::parse("ws://h/ws?a=1&token=secret").expect("url");
        let shown = redact(&url);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("a=1"), "{shown}");
    }
}
