//! The one rule for paths inside a sync root, applied by the server to every request and
//! operation and by the client to every operation it receives, so a hostile peer can name
//! nothing outside the root on either side.

use std::fmt;

/// Longest path accepted, in bytes of UTF-8.
pub const MAX_PATH_LEN: usize = 4096;

/// Longest single component accepted, in bytes of UTF-8 (most filesystems' limit).
pub const MAX_COMPONENT_LEN: usize = 255;

/// The directory a sync client keeps its state in, at the top of its folder; never
/// synced, and refused as a path on the server.
pub const STATE_DIR: &str = ".ferry-sync";

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused path {shown:?}: {reason}")]
pub struct PathError {
    /// The path, with control characters escaped by `{:?}`; cut to 200 bytes.
    pub shown: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A validated relative path inside a sync root: `/`-separated, no empty, `.` or `..`
/// component, not absolute, no NUL or other control character, no backslash, no
/// bidirectional-override or zero-width character, not inside [`STATE_DIR`], within
/// [`MAX_PATH_LEN`] and [`MAX_COMPONENT_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncPath(String);

impl SyncPath {
    /// Check `raw` against the rules above.
    pub fn parse(raw: &str) -> Result<SyncPath, PathError> {
        let refuse = |reason| {
            let mut shown = raw.to_owned();
            if shown.len() > 200 {
                let mut cut = 200;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
            }
            Err(PathError { shown, reason })
        };
        if raw.is_empty() {
            return refuse("empty");
        }
        if raw.len() > MAX_PATH_LEN {
            return refuse("longer than 4096 bytes");
        }
        if raw.starts_with('/') {
            return refuse("absolute");
        }
        if let Some(bad) = raw.chars().find(|c| is_forbidden(*c)) {
            return refuse(if bad == '\\' {
                "contains a backslash"
            } else if bad.is_control() {
                "contains a control character"
            } else {
                "contains an invisible or direction-changing character"
            });
        }
        for (i, component) in raw.split('/').enumerate() {
            match component {
                "" => return refuse("has an empty component"),
                "." | ".." => return refuse("has a `.` or `..` component"),
                _ if component.len() > MAX_COMPONENT_LEN => {
                    return refuse("has a component longer than 255 bytes");
                }
                _ if i == 0 && component == STATE_DIR => {
                    return refuse("is inside the sync state directory");
                }
                _ if i == 0 && component.len() == 2 && component.ends_with(':') => {
                    return refuse("starts with a drive letter");
                }
                _ => {}
            }
        }
        Ok(SyncPath(raw.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent directory, `None` at the top of the root.
    pub fn parent(&self) -> Option<SyncPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| SyncPath(parent.to_owned()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &SyncPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The key two paths collide under on a case-insensitive filesystem.
    pub fn case_key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for SyncPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SyncPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_forbidden(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional overrides and isolates ("unicode tricks" that show a name
        // reversed), zero-width characters and the byte-order mark.
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// The name a conflict copy of `path` gets: `dir/name (conflict from HOST YYYY-MM-DD).ext`,
/// with ` N` before the closing parenthesis when `n > 1` (the caller counts up until the
/// name is free). `host` is cleaned of characters a path may not hold; `date` is the
/// caller's `YYYY-MM-DD` (this crate reads no clock).
pub fn conflict_copy_name(path: &SyncPath, host: &str, date: &str, n: u32) -> SyncPath {
    let host: String = host
        .chars()
        .map(|c| if c == '/' || is_forbidden(c) { '_' } else { c })
        .take(64)
        .collect();
    let name = path.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let counter = if n > 1 {
        format!(" {n}")
    } else {
        String::new()
    };
    let mut copy = format!("{stem} (conflict from {host} {date}{counter}){ext}");
    // Keep within one component's limit: shorten the stem, never the marker.
    while copy.len() > MAX_COMPONENT_LEN {
        let mut stem_cut = stem.len().saturating_sub(copy.len() - MAX_COMPONENT_LEN);
        while !stem.is_char_boundary(stem_cut) {
            stem_cut -= 1;
        }
        copy = format!(
            "{} (conflict from {host} {date}{counter}){ext}",
            &stem[..stem_cut]
        );
        if stem_cut == 0 {
            break;
        }
    }
    let full = match path.parent() {
        Some(parent) => format!("{parent}/{copy}"),
        None => copy,
    };
    SyncPath(full)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass() {
        for ok in [
            "a",
            "a/b.txt",
            "dir with space/ünïcode.md",
            ".hidden/x",
            "a..b",
        ] {
            assert_eq!(SyncPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long_component = "x".repeat(256);
        let long_path = "a/".repeat(2100);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a\nb",
            "evil\u{202E}txt.exe",
            "zero\u{200B}width",
            ".ferry-sync/state",
            "C:/x",
            long_component.as_str(),
            long_path.as_str(),
        ] {
            assert!(SyncPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn prefixes_are_by_component() {
        let a = SyncPath::parse("a").unwrap();
        assert!(SyncPath::parse("a/b").unwrap().starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!SyncPath::parse("ab").unwrap().starts_with(&a));
    }

    #[test]
    fn conflict_copies_keep_the_extension_and_directory() {
        let p = SyncPath::parse("docs/report.final.txt").unwrap();
        assert_eq!(
            conflict_copy_name(&p, "laptop", "2026-11-30", 1).as_str(),
            "docs/report.final (conflict from laptop 2026-11-30).txt"
        );
        let p = SyncPath::parse(".bashrc").unwrap();
        assert_eq!(
            conflict_copy_name(&p, "a/b", "2026-11-30", 2).as_str(),
            ".bashrc (conflict from a_b 2026-11-30 2)"
        );
        let long = SyncPath::parse(&format!("{}.txt", "n".repeat(250))).unwrap();
        let copy = conflict_copy_name(&long, "h", "2026-11-30", 1);
        assert!(
            copy.as_str().len() <= MAX_COMPONENT_LEN,
            "{}",
            copy.as_str().len()
        );
        assert!(copy.as_str().ends_with("(conflict from h 2026-11-30).txt"));
        assert!(SyncPath::parse(copy.as_str()).is_ok());
    }
}
