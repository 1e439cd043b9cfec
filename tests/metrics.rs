//! `GET /metrics` on the real binary: the exposition parses strictly, request counters move by
//! exactly what was sent, and certificate expiry and reload counters follow rotations.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{Dir, Gateway, Pki, SIGHUP, tls};

// ---------------------------------------------------------------- a strict exposition parser

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`], absent counting as 0 (a series not yet created).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parse `{a="x",b="y"}` (the braces included); returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, '\n') => return Err("raw newline in label value".into()),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// The family a sample belongs to: histogram series carry a suffix.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

fn parse(text: &str) -> Exposition {
    parse_checked(text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{text}"))
}

fn parse_checked(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut types = HashMap::new();
    let mut helps = HashMap::new();
    let mut samples = Vec::new();
    let mut seen_samples_of = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            if !is_metric_name(name) || helps.insert(name.to_owned(), ()).is_some() {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if !is_metric_name(name) || types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(at("bad or repeated TYPE".into()));
            }
            if seen_samples_of.contains(name) {
                return Err(at("TYPE after samples of its family".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("unexpected comment".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        if value.contains(' ') {
            return Err(at("unexpected timestamp or trailing text".into()));
        }
        let value = parse_value(value).map_err(at)?;
        let family = family_of(name, &types);
        if !types.contains_key(family) {
            return Err(at(format!("sample of {family} has no TYPE before it")));
        }
        if types[family] == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        seen_samples_of.insert(family.to_owned());
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    let exposition = Exposition { types, samples };
    check_histograms(&exposition)?;
    Ok(exposition)
}

type Labels = Vec<(String, String)>;

/// Buckets cumulative, `le` ascending and ending in `+Inf`, `+Inf` equal to `_count`.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, _) in e.types.iter().filter(|(_, t)| *t == "histogram") {
        // Labels without `le` -> (le, cumulative count) in exposition order.
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or(format!("{family} bucket without le"))?;
            let mut key = s.labels.clone();
            key.remove("le");
            series
                .entry(key.into_iter().collect())
                .or_default()
                .push((parse_value(le)?, s.value));
        }
        for (key, buckets) in series {
            let labels: Vec<(&str, &str)> =
                key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!("{family}{key:?}: buckets not ascending/cumulative"));
            }
            let (last_le, last_count) = *buckets.last().unwrap();
            if last_le != f64::INFINITY {
                return Err(format!("{family}{key:?}: last bucket is not +Inf"));
            }
            let count = e
                .get(&format!("{family}_count"), &labels)
                .ok_or(format!("{family}{key:?}: no _count"))?;
            e.get(&format!("{family}_sum"), &labels)
                .ok_or(format!("{family}{key:?}: no _sum"))?;
            if count != last_count {
                return Err(format!(
                    "{family}{key:?}: +Inf {last_count} != _count {count}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn metrics_test_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(parse(ok).get("a_total", &[("l", "q\"\\\n")]), Some(1.0));
    for bad in [
        "a_total 1\n",                       // no TYPE
        "# TYPE a gauge\na{l=\"x\\t\"} 1\n", // bad escape
        "# TYPE a gauge\na{l=\"x\"}1\n",     // no space
        "# TYPE a gauge\na 1",               // no final newline
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
    ] {
        assert!(parse_checked(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------- plain HTTP

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn scrape(addr: SocketAddr) -> Exposition {
    let reply = request(addr, "GET", "/metrics", &[], "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&reply.body)
}

fn mcp(addr: SocketAddr, session: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    if let Some(id) = session {
        headers.push(("mcp-session-id", id));
    }
    request(addr, "POST", "/mcp", &headers, body)
}

const REQUESTS: &str = "mcpgw_http_requests_total";

#[test]
fn metrics_count_requests_by_route_template_method_and_status() {
    // Over 100 lines on purpose: one end-to-end scenario whose steps depend on the ones
    // before (the same gateway, sessions and upstreams throughout), read top to bottom.
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let before = scrape(gw.addr);

    assert_eq!(request(gw.addr, "GET", "/health", &[], "").status, 200);
    let init = mcp(
        gw.addr,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    let session = init.headers.get("mcp-session-id").cloned();
    assert!(
        session.is_some(),
        "initialize answered {} {}",
        init.status,
        init.body
    );
    let list = mcp(
        gw.addr,
        session.as_deref(),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("\"tools\""), "{}", list.body);
    assert_eq!(
        request(gw.addr, "GET", "/no/such/path", &[], "").status,
        404
    );
    let a = request(gw.addr, "GET", "/gateways/alpha", &[], "").status;
    let b = request(gw.addr, "GET", "/gateways/beta", &[], "").status;
    assert_eq!(a, b);

    let after = scrape(gw.addr);
    let delta =
        |labels: &[(&str, &str)]| after.count(REQUESTS, labels) - before.count(REQUESTS, labels);
    assert_eq!(
        delta(&[("route", "/health"), ("method", "GET"), ("status", "200")]),
        1.0
    );
    let init_status = init.status.to_string();
    if init.status == 200 {
        assert_eq!(
            delta(&[("route", "/mcp"), ("method", "POST"), ("status", "200")]),
            2.0
        );
    } else {
        assert_eq!(
            delta(&[
                ("route", "/mcp"),
                ("method", "POST"),
                ("status", &init_status)
            ]),
            1.0
        );
        assert_eq!(
            delta(&[("route", "/mcp"), ("method", "POST"), ("status", "200")]),
            1.0
        );
    }
    assert_eq!(
        delta(&[("route", "unmatched"), ("method", "GET"), ("status", "404")]),
        1.0
    );
    // Two names, one series: the template, not the path.
    let status = a.to_string();
    assert_eq!(
        delta(&[
            ("route", "/gateways/{name}"),
            ("method", "GET"),
            ("status", &status)
        ]),
        2.0
    );
    assert!(
        !after.samples.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains("alpha") || r.contains("/no/such"))),
        "a concrete path became a label"
    );
    // The first scrape is counted once its response is out.
    assert_eq!(
        delta(&[("route", "/metrics"), ("method", "GET"), ("status", "200")]),
        1.0
    );

    let hist = "mcpgw_http_request_duration_seconds_count";
    assert_eq!(
        after.count(hist, &[("route", "/health")]) - before.count(hist, &[("route", "/health")]),
        1.0
    );
    assert_eq!(
        after.count(hist, &[("route", "/mcp")]) - before.count(hist, &[("route", "/mcp")]),
        2.0
    );

    // The initialize above opened one session.
    assert_eq!(
        after.get("mcpgw_sessions_open", &[("transport", "streamable-http")]),
        Some(1.0)
    );
    assert_eq!(
        after.get(
            "mcpgw_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    let uptime = after.get("mcpgw_uptime_seconds", &[]).unwrap();
    assert!(uptime > 0.0 && uptime < 600.0, "{uptime}");
    assert!(after.get("mcpgw_uptime_seconds", &[]) >= before.get("mcpgw_uptime_seconds", &[]));
    // Plain HTTP: nothing to expire or reload.
    assert!(!after.has_family("mcpgw_certificate_expiry_seconds"));
    assert!(!after.has_family("mcpgw_certificate_reloads_total"));
    for family in [
        "mcpgw_upstream_up",
        "mcpgw_upstream_requests_total",
        "mcpgw_upstream_request_duration_seconds",
        "mcpgw_upstream_client_certificate_expiry_seconds",
        "mcpgw_sessions_open",
    ] {
        assert!(after.types.contains_key(family), "no TYPE for {family}");
    }
}

#[test]
fn metrics_need_a_bearer_token_on_the_listener() {
    let dir = Dir::new();
    let token = "test-token-0123456789abcdef";
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!("[auth]\ntokens = [\"{token}\"]\n"),
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    assert_eq!(request(gw.addr, "GET", "/metrics", &[], "").status, 401);
    let bearer = format!("Bearer {token}");
    let reply = request(
        gw.addr,
        "GET",
        "/metrics",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(reply.status, 200);
    let e = parse(&reply.body);
    // The refused scrape is counted with its status.
    assert_eq!(
        e.get(
            REQUESTS,
            &[("route", "/metrics"), ("method", "GET"), ("status", "401")]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------- HTTPS and certificates

fn tls_scrape(rt: &tokio::runtime::Runtime, gw: &Gateway, pki: &Pki) -> Exposition {
    let config = tls::client_config(&pki.file("ca.crt"));
    let (status, body) = rt.block_on(async {
        let mut conn = tls::connect(gw.addr, config).await.unwrap();
        conn.get("/metrics").await.unwrap()
    });
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn not_after_of(path: &std::path::Path) -> i64 {
    let certs = mcpgw::tls::pem::certs_from_file(path).unwrap();
    mcpgw::tls::x509::info("server.crt", &certs[0])
        .unwrap()
        .not_after_unix
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const RELOADS: &str = "mcpgw_certificate_reloads_total";
const EXPIRY: &str = "mcpgw_certificate_expiry_seconds";

fn assert_expiry_matches(e: &Exposition, cert: &std::path::Path) {
    let expiry = e
        .get(EXPIRY, &[("certificate", "serving")])
        .expect("no serving expiry");
    let expected = (not_after_of(cert) - now_unix()) as f64;
    assert!(expiry > 0.0, "{expiry}");
    assert!(
        (expiry - expected).abs() <= 60.0,
        "expiry {expiry}, certificate says {expected}"
    );
}

#[test]
fn metrics_certificate_expiry_and_reloads_follow_cert_rotate_reread_and_sighup() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let gw = Gateway::start_tls(&dir, &pki, &["--no-auth", "--tls-ca", &pki.s("ca.crt")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = tls_scrape(&rt, &gw, &pki);
    assert_expiry_matches(&before, &pki.file("server.crt"));
    for trigger in ["SIGHUP", "control", "install"] {
        for result in ["ok", "failed"] {
            assert_eq!(
                before.get(RELOADS, &[("result", result), ("trigger", trigger)]),
                Some(0.0)
            );
        }
    }

    dir.rotate_issue(&pki);
    let rotated = tls_scrape(&rt, &gw, &pki);
    assert_eq!(
        rotated.count(RELOADS, &[("result", "ok"), ("trigger", "install")]),
        1.0
    );
    assert_eq!(
        rotated.count(RELOADS, &[("result", "failed"), ("trigger", "install")]),
        0.0
    );
    // The installed pair was written over the served files.
    assert_expiry_matches(&rotated, &pki.file("server.crt"));

    // `cert rotate` without new material re-reads the files: the control trigger.
    common::mint_server(&pki, &pki.file("server.crt"), &pki.file("server.key"));
    dir.run_expect(&["cert", "rotate"], 0);
    let reread = tls_scrape(&rt, &gw, &pki);
    assert_eq!(
        reread.count(RELOADS, &[("result", "ok"), ("trigger", "control")]),
        1.0
    );
    assert_eq!(
        reread.count(RELOADS, &[("result", "ok"), ("trigger", "install")]),
        1.0
    );

    // A good SIGHUP, then one with a spoiled certificate file.
    common::mint_server(&pki, &pki.file("server.crt"), &pki.file("server.key"));
    gw.signal(SIGHUP);
    gw.wait_log_count("serving certificate swapped", 3, Duration::from_secs(10));
    let good = std::fs::read(pki.file("server.crt")).unwrap();
    common::write_atomically(&pki.file("server.crt"), b"not a certificate\n");
    gw.signal(SIGHUP);
    gw.wait_log_count("certificate reload refused", 1, Duration::from_secs(10));
    let after = tls_scrape(&rt, &gw, &pki);
    assert_eq!(
        after.count(RELOADS, &[("result", "ok"), ("trigger", "SIGHUP")]),
        1.0
    );
    assert_eq!(
        after.count(RELOADS, &[("result", "failed"), ("trigger", "SIGHUP")]),
        1.0
    );
    assert_eq!(
        after.count(RELOADS, &[("result", "ok"), ("trigger", "install")]),
        1.0
    );
    // Still serving the last good certificate.
    std::fs::write(pki.file("good.crt"), good).unwrap();
    assert_expiry_matches(&after, &pki.file("good.crt"));
}

// ---------------------------------------------------------------- upstreams (Python SDK fixture)

const UP_REQUESTS: &str = "mcpgw_upstream_requests_total";

fn call_tool(addr: SocketAddr, name: &str) -> String {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{"text":"hi"}}}}}}"#
    );
    let reply = mcp(addr, None, &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

#[test]
fn metrics_follow_upstream_calls_health_and_client_certificate() {
    let py = common::py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = common::py::free_port();
    let mut up =
        common::py::PyUpstream::with_pki(&py, port, &pki, &["--transport", "streamable-http"]);
    let gw = Gateway::start(
        &dir,
        &[
            "--no-auth",
            "--health-interval",
            "1",
            "--health-threshold",
            "2",
            "--request-timeout",
            "5",
        ],
    );
    dir.gateway_add_mtls("alpha", &format!("https://localhost:{port}/mcp"), &pki);
    let alpha = [("upstream", "alpha"), ("transport", "streamable-http")];
    let before = scrape(gw.addr);
    assert_eq!(before.get("mcpgw_upstream_up", &alpha), Some(1.0));
    let expiry = before
        .get("mcpgw_upstream_client_certificate_expiry_seconds", &alpha)
        .expect("no client certificate expiry");
    let expected = (not_after_of(&pki.file("client.crt")) - now_unix()) as f64;
    assert!(
        expiry > 0.0 && (expiry - expected).abs() <= 60.0,
        "{expiry} vs {expected}"
    );

    let answer = call_tool(gw.addr, "alpha__echo");
    assert!(answer.contains("hi"), "{answer}");
    let after = scrape(gw.addr);
    let ok = [
        ("upstream", "alpha"),
        ("transport", "streamable-http"),
        ("outcome", "ok"),
    ];
    assert_eq!(
        after.count(UP_REQUESTS, &ok) - before.count(UP_REQUESTS, &ok),
        1.0
    );
    let hist = "mcpgw_upstream_request_duration_seconds_count";
    assert_eq!(after.count(hist, &alpha) - before.count(hist, &alpha), 1.0);

    up.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let down = loop {
        let e = scrape(gw.addr);
        if e.get("mcpgw_upstream_up", &alpha) == Some(0.0) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alpha never went down"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let answer = call_tool(gw.addr, "alpha__echo");
    assert!(answer.contains("offline"), "{answer}");
    let last = scrape(gw.addr);
    let offline = [
        ("upstream", "alpha"),
        ("transport", "streamable-http"),
        ("outcome", "offline"),
    ];
    assert_eq!(
        last.count(UP_REQUESTS, &offline) - down.count(UP_REQUESTS, &offline),
        1.0
    );
    // A refusal without a round trip is not a latency sample.
    assert_eq!(last.count(hist, &alpha), down.count(hist, &alpha));
}
