//! The listener as an OAuth 2.1 resource server (issue 20, item 2), against a real OpenID
//! provider (npm `oidc-provider`, `tests/fixtures/ts/oidc_provider.mjs`) and a tiny issuer of
//! the test's own for what that provider cannot be made to do (ES256 and EdDSA keys, OpenID
//! discovery under a path, counting key fetches). Tokens the provider would never mint
//! (expired, not yet valid, another issuer, `alg: none`, HS256 keyed with its public key) are
//! signed here with the provider's own key, so that each is refused for its one defect.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::upstream::Upstream;
use common::{Dir, Gateway};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The gateway fetches an issuer's keys again at most this often (`REFETCH_INTERVAL`).
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The OpenID provider fixture, killed on drop.
struct Provider {
    child: Child,
    /// Its stdin (where `rotate` goes) and stdout (where its answer comes).
    io: std::sync::Mutex<(ChildStdin, BufReader<std::process::ChildStdout>)>,
    issuer: String,
    keys_file: std::path::PathBuf,
}

impl Provider {
    fn start(dir: &Dir) -> Self {
        let script = common::prereq::typescript_sdk().join("oidc_provider.mjs");
        let keys_file = dir.join("provider-keys.json");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&keys_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {}: {e}", script.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        let issuer = ready
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("oidc_provider.mjs did not start: {ready:?}"))
            .to_owned();
        Self {
            child,
            io: std::sync::Mutex::new((stdin, stdout)),
            issuer,
            keys_file,
        }
    }

    /// Make a new key the signing one (the old one stays published); its `kid`.
    fn rotate(&self) -> String {
        let (stdin, stdout) = &mut *self.io.lock().unwrap();
        writeln!(stdin, "rotate").unwrap();
        // oidc-provider prints notices of its own on stdout.
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the provider exited"
            );
            if let Some(kid) = line.trim().strip_prefix("ROTATED ") {
                return kid.to_owned();
            }
        }
    }

    /// The current signing key: its `kid`, and the key to sign with.
    fn signing_key(&self) -> (String, rsa::RsaPrivateKey) {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let keys: Value = serde_json::from_slice(&std::fs::read(&self.keys_file).unwrap()).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(keys[0]["der"].as_str().unwrap())
            .unwrap();
        (
            keys[0]["kid"].as_str().unwrap().to_owned(),
            rsa::RsaPrivateKey::from_pkcs1_der(&der).unwrap(),
        )
    }

    /// A client-credentials access token for `client` (secret `<client>-secret`).
    async fn token(
        &self,
        http: &reqwest::Client,
        client: &str,
        scope: &str,
        resource: &str,
    ) -> String {
        let answer = http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("scope", scope)
                    .append_pair("resource", resource)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        let answer: Value = answer.json().await.unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {client}: {answer}"))
            .to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway accepting `issuer`'s tokens, with the upstream fixture registered as `rs`.
fn gateway(dir: &Dir, issuer: &str) -> (Gateway, Upstream) {
    let config = dir.join("mcpgw.toml");
    std::fs::write(
        &config,
        format!("[auth]\n[[auth.issuers]]\nissuer = \"{issuer}\"\n"),
    )
    .unwrap();
    let gw = Gateway::start(dir, &["--config", config.to_str().unwrap()]);
    let up = Upstream::start(&[]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    (gw, up)
}

fn http() -> reqwest::Client {
    common::clients::http(None)
}

/// A provider, a gateway accepting its tokens with the upstream fixture behind it, and what
/// a test drives them with.
struct WithProvider {
    provider: Provider,
    gw: Gateway,
    _up: Upstream,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    // Last: the provider's key file and the gateway's data live here until both are gone.
    _dir: Dir,
}

impl WithProvider {
    fn start() -> Self {
        let dir = Dir::new();
        let provider = Provider::start(&dir);
        let (gw, up) = gateway(&dir, &provider.issuer);
        Self {
            provider,
            gw,
            _up: up,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: http(),
            _dir: dir,
        }
    }

    /// What the tests use of it.
    fn parts(
        &self,
    ) -> (
        &Provider,
        &Gateway,
        &tokio::runtime::Runtime,
        &reqwest::Client,
    ) {
        (&self.provider, &self.gw, &self.rt, &self.http)
    }
}

/// What a POST of `body` to `url` with `token` got: status, `WWW-Authenticate`, JSON body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: &Value,
) -> (u16, String, Value) {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(body);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let session_id = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body: Value = response.json().await.unwrap_or(Value::Null);
    if let Some(id) = session_id {
        body["_session"] = id.into();
    }
    (status, challenge, body)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "oauth-test", "version": "1"}}})
}

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "rs__echo", "arguments": {"text": text}}})
}

/// A session opened with `token`: its id.
async fn open(http: &reqwest::Client, url: &str, token: &str) -> String {
    let (status, _, body) = post(http, url, token, None, &initialize()).await;
    assert_eq!(status, 200, "initialize: {body}");
    let session = body["_session"].as_str().unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(http, url, token, Some(&session), &note).await;
    session
}

/// Whether a call of `rs__echo` with `token` in `session` came back with its text.
async fn echoes(http: &reqwest::Client, url: &str, token: &str, session: &str, i: u64) -> bool {
    let text = format!("call-{i}");
    let (status, _, body) = post(http, url, token, Some(session), &echo(i, &text)).await;
    status == 200 && body.to_string().contains(&text)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn tokens_from_a_real_openid_provider_keep_working_across_its_key_rotation() {
    let with = WithProvider::start();
    let (provider, gw, rt, http) = with.parts();
    let url = format!("http://{}/mcp", gw.addr);
    let (first_kid, _) = provider.signing_key();
    let token = rt.block_on(provider.token(http, "tool-runner", "mcpgw:client", &url));
    let session = rt.block_on(open(http, &url, &token));
    // The keys were fetched for the first token; a new `kid` makes them fetched again only
    // once the interval has passed.
    let fetched_at = Instant::now();
    let current = Arc::new(std::sync::Mutex::new(token.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let caller = {
        let (http, url, session) = (http.clone(), url.clone(), session.clone());
        let (current, stop) = (current.clone(), stop.clone());
        let (calls, failures) = (calls.clone(), failures.clone());
        rt.spawn(async move {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                let token = current.lock().unwrap().clone();
                if !echoes(&http, &url, &token, &session, i).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                calls.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    std::thread::sleep(
        REFETCH_INTERVAL.saturating_sub(fetched_at.elapsed()) + Duration::from_secs(1),
    );
    let new_kid = provider.rotate();
    assert_ne!(new_kid, first_kid);
    let rotated = rt.block_on(provider.token(http, "tool-runner", "mcpgw:client", &url));
    let header = jsonwebtoken::decode_header(&rotated).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(new_kid.as_str()),
        "signed with the new key"
    );
    let before = calls.load(Ordering::Relaxed);
    *current.lock().unwrap() = rotated.clone();
    // Calls go on with the new token, then the old one still works (its key is published).
    while calls.load(Ordering::Relaxed) < before + 20 {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(caller).unwrap();
    assert!(rt.block_on(echoes(http, &url, &token, &session, 9_999)));
    assert!(rt.block_on(echoes(http, &url, &rotated, &session, 10_000)));
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} calls across the rotation\n--- gateway log\n{}",
        calls.load(Ordering::Relaxed),
        gw.log()
    );
    assert!(calls.load(Ordering::Relaxed) > 40);
    gw.wait_log_count("issuer keys fetched", 2, Duration::from_secs(5));
}

#[test]
fn tokens_not_issued_for_this_gateway_or_by_its_issuer_are_refused_each_for_its_defect() {
    let with = WithProvider::start();
    let (provider, gw, rt, http) = with.parts();
    let url = format!("http://{}/mcp", gw.addr);
    let (kid, key) = provider.signing_key();
    let sign_with = |alg: Algorithm, key: &EncodingKey, claims: &Value| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    };
    let private = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
    };
    let good = json!({"iss": provider.issuer, "sub": "tool-runner", "client_id": "tool-runner",
        "aud": url, "scope": "mcpgw:client", "iat": now(), "exp": now() + 600});
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        claims[name] = value;
        sign_with(Algorithm::RS256, &private, &claims)
    };
    // The one this test signs right is accepted: each refusal below is for its one defect.
    let crafted = sign_with(Algorithm::RS256, &private, &good);
    assert_eq!(
        rt.block_on(post(http, &url, &crafted, None, &initialize()))
            .0,
        200
    );

    let public_der = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        key.to_public_key().to_pkcs1_der().unwrap().into_vec()
    };
    let public_pem = {
        use rsa::pkcs1::{EncodeRsaPublicKey, LineEnding};
        key.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap()
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes()),
        b64(good.to_string().as_bytes())
    );
    let other_audience = rt.block_on(provider.token(
        http,
        "tool-runner",
        "mcpgw:client",
        "https://other.example/mcp",
    ));
    let refused = [
        ("wrong audience (minted by the provider)", other_audience),
        (
            "wrong audience (a look-alike host)",
            with("aud", format!("http://{}.evil.example/mcp", gw.addr).into()),
        ),
        ("wrong issuer", with("iss", "http://127.0.0.1:1".into())),
        ("expired", with("exp", (now() - 120).into())),
        ("not yet valid", with("nbf", (now() + 600).into())),
        ("alg none", unsigned),
        (
            "HS256 keyed with the public key (DER)",
            sign_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(&public_der),
                &good,
            ),
        ),
        (
            "HS256 keyed with the public key (PEM)",
            sign_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(public_pem.as_bytes()),
                &good,
            ),
        ),
    ];
    for (what, token) in refused {
        let (status, challenge, body) = rt.block_on(post(http, &url, &token, None, &initialize()));
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"http://{}/.well-known/oauth-protected-resource/mcp\"",
                gw.addr
            )),
            "{what}: {challenge}"
        );
    }
    let log = gw.log();
    assert!(!log.contains(&crafted[..40]), "a token was logged");
}

#[test]
fn roles_come_from_scopes_a_token_without_one_gets_403_insufficient_scope() {
    let with = WithProvider::start();
    let (provider, gw, rt, http) = with.parts();
    let base = format!("http://{}", gw.addr);
    let url = format!("{base}/mcp");
    rt.block_on(async {
        let outsider = provider.token(http, "outsider", "other", &url).await;
        let (status, challenge, body) = post(http, &url, &outsider, None, &initialize()).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"mcpgw:client\""),
            "{challenge}"
        );
        assert_eq!(body["error"]["code"], "forbidden");

        let client = provider
            .token(http, "tool-runner", "mcpgw:client", &url)
            .await;
        let operator = provider
            .token(http, "operator", "mcpgw:client mcpgw:admin", &url)
            .await;
        let gateways = |token: String| {
            let http = http.clone();
            let url = format!("{base}/gateways");
            async move {
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), challenge)
            }
        };
        let (status, challenge) = gateways(client).await;
        assert_eq!(status, 403, "a client on an admin route");
        let challenge = challenge.unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"mcpgw:admin\"")
                && challenge.contains(&format!(
                    "resource_metadata=\"{base}/.well-known/oauth-protected-resource\""
                )),
            "{challenge}"
        );
        assert_eq!(
            gateways(operator).await.0,
            200,
            "an operator on an admin route"
        );
    });
}

#[test]
fn protected_resource_metadata_is_served_to_anyone_for_the_gateway_and_each_mcp_endpoint() {
    let with = WithProvider::start();
    let (provider, gw, rt, http) = with.parts();
    let base = format!("http://{}", gw.addr);
    rt.block_on(async {
        for suffix in ["", "/mcp", "/servers/rs/mcp", "/sse", "/ws"] {
            let url = format!("{base}/.well-known/oauth-protected-resource{suffix}");
            let response = http.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let doc: Value = response.json().await.unwrap();
            assert_eq!(doc["resource"], format!("{base}{suffix}"), "{url}");
            assert_eq!(doc["authorization_servers"], json!([provider.issuer]));
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
            assert_eq!(doc["scopes_supported"], json!(["mcpgw:admin", "mcpgw:client"]));
        }
        let other = format!("{base}/.well-known/oauth-protected-resource/gateways");
        assert_eq!(http.get(&other).send().await.unwrap().status(), 404);
        // A request without a token is pointed at its endpoint's metadata.
        let response = http
            .post(format!("{base}/servers/rs/mcp"))
            .json(&initialize())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            format!(
                "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/servers/rs/mcp\", scope=\"mcpgw:client\""
            )
            .as_str()
        );
    });
}

#[test]
fn the_typescript_sdk_finds_the_authorization_server_from_the_401_and_calls_a_tool() {
    let with = WithProvider::start();
    let (provider, gw, _, _) = with.parts();
    let url = format!("http://{}/mcp", gw.addr);
    let script = common::prereq::typescript_sdk().join("oauth_client.mjs");
    let out = Command::new("node")
        .arg(&script)
        .args([
            &url,
            "tool-runner",
            "tool-runner-secret",
            &provider.issuer,
            "mcpgw:client",
            "rs__echo",
            "found-by-discovery",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n--- gateway log\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let fetched: Vec<&str> = report["fetched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let metadata = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        gw.addr
    );
    let position = |wanted: &str| fetched.iter().position(|u| u.starts_with(wanted));
    let (Some(first), Some(prm), Some(token)) = (
        position(&url),
        position(&metadata),
        position(&format!("{}/token", provider.issuer)),
    ) else {
        panic!("the SDK did not take the discovery path: {fetched:?}");
    };
    assert!(first < prm && prm < token, "{fetched:?}");
    assert!(
        report["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("rs__echo"))
    );
    assert!(
        report["result"].to_string().contains("found-by-discovery"),
        "{report}"
    );
}

/// An issuer of the test's own under a path, publishing only OpenID discovery, with an ES256
/// and an EdDSA key, over plain HTTP or HTTPS; it counts the fetches of its keys. A few lines
/// of HTTP/1.1 written here: one answer per connection.
struct OwnIssuer {
    issuer: String,
    jwks_fetches: Arc<AtomicUsize>,
    ec: EncodingKey,
    ed: EncodingKey,
    _server: tokio::task::JoinHandle<()>,
}

impl OwnIssuer {
    /// Listening on 127.0.0.1, named `host` in its URLs, serving HTTPS with `tls`.
    async fn start(host: &str, tls: Option<rustls::ServerConfig>) -> Self {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ec = ring::signature::EcdsaKeyPair::from_pkcs8(alg, ec_pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref().to_vec();
        let ed_pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = ring::signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig",
             "x": b64(&point[1..33]), "y": b64(&point[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
             "x": b64(ed.public_key().as_ref())},
        ]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = format!("{scheme}://{host}:{port}/tenant");
        let metadata = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")});
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let documents = Arc::new((metadata.to_string(), jwks.to_string(), jwks_fetches.clone()));
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (documents, acceptor) = (documents.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                answer(tls, &documents).await;
                            }
                        }
                        None => answer(tcp, &documents).await,
                    }
                });
            }
        });
        Self {
            issuer,
            jwks_fetches,
            ec: EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            ed: EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            _server: server,
        }
    }

    fn sign(&self, alg: Algorithm, kid: &str, aud: &str) -> String {
        let key = if alg == Algorithm::EdDSA {
            &self.ed
        } else {
            &self.ec
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        let claims = json!({"iss": self.issuer, "sub": "svc", "aud": aud,
            "scope": "mcpgw:client", "iat": now(), "exp": now() + 600});
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }
}

/// Answer one request on `io`: the metadata, the keys (counted), or 404.
async fn answer<S>(mut io: S, documents: &(String, String, Arc<AtomicUsize>))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    let (metadata, jwks, fetches) = documents;
    let (status, body) = match path {
        "/tenant/.well-known/openid-configuration" => ("200 OK", metadata.as_str()),
        "/tenant/keys" => {
            fetches.fetch_add(1, Ordering::Relaxed);
            ("200 OK", jwks.as_str())
        }
        _ => ("404 Not Found", "{}"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.shutdown().await;
}

#[test]
fn a_flood_of_unknown_kids_makes_the_gateway_fetch_the_issuers_keys_at_most_once() {
    let dir = Dir::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let issuer = rt.block_on(OwnIssuer::start("127.0.0.1", None));
    let (gw, _up) = gateway(&dir, &issuer.issuer);
    let url = format!("http://{}/mcp", gw.addr);
    let http = http();
    rt.block_on(async {
        // Found by OpenID discovery under the issuer's path (RFC 8414's location is a 404).
        let es256 = issuer.sign(Algorithm::ES256, "ec", &url);
        assert_eq!(post(&http, &url, &es256, None, &initialize()).await.0, 200);
        assert_eq!(issuer.jwks_fetches.load(Ordering::Relaxed), 1);
        let started = Instant::now();
        for i in 0..200 {
            let forged = issuer.sign(Algorithm::ES256, &format!("made-up-{i}"), &url);
            let (status, challenge, _) = post(&http, &url, &forged, None, &initialize()).await;
            assert_eq!(status, 401);
            assert!(challenge.contains("invalid_token"));
        }
        let fetches = issuer.jwks_fetches.load(Ordering::Relaxed);
        let intervals = started.elapsed().as_secs() / REFETCH_INTERVAL.as_secs() + 1;
        assert!(
            fetches <= 1 + intervals as usize,
            "{fetches} fetches for 200 unknown kids in {:?}",
            started.elapsed()
        );
        // Known keys still verify, with no fetch: EdDSA as well as ES256.
        let before = issuer.jwks_fetches.load(Ordering::Relaxed);
        let eddsa = issuer.sign(Algorithm::EdDSA, "ed", &url);
        assert_eq!(post(&http, &url, &eddsa, None, &initialize()).await.0, 200);
        assert_eq!(issuer.jwks_fetches.load(Ordering::Relaxed), before);
    });
}

#[test]
fn an_issuer_over_plain_http_off_loopback_is_refused_at_start() {
    let dir = Dir::new();
    let config = dir.join("mcpgw.toml");
    std::fs::write(
        &config,
        "[auth]\n[[auth.issuers]]\nissuer = \"http://idp.example\"\n",
    )
    .unwrap();
    let (_, stderr) = dir.run_expect(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        stderr.contains("auth.issuers.issuer") && stderr.contains("https"),
        "{stderr}"
    );
}

#[test]
fn an_https_issuer_is_trusted_through_its_ca_cert_and_its_name_is_verified() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (cert, key) = pki.localhost_only();
    let tls = rustls::ServerConfig::builder_with_provider(mcpgw::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            mcpgw::tls::pem::certs_from_file(&cert).unwrap(),
            mcpgw::tls::pem::key_from_file(&key).unwrap(),
        )
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The certificate names `localhost` only: reached as 127.0.0.1, the name does not match.
    let named = rt.block_on(OwnIssuer::start("localhost", Some(tls.clone())));
    let by_ip = rt.block_on(OwnIssuer::start("127.0.0.1", Some(tls)));
    let http = http();
    for (issuer, expected) in [(&named, 200), (&by_ip, 401)] {
        let gw_dir = Dir::new();
        let config = gw_dir.join("mcpgw.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\n[[auth.issuers]]\nissuer = \"{}\"\nca_cert = \"{}\"\n",
                issuer.issuer,
                pki.s("ca.crt")
            ),
        )
        .unwrap();
        let gw = Gateway::start(&gw_dir, &["--config", config.to_str().unwrap()]);
        let url = format!("http://{}/mcp", gw.addr);
        let token = issuer.sign(Algorithm::ES256, "ec", &url);
        let (status, _, body) = rt.block_on(post(&http, &url, &token, None, &initialize()));
        assert_eq!(
            status,
            expected,
            "{}: {body}\n--- log\n{}",
            issuer.issuer,
            gw.log()
        );
        if expected == 401 {
            let log =
                gw.wait_log_count("cannot fetch the issuer's keys", 1, Duration::from_secs(5));
            assert_eq!(issuer.jwks_fetches.load(Ordering::Relaxed), 0, "{log}");
        }
    }
}
