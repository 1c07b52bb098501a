//! Tests for the event-stream parser: one test per rule of WHATWG "Interpreting an event
//! stream", then property tests for chunking and for the encoder round trip.

use super::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

/// Feed `chunks` in order to a fresh parser; panics (test failure) on a parser error.
fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser
            .feed(chunk, &mut events)
            .expect("no limit is reached");
    }
    (events, parser)
}

fn parse(input: &str) -> Vec<SseEvent> {
    parse_chunks(&[input.as_bytes()]).0
}

fn event(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent {
        event: event.to_owned(),
        data: data.to_owned(),
        id: id.to_owned(),
    }
}

fn message(data: &str) -> SseEvent {
    event("message", data, "")
}

#[test]
fn bom_is_stripped_once_at_stream_start() {
    assert_eq!(parse("\u{FEFF}data: a\n\n"), [message("a")]);
    // Split across chunks, byte by byte.
    let (events, _) = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
    assert_eq!(events, [message("a")]);
    // A second BOM is part of the first field name ("\u{FEFF}data"), an unknown field.
    assert_eq!(parse("\u{FEFF}\u{FEFF}data: a\n\n"), []);
    // A BOM later in the stream is just a character.
    assert_eq!(parse("data: a\n\n\u{FEFF}data: b\n\n"), [message("a")]);
}

#[test]
fn cr_lf_and_crlf_each_end_a_line() {
    assert_eq!(
        parse("data: a\rdata: b\ndata: c\r\n\r\n"),
        [message("a\nb\nc")]
    );
    assert_eq!(parse("data: a\r\r"), [message("a")]);
    assert_eq!(parse("data: a\n\n"), [message("a")]);
    // LF CR is two line endings, hence a blank line.
    assert_eq!(
        parse("data: a\n\rdata: b\n\n"),
        [message("a"), message("b")]
    );
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    let (events, _) = parse_chunks(&[b"data: a\r", b"\n", b"data: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, [message("a\nb")]);
    // A CR ending one chunk and a CR starting the next are two endings.
    let (events, _) = parse_chunks(&[b"data: a\r", b"\rdata: b\n\n"]);
    assert_eq!(events, [message("a"), message("b")]);
}

#[test]
fn comment_lines_are_ignored() {
    assert_eq!(parse(": hello\ndata: a\n:\ndata: b\n\n"), [message("a\nb")]);
    assert_eq!(parse(": keep-alive\n\n"), []);
}

#[test]
fn multi_line_data_is_joined_with_lf() {
    assert_eq!(
        parse("data: a\ndata: b\ndata\ndata: c\n\n"),
        [message("a\nb\n\nc")]
    );
    // Only one trailing LF is removed.
    assert_eq!(parse("data: a\ndata:\n\n"), [message("a\n")]);
}

#[test]
fn empty_data_buffer_dispatches_nothing_and_resets_event_type() {
    assert_eq!(parse("event: x\n\n"), []);
    assert_eq!(parse("event: x\n\ndata: y\n\n"), [message("y")]);
    // A `data` line with an empty value does fill the buffer.
    assert_eq!(parse("data\n\n"), [message("")]);
}

#[test]
fn event_type_applies_to_one_event_only() {
    assert_eq!(
        parse("event: add\nevent: update\ndata: 1\n\ndata: 2\n\n"),
        [event("update", "1", ""), message("2")]
    );
    // An empty event type means "message".
    assert_eq!(parse("event:\ndata: 1\n\n"), [message("1")]);
}

#[test]
fn id_persists_across_events_until_changed() {
    assert_eq!(
        parse("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"),
        [
            event("message", "a", "1"),
            event("message", "b", "1"),
            message("c")
        ]
    );
}

#[test]
fn last_event_id_is_taken_at_blank_lines_only() {
    let (_, parser) = parse_chunks(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
    assert_eq!(parser.last_event_id(), "1");
    // An event without data still commits its id.
    let (events, parser) = parse_chunks(&[b"id: 3\n\n"]);
    assert_eq!(events, []);
    assert_eq!(parser.last_event_id(), "3");
}

#[test]
fn id_containing_nul_is_ignored() {
    assert_eq!(
        parse("id: 1\n\nid: 2\0x\ndata: a\n\n"),
        [event("message", "a", "1")]
    );
}

#[test]
fn retry_accepts_only_ascii_digits() {
    let (_, parser) = parse_chunks(&[b"retry: 1500\n"]);
    assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
    for bad in [
        "15x", "-1", "1.5", "", " 100", "1 ", "\u{663}", "+1", "0x10",
    ] {
        let input = format!("retry: 1500\nretry: {bad}\n");
        let (_, parser) = parse_chunks(&[input.as_bytes()]);
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)), "{bad:?}");
    }
    let (_, parser) = parse_chunks(&[b"retry: 0\n"]);
    assert_eq!(parser.retry(), Some(Duration::ZERO));
    let (_, parser) = parse_chunks(&[b"retry: 99999999999999999999999\n"]);
    assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
    assert_eq!(SseParser::new().retry(), None);
}

#[test]
fn field_without_colon_has_empty_value() {
    assert_eq!(parse("data\n\n"), [message("")]);
    assert_eq!(parse("event\ndata: a\n\n"), [message("a")]);
}

#[test]
fn only_one_leading_space_is_removed_and_colons_stay_in_values() {
    assert_eq!(parse("data:  a\n\n"), [message(" a")]);
    assert_eq!(parse("data:a\n\n"), [message("a")]);
    assert_eq!(parse("data: a \n\n"), [message("a ")]);
    assert_eq!(parse("data: a: b:c\n\n"), [message("a: b:c")]);
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        parse("foo: bar\ndata: a\nDATA: b\n data: c\n\n"),
        [message("a")]
    );
    assert_eq!(parse("foo: bar\n\n"), []);
}

#[test]
fn incomplete_event_at_end_is_not_emitted() {
    assert_eq!(parse("data: a\n"), []);
    assert_eq!(parse("data: a\n\ndata: b\n"), [message("a")]);
    assert_eq!(parse("data: a\n\ndata: b"), [message("a")]);
}

#[test]
fn utf8_sequences_split_across_chunks_are_reassembled() {
    let input = "data: é€😀\n\n".as_bytes();
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parse_chunks(&chunks).0, [message("é€😀")]);
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(
        parse_chunks(&[b"data: a\xFFb\n\n"]).0,
        [message("a\u{FFFD}b")]
    );
    // A truncated sequence is one U+FFFD, also when the cut falls between chunks.
    assert_eq!(
        parse_chunks(&[b"data: \xE2\x82A\n\n"]).0,
        [message("\u{FFFD}A")]
    );
    assert_eq!(
        parse_chunks(&[b"data: \xE2", b"\x82", b"A\n\n"]).0,
        [message("\u{FFFD}A")]
    );
    // A truncated sequence right before a line ending.
    assert_eq!(
        parse_chunks(&[b"data: \xF0\x9F", b"\n\n"]).0,
        [message("\u{FFFD}")]
    );
}

#[test]
fn line_longer_than_limit_is_an_error_and_poisons_the_parser() {
    let mut parser = SseParser::new().with_max_line(8);
    let mut events = Vec::new();
    // Exactly 8 bytes is accepted.
    parser.feed(b"data: 12\n\n", &mut events).expect("fits");
    assert_eq!(events, [message("12")]);
    // Too long across chunks: events completed before it in the same chunk are kept.
    parser
        .feed(b"id: 5\n\ndata", &mut events)
        .expect("fits so far");
    let err = parser.feed(b": 123", &mut events);
    assert_eq!(err, Err(SseError::LineTooLong { limit: 8 }));
    assert_eq!(parser.last_event_id(), "5");
    // Poisoned: the same error again, nothing parsed.
    let again = parser.feed(b"\n\ndata: x\n\n", &mut events);
    assert_eq!(again, Err(SseError::LineTooLong { limit: 8 }));
    assert_eq!(events, [message("12")]);

    // Too long within one chunk.
    let mut parser = SseParser::new().with_max_line(4);
    let err = parser.feed(b"data: 1\n\n", &mut events);
    assert_eq!(err, Err(SseError::LineTooLong { limit: 4 }));
}

#[test]
fn event_data_larger_than_limit_is_an_error() {
    let mut parser = SseParser::new().with_max_data(5);
    let mut events = Vec::new();
    parser
        .feed(b"data: ab\ndata: cd\n\n", &mut events)
        .expect("5 bytes");
    assert_eq!(events, [message("ab\ncd")]);
    let err = parser.feed(b"data: ab\ndata: cde\n\n", &mut events);
    assert_eq!(err, Err(SseError::EventTooLarge { limit: 5 }));
    assert_eq!(events.len(), 1);
}

// ---- property tests ----

/// One piece of a generated stream.
#[derive(Debug, Clone)]
enum Item {
    /// Lines in this order: `event`, `id`, `data` lines, then a blank line.
    Event {
        event: Option<String>,
        id: Option<String>,
        data: Vec<String>,
    },
    /// A `:` comment line.
    Comment(String),
    /// A `retry:` line.
    Retry(u32),
}

fn item() -> impl Strategy<Value = Item> {
    let text = "[^\r\n]{0,8}";
    prop_oneof![
        6 => (option::of(text), option::of(text), vec(text, 0..4))
            .prop_map(|(event, id, data)| Item::Event { event, id, data }),
        1 => text.prop_map(Item::Comment),
        1 => any::<u32>().prop_map(Item::Retry),
    ]
}

/// How one line is written: its line ending and whether the space after the colon is left
/// out (where the value does not start with a space itself).
type LineStyle = (u8, bool);

fn encode(items: &[Item], bom: bool, styles: &[LineStyle]) -> Vec<u8> {
    // (field, value); a field of "" is written as the bare value (comments, blank lines).
    let mut lines: Vec<(&str, String)> = Vec::new();
    for item in items {
        match item {
            Item::Event { event, id, data } => {
                lines.extend(event.iter().map(|e| ("event", e.clone())));
                lines.extend(id.iter().map(|i| ("id", i.clone())));
                lines.extend(data.iter().map(|d| ("data", d.clone())));
                lines.push(("", String::new()));
            }
            Item::Comment(text) => lines.push(("", format!(":{text}"))),
            Item::Retry(ms) => lines.push(("retry", ms.to_string())),
        }
    }
    let mut out = String::new();
    if bom {
        out.push('\u{FEFF}');
    }
    for (n, (field, value)) in lines.iter().enumerate() {
        let (ending, compact) = styles[n % styles.len()];
        let mut ending = ["\n", "\r", "\r\n"][usize::from(ending % 3)];
        out.push_str(field);
        if !field.is_empty() {
            out.push_str(if compact && !value.starts_with(' ') {
                ":"
            } else {
                ": "
            });
        }
        out.push_str(value);
        if out.ends_with('\r') && ending == "\n" {
            // An empty line after a CR: a bare LF would join that CR as one CRLF.
            ending = "\r\n";
        }
        out.push_str(ending);
    }
    out.into_bytes()
}

/// What a conforming parser yields for `items`: the events, the last event ID, the retry.
fn expected(items: &[Item]) -> (Vec<SseEvent>, String, Option<Duration>) {
    let (mut events, mut id_buffer, mut retry) = (Vec::new(), String::new(), None);
    for item in items {
        match item {
            Item::Event { event, id, data } => {
                if let Some(id) = id.as_ref().filter(|id| !id.contains('\0')) {
                    id_buffer.clone_from(id);
                }
                if !data.is_empty() {
                    let event = match event {
                        Some(e) if !e.is_empty() => e.clone(),
                        _ => "message".to_owned(),
                    };
                    events.push(SseEvent {
                        event,
                        data: data.join("\n"),
                        id: id_buffer.clone(),
                    });
                }
            }
            Item::Comment(_) => {}
            Item::Retry(ms) => retry = Some(Duration::from_millis(u64::from(*ms))),
        }
    }
    (events, id_buffer, retry)
}

fn feed_at(bytes: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, String, Option<Duration>) {
    let mut chunks = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    let (events, parser) = parse_chunks(&chunks);
    (events, parser.last_event_id().to_owned(), parser.retry())
}

proptest! {
    #[test]
    fn any_chunking_yields_the_expected_events(
        items in vec(item(), 0..12),
        bom in any::<bool>(),
        styles in vec((0u8..3, any::<bool>()), 1..16),
        random_cuts in vec(any::<Index>(), 0..16),
    ) {
        let bytes = encode(&items, bom, &styles);
        let want = expected(&items);

        let whole = feed_at(&bytes, &[]);
        prop_assert_eq!(&whole, &want);

        let mut cuts: Vec<usize> = random_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(&feed_at(&bytes, &cuts), &want);

        // Every cut that is hard: inside each CRLF and inside each UTF-8 sequence.
        let hard: Vec<usize> = (1..bytes.len())
            .filter(|&i| (bytes[i - 1] == b'\r' && bytes[i] == b'\n') || bytes[i] & 0xC0 == 0x80)
            .collect();
        prop_assert_eq!(&feed_at(&bytes, &hard), &want);

        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(&feed_at(&bytes, &every), &want);
    }

    #[test]
    fn invalid_utf8_is_replaced_like_a_lossy_decoder_under_any_chunking(
        value in vec(any::<u8>().prop_filter("no line ending", |b| *b != b'\r' && *b != b'\n'), 0..32),
        random_cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut bytes = b"data: ".to_vec();
        bytes.extend_from_slice(&value);
        bytes.extend_from_slice(b"\n\n");
        let mut cuts: Vec<usize> = random_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let want = String::from_utf8_lossy(&value).into_owned();
        let (events, _, _) = feed_at(&bytes, &cuts);
        prop_assert_eq!(events, vec![message(&want)]);
    }

    #[test]
    fn encode_event_round_trips(
        event in option::of("[^\r\n\0]{0,8}"),
        id in option::of("[^\r\n\0]{0,8}"),
        data in "[^\r]{0,24}",
    ) {
        let mut wire = String::new();
        crate::sse::encode_event(&mut wire, event.as_deref(), id.as_deref(), &data);
        let want = SseEvent {
            event: event.filter(|e| !e.is_empty()).unwrap_or_else(|| "message".to_owned()),
            data,
            id: id.unwrap_or_default(),
        };
        prop_assert_eq!(parse(&wire), vec![want]);
    }
}
