//! WebSocket framing (RFC 6455 §5) on the server's side, sans-IO: a client's frames in
//! ([`Decoder`]), a server's frames out ([`server_frame`]).
//!
//! The hub reads its WebSocket connections with this instead of a library's buffered
//! stream: the caller owns the bytes (the hub reads into a buffer on the stack and keeps
//! only the unread rest of a frame), so an idle connection holds no read buffer at all.
//! Every rule a server must enforce on what it reads is here, each once: masking, reserved
//! bits, opcodes, control-frame limits, fragmentation order, the message size limit, UTF-8
//! of text messages and close payloads.

use crate::CloseCode;

/// Opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// The next fragment of a message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// The RSV1–3 bits (`0x70` of the first byte).
    pub rsv: u8,
    /// The opcode (see [`opcode`]).
    pub opcode: u8,
    /// The masking key, where the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload's length.
    pub len: u64,
    /// The header's own length in bytes.
    pub size: usize,
}

impl Header {
    /// The header at the start of `bytes`; `None` until all of it is there.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let (&first, rest) = bytes.split_first()?;
        let &second = rest.first()?;
        let masked = second & 0x80 != 0;
        let len_bytes = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let size = 2 + len_bytes + if masked { 4 } else { 0 };
        let h = bytes.get(..size)?;
        let len = match second & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        let mask = masked.then(|| {
            let at = 2 + len_bytes;
            [h[at], h[at + 1], h[at + 2], h[at + 3]]
        });
        Some(Header {
            fin: first & 0x80 != 0,
            rsv: first & 0x70,
            opcode: first & 0x0f,
            mask,
            len,
            size,
        })
    }

    /// A control frame (close, ping, pong and the reserved 0xB–0xF).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }
}

/// Append a frame's length field (with the mask bit `mask_bit`, `0x80` or 0).
pub fn push_length(out: &mut Vec<u8>, len: u64, mask_bit: u8) {
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Append a complete, unmasked, final frame (a server's) of `opcode` around `payload`.
pub fn push_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.push(0x80 | opcode);
    push_length(out, payload.len() as u64, 0);
    out.extend_from_slice(payload);
}

/// A complete, unmasked, final frame (a server's) of `opcode` around `payload`.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    push_server_frame(&mut frame, opcode, payload);
    frame
}

/// The payload of a close frame: the code, then the reason cut to fit the 125-byte limit
/// of a control frame (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// XOR `bytes` with `mask`, the first byte being at `offset` of the payload.
pub fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    let key = u32::from_ne_bytes([
        mask[offset & 3],
        mask[(offset + 1) & 3],
        mask[(offset + 2) & 3],
        mask[(offset + 3) & 3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ key;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let key = key.to_ne_bytes();
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4: the registered codes
/// an endpoint may send, and the ranges for libraries and applications).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A complete message or control frame read from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping and its payload.
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// A close frame: its code and reason, if it had a payload.
    Close(Option<(u16, String)>),
}

/// Why a client's bytes are not a valid WebSocket stream; the connection is to be closed
/// with [`FrameError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Against the framing rules (1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message over the size limit (1009).
    #[error("message too big: over {max} bytes")]
    TooBig {
        /// The limit.
        max: usize,
    },
    /// A text message or close reason that is not UTF-8 (1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    Utf8,
}

impl FrameError {
    /// The close code this error calls for.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::Protocol(_) => CloseCode::PROTOCOL_ERROR,
            FrameError::TooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            FrameError::Utf8 => CloseCode::INVALID_PAYLOAD,
        }
    }

    /// A short close reason.
    pub fn close_reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(_) => "protocol error",
            FrameError::TooBig { .. } => "message too big",
            FrameError::Utf8 => "invalid UTF-8 in text frame",
        }
    }
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A message, and how many input bytes it (and any fragments before it) took.
    Message(Message, usize),
    /// No message yet: `consumed` bytes were taken (whole fragments, kept by the decoder);
    /// the next frame needs at least `need` bytes from there.
    Incomplete {
        /// Input bytes taken.
        consumed: usize,
        /// Bytes the next frame needs, counted from `consumed` (a lower bound while its
        /// header is incomplete).
        need: usize,
    },
}

/// Reads a client's frames: enforces the rules, unmasks, and joins fragments into
/// messages. Holds nothing between messages but the limit (a fragmented message in
/// progress is boxed).
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    partial: Option<Box<Partial>>,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// A text message's bytes known to be UTF-8 so far (checked as fragments arrive, so
    /// an invalid one fails the connection at once, not at the message's end).
    valid: usize,
}

impl Partial {
    /// Add a fragment; an error when a text message can no longer be UTF-8 (a sequence cut
    /// at the fragment's end may still be completed by the next one).
    fn push(&mut self, fragment: &[u8]) -> Result<(), FrameError> {
        self.data.extend_from_slice(fragment);
        if self.text {
            match std::str::from_utf8(&self.data[self.valid..]) {
                Ok(_) => self.valid = self.data.len(),
                Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
                Err(_) => return Err(FrameError::Utf8),
            }
        }
        Ok(())
    }
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes (a frame's length counts
    /// against it before its payload is read).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Decode from `input`, the bytes read and not yet consumed (unmasked in place), up to
    /// the first complete message or control frame.
    pub fn decode(&mut self, input: &mut [u8]) -> Result<Decoded, FrameError> {
        let mut pos = 0;
        loop {
            let Some(header) = Header::parse(&input[pos..]) else {
                let need = (input.len() - pos + 1).max(2);
                return Ok(Decoded::Incomplete {
                    consumed: pos,
                    need,
                });
            };
            self.check(&header)?;
            // `check` bounded the length by `max_message`, which fits a usize.
            let len = header.len as usize;
            let total = header.size + len;
            if input.len() - pos < total {
                return Ok(Decoded::Incomplete {
                    consumed: pos,
                    need: total,
                });
            }
            let payload = &mut input[pos + header.size..pos + total];
            if let Some(mask) = header.mask {
                unmask(payload, mask, 0);
            }
            pos += total;
            let message = match header.opcode {
                opcode::PING => Message::Ping(payload.to_vec()),
                opcode::PONG => Message::Pong(payload.to_vec()),
                opcode::CLOSE => Message::Close(close_frame(payload)?),
                opcode::TEXT | opcode::BINARY if header.fin => {
                    data_message(header.opcode == opcode::TEXT, payload.to_vec())?
                }
                // A message's first fragment or the next one (`check` has made sure of
                // the order: a continuation has a message to continue, a new message has
                // none in progress).
                _ => {
                    let mut partial = self.partial.take().unwrap_or_else(|| {
                        Box::new(Partial {
                            text: header.opcode == opcode::TEXT,
                            data: Vec::new(),
                            valid: 0,
                        })
                    });
                    partial.push(payload)?;
                    if !header.fin {
                        self.partial = Some(partial);
                        continue;
                    }
                    data_message(partial.text, partial.data)?
                }
            };
            return Ok(Decoded::Message(message, pos));
        }
    }

    /// The rules a header must follow, checked before its payload is read.
    fn check(&self, header: &Header) -> Result<(), FrameError> {
        // The size first, as the inflater expects: it ends a message that inflates past
        // the limit with a frame whose length is impossibly long (and breaks the order of
        // fragments), which must read as too big, not as a protocol error.
        let so_far = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
        if so_far.saturating_add(header.len) > self.max_message as u64 {
            return Err(FrameError::TooBig {
                max: self.max_message,
            });
        }
        if header.rsv != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if header.mask.is_none() {
            return Err(FrameError::Protocol("unmasked frame from a client"));
        }
        match header.opcode {
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !header.fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if header.len > 125 {
                    return Err(FrameError::Protocol("control frame longer than 125 bytes"));
                }
            }
            opcode::TEXT | opcode::BINARY if self.partial.is_some() => {
                return Err(FrameError::Protocol(
                    "a new message began inside a fragmented one",
                ));
            }
            opcode::CONTINUATION if self.partial.is_none() => {
                return Err(FrameError::Protocol("continuation frame without a message"));
            }
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
            _ => return Err(FrameError::Protocol("unknown opcode")),
        }
        Ok(())
    }
}

fn data_message(text: bool, data: Vec<u8>) -> Result<Message, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Message::Text)
            .map_err(|_| FrameError::Utf8)
    } else {
        Ok(Message::Binary(data))
    }
}

fn close_frame(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("a close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::Utf8)?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client's (masked) frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        push_length(&mut frame, payload.len() as u64, 0x80);
        frame.extend_from_slice(&MASK);
        let mut masked = payload.to_vec();
        unmask(&mut masked, MASK, 0);
        frame.extend_from_slice(&masked);
        frame
    }

    fn decode_all(decoder: &mut Decoder, mut bytes: Vec<u8>) -> Result<Vec<Message>, FrameError> {
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut bytes)? {
                Decoded::Message(m, used) => {
                    out.push(m);
                    bytes.drain(..used);
                }
                Decoded::Incomplete { consumed, .. } => {
                    assert_eq!(consumed, bytes.len(), "bytes left over: {bytes:?}");
                    return Ok(out);
                }
            }
        }
    }

    #[test]
    fn headers_of_every_length_form_parse_and_need_all_their_bytes() {
        for len in [0u64, 125, 126, 65_535, 65_536, 1 << 40] {
            let mut bytes = vec![0x82];
            push_length(&mut bytes, len, 0x80);
            bytes.extend_from_slice(&MASK);
            let header = Header::parse(&bytes).expect("complete");
            assert_eq!(
                (header.len, header.size, header.mask),
                (len, bytes.len(), Some(MASK))
            );
            assert_eq!(Header::parse(&bytes[..bytes.len() - 1]), None);
        }
    }

    #[test]
    fn fragments_interleaved_with_control_frames_make_one_message() {
        let mut bytes = client_frame(opcode::TEXT, "héllo ".as_bytes());
        bytes.extend(client_frame(0x80 | opcode::PING, b"p"));
        bytes.extend(client_frame(
            0x80 | opcode::CONTINUATION,
            "wörld".as_bytes(),
        ));
        bytes.extend(client_frame(
            0x80 | opcode::CLOSE,
            &close_payload(1000, "bye"),
        ));
        let messages = decode_all(&mut Decoder::new(1024), bytes).expect("valid");
        assert_eq!(
            messages,
            vec![
                Message::Ping(b"p".to_vec()),
                Message::Text("héllo wörld".into()),
                Message::Close(Some((1000, "bye".into()))),
            ]
        );
    }

    #[test]
    fn every_rule_has_its_error_and_close_code() {
        let cases: Vec<(Vec<u8>, CloseCode)> = vec![
            // RSV1 without an extension.
            (
                client_frame(0x80 | 0x40 | opcode::TEXT, b"x"),
                CloseCode::PROTOCOL_ERROR,
            ),
            // Unmasked.
            (vec![0x81, 0x01, b'x'], CloseCode::PROTOCOL_ERROR),
            // Reserved opcodes.
            (client_frame(0x83, b""), CloseCode::PROTOCOL_ERROR),
            (client_frame(0x8b, b""), CloseCode::PROTOCOL_ERROR),
            // A fragmented ping, a long ping.
            (client_frame(opcode::PING, b""), CloseCode::PROTOCOL_ERROR),
            (client_frame(0x89, &[0; 126]), CloseCode::PROTOCOL_ERROR),
            // A continuation with nothing to continue; a new message inside one.
            (client_frame(0x80, b"x"), CloseCode::PROTOCOL_ERROR),
            (
                [client_frame(opcode::TEXT, b"a"), client_frame(0x81, b"b")].concat(),
                CloseCode::PROTOCOL_ERROR,
            ),
            // Too big, in one frame and across fragments.
            (client_frame(0x82, &[0; 201]), CloseCode::MESSAGE_TOO_BIG),
            (
                [
                    client_frame(opcode::BINARY, &[0; 101]),
                    client_frame(0x80, &[0; 101]),
                ]
                .concat(),
                CloseCode::MESSAGE_TOO_BIG,
            ),
            // Invalid UTF-8, whole and in a close reason; a one-byte close payload.
            (
                client_frame(0x81, &[0xc3, 0x28]),
                CloseCode::INVALID_PAYLOAD,
            ),
            // ... found in a first fragment, before the message ends.
            (
                client_frame(opcode::TEXT, &[b'a', 0xff]),
                CloseCode::INVALID_PAYLOAD,
            ),
            (
                client_frame(0x88, &[0x03, 0xe8, 0xff]),
                CloseCode::INVALID_PAYLOAD,
            ),
            (client_frame(0x88, &[0x03]), CloseCode::PROTOCOL_ERROR),
        ];
        for (bytes, code) in cases {
            let error = decode_all(&mut Decoder::new(200), bytes.clone())
                .expect_err(&format!("{bytes:02x?} must fail"));
            assert_eq!(error.close_code(), code, "{bytes:02x?}: {error}");
        }
    }

    #[test]
    fn a_too_long_header_fails_before_its_payload_arrives() {
        let mut bytes = vec![0x82];
        push_length(&mut bytes, 1 << 40, 0x80);
        bytes.extend_from_slice(&MASK);
        assert_eq!(
            Decoder::new(1 << 20).decode(&mut bytes),
            Err(FrameError::TooBig { max: 1 << 20 })
        );
    }

    #[test]
    fn close_codes_a_peer_may_send() {
        for code in [1000, 1001, 1003, 1007, 1011, 1013, 3000, 4999] {
            assert!(close_code_allowed(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1014, 1015, 2999, 5000, 65535] {
            assert!(!close_code_allowed(code), "{code}");
        }
    }

    proptest! {
        /// Any messages, fragmented anyhow and fed in pieces split at any byte, decode to
        /// the same messages.
        #[test]
        fn messages_split_anywhere_decode_the_same(
            messages in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 1usize..4),
                1..8,
            ),
            step in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (text, bytes, pieces) in &messages {
                let payload = if *text {
                    String::from_utf8_lossy(bytes).into_owned().into_bytes()
                } else {
                    bytes.clone()
                };
                let chunk = payload.len().div_ceil(*pieces).max(1);
                let parts: Vec<&[u8]> = if payload.is_empty() {
                    vec![&[]]
                } else {
                    payload.chunks(chunk).collect()
                };
                for (i, part) in parts.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => opcode::TEXT,
                        (0, false) => opcode::BINARY,
                        _ => opcode::CONTINUATION,
                    };
                    let fin = if i + 1 == parts.len() { 0x80 } else { 0 };
                    wire.extend(client_frame(fin | op, part));
                }
                expected.push(if *text {
                    Message::Text(String::from_utf8(payload).expect("lossy is UTF-8"))
                } else {
                    Message::Binary(payload)
                });
            }
            let mut decoder = Decoder::new(1 << 20);
            let mut buffer = Vec::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                buffer.extend_from_slice(piece);
                loop {
                    match decoder.decode(&mut buffer).expect("valid") {
                        Decoded::Message(m, used) => {
                            got.push(m);
                            buffer.drain(..used);
                        }
                        Decoded::Incomplete { consumed, .. } => {
                            buffer.drain(..consumed);
                            break;
                        }
                    }
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(got, expected);
        }
    }
}
