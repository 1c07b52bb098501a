//! LAN discovery (SPEC L1–L3): what a hub advertises and the UDP broadcast fallback's
//! request and reply. One definition for the hub (which announces) and the client (which
//! finds); sans-IO like the rest of this crate.
//!
//! A hub advertises one [`HubRecord`] two ways:
//! - as a DNS-SD service of type [`SERVICE_TYPE`] over mDNS, the record's fields in the
//!   TXT record ([`HubRecord::txt`]) and the port in the SRV record;
//! - to a UDP broadcast probe on [`DEFAULT_BROADCAST_PORT`]: the request is
//!   [`REQUEST_MAGIC`] padded to [`REQUEST_LEN`] bytes ([`encode_request`]), the reply
//!   is [`REPLY_MAGIC`] followed by the same `key=value` pairs as the TXT record plus
//!   `port` ([`HubRecord::encode_reply`]), never longer than the request.
//!
//! See docs/PROTOCOL.md, "LAN discovery", for the normative text.

use std::fmt;

/// The DNS-SD service type hubs register (`_ferry._tcp.local.`).
pub const SERVICE_TYPE: &str = "_ferry._tcp.local.";

/// The UDP port the broadcast responder listens on by default.
pub const DEFAULT_BROADCAST_PORT: u16 = 47471;

/// First line of a broadcast probe, version 1.
pub const REQUEST_MAGIC: &[u8] = b"FERRY-DISCOVER/1\n";

/// First line of a broadcast reply, version 1.
pub const REPLY_MAGIC: &[u8] = b"FERRY-HUB/1\n";

/// Length of a probe: the magic line, then zero padding. A responder ignores shorter
/// datagrams and never replies with more bytes than the probe carried, so the fallback
/// cannot be used to amplify traffic.
pub const REQUEST_LEN: usize = 256;

/// Longest node name, in bytes (one DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// What a hub says about itself: the TXT record's fields and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRecord {
    /// The node name (DNS-SD instance name), e.g. `kitchen-hub`.
    pub name: String,
    /// The TCP port of the hub's HTTP/WebSocket listener.
    pub port: u16,
    /// The WebSocket path, `/ws`.
    pub path: String,
    /// Whether the listener speaks TLS (`wss://`).
    pub tls: bool,
    /// The hub's version (`ferry` package version).
    pub version: String,
    /// The WebSocket subprotocols it speaks, e.g. `ferry.json`.
    pub protocols: Vec<String>,
}

/// Why a reply or a TXT record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a reply of a version this client knows.
    #[error("not a ferry discovery reply (version 1)")]
    NotAReply,
    /// A required field is missing.
    #[error("discovery record without `{0}`")]
    Missing(&'static str),
    /// A field has a value that cannot be used.
    #[error("discovery record field `{field}` is invalid: {value:?}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// The value as received (lossy UTF-8).
        value: String,
    },
}

/// Why a node name cannot be announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node name {0:?}: use 1 to 63 bytes without control characters, `=` or `,`")]
pub struct InvalidName(pub String);

/// Check a node name: 1 to [`MAX_NAME_LEN`] bytes, no control characters, no `=` or `,`
/// (which would be ambiguous in the reply's `key=value` lines and in target URLs).
pub fn check_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| c.is_control() || c == '=' || c == ',');
    if ok {
        Ok(())
    } else {
        Err(InvalidName(name.to_string()))
    }
}

impl HubRecord {
    /// The TXT record's `key=value` pairs (everything but the port, which is in SRV).
    pub fn txt(&self) -> Vec<(&'static str, String)> {
        vec![
            ("txtvers", "1".to_string()),
            ("name", self.name.clone()),
            ("version", self.version.clone()),
            ("path", self.path.clone()),
            ("tls", if self.tls { "1" } else { "0" }.to_string()),
            ("protocols", self.protocols.join(",")),
        ]
    }

    /// Rebuild a record from TXT pairs and the SRV port. Unknown keys are ignored;
    /// `name` and `path` are required.
    pub fn from_txt<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        port: u16,
    ) -> Result<HubRecord, RecordError> {
        let mut name = None;
        let mut path = None;
        let mut tls = false;
        let mut version = String::new();
        let mut protocols = Vec::new();
        for (key, value) in pairs {
            match key {
                "name" => {
                    check_name(value).map_err(|_| RecordError::Invalid {
                        field: "name",
                        value: value.to_string(),
                    })?;
                    name = Some(value.to_string());
                }
                "path" => {
                    if !value.starts_with('/') || value.chars().any(char::is_control) {
                        return Err(RecordError::Invalid {
                            field: "path",
                            value: value.to_string(),
                        });
                    }
                    path = Some(value.to_string());
                }
                "tls" => tls = value == "1" || value.eq_ignore_ascii_case("true"),
                "version" => version = value.chars().take(32).collect(),
                "protocols" => {
                    protocols = value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        if port == 0 {
            return Err(RecordError::Invalid {
                field: "port",
                value: "0".into(),
            });
        }
        Ok(HubRecord {
            name: name.ok_or(RecordError::Missing("name"))?,
            port,
            path: path.ok_or(RecordError::Missing("path"))?,
            tls,
            version,
            protocols,
        })
    }

    /// The broadcast reply: [`REPLY_MAGIC`], then `key=value\n` for every TXT pair and
    /// `port`.
    pub fn encode_reply(&self) -> Vec<u8> {
        let mut out = REPLY_MAGIC.to_vec();
        for (key, value) in self.txt() {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
        out.extend_from_slice(format!("port={}\n", self.port).as_bytes());
        out
    }

    /// Parse a broadcast reply.
    pub fn parse_reply(datagram: &[u8]) -> Result<HubRecord, RecordError> {
        let body = datagram
            .strip_prefix(REPLY_MAGIC)
            .ok_or(RecordError::NotAReply)?;
        let text = std::str::from_utf8(body).map_err(|_| RecordError::NotAReply)?;
        let mut port = None;
        let mut pairs = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key == "port" {
                port = Some(value.parse::<u16>().map_err(|_| RecordError::Invalid {
                    field: "port",
                    value: value.to_string(),
                })?);
            } else {
                pairs.push((key, value));
            }
        }
        HubRecord::from_txt(pairs, port.ok_or(RecordError::Missing("port"))?)
    }
}

impl fmt::Display for HubRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (port {}, path {})", self.name, self.port, self.path)
    }
}

/// A broadcast probe: [`REQUEST_MAGIC`] padded with zeros to [`REQUEST_LEN`] bytes.
pub fn encode_request() -> Vec<u8> {
    let mut out = REQUEST_MAGIC.to_vec();
    out.resize(REQUEST_LEN, 0);
    out
}

/// Whether `datagram` is a probe this responder answers (version 1, full length).
pub fn is_request(datagram: &[u8]) -> bool {
    datagram.len() >= REQUEST_LEN && datagram.starts_with(REQUEST_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> HubRecord {
        HubRecord {
            name: "kitchen hub".into(),
            port: 8080,
            path: "/ws".into(),
            tls: false,
            version: "0.1.0".into(),
            protocols: vec!["ferry.json".into()],
        }
    }

    #[test]
    fn reply_round_trips_and_fits_in_a_probe() {
        let r = record();
        let reply = r.encode_reply();
        assert!(reply.len() <= REQUEST_LEN, "{}", reply.len());
        assert_eq!(HubRecord::parse_reply(&reply), Ok(r));
        let longest = HubRecord {
            name: "n".repeat(MAX_NAME_LEN),
            version: "v".repeat(32),
            ..record()
        };
        assert!(longest.encode_reply().len() <= REQUEST_LEN);
    }

    #[test]
    fn txt_round_trips() {
        let r = record();
        let txt = r.txt();
        let parsed = HubRecord::from_txt(txt.iter().map(|(k, v)| (*k, v.as_str())), 8080);
        assert_eq!(parsed, Ok(r));
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        assert_eq!(
            HubRecord::parse_reply(b"HTTP/1.1 200 OK\r\n"),
            Err(RecordError::NotAReply)
        );
        assert_eq!(
            HubRecord::parse_reply(b"FERRY-HUB/1\nname=x\npath=/ws\n"),
            Err(RecordError::Missing("port"))
        );
        assert!(matches!(
            HubRecord::parse_reply(b"FERRY-HUB/1\nname=x\npath=ws\nport=1\n"),
            Err(RecordError::Invalid { field: "path", .. })
        ));
        assert!(matches!(
            HubRecord::parse_reply(b"FERRY-HUB/1\nname=x\npath=/ws\nport=99999\n"),
            Err(RecordError::Invalid { field: "port", .. })
        ));
        assert!(HubRecord::parse_reply(b"FERRY-HUB/1\n\xff\xfe").is_err());
    }

    #[test]
    fn probes_must_be_padded() {
        assert!(is_request(&encode_request()));
        assert!(!is_request(REQUEST_MAGIC));
        let mut v2 = b"FERRY-DISCOVER/2\n".to_vec();
        v2.resize(REQUEST_LEN, 0);
        assert!(!is_request(&v2));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("kitchen-hub").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a=b").is_err());
        assert!(check_name("line\nbreak").is_err());
        assert!(check_name(&"x".repeat(64)).is_err());
    }
}
