//! Incremental parser for `text/event-stream`, following the WHATWG HTML standard,
//! §9.2.6 "Interpreting an event stream" (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! The parser is fed bytes exactly as they come off the wire; a chunk boundary may fall
//! anywhere, including inside a CRLF pair or inside a multi-byte UTF-8 sequence. It keeps
//! the state the standard describes (data buffer, event type buffer, last event ID buffer,
//! reconnection time) and hands back complete events. An event that is still incomplete
//! when the stream ends is discarded, as the standard requires, so there is no `finish`.
//!
//! Memory is bounded: a line longer than [`SseParser::with_max_line`] or an event whose data
//! grows past [`SseParser::with_max_data`] is an [`SseError`], so a peer that never sends a
//! newline (or never sends a blank line) cannot make the parser grow without limit.

use std::time::Duration;

/// Default cap on the length of one line, in bytes of decoded UTF-8: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

/// Default cap on the data of one event (the data buffer), in bytes of UTF-8: 16 MiB.
pub const DEFAULT_MAX_DATA: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type: the last `event:` field of this event, or `"message"` when there was
    /// none (or it was empty).
    pub event: String,
    /// The `data:` lines joined with `"\n"`.
    pub data: String,
    /// The last event ID buffer when the event was dispatched. It persists across events:
    /// an event without an `id:` field carries the ID of an earlier one.
    pub id: String,
}

/// Why the parser stopped. Once [`SseParser::feed`] has returned an error the parser is
/// poisoned: every later call returns the same error and parses nothing. The caller drops
/// the connection; [`SseParser::last_event_id`] and [`SseParser::retry`] stay readable for
/// the reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line (without its line ending) exceeded the configured maximum.
    #[error("event-stream line longer than {limit} bytes")]
    LineTooLong {
        /// The configured maximum line length, in bytes.
        limit: usize,
    },
    /// The data of one event (all its `data:` lines) exceeded the configured maximum.
    #[error("event-stream event data larger than {limit} bytes")]
    EventTooLarge {
        /// The configured maximum data size, in bytes.
        limit: usize,
    },
}

/// Incremental `text/event-stream` parser. Sans-IO: feed it bytes, get events back.
///
/// ```
/// use ferry_proto::sse::SseParser;
///
/// let mut parser = SseParser::new();
/// let mut events = Vec::new();
/// parser.feed(b"id: 7\r\ndata: hel", &mut events)?;
/// parser.feed(b"lo\r", &mut events)?;
/// parser.feed(b"\n\r\n", &mut events)?;
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].data, "hello");
/// assert_eq!(parser.last_event_id(), "7");
/// # Ok::<(), ferry_proto::sse::SseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SseParser {
    max_line: usize,
    max_data: usize,
    /// Nothing has been decoded yet: the first character is checked for a BOM.
    at_stream_start: bool,
    /// The bytes of a UTF-8 sequence cut by the end of the previous chunk (at most 3).
    pending_utf8: Vec<u8>,
    /// The previous line ended in CR: an LF right after it belongs to the same line ending.
    skip_lf: bool,
    /// The part of the current line seen so far, when it spans chunks.
    line: String,
    data: String,
    event_type: String,
    id_buffer: String,
    /// The "last event ID string": the ID buffer as of the last blank line.
    last_event_id: String,
    retry: Option<Duration>,
    error: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream, with [`DEFAULT_MAX_LINE`] and
    /// [`DEFAULT_MAX_DATA`] as limits.
    pub fn new() -> Self {
        SseParser {
            max_line: DEFAULT_MAX_LINE,
            max_data: DEFAULT_MAX_DATA,
            at_stream_start: true,
            pending_utf8: Vec::new(),
            skip_lf: false,
            line: String::new(),
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            error: None,
        }
    }

    /// Set the longest accepted line, in bytes of UTF-8 without the line ending (default
    /// [`DEFAULT_MAX_LINE`]). A longer line makes [`feed`](Self::feed) return
    /// [`SseError::LineTooLong`], however it is split into chunks.
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// Set the largest accepted event data, in bytes of UTF-8 counting the `"\n"` between
    /// lines (default [`DEFAULT_MAX_DATA`]). More makes [`feed`](Self::feed) return
    /// [`SseError::EventTooLarge`].
    pub fn with_max_data(mut self, max_data: usize) -> Self {
        self.max_data = max_data;
        self
    }

    /// The last event ID string: the value of the last `id:` field as of the last blank
    /// line (an `id:` of an event cut off by the end of the stream does not count). Send it
    /// as `Last-Event-ID` when reconnecting; empty means "send no header".
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time from the latest valid `retry:` field, or `None` if the stream
    /// has not sent one. Values too large for a `u64` of milliseconds saturate.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Parse the next chunk of the stream, pushing every event it completes onto `events`
    /// in order.
    ///
    /// # Errors
    ///
    /// [`SseError::LineTooLong`] or [`SseError::EventTooLarge`] when a limit is exceeded.
    /// Events completed earlier in the same chunk are still pushed. The parser is then
    /// poisoned and returns the same error on every later call.
    pub fn feed(&mut self, mut bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.decode(&mut bytes, events);
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    /// UTF-8 decode `bytes` (streaming: an incomplete sequence at the end waits for the next
    /// chunk; invalid bytes become U+FFFD, one per maximal subpart, as the WHATWG decoder
    /// does) and feed the text to the line splitter.
    fn decode(&mut self, bytes: &mut &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.pending_utf8.is_empty() {
            self.finish_pending(bytes, events)?;
        }
        let input = *bytes;
        let mut chunks = input.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            self.push_text(chunk.valid(), events)?;
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            // At the very end of the input, a valid lead byte (and any continuation bytes
            // after it) is the start of a sequence the next chunk completes.
            if chunks.peek().is_none() && matches!(invalid[0], 0xC2..=0xF4) {
                self.pending_utf8.extend_from_slice(invalid);
            } else {
                self.push_text("\u{FFFD}", events)?;
            }
        }
        Ok(())
    }

    /// Complete (or reject) the sequence cut by the previous chunk, consuming the bytes of
    /// it that `bytes` starts with.
    fn finish_pending(
        &mut self,
        bytes: &mut &[u8],
        events: &mut Vec<SseEvent>,
    ) -> Result<(), SseError> {
        // A sequence is at most 4 bytes, so 3 more bytes decide it.
        let take = bytes.len().min(3);
        let mut joined = std::mem::take(&mut self.pending_utf8);
        let pending_len = joined.len();
        joined.extend_from_slice(&bytes[..take]);
        let Some(first) = joined.utf8_chunks().next() else {
            return Ok(());
        };
        if let Some(c) = first.valid().chars().next() {
            // `first` starts at the pending lead byte, so this is the completed character.
            let consumed = c.len_utf8().saturating_sub(pending_len);
            *bytes = &bytes[consumed..];
            let mut buf = [0; 4];
            return self.push_text(c.encode_utf8(&mut buf), events);
        }
        let invalid = first.invalid();
        if invalid.len() == joined.len() && take == bytes.len() && take < 3 {
            // Still a valid prefix and this chunk ran out: keep waiting.
            self.pending_utf8 = joined;
            *bytes = &[];
            return Ok(());
        }
        // The maximal subpart always covers the pending bytes (they were a valid prefix).
        let consumed = invalid.len().saturating_sub(pending_len);
        *bytes = &bytes[consumed.min(bytes.len())..];
        self.push_text("\u{FFFD}", events)
    }

    /// Split decoded text into lines. CR, LF and CRLF all end a line; a CR at the end of one
    /// chunk and an LF at the start of the next are one line ending (`skip_lf`).
    fn push_text(&mut self, mut text: &str, events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_stream_start && !text.is_empty() {
            self.at_stream_start = false;
            text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        }
        while !text.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if let Some(rest) = text.strip_prefix('\n') {
                    text = rest;
                    continue;
                }
            }
            let Some(end) = text.find(['\r', '\n']) else {
                self.check_line_len(text.len())?;
                self.line.push_str(text);
                return Ok(());
            };
            self.check_line_len(end)?;
            self.skip_lf = text.as_bytes()[end] == b'\r';
            if self.line.is_empty() {
                self.process_line(&text[..end], events)?;
            } else {
                // Keep the line's allocation for the next line that spans chunks.
                let mut line = std::mem::take(&mut self.line);
                line.push_str(&text[..end]);
                let result = self.process_line(&line, events);
                line.clear();
                self.line = line;
                result?;
            }
            text = &text[end + 1..];
        }
        Ok(())
    }

    fn check_line_len(&self, more: usize) -> Result<(), SseError> {
        if self.line.len().saturating_add(more) > self.max_line {
            return Err(SseError::LineTooLong {
                limit: self.max_line,
            });
        }
        Ok(())
    }

    /// One complete line, without its line ending.
    fn process_line(&mut self, line: &str, events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(()); // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                // The data as dispatched: the buffer plus this value (the "\n" this line
                // appends is dropped at dispatch unless another line follows, and then it
                // is counted with that line).
                if self.data.len().saturating_add(value.len()) > self.max_data {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_data,
                    });
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits, so the only possible failure is overflow.
                let millis = value.parse::<u64>().unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(millis));
            }
            // Unknown fields, an `id` with NUL and a `retry` that is not all digits are
            // ignored.
            _ => {}
        }
        Ok(())
    }

    /// A blank line: "dispatch the event" as the standard words it.
    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        events.push(SseEvent {
            event,
            data,
            id: self.id_buffer.clone(),
        });
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
