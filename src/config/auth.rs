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
//!
//! The listener is also an OAuth 2.1 resource server (the MCP authorization spec): access tokens
//! from the operator's identity provider are JWTs checked against the issuer's published keys.
//! ```toml
//! [auth]
//! resource = "https://gw.example.com"      # default: http(s)://<listen address>
//! [[auth.issuers]]
//! issuer = "https://idp.example.com/realms/ops"
//! # jwks_uri = "https://idp.example.com/keys"  # default: from the issuer's metadata
//! # ca_cert = "idp-ca.pem"                     # default: the system trust store
//! # audience = ["https://gw.example.com"]      # default: the resource
//! admin_scopes = ["mcpgw:admin"]               # the default
//! client_scopes = ["mcpgw:client"]             # the default; [] makes any valid token a client
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// This gateway's resource URI (RFC 8707, RFC 9728): what issuers' tokens are meant for.
    #[serde(default)]
    resource: Option<String>,
    /// OAuth authorization servers whose access tokens the listener accepts.
    #[serde(default)]
    issuers: Vec<FileIssuer>,
}

impl FileAuth {
    /// Resolve relative paths against `base`, the config file's directory.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for issuer in &mut self.issuers {
            if let Some(ca) = issuer.ca_cert.as_mut().filter(|p| p.is_relative()) {
                *ca = base.join(&*ca);
            }
        }
    }
}

/// One `[[auth.issuers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIssuer {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    admin_scopes: Option<Vec<String>>,
    #[serde(default)]
    client_scopes: Option<Vec<String>>,
}

/// Scope that makes an issuer's token an administrator unless `admin_scopes` says otherwise.
pub const DEFAULT_ADMIN_SCOPE: &str = "mcpgw:admin";
/// Scope that makes an issuer's token a client unless `client_scopes` says otherwise.
pub const DEFAULT_CLIENT_SCOPE: &str = "mcpgw:client";

/// An OAuth authorization server whose access tokens the listener accepts.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Its `issuer` identifier, compared exactly with a token's `iss`.
    pub issuer: String,
    /// Where its keys are; `None`: found in its metadata (RFC 8414, then OpenID discovery).
    pub jwks_uri: Option<url::Url>,
    /// The TLS client config its metadata and keys are fetched with (https only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Audiences a token must name one of; empty: this gateway's resource.
    pub audience: Vec<String>,
    /// Scopes that make a token an administrator.
    pub admin_scopes: Vec<String>,
    /// Scopes that make a token a client; empty: every valid token is at least a client.
    pub client_scopes: Vec<String>,
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
    /// This gateway's resource URI; `None`: `http(s)://<listen address>`.
    pub resource: Option<String>,
    /// OAuth issuers whose access tokens are accepted.
    pub issuers: Vec<IssuerConfig>,
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
            .field("resource", &self.resource)
            .field("issuers", &self.issuers)
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
    let resource = file
        .resource
        .map(|r| resource_uri(&r, origin))
        .transpose()?;
    let issuers = file
        .issuers
        .into_iter()
        .map(|i| resolve_issuer(i, origin))
        .collect::<Result<_, _>>()?;
    Ok(AuthConfig {
        enabled,
        tokens,
        jwt_secret: None,
        certificate_admins: file.certificate_admins,
        resource,
        issuers,
    })
}

/// A resource URI as RFC 8707 wants it: absolute, no fragment; kept without a trailing `/`
/// so that endpoint paths append to it.
fn resource_uri(text: &str, origin: &str) -> Result<String, ConfigError> {
    let bad = || {
        field_error(
            origin,
            "auth.resource",
            "an absolute http(s) URI without a fragment, query or credentials",
            text.to_owned(),
        )
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let fine = matches!(url.scheme(), "https" | "http")
        && url.host().is_some()
        && url.fragment().is_none()
        && url.query().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !fine {
        return Err(bad());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// An issuer's or its keys' URL: https, or plain http only to a loopback host (a test's own
/// provider): keys fetched in the clear from elsewhere could be anyone's.
fn fetch_url(text: &str, origin: &str, key: &'static str) -> Result<url::Url, ConfigError> {
    let bad = || {
        field_error(
            origin,
            key,
            "an https URL (http only on loopback), without credentials or a fragment",
            text.to_owned(),
        )
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let fine = (url.scheme() == "https" || (url.scheme() == "http" && loopback))
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    fine.then_some(url).ok_or_else(bad)
}

fn resolve_issuer(file: FileIssuer, origin: &str) -> Result<IssuerConfig, ConfigError> {
    let url = fetch_url(&file.issuer, origin, "auth.issuers.issuer")?;
    if url.query().is_some() {
        return Err(field_error(
            origin,
            "auth.issuers.issuer",
            "an issuer identifier without a query (RFC 8414)",
            file.issuer,
        ));
    }
    let jwks_uri = file
        .jwks_uri
        .as_deref()
        .map(|u| fetch_url(u, origin, "auth.issuers.jwks_uri"))
        .transpose()?;
    let https = url.scheme() == "https" || jwks_uri.as_ref().is_some_and(|u| u.scheme() == "https");
    let tls = if https {
        Some(issuer_tls(file.ca_cert.as_deref(), origin)?)
    } else {
        None
    };
    Ok(IssuerConfig {
        issuer: file.issuer,
        jwks_uri,
        tls,
        audience: file.audience,
        admin_scopes: file
            .admin_scopes
            .unwrap_or_else(|| vec![DEFAULT_ADMIN_SCOPE.to_owned()]),
        client_scopes: file
            .client_scopes
            .unwrap_or_else(|| vec![DEFAULT_CLIENT_SCOPE.to_owned()]),
    })
}

/// The TLS client config an issuer is reached with: its `ca_cert`, or the system's roots;
/// the issuer's name always verified.
fn issuer_tls(ca: Option<&Path>, origin: &str) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let (certs, what) = match ca {
        Some(path) => (
            crate::tls::pem::certs_from_file(path).map_err(|e| {
                field_error(
                    origin,
                    "auth.issuers.ca_cert",
                    "a PEM file of CA certificates",
                    e.to_string(),
                )
            })?,
            "a PEM file with at least one usable CA certificate",
        ),
        None => (
            rustls_native_certs::load_native_certs().certs,
            "a CA file, as the system trust store has no certificates (or set SSL_CERT_FILE)",
        ),
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(field_error(
            origin,
            "auth.issuers.ca_cert",
            what,
            ca.map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        ));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            field_error(
                origin,
                "auth.issuers",
                "a TLS configuration rustls accepts",
                e.to_string(),
            )
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str) -> Result<AuthConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcpgw.toml");
        let file = super::super::parse_file(&path, text)?;
        resolve(file.auth, true, "mcpgw.toml")
    }

    #[test]
    fn an_issuer_gets_the_default_scopes_and_its_relative_ca_is_the_files_neighbour() {
        let cfg = auth(
            "[auth]\nresource = \"https://gw.example/\"\n\
             [[auth.issuers]]\nissuer = \"http://127.0.0.1:9000/realms/a\"\n",
        )
        .unwrap();
        assert_eq!(cfg.resource.as_deref(), Some("https://gw.example"));
        let issuer = &cfg.issuers[0];
        assert_eq!(issuer.admin_scopes, [DEFAULT_ADMIN_SCOPE]);
        assert_eq!(issuer.client_scopes, [DEFAULT_CLIENT_SCOPE]);
        assert!(issuer.tls.is_none(), "plain http on loopback needs no TLS");
        // An https issuer with a CA file that is not there names the key and the file.
        let err = auth("[auth]\n[[auth.issuers]]\nissuer = \"https://idp.example\"\nca_cert = \"missing.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.issuers.ca_cert") && err.contains("missing.pem"),
            "{err}"
        );
    }

    #[test]
    fn issuers_and_resources_that_could_be_anyones_are_refused() {
        for (text, key) in [
            ("issuer = \"http://idp.example\"", "auth.issuers.issuer"),
            (
                "issuer = \"https://idp.example/?tenant=a\"",
                "auth.issuers.issuer",
            ),
            (
                "issuer = \"https://user:pw@idp.example\"",
                "auth.issuers.issuer",
            ),
            (
                "issuer = \"https://idp.example\"\njwks_uri = \"http://keys.example/jwks\"",
                "auth.issuers.jwks_uri",
            ),
        ] {
            let err = auth(&format!("[auth]\n[[auth.issuers]]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = auth("[auth]\nresource = \"https://gw.example/#frag\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.resource"), "{err}");
    }
}
