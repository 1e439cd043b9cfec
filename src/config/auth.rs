//! `[auth]` of `mcpgw.toml`: who may use the listener, validated into an [`AuthConfig`].
//!
//! Static tokens come in two spellings. A bare string is the operator's own token and stays an
//! administrator (what every static token was before roles existed); a table names its holder,
//! role and scopes, for tokens handed to others:
//! ```toml
//! [auth]
//! tokens = [
//!   "an-operator-token-of-16-or-more-characters",
//!   { token = "a-token-for-the-ci-robot-0123", name = "ci", role = "client", scopes = ["tools"] },
//! ]
//! certificate_admins = ["spiffe://example.org/ns/ops/sa/operator"]
//! ```

use serde::Deserialize;

use super::{ConfigError, field_error};
use crate::access::Role;

/// `[auth]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    /// Static bearer tokens accepted on the listener.
    #[serde(default)]
    tokens: Vec<FileToken>,
    /// Client-certificate names (URI SAN, DNS SAN or common name) that are administrators;
    /// every other verified certificate is a client.
    #[serde(default)]
    certificate_admins: Vec<String>,
}

/// One entry of `tokens`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileToken {
    /// The operator's own token: an administrator.
    Bare(String),
    /// A token with its holder's name, role and scopes.
    Named {
        token: String,
        name: String,
        #[serde(default = "client")]
        role: String,
        #[serde(default)]
        scopes: Vec<String>,
    },
}

impl std::fmt::Debug for FileToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileToken(redacted)")
    }
}

fn client() -> String {
    Role::Client.as_str().to_owned()
}

/// A static token and whose it is.
#[derive(Clone)]
pub struct StaticToken {
    /// The token itself.
    pub secret: String,
    /// The principal id it stands for (`token:<name>`).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticToken")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Bearer auth on the HTTP listener.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Whether the listener requires a token.
    pub enabled: bool,
    /// Accepted static tokens.
    pub tokens: Vec<StaticToken>,
    /// HS256 secret for JWT bearer tokens (loaded from the data dir at start).
    pub jwt_secret: Option<Vec<u8>>,
    /// Client-certificate names that are administrators.
    pub certificate_admins: Vec<String>,
}

impl AuthConfig {
    /// Auth on, with these bare (administrator) tokens: what tests and small set-ups use.
    pub fn with_tokens(tokens: &[&str]) -> Self {
        Self {
            enabled: true,
            tokens: tokens.iter().map(|t| bare((*t).to_owned())).collect(),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never in logs or errors.
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("certificate_admins", &self.certificate_admins)
            .finish_non_exhaustive()
    }
}

/// A bare token: the operator's, an administrator, named by the start of its digest (never by
/// the token).
fn bare(secret: String) -> StaticToken {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    StaticToken {
        id: format!("token:{}", hex::encode(&digest.as_ref()[..4])),
        secret,
        role: Role::Admin,
        scopes: Vec::new(),
    }
}

/// Check `[auth]` and make it what the listener runs with.
pub(super) fn resolve(
    file: FileAuth,
    enabled: bool,
    origin: &str,
) -> Result<AuthConfig, ConfigError> {
    let mut tokens = Vec::with_capacity(file.tokens.len());
    for entry in file.tokens {
        let token = match entry {
            FileToken::Bare(secret) => bare(secret),
            FileToken::Named {
                token,
                name,
                role,
                scopes,
            } => {
                let role = Role::parse(&role).ok_or_else(|| {
                    field_error(origin, "auth.tokens.role", "admin or client", role.clone())
                })?;
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(field_error(
                        origin,
                        "auth.tokens.name",
                        "a name without white space",
                        format!("{name:?}"),
                    ));
                }
                StaticToken {
                    secret: token,
                    id: format!("token:{name}"),
                    role,
                    scopes,
                }
            }
        };
        if token.secret.len() < 16 || token.secret.chars().any(char::is_whitespace) {
            return Err(field_error(
                origin,
                "auth.tokens",
                "tokens of at least 16 characters without white space",
                // Never echo a token, even a bad one.
                format!("a token of {} characters", token.secret.len()),
            ));
        }
        tokens.push(token);
    }
    Ok(AuthConfig {
        enabled,
        tokens,
        jwt_secret: None,
        certificate_admins: file.certificate_admins,
    })
}
