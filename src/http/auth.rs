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

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    /// Digests of the static tokens.
    tokens: Vec<Digest>,
    /// The JWT key and the rules its tokens are checked by.
    jwt: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
    /// Digests of JWTs that passed, with their `exp`.
    verified: Mutex<HashMap<Digest, u64>>,
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
        Self {
            enabled: auth.enabled,
            tokens: auth.tokens.iter().map(|t| digest(t)).collect(),
            jwt,
            verified: Mutex::default(),
        }
    }

    /// Whether `token` is accepted: one of the static tokens, or a valid JWT.
    fn accepts(&self, token: &str) -> bool {
        let presented = digest(token);
        if matches_any(&self.tokens, &presented) {
            return true;
        }
        let Some((key, validation)) = &self.jwt else {
            return false;
        };
        let now = unix_now();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified
            .get(&presented)
            .is_some_and(|&exp| now <= exp.saturating_add(LEEWAY))
        {
            return true;
        }
        drop(verified);
        let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, validation) else {
            return false;
        };
        let Ok(exp) = u64::try_from(data.claims.exp) else {
            return true;
        };
        verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, &mut exp| now <= exp.saturating_add(LEEWAY));
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(presented, exp);
        true
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

/// The 401 for a request without an accepted bearer token; `None` lets it through (as
/// every request when auth is off).
pub fn refusal(auth: &Verifier, headers: &dyn Lookup) -> Option<Response> {
    if !auth.enabled {
        return None;
    }
    match bearer(headers) {
        Some(token) if auth.accepts(token) => None,
        Some(_) => Some(unauthorized("invalid bearer token")),
        None => Some(unauthorized(
            "missing bearer token (Authorization: Bearer <token>)",
        )),
    }
}

fn bearer(headers: &dyn Lookup) -> Option<&str> {
    let value = headers.text(&header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Whether `presented` is one of `tokens`. Fixed-size digests compared with a branch-free
/// fold, every token checked, so the time taken depends neither on where a guess goes wrong
/// nor on which token matched.
fn matches_any(tokens: &[Digest], presented: &Digest) -> bool {
    tokens.iter().fold(false, |hit, t| {
        let diff = t
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        hit | (diff == 0)
    })
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
}

/// Mint a token valid for `ttl_secs`.
pub fn mint(secret: &[u8], sub: &str, ttl_secs: i64) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + ttl_secs,
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
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the token secret {}: {e} (has `mcpgw serve` run with this --data-dir?)",
            path.display()
        )
    })?;
    hex::decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{} is not a hex-encoded secret", path.display()))
}

/// The data dir's JWT secret, created (32 random bytes, 0600) if missing.
pub fn load_or_create_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        return read_secret(data_dir);
    }
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no randomness available for the token secret"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
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
            enabled: true,
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            jwt_secret: secret.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn static_tokens_are_checked_by_digest() {
        let v = Verifier::new(&config(
            &["first-token-0123456789", "second-token-0123456789"],
            None,
        ));
        assert!(v.accepts("first-token-0123456789"));
        assert!(v.accepts("second-token-0123456789"));
        assert!(!v.accepts("second-token-012345678"));
        assert!(!v.accepts(""));
        // No secret: nothing is remembered, a JWT-looking token is refused.
        assert!(!v.accepts("a.b.c"));
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
            !v.accepts(&with_nbf(now + 600)),
            "valid only in ten minutes"
        );
        assert_eq!(v.remembered(), 0, "a refused token is not remembered");
        assert!(
            v.accepts(&with_nbf(now - 10)),
            "valid since ten seconds ago"
        );
    }

    #[test]
    fn a_verified_jwt_is_remembered_until_it_expires_and_a_forged_one_never() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let v = Verifier::new(&config(&[], Some(secret)));
        let token = mint(secret, "t", 3600).unwrap();
        assert!(v.accepts(&token));
        assert_eq!(v.remembered(), 1);
        assert!(v.accepts(&token), "accepted again from memory");
        assert_eq!(v.remembered(), 1);
        // Signed with another secret, or expired past the leeway: refused, not remembered.
        let forged = mint(b"another-secret-another-secret-00", "t", 3600).unwrap();
        assert!(!v.accepts(&forged));
        let expired = mint(secret, "t", -60).unwrap();
        assert!(!v.accepts(&expired));
        assert_eq!(v.remembered(), 1);
        // What is remembered holds only until `exp` and the leeway.
        let now = unix_now();
        let entry = |exp| {
            v.verified
                .lock()
                .unwrap()
                .insert(digest("remembered-only"), exp);
        };
        entry(now + 60);
        assert!(v.accepts("remembered-only"));
        entry(now - LEEWAY - 2);
        assert!(!v.accepts("remembered-only"));
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
                verified.insert(digest(&i.to_string()), exp);
            }
        }
        assert!(v.accepts(&mint(secret, "t", 3600).unwrap()));
        assert_eq!(v.remembered(), MAX_VERIFIED / 2 + 1, "expired ones dropped");
        {
            let mut verified = v.verified.lock().unwrap();
            for i in 0..MAX_VERIFIED {
                verified.insert(digest(&format!("live-{i}")), now + 3600);
            }
        }
        assert!(v.accepts(&mint(secret, "u", 3600).unwrap()));
        assert_eq!(
            v.remembered(),
            1,
            "all live and full: forgotten, the new one kept"
        );
    }
}
