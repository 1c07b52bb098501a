//! Connections of the load generator: where they go (checked to be loopback unless the
//! user allows otherwise), how they are opened (tokio-tungstenite over a plain TCP stream,
//! small buffers, no Nagle), and each protocol adapter's handshake.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::report::Errors;
use super::wire::{self, EnginePacket, SocketPacket};

/// A load-generator WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Time one connection may take to connect, upgrade and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The protocol spoken over the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The hub protocol (`ferry.json`): token in the URL, `subscribe`, `publish`.
    Ferry,
    /// The peers' trivial broadcast protocol: any text a client sends goes to all others.
    Plain,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only: `msg` events.
    Socketio,
}

impl Protocol {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ferry => "ferry",
            Protocol::Plain => "plain",
            Protocol::Socketio => "socketio",
        }
    }

    /// The frame that publishes `data` (a JSON object) on `channel`.
    pub fn publish_frame(self, channel: &str, data: &str) -> String {
        match self {
            Protocol::Ferry => wire::ferry_publish(channel, data),
            Protocol::Plain => data.to_string(),
            Protocol::Socketio => wire::socketio_event("msg", data),
        }
    }
}

/// Where the connections go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as the user gave it (reports show it; tokens are never part of it).
    pub url: String,
    /// The resolved address every connection uses.
    pub addr: SocketAddr,
    /// The request URI, with the token (ferry) or the Engine.IO path (socketio) added.
    request_uri: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The channel subscribers join and publishers publish to (ferry).
    pub channel: String,
    /// Offer the `ferry.json` subprotocol (not to a plain echo endpoint).
    subprotocol: bool,
    /// Offer permessage-deflate (the idle scenario only: this client reads no compressed
    /// frame, and idle connections receive none).
    offer_deflate: bool,
    /// The hub encoding subscribers speak (ferry protocol).
    pub codec: ferry_proto::Codec,
}

/// Whether an address is on this machine's loopback (127.0.0.0/8, ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Target {
    /// Resolve `url` and check it: `ws://` or `http://` only, and loopback unless
    /// `allow_remote`. `token` is added as `?token=` for the ferry protocol.
    pub async fn resolve(
        url: &str,
        protocol: Protocol,
        channel: &str,
        token: Option<&str>,
        allow_remote: bool,
    ) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL `{url}`"))?;
        match uri.scheme_str() {
            Some("ws") | Some("http") => {}
            Some(other) => bail!(
                "`{other}://` is not supported by the load generator; use ws:// (loopback has no need for TLS)"
            ),
            None => bail!("`{url}` has no scheme; use ws://HOST:PORT/PATH"),
        }
        let host = uri.host().context("the URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("{host} resolves to no address");
        };
        if !allow_remote && !addrs.iter().all(is_loopback) {
            bail!(
                "refusing to load {host} ({addr}): not a loopback address. Benchmarks generate heavy traffic; \
                 pass --allow-remote only for a server you own"
            );
        }
        let mut request_uri = url.to_string();
        if protocol == Protocol::Socketio && matches!(uri.path(), "" | "/") && uri.query().is_none()
        {
            request_uri = format!("ws://{host}:{port}/socket.io/?EIO=4&transport=websocket");
        }
        if let (Protocol::Ferry, Some(token)) = (protocol, token) {
            let sep = if request_uri.contains('?') { '&' } else { '?' };
            request_uri = format!("{request_uri}{sep}token={token}");
        }
        Ok(Target {
            url: url.to_string(),
            addr,
            request_uri,
            protocol,
            channel: channel.to_string(),
            subprotocol: protocol == Protocol::Ferry,
            offer_deflate: false,
            codec: ferry_proto::Codec::Json,
        })
    }

    /// The same target speaking `codec` (`ferry.msgpack` subscribers: a MessagePack row).
    pub fn speaking(mut self, codec: ferry_proto::Codec) -> Target {
        self.codec = codec;
        self
    }

    /// The same target as a plain WebSocket endpoint (an echo URL): no subprotocol and no
    /// protocol handshake even when `--protocol ferry` is in effect.
    /// Offer permessage-deflate on every connection (see `offer_deflate`).
    pub fn offering_deflate(mut self) -> Target {
        self.offer_deflate = true;
        self
    }

    /// A target for a plain echo endpoint.
    pub fn raw(mut self) -> Target {
        self.subprotocol = false;
        if self.protocol == Protocol::Ferry {
            self.protocol = Protocol::Plain;
        }
        self
    }

    /// Open one connection and run the protocol's handshake; with `subscribe` it also
    /// joins the channel (ferry) so publications arrive.
    pub async fn open(&self, subscribe: bool) -> anyhow::Result<Ws> {
        timeout(HANDSHAKE_TIMEOUT, self.open_inner(subscribe))
            .await
            .map_err(|_| anyhow::anyhow!("handshake timed out after {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn open_inner(&self, subscribe: bool) -> anyhow::Result<Ws> {
        let stream = TcpStream::connect(self.addr).await.context("connect")?;
        self.handshake(stream, subscribe).await
    }

    /// Run the upgrade and the protocol's handshake on a connected `stream` (the soak
    /// scenario connects its own, with a tiny receive buffer for its stalled readers).
    pub async fn handshake(&self, stream: TcpStream, subscribe: bool) -> anyhow::Result<Ws> {
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let mut request = self
            .request_uri
            .as_str()
            .into_client_request()
            .context("request")?;
        if self.subprotocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                self.codec.subprotocol().parse().context("header")?,
            );
        }
        if self.offer_deflate {
            request.headers_mut().insert(
                "sec-websocket-extensions",
                ferry_proto::deflate::client_offer()
                    .parse()
                    .context("header")?,
            );
        }
        let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("upgrade")?;
        match self.protocol {
            Protocol::Plain => {}
            Protocol::Ferry => {
                let first = next_hub_frame(&mut ws, self.codec).await?;
                match wire::ferry_type(&first) {
                    Some("auth_success") => {}
                    _ => bail!("no auth_success: {}", clip(&first)),
                }
                if subscribe {
                    let subscribe = match self.codec {
                        ferry_proto::Codec::Json => {
                            Message::text(wire::ferry_subscribe(&self.channel))
                        }
                        codec => Message::binary(codec.command(
                            "subscribe",
                            Some(&ferry_proto::envelope::FrameId::string("s")),
                            serde_json::json!({ "channel": self.channel }),
                        )),
                    };
                    ws.send(subscribe).await?;
                    loop {
                        let reply = next_hub_frame(&mut ws, self.codec).await?;
                        match wire::ferry_type(&reply) {
                            Some("reply") => break,
                            Some("error") => bail!("subscribe failed: {}", clip(&reply)),
                            _ => {}
                        }
                    }
                }
            }
            Protocol::Socketio => {
                let open = next_text(&mut ws).await?;
                if !matches!(wire::engine_packet(&open), EnginePacket::Open(_)) {
                    bail!("no Engine.IO open packet: {}", clip(&open));
                }
                ws.send(Message::text(wire::SOCKETIO_CONNECT)).await?;
                loop {
                    let text = next_text(&mut ws).await?;
                    match wire::engine_packet(&text) {
                        EnginePacket::Message(SocketPacket::Connect) => break,
                        EnginePacket::Message(SocketPacket::ConnectError(e)) => {
                            bail!("connect refused: {e}")
                        }
                        EnginePacket::Ping => ws.send(Message::text(wire::ENGINE_PONG)).await?,
                        _ => {}
                    }
                }
            }
        }
        Ok(ws)
    }

    /// Open `n` connections, at most `concurrency` handshakes at a time, giving up on the
    /// rest at `deadline`. Returns the connections that made it and the errors.
    pub async fn open_many(
        &self,
        n: usize,
        subscribe: bool,
        concurrency: usize,
        deadline: Instant,
    ) -> (Vec<Ws>, Errors) {
        let mut errors = Errors::default();
        let mut opened = Vec::with_capacity(n);
        let mut pending = futures_util::stream::iter(0..n)
            .map(|_| self.open(subscribe))
            .buffer_unordered(concurrency.max(1));
        loop {
            match timeout_at(deadline, pending.next()).await {
                Ok(Some(Ok(ws))) => opened.push(ws),
                Ok(Some(Err(e))) => errors.add(format!("{e:#}")),
                Ok(None) => break,
                Err(_) => {
                    errors.add_n(
                        (n - opened.len()) as u64 - errors.count,
                        "setup deadline passed before every connection was open",
                    );
                    break;
                }
            }
        }
        (opened, errors)
    }
}

/// The next text frame (pings are answered by tungstenite underneath).
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// The next hub frame as JSON text: a text frame as it is, a `ferry.msgpack` frame in its
/// JSON form (setup only; deliveries are scanned without decoding).
async fn next_hub_frame(ws: &mut Ws, codec: ferry_proto::Codec) -> anyhow::Result<String> {
    if codec == ferry_proto::Codec::Json {
        return next_text(ws).await;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let json = codec
                    .frame_to_json(&b)
                    .map_err(|e| anyhow::anyhow!("undecodable frame: {e}"))?;
                return Ok(json.to_string());
            }
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// At most 200 characters of a frame, for error messages.
pub fn clip(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An HS256 token for user `bench`, valid for a day, signed with `secret`.
pub fn mint_token(secret: &str) -> anyhow::Result<String> {
    let exp = wire::now_micros() / 1_000_000 + 24 * 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "bench", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing a token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_non_loopback_targets_unless_allowed() {
        let e = Target::resolve("ws://192.0.2.1:80/ws", Protocol::Plain, "c", None, false)
            .await
            .expect_err("remote");
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        let t = Target::resolve("ws://192.0.2.1:80/ws", Protocol::Plain, "c", None, true)
            .await
            .expect("allowed");
        assert_eq!(t.addr.port(), 80);
        assert!(
            Target::resolve("wss://127.0.0.1/", Protocol::Plain, "c", None, false)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn adds_the_token_and_the_engine_io_path() {
        let t = Target::resolve(
            "ws://127.0.0.1:9/ws",
            Protocol::Ferry,
            "c",
            Some("T"),
            false,
        )
        .await
        .expect("ok");
        assert_eq!(t.request_uri, "ws://127.0.0.1:9/ws?token=T");
        assert_eq!(t.url, "ws://127.0.0.1:9/ws");
        let t = Target::resolve("ws://127.0.0.1:9", Protocol::Socketio, "c", None, false)
            .await
            .expect("ok");
        assert_eq!(
            t.request_uri,
            "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket"
        );
    }
}
