//! How a response is shown: pretty (status line, headers, indented and coloured JSON) for
//! people, a `{status, headers, body}` JSON document for scripts. Colours are ANSI styles
//! written through `anstream`, which drops them when stdout is not a terminal (or with
//! `NO_COLOR`), so forced pretty output stays clean in a pipe.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use base64::Engine;
use serde_json::{Map, Value, json};

/// A response read completely, ready to print.
pub struct Shown {
    pub version: String,
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const STATUS_OK: Style = AnsiColor::Green.on_default().bold();
const STATUS_REDIRECT: Style = AnsiColor::Yellow.on_default().bold();
const STATUS_ERROR: Style = AnsiColor::Red.on_default().bold();
const HEADER_NAME: Style = AnsiColor::Cyan.on_default();
const KEY: Style = AnsiColor::Blue.on_default().bold();
const STRING: Style = AnsiColor::Green.on_default();
const NUMBER: Style = AnsiColor::Yellow.on_default();
const LITERAL: Style = AnsiColor::Magenta.on_default();
const NOTE: Style = Style::new().dimmed();

fn status_style(status: u16) -> Style {
    match status {
        200..=299 => STATUS_OK,
        300..=399 => STATUS_REDIRECT,
        _ => STATUS_ERROR,
    }
}

/// `HTTP/1.1 200 OK` and the headers, one per line.
pub fn write_head(out: &mut dyn Write, shown: &Shown) -> io::Result<()> {
    let s = status_style(shown.status);
    writeln!(
        out,
        "{} {s}{} {}{s:#}",
        shown.version, shown.status, shown.status_text
    )?;
    for (name, value) in &shown.headers {
        writeln!(out, "{HEADER_NAME}{name}{HEADER_NAME:#}: {value}")?;
    }
    Ok(())
}

/// The pretty form: head, a blank line, and the body (JSON indented and coloured, text as
/// is, binary as a note).
pub fn write_pretty(out: &mut dyn Write, shown: &Shown, with_head: bool) -> io::Result<()> {
    if with_head {
        write_head(out, shown)?;
        if !shown.body.is_empty() {
            writeln!(out)?;
        }
    }
    if shown.body.is_empty() {
        return Ok(());
    }
    if let Ok(value) = serde_json::from_slice::<Value>(&shown.body) {
        let mut text = String::new();
        colour_json(&mut text, &value, 0);
        return writeln!(out, "{text}");
    }
    match std::str::from_utf8(&shown.body) {
        Ok(text) => {
            write!(out, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(())
        }
        Err(_) => writeln!(
            out,
            "{NOTE}[binary body, {} bytes, not shown; pipe it to a file or use `ferry download`]{NOTE:#}",
            shown.body.len()
        ),
    }
}

/// Indented JSON with styled keys and values.
pub fn colour_json(out: &mut String, value: &Value, depth: usize) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&format!("{KEY}{}{KEY:#}: ", Value::String(k.clone())));
                colour_json(out, v, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                colour_json(out, v, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::String(_) => out.push_str(&format!("{STRING}{value}{STRING:#}")),
        Value::Number(_) => out.push_str(&format!("{NUMBER}{value}{NUMBER:#}")),
        Value::Bool(_) | Value::Null => out.push_str(&format!("{LITERAL}{value}{LITERAL:#}")),
        // Empty object or array.
        _ => out.push_str(&value.to_string()),
    }
}

/// The `--json` document: `{status, status_text, headers, body}` where `body` is the parsed
/// JSON, else the text, else `null` with the bytes in `body_base64`. Repeated headers
/// become arrays.
pub fn document(shown: &Shown) -> Value {
    let mut headers = Map::new();
    for (name, value) in &shown.headers {
        match headers.get_mut(name) {
            Some(Value::Array(list)) => list.push(Value::String(value.clone())),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value.clone())]);
            }
            None => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let mut doc = json!({
        "status": shown.status,
        "status_text": shown.status_text,
        "headers": headers,
    });
    let body = if shown.body.is_empty() {
        Value::String(String::new())
    } else if let Ok(v) = serde_json::from_slice::<Value>(&shown.body) {
        v
    } else if let Ok(text) = std::str::from_utf8(&shown.body) {
        Value::String(text.to_string())
    } else {
        doc["body_base64"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(&shown.body));
        Value::Null
    };
    doc["body"] = body;
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(body: &[u8]) -> Shown {
        Shown {
            version: "HTTP/1.1".into(),
            status: 200,
            status_text: "OK".into(),
            headers: vec![
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2".into()),
                ("content-type".into(), "x".into()),
            ],
            body: body.to_vec(),
        }
    }

    #[test]
    fn document_forms() {
        let d = document(&shown(b"{\"a\":1}"));
        assert_eq!(d["body"], json!({"a": 1}));
        assert_eq!(d["headers"]["set-cookie"], json!(["a=1", "b=2"]));
        assert_eq!(document(&shown(b"hi"))["body"], "hi");
        let bin = document(&shown(&[0xff, 0x00]));
        assert_eq!(bin["body"], Value::Null);
        assert_eq!(bin["body_base64"], "/wA=");
    }

    #[test]
    fn pretty_json_without_colours_is_plain_indented_json() {
        let mut out = Vec::new();
        write_pretty(
            &mut anstream::StripStream::new(&mut out),
            &shown(b"{\"a\":[1,true],\"b\":{}}"),
            true,
        )
        .expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("HTTP/1.1 200 OK\nset-cookie: a=1\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\n{\n  \"a\": [\n    1,\n    true\n  ],\n  \"b\": {}\n}\n"),
            "{text}"
        );
    }
}
