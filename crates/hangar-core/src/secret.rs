//! A string that must never reach a log line.
//!
//! Tokens, webhook secrets, JIT configs and passwords travel as [`Secret`] so
//! that `Debug`/`Display` print a placeholder; reading the value is always an
//! explicit, greppable [`Secret::expose`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. Formats as `***`; serialises as the plain value (it is
/// only serialised towards the party that owns it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value. Call only where the value leaves the process towards
    /// its rightful recipient (an HTTP header, the sealing layer, a VM).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("ghp_verysecret");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("ghp_"));
        assert_eq!(s.expose(), "ghp_verysecret");
    }
}
