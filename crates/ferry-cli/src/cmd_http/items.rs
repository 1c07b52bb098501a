//! HTTPie-style request items: `Header:value`, `key==query`, `key=value`, `key:=json`,
//! `field@file`. The separator that occurs first wins (the longer one at the same place);
//! a backslash escapes a separator character in a key.

use std::path::PathBuf;

use serde_json::Value;

/// One request item from the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `Name:value`: a request header (`Name:` sends it empty).
    Header(String, String),
    /// `key==value`: a query parameter.
    Query(String, String),
    /// `key=value`: a string field of the body.
    Data(String, String),
    /// `key:=json`: a raw JSON field of the body.
    Json(String, Value),
    /// `field@path`: a file in a multipart body.
    File(String, PathBuf),
}

const SEPARATORS: [&str; 5] = [":=", "==", "=", ":", "@"];

/// Parse one item. Errors say what was expected.
pub fn parse(arg: &str) -> Result<Item, String> {
    let bytes = arg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if let Some(sep) = SEPARATORS.iter().find(|s| arg[i..].starts_with(**s)) {
            let key = unescape(&arg[..i]);
            let value = &arg[i + sep.len()..];
            if key.is_empty() {
                return Err(format!("{arg:?}: the name before {sep:?} is empty"));
            }
            return Ok(match *sep {
                ":=" => Item::Json(
                    key,
                    serde_json::from_str(value)
                        .map_err(|e| format!("{arg:?}: the value after := is not JSON: {e}"))?,
                ),
                "==" => Item::Query(key, value.to_string()),
                "=" => Item::Data(key, value.to_string()),
                ":" => Item::Header(key, value.to_string()),
                _ => Item::File(key, PathBuf::from(value)),
            });
        }
        // Separators are ASCII: stepping over a UTF-8 continuation byte never splits one.
        i += 1;
        while i < bytes.len() && !arg.is_char_boundary(i) {
            i += 1;
        }
    }
    Err(format!(
        "{arg:?} is not a request item; use Header:value, key==query, key=value, key:=json or field@file"
    ))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(s: &str) -> Item {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn each_kind() {
        assert_eq!(
            ok("X-Api-Key:abc"),
            Item::Header("X-Api-Key".into(), "abc".into())
        );
        assert_eq!(ok("Accept:"), Item::Header("Accept".into(), String::new()));
        assert_eq!(ok("page==2"), Item::Query("page".into(), "2".into()));
        assert_eq!(ok("name=Ada"), Item::Data("name".into(), "Ada".into()));
        assert_eq!(
            ok("tags:=[1,\"x\"]"),
            Item::Json("tags".into(), json!([1, "x"]))
        );
        assert_eq!(
            ok("doc@/tmp/a b.txt"),
            Item::File("doc".into(), "/tmp/a b.txt".into())
        );
    }

    #[test]
    fn first_separator_wins() {
        assert_eq!(
            ok("url==http://x/?a=b"),
            Item::Query("url".into(), "http://x/?a=b".into())
        );
        assert_eq!(
            ok("email=a@b.c"),
            Item::Data("email".into(), "a@b.c".into())
        );
        assert_eq!(
            ok("Time:12:00"),
            Item::Header("Time".into(), "12:00".into())
        );
        assert_eq!(ok("eq==="), Item::Query("eq".into(), "=".into()));
    }

    #[test]
    fn escapes_and_unicode() {
        assert_eq!(ok("a\\:b=c"), Item::Data("a:b".into(), "c".into()));
        assert_eq!(ok("clé=été"), Item::Data("clé".into(), "été".into()));
    }

    #[test]
    fn errors() {
        assert!(parse("plain").is_err());
        assert!(parse("=value").is_err());
        assert!(parse("n:={bad").unwrap_err().contains("not JSON"));
    }
}
