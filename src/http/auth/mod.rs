//! Bearer auth for the network listener: static tokens from the config, or HS256 JWTs signed
//! with the gateway's secret (`<data-dir>/jwt.secret`, 0600, made on first start) and carrying
//! `aud = "mcpgw"` and an `exp`. `mcpgw token create` mints them.
//!
//! Tokens are compared in constant time, and neither a token nor the header is ever logged.
//!
//! Every request pays the check, so what can be is done once: the static tokens' digests when
//! the gateway starts, a JWT's signature and claims the first time it is presented (a client
//! sends the same token on every request until it expires). A verified JWT is remembered by
//! its SHA-256 digest, with its `exp`, and accepted again until then; the secret and the rules
//! do not change while the gateway runs, so the answer is the one a new verification would give.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::access::{Method, Principal, Role};
use crate::config::AuthConfig;
use crate::h1::fields::Lookup;
use crate::hash::HashMap;

/// Seconds a JWT is still accepted after its `exp` (clock skew).
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
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests of secrets are still not for logs.
        f.debug_struct("Verifier")
            .field("enabled", &self.enabled)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The check `auth` asks for.
    pub fn new(auth: &AuthConfig) -> Self {
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
        }
    }

    /// Whether the listener asks for credentials at all (`--no-auth` turns it off).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who `token` stands for: one of the static tokens, or a valid JWT.
    fn accepts(&self, token: &str) -> Option<Arc<Principal>> {
        let presented = digest(token);
        if let Some(principal) = matching(&self.tokens, &presented) {
            return Some(principal.clone());
        }
        let (key, validation) = self.jwt.as_ref()?;
        let now = unix_now();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((exp, principal)) = verified.get(&presented)
            && now <= exp.saturating_add(LEEWAY)
        {
            return Some(principal.clone());
        }
        drop(verified);
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).ok()?;
        let principal = Arc::new(data.claims.principal());
        let exp = u64::try_from(data.claims.exp).ok()?;
        verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, (exp, _)| now <= exp.saturating_add(LEEWAY));
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(presented, (exp, principal.clone()));
        Some(principal)
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
        self.accepts(token).is_some()
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

/// Who a request is from, or the 401 that refuses it. A bearer token, when there is one, is
/// what counts (and a bad one is refused, even on a connection with a certificate); without
/// one, the connection's verified client certificate (`certificate`) is the principal. With
/// auth off every request is [`Principal::anonymous`].
pub fn authenticate(
    auth: &Verifier,
    headers: &dyn Lookup,
    certificate: Option<&Arc<Principal>>,
) -> Result<Arc<Principal>, Refused> {
    if !auth.enabled {
        return Ok(Principal::anonymous());
    }
    match bearer(headers) {
        Some(token) => auth.accepts(token).ok_or(Refused::Invalid),
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

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            Self::Missing | Self::Invalid => unauthorized(&message),
            Self::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": {"code": "forbidden", "message": message}})),
            )
                .into_response(),
        }
    }
}

fn bearer(headers: &dyn Lookup) -> Option<&str> {
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

fn unauthorized(reason: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": reason}})),
    )
        .into_response()
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
    use std::io::Write;
    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        return read_secret(data_dir);
    }
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no randomness available for the token secret"))?;
    let mut file = crate::files::own_file(0o600)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(hex::encode(secret).as_bytes())?;
    file.sync_all()?;
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: &[&str], secret: Option<&[u8]>) -> AuthConfig {
        AuthConfig {
            jwt_secret: secret.map(<[u8]>::to_vec),
            ..AuthConfig::with_tokens(tokens)
        }
    }

    fn mint(secret: &[u8], sub: &str, ttl_secs: i64) -> anyhow::Result<String> {
        let grant = Grant {
            sub,
            role: Role::Client,
            scopes: &[],
            ttl_secs,
        };
        super::mint(secret, &grant)
    }

    #[test]
    fn a_minted_token_carries_its_role_and_scopes_and_an_old_one_is_a_client() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = Verifier::new(&config(&[], Some(secret)));
        let scopes = ["upstream:alpha".to_owned(), "read".to_owned()];
        let grant = Grant {
            sub: "ops",
            role: Role::Admin,
            scopes: &scopes,
            ttl_secs: 600,
        };
        let admin = v.accepts(&super::mint(secret, &grant).unwrap()).unwrap();
        assert_eq!(&*admin.id, "jwt:ops");
        assert_eq!(admin.role, Role::Admin);
        assert!(admin.has_scope("upstream:alpha") && admin.has_scope("read"));
        // Minted before roles existed: no `role` claim.
        let now = unix_now();
        let old = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "old", "aud": AUDIENCE, "iat": now, "exp": now + 600}),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_eq!(v.accepts(&old).unwrap().role, Role::Client);
        // A bare static token is the operator's.
        let v = Verifier::new(&config(&["first-token-0123456789"], None));
        let op = v.accepts("first-token-0123456789").unwrap();
        assert_eq!((op.role, op.method), (Role::Admin, Method::StaticToken));
        assert!(op.id.starts_with("token:") && !op.id.contains("first"));
    }

    #[test]
    fn static_tokens_are_checked_by_digest() {
        let v = Verifier::new(&config(
            &["first-token-0123456789", "second-token-0123456789"],
            None,
        ));
        assert!(v.accepts_any("first-token-0123456789"));
        assert!(v.accepts_any("second-token-0123456789"));
        assert!(!v.accepts_any("second-token-012345678"));
        assert!(!v.accepts_any(""));
        // No secret: nothing is remembered, a JWT-looking token is refused.
        assert!(!v.accepts_any("a.b.c"));
        assert_eq!(v.remembered(), 0);
    }

    #[test]
    fn a_jwt_not_valid_yet_is_refused_until_its_nbf() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = Verifier::new(&config(&[], Some(secret)));
        let now = unix_now();
        let with_nbf = |nbf: u64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &serde_json::json!({"sub": "t", "aud": AUDIENCE, "iat": now, "exp": now + 600, "nbf": nbf}),
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        assert!(
            !v.accepts_any(&with_nbf(now + 600)),
            "valid only in ten minutes"
        );
        assert_eq!(v.remembered(), 0, "a refused token is not remembered");
        assert!(
            v.accepts_any(&with_nbf(now - 10)),
            "valid since ten seconds ago"
        );
    }

    #[test]
    fn a_verified_jwt_is_remembered_until_it_expires_and_a_forged_one_never() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = Verifier::new(&config(&[], Some(secret)));
        let token = mint(secret, "t", 3600).unwrap();
        assert!(v.accepts_any(&token));
        assert_eq!(v.remembered(), 1);
        assert!(v.accepts_any(&token), "accepted again from memory");
        assert_eq!(v.remembered(), 1);
        // Signed with another secret, or expired past the leeway: refused, not remembered.
        let forged = mint(b"another-secret-another-secret-00", "t", 3600).unwrap();
        assert!(!v.accepts_any(&forged));
        let expired = mint(secret, "t", -60).unwrap();
        assert!(!v.accepts_any(&expired));
        assert_eq!(v.remembered(), 1);
        // What is remembered holds only until `exp` and the leeway.
        let now = unix_now();
        let entry = |exp| {
            v.verified
                .lock()
                .unwrap()
                .insert(digest("remembered-only"), (exp, Principal::anonymous()));
        };
        entry(now + 60);
        assert!(v.accepts_any("remembered-only"));
        entry(now - LEEWAY - 2);
        assert!(!v.accepts_any("remembered-only"));
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = Verifier::new(&config(&[], Some(secret)));
        let now = unix_now();
        {
            let mut verified = v.verified.lock().unwrap();
            for i in 0..MAX_VERIFIED {
                // Half expired, half not.
                let exp = if i % 2 == 0 { now - 3600 } else { now + 3600 };
                verified.insert(digest(&i.to_string()), (exp, Principal::anonymous()));
            }
        }
        assert!(v.accepts_any(&mint(secret, "t", 3600).unwrap()));
        assert_eq!(v.remembered(), MAX_VERIFIED / 2 + 1, "expired ones dropped");
        {
            let mut verified = v.verified.lock().unwrap();
            for i in 0..MAX_VERIFIED {
                verified.insert(
                    digest(&format!("live-{i}")),
                    (now + 3600, Principal::anonymous()),
                );
            }
        }
        assert!(v.accepts_any(&mint(secret, "u", 3600).unwrap()));
        assert_eq!(
            v.remembered(),
            1,
            "all live and full: forgotten, the new one kept"
        );
    }
}
