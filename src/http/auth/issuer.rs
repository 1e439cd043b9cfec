//! Access tokens from the operator's OAuth authorization servers (`[[auth.issuers]]`): JWTs
//! signed by a key of the issuer's JWKS, checked as the MCP authorization spec asks of a
//! resource server.
//!
//! What a token must show: a `kid` naming one of the issuer's keys (the only key, if it has no
//! `kid`), the algorithm that key is for (never `none` nor a MAC: see [`super::jwks`]), `iss`
//! equal to the issuer, an `aud` naming this gateway (RFC 8707: the configured audience, or the
//! gateway's resource or a URI under it), `exp` and `nbf` within the leeway, and a scope that
//! maps to a role.
//!
//! Keys are fetched when first needed and kept. A `kid` not among them makes the issuer's keys
//! fetched again (rotation), at most once per [`REFETCH_INTERVAL`]: a flood of tokens with
//! made-up `kid`s costs the issuer one request per interval, and its tokens are refused
//! meanwhile. Keys older than [`MAX_KEY_AGE`] are fetched again the same way, so a key the
//! issuer withdrew stops verifying new tokens; if that fetch fails, the keys held go on serving.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};

use super::jwks::{Fetcher, Key, KeySet};
use super::{LEEWAY, Refused};
use crate::access::{Method, Principal, Role};
use crate::config::IssuerConfig;

/// The least time between two fetches of one issuer's keys.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Keys this old are fetched again before they verify a token not verified before.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// One configured issuer, its keys, and how its tokens map to principals.
pub struct Issuer {
    config: IssuerConfig,
    /// Audiences a token must name one of.
    audiences: Vec<String>,
    /// The gateway's resource: a token for a URI under it is for this gateway too.
    resource: String,
    fetcher: Fetcher,
    /// The keys as last fetched.
    keys: Mutex<Option<Arc<KeySet>>>,
    /// Held while fetching (one fetch at a time); when the last fetch began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// The claims of an issuer's access token that mcpgw reads (RFC 9068 names).
#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    sub: Option<String>,
    aud: OneOrMany,
    exp: u64,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<OneOrMany>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let slice = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many.as_slice(),
        };
        slice.iter().map(String::as_str)
    }
}

impl Issuer {
    /// The issuer `config` names, for a gateway whose resource is `resource`.
    pub fn new(config: IssuerConfig, resource: &str) -> Self {
        let audiences = if config.audience.is_empty() {
            vec![resource.to_owned()]
        } else {
            config.audience.clone()
        };
        Self {
            fetcher: Fetcher::new(config.tls.clone()),
            config,
            audiences,
            resource: resource.to_owned(),
            keys: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// Its identifier.
    pub fn id(&self) -> &str {
        &self.config.issuer
    }

    /// Its configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// Whom `token` (whose header is `header`) stands for, and until when.
    pub async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<(Principal, u64), Refused> {
        let kid = header.kid.as_deref();
        let held = self.held();
        let fresh = held
            .as_ref()
            .is_some_and(|k| k.fetched.elapsed() < MAX_KEY_AGE);
        let keys = match held {
            Some(keys) if fresh && keys.find(kid).is_some() => keys,
            // Unknown `kid`, stale or no keys: the slow path, off the common one's future.
            held => Box::pin(self.refresh(held)).await.ok_or(Refused::Invalid)?,
        };
        let key = keys.find(kid).ok_or(Refused::Invalid)?;
        self.check(token, header.alg, key)
    }

    fn held(&self) -> Option<Arc<KeySet>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetch the keys again unless another task just did or the last fetch was less than
    /// [`REFETCH_INTERVAL`] ago; the keys to use after (`held` if nothing better came).
    async fn refresh(&self, held: Option<Arc<KeySet>>) -> Option<Arc<KeySet>> {
        let mut last = self.fetching.lock().await;
        let current = self.held();
        let replaced = match (&current, &held) {
            (Some(now), Some(before)) => !Arc::ptr_eq(now, before),
            (now, before) => now.is_some() != before.is_some(),
        };
        if replaced || last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return current;
        }
        *last = Some(Instant::now());
        match self
            .fetcher
            .keys(&self.config.issuer, self.config.jwks_uri.as_ref())
            .await
        {
            Ok(keys) => {
                tracing::info!(issuer = %self.config.issuer, keys = keys.keys.len(), "issuer keys fetched");
                let keys = Arc::new(keys);
                *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(keys.clone());
                Some(keys)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.config.issuer, error = %error, "cannot fetch the issuer's keys");
                current
            }
        }
    }

    /// The signature and claims of `token`, which names `alg`, checked with `key`.
    fn check(&self, token: &str, alg: Algorithm, key: &Key) -> Result<(Principal, u64), Refused> {
        if alg != key.alg {
            return Err(Refused::Invalid);
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Checked below: RFC 8707 lets the audience be any URI of this resource.
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|_| Refused::Invalid)?
            .claims;
        if !claims.aud.iter().any(|aud| self.is_for_us(aud)) {
            return Err(Refused::Invalid);
        }
        let principal = self.principal(&claims)?;
        Ok((principal, claims.exp))
    }

    /// Whether `aud` names this gateway.
    fn is_for_us(&self, aud: &str) -> bool {
        self.audiences.iter().any(|a| a == aud)
            || aud
                .strip_prefix(self.resource.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The principal of a token whose signature and claims passed: its role from its scopes.
    fn principal(&self, claims: &Claims) -> Result<Principal, Refused> {
        let client = claims.client_id.as_deref().or(claims.azp.as_deref());
        let sub = claims.sub.as_deref().or(client).ok_or(Refused::Invalid)?;
        let id = format!("oauth:{}#{sub}", claims.iss);
        let mut scopes: Vec<&str> = claims
            .scope
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if let Some(scp) = &claims.scp {
            scopes.extend(scp.iter().flat_map(str::split_whitespace));
        }
        let carries = |wanted: &[String]| wanted.iter().any(|w| scopes.contains(&w.as_str()));
        let role = if carries(&self.config.admin_scopes) {
            Role::Admin
        } else if self.config.client_scopes.is_empty() || carries(&self.config.client_scopes) {
            Role::Client
        } else {
            return Err(Refused::Unentitled {
                principal: id.into(),
                scopes: self.config.client_scopes.join(" "),
            });
        };
        let mut principal = Principal::new(id, role, Method::Issuer).with_scopes(scopes);
        let mut claimed: Vec<(Box<str>, Box<str>)> =
            vec![("iss".into(), claims.iss.as_str().into())];
        if let Some(client) = client {
            claimed.push(("client_id".into(), client.into()));
        }
        principal.claims = claimed.into();
        Ok(principal)
    }

    /// Put `keys` in place, as a fetch would (tests).
    #[cfg(test)]
    pub fn hold(&self, keys: KeySet) {
        *self.keys.lock().unwrap() = Some(Arc::new(keys));
    }
}

/// The `iss` a JWT claims, read without verifying anything: only to pick the issuer whose keys
/// will verify it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Peek>(&bytes).ok()?.iss
}
