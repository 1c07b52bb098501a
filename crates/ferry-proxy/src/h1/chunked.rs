//! Where a chunked body ends (RFC 9112 §7.1), found while its bytes pass through unchanged.
//!
//! The fast path forwards a chunked body (a request's or a response's) as it came: it does
//! not decode it, but it must know where it ends, so that the next message on the
//! connection starts in the right place, and it refuses a malformed one instead of passing
//! an ambiguous message on (request smuggling).

/// Hex digits of a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;
/// Bytes of a chunk extension (after the size, up to the line's end).
const MAX_EXTENSION: usize = 4096;
/// Bytes of all trailer fields together.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// The body is not valid chunked coding, or exceeds a limit (size digits, extension or
/// trailer length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Follows a chunked body's framing across reads.
#[derive(Debug)]
pub struct ChunkedEnd {
    state: State,
    /// The chunk size being read, then what is left of the chunk's data.
    size: u64,
    digits: u8,
    /// Extension or trailer bytes counted against their limits.
    counted: usize,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd {
            state: State::Size,
            size: 0,
            digits: 0,
            counted: 0,
        }
    }
}

impl ChunkedEnd {
    /// A scanner at the start of a chunked body.
    pub fn new() -> ChunkedEnd {
        ChunkedEnd::default()
    }

    /// Whether the body's last byte (the CRLF after the trailers) has been scanned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scan `data`, the body's next bytes: how many of them belong to the body. That is
    /// all of them until the end is reached; what follows the end is left alone.
    ///
    /// Errors: [`Malformed`]; the scanner must not be used afterwards.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = self.size.min((data.len() - i) as u64);
                // `take` ≤ data.len(), so it fits a usize.
                i += take as usize;
                self.size -= take;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<State, Malformed> {
        use State::*;
        Ok(match (self.state, b) {
            (Size, b) if b.is_ascii_hexdigit() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return Err(Malformed);
                }
                self.digits += 1;
                // Cannot overflow: at most 16 hex digits.
                self.size = self.size << 4 | u64::from(hex(b));
                Size
            }
            (Size, b';' | b' ' | b'\t') if self.digits > 0 => {
                self.counted = 0;
                Extension
            }
            (Size, b'\r') if self.digits > 0 => SizeLf,
            (Extension, b'\r') => SizeLf,
            (Extension, b'\n') => return Err(Malformed),
            (Extension, _) => {
                self.counted += 1;
                if self.counted > MAX_EXTENSION {
                    return Err(Malformed);
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => {
                self.counted = 0;
                TrailerStart
            }
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.digits = 0;
                Size
            }
            (TrailerStart, b'\r') => EndLf,
            (Trailer, b'\r') => TrailerLf,
            (TrailerStart | Trailer, b'\n') => return Err(Malformed),
            (TrailerStart | Trailer, _) => {
                self.counted += 1;
                if self.counted > MAX_TRAILERS {
                    return Err(Malformed);
                }
                Trailer
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(Malformed),
        })
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `chunks` in chunked coding, each size line with `extension`, then `trailers`.
    fn encode(chunks: &[Vec<u8>], extension: &str, trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(format!("{:X}{extension}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("0{extension}\r\n").as_bytes());
        for (k, v) in trailers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Scan `pieces` in order: the bytes found to belong to the body, and whether it ended.
    fn scan_all(pieces: &[&[u8]]) -> Result<(usize, bool), Malformed> {
        let mut scanner = ChunkedEnd::new();
        let mut total = 0;
        for p in pieces {
            let n = scanner.scan(p)?;
            total += n;
            if scanner.is_done() {
                return Ok((total, true));
            }
            assert_eq!(n, p.len(), "a piece is consumed whole until the end");
        }
        Ok((total, scanner.is_done()))
    }

    proptest! {
        /// Any body, split anywhere, with anything after it: the end is found exactly there.
        #[test]
        fn the_end_is_found_across_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            extension in prop_oneof![Just(String::new()), Just(";name=value".to_string()), Just(" ; x".to_string())],
            trailers in proptest::collection::vec(("[a-z][a-z-]{0,10}", "[ -~]{0,20}"), 0..3),
            after in proptest::collection::vec(any::<u8>(), 0..50),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let body = encode(&chunks, &extension, &trailers);
            let mut wire = body.clone();
            wire.extend_from_slice(&after);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.push(0);
            at.push(wire.len());
            at.sort_unstable();
            let pieces: Vec<&[u8]> = at.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            prop_assert_eq!(scan_all(&pieces), Ok((body.len(), true)));
        }

        /// A body cut short is never taken as complete.
        #[test]
        fn a_cut_body_is_not_complete(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let body = encode(&chunks, "", &[]);
            let short = &body[..cut.index(body.len())];
            prop_assert_eq!(scan_all(&[short]), Ok((short.len(), false)));
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"0\r\nbad trailer\n",
            b"3;ext\nabc",
        ] {
            assert_eq!(
                scan_all(&[bad]),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_extension = format!("1;{}\r\n", "x".repeat(MAX_EXTENSION + 1));
        assert_eq!(scan_all(&[long_extension.as_bytes()]), Err(Malformed));
        // The largest size that fits is accepted (and then waits for its data).
        assert_eq!(scan_all(&[b"FFFFFFFFFFFFFFFF\r\n"]), Ok((18, false)));
    }
}
