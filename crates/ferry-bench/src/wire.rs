//! What the load generator puts on the wire and reads back, without I/O: the benchmark
//! payload (a sequence number and a send timestamp, padded to a size), the frames of each
//! protocol adapter, and the Engine.IO / Socket.IO framing.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch. Publisher and subscribers run in one process on one
/// machine, so a wall-clock stamp taken at send and at receipt gives the latency.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// The benchmark payload: `{"seq":N,"ts":MICROS,"pad":"xx…"}`, padded so the JSON is
/// `size` bytes long where it can be (it is never shorter than the unpadded object).
pub fn payload(seq: u64, ts: u64, size: usize) -> String {
    let mut s = String::with_capacity(size.max(48));
    let _ = write!(s, r#"{{"seq":{seq},"ts":{ts},"pad":""#);
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The number after `"key":` in `text`, if any.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// The `(seq, ts)` of a benchmark payload found anywhere in `text` (a hub `message` push,
/// a plain broadcast, a Socket.IO event or an SSE `data:` line all embed it verbatim).
pub fn parse_delivery(text: &str) -> Option<(u64, u64)> {
    Some((
        number_after(text, r#""seq":"#)?,
        number_after(text, r#""ts":"#)?,
    ))
}

/// The `(seq, ts)` of a benchmark payload inside a `ferry.msgpack` frame: the JSON
/// payload arrives as a MessagePack map, whose `seq` and `ts` keys are fixstrs followed by
/// unsigned integers. A byte scan, as the JSON one, so the load generator does not decode
/// every delivery.
pub fn parse_msgpack_delivery(frame: &[u8]) -> Option<(u64, u64)> {
    fn uint_after(frame: &[u8], key: &[u8]) -> Option<u64> {
        let at = memchr::memmem::find(frame, key)? + key.len();
        let rest = frame.get(at..)?;
        let be = |n: usize| -> Option<u64> {
            let bytes = rest.get(1..1 + n)?;
            Some(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
        };
        match *rest.first()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => be(1),
            0xcd => be(2),
            0xce => be(4),
            0xcf => be(8),
            _ => None,
        }
    }
    Some((
        uint_after(frame, b"\xa3seq")?,
        uint_after(frame, b"\xa2ts")?,
    ))
}

/// A hub `publish` command whose `id` is the send time in microseconds, so that the
/// `reply` (sent once the publication is stored) carries it back.
pub fn ferry_publish_timed(channel: &str, data: &str, ts: u64) -> String {
    hub_command(
        "publish",
        Some(&ts.to_string()),
        serde_json::json!({"channel": channel, "data": raw(data)}),
    )
}

/// The send time of a `reply` to [`ferry_publish_timed`]; `None` for anything else (an
/// `error` reply included).
pub fn parse_publish_reply(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"type":"reply""#) {
        return None;
    }
    number_after(text, r#""id":""#)
}

/// A hub `publish` command without an `id`: the hub answers a successful publish without
/// an id with nothing, so a publisher reads only errors.
pub fn ferry_publish(channel: &str, data: &str) -> String {
    hub_command(
        "publish",
        None,
        serde_json::json!({"channel": channel, "data": raw(data), "skip_self": true}),
    )
}

/// A hub `subscribe` command with id `s`.
pub fn ferry_subscribe(channel: &str) -> String {
    hub_command(
        "subscribe",
        Some("s"),
        serde_json::json!({ "channel": channel }),
    )
}

/// A `ferry.json` command frame, encoded by the protocol's one encoder.
fn hub_command(kind: &str, id: Option<&str>, payload: serde_json::Value) -> String {
    let id = id.map(ferry_proto::envelope::FrameId::string);
    let frame = ferry_proto::Codec::Json.command(kind, id.as_ref(), payload);
    String::from_utf8(frame).unwrap_or_default()
}

/// A benchmark payload (JSON text made by [`payload`]) as a JSON value.
fn raw(data: &str) -> serde_json::Value {
    serde_json::from_str(data).unwrap_or(serde_json::Value::Null)
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The `type` of a hub frame, read without parsing the whole frame.
pub fn ferry_type(text: &str) -> Option<&str> {
    let start = text.find(r#""type":""#)? + 8;
    let end = text[start..].find('"')?;
    Some(&text[start..start + end])
}

/// One Engine.IO v4 packet, as the WebSocket transport carries it (one per frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// `0{...}`: the handshake, with its JSON (sid, pingInterval, ...).
    Open(&'a str),
    /// `1`: the server closes the session.
    Close,
    /// `2`: a server ping; answer with [`ENGINE_PONG`].
    Ping,
    /// `3`: a pong.
    Pong,
    /// `4...`: a message carrying a Socket.IO packet.
    Message(SocketPacket<'a>),
    /// Anything else (upgrade, noop, or garbage).
    Other,
}

/// A Socket.IO v5 packet inside an Engine.IO message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketPacket<'a> {
    /// `0{...}` connect acknowledgement for the main namespace.
    Connect,
    /// `1`: disconnect.
    Disconnect,
    /// `2["name",...]`: an event with its name and the JSON of its first argument
    /// (without the closing `]`), or `""` when it has none.
    Event {
        /// The event name.
        name: &'a str,
        /// The first argument's JSON text.
        data: &'a str,
    },
    /// `4{...}`: connect error, with its JSON.
    ConnectError(&'a str),
    /// Another packet type (acks, binary events, namespaces we do not use).
    Other,
}

/// The Engine.IO pong a client answers a ping with.
pub const ENGINE_PONG: &str = "3";
/// Engine.IO message + Socket.IO connect to the main namespace.
pub const SOCKETIO_CONNECT: &str = "40";

/// Parse one Engine.IO packet.
pub fn engine_packet(text: &str) -> EnginePacket<'_> {
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => EnginePacket::Open(&text[1..]),
        Some('1') => EnginePacket::Close,
        Some('2') => EnginePacket::Ping,
        Some('3') => EnginePacket::Pong,
        Some('4') => EnginePacket::Message(socket_packet(&text[1..])),
        _ => EnginePacket::Other,
    }
}

fn socket_packet(text: &str) -> SocketPacket<'_> {
    match text.as_bytes().first() {
        Some(b'0') => SocketPacket::Connect,
        Some(b'1') => SocketPacket::Disconnect,
        Some(b'4') => SocketPacket::ConnectError(&text[1..]),
        Some(b'2') => {
            // 2["name",data] (main namespace, no ack id).
            let Some(body) = text[1..].strip_prefix("[\"") else {
                return SocketPacket::Other;
            };
            let Some(name_end) = body.find('"') else {
                return SocketPacket::Other;
            };
            let name = &body[..name_end];
            let rest = &body[name_end + 1..];
            let data = rest
                .strip_prefix(',')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or("");
            SocketPacket::Event { name, data }
        }
        _ => SocketPacket::Other,
    }
}

/// A Socket.IO event frame: `42["name",data]`.
pub fn socketio_event(name: &str, data: &str) -> String {
    format!("42[{},{data}]", json_string(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_parses_back() {
        let p = payload(42, 1_700_000_000_000_000, 128);
        assert_eq!(p.len(), 128);
        assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
        assert_eq!(parse_delivery(&p), Some((42, 1_700_000_000_000_000)));
        // Smaller than the unpadded object: no padding, still valid.
        let p = payload(1, 2, 4);
        assert_eq!(p, r#"{"seq":1,"ts":2,"pad":""}"#);
    }

    #[test]
    fn deliveries_are_found_inside_a_msgpack_frame() {
        let data: serde_json::Value =
            serde_json::from_str(&payload(7, 1_700_000_000_000_000, 64)).expect("json");
        let frame = ferry_proto::Codec::MsgPack.push(
            "message",
            serde_json::json!({"channel": "c", "offset": 3, "data": data}),
        );
        assert_eq!(
            parse_msgpack_delivery(&frame),
            Some((7, 1_700_000_000_000_000))
        );
        assert_eq!(parse_msgpack_delivery(b"\x80"), None);
    }

    #[test]
    fn deliveries_are_found_inside_every_protocol_frame() {
        let data = payload(7, 99, 64);
        let hub = format!(
            r#"{{"type":"message","payload":{{"channel":"chat:bench","offset":3,"epoch":"e","data":{data},"info":{{"user":"u","client":"c"}},"time":1}}}}"#
        );
        assert_eq!(parse_delivery(&hub), Some((7, 99)));
        assert_eq!(ferry_type(&hub), Some("message"));
        assert_eq!(parse_delivery(&socketio_event("msg", &data)), Some((7, 99)));
        assert_eq!(parse_delivery(r#"{"type":"reply","id":"s"}"#), None);
    }

    #[test]
    fn hub_commands_are_valid_json() {
        for frame in [
            ferry_publish("chat:\"x\"", &payload(1, 2, 40)),
            ferry_subscribe("chat:bench"),
        ] {
            let v: serde_json::Value = serde_json::from_str(&frame).expect("json");
            assert!(v["payload"]["channel"].is_string());
        }
    }

    #[test]
    fn engine_io_and_socket_io_frames_parse() {
        assert_eq!(
            engine_packet(r#"0{"sid":"a","pingInterval":25000}"#),
            EnginePacket::Open(r#"{"sid":"a","pingInterval":25000}"#)
        );
        assert_eq!(engine_packet("2"), EnginePacket::Ping);
        assert_eq!(engine_packet("3"), EnginePacket::Pong);
        assert_eq!(engine_packet("1"), EnginePacket::Close);
        assert_eq!(
            engine_packet(r#"40{"sid":"x"}"#),
            EnginePacket::Message(SocketPacket::Connect)
        );
        assert_eq!(
            engine_packet(r#"44{"message":"nope"}"#),
            EnginePacket::Message(SocketPacket::ConnectError(r#"{"message":"nope"}"#))
        );
        let frame = socketio_event("msg", r#"{"seq":1,"ts":2}"#);
        assert_eq!(frame, r#"42["msg",{"seq":1,"ts":2}]"#);
        assert_eq!(
            engine_packet(&frame),
            EnginePacket::Message(SocketPacket::Event {
                name: "msg",
                data: r#"{"seq":1,"ts":2}"#
            })
        );
        assert_eq!(
            engine_packet(r#"42["tick"]"#),
            EnginePacket::Message(SocketPacket::Event {
                name: "tick",
                data: ""
            })
        );
        assert_eq!(
            engine_packet("42garbage"),
            EnginePacket::Message(SocketPacket::Other)
        );
        assert_eq!(engine_packet(""), EnginePacket::Other);
    }
}
