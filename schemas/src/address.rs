//! Where a database is: the identity that tells whether a source and a sink are the same
//! database, and the one way a connection URL is printed (without its password).
//!
//! Each kind's crate (capture for sources, sinks for sinks) parses its own URLs into a
//! [`DatabaseIdentity`]; callers compare identities without knowing any kind.

/// One database on one server, as a URL names it: the server's host (with `localhost` and
/// `::1` taken as `127.0.0.1`), its port, and the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseIdentity {
    /// The wire protocol (`"postgres"`, `"mysql"`): a source and a sink of different
    /// protocols are never the same database.
    pub protocol: &'static str,
    /// Host name in lower case, or the socket directory.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
}

impl DatabaseIdentity {
    /// The identity of `database` at `host:port` spoken to over `protocol`.
    pub fn new(protocol: &'static str, host: &str, port: u16, database: &str) -> Self {
        let host = match host.to_ascii_lowercase().as_str() {
            "localhost" | "::1" | "[::1]" => "127.0.0.1".to_string(),
            h => h.to_string(),
        };
        DatabaseIdentity {
            protocol,
            host,
            port,
            database: database.to_string(),
        }
    }
}

/// `url` with the password of its `scheme://user:password@host` part replaced by `***`;
/// the values of `password=`, `token=` and `secret=` parameters (query or key/value form)
/// are replaced too.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out = format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
    }
    // `?password=…&…` (URL form), `password=… ` (key/value form), and the tokens and
    // secrets of a webhook's query.
    for key in ["password=", "token=", "secret="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(key) {
            let start = from + i + key.len();
            let end = out[start..]
                .find(['&', ' '])
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("mysql://u@h/db?password=s3cret&ssl=1"),
            "mysql://u@h/db?password=***&ssl=1"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?options=a@b"),
            "postgres://u:***@h/db?options=a@b"
        );
        assert_eq!(
            redact_url("https://hooks.example/t?token=abc&x=1"),
            "https://hooks.example/t?token=***&x=1"
        );
        assert_eq!(
            redact_url("host=h password=x user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn local_host_names_are_one_host() {
        assert_eq!(
            DatabaseIdentity::new("postgres", "localhost", 5432, "db"),
            DatabaseIdentity::new("postgres", "127.0.0.1", 5432, "db")
        );
        assert_ne!(
            DatabaseIdentity::new("postgres", "h", 5432, "db"),
            DatabaseIdentity::new("mysql", "h", 5432, "db")
        );
    }
}
