//! The fast path's request side: is a request head one it forwards, and the head the
//! backend gets for it.

use std::io::Write as _;

use super::{Framing, MAX_HEADERS};
use crate::config::Policy;
use crate::forward::{self, ClientAddr, FORWARDING, Worker};

/// A request the fast path forwards, with its head for the backend already written.
pub(super) struct Plan {
    /// Bytes of the client's head, to skip in the connection's buffer.
    pub(super) head_len: usize,
    pub(super) body: Framing,
    /// Idempotent, without a body: may go to another backend when one fails.
    pub(super) retryable: bool,
    /// The client did not ask to close the connection after this request.
    pub(super) keep_alive: bool,
    /// `HEAD`: the answer has no body whatever its headers say.
    pub(super) head_only: bool,
    /// Consistent hashing's key (empty under other policies).
    pub(super) key: Vec<u8>,
}

pub(super) enum Parsed {
    Request(Plan),
    Partial,
    /// Not for the fast path (see the module's documentation).
    Other,
}

/// Parse the request head at the start of `buf` and write the backend's head into `out`.
pub(super) fn plan(buf: &[u8], out: &mut Vec<u8>, client: &ClientAddr, worker: &Worker) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') {
        return Parsed::Other;
    }
    let headers: &[httparse::Header<'_>] = req.headers;
    let mut length = None;
    let mut chunked = false;
    let mut host = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match parse_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Parsed::Other;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Parsed::Other;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Parsed::Other;
        }
    }
    let Some(host) = host else {
        return Parsed::Other;
    };
    let body = match (chunked, length) {
        (true, Some(_)) => return Parsed::Other,
        (true, None) => Framing::Chunked,
        (false, None | Some(0)) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let shared = &*worker.shared;
    let https = shared.config.tls.enabled();

    out.clear();
    for part in [method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    for h in headers {
        // The framing is written once below: a repeated `Content-Length` becomes one.
        if forward::is_hop_by_hop(h.name)
            || FORWARDING.iter().any(|f| f.eq_ignore_ascii_case(h.name))
            || h.name.eq_ignore_ascii_case("content-length")
            || forward::named_in_connection(headers, h.name)
        {
            continue;
        }
        for part in [h.name.as_bytes(), b": ", h.value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    let came_in = |name: &str| headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
    out.extend_from_slice(b"x-forwarded-for: ");
    forward::forwarded_for(out, client, came_in(FORWARDING[0]).map(|h| h.value));
    out.extend_from_slice(b"\r\nforwarded: ");
    forward::forwarded(
        out,
        client,
        came_in(FORWARDING[1]).map(|h| h.value),
        Some(host),
        https,
    );
    for part in [
        b"\r\nx-forwarded-proto: ".as_slice(),
        forward::scheme(https).as_bytes(),
        b"\r\nx-forwarded-host: ",
        host,
        b"\r\n",
    ] {
        out.extend_from_slice(part);
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(n) = length {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let key = match shared.config.policy {
        Policy::ConsistentHash => forward::hash_key(&shared.config.hash_key, headers, client),
        _ => Vec::new(),
    };
    Parsed::Request(Plan {
        head_len,
        body,
        retryable: body == Framing::Empty
            && matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE" | "TRACE"),
        keep_alive: !forward::named_in_connection(headers, "close"),
        head_only: method == "HEAD",
        key,
    })
}

/// A `Content-Length` value: digits only (at most 19, so it fits), blanks around them.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::h1::test_worker;

    fn peer() -> ClientAddr {
        ClientAddr::new("192.0.2.7:5000".parse().expect("addr"))
    }

    /// A request head from parts a client could send, hop-by-hop fields and all.
    fn head() -> impl Strategy<Value = String> {
        let method = prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PATCH")];
        let target = "/[a-z0-9/?=&%.-]{0,30}";
        let field = prop_oneof![
            ("x-[a-z]{1,8}", "[ -~]{0,20}").prop_map(|(k, v)| format!("{k}: {}", v.trim())),
            Just("Connection: keep-alive, x-hop".to_string()),
            Just("Connection: host".to_string()),
            Just("X-Hop: 1".to_string()),
            Just("Keep-Alive: timeout=5".to_string()),
            Just("TE: trailers".to_string()),
            Just("X-Forwarded-For: 10.1.2.3".to_string()),
            Just("Forwarded: for=10.1.2.3".to_string()),
            Just("Content-Length: 3".to_string()),
            Just("Transfer-Encoding: chunked".to_string()),
        ];
        (method, target, proptest::collection::vec(field, 0..8)).prop_map(|(m, t, fields)| {
            let mut head = format!("{m} {t} HTTP/1.1\r\nHost: example.test\r\n");
            for f in fields {
                head.push_str(&f);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            head
        })
    }

    proptest! {
        /// Whatever the fast path takes, the backend gets a valid HTTP/1.1 head with the
        /// same method and target, this hop's forwarding fields, no hop-by-hop field, and
        /// exactly one way to delimit the body.
        #[test]
        fn the_backend_head_is_valid_and_carries_no_hop_by_hop_field(head in head()) {
            let worker = test_worker();
            let mut out = Vec::new();
            let Parsed::Request(plan) = plan(head.as_bytes(), &mut out, &peer(), &worker) else {
                // Conflicting framing goes to hyper; nothing else here may.
                prop_assert!(head.contains("Content-Length") && head.contains("Transfer-Encoding")
                    || head.matches("Content-Length").count() > 1
                    || head.matches("Transfer-Encoding").count() > 1, "{head}");
                return Ok(());
            };
            prop_assert_eq!(plan.head_len, head.len());
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut fields);
            prop_assert_eq!(req.parse(&out), Ok(httparse::Status::Complete(out.len())));
            let first = head.lines().next().unwrap_or_default().to_string();
            prop_assert_eq!(format!("{} {} HTTP/1.1", req.method.unwrap_or(""), req.path.unwrap_or("")), first);
            let names: Vec<String> = req.headers.iter().map(|h| h.name.to_ascii_lowercase()).collect();
            // `X-Hop` is hop-by-hop only where `Connection` names it.
            let named = head.contains("x-hop\r\n");
            for hop in ["connection", "keep-alive", "te", "x-hop"] {
                if hop == "x-hop" && !named {
                    continue;
                }
                prop_assert!(!names.iter().any(|n| n == hop), "{hop} in {names:?}");
            }
            let value = |name: &str| {
                req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec())
            };
            let xff = value("x-forwarded-for").unwrap_or_default();
            prop_assert!(xff.ends_with(b"192.0.2.7"), "{:?}", String::from_utf8_lossy(&xff));
            prop_assert_eq!(value("x-forwarded-proto"), Some(b"http".to_vec()));
            prop_assert_eq!(value("host"), Some(b"example.test".to_vec()));
            let framings = names.iter().filter(|n| *n == "content-length" || *n == "transfer-encoding").count();
            prop_assert_eq!(framings, usize::from(plan.body != Framing::Empty || head.contains("Content-Length")));
        }

        /// Any bytes at all: a plan, more bytes wanted, or hyper's turn; never a panic.
        #[test]
        fn any_bytes_are_planned_or_handed_on(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let worker = test_worker();
            let _ = plan(&bytes, &mut Vec::new(), &peer(), &worker);
        }
    }
}
