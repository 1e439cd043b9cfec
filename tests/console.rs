//! The operator console (issue 23), in a real headless Chromium against a real gateway over
//! HTTPS with real upstreams: every page loads without a console error and shows what the JSON
//! routes say; a killed upstream turns `offline` and back `online`; probe, disable and remove
//! work by clicking; markup an upstream puts in its names and descriptions stays text; a
//! client-role token gets no console; the console's files stay within their budget; its probe
//! carries the credentials registered for the upstream.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cdp::Browser;
use common::clients::{EventReader, Streamable, http};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

/// Markup an upstream could send, each of which would set `window.__pwned` if it ran.
const SCRIPT_PAYLOAD: &str = "<script>window.__pwned=1</script>";
const IMG_PAYLOAD: &str = "<img src=x onerror=\"window.__pwned=2\">";

/// Bounds on the waits for the page (never an assertion on time: a slow machine waits longer,
/// up to these).
const PAGE_WAIT: Duration = Duration::from_secs(30);

fn screenshot(page: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screenshots")
        .join(format!("{page}.png"))
}

fn admin_token(dir: &Dir) -> String {
    let (token, _) = dir.run_expect(
        &["token", "create", "--sub", "operator", "--role", "admin"],
        0,
    );
    token.trim().to_owned()
}

/// `GET path` on the gateway as `token`, which must answer 200: its body.
async fn get_ok(client: &reqwest::Client, base: &str, path: &str, token: &str) -> String {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.text().await.unwrap()
}

/// [`get_ok`], as JSON.
async fn get_json(client: &reqwest::Client, base: &str, path: &str, token: &str) -> Value {
    serde_json::from_str(&get_ok(client, base, path, token).await).unwrap()
}

/// `GET /metrics` as `token`.
async fn scrape(client: &reqwest::Client, base: &str, token: &str) -> String {
    get_ok(client, base, "/metrics", token).await
}

/// The `/gateways` entry named `name`.
fn entry<'a>(gateways: &'a Value, name: &str) -> &'a Value {
    gateways
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {gateways}"))
}

/// A sample of the exposition: the value of the series whose line starts with `prefix`
/// (summed over the series that match).
fn metric(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The health word the overview shows for `name`.
fn health_of(name: &str) -> String {
    format!(
        "(() => {{ const row = [...document.querySelectorAll('#upstreams tbody tr')].find(r => r.dataset.upstream === {}); return row ? row.querySelector('[data-health]').dataset.health : null; }})()",
        serde_json::to_string(name).unwrap()
    )
}

#[test]
fn the_console_shows_the_gateway_as_its_json_routes_do_and_acts_on_clicks() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let alpha = Upstream::start(&["--name", "alpha-server"]);
    let alpha_port = alpha.port();
    let alpha_base = alpha.base.clone();
    // Killed and started again in the middle of the test.
    let mut alpha = Some(alpha);
    let beta = Upstream::start_mtls_with(&pki, &["--name", "beta-server"]);
    let hostile_name = format!("{SCRIPT_PAYLOAD}{IMG_PAYLOAD}");
    let tool = format!("pwn{IMG_PAYLOAD}|{SCRIPT_PAYLOAD} and {IMG_PAYLOAD}");
    let evil = Upstream::start(&["--name", &hostile_name, "--tool", &tool]);
    let gw = Gateway::start_tls(
        &dir,
        &pki,
        &["--health-interval", "1", "--health-threshold", "2"],
    );
    let token = admin_token(&dir);
    dir.run_expect(
        &["gateway", "add", "alpha", &format!("{alpha_base}/mcp")],
        0,
    );
    let beta_url = format!("https://localhost:{}/mcp", beta.port());
    dir.gateway_add_mtls("beta", &beta_url, &pki);
    dir.run_expect(
        &["gateway", "add", "evil", &format!("{}/mcp", evil.base)],
        0,
    );
    let base = format!("https://localhost:{}", gw.addr.port());
    let client = http(Some(&pki.file("ca.crt")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Some traffic through the gateway: three calls to alpha, one to beta, in one session
        // that the sessions page will show.
        let session = Streamable::open(client.clone(), &format!("{base}/mcp"), Some(&token))
            .await
            .unwrap();
        for id in 1..=3 {
            session
                .call(json!(id), "alpha__echo", json!({"text": "hi"}))
                .await
                .unwrap();
        }
        session
            .call(json!(4), "beta__whoami", json!({}))
            .await
            .unwrap();

        let mut browser = Browser::launch().await;
        browser
            .call("Security.setIgnoreCertificateErrors", json!({"ignore": true}))
            .await;
        browser
            .call(
                "Network.setExtraHTTPHeaders",
                json!({"headers": {"Authorization": format!("Bearer {token}")}}),
            )
            .await;

        // Overview: one row per upstream, health and transport as /gateways says, calls as
        // /metrics counts them.
        browser.navigate(&format!("{base}/ui")).await;
        browser
            .wait_for(
                "three upstream rows",
                "document.querySelectorAll('#upstreams tbody tr').length === 3",
                PAGE_WAIT,
            )
            .await;
        let gateways = get_json(&client, &base, "/gateways", &token).await;
        let exposition = scrape(&client, &base, &token).await;
        let rows = browser
            .eval("[...document.querySelectorAll('#upstreams tbody tr')].map(r => ({name: r.dataset.upstream, health: r.querySelector('[data-health]').dataset.health, transport: r.querySelector('.transport').textContent, calls: r.querySelectorAll('figcaption')[0].textContent}))")
            .await;
        for row in rows.as_array().unwrap() {
            let name = row["name"].as_str().unwrap();
            let listed = entry(&gateways, name);
            assert_eq!(row["health"], listed["health"]["status"], "{row}");
            assert_eq!(row["transport"], listed["transport"], "{row}");
            let up = metric(&exposition, "mcpgw_upstream_up", &[&format!("upstream=\"{name}\"")]);
            assert_eq!(up == 1.0, row["health"] == "online", "{row} vs mcpgw_upstream_up {up}");
        }
        let counted = metric(
            &exposition,
            "mcpgw_upstream_requests_total",
            &["upstream=\"alpha\""],
        );
        assert!(counted >= 3.0, "{exposition}");
        let alpha_row = rows.as_array().unwrap().iter().find(|r| r["name"] == "alpha").unwrap();
        assert!(
            alpha_row["calls"]
                .as_str()
                .unwrap()
                .contains(&format!("({counted} calls)")),
            "the chart says {} where /metrics counts {counted}",
            alpha_row["calls"]
        );
        let serving = browser
            .eval("document.getElementById('serving-expiry').textContent")
            .await;
        assert!(serving.as_str().unwrap().starts_with("expires in "), "{serving}");
        let nearest = browser
            .eval("document.getElementById('client-expiry').textContent")
            .await;
        assert!(nearest.as_str().unwrap().contains("(beta)"), "{nearest}");
        browser.screenshot(&screenshot("overview")).await;

        // Hostile markup from an upstream stays text, and nothing of it ran.
        browser.navigate(&format!("{base}/ui#/upstream/evil")).await;
        browser
            .wait_for("evil's tools", "document.querySelectorAll('#tools .tool').length > 0", PAGE_WAIT)
            .await;
        let shown = browser
            .eval("({server: document.getElementById('server-name').textContent, names: [...document.querySelectorAll('.tool-name')].map(e => e.textContent), descriptions: [...document.querySelectorAll('.tool-description')].map(e => e.textContent), images: document.querySelectorAll('#view img').length, scripts: document.querySelectorAll('#view script').length, pwned: typeof window.__pwned})")
            .await;
        assert_eq!(shown["pwned"], "undefined", "{shown}");
        assert_eq!(shown["images"], 0, "{shown}");
        assert_eq!(shown["scripts"], 0, "{shown}");
        assert!(shown["server"].as_str().unwrap().contains(&hostile_name), "{shown}");
        assert!(
            shown["names"].as_array().unwrap().iter().any(|n| n == &json!(format!("pwn{IMG_PAYLOAD}"))),
            "{shown}"
        );
        assert!(
            shown["descriptions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == &json!(format!("{SCRIPT_PAYLOAD} and {IMG_PAYLOAD}"))),
            "{shown}"
        );

        // Upstream page: beta's TLS identity is the one /gateways names; a probe by click
        // shows each phase.
        browser.navigate(&format!("{base}/ui#/upstream/beta")).await;
        browser
            .wait_for(
                "beta's TLS identity",
                "document.getElementById('server-name')?.textContent.startsWith('beta-server') && document.getElementById('tls') !== null",
                PAGE_WAIT,
            )
            .await;
        let tls = browser.eval("document.getElementById('tls').textContent").await;
        let subject = entry(&gateways, "beta")["tls"]["client_subject"].as_str().unwrap().to_owned();
        assert!(tls.as_str().unwrap().contains(&subject), "{tls} lacks {subject}");
        browser.click("#action-probe").await;
        let ok = browser
            .wait_for("the probe's result", "document.querySelector('#probe-result')?.dataset.ok", PAGE_WAIT)
            .await;
        let phases = browser
            .eval("[...document.querySelectorAll('#probe-result [data-phase]')].map(e => e.dataset.phase)")
            .await;
        assert_eq!(ok, "true", "{phases}");
        for phase in ["resolve", "tcp", "tls", "http"] {
            assert!(phases.as_array().unwrap().iter().any(|p| p == phase), "{phase} not in {phases}");
        }
        browser.screenshot(&screenshot("upstream")).await;

        // Disable and enable alpha by clicking; /gateways follows.
        browser.navigate(&format!("{base}/ui#/upstream/alpha")).await;
        // The hash route renders when alpha's data is in; until then beta's page, with a
        // toggle of its own, is still the one shown.
        browser
            .wait_for(
                "alpha's page",
                "document.getElementById('server-name')?.textContent.startsWith('alpha-server') && document.getElementById('action-toggle') !== null",
                PAGE_WAIT,
            )
            .await;
        browser.click("#action-toggle").await;
        browser
            .wait_for("alpha disabled", "document.querySelector('#action-toggle')?.dataset.enabled === 'false'", PAGE_WAIT)
            .await;
        let gateways = get_json(&client, &base, "/gateways", &token).await;
        assert_eq!(entry(&gateways, "alpha")["enabled"], false);
        browser.click("#action-toggle").await;
        browser
            .wait_for("alpha enabled", "document.querySelector('#action-toggle')?.dataset.enabled === 'true'", PAGE_WAIT)
            .await;
        let gateways = get_json(&client, &base, "/gateways", &token).await;
        assert_eq!(entry(&gateways, "alpha")["enabled"], true);

        // Kill alpha: the overview says offline (live, without a reload), then online again
        // once it is back on its port.
        browser.navigate(&format!("{base}/ui#/overview")).await;
        browser
            .wait_for("alpha online", &format!("{} === 'online'", health_of("alpha")), PAGE_WAIT)
            .await;
        drop(alpha.take());
        browser
            .wait_for("alpha offline", &format!("{} === 'offline'", health_of("alpha")), PAGE_WAIT)
            .await;
        let gateways = get_json(&client, &base, "/gateways", &token).await;
        assert_eq!(entry(&gateways, "alpha")["health"]["status"], "offline");
        browser.screenshot(&screenshot("overview-offline")).await;
        alpha = Some(Upstream::start(&[
            "--name",
            "alpha-server",
            "--listen",
            &format!("127.0.0.1:{alpha_port}"),
        ]));
        browser
            .wait_for("alpha online again", &format!("{} === 'online'", health_of("alpha")), PAGE_WAIT)
            .await;

        // Certificates: what /admin/status serves, and the reload just asked for.
        let reload = client
            .post(format!("{base}/admin/cert/reload"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(reload.status(), 200);
        browser.navigate(&format!("{base}/ui#/certificates")).await;
        browser
            .wait_for("the rotation history", "document.querySelector('#rotations tbody tr') !== null", PAGE_WAIT)
            .await;
        let status = get_json(&client, &base, "/admin/status", &token).await;
        let page = browser
            .eval("({sha: document.getElementById('serving-sha256').textContent, sans: document.getElementById('serving-sans').textContent, history: document.getElementById('rotations').textContent})")
            .await;
        assert_eq!(page["sha"], status["certificate"]["sha256"]);
        // `mcpgw status` (over the control socket) names the same certificate.
        let (printed, _) = dir.run_expect(&["status", "--json"], 0);
        let printed: Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(page["sha"], printed["certificate"]["sha256"], "{printed}");
        for san in status["certificate"]["sans"].as_array().unwrap() {
            assert!(page["sans"].as_str().unwrap().contains(san.as_str().unwrap()), "{page}");
        }
        let history = page["history"].as_str().unwrap();
        assert!(history.contains("control") && history.contains("swapped"), "{history}");
        browser.screenshot(&screenshot("certificates")).await;

        // Sessions: the open Streamable HTTP session, as the sessions gauge counts it.
        browser.navigate(&format!("{base}/ui#/sessions")).await;
        let open = browser
            .wait_for(
                "the transports table",
                "document.querySelector('#transports [data-transport=\"streamable-http\"] td.num')?.textContent",
                PAGE_WAIT,
            )
            .await;
        let exposition = scrape(&client, &base, &token).await;
        let gauge = metric(&exposition, "mcpgw_sessions_open", &["transport=\"streamable-http\""]);
        assert_eq!(open, json!(gauge.to_string()), "{exposition}");
        let principals = browser.eval("document.getElementById('by-principal').textContent").await;
        assert!(principals.as_str().unwrap().contains("operator"), "{principals}");
        browser.screenshot(&screenshot("sessions")).await;

        // Remove evil, confirming.
        browser.navigate(&format!("{base}/ui#/upstream/evil")).await;
        browser.click("#action-remove").await;
        browser.click("#confirm-remove").await;
        browser
            .wait_for("the overview after removal", "location.hash === '#/overview'", PAGE_WAIT)
            .await;
        let gateways = get_json(&client, &base, "/gateways", &token).await;
        assert!(gateways.as_array().unwrap().iter().all(|g| g["name"] != "evil"), "{gateways}");

        assert_eq!(browser.eval("typeof window.__pwned").await, "undefined");
        assert!(browser.errors.is_empty(), "console errors: {:#?}", browser.errors);

        // Without the header, the page asks for a token; typed into its form, it is kept for
        // the tab and the console works with it, across a reload.
        browser
            .call("Network.setExtraHTTPHeaders", json!({"headers": {}}))
            .await;
        browser.call("Page.reload", json!({})).await;
        browser
            .wait_for(
                "the request for a token",
                "document.getElementById('view')?.textContent.includes('paste an admin bearer token')",
                PAGE_WAIT,
            )
            .await;
        browser.click("#token-input").await;
        browser
            .call("Input.insertText", json!({"text": token}))
            .await;
        browser.click("#token-save").await;
        browser
            .wait_for(
                "the overview with the typed token",
                "document.querySelectorAll('#upstreams tbody tr').length === 2",
                PAGE_WAIT,
            )
            .await;
        browser.call("Page.reload", json!({})).await;
        browser
            .wait_for(
                "the overview after a reload",
                "document.querySelectorAll('#upstreams tbody tr').length === 2",
                PAGE_WAIT,
            )
            .await;
        // The only errors since: the browser's own lines for the refused requests.
        let unexpected: Vec<_> = browser
            .errors
            .iter()
            .filter(|e| !e.contains("status of 401"))
            .collect();
        assert!(unexpected.is_empty(), "console errors: {unexpected:#?}");
    });
    drop((alpha, beta, evil));
}

#[test]
fn a_client_token_gets_no_console_no_token_gets_only_the_page_and_an_admin_gets_it_all() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let gw = Gateway::start_tls(&dir, &pki, &[]);
    let admin = admin_token(&dir);
    let (client_token, _) =
        dir.run_expect(&["token", "create", "--sub", "app", "--role", "client"], 0);
    let base = format!("https://localhost:{}", gw.addr.port());
    let client = http(Some(&pki.file("ca.crt")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let routes = [
            client.get(format!("{base}/ui")),
            client.get(format!("{base}/ui/console.js")),
            client.get(format!("{base}/ui/api/overview")),
            client.get(format!("{base}/ui/api/events")),
            client.get(format!("{base}/ui/api/certificates")),
            client.get(format!("{base}/ui/api/sessions")),
            client.get(format!("{base}/ui/api/upstreams/x")),
            client.post(format!("{base}/ui/api/upstreams/x/probe")),
            client
                .post(format!("{base}/ui/api/upstreams/x/enabled"))
                .json(&json!({"enabled": false})),
        ];
        for request in routes {
            let request = request.bearer_auth(client_token.trim()).build().unwrap();
            let what = format!("{} {}", request.method(), request.url().path());
            let response = client.execute(request).await.unwrap();
            assert_eq!(response.status(), 403, "{what}");
        }
        // Without any credential: the page and its files (no data), so that it can ask for a
        // token; none of its data.
        for path in ["/ui", "/ui/console.js"] {
            let shell = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(shell.status(), 200, "{path}");
        }
        for path in ["/ui/api/overview", "/ui/api/events", "/ui/api/certificates"] {
            let data = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(data.status(), 401, "{path}");
        }
        let page = client.get(format!("{base}/ui")).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let headers = page.headers().clone();
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let again = client
            .get(format!("{base}/ui"))
            .bearer_auth(&admin)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        let api = client
            .get(format!("{base}/ui/api/overview"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 200);
        assert_eq!(api.headers()["x-content-type-options"], "nosniff");
        let missing = client
            .get(format!("{base}/ui/nothing.js"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    });
}

#[test]
fn the_consoles_files_weigh_at_most_200_kib() {
    let total = mcpgw::http::ui::assets::total_size();
    assert!(
        total > 0 && total <= 200 * 1024,
        "the console weighs {total} bytes"
    );
}

/// The console's probe of a registered upstream sends what the gateway's own requests send: an
/// upstream that wants a bearer (here another gateway) is probed with its registered token, is
/// refused with a wrong one (said so), and without one is told apart from a broken endpoint.
#[test]
fn the_consoles_probe_sends_the_credentials_registered_for_the_upstream() {
    let behind_dir = Dir::new();
    let fixture = Upstream::start(&["--name", "behind-server"]);
    let behind = Gateway::start(&behind_dir, &[]);
    behind_dir.run_expect(
        &["gateway", "add", "inner", &format!("{}/mcp", fixture.base)],
        0,
    );
    let (behind_token, _) = behind_dir.run_expect(
        &["token", "create", "--sub", "front", "--role", "client"],
        0,
    );
    let behind_url = format!("http://127.0.0.1:{}/mcp", behind.addr.port());

    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(
        &[
            "gateway",
            "add",
            "with-token",
            &behind_url,
            "--bearer",
            behind_token.trim(),
        ],
        0,
    );
    for (name, bearer) in [("without", None), ("wrong-token", Some("not-a-token"))] {
        let mut args = vec!["gateway", "add", name, &behind_url, "--defer"];
        args.extend(bearer.iter().flat_map(|b| ["--bearer", *b]));
        dir.run_expect(&args, 0);
    }
    let base = format!("http://127.0.0.1:{}", gw.addr.port());
    let client = http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let probe = |name: &str| {
        let request = client.post(format!("{base}/ui/api/upstreams/{name}/probe"));
        rt.block_on(async {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "probe of {name}");
            response.json::<Value>().await.unwrap()
        })
    };

    let report = probe("with-token");
    assert_eq!(report["ok"], true, "{report:#}");
    let tools = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "tools")
        .unwrap_or_else(|| panic!("no tools phase: {report:#}"));
    assert!(
        tools["data"]["names"].to_string().contains("inner__echo"),
        "the MCP phases ran with the token: {report:#}"
    );

    for (name, said) in [
        (
            "without",
            "the endpoint wants credentials, which probe does not send",
        ),
        (
            "wrong-token",
            "the endpoint refused the credentials registered for it",
        ),
    ] {
        let report = probe(name);
        assert_eq!(report["ok"], false, "{name}: {report:#}");
        assert_eq!(report["failure"]["phase"], "http", "{name}: {report:#}");
        let diagnosis = report["failure"]["diagnosis"].as_str().unwrap();
        assert!(diagnosis.contains(said), "{name}: {diagnosis}");
        assert!(
            !report.to_string().contains(behind_token.trim()),
            "no token in the report"
        );
    }
}

/// The console's sessions data names the principal of every WebSocket session and listen
/// stream, as it does for Streamable HTTP and SSE, and forgets them once they close.
#[test]
fn websocket_sessions_and_listen_streams_are_shown_by_principal() {
    let dir = Dir::new();
    let fixture = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &[]);
    dir.run_expect(
        &["gateway", "add", "up", &format!("{}/mcp", fixture.base)],
        0,
    );
    let admin = admin_token(&dir);
    let (app, _) = dir.run_expect(&["token", "create", "--sub", "app", "--role", "client"], 0);
    let (watcher, _) = dir.run_expect(
        &["token", "create", "--sub", "watcher", "--role", "client"],
        0,
    );
    let base = format!("http://127.0.0.1:{}", gw.addr.port());
    let client = http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = common::clients::ws_plain(gw.addr, app.trim()).await;
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "console-test", "version": "1"}}});
        let answer = common::clients::ws_request(&mut ws, &init).await;
        assert!(answer.get("result").is_some(), "{answer}");
        let filter = json!({"toolsListChanged": true});
        let mut listen = EventReader::new(
            common::clients::listen(
                &client,
                &format!("{base}/mcp"),
                Some(watcher.trim()),
                ("L1", filter),
                "application/json, text/event-stream",
            )
            .await,
        );
        let ack = listen.next(Duration::from_secs(10)).await;
        assert!(ack.is_some(), "the listen stream is acknowledged");

        let sessions = get_json(&client, &base, "/ui/api/sessions", &admin).await;
        assert_eq!(sessions["websocket"], json!({"jwt:app": 1}), "{sessions:#}");
        assert_eq!(
            sessions["listen"],
            json!({"jwt:watcher": 1}),
            "{sessions:#}"
        );
        assert_eq!(sessions["listen_streams"], 1, "{sessions:#}");

        drop(ws);
        drop(listen);
        // Both leave the tables as their connections close (bounded wait, not a timed check).
        let mut sessions = Value::Null;
        for _ in 0..100 {
            sessions = get_json(&client, &base, "/ui/api/sessions", &admin).await;
            if sessions["websocket"] == json!({}) && sessions["listen"] == json!({}) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(sessions["websocket"], json!({}), "{sessions:#}");
        assert_eq!(sessions["listen"], json!({}), "{sessions:#}");
    });
}
