//! permessage-deflate (RFC 7692), sans-IO: the extension negotiation, a read-side
//! transcoder that turns a peer's compressed messages into plain frames for a frame
//! reader that knows no extensions (the hub's [`crate::ws_frame::Decoder`], tungstenite in
//! the client: both reject RSV1), and the encoder of one compressed frame.
//!
//! The transcoder sits between the socket and the reader (called "the library" below).
//! Frames without RSV1 (every frame when nothing was negotiated) pass through byte for byte; a compressed message is
//! inflated as it arrives and handed on as a fragmented plain message (the first fragment
//! with the message's opcode, then continuations, the last one empty with FIN), so
//! control frames may still interleave and the library still checks UTF-8 and sizes. Its
//! output is bounded: at most [`OUTPUT_STEP`] bytes are inflated before the caller drains
//! them, so a small "zip bomb" never becomes a large buffer, and a message that inflates
//! past the library's limit reaches it as a frame header that the limit refuses (close
//! 1009). Invalid compressed data reaches it as a frame with RSV2 set: a protocol error
//! (close 1002).

use crate::ws_frame::{Header, MAX_HEADER, push_length, unmask};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

#[cfg(feature = "tokio")]
pub mod io;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The most output one [`Inflater::feed`] step produces before it waits to be drained.
pub const OUTPUT_STEP: usize = 16 * 1024;

/// The 4 bytes a sender strips from the end of each compressed message (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this LZ77 window (8–15).
    pub server_max_window_bits: u8,
    /// The client compresses with at most this LZ77 window (8–15).
    pub client_max_window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of a server's response (or of what a client
    /// reads from it).
    pub fn response_header(&self) -> String {
        let mut value = EXTENSION.to_string();
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            value.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if self.client_max_window_bits < 15 {
            value.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        value
    }
}

/// How a server answers offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Reset the server's compressor after each message (and so let one compressed frame
    /// serve every subscriber), even when the client did not ask.
    pub server_no_context_takeover: bool,
    /// Ask the client to reset its compressor after each message, so the server keeps no
    /// inflate state between messages.
    pub client_no_context_takeover: bool,
}

/// The parameters of one offer (or response) as written.
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value (allowed in an offer only).
    client_max_window_bits: Option<Option<u8>>,
}

/// One offer's parameters; `None` when it cannot be accepted.
fn parse_offer(params: &[&str]) -> Option<Params> {
    let (mut snct, mut cnct) = (false, false);
    let (mut smwb, mut cmwb): (Option<u8>, Option<Option<u8>>) = (None, None);
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        let bits = |v: &str| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !snct => snct = true,
            ("client_no_context_takeover", None) if !cnct => cnct = true,
            ("server_max_window_bits", Some(v)) if smwb.is_none() => smwb = Some(bits(v)?),
            ("client_max_window_bits", None) if cmwb.is_none() => cmwb = Some(None),
            ("client_max_window_bits", Some(v)) if cmwb.is_none() => cmwb = Some(Some(bits(v)?)),
            // Unknown, repeated or malformed: this offer is declined (RFC 7692 §7.1).
            _ => return None,
        }
    }
    Some(Params {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: smwb,
        client_max_window_bits: cmwb,
    })
}

/// The server's choice among a client's `Sec-WebSocket-Extensions` offers: the first
/// permessage-deflate offer it can accept, or `None` (no compression). `headers` are the
/// header values as received.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    policy: ServerPolicy,
) -> Option<Agreed> {
    for header in headers {
        for offer in header.split(',') {
            let mut parts = offer.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
            {
                continue;
            }
            let params: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
            let Some(p) = parse_offer(&params) else {
                continue;
            };
            return Some(Agreed {
                server_no_context_takeover: p.server_no_context_takeover
                    || policy.server_no_context_takeover,
                client_no_context_takeover: p.client_no_context_takeover
                    || policy.client_no_context_takeover,
                server_max_window_bits: p.server_max_window_bits.unwrap_or(15),
                // A client that announced client_max_window_bits may be told a smaller one;
                // this server inflates with any window, so it asks for nothing smaller.
                client_max_window_bits: match p.client_max_window_bits {
                    Some(Some(bits)) => bits,
                    _ => 15,
                },
            });
        }
    }
    None
}

/// The offer a client sends: permessage-deflate with `client_max_window_bits` (so the
/// server may answer with any window) and nothing else to ask.
pub fn client_offer() -> String {
    format!("{EXTENSION}; client_max_window_bits")
}

/// What a client makes of the server's `Sec-WebSocket-Extensions` answer to
/// [`client_offer`]: `Ok(None)` when the server declined, `Err` when it answered with
/// something the client did not offer (the client must fail the connection).
pub fn accept_response<'a>(
    headers: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Agreed>, String> {
    let mut agreed = None;
    for header in headers {
        for extension in header.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = extension.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            if !name.eq_ignore_ascii_case(EXTENSION) {
                return Err(format!(
                    "the server accepted an extension never offered: {name}"
                ));
            }
            if agreed.is_some() {
                return Err("the server accepted permessage-deflate twice".into());
            }
            let params: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
            let p = parse_offer(&params)
                .ok_or_else(|| format!("invalid permessage-deflate parameters: {extension}"))?;
            agreed = Some(Agreed {
                server_no_context_takeover: p.server_no_context_takeover,
                client_no_context_takeover: p.client_no_context_takeover,
                server_max_window_bits: p.server_max_window_bits.unwrap_or(15),
                client_max_window_bits: match p.client_max_window_bits {
                    Some(Some(bits)) => bits,
                    Some(None) => {
                        return Err("client_max_window_bits needs a value in a response".into());
                    }
                    None => 15,
                },
            });
        }
    }
    Ok(agreed)
}

/// Which side of the connection the transcoder reads for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A server reading a client's (masked) frames; it hands on masked frames.
    Server,
    /// A client reading a server's (unmasked) frames.
    Client,
}

#[derive(Debug)]
enum Part {
    /// Collecting a frame header.
    Header,
    /// Copying `left` payload bytes as they are.
    Pass { left: u64 },
    /// Inflating `left` payload bytes of a compressed message.
    Inflate { left: u64, fin: bool },
    /// The stream broke the limits or the format: everything else is dropped.
    Poisoned,
}

/// The read-side transcoder (see the module documentation).
#[derive(Debug)]
pub struct Inflater {
    reader: Reader,
    /// Reset the inflater after each message (the peer does not take over its context).
    no_context_takeover: bool,
    /// The library's message limit: a message inflating past it is refused.
    max_message: usize,
    part: Part,
    header: Vec<u8>,
    /// The current frame's mask and where in it the payload is.
    mask: Option<[u8; 4]>,
    mask_at: usize,
    /// Inside a fragmented message: whether it is compressed.
    message: Option<bool>,
    /// The opcode of the compressed message, until its first plain fragment is out.
    opcode: Option<u8>,
    produced: usize,
    inflate: Option<Box<Decompress>>,
    /// Unmasked payload bytes taken but not yet inflated (output was full).
    stash: Vec<u8>,
    /// The stripped tail of the current message was given to the inflater.
    tail_added: bool,
}

impl Inflater {
    /// A transcoder for `reader`, for messages of at most `max_message` bytes.
    pub fn new(reader: Reader, agreed: &Agreed, max_message: usize) -> Inflater {
        let no_context_takeover = match reader {
            Reader::Server => agreed.client_no_context_takeover,
            Reader::Client => agreed.server_no_context_takeover,
        };
        Inflater {
            reader,
            no_context_takeover,
            max_message,
            part: Part::Header,
            header: Vec::with_capacity(MAX_HEADER),
            mask: None,
            mask_at: 0,
            message: None,
            opcode: None,
            produced: 0,
            inflate: None,
            stash: Vec::new(),
            tail_added: false,
        }
    }

    /// Whether output is waiting on input already taken (call [`Inflater::feed`] with no
    /// input until it returns having produced nothing).
    pub fn has_pending(&self) -> bool {
        !self.stash.is_empty()
    }

    /// Take `input` (bytes read from the peer) and append to `out` what the WebSocket
    /// library should read instead. Returns how many input bytes were taken: fewer than
    /// given when `out` reached [`OUTPUT_STEP`]; feed the rest after `out` is drained.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut taken = 0;
        // Output owed from earlier input first, then the end of a frame it held up.
        if !self.stash.is_empty() && !self.drain_stash(out) {
            return 0;
        }
        if let Part::Inflate { left: 0, fin } = self.part {
            self.end_frame(fin, out);
            if self.has_pending() {
                return 0;
            }
        }
        while taken < input.len() && out.len() < OUTPUT_STEP {
            match self.part {
                Part::Poisoned => return input.len(),
                Part::Header => {
                    self.header.push(input[taken]);
                    taken += 1;
                    self.try_header(out);
                }
                Part::Pass { left } => {
                    let n = (left.min((input.len() - taken) as u64)) as usize;
                    out.extend_from_slice(&input[taken..taken + n]);
                    taken += n;
                    self.part = if left == n as u64 {
                        Part::Header
                    } else {
                        Part::Pass {
                            left: left - n as u64,
                        }
                    };
                }
                Part::Inflate { left, fin } => {
                    let n = (left.min((input.len() - taken) as u64)) as usize;
                    let mut chunk = input[taken..taken + n].to_vec();
                    self.unmask(&mut chunk);
                    taken += n;
                    let left = left - n as u64;
                    self.part = Part::Inflate { left, fin };
                    self.stash.extend_from_slice(&chunk);
                    if !self.drain_stash(out) {
                        break;
                    }
                    if left == 0 {
                        self.end_frame(fin, out);
                    }
                }
            }
        }
        taken
    }

    fn unmask(&mut self, bytes: &mut [u8]) {
        if let Some(mask) = self.mask {
            unmask(bytes, mask, self.mask_at);
            self.mask_at += bytes.len();
        }
    }

    /// Parse the header once complete; start its payload.
    fn try_header(&mut self, out: &mut Vec<u8>) {
        let Some(header) = Header::parse(&self.header) else {
            return;
        };
        let Header {
            fin, opcode, len, ..
        } = header;
        let masked = header.mask.is_some();
        let rsv1 = header.rsv & 0x40 != 0;
        let control = opcode & 0x08 != 0;
        // The sender's role decides masking; a frame masked the wrong way goes to the
        // library as it is, which refuses it.
        let masked_right = masked == (self.reader == Reader::Server);
        let compressed = !control
            && masked_right
            && match (opcode, self.message) {
                // A new data message: RSV1 says whether it is compressed.
                (1 | 2, None) => rsv1,
                // A continuation of a compressed message (RSV1 must be clear on it).
                (0, Some(true)) => !rsv1,
                _ => false,
            };
        if !compressed {
            // As it is; the library judges it (RSV1 where it does not belong included).
            if !control {
                self.message = match (opcode, fin, rsv1) {
                    (1 | 2, false, false) => Some(false),
                    (0, true, _) => None,
                    (_, _, _) => self.message,
                };
            }
            out.extend_from_slice(&self.header);
            self.header.clear();
            self.part = if len == 0 {
                Part::Header
            } else {
                Part::Pass { left: len }
            };
            return;
        }
        self.mask = header.mask;
        self.mask_at = 0;
        if opcode != 0 {
            self.message = Some(true);
            self.opcode = Some(opcode);
            self.produced = 0;
        }
        self.header.clear();
        self.part = Part::Inflate { left: len, fin };
        if len == 0 {
            self.end_frame(fin, out);
        }
    }

    /// Inflate the stash into `out` (at most up to OUTPUT_STEP); `false` when output is
    /// full and some stash is left.
    fn drain_stash(&mut self, out: &mut Vec<u8>) -> bool {
        while !self.stash.is_empty() {
            if out.len() >= OUTPUT_STEP {
                return false;
            }
            // Room for what this stash likely inflates to (deflate rarely passes 8:1 on
            // real data; the loop takes more turns when it does), not a full step each time.
            let room = (OUTPUT_STEP - out.len()).min((self.stash.len() * 8).max(1024));
            let mut buf = vec![0u8; room];
            let inflate = self
                .inflate
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
            let status = inflate.decompress(&self.stash, &mut buf, FlushDecompress::Sync);
            let used = (inflate.total_in() - before_in) as usize;
            let made = (inflate.total_out() - before_out) as usize;
            match status {
                Ok(_) => {}
                Err(_) => {
                    self.poison(out, false);
                    return false;
                }
            }
            self.stash.drain(..used);
            if made > 0 && !self.emit(&buf[..made], false, out) {
                return false;
            }
            if used == 0 && made == 0 {
                // Needs more input than the stash holds (a partial block): wait for it.
                break;
            }
        }
        true
    }

    /// Hand on `data` as one plain fragment of the current message.
    fn emit(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) -> bool {
        self.produced += data.len();
        if self.produced > self.max_message {
            self.poison(out, true);
            return false;
        }
        let opcode = self.opcode.take().unwrap_or(0);
        out.push(if fin { 0x80 } else { 0x00 } | opcode);
        let mask_bit = if self.reader == Reader::Server {
            0x80
        } else {
            0
        };
        push_length(out, data.len() as u64, mask_bit);
        if self.reader == Reader::Server {
            // A zero mask: the library wants masked client frames; XOR with 0 keeps them.
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        out.extend_from_slice(data);
        true
    }

    /// A compressed frame's payload is all in: on the message's last frame, flush the
    /// inflater with the stripped tail and end the message.
    fn end_frame(&mut self, fin: bool, out: &mut Vec<u8>) {
        if matches!(self.part, Part::Poisoned) {
            return;
        }
        self.part = Part::Header;
        if !fin {
            return;
        }
        if !self.tail_added {
            self.stash.extend_from_slice(&TAIL);
            self.tail_added = true;
        }
        if !self.drain_stash(out) {
            if !matches!(self.part, Part::Poisoned) {
                // Output full: the rest is inflated on the next feed, which drains the
                // stash before it reads another header.
                self.part = Part::Inflate { left: 0, fin: true };
            }
            return;
        }
        self.tail_added = false;
        if !self.emit(&[], true, out) {
            return;
        }
        self.message = None;
        if self.no_context_takeover {
            // Nothing to keep between messages: the state goes (an idle connection holds
            // none).
            self.inflate = None;
        }
    }

    /// Make the library fail the connection: too big (a frame over its limit: 1009) or
    /// invalid (RSV2 set: a protocol error, 1002).
    fn poison(&mut self, out: &mut Vec<u8>, too_big: bool) {
        self.part = Part::Poisoned;
        self.stash.clear();
        if too_big {
            out.push(0x02);
            let mask_bit = if self.reader == Reader::Server {
                0x80
            } else {
                0
            };
            push_length(out, u64::MAX >> 1, mask_bit);
        } else {
            out.push(0x80 | 0x20 | 0x02);
            out.push(if self.reader == Reader::Server {
                0x80
            } else {
                0
            });
        }
        if self.reader == Reader::Server {
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
    }
}

/// A complete compressed, unmasked text frame (FIN, RSV1) of `payload`, deflated on its
/// own (no context taken over): the frame a server sends with server_no_context_takeover,
/// the same bytes for every connection that agreed on a 15-bit window.
pub fn compressed_text_frame(payload: &[u8]) -> Vec<u8> {
    // One compressor per thread, reset for each frame: a new one allocates and clears
    // about 180 KiB, more than deflating a typical publication costs.
    thread_local! {
        static COMPRESS: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::fast(), false));
    }
    COMPRESS.with(|compress| {
        let mut compress = compress.borrow_mut();
        compress.reset();
        deflate_frame(&mut compress, payload)
    })
}

fn deflate_frame(compress: &mut Compress, payload: &[u8]) -> Vec<u8> {
    let mut deflated = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        deflated.reserve(1024.max(payload.len() / 8));
        let status =
            compress.compress_vec(&payload[consumed..], &mut deflated, FlushCompress::Sync);
        // Done once every byte is in and the flush left room unused.
        let done =
            compress.total_in() as usize == payload.len() && deflated.len() < deflated.capacity();
        if done || matches!(status, Ok(Status::StreamEnd) | Err(_)) {
            break;
        }
    }
    if deflated.ends_with(&TAIL) {
        deflated.truncate(deflated.len() - TAIL.len());
    }
    let mut frame = Vec::with_capacity(deflated.len() + 10);
    frame.push(0x80 | 0x40 | 0x01);
    push_length(&mut frame, deflated.len() as u64, 0);
    frame.extend_from_slice(&deflated);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ServerPolicy {
        ServerPolicy {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_and_the_policy_adds_no_context_takeover() {
        let agreed = negotiate(
            ["permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=10; client_max_window_bits"],
            policy(),
        )
        .expect("accepted");
        assert_eq!(agreed.server_max_window_bits, 10);
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        assert_eq!(
            agreed.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(negotiate(["x-webkit-deflate-frame"], policy()), None);
        assert_eq!(negotiate(["permessage-deflate; unknown"], policy()), None);
        assert_eq!(
            negotiate(
                ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                policy()
            ),
            None
        );
    }

    #[test]
    fn a_client_reads_the_answer_and_refuses_what_it_did_not_offer() {
        let agreed = accept_response(["permessage-deflate; server_no_context_takeover"])
            .expect("valid")
            .expect("agreed");
        assert!(agreed.server_no_context_takeover);
        assert_eq!(accept_response(Vec::<&str>::new()), Ok(None));
        assert!(accept_response(["x-other"]).is_err());
        assert!(accept_response(["permessage-deflate; client_max_window_bits"]).is_err());
    }

    /// A masked client frame of `payload` with the given first byte.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        push_length(&mut frame, payload.len() as u64, 0x80);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        frame
    }

    /// The plain frames in `bytes`: (first byte, unmasked payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut all = Vec::new();
        while bytes.len() >= 2 {
            let masked = bytes[1] & 0x80 != 0;
            let (len, mut at) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().expect("8")) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mask = if masked {
                at += 4;
                bytes[at - 4..at].to_vec()
            } else {
                vec![0; 4]
            };
            let payload = bytes[at..at + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            all.push((bytes[0], payload));
            bytes = &bytes[at + len..];
        }
        all
    }

    fn deflated(payload: &[u8]) -> Vec<u8> {
        let frame = compressed_text_frame(payload);
        frames(&frame).remove(0).1
    }

    fn run(inflater: &mut Inflater, input: &[u8], step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut at = 0;
        loop {
            let mut out = Vec::new();
            let end = (at + step).min(input.len());
            let taken = inflater.feed(&input[at..end], &mut out);
            at += taken;
            let idle = out.is_empty() && taken == 0;
            all.extend(out);
            if at >= input.len() && (idle || !inflater.has_pending()) {
                if inflater.has_pending() {
                    continue;
                }
                break;
            }
        }
        all
    }

    #[test]
    fn compressed_messages_come_out_plain_and_plain_ones_pass_untouched() {
        let agreed = negotiate([EXTENSION], policy()).expect("agreed");
        let text = "hello hello hello compressed world ".repeat(200);
        let mut wire = client_frame(0x81, b"plain");
        wire.extend(client_frame(0x80 | 0x40 | 0x01, &deflated(text.as_bytes())));
        wire.extend(client_frame(0x89, b"ping"));
        for step in [1, 7, 4096] {
            let mut inflater = Inflater::new(Reader::Server, &agreed, 1 << 20);
            let got = frames(&run(&mut inflater, &wire, step));
            assert_eq!(got[0], (0x81, b"plain".to_vec()));
            // The compressed message: fragments whose payloads join to the text.
            let last_data = got.iter().rposition(|f| f.0 & 0x0f <= 2).expect("data");
            let message: Vec<u8> = got[1..=last_data]
                .iter()
                .flat_map(|f| f.1.clone())
                .collect();
            assert_eq!(message, text.as_bytes(), "step {step}");
            assert_eq!(got[1].0 & 0x0f, 1, "the first fragment carries the opcode");
            assert_eq!(got[last_data].0 & 0x80, 0x80, "the last has FIN");
            assert_eq!(got.last().expect("ping").1, b"ping");
        }
    }

    #[test]
    fn a_message_inflating_past_the_limit_is_refused_not_buffered() {
        let agreed = negotiate([EXTENSION], policy()).expect("agreed");
        let bomb = vec![b'a'; 4 << 20];
        let wire = client_frame(0xC1, &deflated(&bomb));
        assert!(wire.len() < 64 << 10, "{} bytes on the wire", wire.len());
        let mut inflater = Inflater::new(Reader::Server, &agreed, 1 << 20);
        let mut biggest = 0;
        let mut at = 0;
        let mut all = Vec::new();
        while at < wire.len() || inflater.has_pending() {
            let mut out = Vec::new();
            at += inflater.feed(&wire[at..], &mut out);
            biggest = biggest.max(out.len());
            all.extend(out);
            if out_is_poisoned(&all) {
                break;
            }
        }
        assert!(biggest <= OUTPUT_STEP + 16, "one step made {biggest} bytes");
        assert!(out_is_poisoned(&all), "the limit was not enforced");
    }

    fn out_is_poisoned(bytes: &[u8]) -> bool {
        // The refusal is a frame header with a 63-bit length.
        bytes
            .windows(9)
            .any(|w| w[0] == 0x80 | 127 && w[1] == 0x7f && w[2] == 0xff)
    }

    #[test]
    fn an_unmasked_compressed_frame_from_a_client_is_left_for_the_library_to_refuse() {
        let agreed = negotiate([EXTENSION], policy()).expect("agreed");
        // As a server would send it: unmasked.
        let frame = compressed_text_frame(b"hello");
        let mut inflater = Inflater::new(Reader::Server, &agreed, 1 << 20);
        let mut out = Vec::new();
        inflater.feed(&frame, &mut out);
        assert_eq!(out, frame, "passed through untouched, RSV1 and all");
    }

    #[test]
    fn garbage_in_a_compressed_frame_becomes_a_protocol_error() {
        let agreed = negotiate([EXTENSION], policy()).expect("agreed");
        let wire = client_frame(0xC1, &[0xff; 40]);
        let mut inflater = Inflater::new(Reader::Server, &agreed, 1 << 20);
        let mut out = Vec::new();
        inflater.feed(&wire, &mut out);
        assert!(out.contains(&(0x80 | 0x20 | 0x02)), "{out:?}");
    }
}
