//! Roles and owners (issue 20): a client reaches the MCP endpoints and nothing else, an
//! administrator reaches everything, a verified client certificate is a principal of its own,
//! and a session answers only the principal that opened it, on every transport.

mod common;

use std::time::Duration;

use common::clients::{SseSession, Streamable, http};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef01";
const OPERATOR: &str = "operator-token-0123456789abc";

/// A gateway with two client tokens (alice, bob) and the operator's bare token, and the
/// fixture upstream registered as `rs`.
fn two_clients(dir: &Dir, extra: &[&str]) -> (Upstream, Gateway) {
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!(
            "[auth]\ntokens = [\n  \"{OPERATOR}\",\n  {{ token = \"{ALICE}\", name = \"alice\", role = \"client\" }},\n  {{ token = \"{BOB}\", name = \"bob\" }},\n]\n"
        ),
    )
    .unwrap();
    let up = Upstream::start(&[]);
    let mut args = vec!["--config", "mcpgw.toml"];
    args.extend_from_slice(extra);
    let gw = Gateway::start(dir, &args);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    (up, gw)
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[test]
fn a_client_token_gets_403_on_every_admin_route_and_reaches_the_mcp_endpoints() {
    let dir = Dir::new();
    let (_up, gw) = two_clients(&dir, &[]);
    let (minted, _) = dir.run_expect(&["token", "create", "--sub", "low-priv-client"], 0);
    let (admin, _) = dir.run_expect(&["token", "create", "--sub", "ops", "--role", "admin"], 0);
    let base = format!("http://{}", gw.addr);
    let client = http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let registration = json!({"name": "evil", "url": "http://127.0.0.1:9/mcp"});
        for token in [ALICE, BOB, minted.trim()] {
            let admin_routes = [
                client.get(format!("{base}/gateways")),
                client.post(format!("{base}/gateways")).json(&registration),
                client.get(format!("{base}/gateways/rs")),
                client.delete(format!("{base}/gateways/rs")),
                client
                    .put(format!("{base}/gateways/rs"))
                    .json(&registration),
                client.get(format!("{base}/admin/status")),
                client.post(format!("{base}/admin/cert/reload")),
                client.post(format!("{base}/admin/cert/install")).body("x"),
                client.get(format!("{base}/metrics")),
            ];
            for request in admin_routes {
                let request = request.bearer_auth(token).build().unwrap();
                let what = format!("{} {}", request.method(), request.url().path());
                let response = client.execute(request).await.unwrap();
                assert_eq!(response.status().as_u16(), 403, "{what}");
                let body: Value = response.json().await.unwrap();
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("admin role"), "{what}: {message}");
            }
            // The MCP endpoints are theirs.
            let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
            let post = client
                .post(format!("{base}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .bearer_auth(token)
                .json(&list);
            let answer: Value = post.send().await.unwrap().json().await.unwrap();
            assert!(
                answer["result"]["tools"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty()),
                "{answer}"
            );
            let one = Streamable::open(
                client.clone(),
                &format!("{base}/servers/rs/mcp"),
                Some(token),
            )
            .await
            .unwrap();
            one.call(json!(2), "echo", json!({"text": "hi"}))
                .await
                .unwrap();
        }
        // Nothing the clients tried changed the registry.
        let listed = client
            .get(format!("{base}/gateways"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        let listed: Value = listed.json().await.unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
        // An administrator's minted token reaches the admin routes.
        for token in [admin.trim(), OPERATOR] {
            assert_eq!(
                status(
                    client
                        .get(format!("{base}/admin/status"))
                        .bearer_auth(token)
                )
                .await,
                200
            );
            assert_eq!(
                status(client.get(format!("{base}/metrics")).bearer_auth(token)).await,
                200
            );
        }
    });
    // The control socket is the administrator's.
    dir.run_expect(&["gateway", "list"], 0);
}

#[test]
fn a_client_token_cannot_install_a_serving_certificate() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let gw = Gateway::start_tls(&dir, &pki, &[]);
    let (token, _) = dir.run_expect(&["token", "create", "--sub", "low-priv-client"], 0);
    let before = std::fs::read(pki.file("server.crt")).unwrap();
    let rogue = dir.cert_gen("rogue", &[]);
    let client = http(Some(&pki.file("ca.crt")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        let body = json!({
            "cert_pem": std::fs::read_to_string(rogue.file("server.crt")).unwrap(),
            "key_pem": std::fs::read_to_string(rogue.file("server.key")).unwrap(),
        });
        let url = format!("https://localhost:{}/admin/cert/install", gw.addr.port());
        let request = client.post(url).bearer_auth(token.trim()).json(&body);
        status(request).await
    });
    assert_eq!(code, 403);
    assert_eq!(
        std::fs::read(pki.file("server.crt")).unwrap(),
        before,
        "the certificate on disk is untouched"
    );
}

#[test]
fn a_foreign_session_id_is_404_on_streamable_http_sse_and_websocket() {
    let dir = Dir::new();
    let (_up, gw) = two_clients(&dir, &[]);
    let base = format!("http://{}", gw.addr);
    let client = http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Streamable HTTP: bob names alice's session.
        let alice = Streamable::open(client.clone(), &format!("{base}/mcp"), Some(ALICE))
            .await
            .unwrap();
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let with_session = |request: reqwest::RequestBuilder| {
            request
                .header("mcp-session-id", &alice.session)
                .header("mcp-protocol-version", "2025-11-25")
                .header("accept", "application/json, text/event-stream")
                .bearer_auth(BOB)
        };
        let post = with_session(client.post(format!("{base}/mcp")).json(&list));
        assert_eq!(status(post).await, 404, "POST with a foreign session");
        let get = with_session(client.get(format!("{base}/mcp")));
        assert_eq!(status(get).await, 404, "GET stream of a foreign session");
        let delete = with_session(client.delete(format!("{base}/mcp")));
        assert_eq!(status(delete).await, 404, "DELETE of a foreign session");
        // The operator is a principal like any other here.
        let post =
            with_session(client.post(format!("{base}/mcp")).json(&list)).bearer_auth(OPERATOR);
        assert_eq!(status(post).await, 404, "even an administrator's token");
        // Alice's session is untouched.
        alice
            .request(&list)
            .await
            .expect("the owner keeps her session");
        assert_eq!(alice.close().await.unwrap(), 204);

        // Legacy SSE: bob posts to alice's stream.
        let mut sse = SseSession::open(client.clone(), &base, "/sse", Some(ALICE))
            .await
            .unwrap();
        let endpoint = sse.endpoint().to_owned();
        let ping = json!({"jsonrpc": "2.0", "id": "from-bob", "method": "ping"});
        let foreign = client.post(&endpoint).bearer_auth(BOB).json(&ping);
        assert_eq!(status(foreign).await, 404);
        assert_eq!(
            sse.next(Duration::from_millis(500)).await,
            None,
            "nothing of bob's reaches alice's stream"
        );
        let answer = sse
            .request(&json!({"jsonrpc": "2.0", "id": "own", "method": "ping"}))
            .await
            .unwrap();
        assert_eq!(answer["id"], "own");

        // WebSocket: an upgrade naming another principal's session is refused too.
        let carol = Streamable::open(client.clone(), &format!("{base}/mcp"), Some(ALICE))
            .await
            .unwrap();
        let upgrade = client
            .get(format!("{base}/ws"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "mcp")
            .header("mcp-session-id", &carol.session)
            .bearer_auth(BOB);
        assert_eq!(status(upgrade).await, 404);
    });
}

#[test]
fn a_verified_client_certificate_is_a_principal_with_the_role_the_config_gives_it() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    std::fs::write(
        dir.join("mcpgw.toml"),
        "[auth]\ncertificate_admins = [\"ops-agent\"]\n",
    )
    .unwrap();
    let ca = pki.s("ca.crt");
    let gw = Gateway::start_tls(&dir, &pki, &["--config", "mcpgw.toml", "--client-ca", &ca]);
    let issuer = pki.issuer();
    let with_cert = |cn: &str| {
        let minted =
            mcpgw::tls::pki::issue_client(&issuer, cn, 1, mcpgw::cli::KeyType::EcdsaP256).unwrap();
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(minted.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(minted.key_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in mcpgw::tls::pem::certs_from_file(&pki.file("ca.crt")).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap()
    };
    let agent = with_cert("agent-7");
    let ops = with_cert("ops-agent");
    let base = format!("https://localhost:{}", gw.addr.port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let mcp = |c: &reqwest::Client| {
            c.post(format!("{base}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .json(&list)
        };
        // No token: the certificate is who is asking.
        assert_eq!(status(mcp(&agent)).await, 200);
        let refused = agent.get(format!("{base}/gateways")).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        let body: Value = refused.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cert:agent-7"),
            "{body}"
        );
        assert_eq!(status(ops.get(format!("{base}/gateways"))).await, 200);
        // A bad token is refused even with a good certificate.
        assert_eq!(status(mcp(&agent).bearer_auth("not-a-token")).await, 401);
        // With `--client-ca` a certificate is required: without one there is no handshake.
        let nobody = http(Some(&pki.file("ca.crt")));
        assert!(mcp(&nobody).send().await.is_err());
    });
}
