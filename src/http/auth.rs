//! Bearer auth for the network listener: static tokens from the config, or HS256 JWTs signed
//! with the gateway's secret (`<data-dir>/jwt.secret`, 0600, made on first start) and carrying
//! `aud = "mcpgw"` and an `exp`. `mcpgw token create` mints them.
//!
//! Tokens are compared in constant time, and neither a token nor the header is ever logged.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::AuthConfig;
use crate::headers::Lookup;

/// The 401 for a request without an accepted bearer token; `None` lets it through (as
/// every request when auth is off).
pub fn refusal(auth: &AuthConfig, headers: &dyn Lookup) -> Option<Response> {
    if !auth.enabled {
        return None;
    }
    match bearer(headers) {
        Some(token)
            if accepted(&auth.tokens, token) || jwt_valid(auth.jwt_secret.as_deref(), token) =>
        {
            None
        }
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

fn accepted(tokens: &[String], presented: &str) -> bool {
    // Compare fixed-size digests with a branch-free fold, and check every token, so the time
    // taken depends neither on where a guess goes wrong nor on which token matched.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let presented = digest(presented);
    tokens.iter().fold(false, |hit, t| {
        let diff = digest(t)
            .as_ref()
            .iter()
            .zip(presented.as_ref())
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

fn jwt_valid(secret: Option<&[u8]>, token: &str) -> bool {
    let Some(secret) = secret else { return false };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 5;
    jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret),
        &validation,
    )
    .is_ok()
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
