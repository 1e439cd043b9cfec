//! An issuer's signing keys: its JWKS, found through its metadata (RFC 8414, then OpenID
//! discovery) unless configured, fetched with the gateway's own HTTP/1.1 client
//! ([`crate::h1::client`]: no redirects followed, the issuer's name verified on https), under a
//! time limit and a size cap. The built-in destination rules apply ([`UrlPolicy::default`]): a
//! `jwks_uri` that an issuer's metadata points at a cloud metadata service is not dialled.
//!
//! Only keys that can verify a signature are kept, each with the one algorithm it is for (its
//! `alg`, or the one its type implies): a symmetric (`oct`) key, an encryption key and an
//! `HS*` or unknown algorithm are dropped, so a token can never pick a MAC over a public key.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::destination::UrlPolicy;
use crate::h1::client::{Pool, Wait, request};

/// How long one fetch (connection, request, whole body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest metadata document or key set read; past it the fetch fails.
const MAX_DOCUMENT: usize = 256 * 1024;

/// Why an issuer's keys could not be had. Names the URL and what went wrong, never a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection or no answer.
    #[error("{url}: {detail}")]
    Unreachable {
        /// What was fetched.
        url: String,
        /// Why it failed.
        detail: String,
    },
    /// Not answered within the fetch time limit.
    #[error("{url}: no complete answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout {
        /// What was fetched.
        url: String,
    },
    /// An answer other than 200 (a redirect included: none is followed).
    #[error("{url}: answered HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// A body larger than the size cap.
    #[error("{url}: the answer exceeds {MAX_DOCUMENT} bytes")]
    TooLarge {
        /// What was fetched.
        url: String,
    },
    /// Not the JSON document expected.
    #[error("{url}: not {expected} ({detail})")]
    Malformed {
        /// What was fetched.
        url: String,
        /// What it should have been.
        expected: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// Metadata published for another issuer (RFC 8414 section 3.3).
    #[error("{url}: its `issuer` is {found:?}, not {expected:?}")]
    OtherIssuer {
        /// The metadata's URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// What the document says.
        found: String,
    },
    /// Neither metadata document could be had.
    #[error("no metadata for {issuer} (configure `jwks_uri`): {first}; {second}")]
    NoMetadata {
        /// The issuer.
        issuer: String,
        /// What the RFC 8414 location said.
        first: Box<FetchError>,
        /// What the OpenID location said.
        second: Box<FetchError>,
    },
}

/// One verification key and the algorithm it verifies.
#[derive(Debug)]
pub struct Key {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The one algorithm a token signed with it may name.
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// An issuer's verification keys as last fetched.
#[derive(Debug)]
pub struct KeySet {
    /// The usable keys.
    pub keys: Vec<Key>,
    /// When they were fetched.
    pub fetched: Instant,
}

impl KeySet {
    /// The keys of a JWKS document; those that cannot verify a signature are left out.
    pub fn parse(url: &str, body: &[u8]) -> Result<Self, FetchError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|e| FetchError::Malformed {
                url: url.to_owned(),
                expected: "a JWK set",
                detail: e.to_string(),
            })?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| usable(&jwk))
            .collect();
        Ok(Self {
            keys,
            fetched: Instant::now(),
        })
    }

    /// The key a token's `kid` names; without a `kid`, the only key, if there is one.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// `jwk` as a verification key, if it is one.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)) => return None,
        (Some(alg), params) => signing(*alg).filter(|a| fits(*a, params))?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (None, AlgorithmParameters::OctetKeyPair(okp)) => {
            (okp.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)?
        }
        (None, _) => return None,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// The signature algorithm `alg` names, if it is an asymmetric one.
fn signing(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Whether a key of type `params` can carry `alg` (a JWK whose `alg` and `kty` disagree is
/// not used).
fn fits(alg: Algorithm, params: &AlgorithmParameters) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (alg, &ec.curve),
            (ES256, EllipticCurve::P256) | (ES384, EllipticCurve::P384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            alg == EdDSA && okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// Fetches an issuer's documents: its TLS config (https) and the pools' wait.
#[derive(Debug)]
pub struct Fetcher {
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    wait: std::sync::Arc<Wait>,
    destinations: std::sync::Arc<UrlPolicy>,
}

impl Fetcher {
    /// A fetcher using `tls` for https URLs.
    pub fn new(tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        Self {
            tls,
            // Key fetches are rare and not latency-critical: never spin for their answers.
            wait: std::sync::Arc::new(Wait::new(Duration::ZERO)),
            destinations: std::sync::Arc::default(),
        }
    }

    /// The keys of `issuer`: from `jwks_uri`, or from the one its metadata names.
    pub async fn keys(
        &self,
        issuer: &str,
        jwks_uri: Option<&url::Url>,
    ) -> Result<KeySet, FetchError> {
        let found;
        let uri = match jwks_uri {
            Some(uri) => uri,
            None => {
                found = self.discover(issuer).await?;
                &found
            }
        };
        let body = self.get(uri).await?;
        KeySet::parse(uri.as_str(), &body)
    }

    /// The `jwks_uri` of `issuer`'s metadata: RFC 8414's location first, then OpenID's.
    async fn discover(&self, issuer: &str) -> Result<url::Url, FetchError> {
        let (oauth, openid) = metadata_urls(issuer);
        let first = match self.jwks_uri_from(issuer, &oauth).await {
            Ok(uri) => return Ok(uri),
            Err(e) => e,
        };
        self.jwks_uri_from(issuer, &openid)
            .await
            .map_err(|second| FetchError::NoMetadata {
                issuer: issuer.to_owned(),
                first: Box::new(first),
                second: Box::new(second),
            })
    }

    /// The `jwks_uri` of the metadata at `url`, which must be `issuer`'s.
    async fn jwks_uri_from(&self, issuer: &str, url: &url::Url) -> Result<url::Url, FetchError> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let body = self.get(url).await?;
        let malformed = |detail: String| FetchError::Malformed {
            url: url.to_string(),
            expected: "authorization server metadata with a `jwks_uri`",
            detail,
        };
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        if metadata.issuer != issuer {
            return Err(FetchError::OtherIssuer {
                url: url.to_string(),
                expected: issuer.to_owned(),
                found: metadata.issuer,
            });
        }
        let uri = url::Url::parse(&metadata.jwks_uri).map_err(|e| malformed(e.to_string()))?;
        // The keys come from where the issuer is: never plain http to a host other than the
        // issuer's own loopback one.
        let issuer_url = url::Url::parse(issuer).map_err(|e| malformed(e.to_string()))?;
        if uri.scheme() != "https" && (uri.scheme() != "http" || uri.host() != issuer_url.host()) {
            return Err(malformed(format!(
                "its jwks_uri {uri} is neither https nor on the issuer's host"
            )));
        }
        Ok(uri)
    }

    /// The body of a `GET url` answered 200, whole, within the time and size limits.
    async fn get(&self, url: &url::Url) -> Result<Bytes, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_unbounded(url))
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.to_string(),
            })?
    }

    async fn get_unbounded(&self, url: &url::Url) -> Result<Bytes, FetchError> {
        let unreachable = |detail: String| FetchError::Unreachable {
            url: url.to_string(),
            detail,
        };
        let tls = (url.scheme() == "https")
            .then(|| self.tls.clone())
            .flatten();
        let pool = std::sync::Arc::new(
            Pool::new(url, None, tls, self.wait.clone(), self.destinations.clone())
                .map_err(|e| unreachable(e.to_string()))?,
        );
        let target: http::Uri = url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| unreachable(e.to_string()))?;
        let own: [(&[u8], &[u8]); 2] = [
            (b"accept", b"application/json"),
            (b"user-agent", request::AGENT.as_bytes()),
        ];
        let bytes = request::write(
            "GET",
            &target,
            pool.authority(),
            &http::HeaderMap::new(),
            &[],
            &own,
            b"",
        );
        let answered = pool
            .send(&bytes)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if answered.status != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: answered.status,
            });
        }
        let mut body = answered.body;
        let mut out = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let frame = frame.map_err(|e| unreachable(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                if out.len() + data.len() > MAX_DOCUMENT {
                    return Err(FetchError::TooLarge {
                        url: url.to_string(),
                    });
                }
                out.extend_from_slice(data);
            }
        }
        Ok(out.into())
    }
}

/// Where `issuer`'s metadata is: RFC 8414 inserts the well-known segment before the issuer's
/// path; OpenID Connect Discovery appends it.
pub fn metadata_urls(issuer: &str) -> (url::Url, url::Url) {
    let base = url::Url::parse(issuer).expect("issuers are validated URLs");
    let path = base.path().trim_end_matches('/').to_owned();
    let mut oauth = base.clone();
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = base;
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    (oauth, openid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_rfc_8414_and_openid_put_it() {
        let (oauth, openid) = metadata_urls("https://idp.example/realms/ops");
        assert_eq!(
            oauth.as_str(),
            "https://idp.example/.well-known/oauth-authorization-server/realms/ops"
        );
        assert_eq!(
            openid.as_str(),
            "https://idp.example/realms/ops/.well-known/openid-configuration"
        );
        let (oauth, openid) = metadata_urls("http://127.0.0.1:9000");
        assert_eq!(
            oauth.as_str(),
            "http://127.0.0.1:9000/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            openid.as_str(),
            "http://127.0.0.1:9000/.well-known/openid-configuration"
        );
    }

    #[test]
    fn only_asymmetric_signing_keys_are_kept_each_with_its_one_algorithm() {
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VWw";
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird", "kid": "unknown"}
        ]});
        let keys = KeySet::parse("test", set.to_string().as_bytes()).unwrap();
        let kept: Vec<_> = keys
            .keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.alg))
            .collect();
        assert_eq!(
            kept,
            [
                ("rsa".to_owned(), Algorithm::RS256),
                ("ed".to_owned(), Algorithm::EdDSA)
            ]
        );
        assert!(keys.find(Some("secret")).is_none());
        assert!(keys.find(None).is_none(), "two keys: a kid is needed");
    }
}
