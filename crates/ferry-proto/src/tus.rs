//! tus 1.0.0 resumable-upload rules (<https://tus.io/protocols/resumable-upload>), sans-IO:
//! header parsing and encoding, upload IDs and file names a server may accept, the offset
//! check of a `PATCH`, and byte ranges for downloads. The hub's `/files/` transport and
//! the client's `Upload` both use these, so the wire format has one definition.
//!
//! Every parser takes the header's text and returns a value or a [`TusError`] that knows
//! its HTTP status; nothing here panics on peer input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The only protocol version spoken (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";

/// The extensions the ferry server implements, as `Tus-Extension` lists them.
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation";

/// Checksum algorithms accepted in `Upload-Checksum` (`Tus-Checksum-Algorithm`).
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// The content type every `PATCH` (and creation-with-upload `POST`) body must carry.
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// Status a server answers when an `Upload-Checksum` does not match the bytes (tus
/// checksum extension).
pub const STATUS_CHECKSUM_MISMATCH: u16 = 460;

/// Longest upload ID accepted: IDs are made by the server; anything longer is hostile.
pub const MAX_ID_LEN: usize = 64;

/// Longest file name (bytes of UTF-8) accepted in metadata.
pub const MAX_NAME_LEN: usize = 255;

/// Largest `Upload-Metadata` header accepted, in bytes.
pub const MAX_METADATA_LEN: usize = 4096;

/// Why a tus request is refused. [`TusError::status`] is the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// `Tus-Resumable` is missing or names another version (412).
    #[error("unsupported tus version {0:?}; this server speaks Tus-Resumable: 1.0.0")]
    UnsupportedVersion(String),
    /// A header is missing or malformed (400).
    #[error("invalid {header} header: {reason}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `Upload-Offset` is not where the upload stands (409).
    #[error("Upload-Offset {got} does not match the upload's offset {expected}")]
    OffsetMismatch {
        /// The server's offset.
        expected: u64,
        /// The offset the client sent.
        got: u64,
    },
    /// A `PATCH` body without `Content-Type: application/offset+octet-stream` (415).
    #[error("Content-Type must be application/offset+octet-stream")]
    ContentType,
    /// The checksum algorithm is not one of [`CHECKSUM_ALGORITHMS`] (400).
    #[error("unsupported checksum algorithm {0:?}; use sha1 or sha256")]
    UnsupportedChecksum(String),
    /// The bytes received do not hash to `Upload-Checksum` (460).
    #[error("checksum mismatch: the chunk was discarded, send it again")]
    ChecksumMismatch,
    /// More bytes than `Upload-Length`, or more than the server allows (413).
    #[error("{0}")]
    TooLarge(String),
}

impl TusError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            TusError::UnsupportedVersion(_) => 412,
            TusError::InvalidHeader { .. } | TusError::UnsupportedChecksum(_) => 400,
            TusError::OffsetMismatch { .. } => 409,
            TusError::ContentType => 415,
            TusError::ChecksumMismatch => STATUS_CHECKSUM_MISMATCH,
            TusError::TooLarge(_) => 413,
        }
    }
}

fn invalid(header: &'static str, reason: impl Into<String>) -> TusError {
    TusError::InvalidHeader {
        header,
        reason: reason.into(),
    }
}

/// Check `Tus-Resumable` (required on every request but `OPTIONS`).
pub fn check_version(value: Option<&str>) -> Result<(), TusError> {
    match value.map(str::trim) {
        Some(TUS_VERSION) => Ok(()),
        other => Err(TusError::UnsupportedVersion(
            other.unwrap_or("(missing)").to_string(),
        )),
    }
}

/// Parse a non-negative decimal header value (`Upload-Offset`, `Upload-Length`): ASCII
/// digits only, no sign, no spaces inside, within `u64`.
pub fn parse_u64(header: &'static str, value: &str) -> Result<u64, TusError> {
    let value = value.trim();
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(header, "expected a non-negative decimal integer"));
    }
    value
        .parse::<u64>()
        .map_err(|_| invalid(header, "number out of range"))
}

/// One `Upload-Metadata` pair: a key and its decoded value (a key may have no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPair {
    /// The key: ASCII, no spaces or commas.
    pub key: String,
    /// The value, base64-decoded; `None` when the pair has no value.
    pub value: Option<Vec<u8>>,
}

/// Parse `Upload-Metadata`: comma-separated `key base64value` pairs, keys unique.
pub fn parse_metadata(value: &str) -> Result<Vec<MetadataPair>, TusError> {
    const H: &str = "Upload-Metadata";
    if value.len() > MAX_METADATA_LEN {
        return Err(invalid(H, format!("longer than {MAX_METADATA_LEN} bytes")));
    }
    let mut pairs: Vec<MetadataPair> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut parts = item.split(' ');
        let key = parts.next().unwrap_or_default();
        let encoded = parts.next();
        if parts.next().is_some() {
            return Err(invalid(H, format!("pair {item:?} has more than two parts")));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(invalid(H, format!("invalid key {key:?}")));
        }
        if pairs.iter().any(|p| p.key == key) {
            return Err(invalid(H, format!("key {key:?} appears twice")));
        }
        let decoded = match encoded {
            None | Some("") => None,
            Some(e) => Some(
                STANDARD
                    .decode(e)
                    .map_err(|_| invalid(H, format!("value of {key:?} is not base64")))?,
            ),
        };
        pairs.push(MetadataPair {
            key: key.to_string(),
            value: decoded,
        });
    }
    Ok(pairs)
}

/// Encode `Upload-Metadata` from key/value pairs (keys must be valid, see
/// [`parse_metadata`]).
pub fn encode_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A checksum algorithm of the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1 (20-byte digest).
    Sha1,
    /// SHA-256 (32-byte digest).
    Sha256,
}

impl ChecksumAlgorithm {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
        }
    }
    fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

/// A parsed `Upload-Checksum: ALGORITHM BASE64DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The expected digest.
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parse the header value.
    pub fn parse(value: &str) -> Result<Checksum, TusError> {
        const H: &str = "Upload-Checksum";
        let (name, encoded) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| invalid(H, "expected `ALGORITHM BASE64DIGEST`"))?;
        let algorithm = match name.to_ascii_lowercase().as_str() {
            "sha1" => ChecksumAlgorithm::Sha1,
            "sha256" => ChecksumAlgorithm::Sha256,
            _ => return Err(TusError::UnsupportedChecksum(name.to_string())),
        };
        let digest = STANDARD
            .decode(encoded.trim())
            .map_err(|_| invalid(H, "digest is not base64"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid(
                H,
                format!("a {} digest has {} bytes", name, algorithm.digest_len()),
            ));
        }
        Ok(Checksum { algorithm, digest })
    }

    /// The header value for `digest`.
    pub fn header_value(algorithm: ChecksumAlgorithm, digest: &[u8]) -> String {
        format!("{} {}", algorithm.as_str(), STANDARD.encode(digest))
    }
}

/// A parsed `Upload-Concat` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: this upload is a part of a later final upload.
    Partial,
    /// `final;URL URL ...`: the upload IDs (last path segment of each URL) in order.
    Final(Vec<String>),
}

impl Concat {
    /// Parse the header value; every part must name a valid upload ID.
    pub fn parse(value: &str) -> Result<Concat, TusError> {
        const H: &str = "Upload-Concat";
        let value = value.trim();
        if value == "partial" {
            return Ok(Concat::Partial);
        }
        let Some(urls) = value.strip_prefix("final;") else {
            return Err(invalid(H, "expected `partial` or `final;URL URL ...`"));
        };
        let mut ids = Vec::new();
        for url in urls.split(' ').filter(|u| !u.is_empty()) {
            // A part names an upload by its URL; dot segments never do.
            if url
                .split('/')
                .any(|segment| segment == ".." || segment == ".")
            {
                return Err(invalid(H, format!("{url:?} has a dot segment")));
            }
            let id = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if !valid_upload_id(id) {
                return Err(invalid(H, format!("{url:?} names no valid upload")));
            }
            ids.push(id.to_string());
        }
        if ids.is_empty() {
            return Err(invalid(H, "a final upload needs at least one part"));
        }
        Ok(Concat::Final(ids))
    }
}

/// Whether `id` may name an upload: 1 to [`MAX_ID_LEN`] characters from `[A-Za-z0-9_-]`.
/// Anything else (`..`, `/`, NUL, percent-escapes, non-ASCII look-alikes) is refused
/// before it comes near a file path.
pub fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why [`check_file_name`] refused a name; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFileName(pub String);

/// Check a client-supplied file name (metadata `filename`/`name`, a multipart part's
/// file name). The name is only ever shown and put in `Content-Disposition`, never used as
/// a path, but a hostile one is refused anyway: empty, longer than [`MAX_NAME_LEN`]
/// bytes, `.`/`..`, containing `/`, `\`, NUL or other control characters, or Unicode
/// bidirectional and invisible formatting characters that disguise an extension.
pub fn check_file_name(name: &str) -> Result<(), BadFileName> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(BadFileName(format!(
            "file name must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if name == "." || name == ".." {
        return Err(BadFileName("file name may not be . or ..".into()));
    }
    for c in name.chars() {
        let refused = c == '/'
            || c == '\\'
            || c.is_control()
            || matches!(c,
                '\u{200B}'..='\u{200F}'      // zero-width spaces, LRM, RLM
                | '\u{202A}'..='\u{202E}'    // bidi embeddings and overrides
                | '\u{2066}'..='\u{2069}'    // bidi isolates
                | '\u{FEFF}'                 // zero-width no-break space
                | '\u{2215}' | '\u{2044}' | '\u{FF0F}' | '\u{29F8}' // slash look-alikes
            );
        if refused {
            return Err(BadFileName(format!(
                "file name contains a forbidden character U+{:04X}",
                c as u32
            )));
        }
    }
    Ok(())
}

/// Check a `PATCH`'s `Upload-Offset` against the upload's `offset`.
pub fn check_offset(offset: u64, requested: u64) -> Result<(), TusError> {
    if offset == requested {
        Ok(())
    } else {
        Err(TusError::OffsetMismatch {
            expected: offset,
            got: requested,
        })
    }
}

/// What a `Range` request header asks of a resource of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, not `bytes=`, or several ranges): send everything (200).
    Full,
    /// One satisfiable range, inclusive `start..=end` (206).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// No range overlaps the resource (416 with `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Interpret a `Range` header (RFC 9110 §14) for a resource of `len` bytes. Only one
/// range is served; a header with several is answered with the whole resource, which
/// the RFC allows. A malformed header is ignored (200), as the RFC says.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| parse_u64("Range", s).ok();
    match (first.trim(), last.trim()) {
        ("", "") => RangeRequest::Full,
        ("", suffix) => match num(suffix) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (start, end) => {
            let Some(start) = num(start) else {
                return RangeRequest::Full;
            };
            let end = if end.is_empty() {
                u64::MAX
            } else {
                match num(end) {
                    Some(e) if e >= start => e,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_round_trips_and_rejects_junk() {
        let header = encode_metadata([("filename", "ä b.txt".as_bytes()), ("x", b"".as_slice())]);
        let pairs = parse_metadata(&format!("{header},flag")).expect("parse");
        assert_eq!(pairs[0].key, "filename");
        assert_eq!(pairs[0].value.as_deref(), Some("ä b.txt".as_bytes()));
        assert_eq!(pairs[2].value, None);
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
        assert!(parse_metadata("a YQ== YQ==").is_err());
        assert!(parse_metadata(&"k ".repeat(3000)).is_err());
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u64("Upload-Offset", "42"), Ok(42));
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            "0x10",
            "99999999999999999999999",
            "1 2",
        ] {
            assert!(parse_u64("Upload-Offset", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums_parse_with_exact_digest_lengths() {
        let ok = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").expect("sha1");
        assert_eq!(ok.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(
            Checksum::parse("md5 AAAA").map_err(|e| e.status()),
            Err(400)
        );
        assert!(Checksum::parse("sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").is_err());
        assert!(Checksum::parse("sha1").is_err());
    }

    #[test]
    fn concat_takes_ids_from_urls() {
        assert_eq!(Concat::parse("partial"), Ok(Concat::Partial));
        assert_eq!(
            Concat::parse("final;/files/a1 http://h/files/b2"),
            Ok(Concat::Final(vec!["a1".into(), "b2".into()]))
        );
        assert!(Concat::parse("final;/files/../etc").is_err());
        assert!(Concat::parse("final;").is_err());
        assert!(Concat::parse("whole").is_err());
    }

    #[test]
    fn hostile_ids_and_names_are_refused() {
        assert!(valid_upload_id("a1B2-c_3"));
        for bad in ["", "..", "a/b", "a\0b", "a%2e", "ａ", &"a".repeat(65)] {
            assert!(!valid_upload_id(bad), "{bad:?}");
        }
        assert!(check_file_name("report 2024.pdf").is_ok());
        assert!(check_file_name("ünïcødé.txt").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a\\b",
            "a\0b",
            "a\nb",
            "evil\u{202E}fdp.exe",
            "a\u{2215}b",
            &"n".repeat(256),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        // (Range header, resource length, what it asks for)
        let cases = [
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Partial { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Partial { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Partial { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Partial { start: 0, end: 9 }),
            (Some("bytes=8-100"), 10, Partial { start: 8, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
        ];
        for (header, len, expected) in cases {
            assert_eq!(parse_range(header, len), expected, "{header:?} of {len}");
        }
    }

    proptest! {
        #[test]
        fn range_parsing_never_panics_and_stays_in_bounds(s in ".{0,40}", len in 0u64..1000) {
            if let RangeRequest::Partial { start, end } = parse_range(Some(&s), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn metadata_parsing_never_panics(s in ".{0,200}") {
            let _ = parse_metadata(&s);
            let _ = Checksum::parse(&s);
            let _ = Concat::parse(&s);
        }
    }
}
