//! Server-Sent Events: the encoder used by the hub. (The WHATWG parser used by clients
//! lives in `sse::parse`.)

pub mod parse;

pub use parse::{SseError, SseEvent, SseParser};

/// Append one SSE event to `out`. `event` and `id` are single-line fields: CR, LF and NUL
/// are stripped from them so a value can never inject another field. `data` may span
/// lines; each line becomes its own `data:` field, as the format requires.
pub fn encode_event(out: &mut String, event: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(event) = event {
        out.push_str("event: ");
        push_single_line(out, event);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        push_single_line(out, id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
}

fn push_single_line(out: &mut String, value: &str) {
    out.extend(value.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fields_and_splits_data_lines() {
        let mut s = String::new();
        encode_event(&mut s, Some("message"), Some("7"), "a\nb");
        assert_eq!(s, "event: message\nid: 7\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn strips_line_breaks_from_single_line_fields() {
        let mut s = String::new();
        encode_event(&mut s, Some("x\r\nevent: y"), Some("1\n2\0"), "d");
        assert_eq!(s, "event: xevent: y\nid: 12\ndata: d\n\n");
    }
}
