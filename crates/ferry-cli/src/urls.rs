//! One set of URL shorthands for every command, HTTPie's: `:8080/path` is
//! `localhost:8080/path`, a URL without a scheme gets the command's scheme, and a hub
//! command given the other family's scheme (`http://` for `ferry sub`, `ws://` for
//! `ferry pub`) gets its own.

/// What a command talks: HTTP (`get`, `pub`, `history`, ...) or WebSocket (`ws`, `sub`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `http://` / `https://`.
    Http,
    /// `ws://` / `wss://`.
    Ws,
}

/// Complete `raw` the same way for every command: `:8080/x` → `SCHEME://localhost:8080/x`,
/// `host:port/x` → `SCHEME://host:port/x`; `http(s)://` and `ws(s)://` are switched to
/// the command's family, other schemes are left for the command to refuse.
pub fn complete(raw: &str, family: Family) -> String {
    let (plain, secure) = match family {
        Family::Http => ("http", "https"),
        Family::Ws => ("ws", "wss"),
    };
    if let Some(rest) = raw.strip_prefix(':') {
        return format!("{plain}://localhost:{rest}");
    }
    match raw.split_once("://") {
        None => format!("{plain}://{raw}"),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => format!("{plain}://{rest}"),
            "https" | "wss" => format!("{secure}://{rest}"),
            _ => raw.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_reads_the_same_shorthands() {
        assert_eq!(complete(":8080/x", Family::Http), "http://localhost:8080/x");
        assert_eq!(complete(":8080", Family::Ws), "ws://localhost:8080");
        assert_eq!(
            complete("127.0.0.1:1/y", Family::Http),
            "http://127.0.0.1:1/y"
        );
        assert_eq!(complete("https://h/z", Family::Http), "https://h/z");
        assert_eq!(complete("http://h:1", Family::Ws), "ws://h:1");
        assert_eq!(complete("wss://h", Family::Http), "https://h");
        assert_eq!(complete("ftp://h", Family::Http), "ftp://h");
    }
}
