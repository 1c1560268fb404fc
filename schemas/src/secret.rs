//! Secrets in configuration, typed so that printing one never shows it: [`Secret`] for a
//! value that is secret as a whole (a key, a passphrase), [`SecretUrl`] for a connection
//! URL whose password part is secret. `Debug` and `Display` hide the secret; the value is
//! read only through `expose`, where it is handed to a driver.

use crate::address::redact_url;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A value that is secret as a whole; it prints as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A connection URL (`scheme://user:password@host/db`, or `key=value` parameters) whose
/// password prints as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The whole URL, password included, for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password hidden.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl::new(url)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_never_shows_the_secret() {
        let url = SecretUrl::new("postgres://u:s3cr%40t@h:5432/db");
        for shown in [
            format!("{url:?}"),
            format!("{url}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("postgres://u:***@h:5432/db"), "{shown}");
        }
        assert_eq!(url.expose(), "postgres://u:s3cr%40t@h:5432/db");
        let key = Secret::new("abc");
        assert_eq!(format!("{key:?} {key}"), "\"***\" ***");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"***\"");
        assert_eq!(key.expose(), "abc");
        let parsed: SecretUrl = serde_json::from_str("\"mysql://r:pw@h/db\"").unwrap();
        assert_eq!(parsed.expose(), "mysql://r:pw@h/db");
    }
}
