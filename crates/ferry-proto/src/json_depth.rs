//! Nesting depth of a JSON text, for the publication `data` depth limit.
//!
//! serde_json refuses nesting beyond 128 while parsing, but `data` is kept as raw text and
//! handed to every subscriber's parser, some of which (browsers' `JSON.parse` included)
//! recurse on nesting; the hub's own limit is lower and configurable.

/// The nesting depth of the arrays and objects in `json`: `1` is 0, `[]` and `{}` are 1,
/// `{"a":[1]}` is 2. Stops counting once `max` is exceeded and returns `max + 1`, so a
/// deep text costs no more than a shallow one to refuse. `json` is assumed to be valid
/// JSON (brackets inside strings are not counted).
pub fn json_depth(json: &str, max: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > max {
                        return max + 1;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_outside_strings() {
        assert_eq!(json_depth("1", 32), 0);
        assert_eq!(json_depth("[]", 32), 1);
        assert_eq!(json_depth(r#"{"a":[1,{"b":[]}]}"#, 32), 4);
        assert_eq!(json_depth(r#"["[[[[", "\"{{{{"]"#, 32), 1);
        assert_eq!(json_depth(r#"[[1],[2],[3]]"#, 32), 2);
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(json_depth(&deep, 32), 33);
        let exact = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(json_depth(&exact, 32), 32);
    }
}
