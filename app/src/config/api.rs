//! The `[api]` section: where the control plane listens and who may call it.
//!
//! ```toml
//! [api]
//! listen = "127.0.0.1:7070"          # the default; loopback only unless tokens exist
//! max_body_bytes = 1048576           # larger request bodies get 413
//! [[api.tokens]]
//! name = "monitoring"
//! role = "read"                      # GET only
//! secret = "${TRIBUTARY_READ_TOKEN}"
//! [[api.tokens]]
//! name = "ops"
//! role = "operate"                   # also everything that changes state
//! secret_file = "/run/secrets/tributary-ops"
//! ```
//!
//! A secret comes from the environment (`${NAME}`, as anywhere in the file) or from a
//! file (its content, surrounding whitespace trimmed), never written in clear. A listen
//! address other than loopback is refused while no token is configured: nobody should
//! reach a control plane from the network without one.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use tributary_schemas::Secret;

/// Request bodies larger than this get 413 unless `max_body_bytes` says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A secret shorter than this is refused: it could be guessed.
pub const MIN_SECRET_CHARS: usize = 16;

/// The control plane's HTTP server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Who may call it.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tokens: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reading only (GET).
    Read,
    /// Reading, and everything that changes state.
    Operate,
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded with every change made with it.
    pub name: String,
    /// What it allows.
    pub role: Role,
    /// The secret itself (from the environment: `"${NAME}"`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// A token ready for checking requests against.
#[derive(Debug, Clone)]
pub struct Token {
    /// Who holds it.
    pub name: String,
    /// What it allows.
    pub role: Role,
    /// The secret.
    pub secret: Secret,
}

impl ApiConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 {
            return Err("api.max_body_bytes: must be at least 1".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}]");
            if t.name.trim().is_empty() {
                return Err(format!("{at}.name: give the token's holder a name"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("{at}.name: {:?} names two tokens", t.name));
            }
            match (&t.secret, &t.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give secret or secret_file, not both"))
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: give secret (\"${{NAME}}\" from the environment) or secret_file"
                    ))
                }
                _ => {}
            }
        }
        if !self.listen.ip().is_loopback() && self.tokens.is_empty() {
            return Err(format!(
                "api.listen: {} is reachable from the network, and no [[api.tokens]] is configured; add a token, or listen on 127.0.0.1",
                self.listen
            ));
        }
        Ok(())
    }

    /// The tokens with their secrets read (from the configuration or their files); the
    /// error names the token whose secret is missing or too short.
    pub fn tokens(&self) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}] ({})", t.name);
            let secret = match (&t.secret, &t.secret_file) {
                (Some(s), _) => s.expose().to_string(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| format!("{at}.secret_file: cannot read {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
                (None, None) => return Err(format!("{at}: no secret")),
            };
            if secret.chars().count() < MIN_SECRET_CHARS {
                return Err(format!(
                    "{at}: the secret is shorter than {MIN_SECRET_CHARS} characters, which could be guessed"
                ));
            }
            if let Some(same) = out.iter().find(|o: &&Token| o.secret.expose() == secret) {
                return Err(format!(
                    "{at}: the same secret as token {:?}; give each token its own, so a request tells who made it",
                    same.name
                ));
            }
            out.push(Token {
                name: t.name.clone(),
                role: t.role,
                secret: Secret::new(secret),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApiConfig, String> {
        let c: ApiConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn loopback_by_default_and_the_network_only_with_tokens() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let e = parse("listen = \"0.0.0.0:7070\"").unwrap_err();
        assert!(
            e.starts_with("api.listen: 0.0.0.0:7070") && e.contains("[[api.tokens]]"),
            "{e}"
        );
        let c = parse(
            "listen = \"0.0.0.0:7070\"\n[[tokens]]\nname = \"ops\"\nrole = \"operate\"\nsecret = \"0123456789abcdef\"",
        )
        .unwrap();
        let tokens = c.tokens().unwrap();
        assert_eq!(
            (tokens[0].name.as_str(), tokens[0].role),
            ("ops", Role::Operate)
        );
        assert_eq!(format!("{:?}", tokens[0].secret), "\"***\"");
    }

    #[test]
    fn bad_tokens_are_named() {
        let token = |body: &str| parse(&format!("[[tokens]]\n{body}"));
        let e = token("name = \"a\"\nrole = \"read\"").unwrap_err();
        assert!(e.starts_with("api.tokens[0]: give secret"), "{e}");
        let e = token("name = \"a\"\nrole = \"admin\"\nsecret = \"x\"").unwrap_err();
        assert!(e.contains("admin"), "{e}");
        let e = parse("[[tokens]]\nname = \"a\"\nrole = \"read\"\nsecret = \"0123456789abcdef\"\n[[tokens]]\nname = \"a\"\nrole = \"read\"\nsecret = \"0123456789abcdef\"").unwrap_err();
        assert!(e.starts_with("api.tokens[1].name"), "{e}");
        let c = token("name = \"a\"\nrole = \"read\"\nsecret = \"short\"").unwrap();
        let e = c.tokens().unwrap_err();
        assert!(e.contains("shorter than 16"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "fedcba9876543210fedcba\n").unwrap();
        let c = token(&format!(
            "name = \"a\"\nrole = \"read\"\nsecret_file = {:?}",
            file
        ))
        .unwrap();
        assert_eq!(
            c.tokens().unwrap()[0].secret.expose(),
            "fedcba9876543210fedcba"
        );
        let c = token("name = \"a\"\nrole = \"read\"\nsecret_file = \"/nonexistent/x\"").unwrap();
        assert!(c
            .tokens()
            .unwrap_err()
            .contains("secret_file: cannot read /nonexistent/x"));
        let c = parse("[[tokens]]\nname = \"a\"\nrole = \"read\"\nsecret = \"0123456789abcdef\"\n[[tokens]]\nname = \"b\"\nrole = \"operate\"\nsecret = \"0123456789abcdef\"").unwrap();
        let e = c.tokens().unwrap_err();
        assert!(
            e.starts_with("api.tokens[1] (b): the same secret as token \"a\""),
            "{e}"
        );
    }
}
