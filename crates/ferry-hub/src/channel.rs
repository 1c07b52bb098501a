//! Channel names: `[namespace:]name[#user1,user2]`.
//!
//! - `lobby` is in the default namespace; `chat:lobby` in namespace `chat`.
//! - A `#` makes a *user channel*: only the users listed after it (comma-separated) may
//!   subscribe or publish, e.g. `chat:dm#alice,bob` for a private conversation, or
//!   `#alice` for alice's personal channel in the default namespace.

use ferry_proto::ErrorCode;

use crate::error::{HubError, HubResult};

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A parsed channel name; borrows the original string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    /// The full name.
    pub full: &'a str,
    /// The namespace, `None` for the default namespace.
    pub namespace: Option<&'a str>,
    /// The users allowed on a user channel (the part after `#`), `None` otherwise.
    pub users: Option<&'a str>,
}

/// Unicode general category Cf (format characters, Unicode 16): bidi overrides and
/// isolates (U+202A–202E, U+2066–2069), zero-width characters (U+200B–200F, U+2060–2064,
/// U+FEFF), the soft hyphen and the like. They are invisible, so two channel names that
/// look the same could differ, and a bidi override can make a name display as another.
/// The table is short and stable; the standard library has no category lookup.
fn is_format_char(c: char) -> bool {
    const CF: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let c = u32::from(c);
    CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

impl<'a> ChannelName<'a> {
    /// Parse and validate a channel name. Fails with `UNKNOWN_CHANNEL` for empty names, names
    /// over [`MAX_CHANNEL_LEN`] bytes, control characters or whitespace, invisible format
    /// characters (Unicode category Cf, e.g. U+202E, U+200B), or an empty namespace.
    pub fn parse(full: &'a str) -> HubResult<ChannelName<'a>> {
        if full.is_empty() || full.len() > MAX_CHANNEL_LEN {
            return Err(HubError::new(
                ErrorCode::UnknownChannel,
                format!("channel names are 1 to {MAX_CHANNEL_LEN} bytes"),
            ));
        }
        if full.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(HubError::new(
                ErrorCode::UnknownChannel,
                "channel names may not contain whitespace or control characters",
            ));
        }
        if let Some(c) = full.chars().find(|&c| is_format_char(c)) {
            return Err(HubError::new(
                ErrorCode::UnknownChannel,
                format!(
                    "channel names may not contain invisible formatting characters \
                     (bidi controls, zero-width characters); found U+{:04X}",
                    u32::from(c)
                ),
            ));
        }
        let (before_users, users) = match full.split_once('#') {
            Some((b, u)) => (b, Some(u)),
            None => (full, None),
        };
        let namespace = match before_users.split_once(':') {
            Some(("", _)) => {
                return Err(HubError::new(
                    ErrorCode::UnknownChannel,
                    format!("channel `{full}` has an empty namespace"),
                ));
            }
            Some((ns, _)) => Some(ns),
            None => None,
        };
        Ok(ChannelName {
            full,
            namespace,
            users,
        })
    }

    /// Whether `user` is one of the users of a user channel. False for anonymous (empty).
    pub fn user_allowed(&self, user: &str) -> bool {
        match self.users {
            None => true,
            Some(list) => !user.is_empty() && list.split(',').any(|u| u == user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_user_channels() {
        let c = ChannelName::parse("chat:lobby").expect("valid");
        assert_eq!(c.namespace, Some("chat"));
        assert_eq!(c.users, None);
        let c = ChannelName::parse("lobby").expect("valid");
        assert_eq!(c.namespace, None);
        let c = ChannelName::parse("chat:dm#alice,bob").expect("valid");
        assert!(c.user_allowed("alice") && c.user_allowed("bob"));
        assert!(!c.user_allowed("eve") && !c.user_allowed(""));
        let c = ChannelName::parse("#alice").expect("valid");
        assert_eq!(c.namespace, None);
        assert!(c.user_allowed("alice"));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            ":x",
            "a b",
            "tab\there",
            &"x".repeat(300),
            "chat:evil\u{202E}gpj.exe",
            "chat:zero\u{200B}width",
            "chat:\u{2066}isolate\u{2069}",
            "\u{FEFF}bom",
        ] {
            let e = ChannelName::parse(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::UnknownChannel);
        }
    }
}
