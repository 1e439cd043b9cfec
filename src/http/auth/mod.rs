//! Bearer auth for the network listener: static tokens from the config, HS256 JWTs signed
//! with the gateway's secret (`<data-dir>/jwt.secret`, 0600, made on first start) and carrying
//! `aud = "mcpgw"` and an `exp` (`mcpgw token create` mints them), or access tokens from the
//! configured OAuth issuers ([`issuer`]), whose keys are fetched ([`jwks`]). What the listener
//! tells OAuth clients of itself, and how it refuses, is [`metadata`].
//!
//! Tokens are compared in constant time, and neither a token nor the header is ever logged.
//!
//! Every request pays the check, so what can be is done once: the static tokens' digests when
//! the gateway starts, a JWT's signature and claims the first time it is presented (a client
//! sends the same token on every request until it expires). A verified JWT is remembered by
//! its SHA-256 digest, with its `exp`, and accepted again until then; the secret and the rules
//! do not change while the gateway runs, so the answer is the one a new verification would give.
//! An issuer's token is remembered the same way: after its first use it costs what a built-in
//! JWT costs, whatever its signature algorithm, and no key fetch.

pub mod issuer;
pub mod jwks;
pub mod metadata;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::Response;

use crate::access::{Method, Principal, Role};
use crate::config::AuthConfig;
use crate::h1::fields::Lookup;
use crate::hash::HashMap;

/// Seconds a JWT is still accepted after its `exp`, or before its `nbf` (clock skew).
const LEEWAY: u64 = 5;

/// Verified JWTs remembered at most; past it the expired ones are dropped, and if that is not
/// enough, all of them (they are verified again as they come).
const MAX_VERIFIED: usize = 1024;

/// A SHA-256 digest.
type Digest = [u8; 32];

/// The listener's bearer check, made once from the config.
pub struct Verifier {
    enabled: bool,
    /// Digests of the static tokens, with whom each stands for.
    tokens: Vec<(Digest, Arc<Principal>)>,
    /// The JWT key and the rules its tokens are checked by.
    jwt: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
    /// Digests of JWTs that passed, with their `exp` and principal.
    verified: Mutex<HashMap<Digest, (u64, Arc<Principal>)>>,
    /// Client-certificate names that are administrators.
    certificate_admins: Vec<String>,
    /// This gateway's resource URI, without a trailing `/`.
    resource: String,
    /// The OAuth issuers whose tokens are accepted.
    issuers: Vec<issuer::Issuer>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests of secrets are still not for logs.
        f.debug_struct("Verifier")
            .field("enabled", &self.enabled)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("jwt", &self.jwt.is_some())
            .field("resource", &self.resource)
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The check `auth` asks for, on a listener whose resource URI is `resource` unless the
    /// configuration names one.
    pub fn new(auth: &AuthConfig, resource: &str) -> Self {
        let resource = auth
            .resource
            .as_deref()
            .unwrap_or(resource)
            .trim_end_matches('/')
            .to_owned();
        let issuers = auth
            .issuers
            .iter()
            .map(|i| issuer::Issuer::new(i.clone(), &resource))
            .collect();
        let jwt = auth.jwt_secret.as_deref().map(|secret| {
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.set_audience(&[AUDIENCE]);
            validation.set_required_spec_claims(&["exp", "aud", "sub"]);
            validation.leeway = LEEWAY;
            // A token that says it is not valid yet is refused until then (with the leeway).
            validation.validate_nbf = true;
            (jsonwebtoken::DecodingKey::from_secret(secret), validation)
        });
        let tokens = auth
            .tokens
            .iter()
            .map(|t| {
                let principal = Principal::new(t.id.as_str(), t.role, Method::StaticToken)
                    .with_scopes(t.scopes.iter().map(String::as_str));
                (digest(&t.secret), Arc::new(principal))
            })
            .collect();
        Self {
            enabled: auth.enabled,
            tokens,
            jwt,
            verified: Mutex::default(),
            certificate_admins: auth.certificate_admins.clone(),
            resource,
            issuers,
        }
    }

    /// This gateway's resource URI (RFC 8707), without a trailing `/`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The OAuth issuers whose tokens are accepted.
    pub fn issuers(&self) -> impl Iterator<Item = &issuer::Issuer> {
        self.issuers.iter()
    }

    /// The scopes the issuers' tokens are read for, each once, administrators' first.
    pub fn scopes_supported(&self) -> Vec<&str> {
        let mut scopes = self.scopes_of(Role::Admin);
        for scope in self.scopes_of(Role::Client) {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes
    }

    /// The scopes that grant `role`, over every issuer, each once.
    fn scopes_of(&self, role: Role) -> Vec<&str> {
        let mut scopes: Vec<&str> = Vec::new();
        for issuer in &self.issuers {
            let config = issuer.config();
            let granting = match role {
                Role::Admin => &config.admin_scopes,
                Role::Client => &config.client_scopes,
            };
            for scope in granting {
                if !scopes.contains(&scope.as_str()) {
                    scopes.push(scope);
                }
            }
        }
        scopes
    }

    /// The response refusing a request to `path` (which matched `route`): see
    /// [`metadata::refusal`]. The scopes named are those of the role the route needs.
    pub fn refusal(&self, refused: &Refused, route: &str, path: &str) -> Response {
        let needed = match refused {
            Refused::Unentitled { scopes, .. } => scopes.clone(),
            _ => self
                .scopes_of(crate::access::required_role(route))
                .join(" "),
        };
        let url = metadata::url_for(&self.resource, route, path);
        metadata::refusal(refused, &url, &needed)
    }

    /// Who `token` stands for: one of the static tokens, or a valid JWT (built-in or an
    /// issuer's), remembered or verified now.
    async fn accepts(&self, token: &str) -> Result<Arc<Principal>, Refused> {
        let presented = digest(token);
        if let Some(principal) = matching(&self.tokens, &presented) {
            return Ok(principal.clone());
        }
        let now = unix_now();
        if let Some(principal) = self.remembered_as(&presented, now) {
            return Ok(principal);
        }
        let (principal, exp) = match self.issuer_of(token) {
            Some(issuer) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Invalid)?;
                issuer.verify(token, &header).await?
            }
            None => {
                let (key, validation) = self.jwt.as_ref().ok_or(Refused::Invalid)?;
                let data = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|_| Refused::Invalid)?;
                let exp = u64::try_from(data.claims.exp).map_err(|_| Refused::Invalid)?;
                (data.claims.principal(), exp)
            }
        };
        let principal = Arc::new(principal);
        self.remember(presented, exp, principal.clone(), now);
        Ok(principal)
    }

    /// The issuer whose token `token` claims to be; `None` for a built-in JWT (no `iss`).
    fn issuer_of(&self, token: &str) -> Option<&issuer::Issuer> {
        if self.issuers.is_empty() {
            return None;
        }
        let iss = issuer::claimed_issuer(token)?;
        self.issuers.iter().find(|i| i.id() == iss)
    }

    /// The principal of a token verified before and not expired since.
    fn remembered_as(&self, presented: &Digest, now: u64) -> Option<Arc<Principal>> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let (exp, principal) = verified.get(presented)?;
        (now <= exp.saturating_add(LEEWAY)).then(|| principal.clone())
    }

    fn remember(&self, presented: Digest, exp: u64, principal: Arc<Principal>, now: u64) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, (exp, _)| now <= exp.saturating_add(LEEWAY));
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(presented, (exp, principal));
    }

    /// The principal a verified client certificate named `name` is.
    pub fn certificate(&self, name: &str) -> Arc<Principal> {
        let role = if self.certificate_admins.iter().any(|a| a == name) {
            Role::Admin
        } else {
            Role::Client
        };
        Arc::new(Principal::new(
            format!("cert:{name}"),
            role,
            Method::Certificate,
        ))
    }

    /// Whether `token` is accepted at all.
    #[cfg(test)]
    fn accepts_any(&self, token: &str) -> bool {
        futures_util::FutureExt::now_or_never(self.accepts(token))
            .expect("no key fetch needed")
            .is_ok()
    }

    /// How many verified JWTs are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn digest(text: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who a request is from, or why it is refused. A bearer token, when there is one, is what
/// counts (and a bad one is refused, even on a connection with a certificate); without one,
/// the connection's verified client certificate (`certificate`) is the principal. With auth
/// off every request is [`Principal::anonymous`]. It awaits only when an issuer's keys must be
/// fetched (a token never seen before, from an issuer whose keys are not held).
pub async fn authenticate<L: Lookup + ?Sized>(
    auth: &Verifier,
    headers: &L,
    certificate: Option<&Arc<Principal>>,
) -> Result<Arc<Principal>, Refused> {
    if !auth.enabled {
        return Ok(Principal::anonymous());
    }
    match bearer(headers) {
        Some(token) => auth.accepts(token).await,
        None => certificate.cloned().ok_or(Refused::Missing),
    }
}

/// Why a request was refused before any handler ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// No credential at all.
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Missing,
    /// A bearer token that is not accepted.
    #[error("invalid bearer token")]
    Invalid,
    /// A principal whose role does not reach the route.
    #[error("this route needs the {needed} role; {principal} has the {role} role")]
    Forbidden {
        /// Who asked.
        principal: Arc<str>,
        /// Their role.
        role: Role,
        /// The role the route needs.
        needed: Role,
    },
    /// An issuer's valid token that carries no scope granting a role.
    #[error("the token of {principal} carries none of the scopes that grant access ({scopes})")]
    Unentitled {
        /// Who the token is for.
        principal: Arc<str>,
        /// The scopes that would grant the client role, space-separated.
        scopes: String,
    },
}

impl Refused {
    /// The refusal of `principal` on a route that needs `needed`.
    pub fn forbidden(principal: &Principal, needed: Role) -> Self {
        Self::Forbidden {
            principal: principal.id.clone(),
            role: principal.role,
            needed,
        }
    }
}

fn bearer<L: Lookup + ?Sized>(headers: &L) -> Option<&str> {
    let value = headers.text(&header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The entry whose digest is `presented`. Fixed-size digests compared with a branch-free fold,
/// every token checked, so the time taken depends neither on where a guess goes wrong nor on
/// which token matched.
fn matching<'t, T>(tokens: &'t [(Digest, T)], presented: &Digest) -> Option<&'t T> {
    let mut found = None;
    for (digest, value) in tokens {
        let diff = digest
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Every entry is compared; only the selection depends on the outcome.
        found = if diff == 0 { Some(value) } else { found };
    }
    found
}

/// Audience every mcpgw token carries.
pub const AUDIENCE: &str = "mcpgw";
/// File name of the JWT secret in the data dir.
pub const SECRET_FILE: &str = "jwt.secret";

/// Claims of an mcpgw bearer token.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Who the token is for.
    pub sub: String,
    /// Audience: always `mcpgw`.
    pub aud: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// `admin` or `client`; a token without one (minted before roles) is a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Scopes, space-separated as in OAuth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// Whom the token stands for. An unknown role is the least one.
    fn principal(&self) -> Principal {
        let role = self
            .role
            .as_deref()
            .and_then(Role::parse)
            .unwrap_or(Role::Client);
        Principal::new(format!("jwt:{}", self.sub), role, Method::Jwt)
            .with_scopes(self.scope.as_deref().unwrap_or("").split_whitespace())
    }
}

/// What a minted token says of its holder.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// Subject.
    pub sub: &'a str,
    /// Role.
    pub role: Role,
    /// Scopes.
    pub scopes: &'a [String],
    /// Lifetime in seconds.
    pub ttl_secs: i64,
}

/// Mint a token for `grant`.
pub fn mint(secret: &[u8], grant: &Grant<'_>) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: grant.sub.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + grant.ttl_secs,
        role: Some(grant.role.as_str().to_owned()),
        scope: (!grant.scopes.is_empty()).then(|| grant.scopes.join(" ")),
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}

/// Read the JWT secret from the data dir.
pub fn read_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    // One of the gateway's own files: a regular file, never read through a planted link.
    let bytes = crate::files::open_regular(&path, crate::files::Links::Refuse)
        .and_then(|opened| opened.read_capped(4096))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the token secret: {e} (has `mcpgw serve` run with this --data-dir?)"
            )
        })?;
    let text = String::from_utf8_lossy(&bytes);
    hex::decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{} is not a hex-encoded secret", path.display()))
}

/// The data dir's JWT secret, created (32 random bytes, 0600) if missing.
pub fn load_or_create_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        return read_secret(data_dir);
    }
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no randomness available for the token secret"))?;
    write_secret(&path, &secret)?;
    Ok(secret.to_vec())
}

/// The secret every instance on `store` signs with, also written to this data dir's file, so
/// that `mcpgw token create` here mints tokens every instance accepts. This instance's own
/// secret is what it proposes: the first instance on a store keeps the tokens it minted valid.
pub async fn shared_secret(
    data_dir: &std::path::Path,
    store: std::sync::Arc<dyn crate::store::Store>,
) -> anyhow::Result<Vec<u8>> {
    let own = load_or_create_secret(data_dir)?;
    let proposed = own.clone();
    let shared = tokio::task::spawn_blocking(move || store.shared_secret(&proposed))
        .await
        .map_err(|e| anyhow::anyhow!("reading the shared token secret: {e}"))?
        .map_err(|e| anyhow::anyhow!("reading the shared token secret: {e}"))?;
    if shared != own {
        // Written beside and renamed over, so a reader never sees half a secret.
        let path = data_dir.join(SECRET_FILE);
        let fresh = data_dir.join(format!("{SECRET_FILE}.new"));
        let _ = std::fs::remove_file(&fresh);
        write_secret(&fresh, &shared)?;
        std::fs::rename(&fresh, &path)
            .map_err(|e| anyhow::anyhow!("cannot replace {}: {e}", path.display()))?;
        tracing::info!(
            "token secret: this instance now signs with the one its store shares (tokens minted with its previous secret are no longer accepted)"
        );
    }
    Ok(shared)
}

/// Create `path` (0600, never through a link, never over an existing file) holding `secret`.
fn write_secret(path: &std::path::Path, secret: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = crate::files::own_file(0o600)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(hex::encode(secret).as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests;
