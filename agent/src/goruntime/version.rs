//! Go release versions as found in `.go.buildinfo` ("go1.21.13", "go1.23rc1",
//! "go1.22.0 X:boringcrypto", "devel go1.24-abcdef ...").

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> GoVersion {
        GoVersion { major, minor, patch }
    }

    /// Parses the version string of build info; None when it is not a Go 1.x release.
    pub fn parse(text: &str) -> Option<GoVersion> {
        let start = text.find("go1.")?;
        let rest = &text[start + 2..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let mut parts = rest[..end].split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(GoVersion { major, minor, patch })
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        assert_eq!(GoVersion::parse("go1.21.13"), Some(GoVersion::new(1, 21, 13)));
        assert_eq!(GoVersion::parse("go1.19"), Some(GoVersion::new(1, 19, 0)));
        assert_eq!(GoVersion::parse("go1.23rc1"), Some(GoVersion::new(1, 23, 0)));
        assert_eq!(GoVersion::parse("go1.22.0 X:boringcrypto"), Some(GoVersion::new(1, 22, 0)));
        assert_eq!(GoVersion::parse("devel go1.24-abcdef Tue"), Some(GoVersion::new(1, 24, 0)));
        assert!(GoVersion::parse("go1.21.13") < GoVersion::parse("go1.27.3"));
    }

    #[test]
    fn garbage_is_none() {
        for text in ["", "go", "go1.", "go1.x", "1.21", "devel +abc", "go1.99999999999999999999"] {
            assert_eq!(GoVersion::parse(text), None, "{text}");
        }
    }
}
