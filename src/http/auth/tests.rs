//! The verifier's unit tests: static tokens, built-in JWTs, issuers' tokens, the cache.

use super::*;

/// The resource of the gateway these tests verify for.
const RESOURCE: &str = "http://127.0.0.1:4444";

fn verifier(auth: &AuthConfig) -> Verifier {
    Verifier::new(auth, RESOURCE)
}

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
    let v = verifier(&config(&[], Some(secret)));
    let scopes = ["upstream:alpha".to_owned(), "read".to_owned()];
    let grant = Grant {
        sub: "ops",
        role: Role::Admin,
        scopes: &scopes,
        ttl_secs: 600,
    };
    let admin = accepted(&v, &super::mint(secret, &grant).unwrap());
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
    assert_eq!(accepted(&v, &old).role, Role::Client);
    // A bare static token is the operator's.
    let v = verifier(&config(&["first-token-0123456789"], None));
    let op = accepted(&v, "first-token-0123456789");
    assert_eq!((op.role, op.method), (Role::Admin, Method::StaticToken));
    assert!(op.id.starts_with("token:") && !op.id.contains("first"));
}

#[test]
fn static_tokens_are_checked_by_digest() {
    let v = verifier(&config(
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
    let v = verifier(&config(&[], Some(secret)));
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
    let v = verifier(&config(&[], Some(secret)));
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
    let v = verifier(&config(&[], Some(secret)));
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

/// The principal `token` stands for, which must be accepted without a key fetch.
fn accepted(v: &Verifier, token: &str) -> Arc<Principal> {
    futures_util::FutureExt::now_or_never(v.accepts(token))
        .expect("no key fetch needed")
        .expect("accepted")
}

/// An issuer's signing keys made here, their JWKS as the issuer would publish it.
mod issued {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ring::signature::KeyPair;

    use super::super::jwks::KeySet;
    use super::*;

    pub const ISSUER: &str = "http://127.0.0.1:9/realms/test";

    pub struct Keys {
        pub ec: EncodingKey,
        pub ed: EncodingKey,
        pub rsa: EncodingKey,
        /// The RSA key's public half, PKCS#1 DER: what an attacker has.
        pub rsa_public: Vec<u8>,
        pub jwks: serde_json::Value,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn keys() -> Keys {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::traits::PublicKeyParts;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ec = ring::signature::EcdsaKeyPair::from_pkcs8(alg, ec_pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let ed_pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = ring::signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig",
             "x": b64(&point[1..33]), "y": b64(&point[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.public_key().as_ref())},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256",
             "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        ]});
        Keys {
            ec: EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            ed: EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            rsa: EncodingKey::from_rsa_der(rsa.to_pkcs1_der().unwrap().as_bytes()),
            rsa_public: rsa.to_public_key().to_pkcs1_der().unwrap().into_vec(),
            jwks,
        }
    }

    pub fn config(client_scopes: &[&str]) -> AuthConfig {
        AuthConfig {
            enabled: true,
            issuers: vec![crate::config::IssuerConfig {
                issuer: ISSUER.to_owned(),
                jwks_uri: None,
                tls: None,
                audience: Vec::new(),
                admin_scopes: vec!["mcpgw:admin".to_owned()],
                client_scopes: client_scopes.iter().map(|s| (*s).to_owned()).collect(),
            }],
            ..AuthConfig::default()
        }
    }

    /// A verifier holding `keys`, as if it had fetched them.
    pub fn verifier(auth: &AuthConfig, keys: &Keys) -> Verifier {
        let v = super::verifier(auth);
        let set = KeySet::parse("test", keys.jwks.to_string().as_bytes()).unwrap();
        v.issuers[0].hold(set);
        v
    }

    /// Claims of a good token, for changing.
    pub fn claims() -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "iss": ISSUER, "sub": "svc", "aud": RESOURCE, "client_id": "robot",
            "iat": now, "exp": now + 600, "scope": "openid mcpgw:client",
        })
    }

    pub fn sign(
        alg: Algorithm,
        kid: &str,
        key: &EncodingKey,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// A token whose header says `alg: none`, with no signature.
    pub fn unsigned(claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa"});
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }
}

#[tokio::test]
async fn an_issuers_token_is_accepted_with_each_key_kind_and_maps_to_its_principal() {
    let keys = issued::keys();
    let v = issued::verifier(&issued::config(&["mcpgw:client"]), &keys);
    let claims = issued::claims();
    for (alg, kid, key) in [
        (jsonwebtoken::Algorithm::ES256, "ec", &keys.ec),
        (jsonwebtoken::Algorithm::EdDSA, "ed", &keys.ed),
        (jsonwebtoken::Algorithm::RS256, "rsa", &keys.rsa),
    ] {
        let principal = v.accepts(&issued::sign(alg, kid, key, &claims)).await;
        let principal = principal.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(&*principal.id, "oauth:http://127.0.0.1:9/realms/test#svc");
        assert_eq!(
            (principal.role, principal.method),
            (Role::Client, Method::Issuer)
        );
        assert!(principal.has_scope("mcpgw:client"));
        assert!(
            principal
                .claims
                .iter()
                .any(|(k, v)| &**k == "client_id" && &**v == "robot")
        );
    }
    // An admin scope makes an administrator; an audience under the resource is this gateway.
    let mut admin = issued::claims();
    admin["scope"] = "mcpgw:admin".into();
    admin["aud"] = serde_json::json!(["https://elsewhere.example", format!("{RESOURCE}/mcp")]);
    let token = issued::sign(jsonwebtoken::Algorithm::ES256, "ec", &keys.ec, &admin);
    assert_eq!(v.accepts(&token).await.unwrap().role, Role::Admin);
}

#[tokio::test]
async fn an_issuers_token_with_a_wrong_claim_algorithm_or_key_is_refused() {
    let keys = issued::keys();
    let v = issued::verifier(&issued::config(&["mcpgw:client"]), &keys);
    let now = unix_now();
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = issued::claims();
        claims[name] = value;
        issued::sign(jsonwebtoken::Algorithm::ES256, "ec", &keys.ec, &claims)
    };
    let hs256_with_the_public_key = issued::sign(
        jsonwebtoken::Algorithm::HS256,
        "rsa",
        &jsonwebtoken::EncodingKey::from_secret(&keys.rsa_public),
        &issued::claims(),
    );
    let refused = [
        (
            "another audience",
            with("aud", "https://other.example".into()),
        ),
        (
            "a look-alike audience",
            with("aud", format!("{RESOURCE}.evil.example").into()),
        ),
        (
            "another issuer",
            with("iss", "http://127.0.0.1:9/realms/other".into()),
        ),
        ("expired", with("exp", (now - 60).into())),
        ("not valid yet", with("nbf", (now + 600).into())),
        ("alg none", issued::unsigned(&issued::claims())),
        ("HS256 with the public key", hs256_with_the_public_key),
        (
            "ES256 naming the RSA key",
            issued::sign(
                jsonwebtoken::Algorithm::ES256,
                "rsa",
                &keys.ec,
                &issued::claims(),
            ),
        ),
        (
            "signed by another key under a known kid",
            issued::sign(
                jsonwebtoken::Algorithm::ES256,
                "ec",
                &issued::keys().ec,
                &issued::claims(),
            ),
        ),
    ];
    for (what, token) in refused {
        assert!(v.accepts(&token).await.is_err(), "{what} was accepted");
    }
    assert_eq!(v.remembered(), 0, "nothing refused is remembered");
}

#[tokio::test]
async fn a_token_without_a_role_scope_is_unentitled_unless_client_scopes_is_empty() {
    let keys = issued::keys();
    let mut claims = issued::claims();
    claims["scope"] = "openid profile".into();
    let token = issued::sign(jsonwebtoken::Algorithm::EdDSA, "ed", &keys.ed, &claims);
    let strict = issued::verifier(&issued::config(&["mcpgw:client"]), &keys);
    match strict.accepts(&token).await {
        Err(Refused::Unentitled { scopes, .. }) => assert_eq!(scopes, "mcpgw:client"),
        other => panic!("expected insufficient scope, got {other:?}"),
    }
    let open = issued::verifier(&issued::config(&[]), &keys);
    assert_eq!(open.accepts(&token).await.unwrap().role, Role::Client);
}

#[tokio::test]
async fn an_issuers_token_is_verified_once_then_costs_what_a_remembered_jwt_costs() {
    let keys = issued::keys();
    let v = issued::verifier(&issued::config(&["mcpgw:client"]), &keys);
    let token = issued::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa",
        &keys.rsa,
        &issued::claims(),
    );
    assert!(v.accepts(&token).await.is_ok());
    // The keys gone: only the memory of the verified token can accept it now, with no
    // signature check and no fetch (`accepted` would fail on a fetch).
    v.issuers[0].hold(KeySetForTests::empty());
    let principal = accepted(&v, &token);
    assert_eq!(principal.method, Method::Issuer);
    assert_eq!(v.remembered(), 1);
}

/// Key sets for the tests above.
struct KeySetForTests;

impl KeySetForTests {
    fn empty() -> super::jwks::KeySet {
        super::jwks::KeySet::parse("test", br#"{"keys": []}"#).unwrap()
    }
}

#[tokio::test]
async fn keys_past_their_age_still_verify_when_the_issuer_cannot_be_reached() {
    let keys = issued::keys();
    let v = issued::verifier(&issued::config(&["mcpgw:client"]), &keys);
    let mut stale = super::jwks::KeySet::parse("test", keys.jwks.to_string().as_bytes()).unwrap();
    stale.fetched = std::time::Instant::now()
        .checked_sub(super::issuer::MAX_KEY_AGE * 2)
        .unwrap();
    v.issuers[0].hold(stale);
    // The issuer (port 9 on loopback) refuses the connection: the held keys go on serving.
    let token = issued::sign(
        jsonwebtoken::Algorithm::EdDSA,
        "ed",
        &keys.ed,
        &issued::claims(),
    );
    assert!(v.accepts(&token).await.is_ok());
}
