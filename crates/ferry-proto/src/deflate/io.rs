//! The one piece of I/O glue in ferry-proto (feature `tokio`): [`Inflating`], a byte
//! stream that runs an [`Inflater`] between a socket and a WebSocket library, shared by the
//! hub (server role) and the client (client role) so the loop exists once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Inflater, OUTPUT_STEP, Reader};

/// Bytes read from the socket at once while inflating.
const READ_STEP: usize = 4096;
/// The longest HTTP response head a client accepts before the first frame.
const MAX_HEAD: usize = 16 * 1024;

/// A stream whose reads have compressed messages inflated (see the module docs of
/// [`super`]); writes pass through. Without compression it is the stream plus one empty
/// pointer.
pub struct Inflating<T> {
    inner: T,
    state: Option<Box<State>>,
}

struct State {
    /// The client's view of the upgrade response until its end; `None` once frames flow.
    head: Option<Head>,
    inflater: Option<Inflater>,
    /// Bytes for the reader, from `at`.
    out: Vec<u8>,
    at: usize,
    /// Bytes read from the socket and not yet transcoded: `input[taken..filled]`.
    /// Allocated while reading and given back while the socket is quiet.
    input: Vec<u8>,
    taken: usize,
    filled: usize,
}

/// A client reading the upgrade response: it goes to the library untouched, but no byte
/// after its end does, so the frames that follow it in the same read are transcoded.
struct Head {
    seen: Vec<u8>,
    max_message: usize,
}

impl<T> Inflating<T> {
    /// A server's stream: `inflater` when permessage-deflate was agreed.
    pub fn server(inner: T, inflater: Option<Inflater>) -> Inflating<T> {
        Inflating {
            inner,
            state: inflater.map(|inflater| {
                Box::new(State {
                    head: None,
                    inflater: Some(inflater),
                    out: Vec::new(),
                    at: 0,
                    input: Vec::new(),
                    taken: 0,
                    filled: 0,
                })
            }),
        }
    }

    /// A client's stream that offered permessage-deflate: it reads the server's upgrade
    /// response as it passes and inflates from the first frame on if the server agreed
    /// (an answer the client did not offer fails the read, so the handshake fails).
    pub fn client(inner: T, max_message: usize) -> Inflating<T> {
        Inflating {
            inner,
            state: Some(Box::new(State {
                head: Some(Head {
                    seen: Vec::new(),
                    max_message,
                }),
                inflater: None,
                out: Vec::new(),
                at: 0,
                input: Vec::new(),
                taken: 0,
                filled: 0,
            })),
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl State {
    /// The head is read, nothing is to be inflated and nothing is waiting.
    fn is_plain_and_drained(&self) -> bool {
        self.head.is_none()
            && self.inflater.is_none()
            && self.at >= self.out.len()
            && self.taken >= self.filled
    }

    /// Move bytes from `input` to `out`: the response head as it is (ending the head phase
    /// at its blank line), then frames through the inflater. `false` when nothing moved.
    fn transcode(&mut self) -> io::Result<bool> {
        if let Some(head) = &mut self.head {
            let start = self.taken;
            while self.taken < self.filled {
                let b = self.input[self.taken];
                self.taken += 1;
                head.seen.push(b);
                if head.seen.ends_with(b"\r\n\r\n") {
                    self.inflater = inflater_for_response(&head.seen, head.max_message)?;
                    self.head = None;
                    break;
                }
                if head.seen.len() > MAX_HEAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the upgrade response head is too long",
                    ));
                }
            }
            self.out.extend_from_slice(&self.input[start..self.taken]);
            return Ok(self.taken > start);
        }
        match &mut self.inflater {
            None => {
                self.out
                    .extend_from_slice(&self.input[self.taken..self.filled]);
                let moved = self.filled > self.taken;
                self.taken = self.filled;
                Ok(moved)
            }
            Some(inflater) => {
                if self.taken == self.filled && !inflater.has_pending() {
                    return Ok(false);
                }
                let taken = inflater.feed(&self.input[self.taken..self.filled], &mut self.out);
                self.taken += taken;
                Ok(taken > 0 || !self.out.is_empty())
            }
        }
    }
}

/// The inflater a response head asks for: `None` when the server declined.
fn inflater_for_response(head: &[u8], max_message: usize) -> io::Result<Option<Inflater>> {
    let text = String::from_utf8_lossy(head);
    let values: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, value)| value.trim())
        .collect();
    let agreed = super::accept_response(values.iter().copied())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(agreed.map(|agreed| Inflater::new(Reader::Client, &agreed, max_message)))
}

impl<T: AsyncRead + Unpin> AsyncRead for Inflating<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A server that declined compression: once its answer and what followed it in the
        // same read are handed on, the stream is the socket again, with nothing copied.
        if this
            .state
            .as_ref()
            .is_some_and(|s| s.is_plain_and_drained())
        {
            this.state = None;
        }
        let Some(state) = this.state.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if state.at < state.out.len() {
                let n = (state.out.len() - state.at).min(buf.remaining());
                buf.put_slice(&state.out[state.at..state.at + n]);
                state.at += n;
                return Poll::Ready(Ok(()));
            }
            state.out.clear();
            state.at = 0;
            if state.out.capacity() > 2 * OUTPUT_STEP {
                state.out = Vec::new();
            }
            if state.transcode()? {
                continue;
            }
            if state.input.len() < READ_STEP {
                state.input.resize(READ_STEP, 0);
            }
            let mut read = ReadBuf::new(&mut state.input[..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    state.taken = 0;
                    state.filled = n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Everything read was handed on: nothing to keep while waiting.
                    state.input = Vec::new();
                    state.out = Vec::new();
                    state.taken = 0;
                    state.filled = 0;
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inflating<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upgrade response and a compressed frame in one read: the head reaches the
    /// library as it is, the frame inflated.
    #[test]
    fn a_client_reads_the_head_as_is_and_inflates_what_follows_it() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        let frame = super::super::compressed_text_frame(b"hello, hello, hello");
        let mut wire = head.to_vec();
        wire.extend_from_slice(&frame);
        let mut state = State {
            head: Some(Head {
                seen: Vec::new(),
                max_message: 1 << 20,
            }),
            inflater: None,
            out: Vec::new(),
            at: 0,
            input: wire.clone(),
            taken: 0,
            filled: wire.len(),
        };
        assert!(state.transcode().expect("head"));
        assert_eq!(state.out, head.to_vec(), "the head stops at its blank line");
        state.out.clear();
        while state.transcode().expect("frames") {}
        // A fragment with the text, then an empty final one.
        assert_eq!(state.out[0], 0x01);
        assert!(state.out.windows(19).any(|w| w == b"hello, hello, hello"));
        assert_eq!(&state.out[state.out.len() - 2..], &[0x80, 0x00]);
    }

    #[test]
    fn an_extension_never_offered_fails_the_handshake() {
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: x-unknown\r\n\r\n";
        let error = inflater_for_response(head, 1 << 20).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
